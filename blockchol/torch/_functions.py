"""The autograd.Functions of blockchol.torch: the factorization, the solve and their derivatives.

:class:`Cholesky`, :class:`CholeskyEx` and :class:`CholeskySolve` run
torch's own operator forward and attach blockchol's derivative rules.
Those rules are built from three linear operators of the factor, each an
autograd.Function of its own whose rules are again written with the
operators and torch ops (``_formulas``), so that every order composes:

* :class:`CholRev`, R(L, M): ``blockchol.chol_rev(L, M, symmetric=True)``;
* :class:`CholFwd`, F(L, K): ``blockchol.chol_fwd(L, K)``, K Hermitian;
* :class:`CholSkew`, F(L, Q) for anti-Hermitian Q (torch's jvp uses a
  non-Hermitian tangent whole).

R and F are linear in their second argument and adjoint to each other,
Re⟨M, F(L, K)⟩ = Re⟨R(L, M), K⟩; ``_formulas`` has the derivatives with
respect to L.
"""

import functools

import torch

from . import _formulas as fm
from ._numpy import fwd_numpy, rev_numpy, skew_numpy

# torch's own operators (if this module is imported again while accelerate() is
# active, torch's attributes are blockchol's: take the originals they carry).
_torch_cholesky = getattr(torch.linalg.cholesky, "_blockchol_original", torch.linalg.cholesky)
_torch_cholesky_ex = getattr(torch.linalg.cholesky_ex, "_blockchol_original",
                             torch.linalg.cholesky_ex)
_torch_cholesky_solve = getattr(torch.cholesky_solve, "_blockchol_original", torch.cholesky_solve)


# --- small helpers ----------------------------------------------------------------------------

def _sum_to(x, shape):
    return x if x is None or x.shape == shape else x.sum_to_size(shape)


def _graph_wanted(*tensors):
    """Whether a derivative of what we compute may be asked for (create_graph, nesting)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _known_false(predicate):
    """predicate(), or False where its value cannot be read (inside vmap)."""
    try:
        return bool(predicate())
    except RuntimeError:
        return False


# --- vmap: batch dimensions to the front, one call for the stack -------------------------

def _front(info, in_dims, args):
    """Move every batched tensor's vmapped dimension to the front, so that all broadcast."""
    rank = max(a.dim() - (d is not None) for a, d in zip(args, in_dims)
               if isinstance(a, torch.Tensor))
    out = []
    for a, d in zip(args, in_dims):
        if isinstance(a, torch.Tensor) and d is not None:
            a = a.movedim(d, 0)
            a = a.reshape(a.shape[:1] + (1,) * (rank - a.dim() + 1) + a.shape[1:])
        out.append(a)
    return out


# --- forward-mode rules under nested transforms ------------------------------------------
#
# torch runs an autograd.Function's jvp rule with forward-mode AD switched
# off, so that the rule's own ops are not differentiated at its level.  Under
# nested torch.func.jvp (a jvp of a jvp, jacfwd of jvp) the rule's inputs are
# dual tensors of the enclosing levels, and with forward AD off their
# tangents would silently be lost in every op the rule makes.  So a rule
# running on a torch.func.jvp level steps down from that level and turns
# forward AD back on, exactly as torch.func does around a Function's forward
# (torch/_functorch/autograd_function.py): the enclosing levels see the
# rule's ops, its own level does not.

try:
    from torch._C._functorch import _unwrap_for_grad, _wrap_for_grad
    from torch._C._functorch import peek_interpreter_stack as _peek_interpreter
    from torch._functorch.pyfunctorch import JvpInterpreter as _JvpInterpreter
    from torch._functorch.pyfunctorch import coerce_cinterpreter as _coerce_interpreter
    from torch.autograd.forward_ad import _set_fwd_grad_enabled
except ImportError:                              # pragma: no cover - other torch versions
    _peek_interpreter = None


class _SavedView:
    """ctx with other saved tensors (the rule's level unwrapped)."""

    def __init__(self, ctx, saved):
        self._ctx = ctx
        self.saved_tensors = saved

    def __getattr__(self, name):
        return getattr(self._ctx, name)


def _jvp_rule(rule):
    @functools.wraps(rule)
    def run(ctx, *tangents):
        top = _peek_interpreter() if _peek_interpreter is not None else None
        interpreter = _coerce_interpreter(top) if top is not None else None
        if not isinstance(interpreter, _JvpInterpreter):
            return rule(ctx, *tangents)
        level = interpreter.level()

        def unwrap(t):
            return _unwrap_for_grad(t, level) if isinstance(t, torch.Tensor) else t

        saved = tuple(unwrap(t) for t in ctx.saved_tensors)
        tangents = tuple(unwrap(t) for t in tangents)
        with _set_fwd_grad_enabled(True), interpreter.lower():
            out = rule(_SavedView(ctx, saved), *tangents)
        if isinstance(out, tuple):
            return tuple(t if t is None else _wrap_for_grad(t, level) for t in out)
        return _wrap_for_grad(out, level)
    return staticmethod(run)


