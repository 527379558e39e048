"""Fit a Gaussian process by maximum marginal likelihood, with the gradient through chol_rev.

    python -m blockchol.demo                      # synthetic data, N=2000, D=3
    python -m blockchol.demo --data co2           # Mauna Loa CO2 (needs statsmodels)
    python -m blockchol.demo --data my.csv --plot fit.png

The model is exact GP regression with an ARD squared-exponential kernel and
Gaussian noise,

    K(theta) = sf2 * exp(-1/2 sum_d (x_id - x_jd)^2 / ell_d^2) + sn2 * I,

with theta = log(ell_1, ..., ell_D, sf2, sn2).  The gradient of the log
marginal likelihood f is computed the way an autodiff system would, one step
at a time in reverse:

    theta -> K -> L = chol(K) -> f(L)           forward
    L_bar = df/dL                               by hand, below
    K_bar = df/dK = blockchol.chol_rev(L, L_bar)
    theta_bar_p = sum_ij K_bar_ij dK_ij/dtheta_p, one parameter at a time

and checked against the textbook closed form and finite differences before
L-BFGS-B uses it.  The end of the run times one gradient evaluation and the
same gradient by the closed form (K^-1 from the factor) and by GPy.
"""

import argparse
import csv
import time

import numpy as np
import scipy.linalg
import scipy.optimize
from scipy.spatial.distance import cdist
from threadpoolctl import threadpool_limits

from blockchol import chol_rev

TRUE_ELL = (0.8, 1.5, 3.0)   # synthetic truth: lengthscales (cycled for more dims),
TRUE_SF2 = 1.0               # signal variance
TRUE_SN2 = 0.01              # and noise variance; inputs are uniform on [0, 5]^D
MAX_ITER = 60                # L-BFGS-B iterations
FD_STEP = 1e-5               # central finite differences, in log-parameters


class DemoError(Exception):
    """Bad input or an unusable kernel: reported as one line, no traceback."""


# --------------------------------------------------------------------------
# The model: kernel, log marginal likelihood and its gradient

def unpack(theta):
    """log-parameters -> (lengthscales, signal variance, noise variance)."""
    p = np.exp(theta)
    return p[:-2], p[-2], p[-1]


def se_kernel(X1, X2, ell, sf2):
    """ARD squared exponential: sf2 * exp(-1/2 |(x1 - x2) / ell|^2)."""
    return sf2 * np.exp(-0.5 * cdist(X1 / ell, X2 / ell, "sqeuclidean"))


def cholesky(K, theta):
    """Lower Cholesky factor of K; DemoError, with the jitter it would need, if K is not PD."""
    try:
        return scipy.linalg.cholesky(K, lower=True, check_finite=False)
    except np.linalg.LinAlgError:
        pass
    ell, sf2, sn2 = unpack(theta)
    if not np.isfinite(K).all():
        raise DemoError("the kernel matrix overflowed (lengthscales %s, signal variance "
                        "%.3g, noise variance %.3g)" % (ell, sf2, sn2))
    # Find how much must be added to the diagonal: minus the smallest
    # eigenvalue, plus the rounding error of the factorization (about
    # N eps max K_ii), grown 10x at a time until the factorization goes through.
    lam = scipy.linalg.eigvalsh(K, subset_by_index=[0, 0])[0]
    start = max(-lam, 0.0) + len(K) * np.finfo(float).eps * np.diag(K).max()
    for jitter in start * 10.0 ** np.arange(17):
        try:
            scipy.linalg.cholesky(K + jitter * np.eye(len(K)), lower=True, check_finite=False)
            break
        except np.linalg.LinAlgError:
            pass
    # Barely factorizable is still too close to singular for accurate
    # gradients: suggest at least the customary jitter of 1e-6 sf2.
    suggest = max(sn2 + jitter, 1e-6 * sf2)
    raise DemoError(
        "the kernel matrix is not positive definite even with the noise "
        "(lengthscales %s, signal variance %.3g, noise variance %.3g): its smallest "
        "eigenvalue is %.3g, and it needs about %.2g more on the diagonal just to "
        "factorize; fix the noise variance with --noise %.2g or larger"
        % (np.array2string(ell, precision=3), sf2, sn2, lam, jitter, suggest))


