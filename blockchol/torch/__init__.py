"""torch.linalg.cholesky with blockchol's derivatives, and a switch that installs it.

:func:`cholesky` and :func:`cholesky_ex` have the contracts of
``torch.linalg.cholesky`` and ``torch.linalg.cholesky_ex``: the factorization
is torch's own, and only the triangle torch reads is read.  What changes is
the derivative.  Reverse mode goes through :func:`blockchol.chol_rev`, forward
mode through :func:`blockchol.chol_fwd`, both on the factor torch computed, and
both return exactly what torch's own rules return (to rounding):

* backward: for K = L Lᴴ (``upper=False``) or K = Uᴴ U (``upper=True``) and a
  real loss f, the gradient ``A.grad`` satisfies df = Re Σ_ij conj(Ā_ij) dA_ij.
  For real A it is the symmetric S of ``chol_rev(..., symmetric=True)``; for
  complex A, torch's gradient is S plus an anti-Hermitian part (which no
  Hermitian perturbation of A can see), and it is reproduced as well.
* forward mode (``torch.func.jvp``, ``torch.autograd.forward_ad``): the
  tangent of the factor, L̇ = L Φ(L⁻¹ Ȧ L⁻ᴴ) with Φ the lower triangle with
  the diagonal halved.  For a Hermitian tangent Ȧ this is ``chol_fwd``; torch
  also accepts a non-Hermitian Ȧ and uses all of it, which is reproduced too.

Higher orders (``create_graph=True``, ``torch.autograd.gradgradcheck``,
``torch.func.hessian``) and the ``torch.func`` transforms (``grad``, ``jvp``,
``vjp``, ``vmap``, ``jacrev``, ``jacfwd``) compose; under ``vmap`` a batch goes
to blockchol as one stack.  :func:`cholesky_solve` is ``torch.cholesky_solve``
with a backward in O(N²k) for k right-hand sides instead of torch's O(N³).

Inputs that blockchol does not serve go to torch's own operator, with torch's
results and errors: devices other than the CPU, dtypes other than float32,
float64, complex64 and complex128, tensor subclasses and other objects with
``__torch_function__`` (torch function modes other than a default device
likewise), ``out=``, code being compiled by ``torch.compile``, and matrices
smaller than the measured crossover ``CROSSOVER_N[dtype name]`` (N = 1024 in float64),
where torch's own rules are faster.

:func:`accelerate` installs the three functions into ``torch.linalg`` and
``torch`` for the duration of a ``with`` block (or a decorated call), so that
code written against torch (GPyTorch, BoTorch, Pyro) gets the fast
derivatives without edits.

Examples
--------
>>> import torch, blockchol.torch as bt
>>> X = torch.randn(1100, 1100, dtype=torch.float64)
>>> A = (X @ X.mT / 1100 + torch.eye(1100, dtype=torch.float64)).requires_grad_()
>>> L = bt.cholesky(A)                       # torch's factor
>>> torch.equal(L, torch.linalg.cholesky(A))
True
>>> L.diagonal().log().sum().backward()      # ½ log det A: the gradient is ½ A⁻¹
>>> torch.allclose(A.grad, torch.linalg.inv(A.detach()) / 2)
True
"""

try:
    import torch
except ImportError as error:        # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError("blockchol.torch needs PyTorch, which is not installed: "
                      "pip install 'blockchol[torch]'") from error

import functools

import numpy as np

import blockchol
from blockchol import _patching
from blockchol.core import thresholds as _thresholds

__all__ = ["cholesky", "cholesky_ex", "cholesky_solve", "accelerate", "CROSSOVER_N",
           "SOLVE_CROSSOVER_N", "SINGLE_THREAD_N"]

