"""blockchol inside torch: the gradient of a GP negative log marginal likelihood.

The ``frameworks-torch`` suite of ``python -m bench``.  It times
``torch.autograd.grad(nll(theta), theta)`` with respect to the kernel's
hyperparameters (ARD RBF kernel on 3 inputs: three lengthscales, signal and
noise variance), where ``nll`` is torch written the ordinary way: it builds
K, factors it with ``torch.linalg.cholesky``, solves with
``torch.cholesky_solve`` and takes the log-determinant from the factor's
diagonal.  The same function runs inside ``blockchol.torch.accelerate()``
(blockchol's default method, and ``method="sweep"`` forced) and as it is
(torch's own rules, the baseline): float64, the same data, interleaved, the
first call never timed.  Each gradient is checked against the closed form
½ tr((K⁻¹ − ααᵀ) ∂K/∂θ), α = K⁻¹y, computed with numpy and scipy.

Then the same for GPyTorch's ``ExactGP`` (ConstantMean,
ScaleKernel(RBFKernel(ard_num_dims=3)), GaussianLikelihood) on its Cholesky
path (``gpytorch.settings.max_cholesky_size``), checked against the closed
form mapped through GPyTorch's softplus constraints; where one gradient's
time goes at the largest N (``profile``); and the sizes below which torch's
own rules are faster than blockchol's (``crossover``: ``blockchol.torch.CROSSOVER_N``,
``SOLVE_CROSSOVER_N``, ``SINGLE_THREAD_N``).
"""

import contextlib
import math
import sys

import numpy as np
import scipy.linalg

from .harness import with_method
from .suites import GP_DIMS as DIMS, gp_problem

__all__ = ["SIZES", "run", "gp_problem", "nll", "reference_gradient", "gpytorch_problem",
           "gpytorch_gradient", "gpytorch_reference"]

SIZES = {"full": (100, 1000, 2000, 3000, 4000), "quick": (100, 1000)}
# float64 throughout; the check's threshold: cond(K) is at most about
# N·(signal + noise)/noise = 4e4 at N = 4000, so a correct gradient is within
# ~cond·eps·sqrt(N) ≈ 1e-10 of the closed form relative to its largest
# entry; a wrong rule (a missing symmetrization, a lost factor 2) is O(1) off.
TOLERANCE = 1e-7

OURS = "accelerate()"
OURS_SWEEP = "accelerate(), method='sweep'"
BASELINE = "torch's own rules"
# Seconds slept before each sample: OpenBLAS's workers (scipy's, which
# blockchol uses) spin ~2^28 cycles (~0.1 s) after each call before they
# sleep, and torch's ops running meanwhile share the cores with them.  With
# the pause each sample pays only for its own spinning (blockchol's inside
# its own gradient counts against it, as it would in a program).  Below
# CROSSOVER_N blockchol is not called, and the pause would only make every sample
# start with cold caches and sleeping pools, so it is skipped there.
SETTLE = 0.25


def _torch():
    import torch
    import blockchol.torch as bt
    return torch, bt


# ---------------------------------------------------------------------------
# The problem

def kernel(theta, X):
    """K = σ_f² exp(−½ Σ_d (x_d − x'_d)² / ℓ_d²) + σ_n² I, in torch."""
    torch, _ = _torch()
    ell, signal, noise = theta[:DIMS].exp(), theta[DIMS].exp(), theta[DIMS + 1].exp()
    Z = X / ell
    sq = (Z * Z).sum(-1)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * (Z @ Z.mT)).clamp_min(0.0)
    return signal * torch.exp(-0.5 * d2) + noise * torch.eye(X.shape[0], dtype=X.dtype)


