"""The Cholesky derivative's algebra in jax operations, each piece defined once.

The conjugate transpose, the triangle mask, Φ, the Hermitian matrix
completed from a lower triangle, and the triangular solves and products.
"""

import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = ["H", "tril", "phi", "hermitian_from_lower", "solve", "mm"]


def H(x):
    """The conjugate transpose of the last two axes."""
    return jnp.conj(jnp.swapaxes(x, -1, -2))


def tril(x):
    """The lower triangle with the diagonal, zeros above."""
    return jnp.tril(x)


def phi(x):
    """Φ: the lower triangle with the diagonal halved, zeros above."""
    n = x.shape[-1]
    i = lax.broadcasted_iota(np.int32, (n, n), 0)
    j = lax.broadcasted_iota(np.int32, (n, n), 1)
    scale = jnp.where(i > j, 1.0, jnp.where(i == j, 0.5, 0.0)).astype(x.real.dtype)
    return x * scale


def hermitian_from_lower(a):
    """The Hermitian matrix with a's lower triangle (and the real part of its diagonal)."""
    low = jnp.tril(a, -1)
    d = jnp.diagonal(a, axis1=-2, axis2=-1).real.astype(a.dtype)
    return low + H(low) + d[..., :, None] * jnp.eye(a.shape[-1], dtype=a.dtype)


def solve(L, b, *, left, adjoint=False):
    """L⁻¹ b, L⁻ᴴ b (left) or b L⁻¹, b L⁻ᴴ (right) for the lower triangular L."""
    return lax.linalg.triangular_solve(L, b, left_side=left, lower=True,
                                       transpose_a=adjoint, conjugate_a=adjoint)


def mm(a, b):
    """The matrix product at full precision (jax's rule's precision)."""
    return jnp.matmul(a, b, precision=lax.Precision.HIGHEST)
