"""The public functions: check the arguments, decide everything once into a plan, carry it out.

:func:`chol_rev` and :func:`chol_fwd` hand their arguments to
:func:`make_plan`, which checks them (in the order their errors are
documented; nothing here changes an array) and resolves everything the
layers below need into one :class:`Plan`: direction and method,
orientation, the path (one small matrix, one matrix, a loop over large
matrices, or stacked operations over small ones), block size, the BLAS
thread limit and the worker count, whether the result goes over the second
argument, and a power-of-two scaling that keeps intermediate results from
overflowing.  The executors (:mod:`.one`, :mod:`.stacks`) only carry the
plan out.  Every threshold the plan reads is in :mod:`.thresholds`.
"""

import math
import operator
import warnings
from typing import NamedTuple, Optional

import numpy as np
from scipy.linalg import lapack

from . import one, stacks
from .blas import blas_view, can_overwrite, is_row_major
from .threads import CORES, MAX_THREADS, blas_limit, blas_pool_size, split_threads
from .thresholds import (AUTO_SWEEP_KAPPA, AUTO_SWEEP_N, CLOSED_BLOCK, MIN_WORKER_FLOPS,
                         PARALLEL_N, SMALL_N, STACK_MAX_N, STACK_SWEEP_BLOCK_SIZES,
                         SWEEP_BLOCK_SIZES)
from .triangles import check_finite_triangle, where

