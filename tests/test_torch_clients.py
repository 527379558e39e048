"""blockchol.torch inside its clients: __torch_function__ objects, linear_operator, GPyTorch.

The clients' own code is the oracle: the same computation with and without
``accelerate()``, compared.  Import order matters for linear_operator (it
records ``torch.linalg.cholesky`` as a dispatch key when it is imported), so
those tests run in fresh interpreters, where the order is real.

Tolerances: GP covariances K = s·k(X, X) + σ² I have κ(K) ≤ 1 + N·s/σ²; two
correct gradients differ by about N · eps · κ relative to the largest entry,
and the bar is 20 times that.  A wrong rule is off by O(1).
"""


import pytest
import torch

import blockchol
import blockchol.torch as bt
from helpers import run_python

TORCH_CHOLESKY = torch.linalg.cholesky
TORCH_CHOLESKY_EX = torch.linalg.cholesky_ex
TORCH_CHOLESKY_SOLVE = torch.cholesky_solve


@pytest.fixture
def lowered(monkeypatch):
    """Every crossover at 0: blockchol serves every size."""
    monkeypatch.setattr(bt, "CROSSOVER_N", dict.fromkeys(bt.CROSSOVER_N, 0))
    monkeypatch.setattr(bt, "SOLVE_CROSSOVER_N", 0)


@pytest.fixture
def calls(monkeypatch):
    """Record the calls into blockchol.chol_rev / chol_fwd: (name, L.shape)."""
    log = []
    for name in ("chol_rev", "chol_fwd"):
        real = getattr(blockchol, name)
        monkeypatch.setattr(blockchol, name, (lambda real, name: lambda L, X, **kw: (
            log.append((name, L.shape)), real(L, X, **kw))[1])(real, name))
    return log


def _spd(n, dtype=torch.float64):
    X = torch.randn(n, n, dtype=dtype, generator=torch.Generator().manual_seed(0))
    return X @ X.mH / n + torch.eye(n, dtype=dtype)


# --- __torch_function__ objects: called exactly as torch calls them -----------------------------

class Recorder:
    """An object with __torch_function__ that records how torch dispatched to it."""

    def __init__(self, n):
        self.shape = (n, n)
        self.seen = []

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        recorder = next(a for a in args if isinstance(a, Recorder))
        recorder.seen.append((func, args, kwargs))
        return "handled"


def _torch_calls(n, t):
    """(name, how torch's function is called, how ours is): each call with a Recorder r."""
    return [
        (lambda f, r: f(r), TORCH_CHOLESKY, bt.cholesky),
        (lambda f, r: f(r, upper=True), TORCH_CHOLESKY, bt.cholesky),
        (lambda f, r: f(r), TORCH_CHOLESKY_EX, bt.cholesky_ex),
        (lambda f, r: f(r, check_errors=True), TORCH_CHOLESKY_EX, bt.cholesky_ex),
        (lambda f, r: f(t, r), TORCH_CHOLESKY_SOLVE, bt.cholesky_solve),
        (lambda f, r: f(r, t, False), TORCH_CHOLESKY_SOLVE, bt.cholesky_solve),
    ]


@pytest.mark.parametrize("n", [3, 2048])
def test_torch_function_objects_see_torchs_call(n):
    """The same func, args and kwargs (no out=None added) as torch's own call gives them,
    at any size (a Recorder's shape is not read)."""
    t = torch.randn(n, 1, dtype=torch.float64)
    for call, theirs, ours in _torch_calls(n, t):
        a, b = Recorder(n), Recorder(n)
        assert call(theirs, a) == call(ours, b) == "handled"
        assert len(a.seen) == len(b.seen) == 1
        (f1, args1, kw1), (f2, args2, kw2) = a.seen[0], b.seen[0]
        assert f1 is f2 is theirs
        assert kw1 == kw2 and len(args1) == len(args2)
        assert all(x is y or (x is a and y is b) for x, y in zip(args1, args2))