class Stopwatch:
    """Accumulates wall time per stage into a dict (or does nothing for None)."""

    def __init__(self, times):
        self.times, self.t = times, time.perf_counter()

    def __call__(self, stage):
        now = time.perf_counter()
        if self.times is not None:
            self.times[stage] = self.times.get(stage, 0.0) + now - self.t
        self.t = now


def _kernel_matrix(theta, X):
    ell, sf2, sn2 = unpack(theta)
    return se_kernel(X, X, ell, sf2) + sn2 * np.eye(len(X))


def log_lik(theta, X, y):
    """Log marginal likelihood alone (for finite differences)."""
    L = cholesky(_kernel_matrix(theta, X), theta)
    v = scipy.linalg.solve_triangular(L, y, lower=True, check_finite=False)
    return -0.5 * v @ v - np.log(np.diag(L)).sum() - 0.5 * len(y) * np.log(2 * np.pi)


def log_lik_and_grad(theta, X, y, route="chol_rev", threads=None, times=None):
    """Log marginal likelihood f and df/dtheta.

    route: "chol_rev"  L_bar -> K_bar by blockchol.chol_rev (the point of the demo);
           "closed"    K_bar = 1/2 (alpha alpha^T - K^-1), K^-1 from the factor;
           "gpy"       L_bar -> K_bar by GPy.util.choleskies.backprop_gradient.
    times: optional dict; wall time per stage is added to it.
    """
    f, K_bar, Kf = log_lik_and_K_bar(theta, X, y, route, threads, times)
    return f, chain_rule(theta, X, K_bar, Kf, times)


def log_lik_and_K_bar(theta, X, y, route="chol_rev", threads=None, times=None):
    """f, the symmetric df/dK, and the noise-free kernel matrix Kf."""
    tick = Stopwatch(times)
    n = len(y)
    ell, sf2, sn2 = unpack(theta)
    Kf = se_kernel(X, X, ell, sf2)              # noise-free part, reused for dK/dtheta
    K = Kf + sn2 * np.eye(n)
    tick("kernel")
    L = cholesky(K, theta)
    tick("factorization")

    # f = -1/2 y^T K^-1 y - sum_i log L_ii - n/2 log 2pi
    #   = -1/2 v^T v     - sum_i log L_ii - n/2 log 2pi,  v = L^-1 y.
    v = scipy.linalg.solve_triangular(L, y, lower=True, check_finite=False)
    alpha = scipy.linalg.solve_triangular(L, v, lower=True, trans="T", check_finite=False)
    f = -0.5 * v @ v - np.log(np.diag(L)).sum() - 0.5 * n * np.log(2 * np.pi)
    tick("rest")

    if route == "closed":
        # The textbook gradient: df/dK = 1/2 (alpha alpha^T - K^-1) for symmetric dK.
        Kinv, _ = scipy.linalg.lapack.dpotri(L, lower=1)   # lower triangle of K^-1
        Kinv = np.tril(Kinv) + np.tril(Kinv, -1).T
        K_bar = 0.5 * (np.outer(alpha, alpha) - Kinv)
        tick("L_bar -> K_bar")
    else:
        # df/dL, by hand.  dv = -L^-1 dL v, so
        #   df = -v^T dv - sum_i dL_ii / L_ii = alpha^T dL v - sum_i dL_ii / L_ii,
        # with alpha = L^-T v = K^-1 y.  Hence, on the lower triangle,
        #   L_bar = alpha v^T - diag(1 / L_ii).
        # (The upper triangle of L is structurally zero and never read.)
        L_bar = np.outer(alpha, v)
        L_bar[np.diag_indices(n)] -= 1.0 / np.diag(L)
        tick("rest")
        if route == "chol_rev":
            # symmetric=True: df = sum_ij K_bar_ij dK_ij for any symmetric dK.
            # The result has L's memory layout (Fortran, from LAPACK); being
            # symmetric, its transpose is the same matrix in C order, like Kf,
            # which keeps the contractions below copy-free.
            K_bar = chol_rev(L, L_bar, symmetric=True, threads=threads).T
        else:
            from GPy.util.choleskies import backprop_gradient
            G = backprop_gradient(L_bar, L)   # lower triangular: df = sum_{i>=j} G_ij dK_ij
            K_bar = 0.5 * (G + G.T)           # the same, as a symmetric matrix
        tick("L_bar -> K_bar")
    return f, K_bar, Kf


