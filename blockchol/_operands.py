"""Blocks of a triangular factor as BLAS operands, addressed in lower-triangular terms.

The blocked sweep is written once, for a *lower* factor L (K = L Lᴴ), with
``'C'`` (conjugate transpose) wherever the algorithm transposes.  A
:class:`Matrix` wraps a column-major array and says how it stores that
logical lower-form matrix:

* ``upper=False``: the array *is* the logical matrix;
* ``upper=True``: the array holds its conjugate transpose (an upper factor U
  with K = Uᴴ U, L = Uᴴ).

A C-ordered array is the column-major storage of its transpose, so every
layout the user can pass reduces to one of these two forms (see
:mod:`blockchol._validation`).  The operations below take :class:`Block`
arguments in logical coordinates and translate them for the stored form:
for ``upper=True`` a product C = op(A) op(B) becomes Cᴴ = op(B)ᴴ op(A)ᴴ,
and a triangular solve or multiply swaps sides.  Every dimension is checked
against its operands before the raw call, so an inconsistent call raises
instead of letting BLAS read or write out of bounds.
"""

import numpy as np

from ._blas import INT_MAX, routines

__all__ = ["Matrix", "Block", "gemm", "trsm", "trmm", "bad_blas_layout"]


def bad_blas_layout(stored):
    """Why ``stored`` can't be handed to BLAS as a column-major matrix, or ``None``.

    BLAS needs unit stride down each column, a leading dimension (the
    column stride, in elements) of at least max(1, rows), every number
    within a 32-bit int, and aligned data.
    """
    if stored.ndim != 2:
        return "a BLAS operand must be two-dimensional, got %d dimensions" % stored.ndim
    if stored.dtype not in _DTYPES:
        return "no BLAS routines for dtype %s" % stored.dtype
    rows, cols = stored.shape
    isz = stored.itemsize
    if rows > INT_MAX or cols > INT_MAX:
        return "shape %s exceeds the 32-bit BLAS interface" % (stored.shape,)
    if not stored.flags.aligned:
        return "data is not aligned for its dtype"
    if rows > 1 and stored.strides[0] != isz:
        return "column stride is %d bytes, not one element" % stored.strides[0]
    if cols > 1:
        ld, rem = divmod(stored.strides[1], isz)
        if rem or ld < max(1, rows) or ld > INT_MAX:
            return ("leading dimension %s is invalid for %d rows"
                    % (stored.strides[1] / isz, rows))
    return None


_DTYPES = frozenset(np.dtype(t) for t in (np.float32, np.float64, np.complex64, np.complex128))


class Matrix:
    """A validated column-major array holding a logical lower-form matrix.

    Parameters
    ----------
    stored : ndarray
        Column-major (unit row stride) array; any leading dimension.
    upper : bool
        True when ``stored`` holds the conjugate transpose of the logical matrix.
    """

    __slots__ = ("stored", "upper", "blas", "addr", "ld", "isz", "rows", "cols")

    def __init__(self, stored, upper):
        problem = bad_blas_layout(stored)
        if problem:
            raise ValueError("internal error: " + problem)
        self.stored = stored
        self.upper = bool(upper)
        self.blas = routines(stored.dtype)
        self.isz = stored.itemsize
        self.addr = stored.__array_interface__["data"][0]
        srows, scols = stored.shape
        self.ld = stored.strides[1] // self.isz if scols > 1 else max(1, srows)
        self.rows, self.cols = (scols, srows) if upper else (srows, scols)

    def block(self, i0, i1, j0, j1):
        """Logical rows [i0, i1) and columns [j0, j1) as a :class:`Block`."""
        if not (0 <= i0 <= i1 <= self.rows and 0 <= j0 <= j1 <= self.cols):
            raise IndexError("internal error: block [%d:%d, %d:%d] outside a %dx%d matrix"
                             % (i0, i1, j0, j1, self.rows, self.cols))
        return Block(self, i0, i1, j0, j1)

    def whole(self):
        """The whole matrix as a :class:`Block`."""
        return Block(self, 0, self.rows, 0, self.cols)

    def partition(self, j, k):
        """The partition around the diagonal block [j, k) (Murray 2016, sec. 4)::

                [ .  .  . ]     R = [j:k, :j]    D = [j:k, j:k]
                [ R  D  . ]     B = [k:,  :j]    C = [k:,  j:k]
                [ B  C  . ]
        """
        n = self.rows
        return (self.block(j, k, 0, j), self.block(j, k, j, k),
                self.block(k, n, 0, j), self.block(k, n, j, k))