@pytest.mark.parametrize("crossovers", ["default", "lowered"])
def test_dense_linear_operator_behaves_as_with_torch(request, crossovers):
    """bt.cholesky(linop) is linear_operator's Cholesky; cholesky_ex and cholesky_solve raise
    linear_operator's NotImplementedError, as torch's own do."""
    pytest.importorskip("linear_operator")
    from linear_operator.operators import DenseLinearOperator
    if crossovers == "lowered":
        request.getfixturevalue("lowered")
    A = _spd(6)
    op = DenseLinearOperator(A)
    B = torch.randn(6, 2, dtype=torch.float64)
    for upper in (False, True):
        ours, theirs = bt.cholesky(op, upper=upper), TORCH_CHOLESKY(op, upper=upper)
        assert type(ours) is type(theirs)
        assert torch.equal(ours.to_dense(), theirs.to_dense())
    for call in (lambda f: f(op), lambda f: f(op, check_errors=True)):
        with pytest.raises(NotImplementedError) as e1:
            call(TORCH_CHOLESKY_EX)
        with pytest.raises(NotImplementedError) as e2:
            call(bt.cholesky_ex)
        assert str(e1.value) == str(e2.value)
    for call in (lambda f: f(B, op), lambda f: f(op, B)):
        with pytest.raises(NotImplementedError) as e1:
            call(TORCH_CHOLESKY_SOLVE)
        with pytest.raises(NotImplementedError) as e2:
            call(bt.cholesky_solve)
        assert str(e1.value) == str(e2.value)


# --- linear_operator in both import orders ---------------------------------------------------------

_IMPORT_ORDER = """
import torch
{first}
{second}
from linear_operator.operators import DenseLinearOperator
import blockchol.torch as bt

bt.CROSSOVER_N = dict.fromkeys(bt.CROSSOVER_N, 0)      # blockchol serves the dense factor too
X = torch.randn(40, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
A = X @ X.mT / 40 + torch.eye(40, dtype=torch.float64)
W = torch.randn(40, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


def gradient():
    a = A.clone().requires_grad_()
    L = torch.linalg.cholesky(DenseLinearOperator(a)).to_dense()
    return torch.autograd.grad((W * L).sum(), a)[0]


plain = gradient()
with bt.accelerate():
    assert torch.linalg.cholesky is bt.cholesky
    inside = gradient()
outside = gradient()                                   # and after accelerate() exits
bar = 20 * 40 * torch.finfo(torch.float64).eps * torch.linalg.cond(A).item()
for g in (inside, outside):
    assert ((g - plain).abs().max() / plain.abs().max()).item() < bar
print("ok")
"""


@pytest.mark.parametrize("order", ["linear_operator first", "under accelerate()"])
def test_linear_operator_in_both_import_orders(order):
    """If accelerate() is active while linear_operator is imported, linear_operator records
    the installed function as its dispatch key: torch.linalg.cholesky(linop) must still work,
    under accelerate() and after it exits."""
    pytest.importorskip("linear_operator")
    if order == "linear_operator first":
        first, second = "import linear_operator", "import blockchol.torch"
    else:
        first = "import blockchol.torch as bt\n_active = bt.accelerate()\n_active.__enter__()"
        second = "import linear_operator\n_active.__exit__(None, None, None)"
    r = run_python(_IMPORT_ORDER.format(first=first, second=second), timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-3000:]


def test_installed_functions_are_torchs_for_dispatch_tables():
    """A table keyed by the installed function (as linear_operator's is when it is imported
    under accelerate()) finds torch's own function, and the other way round."""
    for ours, theirs in ((bt.cholesky, TORCH_CHOLESKY), (bt.cholesky_ex, TORCH_CHOLESKY_EX),
                         (bt.cholesky_solve, TORCH_CHOLESKY_SOLVE)):
        assert ours == theirs and theirs == ours and hash(ours) == hash(theirs)
        assert {ours: "x"}.get(theirs) == "x" and {theirs: "y"}.get(ours) == "y"
    assert bt.cholesky != bt.cholesky_ex


# --- GPyTorch's ExactGP: a short training loop ---------------------------------------------------