def chain_rule(theta, X, K_bar, Kf, times=None):
    """df/dtheta_p = sum_ij K_bar_ij dK_ij/dtheta_p, one parameter at a time, with
        dK/dlog ell_d = Kf * (x_id - x_jd)^2 / ell_d^2,
        dK/dlog sf2   = Kf,
        dK/dlog sn2   = sn2 * I.
    """
    tick = Stopwatch(times)
    ell, sf2, sn2 = unpack(theta)
    grad = np.empty(len(theta))
    for d in range(X.shape[1]):
        x = X[:, d]
        dK = Kf * ((x[:, None] - x[None, :]) / ell[d]) ** 2
        grad[d] = np.vdot(K_bar, dK)
    grad[-2] = np.vdot(K_bar, Kf)
    grad[-1] = sn2 * np.trace(K_bar)
    tick("rest")
    return grad


def predict(theta, X, y, Xs):
    """Posterior predictive mean and variance of y at Xs (noise included)."""
    ell, sf2, sn2 = unpack(theta)
    L = cholesky(se_kernel(X, X, ell, sf2) + sn2 * np.eye(len(y)), theta)
    Ks = se_kernel(Xs, X, ell, sf2)
    alpha = scipy.linalg.cho_solve((L, True), y)
    W = scipy.linalg.solve_triangular(L, Ks.T, lower=True)
    return Ks @ alpha, sf2 + sn2 - (W * W).sum(axis=0)


# --------------------------------------------------------------------------
# Data

def synthetic(n, dims, seed):
    """n points uniform on [0, 5]^dims, y drawn from the GP with the true hyperparameters."""
    rng = np.random.default_rng(seed)
    ell = np.resize(TRUE_ELL, dims)
    X = rng.uniform(0.0, 5.0, size=(n, dims))
    K = se_kernel(X, X, ell, TRUE_SF2) + TRUE_SN2 * np.eye(n)
    y = np.linalg.cholesky(K) @ rng.standard_normal(n)
    theta = np.log(np.concatenate([ell, [TRUE_SF2, TRUE_SN2]]))
    return X, y, ["x%d" % (d + 1) for d in range(dims)] + ["y"], theta


