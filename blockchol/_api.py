"""Public entry points: check and resolve the arguments into a plan, then carry it out."""

import warnings

import numpy as np

from . import _batch, _one, _small
from ._plan import make_plan
from ._threads import blas_limit

__all__ = ["chol_rev", "chol_fwd", "backprop_gradient"]


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
        a tiny diagonal entry): they are ±inf, the rest is accurate.

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


_EXECUTORS = {"small": _small.run, "one": _one.run, "loop": _batch.run, "stacked": _batch.run}


def _run(plan, L, X):
    if plan.path == "empty":
        return np.zeros(plan.shape, plan.dtype)
    if plan.blas_threads is None:
        out = _EXECUTORS[plan.path](plan, L, X)
    else:
        with blas_limit(plan.blas_threads):
            out = _EXECUTORS[plan.path](plan, L, X)
    if plan.scale_exp:
        overflowed = int(np.isinf(out).sum())
        if overflowed:
            dmin = np.abs(np.diagonal(L, axis1=-2, axis2=-1)).min()
            warnings.warn("the %s overflows %s in %d entries, which are ±inf (the factor's "
                          "smallest diagonal entry is %.3g); the other entries are finite"
                          % ("gradient" if plan.direction == "rev" else "derivative",
                             plan.dtype.name, overflowed, dmin), RuntimeWarning, stacklevel=3)
    return out