__all__ = ["chol_rev", "chol_fwd", "backprop_gradient", "Plan", "make_plan", "METHODS",
           "as_input_array", "result_dtype", "condition_estimate"]

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
        "and finite" % (where(name, index), i, i, d[tuple(index) + (i,)]))


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
    wide : bool
        The factor's pivots span more than any scaling can keep finite: the
        derivative is computed in a wider dtype (:func:`_run_wide`).
    check_copies : bool
        The read triangles' finiteness is still to be checked, by the small
        path on its copies of them, before its first BLAS call.
    batch_last : bool
        A stack's chunks take the matrix-index-last form
        (:func:`.stacks.batch_last_rev`), which calls no BLAS (and so may
        have a worker per core).
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
    wide: bool
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
        path = "small" if n <= SMALL_N and method != "sweep" else "one"
    else:
        path = "stacked" if n <= STACK_MAX_N else "loop"

    if path == "stacked":
        if method == "auto":
            method = "closed"
        batch_last = stacks.takes_batch_last(direction, method, n, dtype)
        workers, blas_threads = split_threads(threads, max(1, count * n ** 3 // MIN_WORKER_FLOPS),
                                              uses_blas=not batch_last)
        nb = max(1, min(block_size or (_block_size(STACK_SWEEP_BLOCK_SIZES, n) if method == "sweep" else n),
                        max(n, 1)))
    else:
        batch_last = False
        # Passes over a whole matrix run while the BLAS is idle, so they may
        # use as many threads as the BLAS would.
        blas_threads = None if threads is None else min(threads, CORES)
        workers = 1 if n < PARALLEL_N else min(threads or blas_pool_size(), CORES)

    # A small matrix's read triangles are checked on the small path's copies of
    # them, both in one pass: two passes here cost a measurable part of a tiny call.
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
        nb = block_size or (_block_size(SWEEP_BLOCK_SIZES, n) if method == "sweep" else CLOSED_BLOCK)
        nb = max(1, min(nb, n))

    reuse = (bool(overwrite) and path != "empty" and isinstance(X_given, np.ndarray)
             and can_overwrite(X, L, shape, dtype))
    scale_exp, wide = _overflow_scaling(diagonal, X, dtype, lower)
    if wide and check_copies:     # the small path, which checks its copies, will not run
        check_finite_triangle(L, names[0], lower, workers)
        check_finite_triangle(X, names[1], lower, workers)
        check_copies = False
    plan = Plan(direction, method, lower, bool(symmetric), np.dtype(dtype), n, shape, path, nb,
                blas_threads, workers, reuse, is_row_major(L), scale_exp, wide, check_copies,
                batch_last, names)
    return plan, L, X


def _block_size(table, n):
    """The width a table of :mod:`.thresholds` gives for order N (the caller clamps it to N)."""
    return next(width for top, width in table if n <= top)


def condition_estimate(L, lower, dtype):
    """LAPACK's estimate (``?trcon``, O(N²)) of κ₁ of the factor, as stored; reads its triangle only."""
    view = blas_view(L) if L.dtype == dtype else None
    stored, transposed = view if view is not None else (np.asfortranarray(L, dtype), False)
    trcon = lapack.get_lapack_funcs("trcon", dtype=dtype)
    rcond, info = trcon(stored, norm="I" if transposed else "1",
                        uplo="L" if lower != transposed else "U", diag="N")
    return math.inf if info or rcond == 0 else 1.0 / rcond


def _overflow_scaling(diagonal, X, dtype, lower):
    """``(e, wide)``: the power of two 2^e by which to shrink X so that no intermediate overflows.

    The results and intermediates are linear in X and grow like
    max|X| · max|L_ii| / min(L_ii)² at most in the cases that matter (a
    tiny diagonal entry: X = L⁻¹ K̇ L⁻ᴴ forward, X L = L⁻ᴴ M reverse).  Only
    when that estimate comes near the top of the dtype's range is X
    shrunk, exactly, by a power of two; results that truly overflow then
    become ±inf when scaled back, instead of NaN from inf − inf inside.
    When even the largest shrinking that keeps X from underflowing is not
    enough (``wide``), the plan computes in a wider dtype instead.
    """
    if diagonal is None:
        return 0, False
    dmin, dmax = diagonal
    maxexp = _MAXEXP[np.dtype(dtype)]
    headroom = maxexp - 32
    if -2 * math.log2(dmin) < headroom / 2:
        return 0, False
    xmax = float(np.abs(np.tril(X) if lower else np.triu(X)).max())   # the read triangle
    if xmax == 0.0 or not math.isfinite(xmax):
        return 0, False
    est = math.log2(xmax) + math.log2(max(dmax, 1.0)) - 2 * math.log2(dmin)
    needed, cap = max(math.ceil(est - headroom), 0), maxexp - 64
    return (int(needed), False) if needed <= cap else (0, True)


_MAXEXP = {np.dtype(t): np.finfo(r).maxexp for t, r in
           ((np.float32, np.float32), (np.float64, np.float64),
            (np.complex64, np.float32), (np.complex128, np.float64))}


def chol_rev(L, L_bar, *, lower=True, symmetric=False, method="auto", block_size=None,
             overwrite_l_bar=False, check_finite=True, threads=None):
    """Reverse-mode derivative of the Cholesky factorization: ∂f/∂K from ∂f/∂L.

    Given the factor of a Hermitian positive definite K and the gradient of
    a real scalar f with respect to that factor, return the gradient of f
    with respect to K.

    Parameters
    ----------
    L : (..., N, N) array_like
        Cholesky factor, or a stack of them.  With ``lower=True``, K = L Lᴴ
        and only the lower triangle is read; with ``lower=False``, L is the
        upper factor U with K = Uᴴ U (``scipy.linalg.cholesky``'s default)
        and only the upper triangle is read.  The diagonal must be real and
        positive.
    L_bar : (..., N, N) array_like
        ∂f/∂L; only the same triangle as for `L` is read.  The leading
        (batch) dimensions of `L` and `L_bar` broadcast against each other.
    lower : bool, optional
        Whether `L` is the lower (default) or upper factor.
    symmetric : bool, optional
        Output convention; see Returns.
    method : {"auto", "closed", "sweep"}, optional
        ``"closed"``: the closed form with two full triangular solves,
        7N³/3 flops, as accurate as the most accurate float64 gradients
        (jax's) on ill-conditioned kernel matrices.  ``"sweep"``: the
        blocked sweep of level-3 BLAS calls (Murray 2016), 2N³/3 flops and
        up to 3× faster, but on ill-conditioned kernel matrices (RBF or
        Matérn with jitter 1e-4 and below) 10²-10⁵× less accurate; as
        accurate on well-conditioned factors.  ``"auto"`` (default): the
        sweep for a single matrix with N ≥ 500 whose factor LAPACK
        estimates to be well-conditioned (κ₁(L) ≤ 1000), the closed form
        otherwise.  Measurements in notes.md.
    block_size : int, optional
        Block width of the sweep, or row-block height of the closed form's
        triangular products.  None (default) chooses from N.  Any value
        gives the same result up to rounding.
    overwrite_l_bar : bool, optional
        Allow the result to be written over `L_bar`, which may improve
        performance.  It is, and `L_bar` itself is returned, when `L_bar` is
        a writeable ndarray with the result's dtype and shape (no
        broadcasting), overlaps neither `L` nor itself, and has `L`'s memory
        order (each matrix row- or column-major like L's); otherwise `L_bar`
        is untouched and a new array is returned.  Use the return value.
    check_finite : bool, optional
        Check that the read triangles hold no NaN or infinity (default).
        Disabling it saves a pass over the inputs; non-finite inputs then
        give non-finite results.
    threads : int, optional
        Limit the BLAS thread pools to this many threads for this call
        (through threadpoolctl), restoring them afterwards; for stacks of
        small matrices, the number of worker threads times BLAS threads.
        More than the cores this process may use counts as that many: more
        threads than cores only make BLAS wait for itself.  None (default)
        leaves the pools as they are.

    Returns
    -------
    K_bar : (..., N, N) ndarray
        With ``symmetric=False``: the triangular G (lower for ``lower=True``,
        upper otherwise, exact zeros in the other triangle) such that
        df = Re Σ_read-triangle conj(G_ij) dK_ij -- the convention of Smith,
        Murray and GPy.  With ``symmetric=True``: the Hermitian S with
        S_ij = G_ij / 2 off the diagonal and S_ii = G_ii, so that
        df = Re Σ_ij conj(S_ij) dK_ij for Hermitian dK -- the convention of
        torch and jax.  dtype is ``np.result_type(L, L_bar, float32)`` with
        integers and booleans counted as float64; the shape is the broadcast
        shape.  A single matrix's result has `L`'s memory order.

    Raises
    ------
    ValueError
        Shapes that are not square, do not match or do not broadcast; NaN or
        infinity in the read triangles (with ``check_finite``); an unknown
        method; block_size or threads < 1, or threads > 65536.
    TypeError
        Non-numeric or unsupported dtypes.
    numpy.linalg.LinAlgError
        A diagonal entry of `L` that is not real, positive and finite.
    Errors about a stack name the offending matrix's batch index.

    Warns
    -----
    RuntimeWarning
        When entries of the gradient exceed the dtype's range (a factor with
        a tiny diagonal entry, normal or subnormal): they are ±inf, never
        NaN, the rest is accurate.  Pivots spanning more than the dtype's
        range are differentiated by the closed form in a wider dtype.

    See Also
    --------
    chol_fwd : the forward (tangent) derivative.

    Notes
    -----
    For a loss f(L), df = Re Σ conj(L̄_ij) dL_ij.  The derivative of the
    factorization is L̇ = L Φ(L⁻¹ K̇ L⁻ᴴ), Φ taking the lower triangle with
    the diagonal halved, so K̄ = Φ(L⁻ᴴ (P + Pᴴ) L⁻¹) with P = Φ(Lᴴ L̄).
    For complex factors the imaginary part of L̄'s diagonal does not
    matter (the factor's diagonal is real) and G's diagonal is real.

    Examples
    --------
    >>> import numpy as np, blockchol
    >>> K = np.array([[4.0, 2.0], [2.0, 3.0]])
    >>> L = np.linalg.cholesky(K)
    >>> G = blockchol.chol_rev(L, np.eye(2))   # gradient of f = trace(L)
    >>> G
    array([[ 0.33838835,  0.        ],
           [-0.35355339,  0.35355339]])

    It is the gradient over the lower triangle: a step dK there changes f
    by Σ G ⊙ dK.

    >>> dK = np.array([[0.0, 0.0], [1e-6, 0.0]])
    >>> f = lambda K: np.trace(np.linalg.cholesky(K))
    >>> bool(np.isclose((f(K + dK + dK.T) - f(K)) / 1e-6, G[1, 0], rtol=1e-4))
    True
    """
    plan, L, X = make_plan("rev", L, L_bar, ("L", "L_bar"), lower=lower, symmetric=symmetric,
                           method=method, block_size=block_size, overwrite=overwrite_l_bar,
                           check_finite=check_finite, threads=threads)
    out = _run(plan, L, X)
    return L_bar if plan.overwrite else out


def chol_fwd(L, K_dot, *, lower=True, method="auto", block_size=None, check_finite=True,
             threads=None):
    """Forward-mode derivative of the Cholesky factorization: L̇ from K̇.

    Parameters
    ----------
    L : (..., N, N) array_like
        Cholesky factor (or a stack), as in :func:`chol_rev`: K = L Lᴴ with
        the lower triangle read (``lower=True``), or K = Uᴴ U with the upper
        triangle read (``lower=False``).
    K_dot : (..., N, N) array_like
        A Hermitian tangent K̇ of K, of which only the read triangle is used
        (the other is taken as its conjugate transpose; the imaginary part
        of the diagonal is ignored).  Leading dimensions broadcast with L's.
    lower, method, block_size, check_finite, threads
        As in :func:`chol_rev`; ``"closed"`` is L Φ(L⁻¹ K̇ L⁻ᴴ) with two
        full triangular solves, ``"sweep"`` the blocked forward sweep.

    Returns
    -------
    L_dot : (..., N, N) ndarray
        L̇ = L Φ(L⁻¹ K̇ L⁻ᴴ), Φ taking the lower triangle with the diagonal
        halved: lower triangular for ``lower=True``, the upper U̇ = L̇ᴴ for
        ``lower=False``, exact zeros in the other triangle.  It is the
        directional derivative of ``cholesky(K)`` along K̇, and the adjoint
        of :func:`chol_rev`: Re Σ conj(L̄) ⊙ L̇ = Re Σ_read conj(G) ⊙ K̇.

    Raises
    ------
    As :func:`chol_rev`.

    Examples
    --------
    >>> import numpy as np, blockchol
    >>> K = np.array([[4.0, 2.0], [2.0, 3.0]])
    >>> L = np.linalg.cholesky(K)
    >>> L_dot = blockchol.chol_fwd(L, np.eye(2))   # d chol(K + t I)/dt at t = 0
    >>> L_dot
    array([[ 0.25      ,  0.        ],
           [-0.125     ,  0.44194174]])
    >>> t = 1e-7
    >>> bool(np.allclose((np.linalg.cholesky(K + t * np.eye(2)) - L) / t, L_dot, atol=1e-6))
    True
    """
    plan, L, X = make_plan("fwd", L, K_dot, ("L", "K_dot"), lower=lower, symmetric=False,
                           method=method, block_size=block_size, overwrite=False,
                           check_finite=check_finite, threads=threads)
    return _run(plan, L, X)


def backprop_gradient(df_dL, L):
    """Drop-in for ``GPy.util.choleskies.backprop_gradient(dL, L)``.

    Returns the lower-triangular ∂f/∂K (Smith's convention, GPy's) for
    K = L Lᵀ, given ``df_dL`` = ∂f/∂L; only the lower triangles are read.
    Same as ``chol_rev(L, df_dL)``, so it is as accurate as the closed form.
    """
    return chol_rev(L, df_dL)


_EXECUTORS = {"small": stacks.run_small, "one": one.run, "loop": stacks.run_loop,
              "stacked": stacks.run_stacked}


def _run(plan, L, X):
    if plan.path == "empty":
        return np.zeros(plan.shape, plan.dtype)
    if plan.wide:
        out = _run_wide(plan, L, X)
    elif plan.blas_threads is None:
        out = _EXECUTORS[plan.path](plan, L, X)
    else:
        with blas_limit(plan.blas_threads):
            out = _EXECUTORS[plan.path](plan, L, X)
    if plan.scale_exp or plan.wide:
        overflowed = int(np.isinf(out).sum())
        if overflowed:
            dmin = np.abs(np.diagonal(L, axis1=-2, axis2=-1)).min()
            warnings.warn("the %s overflows %s in %d entries, which are ±inf (the factor's "
                          "smallest diagonal entry is %.3g); the other entries are finite"
                          % ("gradient" if plan.direction == "rev" else "derivative",
                             plan.dtype.name, overflowed, dmin), RuntimeWarning, stacklevel=3)
    return out


def _run_wide(plan, L, X):
    """The derivative of a factor whose pivots span more than the dtype's range, in a wider one.

    No power-of-two scaling keeps every intermediate of such a factor finite
    (the results span up to 1/min(L_ii)², beyond the range), and inf − inf
    inside would give NaN.  Single precision is computed in double; double
    by the closed form in extended precision (``np.longdouble``: stacked
    numpy, no BLAS, so slow, but it is only reached by such factors).  The
    result is rounded to the dtype: entries beyond its range become ±inf.
    """
    if plan.dtype.itemsize // (2 if plan.dtype.kind == "c" else 1) == 4:
        wide = np.promote_types(plan.dtype, np.float64)
        fn = chol_rev if plan.direction == "rev" else chol_fwd
        options = dict(lower=plan.lower, method=plan.method, check_finite=False)
        if plan.direction == "rev":
            options["symmetric"] = plan.symmetric
        result = fn(L.astype(wide), X.astype(wide), **options)
    else:
        wide = np.clongdouble if plan.dtype.kind == "c" else np.longdouble
        shape, n = plan.shape, plan.n
        Ls = np.broadcast_to(L, shape).reshape(-1, n, n)
        Xs = np.broadcast_to(X, shape).reshape(-1, n, n)
        if not plan.lower:
            Ls, Xs = (np.swapaxes(a, -1, -2).conj() for a in (Ls, Xs))
        result = stacks.closed_lower(plan.direction, Ls.astype(wide), Xs.astype(wide),
                                     plan.symmetric)
        if not plan.lower:
            result = np.swapaxes(result, -1, -2).conj()
        result = result.reshape(shape)
    with np.errstate(over="ignore"):
        if plan.overwrite:
            X[...] = result
            return X
        order = "C" if plan.row_major or plan.shape[:-2] else "F"
        return np.array(result, dtype=plan.dtype, order=order)