# --- the derivative operators -----------------------------------------------------------
#
# Their reverse-mode rules use the adjointness: the gradient with respect to the
# second argument is the other operator, the one with respect to L is
# fm.l_gradient.  Their forward-mode rules: R's from differentiating its formula,
#
#     dR = R(L, dM + L⁻ᴴ dLᴴ M) − (W + Wᴴ),  W = R(L, M) dL L⁻¹,
#
# F's from fm.l_tangent.

class CholRev(torch.autograd.Function):
    """S = R(L, M): blockchol.chol_rev(L, M, symmetric=True)."""

    @staticmethod
    def forward(L, M, upper, skip_zero):
        return rev_numpy(L, M, upper, skip_zero)

    @staticmethod
    def setup_context(ctx, inputs, output):
        L, M, ctx.upper, _ = inputs
        ctx.save_for_backward(L, M, output)
        ctx.save_for_forward(L, M, output)

    @staticmethod
    def backward(ctx, gS):
        L, M, S = ctx.saved_tensors
        upper = ctx.upper
        H = fm.hermitian_part(gS)
        Ld = CholFwd.apply(L, H, upper)             # = ∂f/∂M, in M's form
        gL = None
        if ctx.needs_input_grad[0]:
            gL = fm.low(fm.l_gradient(fm.low(L, upper), fm.low(M, upper), fm.low(Ld, upper),
                                      2 * (S @ H)), upper)
        return (_sum_to(gL, L.shape), _sum_to(Ld, M.shape) if ctx.needs_input_grad[1] else None,
                None, None)

    @_jvp_rule
    def jvp(ctx, dL, dM, *_):
        L, M, S = ctx.saved_tensors
        upper = ctx.upper
        Ll = fm.low(L, upper)
        X = dM if dM is not None else torch.zeros_like(M)
        out = 0
        if dL is not None:
            dLl = fm.low(dL, upper).tril()
            X = X + fm.low(fm.lh_solve(Ll, dLl.mH @ fm.low(M, upper).tril()), upper)
            W = fm.solve_l(Ll, S @ dLl)
            out = -(W + W.mH)
        return CholRev.apply(L, X, upper, False) + out

    @staticmethod
    def vmap(info, in_dims, L, M, upper, skip_zero):
        return CholRev.apply(*_front(info, in_dims, (L, M, upper, skip_zero))), 0


class CholFwd(torch.autograd.Function):
    """L̇ = F(L, K): blockchol.chol_fwd(L, K), K's read triangle taken Hermitian."""

    @staticmethod
    def forward(L, K, upper):
        return fwd_numpy(L, K, upper)

    @staticmethod
    def setup_context(ctx, inputs, output):
        L, K, ctx.upper = inputs
        ctx.save_for_backward(L, K, output)
        ctx.save_for_forward(L, K, output)

    @staticmethod
    def backward(ctx, gLd):
        L, K, Ld = ctx.saved_tensors
        upper = ctx.upper
        S = CholRev.apply(L, gLd, upper, False)
        gL = gK = None
        if ctx.needs_input_grad[0]:
            gL = fm.low(fm.l_gradient(fm.low(L, upper), fm.low(gLd, upper), fm.low(Ld, upper),
                                      2 * (S @ fm.hermitian_from(K, upper))), upper)
        if ctx.needs_input_grad[1]:
            gK = fm.triangular_from(S, upper)
        return _sum_to(gL, L.shape), _sum_to(gK, K.shape), None

    @_jvp_rule
    def jvp(ctx, dL, dK, _):
        L, K, Ld = ctx.saved_tensors
        upper = ctx.upper
        Y = fm.hermitian_from(dK, upper) if dK is not None else torch.zeros_like(K)
        out = 0
        if dL is not None:
            Ll, dLl = fm.low(L, upper), fm.low(dL, upper).tril()
            Z, out = fm.l_tangent(Ll, dLl, fm.hermitian_from(K, upper), fm.low(Ld, upper), 1)
            Y, out = Y - Z, fm.low(out, upper)
        return CholFwd.apply(L, Y, upper) + out

    @staticmethod
    def vmap(info, in_dims, L, K, upper):
        return CholFwd.apply(*_front(info, in_dims, (L, K, upper))), 0