def nll(theta, X, y):
    """The negative log marginal likelihood, written against torch's public functions.

    ``torch.linalg.cholesky`` and ``torch.cholesky_solve`` are looked up when
    called, so inside ``accelerate()`` they are blockchol.torch's.
    """
    torch, _ = _torch()
    K = kernel(theta, X)
    L = torch.linalg.cholesky(K)
    alpha = torch.cholesky_solve(y[:, None], L)
    n = X.shape[0]
    return 0.5 * (y[:, None] * alpha).sum() + L.diagonal().log().sum() + 0.5 * n * math.log(2 * math.pi)


def reference_gradient(theta, X, y):
    """d nll / d theta = ½ tr((K⁻¹ − ααᵀ) ∂K/∂θ), in numpy and scipy (no torch, no blockchol)."""
    M, rbf, diff2, noise = _reference_parts(theta, X, y)
    grads = [0.5 * np.sum(M * rbf * diff2[d]) for d in range(DIMS)]          # ∂K/∂log ℓ_d
    grads.append(0.5 * np.sum(M * rbf))                                      # ∂K/∂log σ_f²
    grads.append(0.5 * noise * np.trace(M))                                  # ∂K/∂log σ_n²
    return np.array(grads)


def _reference_parts(theta, X, y, mean=0.0):
    ell, signal, noise = np.exp(theta[:DIMS]), np.exp(theta[DIMS]), np.exp(theta[DIMS + 1])
    n = X.shape[0]
    diff2 = [(X[:, d, None] - X[None, :, d]) ** 2 / ell[d] ** 2 for d in range(DIMS)]
    rbf = signal * np.exp(-0.5 * sum(diff2))
    factor = scipy.linalg.cho_factor(rbf + noise * np.eye(n), lower=True)
    alpha = scipy.linalg.cho_solve(factor, y - mean)
    M = scipy.linalg.cho_solve(factor, np.eye(n)) - np.outer(alpha, alpha)   # K⁻¹ − ααᵀ
    return M, rbf, diff2, noise


def gpytorch_problem(n, seed=0):
    """``(model, mll, X, y)``: an ExactGP on the GP suite's data, at its hyperparameters."""
    import gpytorch
    torch, _ = _torch()
    theta, X, y = gp_problem(n, seed)
    X, y = torch.from_numpy(X), torch.from_numpy(y)

    class GP(gpytorch.models.ExactGP):
        def __init__(self, x, y, likelihood):
            super().__init__(x, y, likelihood)
            self.mean_module = gpytorch.means.ConstantMean()
            self.covar_module = gpytorch.kernels.ScaleKernel(
                gpytorch.kernels.RBFKernel(ard_num_dims=DIMS))

        def forward(self, x):
            return gpytorch.distributions.MultivariateNormal(self.mean_module(x),
                                                             self.covar_module(x))

    likelihood = gpytorch.likelihoods.GaussianLikelihood().double()
    model = GP(X, y, likelihood).double()
    ell, signal, noise = np.exp(theta[:DIMS]), np.exp(theta[DIMS]), np.exp(theta[DIMS + 1])
    model.covar_module.base_kernel.lengthscale = torch.from_numpy(ell)[None, :]
    model.covar_module.outputscale = float(signal)
    likelihood.noise = float(noise)
    model.mean_module.constant = 0.1
    model.train()
    likelihood.train()
    return model, gpytorch.mlls.ExactMarginalLogLikelihood(likelihood, model), X, y


def gpytorch_gradient(model, mll, X, y):
    """Gradient of −mll with respect to the raw parameters, on GPyTorch's Cholesky path."""
    import gpytorch
    torch, _ = _torch()
    params = [p for _, p in model.named_parameters()]
    with gpytorch.settings.max_cholesky_size(10 ** 7):
        loss = -mll(model(X), y)
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)])


