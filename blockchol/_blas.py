"""Raw bindings to the BLAS that scipy ships, callable on strided sub-blocks.

scipy.linalg.blas's f2py wrappers copy every argument that is not contiguous,
so a blocked sweep over sub-block views would pay an O(N^2) copy per step.
scipy.linalg.cython_blas exposes the same routines as C function pointers (the
capsules in its ``__pyx_capi__``); calling those through ctypes lets us hand
BLAS a pointer into the middle of a matrix together with its leading
dimension, exactly as Fortran code would.

Everything here is raw: pointers are plain integers and nothing is checked.
Callers reach the level-3 routines only through :mod:`blockchol._operands`,
whose operands are validated when they are made, and the level-1 and level-2
routines only from the diagonal kernels of :mod:`blockchol._kernel`, which
check the work arrays they make before their loops.  ctypes releases the GIL
for the duration of each call, so concurrent Python threads run BLAS
concurrently.
"""

import ctypes

import numpy as np
from scipy.linalg import cython_blas

__all__ = ["Routines", "routines", "PREFIX", "INT_MAX"]

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
        per-matrix triangular solves of a stack (:mod:`._stacked`).
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