# The crossovers and the thread switch, from blockchol's table of thresholds
# (module globals, read at each call, so that they can be lowered); why each
# has its value is in notes.md, section "Frameworks".
#: Below these orders (by dtype name, ``CROSSOVER_N["float64"]``) a matrix, or each
#: matrix of a stack, goes to torch's own derivative rules, which are faster there.
CROSSOVER_N = _thresholds.TORCH_CROSSOVER_N
#: cholesky_solve: from this order its O(N² k) backward beats torch's O(N³) one.
SOLVE_CROSSOVER_N = _thresholds.TORCH_SOLVE_CROSSOVER_N
#: Below this order blockchol runs single-threaded: handing the cores between
#: torch's thread pool and the BLAS's costs more than a second thread gains.
SINGLE_THREAD_N = _thresholds.TORCH_SINGLE_THREAD_N

_torch_cholesky = torch.linalg.cholesky
_torch_cholesky_ex = torch.linalg.cholesky_ex
_torch_cholesky_solve = torch.cholesky_solve
# If this module is re-imported while accelerate() is active, find torch's own.
_torch_cholesky = getattr(_torch_cholesky, "_blockchol_original", _torch_cholesky)
_torch_cholesky_ex = getattr(_torch_cholesky_ex, "_blockchol_original", _torch_cholesky_ex)
_torch_cholesky_solve = getattr(_torch_cholesky_solve, "_blockchol_original", _torch_cholesky_solve)

#: The dtypes blockchol serves, with their names (the crossovers' keys).
_DTYPE_NAMES = {torch.float32: "float32", torch.float64: "float64", torch.complex64: "complex64",
                torch.complex128: "complex128"}
_PLAIN_TYPES = (torch.Tensor, torch.nn.Parameter)


# --- which inputs blockchol serves ------------------------------------------------------

def _mode_allows():
    """No torch function mode is active, or only default-device contexts are."""
    try:
        from torch.utils._device import DeviceContext
        stack = torch.overrides._get_current_function_mode_stack()
    except (ImportError, AttributeError):        # pragma: no cover - other torch versions
        return False
    return all(isinstance(mode, DeviceContext) for mode in stack)


def _served(*tensors):
    """Whether these operands go through blockchol's path (else torch's own operator)."""
    for t in tensors:
        if (type(t) not in _PLAIN_TYPES or t.layout != torch.strided
                or t.device.type != "cpu" or t.dtype not in _DTYPE_NAMES):
            return False
    if torch.overrides.has_torch_function(tensors) and not _mode_allows():
        return False
    return not torch.compiler.is_compiling()


def _large_enough(A):
    if A.dim() < 2 or A.shape[-2] != A.shape[-1]:
        return False                             # torch's own reports the error
    return A.shape[-1] >= CROSSOVER_N[_DTYPE_NAMES[A.dtype]]


# --- small torch helpers, lower form --------------------------------------------------
#
# The derivative rules below are written once, for a lower factor L (K = L Lᴴ).
# An upper factor U (K = Uᴴ U) is the lower factor Uᴴ: a cotangent or tangent
# of U is the conjugate transpose of L's, and Hermitian quantities (K, S) are
# the same in both forms.

def _low(X, upper):
    return X.mH if upper else X


def _phi(X):
    """Φ(X): the lower triangle of X with its diagonal halved."""
    return X.tril() - 0.5 * torch.diag_embed(X.diagonal(dim1=-2, dim2=-1))


def _l_solve(L, X):          # L⁻¹ X
    return torch.linalg.solve_triangular(L, X, upper=False)


def _lh_solve(L, X):         # L⁻ᴴ X
    return torch.linalg.solve_triangular(L.mH, X, upper=True)


def _solve_l(L, X):          # X L⁻¹
    return torch.linalg.solve_triangular(L, X, upper=False, left=False)


def _solve_lh(L, X):         # X L⁻ᴴ
    return torch.linalg.solve_triangular(L.mH, X, upper=True, left=False)


def _hermitian_from(K, upper):
    """The Hermitian matrix whose read triangle is K's (the diagonal's real part)."""
    T = K.triu(1) if upper else K.tril(-1)
    d = K.diagonal(dim1=-2, dim2=-1)
    if K.is_complex():
        d = d.real.to(K.dtype)
    return T + T.mH + torch.diag_embed(d)