def _exact_gp(n, seed=0):
    gpytorch = pytest.importorskip("gpytorch")
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n, 2, dtype=torch.float64, generator=g) * 4
    y = torch.sin(X).sum(-1) + 0.1 * torch.randn(n, dtype=torch.float64, generator=g)

    class GP(gpytorch.models.ExactGP):
        def __init__(self, x, y, likelihood):
            super().__init__(x, y, likelihood)
            self.mean = gpytorch.means.ConstantMean()
            self.covar = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel(ard_num_dims=2))

        def forward(self, x):
            return gpytorch.distributions.MultivariateNormal(self.mean(x), self.covar(x))

    likelihood = gpytorch.likelihoods.GaussianLikelihood().double()
    model = GP(X, y, likelihood).double()
    model.covar.base_kernel.lengthscale = torch.tensor([[0.7, 1.3]], dtype=torch.float64)
    return gpytorch, model, likelihood, X, y


def _train(n, steps, max_cholesky_size):
    """Loss and gradients of each step of Adam on the exact marginal likelihood."""
    gpytorch, model, likelihood, X, y = _exact_gp(n)
    torch.manual_seed(0)           # GPyTorch's iterative path draws random probe vectors
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(likelihood, model)
    params = list(model.parameters())
    optimizer = torch.optim.Adam(params, lr=0.1)
    trace = []
    model.train()
    with gpytorch.settings.max_cholesky_size(max_cholesky_size):
        for _ in range(steps):
            optimizer.zero_grad()
            loss = -mll(model(X), y)
            loss.backward()
            trace.append((loss.detach(), [p.grad.clone() for p in params]))
            optimizer.step()
    noise, scale = likelihood.noise.item(), model.covar.outputscale.item()
    return trace, 1 + n * scale / noise


@pytest.mark.parametrize("n, max_cholesky_size, crossovers", [
    (300, None, "lowered"),        # GPyTorch's default max_cholesky_size (800): its Cholesky path
    (900, None, "lowered"),        # above the default: GPyTorch's iterative path
    (1100, 2000, "default"),       # max_cholesky_size raised above N, the default crossover
])
def test_gpytorch_exact_gp_training(request, calls, n, max_cholesky_size, crossovers):
    gpytorch = pytest.importorskip("gpytorch")
    if crossovers == "lowered":
        request.getfixturevalue("lowered")
    if max_cholesky_size is None:
        max_cholesky_size = gpytorch.settings.max_cholesky_size.value()
    plain, kappa = _train(n, 3, max_cholesky_size)
    assert calls == []
    with bt.accelerate():
        fast, _ = _train(n, 3, max_cholesky_size)
    cholesky_path = n <= max_cholesky_size
    # on GPyTorch's Cholesky path the gradient went through blockchol, once per step
    assert (calls == [("chol_rev", (n, n))] * 3) if cholesky_path else calls == []
    bar = 20 * n * torch.finfo(torch.float64).eps * kappa
    for (l1, g1), (l2, g2) in zip(fast, plain):
        assert abs((l1 - l2).item()) <= bar * abs(l2.item())
        for a, b in zip(g1, g2):
            assert ((a - b).abs().max() / b.abs().max()).item() <= bar


def test_gpytorch_predictions_through_accelerate(lowered):
    """Predictions (GPyTorch's cholesky_solve path) agree too."""
    gpytorch, model, likelihood, X, y = _exact_gp(300)
    Xt = torch.rand(20, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 4
    seen = []
    model.eval()

    def predict():
        with gpytorch.settings.fast_pred_var(False):
            p = likelihood(model(Xt))
            return p.mean.detach(), p.variance.detach()

    plain = predict()
    real_solve = bt._functions._torch_cholesky_solve
    with bt.accelerate(), pytest.MonkeyPatch.context() as mp:
        mp.setattr(bt._functions, "_torch_cholesky_solve",
                   lambda *a, **k: (seen.append("solve"), real_solve(*a, **k))[1])
        model.prediction_strategy = None                  # recomputed under accelerate()
        fast = predict()
    assert seen
    noise, scale = likelihood.noise.item(), model.covar.outputscale.item()
    bar = 20 * 300 * torch.finfo(torch.float64).eps * (1 + 300 * scale / noise)
    for a, b in zip(fast, plain):
        assert ((a - b).abs().max() / b.abs().max()).item() <= bar
