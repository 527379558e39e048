"""The blocked sweeps (Murray 2016, "chol_blocked_rev" and "chol_blocked_fwd") and their diagonal-block kernels.

Everything is written for a lower factor L (K = L Lᴴ); :mod:`.blas` maps it
onto whatever the arrays store.  For each diagonal block [j, k), partition
(``Matrix.partition``)::

        [ .  .  . ]      R = L[j:k, :j]    D = L[j:k, j:k]
    L = [ R  D  . ]      B = L[k:,  :j]    C = L[k:,  j:k]
        [ B  C  . ]

and the same slices of the array being swept.  The factorization made
D Dᴴ = K_DD − R Rᴴ and C = (K_CD − B Rᴴ) D⁻ᴴ; the reverse sweep undoes
those two lines from the last block to the first, the forward sweep
differentiates them from the first to the last.  Almost all flops are in
the gemms, 2N³/3 in either direction: twice the factorization's N³/3.

The forward sweep is that loop over blocks of ``block_size`` columns.  The
reverse sweep is the same sweep with two blocks, the second and the first
half of the matrix, whose diagonal blocks are swept the same way in turn,
down to blocks of ``block_size`` columns: the leaves, on the loop's grid,
go to the kernel.  The arithmetic is the loop's, only with each block's
updates to the columns on its left gathered into one product per half
instead of one per block, so the products come in the largest shapes
(LAPACK's ``?potrf2`` factors by the same halving); it was as fast or
faster than the loop, and as accurate (notes: Design, "The reverse sweep
in halves").  The forward sweep in halves was slower (its two triangular
products are each split down to the leaves), so it keeps the loop.

**The diagonal-block kernels** (:func:`kernel_rev`, :func:`kernel_fwd`)
differentiate the factorization of one diagonal block D on its own, one
column at a time (Murray's "chol_unblocked_rev" and "chol_unblocked_fwd"),
so that the blocked sweep does the unblocked sweep's arithmetic, only with
its updates outside the block gathered into gemms.  That is what keeps it
as accurate as the unblocked sweep at every block size: faster kernels that
compute the same function (the closed form on the block, a two-sided solve
by LAPACK's ``?sygst``, a left-looking loop) lost accuracy on GP kernel
matrices (notes: Accuracy).  The price is one Python step per column, made
of four BLAS calls straight through the raw bindings of :mod:`.blas`, with
every address computed from the work arrays' bases.  The kernels work on
logical lower-form, Fortran-ordered copies of the block
(:func:`work_copy`), which :class:`_Work` checks before any raw call.

The sweep reuses the symmetry of its intermediate results, which is where
its flops are saved and also where, on ill-conditioned factors (GP kernel
matrices with small jitter), it loses accuracy against the closed form of
:mod:`.closed` (notes: Accuracy).
"""

import numpy as np

from .blas import INT_MAX, bad_blas_layout, gemm, routines, trsm
from .triangles import herm, mirror_lower

__all__ = ["sweep_rev", "sweep_fwd", "kernel_rev", "kernel_fwd", "work_copy"]


def sweep_rev(L, A, block_size):
    """Overwrite ``A`` (a :class:`~.blas.Matrix`) with X = G + Gᴴ over its lower triangle, in place.

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
        _diagonal_rev(L.block(j, k, j, k), A.block(j, k, j, k))       # X, both triangles
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
    """Where [j, k) is halved: after the first ⌊b/2⌋ of its b blocks of nb columns (None when b ≤ 1)."""
    blocks = -(-(k - j) // nb)
    return None if blocks <= 1 else j + blocks // 2 * nb


def sweep_fwd(L, T, block_size):
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
        _diagonal_fwd(D, Dd)                                            # Ḋ
        if k < n:
            gemm(-1.0, C, "N", Dd, "C", 1.0, Cd)                        # Y − C Ḋᴴ
            trsm("R", D, "C", Cd)                                       # Ċ = (...) D⁻ᴴ


# --------------------------------------------------------------------------
# The diagonal-block kernels


def work_copy(x, dtype=None):
    """A kernel's work array: a Fortran-ordered copy of the 2-D ``x`` (of ``dtype``)."""
    return np.array(x, dtype=dtype, order="F")