def _triangular_from(S, upper):
    """Smith's triangular G from the Hermitian S: G_ij = 2 S_ij off the diagonal, G_ii = S_ii."""
    T = S.triu(1) if upper else S.tril(-1)
    return 2 * T + torch.diag_embed(S.diagonal(dim1=-2, dim2=-1))


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


# --- torch's formulas: for input blockchol refuses ---------------------------------------

def _rev_formula(L, M, upper):
    """S = ½ L⁻ᴴ (P + Pᴴ) L⁻¹, P = Φ(Lᴴ M), in torch ops (NaN in, NaN out, as torch)."""
    Ll, Ml = _low(L, upper), _low(M, upper).tril()
    P = _phi(Ll.mH @ Ml)
    return 0.5 * _solve_l(Ll, _lh_solve(Ll, P + P.mH))


def _fwd_formula(L, K, upper):
    """L Φ(L⁻¹ K L⁻ᴴ) for the Hermitian K read from K's triangle, in torch ops."""
    Ll = _low(L, upper)
    out = Ll @ _phi(_solve_lh(Ll, _l_solve(Ll, _hermitian_from(K, upper))))
    return _low(out, upper)


# --- the calls into numpy ------------------------------------------------------------------

def _np(t):
    return t.detach().resolve_conj().resolve_neg().numpy()


def _threads(L):
    """blockchol's ``threads=``: 1 below SINGLE_THREAD_N, else the BLAS pools as they are."""
    return 1 if L.shape[-1] < SINGLE_THREAD_N else None


def _zeros_for(*arrays):
    shape = np.broadcast_shapes(*(a.shape for a in arrays))
    return torch.from_numpy(np.zeros(shape, np.result_type(*arrays, np.float32)))


def _refused(L, X, error, upper):
    """blockchol refused: non-finite input or a factor torch marked as failed (cholesky_ex).

    Anything else is a bug here, so it is raised rather than papered over.
    """
    d = _low(L, upper).diagonal(dim1=-2, dim2=-1)
    d_ok = (d.real > 0).all() & (d.imag == 0).all() if d.is_complex() else (d > 0).all()
    if bool(torch.isfinite(L).all() & torch.isfinite(X).all() & d_ok):
        raise error


def _rev_numpy(L, M, upper, skip_zero=False):
    """Hermitian S = blockchol.chol_rev(L, M, symmetric=True)."""
    Ln, Mn = _np(L), _np(M)
    if skip_zero and not Mn.any():
        return _zeros_for(Ln, Mn)
    try:
        return torch.from_numpy(blockchol.chol_rev(Ln, Mn, lower=not upper, symmetric=True,
                                                   threads=_threads(Ln)))
    except (ValueError, np.linalg.LinAlgError) as error:
        _refused(L, M, error, upper)
        return _rev_formula(L.detach(), M.detach(), upper)


def _fwd_numpy(L, K, upper):
    """L̇ = blockchol.chol_fwd(L, K) (K's read triangle, taken Hermitian)."""
    Ln, Kn = _np(L), _np(K)
    try:
        return torch.from_numpy(blockchol.chol_fwd(Ln, Kn, lower=not upper, threads=_threads(Ln)))
    except (ValueError, np.linalg.LinAlgError) as error:
        _refused(L, K, error, upper)
        return _fwd_formula(L.detach(), K.detach(), upper)