def gpytorch_reference(model, X, y):
    """The same gradient in closed form (numpy/scipy), chained through the softplus constraints.

    −mll = (½ (y−μ)ᵀ K⁻¹ (y−μ) + ½ log det K + N/2 log 2π) / N, with
    K = s · exp(−½ Σ_d Δ_d²/ℓ_d²) + σ² I; each hyperparameter is
    softplus(raw) (+ a lower bound for the noise), d value / d raw = sigmoid(raw).
    """
    torch, _ = _torch()
    Xn, yn = X.numpy(), y.numpy()
    n = Xn.shape[0]
    lik = model.likelihood
    ell = model.covar_module.base_kernel.lengthscale.detach().numpy().reshape(-1)
    signal = float(model.covar_module.outputscale.detach())
    noise = float(lik.noise.detach())
    mean = float(model.mean_module.constant.detach())
    theta = np.log(np.concatenate([ell, [signal, noise]]))
    M, rbf, diff2, _ = _reference_parts(theta, Xn, yn, mean)
    factor = scipy.linalg.cho_factor(rbf + noise * np.eye(n), lower=True)
    alpha = scipy.linalg.cho_solve(factor, yn - mean)
    by_value = {
        "likelihood.noise_covar.raw_noise": [0.5 * np.trace(M)],
        "mean_module.raw_constant": [-alpha.sum()],
        "covar_module.raw_outputscale": [0.5 * np.sum(M * rbf) / signal],
        "covar_module.base_kernel.raw_lengthscale":
            [0.5 * np.sum(M * rbf * diff2[d]) / ell[d] for d in range(DIMS)],
    }
    out = []
    for name, p in model.named_parameters():
        g = np.array(by_value[name]) / n
        if name != "mean_module.raw_constant":                 # softplus'(raw) = sigmoid(raw)
            g = g * torch.sigmoid(p.detach()).numpy().reshape(-1)
        out.append(g)
    return np.concatenate(out)


