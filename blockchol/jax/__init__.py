"""blockchol inside jax: a Cholesky factorization whose derivatives run blockchol.

:func:`cholesky` has the contract of :func:`jax.numpy.linalg.cholesky`; the
factorization itself is jax's own (``lax.linalg.cholesky``, LAPACK potrf on
CPU), while its derivatives -- forward (jvp), reverse (grad, vjp) and, by
differentiating those again, second order -- run :func:`blockchol.chol_fwd`
and :func:`blockchol.chol_rev` on the host through :func:`jax.pure_callback`.
It works under ``jit``, ``grad``, ``jvp``, ``vmap`` (a batch reaches
blockchol as one stack, in one host call) and any composition of them.

:func:`accelerate` makes ``jax.numpy.linalg.cholesky``,
``jax.scipy.linalg.cholesky`` and ``jax.scipy.linalg.cho_factor`` use this
implementation while it is active (a context manager and a decorator).

Importing this module needs jax (``pip install 'blockchol[jax]'``);
``import blockchol`` alone never imports it.

Conventions
-----------
For K = L Lᴴ, the tangent of the factor along a Hermitian K̇ is
L̇ = L Φ(L⁻¹ K̇ L⁻ᴴ), Φ taking the lower triangle with the diagonal halved.
Cotangents follow jax: for a real loss f of a complex array z, jax's
cotangent is z̄ = ∂f/∂Re z − i ∂f/∂Im z, the complex conjugate of torch's
(and blockchol's, which is why the reverse rule runs
``conj(chol_rev(L, conj(L̄)))``).  For real dtypes that distinction vanishes
and ``jax.grad(f)(K)`` is the symmetric S with df = Σ_ij S_ij dK_ij.
"""


import numpy as np

try:
    import jax
    import jax.numpy as jnp
    import jax.scipy.linalg as _jsl
    from jax import lax
except ImportError as error:     # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError("blockchol.jax needs jax, which could not be imported (%s); install it "
                      "with: pip install 'blockchol[jax]'" % error) from error

from blockchol import _patching
from blockchol.core.thresholds import JAX_CROSSOVER_N as CROSSOVER_N

from ._algebra import H, hermitian_from_lower
from ._primitives import fwd_p

__all__ = ["cholesky", "accelerate", "CROSSOVER_N"]

# jax's own functions, kept before accelerate() can replace them.
_jax_cholesky = jnp.linalg.cholesky
_jax_scipy_cholesky = _jsl.cholesky

# CROSSOVER_N is the threshold table's own dict (blockchol.core.thresholds), keyed by dtype
# name and read at each call: below these orders jax's own rule beats the host call's fixed
# cost [notes.md, "Frameworks"; measured by `python -m bench.frameworks_jax --crossover`].

_OPERAND_DTYPES = frozenset(np.dtype(t) for t in (np.float32, np.float64, np.complex64, np.complex128))


# ---------------------------------------------------------------------------
# The factorization: jax's own, with blockchol's tangent.

@jax.custom_jvp
def _cholesky_lower_read(a):
    """jax's factor of the Hermitian matrix whose lower triangle is a's."""
    return lax.linalg.cholesky(a, symmetrize_input=False)


@_cholesky_lower_read.defjvp
def _cholesky_lower_read_jvp(primals, tangents):
    a, = primals
    da, = tangents
    L = _cholesky_lower_read(a)      # not lax's: differentiating again must use this rule too
    return L, fwd_p.bind(L, da)


def _use_blockchol(a):
    """Whether a's derivatives go to blockchol (size, dtype, backend), else to jax's own rule."""
    crossover = CROSSOVER_N.get(np.dtype(a.dtype).name)
    return crossover is not None and a.shape[-1] >= crossover and jax.default_backend() == "cpu"


def _lower_factor(a, symmetrize_input, upper=False):
    """The factor of a (..., N, N) inexact jax array, with the right derivative rule."""
    if _use_blockchol(a):
        if symmetrize_input:
            a = (a + H(a)) / 2
        L = _cholesky_lower_read(a)
        return H(L) if upper else L
    # jax's own function (the original, also under accelerate()), so that the
    # program is exactly jax's.  Without symmetrization jax's rule
    # differentiates as if the whole input were read (jax-ml/jax#40421);
    # feeding it the Hermitian matrix built from the lower triangle gives the
    # same factor, bit for bit, and the derivative of what is computed.
    if not symmetrize_input:
        a = hermitian_from_lower(a)
    return _jax_cholesky(a, upper=upper, symmetrize_input=True)


