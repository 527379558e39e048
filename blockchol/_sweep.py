"""The blocked sweeps (Murray 2016, "chol_blocked_rev" and "chol_blocked_fwd").

Everything is written for a lower factor L (K = L Lᴴ); :mod:`._operands`
maps it onto whatever the arrays store.  For each diagonal block [j, k),
partition (``Matrix.partition``)::

        [ .  .  . ]      R = L[j:k, :j]    D = L[j:k, j:k]
    L = [ R  D  . ]      B = L[k:,  :j]    C = L[k:,  j:k]
        [ B  C  . ]

and the same slices of the array being swept.  The factorization made
D Dᴴ = K_DD − R Rᴴ and C = (K_CD − B Rᴴ) D⁻ᴴ; the reverse sweep undoes
those two lines from the last block to the first, the forward sweep
differentiates them from the first to the last.  Almost all flops are in
the gemms, 2N³/3 in either direction: twice the factorization's N³/3.
The diagonal blocks go to the kernels of :mod:`._kernel`.

The forward sweep is that loop over blocks of ``block_size`` columns.  The
reverse sweep is the same sweep with two blocks, the second and the first
half of the matrix, whose diagonal blocks are swept the same way in turn,
down to blocks of ``block_size`` columns: the leaves, on the loop's grid,
go to the kernel.  The arithmetic is the loop's, only with each block's
updates to the columns on its left gathered into one product per half
instead of one per block, so the products come in the largest shapes
(LAPACK's ``?potrf2`` factors by the same halving): 0.86-0.99× the loop's
median time at N = 2000-4000, a tie up to N = 1000, and 0.87× its error on
average (notes.md, "The reverse sweep in halves").  The forward sweep in
halves was slower (its two triangular products are each split down to the
leaves), so it keeps the loop.

The sweep reuses the symmetry of its intermediate results, which is where
its flops are saved and also where, on ill-conditioned factors (GP kernel
matrices with small jitter), it loses accuracy against the closed form of
:mod:`._closed` (notes.md, "Accuracy").
"""

from . import _kernel
from ._operands import gemm, trsm
from ._triangles import herm

__all__ = ["rev_sweep", "fwd_sweep", "default_block_size"]


def rev_sweep(L, A, block_size):
    """Overwrite ``A`` (a :class:`~._operands.Matrix`) with X = G + Gᴴ over its lower triangle, in place.

    On entry ``A`` holds L̄ = ∂f/∂L in its logical lower triangle and zeros
    above it; on exit its lower triangle holds X, G = ∂f/∂K = Φ(X) (the
    diagonal of X is 2 G_jj), and its strict upper triangle anything.
    """
    _rev(L, A, 0, L.rows, block_size, False)


def _rev(L, A, j, k, nb, whole):
    """A[j:k, j:k] ← X of the diagonal block [j, k) swept on its own (``whole``: both triangles).

    The reverse sweep with the two blocks [h, k) and [j, h), last first::

        block [h, k), R = L[h:k, j:h]:
            D̄ ← X                       (the sweep of [h, k))
            R̄ ← R̄ − X R                 (gemm; no B, no C below the last block)
        block [j, h), C = R, C̄ = R̄ (no R, no B left of the first block):
            C̄ ← C̄ D⁻¹                   (trsm)
            D̄ ← D̄ − C̄ᴴ C               (its lower triangle only)
            D̄ ← X                       (the sweep of [j, h))

    The leaves, blocks of at most ``nb`` columns, are the kernel's.
    """
    h = _middle(j, k, nb)
    if h is None:
        _kernel.rev(L.block(j, k, j, k), A.block(j, k, j, k))       # X, both triangles
        return
    R, Rb = L.block(h, k, j, h), A.block(h, k, j, h)
    _rev(L, A, h, k, nb, True)                                      # D̄ ← X, whole: gemm reads it
    gemm(-1.0, A.block(h, k, h, k), "N", R, "N", 1.0, Rb)           # R̄ ← R̄ − X R
    trsm("R", L.block(j, h, j, h), "N", Rb)                         # C̄ ← C̄ D⁻¹
    _minus_lower_product(L, A, h, k, j, h, nb)                      # D̄ ← D̄ − C̄ᴴ C
    _rev(L, A, j, h, nb, whole)                                     # D̄ ← X
    if whole:
        A.block(j, h, h, k).stored[...] = herm(Rb.stored)           # X above: C̄ᴴ (C̄ = G's block)


def _minus_lower_product(L, A, r0, r1, p, q, nb):
    """A[p:q, p:q] ← A[p:q, p:q] − Āᴴ L on its lower triangle, Ā, L the rows [r0, r1), columns [p, q).

    Split in halves on the leaves' grid, down to a leaf: its square product
    writes junk above its diagonal, which its kernel overwrites.
    """
    m = _middle(p, q, nb)
    if m is None:
        gemm(-1.0, A.block(r0, r1, p, q), "C", L.block(r0, r1, p, q), "N", 1.0, A.block(p, q, p, q))
        return
    gemm(-1.0, A.block(r0, r1, m, q), "C", L.block(r0, r1, p, m), "N", 1.0, A.block(m, q, p, m))
    _minus_lower_product(L, A, r0, r1, p, m, nb)
    _minus_lower_product(L, A, r0, r1, m, q, nb)


def _middle(j, k, nb):
    """Where [j, k) is halved: after the first ⌊b/2⌋ of its b blocks of nb columns (None when b = 1)."""
    blocks = -(-(k - j) // nb)
    return None if blocks == 1 else j + blocks // 2 * nb


def fwd_sweep(L, T, block_size):
    """Overwrite ``T`` with L̇ = L Φ(L⁻¹ K̇ L⁻ᴴ), first block to last, in place.

    On entry ``T`` holds the lower triangle of K̇ (zeros above); Ṙ, Ḃ, Ċ, Ḋ
    are the slices of L̇ (Ṙ, Ḃ already final when block [j, k) is reached)::

        [Ż; Y] ← [K̇_DD; K̇_CD] − [Ṙ; Ḃ] Rᴴ − [R; B] Ṙᴴ   (two gemms)
        Ḋ ← D Φ(D⁻¹ Ż D⁻ᴴ)                             (diagonal kernel)
        Ċ ← (Y − C Ḋᴴ) D⁻ᴴ                             (gemm, trsm)
    """
    n = L.rows
    for j in range(0, n, block_size):
        k = min(j + block_size, n)
        R, D, B, C = L.partition(j, k)
        Rd, Dd, Bd, Cd = T.partition(j, k)
        if j:
            panel = T.block(j, n, j, k)                                 # [K̇_DD; K̇_CD]
            gemm(-1.0, T.block(j, n, 0, j), "N", R, "C", 1.0, panel)    # − [Ṙ; Ḃ] Rᴴ
            gemm(-1.0, L.block(j, n, 0, j), "N", Rd, "C", 1.0, panel)   # − [R; B] Ṙᴴ
        _kernel.fwd(D, Dd)                                              # Ḋ
        if k < n:
            gemm(-1.0, C, "N", Dd, "C", 1.0, Cd)                        # Y − C Ḋᴴ
            trsm("R", D, "C", Cd)                                       # Ċ = (...) D⁻ᴴ


def default_block_size(n):
    """Block width of the sweeps when the caller gives none (measurements in notes.md)."""
    if n <= 128:
        return max(n, 1)
    return 64 if n <= 1000 else 128
