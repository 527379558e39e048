"""Argument checking and normalisation for the public functions.

Everything a raw BLAS call relies on is settled here, before any of it is
made: array-ness, dtype, shape, finiteness, the factor's diagonal, and a
memory layout BLAS can address (unit stride down columns or along rows, a
sane leading dimension, alignment).  Arrays that fail only the layout test
are copied once; arrays that pass it are used where they lie.
"""

import operator

import numpy as np

from ._operands import bad_blas_layout, lower_mask
from ._threads import batch_worker_count, parallel_map

__all__ = ["as_input_array", "result_dtype", "check_pair", "check_count", "blas_view",
           "row_blocks", "over_row_blocks", "check_finite_triangle", "check_factor_diagonal",
           "copy_triangle"]

_SUPPORTED = frozenset(np.dtype(t) for t in (np.float32, np.float64, np.complex64, np.complex128))

# Row-block height for whole-matrix passes (copies, checks): keeps the
# temporaries at O(N · 256) while the Python loop stays short.
_PASS_ROWS = 256
#: From this N, whole-matrix passes run on worker threads.
PARALLEL_PASS_N = 1024


def as_input_array(x, name):
    """``x`` as an ndarray of a numeric dtype, without copying when possible."""
    if isinstance(x, np.ma.MaskedArray):
        raise ValueError("%s: masked arrays are not supported" % name)
    a = np.asarray(x)
    if a.dtype.kind not in "biufc":
        raise TypeError("%s: expected a numeric array, got dtype %s" % (name, a.dtype))
    return a


def result_dtype(*arrays):
    """The computation dtype: np.result_type(..., float32), ints and bools as float64."""
    dtypes = {a.dtype for a in arrays}
    if len(dtypes) == 1 and arrays[0].dtype in _SUPPORTED:
        return arrays[0].dtype
    kinds = [np.float64 if a.dtype.kind in "biu" else a.dtype for a in arrays]
    dtype = np.result_type(*kinds, np.float32)
    if dtype not in _SUPPORTED:
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
    try:
        return np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ValueError:
        raise ValueError("the stacks %s of shape %s and %s of shape %s do not broadcast"
                         % (names[0], a.shape, names[1], b.shape)) from None


def check_count(value, name):
    """An optional count (``block_size``, ``threads``): None, or an integer ≥ 1."""
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
    return value


def blas_view(a):
    """``(stored, transposed)`` with ``stored`` a column-major view of ``a``, or None.

    ``transposed`` is True when ``stored`` is ``a.T`` (``a`` row-major).
    """
    if bad_blas_layout(a) is None:
        return a, False
    if bad_blas_layout(a.T) is None:
        return a.T, True
    return None


def row_blocks(n):
    for i0 in range(0, n, _PASS_ROWS):
        yield i0, min(i0 + _PASS_ROWS, n)


def over_row_blocks(fn, n, threads=None):
    """``fn(i0, i1)`` for every row strip of an N-row matrix; on worker threads for large N.

    The passes over whole inputs (checks, copies) are memory-bound and numpy
    runs each on one core; at N = 4000 they would cost about a tenth of the
    sweep's time at two threads if left serial.  Strips are dealt out in
    turn, so each worker gets short and long rows of the triangle alike.
    """
    strips = list(row_blocks(n))
    workers = batch_worker_count(threads, len(strips)) if n >= PARALLEL_PASS_N else 1
    if workers == 1:
        for i0, i1 in strips:
            fn(i0, i1)
        return
    parallel_map(lambda group: [fn(i0, i1) for i0, i1 in group],
                 [strips[w::workers] for w in range(workers)])


def _where(name, batch_index):
    return name + ("[%s]" % ", ".join(map(str, batch_index)) if batch_index else "")


def check_finite_triangle(a, name, lower, threads=None):
    """ValueError if the triangle that will be read holds NaN or inf (of any matrix in a stack).

    A sum is finite only if every term is, so one reduction per row block
    decides the common case without a boolean temporary; a non-finite sum
    (possibly a harmless overflow) is confirmed element by element.
    """
    v = a if lower else np.swapaxes(a, -1, -2)

    def strip(i0, i1):
        rect, diag = v[..., i0:i1, :i0], v[..., i0:i1, i0:i1]
        mask = lower_mask(i1 - i0, False)
        with np.errstate(over="ignore", invalid="ignore"):
            if np.isfinite(rect.sum() + diag.sum(where=mask)):
                return
        ok = (np.isfinite(rect).all(axis=(-2, -1))
              & np.isfinite(np.where(mask, diag, 0)).all(axis=(-2, -1)))
        if not ok.all():
            index = tuple(int(i) for i in np.argwhere(~ok)[0]) if ok.ndim else ()
            raise ValueError("%s contains NaN or infinity in its %s triangle "
                             "(pass check_finite=False to skip this check)"
                             % (_where(name, index), "lower" if lower else "upper"))

    over_row_blocks(strip, v.shape[-1], threads)


def check_factor_diagonal(L, name="L"):
    """LinAlgError naming the first diagonal entry that is not real, positive and finite."""
    d = np.diagonal(L, axis1=-2, axis2=-1)
    if d.size == 0:
        return
    if np.iscomplexobj(d):
        ok = not d.imag.any() and d.real.min() > 0 and d.real.max() < np.inf
    else:
        ok = d.min() > 0 and d.max() < np.inf  # NaN fails both comparisons
    if ok:
        return
    if np.iscomplexobj(d):
        bad = (d.imag != 0) | ~(d.real > 0) | ~np.isfinite(d.real)
    else:
        bad = ~(d > 0) | ~np.isfinite(d)
    *index, i = (int(k) for k in np.argwhere(bad)[0])
    raise np.linalg.LinAlgError(
        "%s[%d, %d] = %s: the diagonal of a Cholesky factor must be real, positive "
        "and finite" % (_where(name, index), i, i, d[tuple(index) + (i,)]))


def copy_triangle(dst, src, lower, threads=None):
    """dst ← the read triangle of src, exact zeros in the other (dst may be src).  2-D."""
    dv, sv = (dst, src) if lower else (dst.T, src.T)
    same = np.may_share_memory(dst, src)

    def strip(i0, i1):
        d = dv[i0:i1, i0:i1]
        if same:
            np.copyto(d, 0, where=~lower_mask(i1 - i0, False))
        else:
            dv[i0:i1, :i0] = sv[i0:i1, :i0]
            d[...] = 0
            np.copyto(d, sv[i0:i1, i0:i1], where=lower_mask(i1 - i0, False))
        dv[i0:i1, i1:] = 0

    over_row_blocks(strip, dv.shape[0], threads)
