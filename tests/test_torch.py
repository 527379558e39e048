"""blockchol.torch: torch.linalg.cholesky / cholesky_ex / cholesky_solve with blockchol's derivatives.

torch's own implementation is the oracle throughout: the same inputs through
``torch.linalg.cholesky`` (captured before anything is patched) and through
ours, compared entry by entry.  Calls into blockchol are recorded, so that a
test also proves that blockchol did the work (and did not fall back quietly).

Tolerances (:func:`tol`).  Two correct implementations of a derivative of
the factor of A differ by rounding amplified by the conditioning: about
N · eps · κ(A) relative to the largest entry, κ(A)² for second derivatives.
The bar is 50 times that, with κ computed for the test's own matrix (A =
X Xᴴ / N + I: κ below about 10).  A wrong rule (a lost factor 2, the wrong
triangle, a missing conjugate or symmetrization) is off by O(1).
"""

import threading

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

import blockchol
import blockchol.torch as bt
from helpers import run_python

TORCH_CHOLESKY = torch.linalg.cholesky
TORCH_CHOLESKY_EX = torch.linalg.cholesky_ex
TORCH_CHOLESKY_SOLVE = torch.cholesky_solve

DTYPES = [torch.float64, torch.complex128, torch.float32, torch.complex64]
N = 80


def tol(A, order=1):
    """50 · N · eps · κ(A)^order: the bar for two correct derivatives of A's factor
    (order 2 for second derivatives), relative to the largest entry."""
    A = A.detach()
    kappa = torch.linalg.cond(A.to(torch.complex128 if A.is_complex() else torch.float64))
    return 50 * A.shape[-1] * torch.finfo(A.dtype).eps * kappa.max().item() ** order


def spd(n, dtype=torch.float64, batch=(), seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(*batch, n, n, dtype=dtype, generator=g)
    return X @ X.mH / n + torch.eye(n, dtype=dtype)


def randn(*shape, dtype=torch.float64, seed=1):
    return torch.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))


def rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def loss_of(W):
    """A real loss of the factor that uses every entry of it (and for complex, non-trivially)."""
    def loss(L):
        out = (W * L).real.sum() + (L.diagonal(dim1=-2, dim2=-1).real ** 2).sum()
        return out + (L.abs() ** 2 * W.real).sum() if L.is_complex() else out
    return loss


@pytest.fixture
def calls(monkeypatch):
    """Record every call into blockchol.chol_rev / chol_fwd: (name, L.shape, other.shape).

    The tests' matrices (N = 80) go to blockchol whatever the measured
    crossovers are (test_small_matrices_go_to_torch tests the dispatch itself).
    """
    monkeypatch.setattr(bt, "CROSSOVER_N", {name: min(n, N) for name, n in bt.CROSSOVER_N.items()})
    monkeypatch.setattr(bt, "SOLVE_CROSSOVER_N", min(bt.SOLVE_CROSSOVER_N, N))
    log = []
    rev, fwd = blockchol.chol_rev, blockchol.chol_fwd

    def rec_rev(L, M, **kw):
        log.append(("rev", L.shape, M.shape))
        return rev(L, M, **kw)

    def rec_fwd(L, K, **kw):
        log.append(("fwd", L.shape, K.shape))
        return fwd(L, K, **kw)

    monkeypatch.setattr(blockchol, "chol_rev", rec_rev)
    monkeypatch.setattr(blockchol, "chol_fwd", rec_fwd)
    return log


@pytest.fixture
def small(monkeypatch):
    """Send every size to blockchol (gradcheck wants small matrices)."""
    monkeypatch.setattr(bt, "CROSSOVER_N", dict.fromkeys(bt.CROSSOVER_N, 1))
    monkeypatch.setattr(bt, "SOLVE_CROSSOVER_N", 1)


# --- packaging ----------------------------------------------------------------------------

def test_import_blockchol_does_not_import_torch():
    code = "import sys, blockchol, blockchol.reference; assert 'torch' not in sys.modules, 'torch'"
    r = run_python(code)
    assert r.returncode == 0, r.stderr