def _skew_numpy(L, Q, upper):
    """L Φ(L⁻¹ Q L⁻ᴴ) for anti-Hermitian Q: i Q is Hermitian, so it is -i chol_fwd(L, i Q)."""
    Ln, Qn = _np(L), _np(Q)
    if not Qn.any():
        return _zeros_for(Ln, Qn)
    ctype = np.result_type(Ln, Qn, np.complex64)
    try:
        out = blockchol.chol_fwd(Ln.astype(ctype, copy=False), 1j * Qn, lower=not upper,
                                 threads=_threads(Ln))
    except (ValueError, np.linalg.LinAlgError) as error:
        _refused(L, Q, error, upper)
        Ll = _low(L.detach(), upper)
        X = _solve_lh(Ll, _l_solve(Ll, Q.detach()))
        return _low(Ll @ _phi(X), upper)
    out *= 1j if upper else -1j       # the upper form is the conjugate transpose of the lower
    if not (L.is_complex() or Q.is_complex()):
        out = out.real.copy()
    return torch.from_numpy(out)


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
# R(L, M) = ½ L⁻ᴴ (P + Pᴴ) L⁻¹ with P = Φ(Lᴴ M)       (chol_rev, symmetric=True)
# F(L, K) = L Φ(L⁻¹ K L⁻ᴴ), K Hermitian               (chol_fwd)
#
# Both are linear in their second argument and adjoint to each other:
# Re⟨M, F(L, K)⟩ = Re⟨R(L, M), K⟩ =: B(L; M, K).  The derivative of B with
# respect to L (L lower, with the upper triangle held at zero) is
#
#     ∂B/∂L = tril((tril(M) F(L, K)ᴴ − 2 R(L, M) K) L⁻ᴴ),
#
# which gives each operator's derivative with respect to L in reverse mode;
# differentiating the formulas gives forward mode:
#
#     dR = R(L, dM + L⁻ᴴ dLᴴ M) − (W + Wᴴ),  W = R(L, M) dL L⁻¹,
#     dF = dL L⁻¹ F(L, K) + F(L, dK − Z − Zᴴ),  Z = dL L⁻¹ K.
#
# Every rule is written with the operators themselves and torch ops, so all
# orders compose.

def _bilinear_l_grad(L, M, Ld, S, K):
    """∂/∂L of Re⟨M, F(L, K)⟩, lower form; Ld = F(L, K), S = R(L, M), K full Hermitian."""
    return _solve_lh(L, M.tril() @ Ld.mH - 2 * (S @ K)).tril()


class _CholRev(torch.autograd.Function):
    """S = R(L, M): blockchol.chol_rev(L, M, symmetric=True)."""

    @staticmethod
    def forward(L, M, upper, skip_zero):
        return _rev_numpy(L, M, upper, skip_zero)

    @staticmethod
    def setup_context(ctx, inputs, output):
        L, M, ctx.upper, _ = inputs
        ctx.save_for_backward(L, M, output)
        ctx.save_for_forward(L, M, output)

    @staticmethod
    def backward(ctx, gS):
        L, M, S = ctx.saved_tensors
        upper = ctx.upper
        H = 0.5 * (gS + gS.mH)
        Ld = _CholFwd.apply(L, H, upper)            # = ∂f/∂M, in M's form
        gL = None
        if ctx.needs_input_grad[0]:
            gL = _low(_bilinear_l_grad(_low(L, upper), _low(M, upper), _low(Ld, upper), S, H),
                      upper)
        return (_sum_to(gL, L.shape), _sum_to(Ld, M.shape) if ctx.needs_input_grad[1] else None,
                None, None)

    @_jvp_rule
    def jvp(ctx, dL, dM, *_):
        L, M, S = ctx.saved_tensors
        upper = ctx.upper
        Ll = _low(L, upper)
        X = dM if dM is not None else torch.zeros_like(M)
        out = 0
        if dL is not None:
            dLl = _low(dL, upper).tril()
            X = X + _low(_lh_solve(Ll, dLl.mH @ _low(M, upper).tril()), upper)
            W = _solve_l(Ll, S @ dLl)
            out = -(W + W.mH)
        return _CholRev.apply(L, X, upper, False) + out

    @staticmethod
    def vmap(info, in_dims, L, M, upper, skip_zero):
        return _CholRev.apply(*_front(info, in_dims, (L, M, upper, skip_zero))), 0


