"""The closed forms, written once; and their operations on one large matrix through BLAS.

Reverse:  X = L⁻ᴴ (P + Pᴴ) L⁻¹ with P = Φ(Lᴴ L̄);  G = Φ(X), S = ½ X.
Forward:  L̇ = L Φ(L⁻¹ K̇ L⁻ᴴ).

:func:`closed_rev` and :func:`closed_fwd` state each form once, as a
sequence of steps on an *operations* object that holds the factor L and a
working array A, both in lower-triangular terms.  Each way of executing
supplies the operations:

* :class:`Blocked` here: one matrix, its operands where they lie
  (:class:`~.blas.Matrix`, either storage form), BLAS level 3 on blocks,
  the passes in strips on the plan's worker threads;
* :class:`.stacks.Chunk`: a chunk of a stack (or a single small matrix as
  a stack of one), BLAS one matrix at a time or stacked numpy substitution;
* :class:`.stacks.BatchLast`: tiny matrices with the matrix index last.

Accuracy decides the steps (notes: Accuracy, measured against long-double
truths on GP kernel matrices):

* both solves are full N×N solves, and of X only the triangle computed
  *last* by the second solve is kept: the lower triangle of Y L⁻¹ in
  reverse, of L⁻¹ (K̇ L⁻ᴴ) forward.  The other triangle, and every
  shortcut that skips part of a solve by exploiting the triangular shape
  of P or of the result, were 5-20× less accurate; a symmetric two-sided
  solve (``?sygst``, or the sweep) was 10³-10⁴× less accurate;
* the products with triangular operands (Lᴴ L̄ and L Φ(X)) may be formed
  from the triangles alone, N³/3 flops each instead of N³, with no loss.

Flops: N³/3 + 2N³ = 7N³/3 in either direction, against the sweep's 2N³/3.
"""

from .blas import gemm, trmm, trsm
from .triangles import hermitian_fill, phi

__all__ = ["closed_rev", "closed_fwd", "Blocked"]


def closed_rev(ops, symmetric):
    """A ← G = Φ(X), or S = ½ X with ``symmetric``; A holds L̄ on entry (lower, zeros above)."""
    ops.adjoint_product()           # Lᴴ L̄, lower triangle
    ops.mirror()                    # M = P + Pᴴ, P = Φ(Lᴴ L̄)
    ops.solve("L", adjoint=True)    # Y = L⁻ᴴ M
    ops.solve("R", adjoint=False)   # X = Y L⁻¹: its lower triangle is the accurate one
    if symmetric:
        ops.half()                  # S = ½ X, Hermitian
    else:
        ops.phi()                   # G = Φ(X)


def closed_fwd(ops):
    """A ← L̇ = L Φ(L⁻¹ K̇ L⁻ᴴ); A holds the read triangle of K̇ on entry (lower)."""
    ops.mirror()                    # K̇, Hermitian
    ops.solve("R", adjoint=True)    # Y = K̇ L⁻ᴴ
    ops.solve("L", adjoint=False)   # X = L⁻¹ Y: its lower triangle is the accurate one
    ops.phi()                       # Φ(X)
    ops.product()                   # L Φ(X)


class Blocked:
    """The closed forms' operations on one matrix: BLAS on blocks of the operands where they lie.

    ``L`` and ``A`` are :class:`~.blas.Matrix` operands of one storage form;
    ``out`` is the array behind ``A`` in the caller's orientation (``lower``
    says which triangle holds the data), for the passes, which run in
    strips on ``workers`` threads.  ``block_size`` is the row-block height
    of the triangular products.  Nothing here allocates: every step works
    in A.
    """

    def __init__(self, L, A, out, lower, workers, block_size):
        self.L, self.A, self.out = L, A, out
        self.lower, self.workers, self.nb = lower, workers, block_size

    def adjoint_product(self):
        """A ← Lᴴ A on and below the diagonal, for A lower triangular; N³/3 flops.

        Row blocks I = [i, k) from the top: (Lᴴ A)[I, :k] = L[I, I]ᴴ A[I, :k] +
        L[k:, I]ᴴ A[k:, :k], which reads only rows at and below I, not yet
        overwritten.  The upper triangle of the diagonal blocks takes junk.
        """
        L, A, n = self.L, self.A, self.L.rows
        for i in range(0, n, self.nb):
            k = min(i + self.nb, n)
            trmm("L", L.block(i, k, i, k), "C", A.block(i, k, 0, k))     # L[I,I]ᴴ A[I, :k]
            if k < n:
                gemm(1.0, L.block(k, n, i, k), "C", A.block(k, n, 0, k), "N", 1.0,
                     A.block(i, k, 0, k))                                  # + L[k:, I]ᴴ A[k:, :k]

    def product(self):
        """A ← L A for A lower triangular (zeros above), in place; N³/3 flops.

        Column blocks J = [j, k): A[:, J] is zero above row j, so
        (L A)[:, J] = L[j:, j:] A[j:, J] -- one triangular multiply by the
        trailing triangle of L, reading only the block's own columns (rows
        above j stay zero); no workspace (notes: Design, "Products").
        """
        L, A, n = self.L, self.A, self.L.rows
        for j in range(0, n, self.nb):
            k = min(j + self.nb, n)
            trmm("L", L.block(j, n, j, n), "N", A.block(j, n, j, k))   # L[j:, j:] A[j:, J]

    def solve(self, side, adjoint):
        """A ← op(L)⁻¹ A (side "L") or A op(L)⁻¹ (side "R"), op(L) = Lᴴ with ``adjoint``; N³ flops."""
        trsm(side, self.L.whole(), "C" if adjoint else "N", self.A.whole())

    def mirror(self):
        hermitian_fill(self.out, self.lower, self.workers)

    def half(self):
        hermitian_fill(self.out, self.lower, self.workers, 0.5, 0.5)

    def phi(self):
        phi(self.out, self.lower, self.workers)
