"""Two jax primitives that run blockchol on the host, with their AD and batching rules.

``fwd_p(L, X) = L Φ(L⁻¹ X_h L⁻ᴴ)``, X_h the Hermitian matrix whose lower
triangle is X's, and ``rev_p(L, C)``, its transpose under jax's pairing
⟨a, b⟩ = Re Σ a_ij b_ij: both linear in their second argument, each the
transpose of the other, both taking equal shapes (..., N, N) and returning
a lower triangular result.  They lower to :func:`jax.pure_callback` calls
of :mod:`._host`, batch themselves (a vmapped stack reaches blockchol as
one stack, in one call), and differentiate with respect to L in jax
operations (second order).

Where blockchol's result is not finite (a factor that is not one, NaN or
infinite operands, overflow), the primitive returns jax's own rule's
result instead, for that matrix of the stack: values and NaN pattern are
then jax's exactly (:func:`guarded`).
"""

import numpy as np

import jax
import jax.numpy as jnp
from jax import lax
from jax.core import ShapedArray
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

from . import _host
from ._algebra import H, cotangent, mm, phi, solve, tangent, tril

__all__ = ["fwd_p", "rev_p"]

fwd_p = Primitive("blockchol_chol_fwd")
rev_p = Primitive("blockchol_chol_rev")


def _abstract(L, X):
    if L.shape != X.shape or L.dtype != X.dtype:
        raise TypeError("blockchol primitives take two arrays of one shape and dtype, got "
                        "%s%s and %s%s" % (L.dtype, L.shape, X.dtype, X.shape))
    return ShapedArray(L.shape, L.dtype)


def guarded(out, L, X, rule):
    """blockchol's ``out``, with each matrix that is not finite replaced by ``rule(L, X)``'s.

    ``rule`` is jax's own formula (:func:`._algebra.tangent` or
    :func:`._algebra.cotangent`), computed only when some matrix needs it:
    under a trace by ``lax.cond`` on the whole stack (the primitives batch
    themselves, so the predicate is one scalar and the cond stays a branch),
    eagerly by a Python test.
    """
    ok = jnp.isfinite(out).all(axis=(-2, -1))

    def replaced():
        return jnp.where(ok[..., None, None], out, rule(L, X))

    if isinstance(ok, jax.core.Tracer):
        return lax.cond(ok.all(), lambda: out, replaced)
    return out if bool(ok.all()) else replaced()


