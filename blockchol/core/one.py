"""One matrix through BLAS: lay the operands out, then run the closed form or the sweep.

The factor is used where it lies whenever BLAS can address it (a C-ordered
array is the column-major storage of its transpose, see :mod:`.blas`) and
is otherwise copied once, in its own memory order.  The result array has
the factor's storage form, so every operand of every BLAS call shares one
form; it is the caller's second argument when the plan says so, or a slot
of a stack's result.
"""

import numpy as np

from .blas import Matrix, blas_view, is_row_major
from .closed import Blocked, closed_fwd, closed_rev
from .sweep import sweep_fwd, sweep_rev
from .thresholds import CLOSED_BLOCK, SWEEP_BLOCK_SIZES
from .triangles import copy_triangle, hermitian_fill, phi

__all__ = ["run", "derivative"]


def run(plan, L, X, target=None):
    """The result for factor ``L`` and second argument ``X`` (L̄ or K̇), both N×N, as ``plan`` says.

    The result goes into ``target`` when given (a slot of a stack's
    result), or into ``X`` when ``plan.overwrite``; either is used as the
    BLAS operand when its layout allows, else the result is copied into it.
    """
    if target is None and plan.overwrite:
        target = X
    return _run(plan.direction, plan.method, L, X, target, plan.dtype, plan.lower,
                plan.symmetric, plan.row_major, plan.workers, plan.block_size, plan.scale_exp)


def derivative(direction, method, L, X, block_size=None):
    """The derivative for a lower factor ``L`` and the lower triangle of ``X``: G (reverse) or L̇.

    Unchecked: for callers that have checked the arguments themselves (the
    tiles of :mod:`blockchol.dask`).  ``L`` and ``X`` are N×N arrays of one
    BLAS dtype; the result is a new array in ``L``'s memory order.
    """
    n = L.shape[0]
    if n == 0:
        return np.zeros((0, 0), L.dtype)
    if block_size is None:
        block_size = (next(width for top, width in SWEEP_BLOCK_SIZES if n <= top)
                      if method == "sweep" else CLOSED_BLOCK)
    return _run(direction, method, L, X, None, L.dtype, True, False, is_row_major(L), 1,
                max(1, min(block_size, n)), 0)


def _run(direction, method, L, X, target, dtype, lower, symmetric, row_major, workers, nb,
         scale_exp):
    n = L.shape[-1]
    view = blas_view(L) if L.dtype == dtype else None
    if view is None:
        L = np.array(L, dtype=dtype, order="C" if row_major else "F")
        view = blas_view(L)
    stored_L, transposed = view
    work = target if target is not None and _fits(target, transposed, L) else None
    if work is None:
        work = np.empty((n, n), dtype, order="C" if transposed else "F")
    # Every operand in the form of the stored factor: a lower factor stored transposed
    # (C order) is an upper one to BLAS, and an upper factor stored so is a lower one.
    upper = (not lower) != transposed
    Lm = Matrix(stored_L, upper)
    A = Matrix(work.T if transposed else work, upper)
    closed = method == "closed"
    # Exact zeros in the unread triangle wherever BLAS will read it: its
    # kernels may multiply explicit zeros of a triangle by whatever is there.
    copy_triangle(work, X, lower, workers, zero_other=direction == "rev" or not closed)
    if scale_exp:
        work *= 2.0 ** -scale_exp
    if closed:
        ops = Blocked(Lm, A, work, lower, workers, nb)
        if direction == "rev":
            closed_rev(ops, symmetric)
        else:
            closed_fwd(ops)
    elif direction == "rev":
        sweep_rev(Lm, A, nb)                                # X, lower triangle
        if symmetric:
            hermitian_fill(work, lower, workers, 0.5, 0.5)  # S = ½ X
        else:
            phi(work, lower, workers)                       # G = Φ(X)
    else:
        sweep_fwd(Lm, A, nb)
    if scale_exp:
        with np.errstate(over="ignore"):
            work *= 2.0 ** scale_exp
    if target is not None and work is not target:
        target[...] = work
        return target
    return work


def _fits(a, transposed, L):
    view = blas_view(a)
    return view is not None and view[1] == transposed and not np.may_share_memory(a, L)
