"""Single small matrices: the closed form in a dozen whole-matrix calls.

Up to :data:`SMALL_N` the cost of a call is all overhead -- strips, blocks,
operand objects -- so a small matrix skips them: it is copied once into a
Fortran-ordered workspace in the logical lower form (zeros above, which
also disposes of whatever the unread triangle holds), the products are
numpy's, the two triangular solves BLAS's.  ``method="closed"`` and
``"auto"`` take this path (at these sizes the closed form is both the
faster and the more accurate); ``"sweep"`` keeps the sweep's arithmetic.

The workspaces are kept per thread and per (N, dtype): allocating three
arrays per call was a measurable part of an N = 10 call.  They are small
(at most 3 · 64² entries each) and their number is capped.  The triangular
solves go through scipy's own wrappers, which on these Fortran-ordered
arrays of the right dtype work in place without copying and cost about
half of a ctypes call at this size (1.3 against 3.0 µs, N = 10).
"""

import threading

import numpy as np
from scipy.linalg.blas import get_blas_funcs

from ._triangles import herm, lower_mask, strict_upper_mask
from ._validation import check_finite_triangle

__all__ = ["SMALL_N", "run"]

#: Largest N that takes this path (measurements in notes.md).
SMALL_N = 64
#: Workspaces kept per thread: beyond this many (N, dtype) pairs they are dropped.
_MAX_WORKSPACES = 16

_local = threading.local()

#: dtype → scipy's ?trsm, called positionally as (alpha, a, b, side, lower, trans_a, diag,
#: overwrite_b); side 0 left, 1 right; trans_a 0 none, 1 transpose, 2 conjugate transpose.
_TRSM = {np.dtype(t): get_blas_funcs("trsm", dtype=t)
         for t in (np.float32, np.float64, np.complex64, np.complex128)}


class _Workspace:
    """Three n×n Fortran-ordered arrays of one dtype, adjacent in one buffer.

    ``factor`` and ``second`` are only ever written in their lower triangles
    (by masked copies), so their strict upper triangles stay zero; ``work``
    is overwritten whole by every call before it is read.  ``inputs`` is
    ``factor`` and ``second`` together, for one finiteness check of both.
    """

    __slots__ = ("factor", "second", "work", "inputs")

    def __init__(self, n, dtype):
        buffer = np.zeros((n, n, 3), dtype, order="F")
        self.factor, self.second, self.work = buffer[:, :, 0], buffer[:, :, 1], buffer[:, :, 2]
        self.inputs = buffer[:, :, :2]


def _workspace_for(n, dtype):
    cache = getattr(_local, "workspaces", None)
    if cache is None:
        cache = _local.workspaces = {}
    space = cache.get((n, dtype))
    if space is None:
        if len(cache) >= _MAX_WORKSPACES:
            cache.clear()
        space = cache[(n, dtype)] = _Workspace(n, dtype)
    return space


def run(plan, L, X):
    """The result for one small matrix, in the caller's orientation and L's memory order."""
    n, lower, dtype = plan.n, plan.lower, plan.dtype
    mask, upper = lower_mask(n), strict_upper_mask(n)
    trsm = _TRSM[dtype]
    c = 2 if dtype.kind == "c" else 1               # trans_a for the conjugate transpose
    space = _workspace_for(n, dtype)
    Lw, B, A = space.factor, space.second, space.work
    np.copyto(Lw, L if lower else herm(L), where=mask)
    np.copyto(B, X if lower else herm(X), where=mask)
    if plan.check_copies and not np.isfinite(space.inputs).all():
        _report_non_finite(plan, L, X)
    if plan.scale_exp:
        B *= 2.0 ** -plan.scale_exp
    # Lw and A are this thread's own n×n Fortran-ordered arrays of the solves' dtype,
    # so scipy's wrappers solve in place (the results are A itself).
    if plan.direction == "rev":
        np.matmul(herm(Lw), B, out=A)                     # Lᴴ L̄
        _hermitian(A, _diagonal(A).real.copy(), upper)    # M = P + Pᴴ, P = Φ(Lᴴ L̄)
        A = trsm(1.0, Lw, A, 0, 1, c, 0, 1)               # Y = L⁻ᴴ M
        A = trsm(1.0, Lw, A, 1, 1, 0, 0, 1)               # X = Y L⁻¹, lower triangle accurate
        d = _diagonal(A).real * 0.5
        if plan.symmetric:
            A *= 0.5
            _hermitian(A, d, upper)                       # S = ½ X
        else:
            np.copyto(A, 0, where=upper)                  # G = Φ(X)
            _diagonal(A)[...] = d
    else:
        A[...] = B
        _hermitian(A, _diagonal(A).real.copy(), upper)    # K̇, Hermitian
        A = trsm(1.0, Lw, A, 1, 1, c, 0, 1)               # Y = K̇ L⁻ᴴ
        A = trsm(1.0, Lw, A, 0, 1, 0, 0, 1)               # X = L⁻¹ Y, lower triangle accurate
        np.copyto(A, 0, where=upper)
        _diagonal(A)[...] *= 0.5
        np.matmul(Lw, A, out=B)                           # L Φ(X), into the second workspace
        A = B
    if plan.scale_exp:
        with np.errstate(over="ignore"):
            A *= 2.0 ** plan.scale_exp
    out = A if lower else herm(A)
    if plan.overwrite:
        X[...] = out
        out = X
    else:
        out = np.array(out, order="C" if plan.row_major else "F")
    if A is B:
        np.copyto(B, 0, where=upper)                      # B's upper triangle zero again
    return out


def _report_non_finite(plan, L, X):
    """The error the plan's checks would have raised (the copies hold a NaN or an infinity)."""
    for a, name in zip((L, X), plan.names):
        check_finite_triangle(a, name, plan.lower, 1)
    raise ValueError("%s or %s contains NaN or infinity" % plan.names)     # not reached


def _diagonal(a):
    """Writeable view of the diagonal of a contiguous square array."""
    return a.ravel(order="K")[:: a.shape[0] + 1]


def _hermitian(a, diag, upper):
    """a ← the Hermitian matrix of a's lower triangle, with diagonal ``diag``, in place."""
    np.copyto(a, herm(a), where=upper)
    _diagonal(a)[...] = diag