def test_import_without_torch_names_the_extra():
    code = ("import sys; sys.modules['torch'] = None\n"
            "try:\n    import blockchol.torch\nexcept ImportError as e:\n    print(e)\n"
            "else:\n    raise SystemExit('imported')")
    out = run_python(code)
    assert out.returncode == 0, out.stderr
    assert "pip install 'blockchol[torch]'" in out.stdout


# --- values and first derivatives against torch -------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("upper", [False, True])
@pytest.mark.parametrize("batch", [(), (3,), (2, 2)])
def test_backward_matches_torch(calls, dtype, upper, batch):
    A = spd(N, dtype, batch)
    W = randn(*batch, N, N, dtype=dtype)
    A1, A2 = A.clone().requires_grad_(), A.clone().requires_grad_()
    L1 = bt.cholesky(A1, upper=upper)
    L2 = TORCH_CHOLESKY(A2, upper=upper)
    assert torch.equal(L1, L2)                         # torch's factor, bit for bit
    loss_of(W)(L1).backward()
    loss_of(W)(L2).backward()
    assert rel(A1.grad, A2.grad) < tol(A)
    # one call for the whole stack; complex adds torch's anti-Hermitian part (a second call)
    assert calls[0] == ("rev", A.shape, A.shape)
    assert len(calls) == (2 if dtype.is_complex else 1)


def _cotangent(A, W):
    L = TORCH_CHOLESKY(A).requires_grad_()
    (gL,) = torch.autograd.grad(loss_of(W)(L), L)
    return L.detach(), gL


def test_complex_gradient_keeps_torchs_antihermitian_part():
    A = spd(N, torch.complex128)
    W = randn(N, N, dtype=torch.complex128)
    Ar = A.clone().requires_grad_()
    (g,) = torch.autograd.grad(loss_of(W)(bt.cholesky(Ar)), Ar)
    L, gL = _cotangent(A, W)
    S = torch.from_numpy(blockchol.chol_rev(L.numpy(), gL.numpy(), symmetric=True))
    assert rel(g, _torch_grad(A, loss_of(W))) < tol(A)
    assert rel(0.5 * (g + g.mH), S) < tol(A)                # the Hermitian part is chol_rev's S
    assert rel(0.5 * (g - g.mH), S) > 100 * tol(A)          # and torch's has more


def test_real_gradient_is_symmetric():
    A = spd(N).requires_grad_()
    (g,) = torch.autograd.grad(loss_of(randn(N, N))(bt.cholesky(A)), A)
    assert rel(g, g.mT) < 4 * torch.finfo(g.dtype).eps      # symmetrized: a rounding or two


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("upper", [False, True])
@pytest.mark.parametrize("hermitian", [True, False])
def test_jvp_matches_torch_both_apis(calls, dtype, upper, hermitian):
    import torch.autograd.forward_ad as fwAD
    A = spd(N, dtype, (2,))
    T = randn(2, N, N, dtype=dtype)
    if hermitian:
        T = T + T.mH
    ours = torch.func.jvp(lambda a: bt.cholesky(a, upper=upper), (A,), (T,))[1]
    theirs = torch.func.jvp(lambda a: TORCH_CHOLESKY(a, upper=upper), (A,), (T,))[1]
    assert rel(ours, theirs) < tol(A)
    with fwAD.dual_level():
        dual = bt.cholesky(fwAD.make_dual(A, T), upper=upper)
        assert rel(fwAD.unpack_dual(dual).tangent, theirs) < tol(A)
    assert all(c[0] == "fwd" and c[1] == A.shape for c in calls)
    # torch's jvp uses the whole tangent: a non-Hermitian one costs a second (complex) call
    assert len(calls) == (2 if hermitian else 4)


