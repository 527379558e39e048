"""Public entry points: validate, pick the layout and block size, dispatch to the sweep."""

import numpy as np

from . import _sweep
from ._operands import Matrix
from ._threads import blas_threads, check_threads
from ._validation import (as_input_array, blas_view, check_block_size,
                          check_factor_diagonal, check_finite_triangle, check_pair,
                          copy_triangle, result_dtype, row_blocks)

__all__ = ["chol_rev", "backprop_gradient"]


def chol_rev(L, L_bar, *, lower=True, symmetric=False, block_size=None,
             overwrite_l_bar=False, check_finite=True, threads=None):
    """Reverse-mode derivative of the Cholesky factorization: ∂f/∂K from ∂f/∂L.

    Given the factor of a Hermitian positive definite K and the gradient of
    a real scalar f with respect to that factor, return the gradient of f
    with respect to K, by a blocked sweep whose work is level-3 BLAS
    (Murray 2016, arXiv:1602.07527).

    Parameters
    ----------
    L : (N, N) array_like
        Cholesky factor. With ``lower=True``, K = L Lᴴ and only the lower
        triangle is read; with ``lower=False``, L is the upper factor U with
        K = Uᴴ U (``scipy.linalg.cholesky``'s default) and only the upper
        triangle is read.  The diagonal must be real and positive.
    L_bar : (N, N) array_like
        ∂f/∂L; only the same triangle as for `L` is read.
    lower : bool, optional
        Whether `L` is the lower (default) or upper factor.
    symmetric : bool, optional
        Output convention; see Returns.
    block_size : int, optional
        Width of the diagonal blocks.  None (default) chooses from N
        (measurements in notes.md).  Any value gives the same result up
        to rounding.
    overwrite_l_bar : bool, optional
        Allow the result to be written over `L_bar`.  It is, when `L_bar`
        already has the result's dtype, is writeable, has the same memory
        order as `L` (both C- or both Fortran-ordered, leading dimensions
        free) and does not overlap `L`; the returned array is then `L_bar`
        (for ``symmetric=False`` with its unread triangle zeroed).
        Otherwise a new array is returned and `L_bar` is untouched.
    check_finite : bool, optional
        Check that the read triangles hold no NaN or infinity (default).
        Disabling it saves a pass over the inputs; non-finite inputs then
        give non-finite results.
    threads : int, optional
        Limit the BLAS thread pools to this many threads for this call
        (through threadpoolctl), restoring them afterwards.  None (default)
        uses the pools as they are.

    Returns
    -------
    K_bar : (N, N) ndarray
        With ``symmetric=False``: the triangular G (lower for ``lower=True``,
        upper otherwise, exact zeros in the other triangle) such that
        df = Re Σ_read-triangle conj(G_ij) dK_ij -- the convention of Smith,
        Murray and GPy.  With ``symmetric=True``: the Hermitian S with
        S_ij = G_ij / 2 off the diagonal and S_ii = G_ii, so that
        df = Re Σ_ij conj(S_ij) dK_ij for Hermitian dK -- the convention of
        torch and jax.  dtype is ``np.result_type(L, L_bar, float32)``
        with integers and booleans counted as float64.

    Raises
    ------
    ValueError
        Shapes that are not square or do not match, NaN or infinity in the
        read triangles (with ``check_finite``), block_size or threads < 1.
    TypeError
        Non-numeric or unsupported dtypes.
    numpy.linalg.LinAlgError
        A diagonal entry of `L` that is not real, positive and finite.

    Notes
    -----
    For a loss f(L), df = Re Σ conj(L̄_ij) dL_ij.  The derivative of the
    factorization is L̇ = L Φ(L⁻¹ K̇ L⁻ᴴ), Φ taking the lower triangle with
    the diagonal halved, so K̄ = Φ(L⁻ᴴ (P + Pᴴ) L⁻¹) with P = Φ(Lᴴ L̄).  The
    sweep computes this in 2N³/3 flops, about twice the factorization.

    Examples
    --------
    >>> import numpy as np, blockchol
    >>> K = np.array([[4.0, 2.0], [2.0, 3.0]])
    >>> L = np.linalg.cholesky(K)
    >>> blockchol.chol_rev(L, np.eye(2))   # gradient of f = trace(L)
    array([[ 0.375     ,  0.        ],
           [-0.35355339,  0.35355339]])
    """
    L = as_input_array(L, "L")
    L_bar = as_input_array(L_bar, "L_bar")
    check_pair(L, L_bar, ("L", "L_bar"))
    block_size = check_block_size(block_size)
    threads = check_threads(threads)
    dtype = result_dtype(L, L_bar)
    if L.ndim > 2:
        raise ValueError("batched input (shape %s) is not supported yet: pass one matrix"
                         % (L.shape,))
    if check_finite:
        check_finite_triangle(L, "L", lower)
        check_finite_triangle(L_bar, "L_bar", lower)
    check_factor_diagonal(L)
    n = L.shape[0]
    if n == 0:
        return np.zeros((0, 0), dtype)

    # L is only read: use it where it lies if BLAS can address it.
    view = blas_view(L) if L.dtype == dtype else None
    if view is None:
        L = np.ascontiguousarray(L, dtype=dtype)
        view = blas_view(L)
    stored_L, transposed = view

    A = _result_array(L, L_bar, dtype, transposed, overwrite_l_bar)
    copy_triangle(A, L_bar, lower)
    stored_A = A.T if transposed else A

    upper = (not lower) != transposed
    nb = min(block_size or _sweep.default_block_size(n), n)
    with blas_threads(threads):
        W = np.empty((nb, nb), dtype=dtype, order="F")
        _sweep.rev_sweep(Matrix(stored_L, upper), Matrix(stored_A, upper), nb,
                         Matrix(W, upper))
    if symmetric:
        _symmetrize(A, lower)
    return A


def _result_array(L, L_bar, dtype, transposed, overwrite):
    """L_bar itself when the caller allows it and it fits; else a new array."""
    if overwrite and L_bar.dtype == dtype and L_bar.flags.writeable:
        view = blas_view(L_bar)
        if view is not None and view[1] == transposed and not np.may_share_memory(L, L_bar):
            return L_bar
    return np.empty(L.shape, dtype=dtype, order="C" if transposed else "F")


def _symmetrize(A, lower):
    """In place: triangular G → Hermitian S (S_ij = G_ij/2 off the diagonal, S_ii = G_ii)."""
    v = A if lower else A.T
    for i0, i1 in row_blocks(v.shape[0]):
        below = v[i0:i1, :i0]
        below *= 0.5
        v[:i0, i0:i1] = below.conj().T
        d = v[i0:i1, i0:i1]
        d[...] = 0.5 * (d + d.conj().T)


def backprop_gradient(df_dL, L):
    """Drop-in for ``GPy.util.choleskies.backprop_gradient(dL, L)``.

    Returns the lower-triangular ∂f/∂K (Smith's convention) for K = L Lᵀ,
    given ``df_dL`` = ∂f/∂L; only the lower triangles are read.  Same as
    ``chol_rev(L, df_dL)``.
    """
    return chol_rev(L, df_dL)
