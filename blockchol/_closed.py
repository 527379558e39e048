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
Extra memory: none in reverse (everything happens in the result array);
an nb × N workspace forward.
"""

import numpy as np

from ._operands import Matrix, gemm, trmm, trsm

__all__ = ["lower_product", "rev_solves", "fwd_solves", "lower_times_phi", "workspace_like"]


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


def lower_times_phi(L, A, block_size, W):
    """A ← L A for A lower triangular (zeros above), in place; N³/3 flops.

    Row blocks I = [i, k) from the bottom: (L A)[I, :k] = L[I, I] A[I, :k] +
    L[I, :i] A[:i, :i], which reads only rows at and above I, not yet
    overwritten.  ``W`` is a workspace :class:`Matrix` of at least
    block_size × N in the same form, for L[I, :i] A[:i, :i] (a triangular
    multiply from the right on a copy of L[I, :i]).
    """
    n = L.rows
    for i in range(((n - 1) // block_size) * block_size, -1, -block_size):
        k = min(i + block_size, n)
        if i:
            Wb = W.block(0, k - i, 0, i)
            Wb.stored[...] = L.block(i, k, 0, i).stored
            trmm("R", A.block(0, i, 0, i), "N", Wb)                   # L[I, :i] A[:i, :i]
        trmm("L", L.block(i, k, i, k), "N", A.block(i, k, 0, k))       # L[I, I] A[I, :k]
        if i:
            A.block(i, k, 0, i).stored[...] += Wb.stored


def workspace_like(A, rows, cols):
    """An empty ``rows`` × ``cols`` (logical) workspace :class:`Matrix` in A's form."""
    shape = (cols, rows) if A.upper else (rows, cols)
    return Matrix(np.empty(shape, dtype=A.stored.dtype, order="F"), A.upper)