@pytest.mark.parametrize("delta", [1e-15, 1e-3])
def test_tangent_hermitian_up_to_rounding_takes_one_call(calls, delta):
    """A tangent whose anti-Hermitian part is rounding noise takes chol_fwd alone."""
    A = spd(N, torch.complex128)
    S = _sym(randn(N, N, dtype=torch.complex128))
    R = randn(N, N, dtype=torch.complex128, seed=2)
    T = S + delta * S.abs().max() * (R - R.mH)
    assert not torch.equal(T, T.mH)
    ours = torch.func.jvp(bt.cholesky, (A,), (T,))[1]
    theirs = torch.func.jvp(TORCH_CHOLESKY, (A,), (T,))[1]
    assert rel(ours, theirs) < tol(A)
    skipped = delta < 4 * N * torch.finfo(torch.float64).eps    # the adapter's rounding test
    assert len(calls) == (1 if skipped else 2)
    calls.clear()
    ours = torch.func.vmap(lambda a, t: torch.func.jvp(bt.cholesky, (a,), (t,))[1])(
        A[None], T[None])                         # inside vmap, decided per matrix
    assert rel(ours[0], theirs) < tol(A)
    assert len(calls) == (1 if skipped else 2)


def test_complex_antihermitian_part_at_rounding_level_is_skipped(calls):
    A = spd(N, torch.complex128)
    L = TORCH_CHOLESKY(A)
    P = randn(N, N, dtype=torch.complex128).tril()
    P.diagonal().imag.zero_()
    gL = torch.linalg.solve_triangular(L.mH, P, upper=True)     # diag(Lᴴ gL) real, up to rounding
    d = (L.conj() * gL).sum(-2).imag
    assert 0 < d.abs().max() < tol(A)                   # rounding noise, not zero
    Ar = A.clone().requires_grad_()
    (ours,) = torch.autograd.grad(bt.cholesky(Ar), Ar, gL)
    (theirs,) = torch.autograd.grad(TORCH_CHOLESKY(Ar), Ar, gL)
    assert rel(ours, theirs) < tol(A) and len(calls) == 1


def test_cholesky_ex_matches_torch(calls):
    A = spd(N, batch=(3,))
    A[1, 5, 5] = -1.0                                        # not positive definite
    L, info = bt.cholesky_ex(A)
    L2, info2 = TORCH_CHOLESKY_EX(A)
    assert torch.equal(info, info2) and info.tolist() == [0, 6, 0]
    assert torch.equal(L, L2)
    # a differentiable L for the good matrices, torch's formula for the failed one
    Ar = A.clone().requires_grad_()
    Ar2 = A.clone().requires_grad_()
    W = randn(3, N, N)
    loss_of(W)(bt.cholesky_ex(Ar)[0]).backward()
    loss_of(W)(TORCH_CHOLESKY_EX(Ar2)[0]).backward()
    assert rel(Ar.grad[[0, 2]], Ar2.grad[[0, 2]]) < tol(A[[0, 2]])
    # the failed matrix: torch's formula on torch's partial factor, whose conditioning is
    # unbounded, so no eps·κ bar exists; the NaN pattern must match and the finite values
    # agree loosely (a wrong formula is off by O(1))
    assert torch.allclose(Ar.grad[1], Ar2.grad[1], rtol=1e-8, atol=1e-8, equal_nan=True)
    assert calls and calls[0][0] == "rev"
    with pytest.raises(torch.linalg.LinAlgError, match="leading minor of order 6"):
        bt.cholesky_ex(A, check_errors=True)


def test_not_positive_definite_raises_torchs_error():
    A = spd(N, batch=(2,))
    A[1, 3, 3] = -5.0
    with pytest.raises(torch.linalg.LinAlgError) as ours:
        bt.cholesky(A)
    with pytest.raises(torch.linalg.LinAlgError) as theirs:
        TORCH_CHOLESKY(A)
    assert str(ours.value) == str(theirs.value)


def test_nonfinite_cotangent_propagates_like_torch():
    A = spd(N).requires_grad_()
    L = bt.cholesky(A)
    gL = torch.ones(N, N, dtype=torch.float64).tril()
    gL[7, 3] = float("nan")
    (g,) = torch.autograd.grad(L, A, gL)
    A2 = A.detach().clone().requires_grad_()
    (g2,) = torch.autograd.grad(TORCH_CHOLESKY(A2), A2, gL)
    assert torch.isnan(g).any() and torch.equal(torch.isnan(g), torch.isnan(g2))