class _CholFwd(torch.autograd.Function):
    """L̇ = F(L, K): blockchol.chol_fwd(L, K), K's read triangle taken Hermitian."""

    @staticmethod
    def forward(L, K, upper):
        return _fwd_numpy(L, K, upper)

    @staticmethod
    def setup_context(ctx, inputs, output):
        L, K, ctx.upper = inputs
        ctx.save_for_backward(L, K, output)
        ctx.save_for_forward(L, K, output)

    @staticmethod
    def backward(ctx, gLd):
        L, K, Ld = ctx.saved_tensors
        upper = ctx.upper
        S = _CholRev.apply(L, gLd, upper, False)
        gL = gK = None
        if ctx.needs_input_grad[0]:
            gL = _low(_bilinear_l_grad(_low(L, upper), _low(gLd, upper), _low(Ld, upper), S,
                                       _hermitian_from(K, upper)), upper)
        if ctx.needs_input_grad[1]:
            gK = _triangular_from(S, upper)
        return _sum_to(gL, L.shape), _sum_to(gK, K.shape), None

    @_jvp_rule
    def jvp(ctx, dL, dK, _):
        L, K, Ld = ctx.saved_tensors
        upper = ctx.upper
        Y = _hermitian_from(dK, upper) if dK is not None else torch.zeros_like(K)
        out = 0
        if dL is not None:
            Ll, dLl = _low(L, upper), _low(dL, upper).tril()
            Z = dLl @ _l_solve(Ll, _hermitian_from(K, upper))
            Y = Y - (Z + Z.mH)
            out = _low(dLl @ _l_solve(Ll, _low(Ld, upper)), upper)
        return _CholFwd.apply(L, Y, upper) + out

    @staticmethod
    def vmap(info, in_dims, L, K, upper):
        return _CholFwd.apply(*_front(info, in_dims, (L, K, upper))), 0


class _CholSkew(torch.autograd.Function):
    """T(L, Q) = L Φ(L⁻¹ Q L⁻ᴴ) for anti-Hermitian Q: torch's jvp uses the whole tangent.

    Zero (and free) for a Hermitian tangent; otherwise -i chol_fwd(L, i Q).
    The derivative rules are torch ops: this is torch's behaviour for
    tangents no Hermitian-valued function produces.
    """

    @staticmethod
    def forward(L, Q, upper):
        return _skew_numpy(L, Q, upper)

    @staticmethod
    def setup_context(ctx, inputs, output):
        L, Q, ctx.upper = inputs
        ctx.save_for_backward(L, Q)
        ctx.save_for_forward(L, Q)

    @staticmethod
    def backward(ctx, gT):
        L, Q = ctx.saved_tensors
        upper = ctx.upper
        Ll, g = _low(L, upper), _low(gT, upper).tril()
        P = _phi(Ll.mH @ g)
        gL = gQ = None
        if ctx.needs_input_grad[1]:
            gQ = _solve_l(Ll, _lh_solve(Ll, P))
        if ctx.needs_input_grad[0]:
            X = _solve_lh(Ll, _l_solve(Ll, Q))
            gL = _low((g @ _phi(X).mH - _lh_solve(Ll, P @ X.mH + P.mH @ X)).tril(), upper)
        return _sum_to(gL, L.shape), _sum_to(gQ, Q.shape), None

    @_jvp_rule
    def jvp(ctx, dL, dQ, _):
        L, Q = ctx.saved_tensors
        upper = ctx.upper
        Ll = _low(L, upper)
        X = _solve_lh(Ll, _l_solve(Ll, Q))
        dX = _solve_lh(Ll, _l_solve(Ll, dQ)) if dQ is not None else torch.zeros_like(X)
        out = 0
        if dL is not None:
            dLl = _low(dL, upper).tril()
            E = _l_solve(Ll, dLl)
            dX = dX - E @ X - X @ E.mH
            out = dLl @ _phi(X)
        return _low(Ll @ _phi(dX) + out, upper)

    @staticmethod
    def vmap(info, in_dims, L, Q, upper):
        return _CholSkew.apply(*_front(info, in_dims, (L, Q, upper))), 0


