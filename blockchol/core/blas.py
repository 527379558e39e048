"""BLAS, safely: raw bindings, operands addressed in lower-triangular terms, memory layouts.

**Raw bindings.**  scipy.linalg.blas's f2py wrappers copy every argument
that is not contiguous, so a blocked sweep over sub-block views would pay an
O(N²) copy per step.  scipy.linalg.cython_blas exposes the same routines as C
function pointers (the capsules in its ``__pyx_capi__``); calling those
through ctypes hands BLAS a pointer into the middle of a matrix together
with its leading dimension, exactly as Fortran code would.  ctypes releases
the GIL for the duration of each call, so concurrent Python threads run
BLAS concurrently.  :class:`Routines` is raw: pointers are plain integers
and nothing is checked there.  The level-3 routines are reached only
through the operands below, which are validated when they are made; the
level-1 and level-2 routines only from the diagonal-block kernels of
:mod:`.sweep`, which check their work arrays before their loops.

**Operands.**  The blocked algorithms are written once, for a *lower*
factor L (K = L Lᴴ), with ``'C'`` (conjugate transpose) wherever they
transpose.  A :class:`Matrix` wraps a column-major array and says how it
stores that logical lower-form matrix: ``upper=False``, the array *is* the
logical matrix; ``upper=True``, it holds its conjugate transpose (an upper
factor U with K = Uᴴ U, L = Uᴴ).  The operations :func:`gemm`,
:func:`trsm` and :func:`trmm` take :class:`Block` arguments in logical
coordinates and translate them for the stored form: for ``upper=True`` a
product C = op(A) op(B) becomes Cᴴ = op(B)ᴴ op(A)ᴴ, and a triangular solve
or multiply swaps sides.  Every dimension is checked against its operands
before the raw call, so an inconsistent call raises instead of letting
BLAS read or write out of bounds.

**Layouts.**  A C-ordered matrix is the column-major storage of its
transpose, so every matrix whose elements are unit-strided along one axis,
with a sane leading dimension along the other, can be handed to BLAS where
it lies (:func:`blas_view`); arrays that fail that test are copied once.
The rule for ``overwrite_l_bar`` lives here, once, for every path
(:func:`can_overwrite`).
"""

import ctypes

import numpy as np
from scipy.linalg import cython_blas

__all__ = ["Routines", "routines", "PREFIX", "INT_MAX", "Matrix", "Block", "gemm", "trsm", "trmm",
           "bad_blas_layout", "blas_view", "is_row_major", "can_overwrite", "non_overlapping"]

#: BLAS routine prefix for each supported dtype.
PREFIX = {
    np.dtype(np.float32): "s",
    np.dtype(np.float64): "d",
    np.dtype(np.complex64): "c",
    np.dtype(np.complex128): "z",
}

#: cython_blas takes Fortran ``int *`` arguments: 32-bit on every platform
#: scipy supports, so every dimension and leading dimension must fit.
INT_MAX = 2**31 - 1

_capsule_name = ctypes.pythonapi.PyCapsule_GetName
_capsule_name.restype = ctypes.c_char_p
_capsule_name.argtypes = [ctypes.py_object]
_capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_pointer.restype = ctypes.c_void_p
_capsule_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]

# Number of (pointer) arguments of each routine we use; all but ?dot are void functions.
_ARITY = {"gemm": 13, "trsm": 11, "trmm": 11, "gemv": 11, "ger": 9, "geru": 9,
          "dot": 5, "scal": 4, "axpy": 6}

# Option characters live for the life of the module, so their addresses can
# be passed to BLAS from any thread.
_CHARS = {c: ctypes.c_char(c.encode()) for c in "NTCLRU"}
_CHAR = {c: ctypes.addressof(v) for c, v in _CHARS.items()}

_SCALAR = {"s": ctypes.c_float, "d": ctypes.c_double,
           "c": ctypes.c_float, "z": ctypes.c_double}


def _load(name, restype=None):
    capsule = cython_blas.__pyx_capi__[name]
    address = _capsule_pointer(capsule, _capsule_name(capsule))
    prototype = ctypes.CFUNCTYPE(restype, *([ctypes.c_void_p] * _ARITY[name[1:]]))
    return prototype(address)