# --- gradcheck and higher orders ----------------------------------------------------------

def _sym(a):
    return 0.5 * (a + a.mH)


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
@pytest.mark.parametrize("upper", [False, True])
def test_gradcheck_and_gradgradcheck(small, calls, dtype, upper):
    A = spd(4, dtype, (2,)).requires_grad_()

    def f(a):                      # perturbations of A stay Hermitian, as gradcheck needs
        return bt.cholesky(_sym(a), upper=upper)

    # gradcheck compares every entry of the Jacobian (complex: in the fast mode, random
    # projections vᴴ J u against the numerical ones, which a wrong entry fails with
    # probability 1); gradgradcheck in the fast mode, to keep the time down
    assert gradcheck(f, (A,), check_forward_ad=True, fast_mode=dtype.is_complex)
    assert gradgradcheck(f, (A,), check_fwd_over_rev=True, fast_mode=True)
    kinds = {c[0] for c in calls}
    assert kinds == {"rev", "fwd"}


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
@pytest.mark.parametrize("hermitian", [True, False])
def test_reverse_over_forward_matches_torch(small, dtype, hermitian):
    """The derivative of a jvp, with respect to the point and the tangent."""
    A = spd(4, dtype).requires_grad_()
    T = randn(4, 4, dtype=dtype)
    T = (T + T.mH if hermitian else T).requires_grad_()
    V = randn(4, 4, dtype=dtype, seed=3)

    def jvp_of(chol):               # the point stays Hermitian, the tangent need not
        return lambda a, t: torch.func.jvp(chol, (_sym(a),), (t,))[1]

    assert gradcheck(jvp_of(bt.cholesky), (A, T), fast_mode=dtype.is_complex)
    ours = torch.autograd.grad(jvp_of(bt.cholesky)(A, T), (A, T), V)
    theirs = torch.autograd.grad(jvp_of(TORCH_CHOLESKY)(A, T), (A, T), V)
    for a, b in zip(ours, theirs):
        assert rel(a, b) < tol(A, 2)


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
@pytest.mark.parametrize("hermitian", [True, False])
def test_forward_over_forward_matches_torch(small, dtype, hermitian):
    """A jvp of a jvp: the forward-mode rules of the forward-mode rules."""
    A = spd(4, dtype)
    T, T2 = randn(4, 4, dtype=dtype), randn(4, 4, dtype=dtype, seed=8)
    T = T + T.mH if hermitian else T

    def jvp2(chol):
        inner = lambda a: torch.func.jvp(lambda x: chol(x, upper=True), (a,), (T,))[1]
        return torch.func.jvp(inner, (A,), (_sym(T2),))[1]

    assert rel(jvp2(bt.cholesky), jvp2(TORCH_CHOLESKY)) < tol(A, 2)


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_double_backward_matches_torch(calls, dtype):
    A = spd(N, dtype).requires_grad_()
    W = randn(N, N, dtype=dtype)
    V = _sym(randn(N, N, dtype=dtype, seed=4))

    def hvp(chol):
        a = A.detach().clone().requires_grad_()
        (g,) = torch.autograd.grad(loss_of(W)(chol(a)), a, create_graph=True)
        assert g.requires_grad
        (h,) = torch.autograd.grad((g * V.conj()).real.sum(), a)
        return g.detach(), h

    g1, h1 = hvp(bt.cholesky)
    g2, h2 = hvp(TORCH_CHOLESKY)
    assert rel(g1, g2) < tol(A) and rel(h1, h2) < tol(A, 2)
    assert {c[0] for c in calls} == {"rev", "fwd"}


@pytest.mark.parametrize("upper", [False, True])
def test_derivative_operators_gradcheck(small, upper):
    """The building blocks on their own, raw second arguments (only one triangle is read)."""
    A = spd(4, torch.complex128)
    M = randn(4, 4, dtype=torch.complex128, seed=9).requires_grad_()
    for op in (lambda a, m: bt._functions.CholRev.apply(bt.cholesky(_sym(a), upper=upper), m, upper, False),
               lambda a, m: bt._functions.CholFwd.apply(bt.cholesky(_sym(a), upper=upper), m, upper)):
        assert gradcheck(op, (A.clone().requires_grad_(), M), fast_mode=True)


