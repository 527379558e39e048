"""Single small matrices: the closed form in a dozen whole-matrix calls.

Up to :data:`SMALL_N` the cost of a call is all overhead -- strips, blocks,
operand objects -- so a small matrix skips them: it is copied once into a
Fortran-ordered workspace in the logical lower form (zeros above, which
also disposes of whatever the unread triangle holds), the products are
numpy's, the two triangular solves BLAS's.  ``method="closed"`` and
``"auto"`` take this path (at these sizes the closed form is both the
faster and the more accurate); ``"sweep"`` keeps the sweep's arithmetic.
"""

import numpy as np

from ._blas import routines
from ._triangles import herm, lower_mask, strict_upper_mask

__all__ = ["SMALL_N", "run"]

#: Largest N that takes this path (measurements in notes.md).
SMALL_N = 64


def run(plan, L, X):
    """The result for one small matrix, in the caller's orientation and L's memory order."""
    n, lower, dtype = plan.n, plan.lower, plan.dtype
    mask, upper = lower_mask(n), strict_upper_mask(n)
    blas = routines(dtype)
    Lw = _workspace(n, dtype)
    np.copyto(Lw, L if lower else herm(L), where=mask)
    A = _workspace(n, dtype)
    np.copyto(A, X if lower else herm(X), where=mask)
    if plan.scale_exp:
        A *= 2.0 ** -plan.scale_exp
    # Lw and A are this function's own n×n Fortran-ordered arrays: leading
    # dimension n, the dtype of ``blas``; the raw calls below need no other check.
    lw = _address(Lw)
    if plan.direction == "rev":
        A = np.matmul(herm(Lw), A, out=_workspace(n, dtype, zero=False))   # Lᴴ L̄
        _hermitian(A, _diagonal(A).real.copy(), upper)    # M = P + Pᴴ, P = Φ(Lᴴ L̄)
        a = _address(A)
        blas.trsm("L", "L", "C", n, n, 1.0, lw, n, a, n)   # Y = L⁻ᴴ M
        blas.trsm("R", "L", "N", n, n, 1.0, lw, n, a, n)   # X = Y L⁻¹, lower triangle accurate
        d = _diagonal(A).real * 0.5
        if plan.symmetric:
            A *= 0.5
            _hermitian(A, d, upper)                       # S = ½ X
        else:
            np.copyto(A, 0, where=upper)                  # G = Φ(X)
            _diagonal(A)[...] = d
    else:
        _hermitian(A, _diagonal(A).real.copy(), upper)    # K̇, Hermitian
        a = _address(A)
        blas.trsm("R", "L", "C", n, n, 1.0, lw, n, a, n)   # Y = K̇ L⁻ᴴ
        blas.trsm("L", "L", "N", n, n, 1.0, lw, n, a, n)   # X = L⁻¹ Y, lower triangle accurate
        np.copyto(A, 0, where=upper)
        _diagonal(A)[...] *= 0.5
        A = Lw @ A                                        # L Φ(X)
    if plan.scale_exp:
        with np.errstate(over="ignore"):
            A *= 2.0 ** plan.scale_exp
    if not lower:
        A = herm(A)
    if plan.overwrite:
        X[...] = A
        return X
    return np.asarray(A, order="C" if plan.row_major else "F")


def _workspace(n, dtype, zero=True):
    return (np.zeros if zero else np.empty)((n, n), dtype, order="F")


def _address(a):
    return a.__array_interface__["data"][0]


def _diagonal(a):
    """Writeable view of the diagonal of a contiguous square array."""
    return a.ravel(order="K")[:: a.shape[0] + 1]


def _hermitian(a, diag, upper):
    """a ← the Hermitian matrix of a's lower triangle, with diagonal ``diag``, in place."""
    np.copyto(a, herm(a), where=upper)
    _diagonal(a)[...] = diag