class _ArgCache:
    """Immutable ctypes argument vectors, made once per distinct tuple of values.

    A sweep repeats the same few dimensions and scalars, and building ctypes
    arrays costs more than the BLAS call for small blocks.  Entries are
    never mutated, so threads may share them; the cache is simply emptied
    when it grows large.
    """

    def __init__(self, ctype):
        self._ctype = ctype
        self._entries = {}

    def __call__(self, values):
        entry = self._entries.get(values)
        if entry is None:
            if len(self._entries) > 4096:
                self._entries = {}
            array = (self._ctype * len(values))(*values)
            entry = (array, ctypes.addressof(array))
            self._entries[values] = entry
        return entry


_INTS = _ArgCache(ctypes.c_int)


class Routines:
    """The routines of one precision, called with Fortran conventions.

    The level-3 methods take the arguments of the reference BLAS, in order,
    with matrices given as integer addresses and options as one-letter
    strings.  For real precisions the op ``'C'`` (conjugate transpose) is
    passed as ``'T'``.

    The diagonal kernels' routines are bare ctypes functions, every argument
    an address (``raw_gemv``, ``raw_ger``; ``raw_dot``, ``raw_scal``,
    ``raw_axpy``): each is called once per column, where building arguments
    would cost more than the call.  ``raw_ger`` is ``?geru`` for complex
    precisions (no conjugation).  ``raw_dot``, ``raw_scal`` and ``raw_axpy``
    are the *real* routines of the precision: a complex vector of unit stride
    goes to them as the interleaved real vector of twice its length, which is
    Re(xᴴy) for the dot and a real multiple for the other two.
    """

    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)
        self.prefix = PREFIX[self.dtype]
        self.is_complex = self.prefix in "cz"
        self._gemm = _load(self.prefix + "gemm")
        self._trsm = _load(self.prefix + "trsm")
        self._trmm = _load(self.prefix + "trmm")
        real = "s" if self.prefix in "sc" else "d"
        self.raw_gemv = _load(self.prefix + "gemv")
        self.raw_ger = _load(self.prefix + ("geru" if self.is_complex else "ger"))
        self.raw_dot = _load(real + "dot", _SCALAR[real])
        self.raw_scal = _load(real + "scal")
        self.raw_axpy = _load(real + "axpy")
        self._scalars = _ArgCache(_SCALAR[self.prefix])
        # alpha and beta as one vector; complex numbers take two slots each.
        self._beta_offset = ctypes.sizeof(_SCALAR[self.prefix]) * (2 if self.is_complex else 1)
        op = dict(N="N", T="T", C="C" if self.is_complex else "T")
        #: The addresses of the op characters ``'N'``, ``'T'``, ``'C'`` (the last ``'T'`` for real).
        self.option = {k: _CHAR[v] for k, v in op.items()}

    def _pack(self, alpha, beta):
        if self.is_complex:
            alpha, beta = complex(alpha), complex(beta)
            return self._scalars((alpha.real, alpha.imag, beta.real, beta.imag))
        return self._scalars((alpha, beta))

    def gemm(self, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
        """c <- alpha op(a) op(b) + beta c, with c m-by-n and k inner."""
        keep_s, s = self._pack(alpha, beta)
        keep_i, p = _INTS((m, n, k, lda, ldb, ldc))
        self._gemm(self.option[transa], self.option[transb], p, p + 4, p + 8,
                   s, a, p + 12, b, p + 16, s + self._beta_offset, c, p + 20)

    def trsm(self, side, uplo, transa, m, n, alpha, a, lda, b, ldb):
        """b <- alpha op(a)^-1 b (side 'L') or alpha b op(a)^-1 (side 'R'); b m-by-n."""
        keep_s, s = self._pack(alpha, 0.0)
        keep_i, p = _INTS((m, n, lda, ldb))
        self._trsm(_CHAR[side], _CHAR[uplo], self.option[transa], _CHAR["N"],
                   p, p + 4, s, a, p + 8, b, p + 12)

    def trsm_each(self, side, uplo, transa, n, alpha, a, b, step, count):
        """:meth:`trsm` on ``count`` n×n pairs at addresses a + i·step, b + i·step (lda = ldb = n).

        The arguments are packed once for all of them: the loop is the
        per-matrix triangular solves and products of a stack (:mod:`.stacks`).
        """
        self._each(self._trsm, side, uplo, transa, n, alpha, a, b, step, count)

    def trmm_each(self, side, uplo, transa, n, alpha, a, b, step, count):
        """:meth:`trmm` on ``count`` n×n pairs, as :meth:`trsm_each`."""
        self._each(self._trmm, side, uplo, transa, n, alpha, a, b, step, count)

    def _each(self, call, side, uplo, transa, n, alpha, a, b, step, count):
        keep_s, s = self._pack(alpha, 0.0)
        keep_i, p = _INTS((n, n))
        sd, ul, op, unit = _CHAR[side], _CHAR[uplo], self.option[transa], _CHAR["N"]
        for _ in range(count):
            call(sd, ul, op, unit, p, p, s, a, p, b, p)
            a += step
            b += step

    def trmm(self, side, uplo, transa, m, n, alpha, a, lda, b, ldb):
        """b <- alpha op(a) b (side 'L') or alpha b op(a) (side 'R'); b m-by-n."""
        keep_s, s = self._pack(alpha, 0.0)
        keep_i, p = _INTS((m, n, lda, ldb))
        self._trmm(_CHAR[side], _CHAR[uplo], self.option[transa], _CHAR["N"],
                   p, p + 4, s, a, p + 8, b, p + 12)


_ROUTINES = {dtype: Routines(dtype) for dtype in PREFIX}


def routines(dtype):
    """The :class:`Routines` for ``dtype`` (one of the keys of :data:`PREFIX`)."""
    return _ROUTINES[np.dtype(dtype)]


# --------------------------------------------------------------------------
# Operands


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


# --------------------------------------------------------------------------
# Layouts


def blas_view(a):
    """``(stored, transposed)`` with ``stored`` a column-major view of matrix ``a``, or None.

    ``transposed`` is True when ``stored`` is ``a.T`` (``a`` row-major).
    """
    if bad_blas_layout(a) is None:
        return a, False
    if bad_blas_layout(a.T) is None:
        return a.T, True
    return None


def is_row_major(a):
    """Whether the last two axes of ``a`` are laid out row by row (C order; the default).

    A matrix is column-major when its rows are closer together in memory
    than its columns; a 1×1, 1×N or N×1 matrix counts as row-major unless it
    is only Fortran-contiguous.
    """
    s0, s1 = abs(a.strides[-2]), abs(a.strides[-1])
    if a.shape[-2] > 1 and a.shape[-1] > 1:
        return s1 <= s0
    return not (a.flags.f_contiguous and not a.flags.c_contiguous)


def non_overlapping(a):
    """True when no two elements of ``a`` share memory (decided from the strides alone).

    Sufficient, not necessary: axes sorted by stride must each step over the
    whole extent of the smaller ones.  Views made with ``as_strided`` whose
    matrices overlap fail it.
    """
    extent = a.itemsize
    for stride, size in sorted((abs(s), n) for s, n in zip(a.strides, a.shape) if n > 1):
        if stride < extent:
            return False
        extent = stride * size
    return True


def can_overwrite(X, L, shape, dtype):
    """The ``overwrite_l_bar`` rule: may the result be written over ``X``?

    Yes when ``X`` has the result's shape (no broadcasting) and dtype, is
    writeable, overlaps neither ``L`` nor itself, and its matrices are laid
    out as BLAS can address them (unit stride along rows or columns) in the
    same memory order as ``L``'s -- the order the result takes, so that
    every BLAS call sees one storage form.
    """
    return (X.shape == shape and X.dtype == dtype and X.flags.writeable
            and blas_view(X[(0,) * (X.ndim - 2)]) is not None
            and is_row_major(X) == is_row_major(L)
            and not np.may_share_memory(X, L) and non_overlapping(X))
