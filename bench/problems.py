"""Test problems: one set of matrices shared by every implementation of a case."""

from dataclasses import dataclass
from typing import Optional

import numpy as np

__all__ = ["Problem", "make_problem", "wide_dtype"]


def wide_dtype(dtype):
    """The double-precision dtype of the same kind (references are computed in it)."""
    return np.dtype(np.complex128 if np.dtype(dtype).kind == "c" else np.float64)


@dataclass
class Problem:
    """K = L Lᴴ with its lower factor, a cotangent L̄ and (optionally) a tangent K̇.

    All arrays have shape ``batch + (n, n)`` and dtype ``dtype``.  They are
    built in double precision and rounded once, so that the single-precision
    case sees the same matrices as the double one, and so that K and L agree
    to the working precision.
    """

    dtype: np.dtype
    K: np.ndarray       # Hermitian positive definite, full
    L: np.ndarray       # lower Cholesky factor of K, zeros above the diagonal
    L_bar: np.ndarray   # ∂f/∂L, lower triangular
    K_dot: Optional[np.ndarray] = None   # Hermitian tangent, full (forward mode)

    @property
    def n(self):
        return self.K.shape[-1]

    @property
    def batch(self):
        return self.K.shape[:-2]

    @property
    def count(self):
        """Number of matrices in the stack (1 for a single matrix)."""
        return int(np.prod(self.batch, dtype=np.int64))

    @property
    def label(self):
        return "N=%d" % self.n if not self.batch else str(self.batch + (self.n, self.n))

    def wide(self, name):
        """Array ``name`` in double precision (a view when it already is)."""
        return getattr(self, name).astype(wide_dtype(self.dtype), copy=False)


def _gaussian(rng, shape, complex_):
    if not complex_:
        return rng.standard_normal(shape)
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) / np.sqrt(2)


def make_problem(n, dtype, batch=(), seed=0, tangent=False):
    """A well-conditioned problem: K = A Aᴴ / n + I (eigenvalues in [1, ~5]).

    A good condition number keeps the rounding errors of every correct
    implementation far below the WRONG thresholds of :mod:`bench.checks`.
    """
    dtype = np.dtype(dtype)
    complex_ = dtype.kind == "c"
    rng = np.random.default_rng(seed)
    shape = tuple(batch) + (n, n)
    A = _gaussian(rng, shape, complex_)
    K = A @ np.conj(np.swapaxes(A, -1, -2))
    del A
    K /= n
    K[..., np.arange(n), np.arange(n)] += 1.0
    K = 0.5 * (K + np.conj(np.swapaxes(K, -1, -2)))   # exactly Hermitian after rounding
    L = np.linalg.cholesky(K)
    L_bar = np.tril(_gaussian(rng, shape, complex_))
    K_dot = None
    if tangent:
        E = _gaussian(rng, shape, complex_)
        K_dot = 0.5 * (E + np.conj(np.swapaxes(E, -1, -2)))
    cast = (lambda x: None if x is None else np.ascontiguousarray(x, dtype=dtype))
    return Problem(dtype, cast(K), cast(L), cast(L_bar), cast(K_dot))