def test_complex_double_backward_where_torchs_extra_part_vanishes(calls):
    """A real-valued complex A and a real cotangent: torch's anti-Hermitian part is zero at
    the point, not its derivative, which a non-Hermitian V (as gradgradcheck uses) sees."""
    A = spd(N).to(torch.complex128)
    W = randn(N, N).to(torch.complex128)
    V = randn(N, N, dtype=torch.complex128, seed=4)

    def hvp(chol):
        a = A.clone().requires_grad_()
        (g,) = torch.autograd.grad((W * chol(a)).real.sum(), a, create_graph=True)
        return torch.autograd.grad((g * V.conj()).real.sum(), a)[0]

    assert rel(hvp(bt.cholesky), hvp(TORCH_CHOLESKY)) < tol(A, 2)


@pytest.mark.parametrize("outer", ["jacfwd", "jacrev"])
@pytest.mark.parametrize("inner", ["jacfwd", "jacrev"])
def test_hessians_match_torch(small, outer, inner):
    """All four compositions of forward and reverse mode (torch.func.hessian is jacfwd(jacrev))."""
    A = spd(5)

    def f(chol):
        return lambda a: chol(_sym(a)).diagonal().log().sum() + chol(_sym(a))[3:, :3].sum()

    def hess(chol):
        return getattr(torch.func, outer)(getattr(torch.func, inner)(f(chol)))(A)

    assert rel(hess(bt.cholesky), hess(TORCH_CHOLESKY)) < tol(A, 2)


def test_cholesky_solve_jvp_of_jvp(small):
    L = TORCH_CHOLESKY(spd(5))
    B = randn(5, 2)
    dL, dB, dL2 = randn(5, 5, seed=2), randn(5, 2, seed=3), randn(5, 5, seed=4)

    def jvp2(solve):
        inner = lambda l: torch.func.jvp(lambda l_, b: solve(b, l_), (l, B), (dL, dB))[1]
        return torch.func.jvp(inner, (L,), (dL2,))[1]

    assert rel(jvp2(bt.cholesky_solve), jvp2(TORCH_CHOLESKY_SOLVE)) < tol(L @ L.mH, 2)


# --- torch.func ------------------------------------------------------------------------------

def _trace_logdet(chol):
    return lambda a: chol(a).diagonal(dim1=-2, dim2=-1).log().sum() + chol(a)[..., 5:, :5].sum()


def test_func_grad_and_jvp(calls):
    A = spd(N)
    g1 = torch.func.grad(_trace_logdet(bt.cholesky))(A)
    g2 = torch.func.grad(_trace_logdet(TORCH_CHOLESKY))(A)
    assert rel(g1, g2) < tol(A)
    T = _sym(randn(N, N))
    j1 = torch.func.jvp(bt.cholesky, (A,), (T,))[1]
    j2 = torch.func.jvp(TORCH_CHOLESKY, (A,), (T,))[1]
    assert rel(j1, j2) < tol(A)
    assert [c[0] for c in calls] == ["rev", "rev", "fwd"]     # the loss factors twice


def test_vmap_sends_one_stack_to_blockchol(calls):
    A = spd(N, batch=(5,))
    T = _sym(randn(5, N, N))
    f = torch.func.grad(lambda a: bt.cholesky(a).diagonal().log().sum())
    g1 = torch.func.vmap(f)(A)
    g2 = torch.func.vmap(torch.func.grad(lambda a: TORCH_CHOLESKY(a).diagonal().log().sum()))(A)
    assert rel(g1, g2) < tol(A)
    assert calls == [("rev", (5, N, N), (5, N, N))]
    calls.clear()
    j1 = torch.func.vmap(lambda a, t: torch.func.jvp(bt.cholesky, (a,), (t,))[1])(A, T)
    j2 = torch.func.vmap(lambda a, t: torch.func.jvp(TORCH_CHOLESKY, (a,), (t,))[1])(A, T)
    assert rel(j1, j2) < tol(A)
    # inside vmap the tangent's symmetry cannot be read: its (zero) anti-Hermitian part is
    # sent along too, and the anti-Hermitian part's numpy call returns zeros without calling chol_fwd
    assert calls == [("fwd", (5, N, N), (5, N, N))]
    calls.clear()
    g3 = torch.func.grad(lambda a: torch.func.vmap(bt.cholesky)(a).sum())(A)
    g4 = torch.func.grad(lambda a: torch.func.vmap(TORCH_CHOLESKY)(a).sum())(A)
    assert rel(g3, g4) < tol(A)
    assert calls == [("rev", (5, N, N), (5, N, N))]
    calls.clear()
    L, info = torch.func.vmap(bt.cholesky_ex)(A)
    assert torch.equal(L, TORCH_CHOLESKY(A)) and not info.any()