class _Work:
    """What a kernel's BLAS calls point at: the arrays' addresses, every size, the scalars.

    Checks the arrays first: square, one shape and one BLAS dtype,
    Fortran-contiguous (leading dimension n), the swept one writeable, so
    that every raw call of the loops stays inside them.  Addresses are plain integers, taken once
    (``ndarray.ctypes`` costs more than a BLAS call on a column):
    ``sizes + 4 v`` is the Fortran integer v, for 0 ≤ v ≤ 2n (a complex
    vector of length m is a real one of length 2m); ``inverse + j·real`` is
    the real 1/δ_j; ``minus``, ``plus`` are −1 and 1 in the dtype.
    """

    def __init__(self, d, a):
        # The operands' own check first (dimensions, dtype, alignment, strides), then
        # what the loops' address arithmetic assumes on top: one square shape, one
        # dtype, leading dimension n, 2n within the BLAS integers.
        problem = bad_blas_layout(d) or bad_blas_layout(a)
        if not (problem is None and d.shape[0] == d.shape[1] and a.shape == d.shape
                and d.dtype == a.dtype and d.flags.f_contiguous and a.flags.f_contiguous
                and a.flags.writeable and 2 * d.shape[0] < INT_MAX):
            raise ValueError("internal error: a diagonal kernel needs two Fortran-ordered square "
                             "arrays of one shape and BLAS dtype (the second writeable), "
                             "got %s %s and %s %s%s" % (d.shape, d.dtype, a.shape, a.dtype,
                                                        ": " + problem if problem else ""))
        self.n = n = d.shape[0]
        self.blas = routines(d.dtype)
        self.step = d.itemsize                          # bytes per element
        self.reals = 2 if self.blas.is_complex else 1   # real numbers per element
        self.real = self.step // self.reals             # bytes per real number
        self.pivots = d.diagonal().real.tolist()
        self._keep = (np.arange(2 * n + 1, dtype=np.int32),
                      1.0 / d.diagonal().real,
                      np.array([-1.0, 1.0, 0.0], dtype=d.dtype))
        self.slot = self._keep[2]                       # [−1, 1, a value to set]
        self.sizes, self.inverse, scalars = (x.ctypes.data for x in self._keep)
        self.minus, self.plus, self.settable = scalars, scalars + self.step, scalars + 2 * self.step
        self.d, self.a = d.ctypes.data, a.ctypes.data
        # x̄ for the conjugated vector of a gemv, complex only
        self.conj = np.empty(n, dtype=d.dtype) if self.blas.is_complex else None
        self.conj_address = self.conj.ctypes.data if self.blas.is_complex else None


def kernel_rev(d, a):
    """Murray's unblocked reverse sweep on an n×n block, in place on ``a``.

    ``d`` is the lower factor (its strict upper triangle is not read),
    ``a`` holds L̄ in its lower triangle; both Fortran-ordered, one BLAS
    dtype (:func:`work_copy`).  With r, δ, B, c the row left of, the pivot
    of, the block below-left of and the column below pivot j, and the same
    slices of ``a``, right to left::

        δ̄ ← (δ̄ − Re(cᴴ c̄)/δ)/δ;  c̄ ← c̄/δ;  [r̄; B̄] ← [r̄; B̄] − [δ̄; c̄] r;  r̄ ← r̄ − c̄ᴴ B

    On exit ``a``'s strict lower triangle is G's; its diagonal holds 2 G_jj.
    One dot, scal, ger and gemv per column, straight to BLAS.
    """
    w = _Work(d, a)
    n, s, I, blas = w.n, w.step, w.sizes, w.blas
    dot, scal, ger, gemv, trans = blas.raw_dot, blas.raw_scal, blas.raw_ger, blas.raw_gemv, blas.option["T"]
    D, A, pivots, inverse, real, reals = w.d, w.a, w.pivots, w.inverse, w.real, w.reals
    one, ld, minus, plus, conj = I + 4, I + 4 * n, w.minus, w.plus, w.conj
    diagonal = a.diagonal().real.tolist()       # δ̄_j is not updated before its own step
    for j in range(n - 1, -1, -1):
        p, m = pivots[j], n - 1 - j
        c, cb = D + (j + 1 + j * n) * s, A + (j + 1 + j * n) * s
        size = I + 4 * reals * m                                        # c, c̄ as real vectors
        dot_c = dot(size, c, one, cb, one) if m else 0.0                # Re(cᴴ c̄)
        scal(size, inverse + j * real, cb, one)                         # c̄ ← c̄/δ
        a[j, j] = (diagonal[j] - dot_c / p) / p                         # δ̄
        if j:
            r, rb = D + j * s, A + j * s
            ger(I + 4 * (n - j), I + 4 * j, minus, cb - s, one, r, ld, rb, ld)  # [r̄; B̄] −= [δ̄; c̄] r
            if m:
                x = cb
                if conj is not None:
                    np.conjugate(a[j + 1:, j], out=conj[:m])
                    x = w.conj_address
                gemv(trans, I + 4 * m, I + 4 * j, minus, r + s, ld, x, one, plus, rb, ld)  # r̄ −= c̄ᴴ B