def _callback(host, L, X):
    """``host(L, X)`` on the host, inside a jax computation."""
    dtype = np.dtype(L.dtype)
    if dtype.itemsize // (2 if dtype.kind == "c" else 1) != 8 or _x64_everywhere():
        return jax.pure_callback(host, jax.ShapeDtypeStruct(L.shape, dtype), L, X,
                                 vmap_method="sequential")
    # Unless x64 is on globally, 64-bit data travels as uint32 words, both
    # ways.  jax casts a callback's arguments and results to the dtypes of
    # the x64 setting of the thread the callback runs on -- one of XLA's, for
    # all but tiny computations.  Under `with jax.enable_x64():` (a
    # thread-local setting) float64 would silently become float32 there on
    # the way in and fail jax's dtype check on the way out.  (Costs two
    # bitcasts, linear in the data.)
    shape = L.shape[:-1] + (L.shape[-1] * (dtype.itemsize // 4),)
    out = jax.pure_callback(lambda Lw, Xw: _to_words(host(_from_words(Lw, dtype),
                                                          _from_words(Xw, dtype))),
                            jax.ShapeDtypeStruct(shape, np.uint32),
                            _words(L), _words(X), vmap_method="sequential")
    return _unwords(out, dtype)


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


def _lowering(host, rule):
    # The primitives batch themselves (below), so the callbacks never see vmap.
    def lowered(L, X):
        return guarded(_callback(host, L, X), L, X, rule)
    return mlir.lower_fun(lowered, multiple_results=False)


def _eager(host, rule):
    def impl(L, X):
        return guarded(jnp.asarray(host(np.asarray(L), np.asarray(X))), L, X, rule)
    return impl


def _batch_rule(prim):
    def rule(args, dims):
        size = next(a.shape[d] for a, d in zip(args, dims) if d is not None)
        moved = [jnp.broadcast_to(a, (size,) + a.shape) if d is None else jnp.moveaxis(a, d, 0)
                 for a, d in zip(args, dims)]
        return prim.bind(*moved), 0
    return rule


for _prim, _host_fn, _rule in ((fwd_p, _host.fwd, tangent), (rev_p, _host.rev, cotangent)):
    _prim.def_impl(_eager(_host_fn, _rule))
    _prim.def_abstract_eval(_abstract)
    mlir.register_lowering(_prim, _lowering(_host_fn, _rule))
    batching.primitive_batchers[_prim] = _batch_rule(_prim)


def _transpose(other):
    def rule(ct, L, X):
        assert not ad.is_undefined_primal(L) and ad.is_undefined_primal(X)
        if type(ct) is ad.Zero:
            return None, ad.Zero(X.aval)
        return None, other.bind(L, ct)
    return rule


ad.primitive_transposes[fwd_p] = _transpose(rev_p)
ad.primitive_transposes[rev_p] = _transpose(fwd_p)


# Their derivatives with respect to the factor, for second order, in jax ops.

def _jvp(p, l_term):
    """The jvp rule of p(L, X), linear in X: p(L, dX) + l_term(L, X, p(L, X), tril(dL))."""
    def rule(primals, tangents):
        L, X = primals
        dL, dX = tangents
        out = p.bind(L, X)
        terms = []
        if type(dX) is not ad.Zero:
            terms.append(p.bind(L, dX))
        if type(dL) is not ad.Zero:
            terms.append(l_term(L, X, out, tril(dL)))
        if not terms:
            return out, ad.Zero.from_primal_value(out)
        return out, terms[0] if len(terms) == 1 else terms[0] + terms[1]
    return rule


def _fwd_l_term(L, X, out, dL):
    """d fwd(L, X) = fwd(L, dX) + dL M + L Φ(−(E X̃ + X̃ Eᴴ)): the last two terms.

    M = L⁻¹ fwd(L, X) = Φ(X̃) with X̃ = L⁻¹ X_h L⁻ᴴ = M + Mᴴ, and E = L⁻¹ dL.
    """
    M = solve(L, out, left=True)            # Φ(L⁻¹ X_h L⁻ᴴ)
    Xt = M + H(M)                           # L⁻¹ X_h L⁻ᴴ
    Y = mm(solve(L, dL, left=True), Xt)     # E X̃
    return mm(dL, M) - mm(L, phi(Y + H(Y)))


def _rev_l_term(L, C, out, dL):
    """d rev(L, C) = rev(L, dC) + conj Φ(δW): the last term.

    G = Φ(W), W = L⁻ᴴ (P + Pᴴ) L⁻¹, P = Φ(Lᴴ tril C̄).  In blockchol's
    convention (C̄ = conj C, G = conj rev(L, C)): δW = −(Z + Zᴴ) +
    L⁻ᴴ (δP + δPᴴ) L⁻¹ with Z = L⁻ᴴ dLᴴ W and δP = Φ(dLᴴ tril C̄).
    """
    G = jnp.conj(out)
    W = G + H(G)
    Z = solve(L, mm(H(dL), W), left=True, adjoint=True)
    dP = phi(mm(H(dL), tril(jnp.conj(C))))
    V = solve(L, solve(L, dP + H(dP), left=True, adjoint=True), left=False)
    return jnp.conj(phi(V - Z - H(Z)))


ad.primitive_jvps[fwd_p] = _jvp(fwd_p, _fwd_l_term)
ad.primitive_jvps[rev_p] = _jvp(rev_p, _rev_l_term)
