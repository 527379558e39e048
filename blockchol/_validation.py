"""Checks of the public functions' arguments, in the order their errors are documented.

Nothing here changes an array; layouts are settled in :mod:`._layout` and
:mod:`._plan`.  Errors about stacks name the matrix's batch index.
"""

import math
import operator

import numpy as np

from ._passes import STRIP, strips
from ._threads import MAX_THREADS
from ._triangles import lower_mask

__all__ = ["METHODS", "as_input_array", "result_dtype", "check_pair", "check_count",
           "check_threads", "check_method", "check_finite_triangle", "check_factor_diagonal"]

SUPPORTED = frozenset(np.dtype(t) for t in (np.float32, np.float64, np.complex64, np.complex128))

#: The ways of computing a derivative (see chol_rev's docstring); "auto" picks one of the others.
METHODS = ("auto", "closed", "sweep")


def as_input_array(x, name):
    """``x`` as an ndarray of a numeric dtype, without copying when possible."""
    if isinstance(x, np.ma.MaskedArray):
        raise ValueError("%s: masked arrays are not supported" % name)
    a = np.asarray(x)
    if a.dtype.kind not in "biufc":
        raise TypeError("%s: expected a numeric array, got dtype %s" % (name, a.dtype))
    return a


def result_dtype(a, b):
    """The computation dtype: np.result_type(a, b, float32), ints and bools counted as float64."""
    if a.dtype == b.dtype and a.dtype in SUPPORTED:
        return a.dtype
    kinds = [np.float64 if x.dtype.kind in "biu" else x.dtype for x in (a, b)]
    dtype = np.result_type(*kinds, np.float32)
    if dtype not in SUPPORTED:
        raise TypeError("dtype %s is not supported: use float32, float64, complex64 or "
                        "complex128 (BLAS has no routines for it)" % dtype)
    return dtype


def check_pair(a, b, names):
    """Both arrays stacks of square matrices of one size whose leading shapes broadcast.

    Returns the broadcast batch shape (``()`` for two single matrices).
    """
    for x, name in zip((a, b), names):
        if x.ndim < 2:
            raise ValueError("%s must be a square matrix or a stack of them, got an array "
                             "of shape %s" % (name, x.shape))
        if x.shape[-1] != x.shape[-2]:
            raise ValueError("%s must be square, got shape %s" % (name, x.shape))
    if a.shape[-1] != b.shape[-1]:
        raise ValueError("%s and %s must have the same shape, got %s and %s"
                         % (names[0], names[1], a.shape, b.shape))
    if a.ndim == 2 and b.ndim == 2:
        return ()
    try:
        return np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ValueError:
        raise ValueError("the stacks %s of shape %s and %s of shape %s do not broadcast"
                         % (names[0], a.shape, names[1], b.shape)) from None


def check_count(value, name, maximum=None):
    """An optional count (``block_size``, ``threads``): None, or an integer in [1, maximum]."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        raise TypeError("%s must be None or an integer, got %r" % (name, value))
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError("%s must be None or an integer, got %r" % (name, value)) from None
    if value < 1:
        raise ValueError("%s must be at least 1, got %d" % (name, value))
    if maximum is not None and value > maximum:
        raise ValueError("%s must be at most %d, got %d" % (name, maximum, value))
    return value


def check_threads(value):
    """``threads``: None, or an integer in [1, MAX_THREADS]."""
    return check_count(value, "threads", MAX_THREADS)


def check_method(method):
    """``method``: one of :data:`METHODS`."""
    if method not in METHODS:
        raise ValueError("method must be one of %s, got %r"
                         % (", ".join(map(repr, METHODS)), method))
    return method


def _where(name, batch_index):
    return name + ("[%s]" % ", ".join(map(str, batch_index)) if batch_index else "")


def check_finite_triangle(a, name, lower, workers):
    """ValueError if the triangle that will be read holds NaN or inf (of any matrix in a stack).

    A sum is finite only if every term is, so one reduction per strip
    decides the common case without a boolean temporary; a non-finite sum
    (possibly a harmless overflow) is confirmed element by element.
    """
    v = a if lower else np.swapaxes(a, -1, -2)
    if v.ndim == 2 and v.shape[0] <= STRIP:       # small: a sum, else one elementwise test
        with np.errstate(over="ignore", invalid="ignore"):
            if np.isfinite(v.sum()):              # 4.9 against 16 µs for the test at N = 100
                return
        if np.isfinite(v).all(where=lower_mask(v.shape[0])):
            return

    def strip(i0, i1):
        rect, diag = v[..., i0:i1, :i0], v[..., i0:i1, i0:i1]
        mask = lower_mask(i1 - i0)
        with np.errstate(over="ignore", invalid="ignore"):
            # The whole strip first: an unmasked sum is several times faster than a
            # masked one, and finite unless something (read or not) is not.
            if np.isfinite(rect.sum() + diag.sum()):
                return
            if np.isfinite(rect.sum() + diag.sum(where=mask)):
                return
        ok = (np.isfinite(rect).all(axis=(-2, -1))
              & np.isfinite(np.where(mask, diag, 0)).all(axis=(-2, -1)))
        if not ok.all():
            index = tuple(int(i) for i in np.argwhere(~ok)[0]) if ok.ndim else ()
            raise ValueError("%s contains NaN or infinity in its %s triangle "
                             "(pass check_finite=False to skip this check)"
                             % (_where(name, index), "lower" if lower else "upper"))

    strips(strip, v.shape[-1], workers)


def check_factor_diagonal(L, name="L"):
    """LinAlgError naming the first diagonal entry that is not real, positive and finite.

    Returns the smallest and largest diagonal entries (None for an empty array).
    """
    d = L.diagonal(0, -2, -1)
    if d.size == 0:
        return None
    if d.ndim == 1 and d.size <= 64 and d.dtype.kind != "c":
        # A few entries: Python's min and max are faster than two numpy reductions.
        # They do not propagate NaN, so a sum (NaN if any entry is) decides that.
        entries = d.tolist()
        lo, hi = min(entries), max(entries)
        ok = lo > 0 and hi < math.inf and not math.isnan(sum(entries))
    elif d.dtype.kind == "c":
        lo, hi = d.real.min(), d.real.max()
        ok = not d.imag.any() and lo > 0 and hi < np.inf
    else:
        lo, hi = d.min(), d.max()
        ok = lo > 0 and hi < np.inf  # NaN fails both comparisons
    if ok:
        return float(lo), float(hi)
    if d.dtype.kind == "c":
        bad = (d.imag != 0) | ~(d.real > 0) | ~np.isfinite(d.real)
    else:
        bad = ~(d > 0) | ~np.isfinite(d)
    *index, i = (int(k) for k in np.argwhere(bad)[0])
    raise np.linalg.LinAlgError(
        "%s[%d, %d] = %s: the diagonal of a Cholesky factor must be real, positive "
        "and finite" % (_where(name, index), i, i, d[tuple(index) + (i,)]))