def test_jacrev_jacfwd(small, calls):
    n = 12
    A = spd(n)
    assert rel(torch.func.jacrev(bt.cholesky)(A), torch.func.jacrev(TORCH_CHOLESKY)(A)) < tol(A)
    assert calls == [("rev", (n, n), (n * n, n, n))]          # one call: all N² cotangents
    calls.clear()
    assert rel(torch.func.jacfwd(bt.cholesky)(A), torch.func.jacfwd(TORCH_CHOLESKY)(A)) < tol(A)
    # the basis tangents are not Hermitian: the Hermitian and the anti-Hermitian parts
    assert calls == [("fwd", (n, n), (n * n, n, n))] * 2


def test_vmap_over_cotangents_broadcasts_against_one_factor(small, calls):
    """vjp under vmap: one factor, many cotangents, one call."""
    A = spd(7)
    L, vjp = torch.func.vjp(bt.cholesky, A)
    G = randn(4, 7, 7)
    (g1,) = torch.func.vmap(vjp)(G)
    _, vjp2 = torch.func.vjp(TORCH_CHOLESKY, A)
    (g2,) = torch.func.vmap(vjp2)(G)
    assert rel(g1, g2) < tol(A)
    assert calls == [("rev", (7, 7), (4, 7, 7))]


# --- dispatch and fallbacks -----------------------------------------------------------------

def test_small_matrices_go_to_torch(calls, monkeypatch):
    """The dispatch follows CROSSOVER_N[dtype name], for single matrices and for each matrix
    of a stack."""
    assert set(bt.CROSSOVER_N) == {"float32", "float64", "complex64", "complex128"}
    monkeypatch.setattr(bt, "CROSSOVER_N", {"float64": 20, "complex128": 20,
                                            "float32": 30, "complex64": 30})
    for dtype, n, batch, served in [(torch.float64, 19, (), False), (torch.float64, 20, (), True),
                                    (torch.float64, 19, (64,), False),
                                    (torch.float64, 20, (3,), True),
                                    (torch.float32, 29, (), False), (torch.float32, 30, (), True),
                                    (torch.complex64, 29, (), False),
                                    (torch.complex64, 30, (), True)]:
        calls.clear()
        A = spd(n, dtype, batch).requires_grad_()
        bt.cholesky(A).real.sum().backward()
        torch.func.jvp(bt.cholesky, (A.detach(),), (spd(n, dtype, batch),))
        assert (len(calls) == 2 if not dtype.is_complex else len(calls) >= 2) == served, (dtype, n)
        assert served or calls == []


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.int64])
def test_unsupported_dtypes_get_torchs_own_errors(dtype):
    A = torch.eye(N).to(dtype)
    with pytest.raises((RuntimeError, NotImplementedError)) as theirs:
        TORCH_CHOLESKY(A)
    with pytest.raises(type(theirs.value)) as ours:
        bt.cholesky(A)
    assert str(ours.value) == str(theirs.value)


def test_tensor_subclass_goes_to_torch(calls):
    class Tagged(torch.Tensor):
        pass

    A = spd(N).as_subclass(Tagged).requires_grad_()
    L = bt.cholesky(A)
    assert type(L) is Tagged
    L.sum().backward()
    assert calls == []
    assert rel(A.grad.as_subclass(torch.Tensor), _torch_grad(spd(N), lambda L: L.sum())) < tol(A)