def load_csv(path):
    """Numeric CSV with a header row; the last column is the target.  Returns X, y, names."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            rows = [(reader.line_num, row) for row in reader if row]   # skip blank lines
    except OSError as e:
        raise DemoError("cannot read %s: %s" % (path, e.strerror or e))
    except (csv.Error, UnicodeDecodeError) as e:
        raise DemoError("%s is not a readable CSV file: %s" % (path, e))
    if not rows:
        raise DemoError("%s is empty" % path)
    header = rows[0][1]
    try:
        [float(name) for name in header]
    except ValueError:
        pass                            # some name is not a number: a header, good
    else:
        raise DemoError("%s: the first row looks like data; it must be a header of "
                        "column names" % path)
    if len(header) < 2:
        raise DemoError("%s: need at least two columns (inputs, then the target), "
                        "the header has %d" % (path, len(header)))
    values = []
    for line, row in rows[1:]:
        if len(row) != len(header):
            raise DemoError("%s, line %d: %d fields, but the header has %d"
                            % (path, line, len(row), len(header)))
        values.append([_number(path, line, name, field) for name, field in zip(header, row)])
    if len(values) < 2:
        raise DemoError("%s: need at least 2 data rows, found %d" % (path, len(values)))
    data = np.array(values)
    return data[:, :-1], data[:, -1], header


def _number(path, line, column, field):
    try:
        value = float(field)
    except ValueError:
        raise DemoError("%s, line %d: column %r is not numeric (%r)"
                        % (path, line, column, field)) from None
    if not np.isfinite(value):
        raise DemoError("%s, line %d: column %r is %s; remove or fill in missing values"
                        % (path, line, column, field.strip()))
    return value


def load_co2():
    """Mauna Loa weekly CO2 (ppm), as monthly means against time in years.

    One squared-exponential kernel cannot describe both the rising trend and
    the seasonal cycle.  From the default start the fit finds the smooth trend
    (lengthscale ~50 years) and calls the seasonal cycle noise; a lengthscale
    of a few months gives a higher likelihood by tracing the cycle, but
    reverts to the mean within months of the last data.  The textbook fix
    is a sum of kernels (trend + periodic + ...), beyond this demo.
    """
    try:
        from statsmodels.datasets import co2
    except ImportError:
        raise DemoError("--data co2 needs statsmodels: pip install 'blockchol[demo]'") from None
    weekly = co2.load_pandas().data["co2"]
    monthly = weekly.resample("MS").mean().dropna()     # the weekly series has gaps
    t = monthly.index.year + (monthly.index.month - 0.5) / 12
    return np.asarray(t, float)[:, None], monthly.to_numpy(float), ["year", "CO2 (ppm)"]


# --------------------------------------------------------------------------
# Driver

def check_gradient(theta, X, y, threads):
    """Relative errors of the chol_rev gradient vs the closed form and finite differences."""
    f, g = log_lik_and_grad(theta, X, y, threads=threads)
    _, g_closed = log_lik_and_grad(theta, X, y, route="closed")
    g_fd = np.empty_like(g)
    for p in range(len(theta)):
        e = np.zeros_like(theta)
        e[p] = FD_STEP
        g_fd[p] = (log_lik(theta + e, X, y) - log_lik(theta - e, X, y)) / (2 * FD_STEP)
    rel = lambda a, b: np.linalg.norm(a - b) / np.linalg.norm(b)
    return rel(g, g_closed), rel(g, g_fd)


def print_gradient_check(where, theta, X, y, threads):
    err_closed, err_fd = check_gradient(theta, X, y, threads)
    print("gradient check at %s (relative error of the chol_rev gradient):" % where)
    print("  vs closed form 1/2 tr((alpha alpha^T - K^-1) dK/dtheta): %.2e" % err_closed)
    print("  vs central finite differences (step %.0e):              %.2e" % (FD_STEP, err_fd))


def fit(theta0, X, y, threads=None, fix_noise=False, verbose=True):
    """Maximise the log marginal likelihood with L-BFGS-B; returns theta, f, the result."""
    # Lengthscales and signal variance are free.  The noise variance is kept
    # above 1e-6 var(y), so that K stays well conditioned, or held fixed.
    lo = np.full(len(theta0), -np.inf)
    hi = np.full(len(theta0), np.inf)
    lo[-1] = theta0[-1] if fix_noise else np.log(1e-6 * y.var())
    hi[-1] = theta0[-1] if fix_noise else np.inf
    last = {}
    start = time.perf_counter()

    def objective(theta):                       # minimise -f
        f, g = log_lik_and_grad(theta, X, y, threads=threads)
        last.update(theta=theta.copy(), f=f, g=g)
        return -f, -g

    def progress(xk):
        if not np.array_equal(xk, last["theta"]):   # not the last point evaluated
            objective(xk)
        # The gradient with the components that push against a bound dropped
        # (L-BFGS-B's own stopping measure): it goes to zero at the optimum.
        theta, g = last["theta"], last["g"]
        g = np.where(((theta <= lo) & (g < 0)) | ((theta >= hi) & (g > 0)), 0.0, g)
        print("  iter %3d   log lik %14.6f   |grad| %10.3e   %6.1f s"
              % (progress.it, last["f"], np.linalg.norm(g), time.perf_counter() - start),
              flush=True)
        progress.it += 1
    progress.it = 1

    res = scipy.optimize.minimize(objective, theta0, jac=True, method="L-BFGS-B",
                                  bounds=scipy.optimize.Bounds(lo, hi),
                                  callback=progress if verbose else None,
                                  options={"maxiter": MAX_ITER})
    return res.x, -res.fun, res


def time_gradient(theta, X, y, threads, repeat=3):
    """Per-stage wall time of one gradient evaluation by each route (min over repeats)."""
    routes = ["chol_rev", "closed"]
    try:
        import GPy.util.choleskies  # noqa: F401
        routes.append("gpy")
    except Exception:               # missing, or broken against this numpy
        pass
    table = {}
    for route in routes:
        runs = []
        for _ in range(repeat):
            times = {}
            log_lik_and_grad(theta, X, y, route=route, threads=threads, times=times)
            times["total"] = sum(times.values())
            runs.append(times)
        table[route] = {stage: min(t[stage] for t in runs) for stage in runs[0]}
    return table


def plot(path, theta, X, y, names, y_mean):
    """Posterior mean and 2 sigma band along the first input, the others at their median."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise DemoError("--plot needs matplotlib: pip install 'blockchol[demo]'") from None
    x = X[:, 0]
    span = x.max() - x.min()
    grid = np.linspace(x.min() - 0.05 * span, x.max() + 0.15 * span, 400)
    Xs = np.tile(np.median(X, axis=0), (len(grid), 1))
    Xs[:, 0] = grid
    mean, var = predict(theta, X, y, Xs)
    mean, sd = mean + y_mean, np.sqrt(np.maximum(var, 0))
    # Data more than half a lengthscale away from the slice in the other
    # inputs say little about it: draw them faint.
    ell = unpack(theta)[0]
    near = (((X[:, 1:] - Xs[0, 1:]) / ell[1:]) ** 2).sum(axis=1) <= 0.5 ** 2
    fig, ax = plt.subplots(figsize=(9, 4.5))
    if not near.all():
        ax.plot(x[~near], y[~near] + y_mean, ".", ms=3, color="0.8",
                label="data away from the slice")
    ax.plot(x[near], y[near] + y_mean, ".", ms=3, color="0.3",
            label="data" if near.all() else "data within half a lengthscale of the slice")
    ax.plot(grid, mean, color="C0", label="posterior mean")
    ax.fill_between(grid, mean - 2 * sd, mean + 2 * sd, color="C0", alpha=0.25,
                    label="mean $\\pm$ 2$\\sigma$ (with noise)")
    ax.set_xlabel(names[0] + ("" if X.shape[1] == 1 else "  (other inputs at their median)"))
    ax.set_ylabel(names[-1])
    ax.legend(loc="best")
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=120)
    except (OSError, ValueError) as e:
        raise DemoError("cannot save the plot to %s: %s" % (path, e))
    finally:
        plt.close(fig)


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError("expected a positive integer, got %r" % text)
    return value


