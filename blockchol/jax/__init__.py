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
    from jax import lax
    from jax.core import ShapedArray
    from jax.extend.core import Primitive
    from jax.interpreters import ad, batching, mlir
except ImportError as error:     # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError("blockchol.jax needs jax, which could not be imported (%s); install it "
                      "with: pip install 'blockchol[jax]'" % error) from error

import blockchol as _blockchol
from blockchol import _patching

_jax_cholesky = jnp.linalg.cholesky      # jax's own, kept before accelerate() can replace it

__all__ = ["cholesky", "accelerate", "CROSSOVER", "CROSSOVER_SINGLE"]

# Below these matrix sizes N, cholesky() differentiates with jax's own rule
# instead of blockchol: a host call has a fixed cost (~0.15 ms for the
# callback, ~0.1 ms of blockchol's Python; and copying the N×N result into
# XLA, ~85 ms at N = 3000 on the VM below) that jax's own O(N³) ops beat on
# small matrices, and blockchol's default closed form does 7N³/3 flops to
# jax's 4N³.  Measured with `python -m bench.frameworks_jax --crossover`
# (jitted grad and jvp of sum(W ⊙ cholesky(K)), one matrix or a stack of 8,
# interleaved minima; AMD EPYC VM, 2 cores, jax 0.10.2, 2026-12-01, under
# load 2-6 from other jobs, so single ratios moved by ±30 %; three runs, one
# single-threaded; speed-up = jax's time / blockchol's).  float64: at N = 256
# jax's own rule was faster in all 8 cases (0.55-0.99×), at N = 384 mixed,
# at N = 512 blockchol faster in 7 of 8 (0.78-1.64×), at N = 1024 in 7 of 10
# (0.78-2.1×).  float32 (jax's default) trails: at N = 512 blockchol was
# slower for one matrix in all 4 cases (0.53-0.90×), at N = 768 mixed
# (0.28-1.56×), at N = 1024 faster or level in 8 of 10 (0.71-1.74×).
# complex64/complex128 follow their precision (not measured separately).
CROSSOVER = 512             # float64, complex128
CROSSOVER_SINGLE = 1024     # float32, complex64

_BLOCKCHOL_DTYPES = frozenset(np.dtype(t) for t in
                              (np.float32, np.float64, np.complex64, np.complex128))


# ---------------------------------------------------------------------------
# Host side: what the callbacks run.  Never raises for bad factors: a matrix
# of the stack whose factor diagonal is not real, positive and finite (jax's
# potrf returns a NaN factor for input that is not positive definite) gets a
# NaN result, as jax's own rule would give it.

def _split_bad(L):
    """``(L, bad)``: L with each bad factor replaced by I (copied only then), bad a mask or None."""
    d = np.diagonal(L, axis1=-2, axis2=-1)
    good = np.isfinite(d) & (d.real > 0)
    if np.iscomplexobj(d):
        good &= d.imag == 0
    good = good.all(axis=-1)
    if good.all():
        return L, None
    L = np.array(L)
    bad = ~good
    L[bad] = np.eye(L.shape[-1], dtype=L.dtype)
    return L, bad


def _host_fwd(L, X):
    """L̇ = blockchol.chol_fwd(L, K̇) for a stack (or one matrix), lower triangles read."""
    L, bad = _split_bad(np.asarray(L))
    out = _blockchol.chol_fwd(L, np.asarray(X), check_finite=False)
    if bad is not None:
        out[bad] = np.nan
    return out


def _host_rev(L, C):
    """The jax cotangent of K: conj(chol_rev(L, conj(C))), triangular (lower, Smith's G)."""
    L, bad = _split_bad(np.asarray(L))
    C = np.asarray(C)
    if np.iscomplexobj(C):
        out = _blockchol.chol_rev(L, np.conj(C), check_finite=False, overwrite_l_bar=True)
        np.conjugate(out, out=out)
    else:
        out = _blockchol.chol_rev(L, C, check_finite=False)
    if bad is not None:
        out[bad] = np.nan
    return out


# ---------------------------------------------------------------------------
# Two primitives, each linear in its second argument and the transpose of
# the other: fwd(L, X) = L Φ(L⁻¹ X_h L⁻ᴴ) with X_h the Hermitian matrix whose
# lower triangle is X's, and rev(L, C) its transpose under jax's pairing
# <a, b> = Re Σ a_ij b_ij.  Both take equal shapes (..., N, N).