class Block:
    """A rectangular block of a :class:`Matrix`, in logical coordinates."""

    __slots__ = ("matrix", "i0", "i1", "j0", "j1", "rows", "cols", "addr", "ld", "upper")

    def __init__(self, matrix, i0, i1, j0, j1):
        self.matrix = matrix
        self.i0, self.i1, self.j0, self.j1 = i0, i1, j0, j1
        self.rows, self.cols = i1 - i0, j1 - j0
        self.upper = matrix.upper
        self.ld = matrix.ld
        r, c = (j0, i0) if matrix.upper else (i0, j0)
        self.addr = matrix.addr + (r + c * matrix.ld) * matrix.isz

    @property
    def stored(self):
        """The numpy view of this block as stored (the conjugate transpose when upper)."""
        if self.upper:
            return self.matrix.stored[self.j0:self.j1, self.i0:self.i1]
        return self.matrix.stored[self.i0:self.i1, self.j0:self.j1]


def _same_form(*blocks):
    first = blocks[0].matrix
    for b in blocks[1:]:
        if b.upper != first.upper or b.matrix.blas is not first.blas:
            raise ValueError("internal error: operands of one BLAS call differ in form or dtype")
    return first.blas


def _conj(x):
    return x.conjugate() if isinstance(x, complex) else x


def gemm(alpha, A, opa, B, opb, beta, C):
    """C ← α op(A) op(B) + β C, where op is ``'N'`` or ``'C'`` (conjugate transpose)."""
    blas = _same_form(A, B, C)
    m, n = C.rows, C.cols
    ar, ac = (A.rows, A.cols) if opa == "N" else (A.cols, A.rows)
    br, bc = (B.rows, B.cols) if opb == "N" else (B.cols, B.rows)
    if ar != m or bc != n or ac != br:
        raise ValueError("internal error: gemm of %dx%d by %dx%d into %dx%d" % (ar, ac, br, bc, m, n))
    if m == 0 or n == 0:
        return
    if C.upper:  # stored: Cᴴ ← ᾱ op(B)ᴴ op(A)ᴴ + β̄ Cᴴ
        blas.gemm(opb, opa, n, m, ac, _conj(alpha), B.addr, B.ld, A.addr, A.ld,
                  _conj(beta), C.addr, C.ld)
    else:
        blas.gemm(opa, opb, m, n, ac, alpha, A.addr, A.ld, B.addr, B.ld, beta, C.addr, C.ld)


def _triangular(routine, side, A, opa, B, alpha):
    blas = _same_form(A, B)
    if A.rows != A.cols or A.rows != (B.rows if side == "L" else B.cols):
        raise ValueError("internal error: triangular %dx%d against %dx%d on side %s"
                         % (A.rows, A.cols, B.rows, B.cols, side))
    if B.rows == 0 or B.cols == 0:
        return
    call = getattr(blas, routine)
    if B.upper:  # stored: Bᴴ ← op(A)⁻ᴴ Bᴴ (or op(A)ᴴ Bᴴ): the other side, the upper triangle
        call("R" if side == "L" else "L", "U", opa, B.cols, B.rows, _conj(alpha),
             A.addr, A.ld, B.addr, B.ld)
    else:
        call(side, "L", opa, B.rows, B.cols, alpha, A.addr, A.ld, B.addr, B.ld)


def trsm(side, A, opa, B, alpha=1.0):
    """B ← α op(A)⁻¹ B (side ``'L'``) or α B op(A)⁻¹ (side ``'R'``); A lower triangular."""
    _triangular("trsm", side, A, opa, B, alpha)


def trmm(side, A, opa, B, alpha=1.0):
    """B ← α op(A) B (side ``'L'``) or α B op(A) (side ``'R'``); A lower triangular."""
    _triangular("trmm", side, A, opa, B, alpha)