# --- the Cholesky factorization ---------------------------------------------------------

def _negligible(x, scale, n):
    """Per matrix (the last two dimensions of x, the last of scale): max |x| is at the
    level of rounding errors in quantities of size max |scale| (4 N eps of it)."""
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
    S = _CholRev.apply(L, gL, upper, False)
    if L.is_complex():
        Ll, gl = _low(L, upper), _low(gL, upper)
        d = (Ll.conj() * gl).sum(dim=-2).imag
        if not _graph_wanted(L, gL):
            bound = (Ll.abs() * gl.abs()).sum(dim=-2)
            small = _negligible(d[..., None], bound[..., None], L.shape[-1])
            if _known_false(lambda: small.all()):
                return S
            d = torch.where(small[..., None], 0, d)
        D = torch.diag_embed((d / Ll.diagonal(dim1=-2, dim2=-1).real).to(L.dtype))
        S = S + 1j * _CholRev.apply(L, D, upper, True)
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
        return (_CholFwd.apply(L, 0.5 * (dA + dA.mH), upper)
                + _CholSkew.apply(L, 0.5 * (dA - dA.mH), upper))
    Q = 0.5 * (dA - dA.mH)
    small = _negligible(Q, dA, dA.shape[-1])
    if _known_false(lambda: small.all()):
        return _CholFwd.apply(L, dA, upper)
    Q = torch.where(small[..., None, None], 0, Q)     # per matrix, also inside vmap
    return _CholFwd.apply(L, 0.5 * (dA + dA.mH), upper) + _CholSkew.apply(L, Q, upper)


class _Cholesky(torch.autograd.Function):
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
        return _Cholesky.apply(A.movedim(in_dims[0], 0), upper), 0


class _CholeskyEx(torch.autograd.Function):
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
        return _CholeskyEx.apply(A.movedim(in_dims[0], 0), upper, check_errors), (0, 0)


def cholesky(A, *, upper=False, out=None):
    """``torch.linalg.cholesky`` with derivatives through blockchol.

    Parameters
    ----------
    A : (..., N, N) Tensor
        Hermitian positive definite matrices.  As torch does, only the lower
        triangle (``upper=False``) or the upper triangle (``upper=True``) is
        read.
    upper : bool, optional
        Return the upper factor U with A = Uᴴ U instead of the lower L with
        A = L Lᴴ.
    out : Tensor, optional
        As in torch (which does not differentiate ``out=`` calls); such calls
        go to torch's own operator.

    Returns
    -------
    L : (..., N, N) Tensor
        torch's factor (the same values: it is torch's computation).

    Raises
    ------
    torch.linalg.LinAlgError
        A matrix that is not positive definite, as torch raises it.

    Notes
    -----
    Derivatives, for a real loss f with df = Re Σ conj(L̄_ij) dL_ij:

    * backward: Ā = S = ``blockchol.chol_rev(L, L̄, symmetric=True)``, the
      Hermitian matrix with df = Re Σ_ij conj(S_ij) dA_ij for Hermitian dA
      (S = ½ L⁻ᴴ (P + Pᴴ) L⁻¹, P = Φ(Lᴴ L̄), Φ the lower triangle with the
      diagonal halved); for complex A torch adds the anti-Hermitian
      ½ i L⁻ᴴ diag(Im diag(Lᴴ L̄)) L⁻¹, and so does this function (with a
      second chol_rev call, skipped when that part is zero);
    * forward: L̇ = L Φ(L⁻¹ Ȧ L⁻ᴴ), ``blockchol.chol_fwd(L, Ȧ)`` for a
      Hermitian Ȧ;
    * second and higher orders: the rules of both are themselves
      differentiable (see the module's source for the formulas).

    The factor is torch's, so the values are torch's; the derivatives agree
    with torch's own to rounding.  Inputs blockchol does not serve, and
    matrices smaller than ``CROSSOVER_N[dtype name]`` (the measured crossover), go to
    torch's own operator.

    Examples
    --------
    >>> import torch, blockchol.torch as bt
    >>> X = torch.randn(2, 1100, 1100, dtype=torch.float64)
    >>> A = (X @ X.mT / 1100 + torch.eye(1100, dtype=torch.float64)).requires_grad_()
    >>> U = bt.cholesky(A, upper=True)                  # a stack: (2, 1100, 1100)
    >>> torch.allclose(U.mH @ U, A)
    True
    >>> (g,) = torch.autograd.grad(U.diagonal(dim1=-2, dim2=-1).sum(), A)
    >>> A2 = A.detach().clone().requires_grad_()
    >>> (g_torch,) = torch.autograd.grad(
    ...     torch.linalg.cholesky(A2, upper=True).diagonal(dim1=-2, dim2=-1).sum(), A2)
    >>> torch.allclose(g, g_torch)
    True
    """
    if out is not None or not _served(A) or not _large_enough(A):
        return _torch_cholesky(A, upper=upper, out=out)
    return _Cholesky.apply(A, upper)


