"""Public entry points: validate, then dispatch to one matrix or a stack."""

import numpy as np

from . import _batch, _one
from ._threads import blas_threads
from ._validation import (as_input_array, check_count, check_factor_diagonal,
                          check_finite_triangle, check_pair, over_row_blocks, result_dtype)

__all__ = ["chol_rev", "chol_fwd", "backprop_gradient"]


def chol_rev(L, L_bar, *, lower=True, symmetric=False, block_size=None,
             overwrite_l_bar=False, check_finite=True, threads=None):
    """Reverse-mode derivative of the Cholesky factorization: ∂f/∂K from ∂f/∂L.

    Given the factor of a Hermitian positive definite K and the gradient of
    a real scalar f with respect to that factor, return the gradient of f
    with respect to K, by a blocked sweep whose work is level-3 BLAS
    (Murray 2016, arXiv:1602.07527).

    Parameters
    ----------
    L : (..., N, N) array_like
        Cholesky factor, or a stack of them. With ``lower=True``,
        K = L Lᴴ and only the lower triangle is read; with ``lower=False``,
        L is the upper factor U with K = Uᴴ U (``scipy.linalg.cholesky``'s
        default) and only the upper triangle is read.  The diagonal must be
        real and positive.
    L_bar : (..., N, N) array_like
        ∂f/∂L; only the same triangle as for `L` is read.  The leading
        (batch) dimensions of `L` and `L_bar` broadcast against each other.
    lower : bool, optional
        Whether `L` is the lower (default) or upper factor.
    symmetric : bool, optional
        Output convention; see Returns.
    block_size : int, optional
        Width of the diagonal blocks.  None (default) chooses from N
        (measurements in notes.md).  Any value gives the same result up to
        rounding.
    overwrite_l_bar : bool, optional
        Allow the result to be written over `L_bar`.  It is when `L_bar`
        already has the result's dtype and shape (no broadcasting), is
        writeable and does not overlap `L`, and: for a single matrix, or a
        stack with N > 256, each matrix of `L_bar` has the same memory order
        as `L`'s (both C- or both Fortran-ordered, leading dimensions free);
        for a stack with N ≤ 256, its batch dimensions can be merged without
        a copy.  The returned array is then `L_bar`; otherwise it is a new
        array and `L_bar` is untouched.  Extra memory with overwrite is
        O(N · block_size) for a single matrix.
    check_finite : bool, optional
        Check that the read triangles hold no NaN or infinity (default).
        Disabling it saves a pass over the inputs; non-finite inputs then
        give non-finite results.
    threads : int, optional
        Limit the BLAS thread pools to this many threads for this call
        (through threadpoolctl), restoring them afterwards; for stacks of
        small matrices, the number of worker threads.  None (default) uses
        the pools as they are.

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
        shape.  For a single matrix the result has `L`'s memory order (C or
        Fortran).

    Raises
    ------
    ValueError
        Shapes that are not square, do not match or do not broadcast; NaN or
        infinity in the read triangles (with ``check_finite``); block_size or
        threads < 1.
    TypeError
        Non-numeric or unsupported dtypes.
    numpy.linalg.LinAlgError
        A diagonal entry of `L` that is not real, positive and finite.
    Errors about a stack name the offending matrix's batch index.

    See Also
    --------
    chol_fwd : the forward (tangent) derivative.

    Notes
    -----
    For a loss f(L), df = Re Σ conj(L̄_ij) dL_ij.  The derivative of the
    factorization is L̇ = L Φ(L⁻¹ K̇ L⁻ᴴ), Φ taking the lower triangle with
    the diagonal halved, so K̄ = Φ(L⁻ᴴ (P + Pᴴ) L⁻¹) with P = Φ(Lᴴ L̄).  The
    sweep computes this in 2N³/3 flops, about twice the factorization.
    For complex factors the imaginary part of L̄'s diagonal does not
    matter (the factor's diagonal is real) and G's diagonal is real.

    Examples
    --------
    >>> import numpy as np, blockchol
    >>> K = np.array([[4.0, 2.0], [2.0, 3.0]])
    >>> L = np.linalg.cholesky(K)
    >>> blockchol.chol_rev(L, np.eye(2))   # gradient of f = trace(L)
    array([[ 0.375     ,  0.        ],
           [-0.35355339,  0.35355339]])
    """
    L, L_bar, dtype, batch, block_size, threads = _prepare(
        L, L_bar, ("L", "L_bar"), lower, check_finite, block_size, threads)
    if batch:
        out = _batch.run_batch("rev", L, L_bar, dtype, lower, batch, block_size,
                               overwrite_l_bar, threads)
    else:
        with blas_threads(threads):
            out = _one.run_one(_one.REV, L, L_bar, dtype, lower, block_size, overwrite_l_bar,
                               threads=threads)
    if symmetric:
        _symmetrize(out, lower, threads)
    return out