def _torch_grad(A, loss):
    A = A.clone().requires_grad_()
    (g,) = torch.autograd.grad(loss(TORCH_CHOLESKY(A)), A)
    return g


def test_meta_device_and_out_go_to_torch(calls):
    L = bt.cholesky(torch.empty(3, N, N, device="meta"))
    assert L.device.type == "meta" and L.shape == (3, N, N)
    L, info = bt.cholesky_ex(torch.empty(N, N, device="meta"))
    assert L.device.type == "meta"
    out = torch.empty(N, N, dtype=torch.float64)
    res = bt.cholesky(spd(N), out=out)
    assert res is out and torch.equal(out, TORCH_CHOLESKY(spd(N)))
    assert calls == []


def test_parameter_and_default_device_are_served(calls):
    A = torch.nn.Parameter(spd(N))
    with torch.device("cpu"):
        bt.cholesky(A).sum().backward()
    assert len(calls) == 1
    assert rel(A.grad, _torch_grad(spd(N), lambda L: L.sum())) < tol(A)


def test_no_grad_and_inference_mode(calls):
    A = spd(N)
    with torch.no_grad():
        assert torch.equal(bt.cholesky(A), TORCH_CHOLESKY(A))
    with torch.inference_mode():
        assert torch.equal(bt.cholesky(A), TORCH_CHOLESKY(A))
    assert calls == []


def test_shape_errors_are_torchs():
    for bad in (torch.ones(3, 4, dtype=torch.float64), torch.ones(70, dtype=torch.float64),
                torch.tensor(2.0, dtype=torch.float64)):
        with pytest.raises(RuntimeError) as theirs:
            TORCH_CHOLESKY(bad)
        with pytest.raises(RuntimeError) as ours:
            bt.cholesky(bad)
        assert str(ours.value) == str(theirs.value)


# --- cholesky_solve -----------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
@pytest.mark.parametrize("upper", [False, True])
@pytest.mark.parametrize("k", [1, 2])            # 2k < N (grouped products) and 2k ≥ N (dense)
def test_cholesky_solve_gradcheck(small, dtype, upper, k):
    L = TORCH_CHOLESKY(spd(4, dtype, (2,)), upper=upper).requires_grad_()
    B = randn(2, 1, 4, k, dtype=dtype).requires_grad_()
    tri = torch.triu if upper else torch.tril        # torch reads one triangle: perturb only it

    def f(b, l):
        return bt.cholesky_solve(b, tri(l), upper)

    # as in test_gradcheck_and_gradgradcheck
    assert gradcheck(f, (B, L), check_forward_ad=True, fast_mode=dtype.is_complex)
    assert gradgradcheck(f, (B, L), check_fwd_over_rev=True, fast_mode=True)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("upper", [False, True])
@pytest.mark.parametrize("k", [1, 3, 200])
def test_cholesky_solve_matches_torch(small, dtype, upper, k):
    n = 150
    L = TORCH_CHOLESKY(spd(n, dtype, (2,)), upper=upper)
    B = randn(3, 1, n, k, dtype=dtype)
    V = randn(3, 2, n, k, dtype=dtype, seed=5)
    Lr, Br = L.clone().requires_grad_(), B.clone().requires_grad_()
    X = bt.cholesky_solve(Br, Lr, upper)
    assert type(X.grad_fn) is bt._functions.CholeskySolve._backward_cls      # ours, not torch's
    assert torch.equal(X, TORCH_CHOLESKY_SOLVE(B, L, upper))
    ours = torch.autograd.grad(X, (Br, Lr), V)
    theirs = torch.autograd.grad(TORCH_CHOLESKY_SOLVE(Br, Lr, upper), (Br, Lr), V)
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape and rel(a, b) < tol(L @ L.mH)
    dB, dL = randn(*B.shape, dtype=dtype, seed=6), randn(*L.shape, dtype=dtype, seed=7)
    j1 = torch.func.jvp(lambda b, l: bt.cholesky_solve(b, l, upper), (B, L), (dB, dL))[1]
    j2 = torch.func.jvp(lambda b, l: TORCH_CHOLESKY_SOLVE(b, l, upper), (B, L), (dB, dL))[1]
    assert rel(j1, j2) < tol(L @ L.mH)


