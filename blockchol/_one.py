"""One matrix through a blocked sweep: layout, result array, workspace.

Inputs arrive validated (shape, dtype, finiteness, diagonal).  Here we pick
how BLAS will see them: the factor is used where it lies whenever BLAS can
address it (a C-ordered array is the column-major storage of its
transpose, see :mod:`._operands`), and the result is a copy of the second
argument's read triangle in the factor's memory order, so every operand of
every BLAS call shares one storage form.
"""

import numpy as np

from . import _sweep
from ._operands import Matrix
from ._validation import blas_view, copy_triangle

__all__ = ["run_one", "REV", "FWD"]

#: The two sweeps; each overwrites its second matrix in place.
REV = _sweep.rev_sweep
FWD = _sweep.fwd_sweep


def run_one(sweep, L, X, dtype, lower, block_size=None, overwrite=False, out=None, threads=None):
    """Apply ``sweep`` to factor ``L`` and the read triangle of ``X``; returns the result.

    ``X`` (L̄ for the reverse sweep, K̇ for the forward one) is reused for
    the result when ``overwrite`` and its dtype and memory order allow; see
    ``chol_rev``'s ``overwrite_l_bar``.  Otherwise the result goes to
    ``out`` when given and it fits the same way, else to a new array.
    ``threads`` is the caller's thread setting, for the copy of X.
    """
    n = L.shape[-1]
    if n == 0:
        return np.zeros((0, 0), dtype)
    # L is only read: use it where it lies if BLAS can address it; else copy
    # it once, in X's memory order so that X can still hold the result.
    view = blas_view(L) if L.dtype == dtype else None
    if view is None:
        x_view = blas_view(X)
        L = np.array(L, dtype=dtype, order="F" if x_view and not x_view[1] else "C")
        view = blas_view(L)
    stored_L, transposed = view

    out = _result_array(L, X, dtype, transposed, overwrite, out)
    copy_triangle(out, X, lower, threads)
    upper = (not lower) != transposed
    nb = min(block_size or _sweep.default_block_size(n), n)
    W = np.empty((nb, nb), dtype=dtype, order="F")
    sweep(Matrix(stored_L, upper), Matrix(out.T if transposed else out, upper), nb,
          Matrix(W, upper))
    return out


def _result_array(L, X, dtype, transposed, overwrite, out):
    """X itself when the caller allows it and it fits, else ``out`` if it fits, else a new array."""
    for candidate in ((X,) if overwrite else ()) + ((out,) if out is not None else ()):
        if _fits(candidate, L, dtype, transposed):
            return candidate
    return np.empty(L.shape, dtype=dtype, order="C" if transposed else "F")


def _fits(a, L, dtype, transposed):
    if a.dtype != dtype or not a.flags.writeable:
        return False
    view = blas_view(a)
    return view is not None and view[1] == transposed and not np.may_share_memory(L, a)