def chol_fwd(L, K_dot, *, lower=True, block_size=None, check_finite=True, threads=None):
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
    lower, block_size, check_finite, threads
        As in :func:`chol_rev`.

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

    Notes
    -----
    Blocked left to right: per diagonal block two gemms update the panel,
    the block itself takes the closed form, and the panel below one gemm
    and one triangular solve -- 2N³/3 flops, like the reverse sweep.

    Examples
    --------
    >>> import numpy as np, blockchol
    >>> L = np.linalg.cholesky(np.array([[4.0, 2.0], [2.0, 3.0]]))
    >>> blockchol.chol_fwd(L, np.eye(2))   # d chol(K + t I)/dt at t = 0
    array([[ 0.25      ,  0.        ],
           [-0.25      ,  0.35355339]])
    """
    L, K_dot, dtype, batch, block_size, threads = _prepare(
        L, K_dot, ("L", "K_dot"), lower, check_finite, block_size, threads)
    if batch:
        return _batch.run_batch("fwd", L, K_dot, dtype, lower, batch, block_size, False, threads)
    with blas_threads(threads):
        return _one.run_one(_one.FWD, L, K_dot, dtype, lower, block_size, threads=threads)


def backprop_gradient(df_dL, L):
    """Drop-in for ``GPy.util.choleskies.backprop_gradient(dL, L)``.

    Returns the lower-triangular ∂f/∂K (Smith's convention) for K = L Lᵀ,
    given ``df_dL`` = ∂f/∂L; only the lower triangles are read.  Same as
    ``chol_rev(L, df_dL)``.
    """
    return chol_rev(L, df_dL)


def _prepare(L, X, names, lower, check_finite, block_size, threads):
    """Everything checked, in the order the errors are documented."""
    L = as_input_array(L, names[0])
    X = as_input_array(X, names[1])
    batch = check_pair(L, X, names)
    block_size = check_count(block_size, "block_size")
    threads = check_count(threads, "threads")
    dtype = result_dtype(L, X)
    if check_finite:
        check_finite_triangle(L, names[0], lower, threads)
        check_finite_triangle(X, names[1], lower, threads)
    check_factor_diagonal(L, names[0])
    return L, X, dtype, batch, block_size, threads


def _symmetrize(A, lower, threads):
    """In place: triangular G → Hermitian S (S_ij = G_ij/2 off the diagonal, S_ii = G_ii)."""
    v = A if lower else np.swapaxes(A, -1, -2)

    def strip(i0, i1):      # writes rows i0:i1 below the diagonal and columns i0:i1 above
        below = v[..., i0:i1, :i0]
        below *= 0.5
        v[..., :i0, i0:i1] = np.swapaxes(below, -1, -2).conj()
        d = v[..., i0:i1, i0:i1]
        d[...] = 0.5 * (d + np.swapaxes(d, -1, -2).conj())

    over_row_blocks(strip, v.shape[-1], threads)
