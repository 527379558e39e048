"""The blocked right-to-left reverse sweep (Murray 2016, "chol_blocked_rev").

Everything is written for a lower factor L (K = L Lᴴ); :mod:`._operands`
maps it onto whatever the arrays store.  On entry Ā holds the lower
triangle of L̄ = ∂f/∂L (zeros above); on exit it holds the triangular
gradient G of f with respect to the lower triangle of K.

For each diagonal block [j, k), last to first, partition (``Matrix.partition``)::

        [ .  .  . ]      R = L[j:k, :j]    D = L[j:k, j:k]
    L = [ R  D  . ]      B = L[k:,  :j]    C = L[k:,  j:k]
        [ B  C  . ]

and the same slices R̄, D̄, B̄, C̄ of Ā.  The forward factorization made
D Dᴴ = K_DD − R Rᴴ and C = (K_CD − B Rᴴ) D⁻ᴴ; undoing those two lines is

    C̄ ← C̄ D⁻¹                      (trsm)
    B̄ ← B̄ − C̄ R                    (gemm)
    D̄ ← D̄ − tril(C̄ᴴ C)             (gemm into workspace)
    D̄ ← unblocked(D, D̄)            (diagonal kernel, :mod:`._kernel`)
    R̄ ← R̄ − C̄ᴴ B − (D̄ + D̄ᴴ) R      (one gemm: [D̄+D̄ᴴ; C̄]ᴴ [R; B])

Almost all flops are in the two gemms, 2N³/3 in total: twice the
factorization's N³/3.
"""

import numpy as np

from . import _kernel
from ._operands import Matrix, gemm, lower_mask, phi_mask, real_diagonal, trsm


def rev_sweep(L, A, block_size, W, kernel=_kernel.symbolic):
    """Overwrite ``A`` (Ā, a :class:`~._operands.Matrix`) with the gradient, in place.

    ``W`` is a workspace :class:`~._operands.Matrix` of at least
    ``block_size`` × ``block_size``, in the same form as ``L`` and ``A``.
    """
    n = L.rows
    last_start = (n - 1) // block_size * block_size
    for j in range(last_start, -1, -block_size):
        k = min(j + block_size, n)
        R, D, B, C = L.partition(j, k)
        Rb, Db, Bb, Cb = A.partition(j, k)
        if k < n:
            trsm("R", D, "N", Cb)                        # C̄ ← C̄ D⁻¹
            gemm(-1.0, Cb, "N", R, "N", 1.0, Bb)         # B̄ ← B̄ − C̄ R
            Wb = W.block(0, k - j, 0, k - j)
            gemm(1.0, Cb, "C", C, "N", 0.0, Wb)          # W ← C̄ᴴ C
            np.subtract(Db.stored, Wb.stored, out=Db.stored,
                        where=lower_mask(k - j, Db.upper))  # D̄ ← D̄ − tril(W)
        kernel(D, Db, W.block(0, k - j, 0, k - j))       # block now holds D̄ + D̄ᴴ
        if j:
            # R̄ ← R̄ − C̄ᴴ B − (D̄ + D̄ᴴ) R, as the one product [D̄+D̄ᴴ; C̄]ᴴ [R; B]
            gemm(-1.0, A.block(j, n, j, k), "C", L.block(j, n, 0, j), "N", 1.0, Rb)
        d = Db.stored
        d *= phi_mask(k - j, Db.upper, d.real.dtype)     # D̄ = Φ(D̄ + D̄ᴴ)
        real_diagonal(d)


def fwd_sweep(L, T, block_size, W):
    """Overwrite ``T`` with L̇ = L Φ(L⁻¹ K̇ L⁻ᴴ), left to right, in place.

    On entry ``T`` holds the lower triangle of K̇ (zeros above).  Per
    diagonal block [j, k), with the partition of :meth:`Matrix.partition`
    and Ṙ, Ḋ, Ḃ, Ċ the same slices of L̇ (Ṙ, Ḃ already final), the
    forward factorization's two lines D Dᴴ = K_DD − R Rᴴ and
    C = (K_CD − B Rᴴ) D⁻ᴴ differentiate to

        [Ż; Y] ← [K̇_DD; K̇_CD] − [Ṙ; Ḃ] Rᴴ − [R; B] Ṙᴴ   (two gemms)
        Ḋ ← D Φ(D⁻¹ Ż D⁻ᴴ)                             (diagonal kernel)
        Ċ ← (Y − C Ḋᴴ) D⁻ᴴ                             (gemm, trsm)

    2N³/3 flops in the gemms, like the reverse sweep.
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
        _kernel.symbolic_fwd(D, Dd, W.block(0, k - j, 0, k - j))        # Ḋ
        if k < n:
            gemm(-1.0, C, "N", Dd, "C", 1.0, Cd)                        # Y − C Ḋᴴ
            trsm("R", D, "C", Cd)                                       # Ċ = (...) D⁻ᴴ


def recursive_kernel(inner_block_size):
    """A diagonal kernel that runs this sweep again on the block (two-level blocking)."""
    def kernel(D, Db, W):
        inner = np.empty((inner_block_size, inner_block_size), dtype=W.stored.dtype, order="F")
        rev_sweep(Matrix(D.stored, D.upper), Matrix(Db.stored, Db.upper),
                  min(inner_block_size, max(Db.rows, 1)), Matrix(inner, W.upper),
                  kernel=_kernel.level2)
        _kernel.symmetrize(Db)
    return kernel


def default_block_size(n):
    """Block width used when the caller gives none (measurements in notes.md).

    Up to N = 100 one block (the diagonal kernel's closed form on the whole
    matrix) costs the fewest calls; up to N = 1000, 64-wide blocks balance
    the kernel's O(N·nb²) against small gemms; above, 128.
    """
    if n <= 100:
        return max(n, 1)
    return 64 if n <= 1000 else 128
