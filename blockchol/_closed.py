"""The closed forms, computed with two full triangular solves (the default, ``method="closed"``).

Reverse:  X = L⁻ᴴ (P + Pᴴ) L⁻¹ with P = Φ(Lᴴ L̄);  G = Φ(X), S = ½ X.
Forward:  L̇ = L Φ(L⁻¹ K̇ L⁻ᴴ).

Written for a lower factor on :class:`~._operands.Matrix` operands, as the
sweeps are.  Accuracy decides the shape of these functions (notes.md,
"Accuracy", measured against long-double truths on GP kernel matrices):

* both solves are full N×N solves, and of X only the triangle computed
  *last* by the second solve is kept: the lower triangle of Y L⁻¹ in
  reverse, of L⁻¹ (K̇ L⁻ᴴ) forward.  The other triangle, and every
  shortcut that skips part of a solve by exploiting the triangular shape
  of P or of the result, were 5-20× less accurate; a symmetric two-sided
  solve (``?sygst``, or the sweep) was 10³-10⁴× less accurate;
* the products with triangular operands (Lᴴ L̄ and L Φ(X)) may be formed
  from the triangles alone, N³/3 flops each instead of N³, with no loss.

Flops: N³/3 + 2N³ = 7N³/3 in either direction, against the sweep's 2N³/3.
Extra memory: none (everything happens in the result array).
"""

from ._operands import gemm, trmm, trsm

__all__ = ["lower_product", "rev_solves", "fwd_solves", "lower_times_phi"]


def lower_product(L, A, block_size):
    """A ← Lᴴ A on and below the diagonal, for A lower triangular (its lower triangle read); N³/3 flops.

    Row blocks I = [i, k) from the top: (Lᴴ A)[I, :k] = L[I, I]ᴴ A[I, :k] +
    L[k:, I]ᴴ A[k:, :k], which reads only rows at and below I, not yet
    overwritten.  The upper triangle of the diagonal blocks takes junk.
    """
    n = L.rows
    for i in range(0, n, block_size):
        k = min(i + block_size, n)
        trmm("L", L.block(i, k, i, k), "C", A.block(i, k, 0, k))       # L[I,I]ᴴ A[I, :k]
        if k < n:
            gemm(1.0, L.block(k, n, i, k), "C", A.block(k, n, 0, k), "N", 1.0,
                 A.block(i, k, 0, k))                                    # + L[k:, I]ᴴ A[k:, :k]


def rev_solves(L, A):
    """A ← L⁻ᴴ A L⁻¹ for the full Hermitian M in A: Y = L⁻ᴴ M, then X = Y L⁻¹ (2N³ flops)."""
    L, A = L.whole(), A.whole()
    trsm("L", L, "C", A)          # Y = L⁻ᴴ M
    trsm("R", L, "N", A)          # X = Y L⁻¹: its lower triangle is the accurate one


def fwd_solves(L, A):
    """A ← L⁻¹ A L⁻ᴴ for the full Hermitian K̇ in A: Y = K̇ L⁻ᴴ, then X = L⁻¹ Y (2N³ flops)."""
    L, A = L.whole(), A.whole()
    trsm("R", L, "C", A)          # Y = K̇ L⁻ᴴ
    trsm("L", L, "N", A)          # X = L⁻¹ Y: its lower triangle is the accurate one


def lower_times_phi(L, A, block_size):
    """A ← L A for A lower triangular (zeros above), in place; N³/3 flops.

    Column blocks J = [j, k): A[:, J] is zero above row j, so
    (L A)[:, J] = L[j:, j:] A[j:, J] -- one triangular multiply by the
    trailing triangle of L, reading only the block's own columns (rows
    above j stay zero).  Measured against row blocks through a workspace:
    6.7 against 8.7-10.4 ms at N = 1000, 371-428 against 388-563 ms at
    N = 4000 (notes.md, section 3).
    """
    n = L.rows
    for j in range(0, n, block_size):
        k = min(j + block_size, n)
        trmm("L", L.block(j, n, j, n), "N", A.block(j, n, j, k))     # L[j:, j:] A[j:, J]
