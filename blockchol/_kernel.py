"""The diagonal-block kernels of the blocked sweeps (:mod:`._sweep`): the unblocked sweeps.

Each kernel differentiates the Cholesky factorization of one diagonal block
D on its own, one column at a time (Murray 2016, "chol_unblocked_rev" and
"chol_unblocked_fwd"), so that the blocked sweep does the unblocked sweep's
arithmetic, only with its updates outside the block gathered into gemms.
That is what keeps it as accurate as the unblocked sweep at every block
size.  Faster kernels that compute the same function lose accuracy on GP
kernel matrices (notes.md, "Accuracy"): the closed form on the block by up
to 10⁵× (the defect this module once had), a two-sided solve by LAPACK's
``?sygst`` by up to 7.6×, against 3.6× for this one (worst case over the
block sizes, kernel families and seeds measured).  The price is one
Python step per column.  Each step is four BLAS calls (a dot, a scal, a
ger and a gemv in reverse; two gemvs, an axpy and a scal forward) made
straight through the raw bindings of :mod:`._blas`, with every address
computed from the work arrays' bases (complex adds one numpy conjugation
per column): 4-5 µs a column alone at 64-128-wide blocks, about 5.5 inside
the sweep, against 10-14 alone and about 21 inside the sweep for the same
loop in numpy calls (notes.md, "The kernel in BLAS calls").  A left-looking form of the
same loop (the rank-1 updates delayed into one product with the finished
part of X per column) was twice as fast in numpy but 1.2× less accurate on
average, up to 2.4× (notes.md, "Accuracy"), so it is not used.

Both kernels work on logical lower-form, Fortran-ordered copies of the
block (D and the block of the swept array: :func:`work_copy`), which
:class:`_Work` checks before any raw call, and write the result back.

Reverse (:func:`rev`): on entry the block ``Db`` holds D̄ in its logical
lower triangle (anything above); on exit the *whole* block holds the
Hermitian X = G_D + G_Dᴴ, G_D the block's gradient, which the sweep's
update of R̄ needs; Φ(X) = G_D is taken once the whole sweep is done.

Forward (:func:`fwd`): on entry the block holds Ż in its logical lower
triangle; on exit Ḋ = D Φ(D⁻¹ Ż D⁻ᴴ), lower triangular, zeros above.
"""

import numpy as np

from ._blas import INT_MAX, routines
from ._operands import bad_blas_layout
from ._triangles import herm, mirror_lower

__all__ = ["rev", "fwd", "level2_rev", "level2_fwd", "work_copy"]


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


def level2_rev(d, a):
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


def level2_fwd(d, z):
    """The unblocked forward sweep on an n×n block, in place on ``z``: Ż → Ḋ = D Φ(D⁻¹ Ż D⁻ᴴ).

    Arrays as for :func:`level2_rev`.  Left to right, with r, δ, B, c as
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


def _block_copy(block):
    """The block's logical lower-form matrix, as a work array."""
    return work_copy(herm(block.stored) if block.upper else block.stored)


def rev(D, Db):
    """Db ← X = G_D + G_Dᴴ for the block (see the module)."""
    d, a = _block_copy(D), _block_copy(Db)
    level2_rev(d, a)
    mirror_lower(a)             # X = G_D + G_Dᴴ; its diagonal, 2 G_jj, made real
    Db.stored[...] = a          # Hermitian: the same array in either stored form


def fwd(D, Dd):
    """Dd ← Ḋ = D Φ(D⁻¹ Ż D⁻ᴴ) for the block (see the module)."""
    d, z = _block_copy(D), _block_copy(Dd)
    level2_fwd(d, z)
    z = np.tril(z)
    Dd.stored[...] = herm(z) if Dd.upper else z