def _operand(a, jax_function, **kwargs):
    """`a` as the array ``jax_function(a, **kwargs)`` factors; what jax refuses raises as in jax.

    A jax or numpy array of a supported float or complex dtype (native byte
    order), not weakly typed, of shape (..., N, N) is taken as it is.  For
    anything else -- integers, booleans, float16, weak types, other byte
    orders, other shapes, other objects -- jax's own function is traced on
    it (it is not run), so that it raises jax's exception or gives jax's
    dtype.
    """
    if (isinstance(a, (jax.Array, np.ndarray)) and np.dtype(a.dtype) in _OPERAND_DTYPES
            and not getattr(a, "weak_type", False) and a.ndim >= 2 and a.shape[-1] == a.shape[-2]):
        return jnp.asarray(a)
    dtype = jax.eval_shape(lambda: jax_function(a, **kwargs)).dtype
    a = jnp.asarray(a)
    return a if a.dtype == dtype else lax.convert_element_type(a, dtype)


def cholesky(a, *, upper=False, symmetrize_input=True):
    """Cholesky factor of a Hermitian positive definite matrix, differentiated by blockchol.

    The contract of :func:`jax.numpy.linalg.cholesky`: the factorization is
    jax's own (``lax.linalg.cholesky``); the derivatives -- ``jvp``,
    ``grad``/``vjp`` and any order and composition of them, under ``jit``
    and ``vmap`` -- run :func:`blockchol.chol_fwd` and
    :func:`blockchol.chol_rev` on the host.  Matrices smaller than
    :data:`CROSSOVER_N` gives for their dtype, and everything when jax's
    default backend is not the CPU (every derivative would cross to the
    host and back), use jax's own derivative rule, which is faster there.

    Parameters
    ----------
    a : (..., N, N) array_like
        Hermitian (symmetric if real) positive definite matrices.  Integer
        and boolean input is promoted as jax promotes it; what jax refuses
        (other shapes, other objects) raises jax's own exception.
    upper : bool, optional
        Return the upper factor U = Lᴴ (a = Uᴴ U) instead of the lower
        factor L (a = L Lᴴ, default).
    symmetrize_input : bool, optional
        True (default): factor (a + aᴴ)/2, so both triangles are read and
        the derivative is the symmetric (Hermitian) one.  False: only the
        lower triangle of `a` is read (the imaginary part of its diagonal is
        ignored), whether `upper` is set or not, and the derivative is with
        respect to that triangle alone: zero above the diagonal.

    Returns
    -------
    (..., N, N) jax.Array
        L (lower triangular) or U (upper), `a`'s inexact dtype.  A matrix
        that is not positive definite gives a factor with NaN in its
        triangle, and NaN derivatives, as jax's own; nothing raises.  Where
        blockchol's derivative of a matrix is not finite (NaN or infinite
        input, tangent or cotangent, or overflow), that matrix's derivative
        is jax's own rule's, so its NaN pattern is jax's: a tangent is NaN
        only in the factor's triangle, zero in the other.  (With
        ``symmetrize_input=False`` jax's rule is applied to the matrix
        completed from the lower triangle, so the derivative with respect
        to the upper triangle stays zero.)

    Notes
    -----
    Tangent (forward mode): L̇ = L Φ(L⁻¹ ȧ L⁻ᴴ), Φ taking the lower triangle
    with the diagonal halved, where ȧ is the Hermitian tangent the input
    convention reads ((ȧ + ȧᴴ)/2, or the lower triangle completed).
    Cotangent (reverse mode): for ``symmetrize_input=True``, jax.grad of a
    real loss f(L) with respect to a real `a` is the symmetric S with
    df = Σ_ij S_ij da_ij (for complex `a`, jax's cotangent is the conjugate
    of the torch-style gradient: df = Re Σ_ij S_ij da_ij).  With
    ``symmetrize_input=False`` it is the lower triangular G with
    df = Σ_{i≥j} G_ij da_ij.  Second and higher orders differentiate
    blockchol's rules again, partly in jax operations.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> import blockchol.jax as bj
    >>> x = jnp.array([[2., 1.], [1., 2.]])
    >>> bj.cholesky(x)
    Array([[1.4142135 , 0.        ],
           [0.70710677, 1.2247449 ]], dtype=float32)
    >>> bj.cholesky(x, upper=True)
    Array([[1.4142135 , 0.70710677],
           [0.        , 1.2247449 ]], dtype=float32)

    The gradient of log det(K) = 2 Σ log L_ii is K⁻¹; at N = 1024 (float32,
    above ``CROSSOVER_N["float32"]``) blockchol computes it, on the host, under
    ``jit``:

    >>> k = jnp.eye(1024) * 2 + 0.5
    >>> logdet = lambda k: 2 * jnp.sum(jnp.log(jnp.diagonal(bj.cholesky(k))))
    >>> g = jax.jit(jax.grad(logdet))(k)
    >>> bool(jnp.allclose(g, jnp.linalg.inv(k), atol=1e-5))
    True

    Forward mode and ``vmap`` (the stack goes to blockchol in one call):

    >>> ks = jnp.stack([k, 2 * k])
    >>> _, l_dot = jax.vmap(lambda k: jax.jvp(bj.cholesky, (k,), (k,)))(ks)
    >>> bool(jnp.allclose(l_dot, bj.cholesky(ks) / 2, atol=1e-5))   # d chol(tK)/dt = L/2
    True
    """
    a = _operand(a, _jax_cholesky, upper=upper, symmetrize_input=symmetrize_input)
    return _lower_factor(a, symmetrize_input, upper)