def positive_float(text):
    try:
        value = float(text)
    except ValueError:
        value = np.nan
    if not value > 0 or not np.isfinite(value):
        raise argparse.ArgumentTypeError("expected a positive number, got %r" % text)
    return value


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="blockchol-demo",
        description="Fit an ARD squared-exponential GP by maximum marginal likelihood, "
                    "differentiating the Cholesky factor with blockchol.chol_rev.")
    parser.add_argument("--n", type=positive_int, default=None,
                        help="number of synthetic points (default 2000); with --data, "
                             "fit a random subset of this many rows (an exact GP costs "
                             "N^2 memory and N^3 time)")
    parser.add_argument("--dims", type=positive_int, default=None,
                        help="input dimensions of the synthetic data (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="BLAS threads for the whole run (default: all)")
    parser.add_argument("--data", metavar="PATH.csv",
                        help="fit this CSV instead (header row, last column is the "
                             "target), or 'co2' for the Mauna Loa CO2 series")
    parser.add_argument("--noise", type=positive_float, default=None,
                        help="fix the noise variance at this value (default: learn it, "
                             "starting from var(y) / 10)")
    parser.add_argument("--plot", metavar="OUT.png",
                        help="save the posterior mean and 2 sigma band here")
    parser.add_argument("--dask", nargs="?", const="", default=None, metavar="ADDRESS",
                        help="instead, evaluate the likelihood and gradient once with every "
                             "N x N object a dask array (blockchol.dask), on the cluster at "
                             "ADDRESS or a LocalCluster (needs pip install 'blockchol[dask]')")
    args = parser.parse_args(argv)
    if args.data is not None and args.dims is not None:
        parser.error("--dims only applies to the synthetic data")
    if args.n is not None and args.n < 2:
        parser.error("--n must be at least 2")
    return args


def run(args):
    # ---- data: X (N x D), y (N), names (D inputs + the target)
    truth = None
    if args.data is None:
        X, y, names, truth = synthetic(args.n or 2000, args.dims or 3, args.seed)
        y_mean, source = 0.0, "synthetic GP draw (seed %d)" % args.seed
    else:
        X, y, names = load_co2() if args.data == "co2" else load_csv(args.data)
        source = "Mauna Loa CO2, monthly means" if args.data == "co2" else args.data
        if args.n is not None and args.n < len(y):
            keep = np.random.default_rng(args.seed).choice(len(y), args.n, replace=False)
            X, y = X[np.sort(keep)], y[np.sort(keep)]
        y_mean = y.mean()               # a zero-mean GP on the centred target
        y = y - y_mean
    n, dims = X.shape
    for name, x in zip(names, X.T):
        if np.ptp(x) == 0:
            raise DemoError("input column %r is constant: drop it" % name)
    if np.ptp(y) == 0:
        raise DemoError("the target %r is constant: nothing to fit" % names[-1])
    print("data: %s, N=%d, D=%d" % (source, n, dims))

    # ---- start: lengthscales at the inputs' spread, signal variance at the
    # target's, noise variance at a tenth of it (or fixed by --noise)
    noise0 = args.noise if args.noise is not None else y.var() / 10
    theta0 = np.log(np.concatenate([X.std(axis=0), [y.var(), noise0]]))

    # ---- gradient check at the start point
    print_gradient_check("the start point", theta0, X, y, args.threads)

    # ---- fit
    print("L-BFGS-B on log-parameters (at most %d iterations):" % MAX_ITER)
    theta, f, res = fit(theta0, X, y, args.threads, fix_noise=args.noise is not None)
    print("stopped after %d iterations, %d evaluations: %s" % (res.nit, res.nfev, res.message))

    # ---- results
    print("\nhyperparameters:")
    print("  %-24s %12s %12s" % ("", "fitted", "true" if truth is not None else ""))
    labels = ["lengthscale " + name for name in names[:-1]]
    labels += ["signal variance", "noise variance" + (" (fixed)" if args.noise else "")]
    for p, label in enumerate(labels):
        true = "%12.4g" % np.exp(truth[p]) if truth is not None else ""
        print("  %-24s %12.4g %s" % (label, np.exp(theta[p]), true))
    print("final log marginal likelihood: %.6f" % f)
    if truth is not None:
        print("log marginal likelihood at the true hyperparameters: %.6f" % log_lik(truth, X, y))
    # At the optimum the gradient is ~0 and a relative error means nothing; the check
    # moves the noise variance down 100×, where K is far worse conditioned.
    print()
    theta_check = theta.copy()
    theta_check[-1] -= np.log(100.0)
    print_gradient_check("the fitted point with the noise variance / 100 (cond(K) %.1e)"
                         % np.linalg.cond(_kernel_matrix(theta_check, X)), theta_check, X, y,
                         args.threads)

    # ---- one gradient evaluation, stage by stage, by each route
    table = time_gradient(theta, X, y, args.threads)
    heads = {"chol_rev": "chol_rev", "closed": "closed form", "gpy": "GPy backprop"}
    print("\none gradient evaluation, N=%d, P=%d (seconds, min of 3 runs):" % (n, len(theta)))
    print("  %-26s" % "" + "".join("%14s" % heads[route] for route in table))
    for stage, label in [("kernel", "kernel"), ("factorization", "factorization"),
                         ("L_bar -> K_bar", "L_bar -> K_bar (or K^-1)"),
                         ("rest", "rest"), ("total", "total")]:
        print("  %-26s" % label + "".join("%14.4f" % table[route][stage] for route in table))
    if "gpy" not in table:
        print("  (GPy is not installed: no GPy column)")

    if args.plot:
        plot(args.plot, theta, X, y, names, y_mean)
        print("\nplot saved to %s" % args.plot)


def main(argv=None):
    args = parse_args(argv)
    if args.dask is not None:                  # --dask: blockchol/_dask_demo.py
        from ._dask import from_demo
        return from_demo(args)
    try:
        with threadpool_limits(args.threads):      # None: leave the pools as they are
            run(args)
    except DemoError as e:
        raise SystemExit("blockchol-demo: error: %s" % e) from None