def kernel_fwd(d, z):
    """The unblocked forward sweep on an n×n block, in place on ``z``: Ż → Ḋ = D Φ(D⁻¹ Ż D⁻ᴴ).

    Arrays as for :func:`kernel_rev`.  Left to right, with r, δ, B, c as
    there and ṙ, ċ the slices of Ḋ (ṙ final)::

        [ż; y] ← [ż; y] − [ṙ; Ḃ] r̄ − [r; B] ṙ̄;  δ̇ ← ż / 2δ;  ċ ← (y − c δ̇) / δ

    Reads only the lower triangle of ``z``; leaves junk above it.  Two
    gemvs, one axpy and one scal per column.
    """
    w = _Work(d, z)
    n, s, I, blas = w.n, w.step, w.sizes, w.blas
    scal, axpy, gemv, notrans = blas.raw_scal, blas.raw_axpy, blas.raw_gemv, blas.option["N"]
    D, Z, pivots, inverse, real, reals = w.d, w.a, w.pivots, w.inverse, w.real, w.reals
    one, ld, minus, plus, conj, slot = I + 4, I + 4 * n, w.minus, w.plus, w.conj, w.slot
    rows_conj = D                               # r̄ of every row: conj(d) when complex
    if conj is not None:
        d_conj = work_copy(d.conj())
        rows_conj = d_conj.ctypes.data
    for j in range(n):
        p, m = pivots[j], n - 1 - j
        col = Z + (j + j * n) * s               # [ż; y]: rows j: of column j
        if j:
            rows, cols = I + 4 * (n - j), I + 4 * j
            gemv(notrans, rows, cols, minus, Z + j * s, ld, rows_conj + j * s, ld,
                 plus, col, one)                                        # − [ṙ; Ḃ] r̄
            x, incx = Z + j * s, ld                                     # ṙ̄
            if conj is not None:
                np.conjugate(z[j, :j], out=conj[:j])
                x, incx = w.conj_address, one
            gemv(notrans, rows, cols, minus, D + j * s, ld, x, incx, plus, col, one)  # − [r; B] ṙ̄
        dd = z[j, j].real / (2.0 * p)
        z[j, j] = dd                                                    # δ̇
        if m:
            size = I + 4 * reals * m
            slot[2] = -dd
            axpy(size, w.settable, D + (j + 1 + j * n) * s, one, col + s, one)   # y − c δ̇
            scal(size, inverse + j * real, col + s, one)                        # ċ ← (...)/δ


# --------------------------------------------------------------------------
# The diagonal blocks of the sweeps


def _block_copy(block):
    """The block's logical lower-form matrix, as a work array."""
    return work_copy(herm(block.stored) if block.upper else block.stored)


def _diagonal_rev(D, Db):
    """Db ← X = G_D + G_Dᴴ, G_D the gradient of the diagonal block D swept on its own.

    On entry ``Db`` holds D̄ in its logical lower triangle (anything above);
    on exit the *whole* block holds the Hermitian X, which the sweep's update
    of R̄ needs; Φ(X) = G_D is taken once the whole sweep is done.
    """
    d, a = _block_copy(D), _block_copy(Db)
    kernel_rev(d, a)
    mirror_lower(a)             # X = G_D + G_Dᴴ; its diagonal, 2 G_jj, made real
    Db.stored[...] = a          # Hermitian: the same array in either stored form


def _diagonal_fwd(D, Dd):
    """Dd ← Ḋ = D Φ(D⁻¹ Ż D⁻ᴴ): Ż in its logical lower triangle on entry, zeros above on exit."""
    d, z = _block_copy(D), _block_copy(Dd)
    kernel_fwd(d, z)
    z = np.tril(z)
    Dd.stored[...] = herm(z) if Dd.upper else z