# ---------------------------------------------------------------------------
# Drop-ins for jax.scipy.linalg, and accelerate().

def _scipy_cholesky(a, lower=False, overwrite_a=False, check_finite=True):
    """:func:`jax.scipy.linalg.cholesky` with blockchol's derivatives (reads one triangle)."""
    del overwrite_a, check_finite
    a = _operand(a, _jax_scipy_cholesky, lower=lower)
    L = _lower_factor(a if lower else H(a), symmetrize_input=False)
    return L if lower else H(L)


def _scipy_cho_factor(a, lower=False, overwrite_a=False, check_finite=True):
    """:func:`jax.scipy.linalg.cho_factor` with blockchol's derivatives."""
    return _scipy_cholesky(a, lower=lower), lower


def _patches():
    return ((jnp.linalg, "cholesky", cholesky), (_jsl, "cholesky", _scipy_cholesky),
            (_jsl, "cho_factor", _scipy_cho_factor))


_PATCHES = _patching.Patches(_patches)


def accelerate(func=None):
    """Route jax's Cholesky entry points to this module while active.

    Use it as a context manager (``with accelerate():``) or as a decorator
    (``@accelerate`` or ``@accelerate()``).  While active,
    ``jax.numpy.linalg.cholesky`` is :func:`cholesky`, and
    ``jax.scipy.linalg.cholesky`` and ``jax.scipy.linalg.cho_factor`` are
    versions of jax's with the same signatures and factors whose
    derivatives run blockchol; on exit -- also when the block or the
    decorated function raises -- jax's own functions are restored.

    The scipy-style functions read one triangle of `a` (the lower with
    ``lower=True``, else the upper), and their derivatives here are with
    respect to that triangle alone: zero for the other.  jax's own rule
    gives the triangle the factorization never reads a nonzero derivative
    (jax-ml/jax#40421); for symmetric perturbations of `a` -- any K built
    symmetrically from parameters -- the two agree.

    Warnings
    --------
    What counts is when a function is *traced*: jax caches traces, so a
    function jitted and run before the block keeps jax's rule inside it,
    and one first traced inside keeps blockchol's after.  The switch is
    process-wide (module attributes, a lock-protected count: nesting and
    overlapping activations across threads are fine), and references
    taken before it (``from jax.numpy.linalg import cholesky``) and jax's
    internal callers of its own Cholesky are not affected.

    Examples
    --------
    >>> import jax, jax.numpy as jnp, blockchol.jax as bj
    >>> k = jnp.eye(1024) * 2 + 0.5
    >>> f = lambda k: jnp.sum(jnp.log(jnp.diagonal(jnp.linalg.cholesky(k))))
    >>> with bj.accelerate():
    ...     print(jnp.linalg.cholesky is bj.cholesky)
    ...     g = jax.grad(f)(k)                  # through blockchol.chol_rev
    True
    >>> jnp.linalg.cholesky is bj.cholesky
    False
    >>> bool(jnp.allclose(g, jnp.linalg.inv(k) / 2, atol=1e-5))
    True
    >>> @bj.accelerate
    ... def factor(a):
    ...     return jax.scipy.linalg.cho_factor(a, lower=True)[0]
    >>> factor(jnp.eye(3) * 4.0).diagonal()
    Array([2., 2., 2.], dtype=float32)
    """
    if func is None:
        return _PATCHES.activation()
    if not callable(func):
        raise TypeError("accelerate() takes a function to decorate, or nothing; got %r" % (func,))
    return _PATCHES.activation()(func)