def test_cholesky_solve_backward_is_o_n2k(small):
    """Count the matrix-product flops of the backward with torch's own flop counter."""
    from torch.utils.flop_counter import FlopCounterMode
    n, k = 400, 1
    L = TORCH_CHOLESKY(spd(n)).requires_grad_()
    y = randn(n, k)

    def backward_flops(solve):
        X = solve(y, L)
        with FlopCounterMode(display=False) as counter:
            torch.autograd.grad(X, L, torch.ones_like(X))
        return counter.get_total_flops()

    ours, theirs = backward_flops(bt.cholesky_solve), backward_flops(TORCH_CHOLESKY_SOLVE)
    assert theirs >= 2 * n ** 3                     # torch: the dense N × N product
    assert 0 < ours <= 16 * n * n * k               # ours: four (N × k)-by-(k × N) products


def test_cholesky_solve_vmap(small):
    L = TORCH_CHOLESKY(spd(150, batch=(4,)))
    B = randn(4, 150, 2)
    f = torch.func.grad(lambda l, b: (bt.cholesky_solve(b, l) * b).sum())
    g = torch.func.grad(lambda l, b: (TORCH_CHOLESKY_SOLVE(b, l) * b).sum())
    assert rel(torch.func.vmap(f)(L, B), torch.func.vmap(g)(L, B)) < tol(L @ L.mH)


# --- accelerate() ----------------------------------------------------------------------------------

def _originals():
    return (torch.linalg.cholesky is TORCH_CHOLESKY and torch.linalg.cholesky_ex is TORCH_CHOLESKY_EX
            and torch.cholesky_solve is TORCH_CHOLESKY_SOLVE)


def _ours():
    return (torch.linalg.cholesky is bt.cholesky and torch.linalg.cholesky_ex is bt.cholesky_ex
            and torch.cholesky_solve is bt.cholesky_solve)


def test_accelerate_installs_and_restores(calls):
    assert _originals()
    with bt.accelerate():
        assert _ours()
        A = spd(N).requires_grad_()
        torch.linalg.cholesky(A).sum().backward()
    assert _originals() and len(calls) == 1


def test_accelerate_restores_after_an_exception():
    with pytest.raises(KeyError):
        with bt.accelerate():
            assert _ours()
            raise KeyError("boom")
    assert _originals()

    @bt.accelerate
    def fails():
        assert _ours()
        raise ValueError("boom")

    with pytest.raises(ValueError):
        fails()
    assert _originals()


def test_accelerate_nests_and_decorates():
    @bt.accelerate()
    def inner():
        return _ours()

    with bt.accelerate():
        with bt.accelerate():
            assert _ours()
        assert _ours()                    # the inner exit does not restore
        assert inner() and _ours()
    assert _originals()
    assert inner.__name__ == "inner" and inner() and _originals()


def test_accelerate_from_several_threads():
    barrier = threading.Barrier(4)
    seen = []

    def work():
        with bt.accelerate():
            barrier.wait()
            seen.append(_ours())
            barrier.wait()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == [True] * 4 and _originals()


def test_backward_outside_accelerate_still_goes_through_blockchol(calls):
    """The rule is attached when the forward runs: the backward may come after the block."""
    A = spd(N).requires_grad_()
    with bt.accelerate():
        L = torch.linalg.cholesky(A)
    assert _originals()
    L.diagonal().log().sum().backward()
    assert len(calls) == 1 and rel(A.grad, torch.linalg.inv(A.detach()) / 2) < tol(A)


def test_accelerate_leaves_torch_code_unchanged_below_the_crossover(calls):
    A = spd(8).requires_grad_()
    assert 8 < bt.CROSSOVER_N["float64"]
    with bt.accelerate():
        torch.linalg.cholesky(A).sum().backward()
    # torch's own rule, the same operations: bit for bit
    assert calls == [] and torch.equal(A.grad, _torch_grad(spd(8), lambda L: L.sum()))
