"""One call, decided once.

The public functions hand their arguments to :func:`make_plan`, which checks
them (:mod:`._validation`) and resolves everything the layers below need
into one :class:`Plan`: direction and method, orientation, the path (one
matrix, a loop over large matrices, or stacked operations over small ones),
block size, the BLAS thread limit and the worker count, whether the result
goes over the second argument, and a power-of-two scaling that keeps
intermediate results from overflowing.  The executors (:mod:`._one`,
:mod:`._batch`) only carry the plan out.
"""

import math
from typing import NamedTuple, Optional

import numpy as np
from scipy.linalg import lapack

from . import _batchlast, _small, _stacked, _sweep
from ._layout import blas_view, can_overwrite, is_row_major
from ._passes import PARALLEL_N
from ._threads import CORES, blas_pool_size, split_threads
from ._validation import (as_input_array, check_count, check_factor_diagonal, check_finite_triangle,
                          check_method, check_pair, check_threads, result_dtype)

__all__ = ["Plan", "make_plan", "condition_estimate", "STACK_MAX_N", "CLOSED_BLOCK",
           "AUTO_SWEEP_N", "AUTO_SWEEP_KAPPA"]

#: Largest N that a stack processes with stacked operations (:mod:`._stacked`).
STACK_MAX_N = 256
#: Row-block height of the closed forms' triangular products (measurements in notes.md).
CLOSED_BLOCK = 256
#: method="auto" takes the sweep for single matrices from this N (below, the closed form is
#: as fast or faster: notes.md) ...
AUTO_SWEEP_N = 500
#: ... when LAPACK's estimate of the factor's condition number κ₁(L) is at most this.  Over
#: kernel matrices, random and adversarial factors (notes.md, "The auto switch") the sweep
#: stayed within 2× of the closed form's error below it, and lost 7-10⁵× above 3000.
AUTO_SWEEP_KAPPA = 1000.0
#: A stack is shared among worker threads only in pieces of at least this much
#: work (count · N³): below it, handing work to a thread costs more than it saves.
MIN_WORKER_FLOPS = 1 << 20


class Plan(NamedTuple):
    """Everything decided about one call (immutable).

    Attributes
    ----------
    direction : {"rev", "fwd"}
    method : {"closed", "sweep"}
        The method carried out ("auto" is resolved here).
    lower, symmetric : bool
        The caller's orientation and output convention.
    dtype : numpy.dtype
        The computation and result dtype.
    n : int
        Matrix size.
    shape : tuple
        The result's shape, batch dimensions included.
    path : {"empty", "small", "one", "loop", "stacked"}
    block_size : int
        Block width of the sweep, or row-block height of the closed form's products.
    blas_threads : int or None
        The BLAS thread limit for the call (None: the pools as they are).
    workers : int
        Worker threads for stacked chunks or for passes over a whole matrix.
    overwrite : bool
        Whether the result is written over the second argument.
    row_major : bool
        The result's memory order for a single matrix: L's.
    scale_exp : int
        The second argument is scaled by 2^-scale_exp on the way in and the
        result by 2^scale_exp on the way out (0 almost always; see
        :func:`_overflow_scaling`).
    check_copies : bool
        The read triangles' finiteness is still to be checked, by the small
        path on its copies of them, before its first BLAS call.
    batch_last : bool
        A stack's chunks take the matrix-index-last form of :mod:`._batchlast`,
        which calls no BLAS (and so may have a worker per core).
    names : tuple of str
        The arguments' names, for the errors of that check.
    """

    direction: str
    method: str
    lower: bool
    symmetric: bool
    dtype: np.dtype
    n: int
    shape: tuple
    path: str
    block_size: int
    blas_threads: Optional[int]
    workers: int
    overwrite: bool
    row_major: bool
    scale_exp: int
    check_copies: bool
    batch_last: bool
    names: tuple

    @property
    def count(self):
        return math.prod(self.shape[:-2])