class CholSkew(torch.autograd.Function):
    """T = F(L, Q) for anti-Hermitian Q: torch's jvp uses the whole tangent.

    Zero (and free) for a Hermitian tangent; otherwise -i chol_fwd(L, i Q).
    The gradient with respect to Q is the adjoint R̃(L, gT) in torch ops: this
    is torch's behaviour for tangents no Hermitian-valued function produces.
    """

    @staticmethod
    def forward(L, Q, upper):
        return skew_numpy(L, Q, upper)

    @staticmethod
    def setup_context(ctx, inputs, output):
        L, Q, ctx.upper = inputs
        ctx.save_for_backward(L, Q, output)
        ctx.save_for_forward(L, Q, output)

    @staticmethod
    def backward(ctx, gT):
        L, Q, T = ctx.saved_tensors
        upper = ctx.upper
        Ll, g = fm.low(L, upper), fm.low(gT, upper)
        R = fm.rev_full(Ll, g)
        gL = None
        if ctx.needs_input_grad[0]:
            gL = fm.low(fm.l_gradient(Ll, g, fm.low(T, upper), R @ Q.mH + R.mH @ Q), upper)
        return _sum_to(gL, L.shape), _sum_to(R, Q.shape) if ctx.needs_input_grad[1] else None, None

    @_jvp_rule
    def jvp(ctx, dL, dQ, _):
        L, Q, T = ctx.saved_tensors
        upper = ctx.upper
        Y = dQ if dQ is not None else torch.zeros_like(Q)
        out = 0
        if dL is not None:
            Ll, dLl = fm.low(L, upper), fm.low(dL, upper).tril()
            Z, out = fm.l_tangent(Ll, dLl, Q, fm.low(T, upper), -1)
            Y, out = Y - Z, fm.low(out, upper)
        return CholSkew.apply(L, Y, upper) + out

    @staticmethod
    def vmap(info, in_dims, L, Q, upper):
        return CholSkew.apply(*_front(info, in_dims, (L, Q, upper))), 0


# --- the Cholesky factorization ---------------------------------------------------------

def _negligible(x, scale, n):
    """Per matrix (the last two dimensions of x, the last of scale): max |x| is at the
    level of rounding errors in quantities of size max |scale| (4 N eps of it)."""
    if x.shape[-2] * x.shape[-1] == 0:              # empty matrices: nothing to lose
        return torch.ones(x.shape[:-2], dtype=torch.bool, device=x.device)
    eps = torch.finfo(x.dtype).eps
    return x.abs().amax(dim=(-2, -1)) <= 4 * n * eps * scale.abs().amax(dim=(-2, -1))


def _cholesky_vjp(L, gL, upper):
    """torch's gradient of cholesky: S = chol_rev(L, gL, symmetric=True), plus for complex
    factors torch's anti-Hermitian part ½ i L⁻ᴴ diag(Im diag(Lᴴ gL)) L⁻¹ = i R(L, D),
    D = diag(Im diag(Lᴴ gL) / diag(L)).

    Where that part is only rounding noise -- Im diag(Lᴴ gL) within the rounding
    error of computing diag(Lᴴ gL) -- it is left out (the second chol_rev call is
    skipped), unless a graph of the backward is being built, which keeps the
    exact rule."""
    S = CholRev.apply(L, gL, upper, False)
    if L.is_complex():
        Ll, gl = fm.low(L, upper), fm.low(gL, upper)
        d = (Ll.conj() * gl).sum(dim=-2).imag
        if not _graph_wanted(L, gL):
            bound = (Ll.abs() * gl.abs()).sum(dim=-2)
            small = _negligible(d[..., None], bound[..., None], L.shape[-1])
            if _known_false(lambda: small.all()):
                return S
            d = torch.where(small[..., None], 0, d)
        D = torch.diag_embed((d / Ll.diagonal(dim1=-2, dim2=-1).real).to(L.dtype))
        S = S + 1j * CholRev.apply(L, D, upper, True)
    return S


def _cholesky_jvp(L, dA, upper):
    """torch's tangent of cholesky, L Φ(L⁻¹ Ȧ L⁻ᴴ): chol_fwd for the Hermitian part of
    Ȧ, plus the anti-Hermitian part's share.

    A tangent that is Hermitian up to rounding (X Xᴴ computed by a matrix product
    is not exactly symmetric) takes chol_fwd alone: the anti-Hermitian part's
    share would cost a second, complex, chol_fwd for a change at the rounding
    level.  Unless a graph of the tangent is being built, which keeps the exact
    rule."""
    if _graph_wanted(L, dA):
        return (CholFwd.apply(L, fm.hermitian_part(dA), upper)
                + CholSkew.apply(L, fm.skew_part(dA), upper))
    Q = fm.skew_part(dA)
    small = _negligible(Q, dA, dA.shape[-1])
    if _known_false(lambda: small.all()):
        return CholFwd.apply(L, dA, upper)
    Q = torch.where(small[..., None, None], 0, Q)     # per matrix, also inside vmap
    return CholFwd.apply(L, fm.hermitian_part(dA), upper) + CholSkew.apply(L, Q, upper)