def cholesky_ex(A, *, upper=False, check_errors=False, out=None):
    """``torch.linalg.cholesky_ex`` with derivatives through blockchol.

    Parameters
    ----------
    A : (..., N, N) Tensor
        As in :func:`cholesky`.
    upper : bool, optional
        As in :func:`cholesky`.
    check_errors : bool, optional
        Raise ``torch.linalg.LinAlgError`` for a matrix that is not positive
        definite instead of reporting it in ``info`` (torch's behaviour).
    out : tuple of Tensors, optional
        As in torch; such calls go to torch's own operator.

    Returns
    -------
    L : (..., N, N) Tensor
        torch's factor; where ``info`` is positive, torch's partial result.
    info : (...) int32 Tensor
        0 where the factorization succeeded, else the order of the leading
        minor that is not positive definite (torch's, not differentiable).

    Notes
    -----
    Derivatives as in :func:`cholesky`.  A factor that torch marked as failed
    is not one blockchol accepts; its derivatives, should anyone ask for
    them, are torch's formula applied to it, as torch does.

    Examples
    --------
    >>> import torch, blockchol.torch as bt
    >>> A = torch.diag(torch.tensor([1.0, -1.0] * 50, dtype=torch.float64))
    >>> L, info = bt.cholesky_ex(A)
    >>> int(info)                                  # the leading minor of order 2
    2
    """
    if out is not None or not _served(A) or not _large_enough(A):
        return _torch_cholesky_ex(A, upper=upper, check_errors=check_errors, out=out)
    return _CholeskyEx.apply(A, upper, check_errors)


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


class _CholeskySolve(torch.autograd.Function):
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
        gB = _CholeskySolve.apply(gX, L, ctx.upper)
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
        return _CholeskySolve.apply(rhs, L, ctx.upper)


