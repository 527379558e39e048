"""One matrix: lay the operands out for BLAS, then carry out the plan.

The factor is used where it lies whenever BLAS can address it (a C-ordered
array is the column-major storage of its transpose, see :mod:`._operands`)
and is otherwise copied once, in its own memory order.  The result array
has the factor's storage form, so every operand of every BLAS call shares
one form; it is the caller's second argument when the plan says so.
"""

import numpy as np

from . import _closed, _sweep
from ._layout import blas_view
from ._operands import Matrix
from ._passes import copy_triangle, hermitian_fill, phi

__all__ = ["run"]


def run(plan, L, X, target=None):
    """The result for factor ``L`` and second argument ``X`` (L̄ or K̇), both N×N.

    The result goes into ``target`` when given (a slot of a stack's
    result), or into ``X`` when ``plan.overwrite``; either is used as the
    BLAS operand when its layout allows, else the result is copied into it.
    """
    n, dtype = plan.n, plan.dtype
    view = blas_view(L) if L.dtype == dtype else None
    if view is None:
        L = np.array(L, dtype=dtype, order="C" if plan.row_major else "F")
        view = blas_view(L)
    stored_L, transposed = view
    if target is None and plan.overwrite:
        target = X
    work = target if target is not None and _fits(target, transposed, L) else None
    if work is None:
        work = np.empty((n, n), dtype, order="C" if transposed else "F")
    _compute(plan, stored_L, transposed, X, work)
    if target is not None and work is not target:
        target[...] = work
        return target
    return work


def _fits(a, transposed, L):
    view = blas_view(a)
    return view is not None and view[1] == transposed and not np.may_share_memory(a, L)


def _compute(plan, stored_L, transposed, X, out):
    """out ← the derivative; every operand in the form of ``stored_L``."""
    upper = (not plan.lower) != transposed
    Lm = Matrix(stored_L, upper)
    A = Matrix(out.T if transposed else out, upper)
    lower, workers, nb = plan.lower, plan.workers, plan.block_size
    closed = plan.method == "closed"
    # Exact zeros in the unread triangle wherever BLAS will read it: its
    # kernels may multiply explicit zeros of a triangle by whatever is there.
    copy_triangle(out, X, lower, workers, zero_other=plan.direction == "rev" or not closed)
    if plan.scale_exp:
        out *= 2.0 ** -plan.scale_exp
    if plan.direction == "rev":
        if closed:
            _closed.lower_product(Lm, A, nb)                    # Lᴴ L̄, lower triangle
            hermitian_fill(out, lower, workers)                 # M = P + Pᴴ, P = Φ(Lᴴ L̄)
            _closed.rev_solves(Lm, A)                           # X = L⁻ᴴ M L⁻¹
        else:
            _sweep.rev_sweep(Lm, A, nb)                         # X, lower triangle
        if plan.symmetric:
            hermitian_fill(out, lower, workers, 0.5, 0.5)       # S = ½ X
        else:
            phi(out, lower, workers)                            # G = Φ(X)
    elif closed:
        hermitian_fill(out, lower, workers)                     # K̇, Hermitian
        _closed.fwd_solves(Lm, A)                               # X = L⁻¹ K̇ L⁻ᴴ
        phi(out, lower, workers)                                # Φ(X)
        _closed.lower_times_phi(Lm, A, nb)                      # L Φ(X)
    else:
        _sweep.fwd_sweep(Lm, A, nb)
    if plan.scale_exp:
        with np.errstate(over="ignore"):
            out *= 2.0 ** plan.scale_exp