def relative_difference(answer, reference):
    """max |answer − reference| / max |reference|; inf for NaN, inf or a shape mismatch."""
    answer, reference = np.asarray(answer, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if answer.shape != reference.shape or not np.isfinite(answer).all():
        return float("inf")
    return float(np.abs(answer - reference).max() / np.abs(reference).max())


def _checker(reference):
    def check(name, out):
        err = relative_difference(out.numpy(), reference)
        return err, err <= TOLERANCE
    return check


def _no_check(name, out):
    return None, True


def _accelerated(thunk):
    _, bt = _torch()

    def accelerated():
        with bt.accelerate():
            return thunk()
    return accelerated


def _gp_gradient(n):
    torch, _ = _torch()
    theta, X, y = gp_problem(n)
    t, X, y = (torch.from_numpy(a) for a in (theta, X, y))
    t.requires_grad_()
    return lambda: torch.autograd.grad(nll(t, X, y), t)[0]


def gp(b):
    """The GP gradient with and without accelerate(), per N."""
    torch, bt = _torch()
    cases = [("frameworks-torch", lambda n: (_gp_gradient(n),
                                             reference_gradient(*gp_problem(n))))]
    try:
        import gpytorch  # noqa: F401
    except ImportError as error:
        b.note("frameworks-torch: GPyTorch suite skipped (%s)" % error)
    else:
        def gpytorch_case(n):
            model, mll, X, y = gpytorch_problem(n)
            return (lambda: gpytorch_gradient(model, mll, X, y)), gpytorch_reference(model, X, y)
        cases.append(("frameworks-torch-gpytorch", gpytorch_case))
    for n in SIZES["quick" if b.quick else "full"]:
        for suite, case in cases:
            plain, reference = case(n)
            impls = {OURS: _accelerated(plain), BASELINE: plain}
            served = n >= bt.CROSSOVER_N["float64"]
            if served:
                impls[OURS_SWEEP] = with_method("sweep", impls[OURS])
            b.compare(suite, "GP gradient, N=%d" % n, impls, _checker(reference),
                      baseline=BASELINE, settle=SETTLE if served else 0.0, n=n,
                      path="" if served else "torch's own rule below CROSSOVER_N")


def profile(b, n):
    """The parts of one GP gradient at size n, timed side by side (differences give the rest)."""
    torch, bt = _torch()
    import blockchol
    theta, X, y = (torch.from_numpy(a) for a in gp_problem(n))
    theta.requires_grad_()
    with torch.no_grad():
        K = kernel(theta, X)
        L = bt._torch_cholesky(K)
    K_bar = torch.randn(n, n, dtype=K.dtype, generator=torch.Generator().manual_seed(0))
    K_bar = K_bar + K_bar.mT

    def tail(L, solve):
        alpha = solve(y[:, None], L)
        return 0.5 * (y[:, None] * alpha).sum() + L.diagonal().log().sum()

    Lr = L.clone().requires_grad_()
    L_bar = torch.autograd.grad(tail(Lr, bt._torch_cholesky_solve), Lr)[0]
    L_np, Lb_np = L.numpy(), L_bar.numpy()
    Kr = K.clone().requires_grad_()

    def chol_backward(chol):
        return lambda: torch.autograd.grad(chol(Kr), Kr, L_bar)[0]

    def tail_grad(solve):
        return lambda: torch.autograd.grad(tail(Lr, solve), Lr)[0]

    whole = _gp_gradient(n)
    impls = {
        "kernel matrix (forward)": lambda: kernel(theta.detach(), X),
        "kernel matrix, forward + backward to theta": lambda: torch.autograd.grad(
            kernel(theta, X), theta, K_bar)[0],
        "potrf (torch.linalg.cholesky, no grad)": lambda: bt._torch_cholesky(K),
        "Cholesky backward incl. potrf, torch's rule": chol_backward(bt._torch_cholesky),
        "Cholesky backward incl. potrf, blockchol": chol_backward(
            lambda A: bt._functions.Cholesky.apply(A, False)),
        "blockchol.chol_rev alone (numpy, symmetric=True)": lambda: blockchol.chol_rev(
            L_np, Lb_np, symmetric=True),
        "cholesky_solve + logdet, grad wrt L, torch's rule": tail_grad(bt._torch_cholesky_solve),
        "cholesky_solve + logdet, grad wrt L, blockchol.torch": tail_grad(
            lambda B, L_: bt._functions.CholeskySolve.apply(B, L_, False)),
        "GP gradient, torch's own rules": whole,
        "GP gradient, accelerate()": _accelerated(whole),
    }
    b.compare("frameworks-torch-profile", "N=%d" % n, impls, _no_check,
              baseline="Cholesky backward incl. potrf, torch's rule", settle=SETTLE, n=n)


# (dtype, batch, sizes, modes) of the crossover measurement
CROSSOVER_CASES = {
    "full": (("float64", (), (64, 128, 256, 384, 512, 768, 1024, 1536, 2048), ("backward",)),
             ("float64", (), (128, 512, 1024), ("jvp",)),
             ("float32", (), (128, 256, 512, 1024, 1536), ("backward",)),
             ("complex128", (), (128, 256, 512, 1024), ("backward",)),
             ("float64", (16,), (16, 32, 64, 128), ("backward",)),
             ("float64", (64,), (8, 16, 32, 64), ("backward",))),
    "quick": (("float64", (), (256, 1024), ("backward",)),),
}
SOLVE_SIZES = {"full": (64, 128, 192, 256, 384, 512), "quick": (128,)}


@contextlib.contextmanager
def _single_thread_below(value):
    """blockchol.torch.SINGLE_THREAD_N = value for the block."""
    _, bt = _torch()
    saved = bt.SINGLE_THREAD_N
    bt.SINGLE_THREAD_N = value
    try:
        yield
    finally:
        bt.SINGLE_THREAD_N = saved


def crossover(b):
    """blockchol.torch's rules against torch's own at small and medium sizes, the dispatch forced.

    cholesky: the backward of sum(Re(cholesky(A) ⊙ W)) (the factorization
    included) and the jvp, single matrices and stacks, blockchol run
    single-threaded and on the BLAS pools as they are, by the default method
    (these well-conditioned matrices get the sweep from N = 500) and by the
    closed form; cholesky_solve: the
    backward of sum(cholesky_solve(b, L) ⊙ b) with respect to L and b, one
    right-hand side.  Where blockchol's ratio to torch's rule is above 1,
    the dispatch keeps torch's own rule (CROSSOVER_N, SOLVE_CROSSOVER_N); where
    threads=1 beats the pools, blockchol runs single-threaded
    (SINGLE_THREAD_N).
    """
    torch, bt = _torch()
    g = torch.Generator().manual_seed(0)
    which = "quick" if b.quick else "full"

    def spd(batch, n, dtype):
        X = torch.randn(*batch, n, n + 3, dtype=dtype, generator=g)
        return X @ X.mH / n + torch.eye(n, dtype=dtype)

    def setting(value, thunk):
        if value is None:
            return thunk

        def run():
            with _single_thread_below(value):
                return thunk()
        return run

    ours = lambda a: bt._functions.Cholesky.apply(a, False)         # noqa: E731
    # name -> (cholesky, SINGLE_THREAD_N while the thunk runs)
    rules = {"torch's rule": (bt._torch_cholesky, None),
             "blockchol, threads=1": (ours, sys.maxsize),
             "blockchol, BLAS pools": (ours, 0)}
    for dtype_name, batch, sizes, modes in CROSSOVER_CASES[which]:
        dtype = getattr(torch, dtype_name)
        for n in sizes:
            A = spd(batch, n, dtype).requires_grad_()
            W = torch.randn(*batch, n, n, dtype=dtype, generator=g)
            T = spd(batch, n, dtype)
            make = {"backward": lambda chol: lambda: torch.autograd.grad(
                        (chol(A) * W).real.sum(), A)[0],
                    "jvp": lambda chol: lambda: torch.func.jvp(chol, (A.detach(),), (T,))[1]}
            for mode in modes:
                impls = {name: setting(value, make[mode](chol)) for name, (chol, value) in rules.items()}
                # The closed form is the slower of blockchol's two paths, and the one GP
                # matrices (condition > AUTO_SWEEP_KAPPA) get: the crossover must hold for it.
                impls["blockchol closed form, BLAS pools"] = with_method(
                    "closed", impls["blockchol, BLAS pools"])
                case = "cholesky %s %s N=%d %s" % (dtype_name, "x".join(map(str, batch)) or "single",
                                                   n, mode)
                b.compare("frameworks-torch-crossover", case, impls, _no_check,
                          baseline="torch's rule", budget=1.0, settle=SETTLE, n=n,
                          batch=list(batch), dtype=dtype_name, mode=mode)
    for n in SOLVE_SIZES[which]:
        L = bt._torch_cholesky(spd((), n, torch.float64)).requires_grad_()
        rhs = torch.randn(n, 1, dtype=torch.float64, generator=g).requires_grad_()

        def solve_grad(solve):
            return lambda: torch.autograd.grad((solve(rhs, L) * rhs).sum(), (rhs, L))

        b.compare("frameworks-torch-crossover", "cholesky_solve float64 N=%d k=1" % n,
                  {"torch's rule": solve_grad(bt._torch_cholesky_solve),
                   "blockchol.torch": solve_grad(lambda B, L_: bt._functions.CholeskySolve.apply(B, L_, False))},
                  _no_check, baseline="torch's rule", budget=1.0, settle=SETTLE, n=n, dtype="float64")


def run(b):
    """The ``frameworks-torch`` suite: the GP and GPyTorch gradients, the profile, the crossover."""
    torch, _ = _torch()
    b.note("frameworks-torch: torch %s, %d intra-op threads" % (torch.__version__,
                                                               torch.get_num_threads()))
    gp(b)
    profile(b, 1000 if b.quick else 4000)
    crossover(b)