def cholesky_solve(B, L, upper=False, *, out=None):
    """``torch.cholesky_solve`` with a backward in O(N² k) for k right-hand sides.

    Parameters
    ----------
    B : (..., N, k) Tensor
        Right-hand sides.
    L : (..., N, N) Tensor
        Cholesky factor of A: lower with A = L Lᴴ, or with ``upper=True``
        upper with A = Uᴴ U.  As torch does, only that triangle is read.
        Batch dimensions of `B` and `L` broadcast.
    upper : bool, optional
        Whether `L` is the upper factor.
    out : Tensor, optional
        As in torch; such calls go to torch's own operator.

    Returns
    -------
    X : (..., N, k) Tensor
        A⁻¹ B, torch's computation.

    Notes
    -----
    The gradients are torch's: with G = A⁻¹ X̄ (another cholesky_solve),
    B̄ = G and L̄ = -(G Xᴴ + X Gᴴ) L (upper: -U (G Xᴴ + X Gᴴ)), the gradient
    with respect to every entry of `L` as torch defines it
    (df = Re Σ conj(L̄_ij) dL_ij for L read as a full matrix).  torch forms
    the N × N matrix G Xᴴ + X Gᴴ and multiplies it by L, 2N³ flops; here the
    product is grouped as G (Xᴴ L) + X (Gᴴ L) when 2k < N, 8N²k flops.
    Forward mode: Ẋ = A⁻¹ (Ḃ - Ȧ X), Ȧ = L̇ Lᴴ + L L̇ᴴ, also O(N² k).
    All orders compose (the rules call this function again).  Factors smaller
    than :data:`SOLVE_CROSSOVER_N` and inputs blockchol does not serve go to
    torch's own operator.

    Examples
    --------
    >>> import torch, blockchol.torch as bt
    >>> X = torch.randn(500, 500, dtype=torch.float64)
    >>> L = torch.linalg.cholesky(X @ X.mT / 500 + torch.eye(500, dtype=torch.float64))
    >>> L = L.requires_grad_()
    >>> y = torch.randn(500, 1, dtype=torch.float64)
    >>> (g,) = torch.autograd.grad((y * bt.cholesky_solve(y, L)).sum(), L)
    >>> (g_torch,) = torch.autograd.grad((y * torch.cholesky_solve(y, L)).sum(), L)
    >>> torch.allclose(g, g_torch)
    True
    """
    if (out is not None or not isinstance(L, torch.Tensor) or L.dim() < 2
            or L.shape[-1] < SOLVE_CROSSOVER_N or not _served(B, L)):
        return _torch_cholesky_solve(B, L, upper=upper, out=out)
    return _CholeskySolve.apply(B, L, upper)


for _ours, _theirs in ((cholesky, _torch_cholesky), (cholesky_ex, _torch_cholesky_ex),
                       (cholesky_solve, _torch_cholesky_solve)):
    _ours._blockchol_original = _theirs


# --- accelerate() -----------------------------------------------------------------------

_PATCHES = _patching.Patches(lambda: (
    (torch.linalg, "cholesky", cholesky), (torch.linalg, "cholesky_ex", cholesky_ex),
    (torch, "cholesky_solve", cholesky_solve)))


def accelerate(func=None):
    """Make ``torch.linalg.cholesky``, ``torch.linalg.cholesky_ex`` and
    ``torch.cholesky_solve`` this module's functions while active.

    Use it as a context manager (``with accelerate():``) or as a decorator
    (``@accelerate`` or ``@accelerate()``).  On exit -- also when the block
    or the decorated function raises -- torch's own functions are restored.

    Code that looks these functions up when it calls them (GPyTorch and
    linear_operator's ``psd_safe_cholesky``, which calls
    ``torch.linalg.cholesky_ex``, and their ``torch.cholesky_solve``; BoTorch
    and Pyro through them or directly) then gets blockchol's derivatives
    without edits.  Values are torch's, gradients agree with torch's to
    rounding.

    Warnings
    --------
    The switch is process-wide: while any ``accelerate()`` is active, every
    thread calling these torch functions gets this module's.  Activations
    nest and may overlap across threads: a lock-protected count installs the
    functions at the first entry and restores torch's at the last exit.
    References taken before the switch (``from torch.linalg import
    cholesky``) and methods (``Tensor.cholesky_solve``) are not affected,
    nor is ``torch.cholesky`` (deprecated by torch).

    Examples
    --------
    >>> import torch, blockchol.torch as bt
    >>> with bt.accelerate():
    ...     torch.linalg.cholesky is bt.cholesky
    True
    >>> torch.linalg.cholesky is bt.cholesky
    False
    >>> @bt.accelerate
    ... def factor(A):
    ...     return torch.linalg.cholesky_ex(A)[0]
    >>> factor(torch.eye(3)).diagonal()
    tensor([1., 1., 1.])
    """
    if func is None:
        return _PATCHES.activation()
    if not callable(func):
        raise TypeError("accelerate() takes a function to decorate, or nothing; got %r" % (func,))
    return _PATCHES.activation()(func)
