"""The Cholesky derivative in jax operations: Φ, the Hermitian fill, and jax's own rule.

Each piece of the adapter's algebra that runs as jax operations is defined
here once: the conjugate transpose, the triangle masks, Φ, the Hermitian
matrix completed from a lower triangle, the triangular solves and
products, and the tangent L Φ(L⁻¹ X L⁻ᴴ) exactly as jax's own rule
computes it (the same operations in the same order, so the same values and
the same NaN pattern), with its transpose.  The masks select rather than
multiply, so a NaN or an infinity stays where it is instead of spreading
into the other triangle (0 · inf is NaN).
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = ["H", "tril", "phi", "hermitian_from_lower", "solve", "mm", "tangent", "cotangent"]


def H(x):
    """The conjugate transpose of the last two axes."""
    return jnp.conj(jnp.swapaxes(x, -1, -2))


def _rows_cols(x):
    n = x.shape[-1]
    return (lax.broadcasted_iota(np.int32, (n, n), 0), lax.broadcasted_iota(np.int32, (n, n), 1))


def tril(x):
    """The lower triangle with the diagonal, zeros above, selected (NaN above stays out)."""
    i, j = _rows_cols(x)
    return jnp.where(i >= j, x, 0)


def phi(x):
    """Φ: the lower triangle with the diagonal halved, zeros above (bitwise jax's tril(x) / (1 + I))."""
    i, j = _rows_cols(x)
    return jnp.where(i > j, x, jnp.where(i == j, x / 2, 0))


def hermitian_from_lower(a):
    """The Hermitian matrix with a's strict lower triangle and the real part of its diagonal.

    For a Hermitian `a` it is `a` itself, bit for bit (real `a`; complex
    `a` with a real diagonal), infinities and NaN included.
    """
    i, j = _rows_cols(a)
    low = jnp.where(i > j, a, 0)        # (a Python 0 keeps a weak type)
    diagonal = jnp.real(a).astype(a.dtype) if jnp.iscomplexobj(a) else a
    # low + lowᴴ adds exact zeros; selecting between a and aᴴ instead compiles in seconds to
    # minutes at N = 512-2000 (XLA's CPU compiler on a select of a transpose).
    return jnp.where(i == j, diagonal, low + H(low))


def solve(L, b, *, left, adjoint=False):
    """L⁻¹ b, L⁻ᴴ b (left) or b L⁻¹, b L⁻ᴴ (right) for the lower triangular L."""
    return lax.linalg.triangular_solve(L, b, left_side=left, lower=True,
                                       transpose_a=adjoint, conjugate_a=adjoint)


def mm(a, b):
    """The matrix product at full precision (jax's rule's precision)."""
    return jnp.matmul(a, b, precision=lax.Precision.HIGHEST)


def tangent(L, X):
    """L̇ = L Φ(L⁻¹ X_h L⁻ᴴ), X_h = hermitian_from_lower(X): jax's own jvp rule, op for op.

    The operations and their order are those of jax's rule for
    ``lax.linalg.cholesky`` followed by its final ``tril``, so for a
    Hermitian X (what both conventions of ``symmetrize_input`` pass) the
    result is jax's tangent, values and NaN pattern alike.
    """
    inner = solve(L, solve(L, hermitian_from_lower(X), left=False, adjoint=True), left=True)
    return tril(mm(L, phi(inner)))


def cotangent(L, C):
    """The transpose of ``tangent(L, ·)`` under jax's pairing, applied to C: lower triangular."""
    transpose = jax.linear_transpose(lambda X: tangent(L, X), jax.ShapeDtypeStruct(C.shape, C.dtype))
    return transpose(C)[0]