class Cholesky(torch.autograd.Function):
    @staticmethod
    def forward(A, upper):
        return _torch_cholesky(A, upper=upper)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.upper = inputs[1]
        ctx.save_for_backward(output)
        ctx.save_for_forward(output)

    @staticmethod
    def backward(ctx, gL):
        L, = ctx.saved_tensors
        return _cholesky_vjp(L, gL, ctx.upper), None

    @_jvp_rule
    def jvp(ctx, dA, _):
        L, = ctx.saved_tensors
        return _cholesky_jvp(L, dA, ctx.upper)

    @staticmethod
    def vmap(info, in_dims, A, upper):
        return Cholesky.apply(A.movedim(in_dims[0], 0), upper), 0


class CholeskyEx(torch.autograd.Function):
    @staticmethod
    def forward(A, upper, check_errors):
        return _torch_cholesky_ex(A, upper=upper, check_errors=check_errors)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.upper = inputs[1]
        ctx.mark_non_differentiable(output[1])
        ctx.save_for_backward(output[0])
        ctx.save_for_forward(output[0])

    @staticmethod
    def backward(ctx, gL, _):
        L, = ctx.saved_tensors
        return _cholesky_vjp(L, gL, ctx.upper), None, None

    @_jvp_rule
    def jvp(ctx, dA, *_):
        L, = ctx.saved_tensors
        return _cholesky_jvp(L, dA, ctx.upper), None

    @staticmethod
    def vmap(info, in_dims, A, upper, check_errors):
        return CholeskyEx.apply(A.movedim(in_dims[0], 0), upper, check_errors), (0, 0)


# --- cholesky_solve ---------------------------------------------------------------------

def _minus_gram_times(G, X, L, upper):
    """−(G Xᴴ + X Gᴴ) L for lower L, −L (G Xᴴ + X Gᴴ) for upper, in the cheaper order.

    For k right-hand sides with 2k < N this is one product of an N × 2k and
    a 2k × N matrix, [G X] [−Xᴴ L; −Gᴴ L] (the sign on the small factor): 8 N² k
    flops and a single pass writing the N × N result, which is what costs at
    large N (torch's own forms the N × N matrix G Xᴴ + X Gᴴ first, 2 N³ flops).
    """
    n, k = X.shape[-2], X.shape[-1]
    if 2 * k < n:
        if upper:
            return torch.cat((L @ G, L @ X), -1) @ torch.cat((-X.mH, -G.mH), -2)
        return torch.cat((G, X), -1) @ torch.cat((-(X.mH @ L), -(G.mH @ L)), -2)
    C = G @ X.mH
    C = C + C.mH
    return -(L @ C) if upper else -(C @ L)


class CholeskySolve(torch.autograd.Function):
    """X = (L Lᴴ)⁻¹ B (or (Uᴴ U)⁻¹ B): torch's forward, torch's gradients in O(N² k)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(B, L, upper):
        return _torch_cholesky_solve(B, L, upper=upper)

    @staticmethod
    def setup_context(ctx, inputs, output):
        B, L, ctx.upper = inputs
        ctx.shapes = (B.shape, L.shape)
        ctx.save_for_backward(L, output)
        ctx.save_for_forward(L, output)

    @staticmethod
    def backward(ctx, gX):
        L, X = ctx.saved_tensors
        gB = CholeskySolve.apply(gX, L, ctx.upper)
        gL = _minus_gram_times(gB, X, L, ctx.upper) if ctx.needs_input_grad[1] else None
        return (_sum_to(gB, ctx.shapes[0]) if ctx.needs_input_grad[0] else None,
                _sum_to(gL, ctx.shapes[1]), None)

    @_jvp_rule
    def jvp(ctx, dB, dL, _):
        L, X = ctx.saved_tensors
        rhs = dB if dB is not None else torch.zeros_like(X)
        if dL is not None:           # dA X with dA = dL Lᴴ + L dLᴴ (dUᴴ U + Uᴴ dU)
            if ctx.upper:
                rhs = rhs - (dL.mH @ (L @ X) + L.mH @ (dL @ X))
            else:
                rhs = rhs - (dL @ (L.mH @ X) + L @ (dL.mH @ X))
        return CholeskySolve.apply(rhs, L, ctx.upper)