def make_plan(direction, L, X, names, *, lower, symmetric, method, block_size, overwrite,
              check_finite, threads):
    """``(plan, L, X)``: the checked arrays and the :class:`Plan` for them."""
    X_given = X
    L = as_input_array(L, names[0])
    X = as_input_array(X, names[1])
    batch = check_pair(L, X, names)
    block_size = check_count(block_size, "block_size")
    threads = check_threads(threads)
    method = check_method(method)
    dtype = result_dtype(L, X)
    n = L.shape[-1]
    shape = batch + (n, n)
    count = math.prod(batch)
    lower = bool(lower)

    if n == 0 or count == 0:
        path = "empty"
    elif not batch:
        # Small matrices skip the blocked machinery -- for the closed form; an explicit
        # method="sweep" keeps the sweep's arithmetic, which a composition may rely on.
        path = "small" if n <= _small.SMALL_N and method != "sweep" else "one"
    else:
        path = "stacked" if n <= STACK_MAX_N else "loop"

    if path == "stacked":
        if method == "auto":
            method = "closed"
        batch_last = _batchlast.takes(direction, method, n, dtype)
        workers, blas_threads = split_threads(threads, max(1, count * n ** 3 // MIN_WORKER_FLOPS),
                                              uses_blas=not batch_last)
        nb = max(1, min(block_size or (_stacked.sweep_block_size(n) if method == "sweep" else n),
                        max(n, 1)))
    else:
        batch_last = False
        # Passes over a whole matrix run while the BLAS is idle, so they may
        # use as many threads as the BLAS would.
        blas_threads = None if threads is None else min(threads, CORES)
        workers = 1 if n < PARALLEL_N else min(threads or blas_pool_size(), CORES)

    # A small matrix's read triangles are checked on the small path's copies of
    # them, both in one pass (two passes here were a fifth of an N = 10 call).
    check_copies = check_finite and path == "small"
    if check_finite and not check_copies:
        check_finite_triangle(L, names[0], lower, workers)
        check_finite_triangle(X, names[1], lower, workers)
    try:
        diagonal = check_factor_diagonal(L, names[0])
    except np.linalg.LinAlgError:
        if check_copies:          # a non-finite diagonal entry is reported as non-finite
            check_finite_triangle(L, names[0], lower, workers)
        raise
    if method == "auto":
        method = ("sweep" if path == "one" and n >= AUTO_SWEEP_N
                  and condition_estimate(L, lower, dtype) <= AUTO_SWEEP_KAPPA else "closed")
    if path != "stacked":
        nb = block_size or (_sweep.default_block_size(n) if method == "sweep" else CLOSED_BLOCK)
        nb = max(1, min(nb, n))

    reuse = (bool(overwrite) and path != "empty" and isinstance(X_given, np.ndarray)
             and can_overwrite(X, L, shape, dtype))
    plan = Plan(direction, method, lower, bool(symmetric), np.dtype(dtype), n, shape, path, nb,
                blas_threads, workers, reuse, is_row_major(L),
                _overflow_scaling(diagonal, X, dtype, lower), check_copies, batch_last, names)
    return plan, L, X


def condition_estimate(L, lower, dtype):
    """LAPACK's estimate (``?trcon``, O(N²)) of κ₁ of the factor, as stored; reads its triangle only."""
    view = blas_view(L) if L.dtype == dtype else None
    stored, transposed = view if view is not None else (np.asfortranarray(L, dtype), False)
    trcon = lapack.get_lapack_funcs("trcon", dtype=dtype)
    rcond, info = trcon(stored, norm="I" if transposed else "1",
                        uplo="L" if lower != transposed else "U", diag="N")
    return math.inf if info or rcond == 0 else 1.0 / rcond


def _overflow_scaling(diagonal, X, dtype, lower):
    """The power of two by which to shrink X so that no intermediate result overflows.

    The results and intermediates are linear in X and grow like
    max|X| · max|L_ii| / min(L_ii)² at most in the cases that matter (a
    tiny diagonal entry: X = L⁻¹ K̇ L⁻ᴴ forward, X L = L⁻ᴴ M reverse).  Only
    when that estimate comes near the top of the dtype's range is X
    shrunk, exactly, by a power of two; results that truly overflow then
    become ±inf when scaled back, instead of NaN from inf − inf inside.
    """
    if diagonal is None:
        return 0
    dmin, dmax = diagonal
    maxexp = _MAXEXP[np.dtype(dtype)]
    headroom = maxexp - 32
    if -2 * math.log2(dmin) < headroom / 2:
        return 0
    xmax = float(np.abs(np.tril(X) if lower else np.triu(X)).max())   # the read triangle
    if xmax == 0.0 or not math.isfinite(xmax):
        return 0
    est = math.log2(xmax) + math.log2(max(dmax, 1.0)) - 2 * math.log2(dmin)
    return int(min(max(math.ceil(est - headroom), 0), maxexp - 64))


_MAXEXP = {np.dtype(t): np.finfo(r).maxexp for t, r in
           ((np.float32, np.float32), (np.float64, np.float64),
            (np.complex64, np.float32), (np.complex128, np.float64))}