_fwd_p = Primitive("blockchol_chol_fwd")
_rev_p = Primitive("blockchol_chol_rev")


def _abstract(L, X):
    if L.shape != X.shape or L.dtype != X.dtype:
        raise TypeError("blockchol primitives take two arrays of one shape and dtype, got "
                        "%s%s and %s%s" % (L.dtype, L.shape, X.dtype, X.shape))
    return ShapedArray(L.shape, L.dtype)


def _callback_lowering(host):
    # The primitives batch themselves (below), so the callbacks never see vmap.
    def lowered(L, X):
        dtype = np.dtype(L.dtype)
        if dtype.itemsize // (2 if dtype.kind == "c" else 1) != 8 or _x64_everywhere():
            return jax.pure_callback(host, jax.ShapeDtypeStruct(L.shape, dtype), L, X,
                                     vmap_method="sequential")
        # Unless x64 is on globally, 64-bit data travels as uint32 words,
        # both ways.  jax casts a callback's arguments and results to the
        # dtypes of the x64 setting of the thread the callback runs on -- one
        # of XLA's, for all but tiny computations.  Under `with
        # jax.enable_x64():` (a thread-local setting) float64 would silently
        # become float32 there on the way in and fail jax's dtype check on
        # the way out.  (Costs two bitcasts: ~5 ms at N = 2000.)
        shape = L.shape[:-1] + (L.shape[-1] * (dtype.itemsize // 4),)
        out = jax.pure_callback(lambda Lw, Xw: _to_words(host(_from_words(Lw, dtype),
                                                              _from_words(Xw, dtype))),
                                jax.ShapeDtypeStruct(shape, np.uint32),
                                _words(L), _words(X), vmap_method="sequential")
        return _unwords(out, dtype)
    return mlir.lower_fun(lowered, multiple_results=False)


def _x64_everywhere():
    """Whether x64 is on for every thread (jax's global setting), not just in a `with` block."""
    try:
        from jax._src import config
        return bool(config.enable_x64.get_global())
    except Exception:            # pragma: no cover - a jax without this internal: be safe
        return False


def _words(x):
    """In jax: (..., N, N) float64/complex128 → (..., N, N·k) uint32 with the same bytes."""
    shape = x.shape
    if jnp.iscomplexobj(x):
        x = jnp.stack([x.real, x.imag], axis=-1)
    return lax.bitcast_convert_type(x, np.uint32).reshape(shape[:-1] + (-1,))


def _unwords(w, dtype):
    """In jax: the inverse of _words."""
    n = w.shape[-2]
    if dtype.kind != "c":
        return lax.bitcast_convert_type(w.reshape(w.shape[:-1] + (n, 2)), dtype)
    parts = lax.bitcast_convert_type(w.reshape(w.shape[:-1] + (n, 2, 2)), np.float64)
    return lax.complex(parts[..., 0], parts[..., 1])


def _from_words(w, dtype):
    """On the host: uint32 words (..., N, N·k) → the (..., N, N) array they hold (a view)."""
    return np.ascontiguousarray(w).view(dtype)


def _to_words(a):
    """On the host: a (..., N, N) array → its data as uint32 words (..., N, N·k)."""
    return np.ascontiguousarray(a).view(np.uint32)


def _eager(host):
    def impl(L, X):
        return jnp.asarray(host(np.asarray(L), np.asarray(X)))
    return impl


def _batch_rule(prim):
    def rule(args, dims):
        size = next(a.shape[d] for a, d in zip(args, dims) if d is not None)
        moved = [jnp.broadcast_to(a, (size,) + a.shape) if d is None else jnp.moveaxis(a, d, 0)
                 for a, d in zip(args, dims)]
        return prim.bind(*moved), 0
    return rule


for _prim, _host in ((_fwd_p, _host_fwd), (_rev_p, _host_rev)):
    _prim.def_impl(_eager(_host))
    _prim.def_abstract_eval(_abstract)
    mlir.register_lowering(_prim, _callback_lowering(_host))
    batching.primitive_batchers[_prim] = _batch_rule(_prim)


def _fwd_transpose(ct, L, X):
    assert not ad.is_undefined_primal(L) and ad.is_undefined_primal(X)
    if type(ct) is ad.Zero:
        return None, ad.Zero(X.aval)
    return None, _rev_p.bind(L, ct)


def _rev_transpose(ct, L, C):
    assert not ad.is_undefined_primal(L) and ad.is_undefined_primal(C)
    if type(ct) is ad.Zero:
        return None, ad.Zero(C.aval)
    return None, _fwd_p.bind(L, ct)


ad.primitive_transposes[_fwd_p] = _fwd_transpose
ad.primitive_transposes[_rev_p] = _rev_transpose


# Their derivatives with respect to the factor, for second order, in jax ops.

def _H(x):
    return jnp.conj(jnp.swapaxes(x, -1, -2))


def _phi(x):
    """Lower triangle with the diagonal halved."""
    n = x.shape[-1]
    i = lax.broadcasted_iota(np.int32, (n, n), 0)
    j = lax.broadcasted_iota(np.int32, (n, n), 1)
    scale = jnp.where(i > j, 1.0, jnp.where(i == j, 0.5, 0.0)).astype(x.real.dtype)
    return x * scale


def _solve(L, b, *, left, adjoint=False):
    """L⁻¹ b, L⁻ᴴ b (left) or b L⁻¹, b L⁻ᴴ (right) for the lower triangular L."""
    return lax.linalg.triangular_solve(L, b, left_side=left, lower=True,
                                       transpose_a=adjoint, conjugate_a=adjoint)


def _mm(a, b):
    return jnp.matmul(a, b, precision=lax.Precision.HIGHEST)


def _fwd_jvp(primals, tangents):
    """d fwd(L, X) = fwd(L, dX) + dL M + L Φ(−(E X̃ + X̃ Eᴴ)).

    M = L⁻¹ fwd(L, X) = Φ(X̃) with X̃ = L⁻¹ X_h L⁻ᴴ = M + Mᴴ, and E = L⁻¹ dL.
    """
    L, X = primals
    dL, dX = tangents
    out = _fwd_p.bind(L, X)
    terms = []
    if type(dX) is not ad.Zero:
        terms.append(_fwd_p.bind(L, dX))
    if type(dL) is not ad.Zero:
        dL = jnp.tril(dL)
        M = _solve(L, out, left=True)            # Φ(L⁻¹ X_h L⁻ᴴ)
        Xt = M + _H(M)                           # L⁻¹ X_h L⁻ᴴ
        Y = _mm(_solve(L, dL, left=True), Xt)    # E X̃
        terms.append(_mm(dL, M) - _mm(L, _phi(Y + _H(Y))))
    if not terms:
        return out, ad.Zero.from_primal_value(out)
    return out, terms[0] if len(terms) == 1 else terms[0] + terms[1]


def _rev_jvp(primals, tangents):
    """d rev(L, C) = rev(L, dC) + conj Φ(δW), for G = Φ(W), W = L⁻ᴴ (P + Pᴴ) L⁻¹, P = Φ(Lᴴ tril C̄).

    In blockchol's convention (C̄ = conj C, G = conj rev(L, C)):
    δW = −(Z + Zᴴ) + L⁻ᴴ (δP + δPᴴ) L⁻¹ with Z = L⁻ᴴ dLᴴ W and δP = Φ(dLᴴ tril C̄).
    """
    L, C = primals
    dL, dC = tangents
    out = _rev_p.bind(L, C)
    terms = []
    if type(dC) is not ad.Zero:
        terms.append(_rev_p.bind(L, dC))
    if type(dL) is not ad.Zero:
        dL = jnp.tril(dL)
        G = jnp.conj(out)
        W = G + _H(G)
        Z = _solve(L, _mm(_H(dL), W), left=True, adjoint=True)
        dP = _phi(_mm(_H(dL), jnp.tril(jnp.conj(C))))
        V = _solve(L, _solve(L, dP + _H(dP), left=True, adjoint=True), left=False)
        terms.append(jnp.conj(_phi(V - Z - _H(Z))))
    if not terms:
        return out, ad.Zero.from_primal_value(out)
    return out, terms[0] if len(terms) == 1 else terms[0] + terms[1]


ad.primitive_jvps[_fwd_p] = _fwd_jvp
ad.primitive_jvps[_rev_p] = _rev_jvp


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
    return L, _fwd_p.bind(L, da)


def _hermitian_from_lower(a):
    """The Hermitian matrix with a's lower triangle (and the real part of its diagonal)."""
    low = jnp.tril(a, -1)
    d = jnp.diagonal(a, axis1=-2, axis2=-1).real.astype(a.dtype)
    return low + _H(low) + d[..., :, None] * jnp.eye(a.shape[-1], dtype=a.dtype)


def _use_blockchol(a):
    """Whether a's derivatives go to blockchol (size, dtype, backend), else to jax's own rule."""
    dtype = np.dtype(a.dtype)
    single = dtype in (np.dtype(np.float32), np.dtype(np.complex64))
    return (dtype in _BLOCKCHOL_DTYPES
            and a.shape[-1] >= (CROSSOVER_SINGLE if single else CROSSOVER)
            and jax.default_backend() == "cpu")


def _lower_factor(a, symmetrize_input, upper=False):
    """The factor of a (..., N, N) inexact jax array, with the right derivative rule."""
    if _use_blockchol(a):
        if symmetrize_input:
            a = (a + _H(a)) / 2
        L = _cholesky_lower_read(a)
        return _H(L) if upper else L
    # jax's own function (the original, also under accelerate()), so that the
    # program is exactly jax's.  Without symmetrization jax's rule
    # differentiates as if the whole input were read (jax-ml/jax#40421);
    # feeding it the Hermitian matrix built from the lower triangle gives the
    # same factor, bit for bit, and the derivative of what is computed.
    if not symmetrize_input:
        a = _hermitian_from_lower(a)
    return _jax_cholesky(a, upper=upper, symmetrize_input=True)


def _as_inexact(a, name):
    a = jnp.asarray(a)
    if not jnp.issubdtype(a.dtype, jnp.inexact):
        a = a.astype(jnp.promote_types(a.dtype, jnp.zeros((), float).dtype))
    if a.ndim < 2 or a.shape[-1] != a.shape[-2]:
        raise ValueError("%s: expected a (..., N, N) array, got shape %s" % (name, a.shape))
    return a


def cholesky(a, *, upper=False, symmetrize_input=True):
    """Cholesky factor of a Hermitian positive definite matrix, differentiated by blockchol.

    The contract of :func:`jax.numpy.linalg.cholesky`: the factorization is
    jax's own (``lax.linalg.cholesky``); the derivatives -- ``jvp``,
    ``grad``/``vjp`` and any order and composition of them, under ``jit``
    and ``vmap`` -- run :func:`blockchol.chol_fwd` and
    :func:`blockchol.chol_rev` on the host.  Matrices smaller than
    :data:`CROSSOVER` (N = 512 in double precision) or
    :data:`CROSSOVER_SINGLE` (N = 1024 in single), and everything when jax's
    default backend is not the CPU (every derivative would cross to the
    host and back), use jax's own derivative rule, which is faster there.

    Parameters
    ----------
    a : (..., N, N) array_like
        Hermitian (symmetric if real) positive definite matrices.  Integer
        and boolean input is promoted to the default floating type.
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
        that is not positive definite gives a factor full of NaN, and NaN
        derivatives, as jax's own; nothing raises.

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
    at :data:`CROSSOVER_SINGLE`) blockchol computes it, on the host, under
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
    a = _as_inexact(a, "cholesky")
    return _lower_factor(a, symmetrize_input, upper)


# ---------------------------------------------------------------------------
# Drop-ins for jax.scipy.linalg, and accelerate().

def _scipy_cholesky(a, lower=False, overwrite_a=False, check_finite=True):
    """:func:`jax.scipy.linalg.cholesky` with blockchol's derivatives (reads one triangle)."""
    del overwrite_a, check_finite
    a = _as_inexact(a, "cholesky")
    L = _lower_factor(a if lower else _H(a), symmetrize_input=False)
    return L if lower else _H(L)


def _scipy_cho_factor(a, lower=False, overwrite_a=False, check_finite=True):
    """:func:`jax.scipy.linalg.cho_factor` with blockchol's derivatives."""
    return _scipy_cholesky(a, lower=lower), lower


def _patches():
    import jax.scipy.linalg as jsl
    return ((jnp.linalg, "cholesky", cholesky), (jsl, "cholesky", _scipy_cholesky),
            (jsl, "cho_factor", _scipy_cho_factor))


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
