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

The sweep reuses the symmetry of its intermediate results, which is where
its flops are saved and also where, on ill-conditioned factors (GP kernel
matrices with small jitter), it loses accuracy against the closed form of
:mod:`._closed` (notes.md, "Accuracy").
"""

from . import _kernel
from ._operands import gemm, trsm
from ._passes import phi

__all__ = ["rev_sweep", "fwd_sweep", "default_block_size"]


def rev_sweep(L, A, block_size):
    """Overwrite ``A`` (a :class:`~._operands.Matrix`) with the triangular gradient G, in place.

    On entry ``A`` holds L̄ = ∂f/∂L in its logical lower triangle and zeros
    above it; on exit, G = ∂f/∂K over the lower triangle, zeros above.
    Last block to first::

        C̄ ← C̄ D⁻¹                      (trsm)
        B̄ ← B̄ − C̄ R                    (gemm)
        D̄ ← D̄ − C̄ᴴ C                   (gemm; only its lower triangle is read)
        D̄ ← X = G_D + G_Dᴴ             (diagonal kernel)
        R̄ ← R̄ − C̄ᴴ B − X R             (one gemm: [X; C̄]ᴴ [R; B])
        D̄ ← Φ(X) = G_D
    """
    n = L.rows
    for j in range((n - 1) // block_size * block_size, -1, -block_size):
        k = min(j + block_size, n)
        R, D, B, C = L.partition(j, k)
        Rb, Db, Bb, Cb = A.partition(j, k)
        if k < n:
            trsm("R", D, "N", Cb)                           # C̄ ← C̄ D⁻¹
            gemm(-1.0, Cb, "N", R, "N", 1.0, Bb)            # B̄ ← B̄ − C̄ R
            gemm(-1.0, Cb, "C", C, "N", 1.0, Db)            # D̄ ← D̄ − C̄ᴴ C
        _kernel.rev(D, Db)                                  # D̄ ← X
        if j:
            gemm(-1.0, A.block(j, n, j, k), "C", L.block(j, n, 0, j), "N", 1.0, Rb)
        phi(Db.stored, not Db.upper, 1)                     # D̄ ← Φ(X)


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
