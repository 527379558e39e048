"""Fit a Gaussian process by maximum marginal likelihood, with the gradient through chol_rev.

    python -m blockchol.demo                      # synthetic data, N=2000, D=3
    python -m blockchol.demo --data co2           # Mauna Loa CO2 (needs statsmodels)
    python -m blockchol.demo --data my.csv --plot fit.png

The model (blockchol/demo/_model.py, shared with the dask demo) is exact GP
regression with an ARD squared-exponential covariance and Gaussian noise,

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
``--dask`` runs the dask demo instead (blockchol/demo/_dask.py).
"""

import argparse
import time

import numpy as np
import scipy.optimize
from threadpoolctl import threadpool_limits

from ._model import (MATRICES, MAX_THREADS, TRUE_ELL, TRUE_SF2, TRUE_SN2, DemoError, chain_rule,
                     check_data, check_memory, check_options, cholesky, covariance, load_co2,
                     load_csv, load_data, log_lik, log_lik_and_grad, log_lik_and_K_bar,
                     non_negative_int, physical_memory, positive_float, positive_int, predict,
                     run_reporting_errors, se_covariance, start_point, thread_count, unpack)

__all__ = [
    "main", "run", "parse_args", "synthetic", "check_gradient", "fit", "time_gradient",
    "gpy_unavailable", "plot",
    # the model (blockchol.demo._model)
    "DemoError", "unpack", "se_covariance", "covariance", "cholesky", "log_lik",
    "log_lik_and_grad", "log_lik_and_K_bar", "chain_rule", "predict", "start_point",
    "load_data", "check_data", "load_csv", "load_co2", "TRUE_ELL", "TRUE_SF2", "TRUE_SN2",
]

MAX_ITER = 60                # L-BFGS-B iterations
FD_STEP = 1e-5               # central finite differences, in log-parameters
#: N×N float64 matrices alive at once in GPy's backprop_gradient (22.8 measured with
#: tracemalloc): the timing table leaves GPy out where they would not fit in memory.
GPY_MATRICES = 23


# --------------------------------------------------------------------------
# Data

def synthetic(n, dims, seed):
    """n points uniform on [0, 5]^dims, y drawn from the GP with the true hyperparameters."""
    rng = np.random.default_rng(seed)
    ell = np.resize(TRUE_ELL, dims)
    X = rng.uniform(0.0, 5.0, size=(n, dims))
    K = se_covariance(X, X, ell, TRUE_SF2) + TRUE_SN2 * np.eye(n)
    y = np.linalg.cholesky(K) @ rng.standard_normal(n)
    theta = np.log(np.concatenate([ell, [TRUE_SF2, TRUE_SN2]]))
    return X, y, ["x%d" % (d + 1) for d in range(dims)] + ["y"], theta


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


def time_gradient(theta, X, y, threads, routes=("chol_rev", "closed", "gpy"), repeat=3):
    """Per-stage wall time of one gradient evaluation by each route (min over repeats)."""
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


def gpy_unavailable(n):
    """Why GPy's route cannot be timed at this N (a phrase), or None."""
    try:
        import GPy.util.choleskies  # noqa: F401
    except Exception:               # missing, or broken against this numpy
        return "GPy is not installed"
    have = physical_memory()
    if have is not None and GPY_MATRICES * 8.0 * n * n > have:
        return "GPy's backprop needs %d N×N matrices, more than this machine's memory" % (
            GPY_MATRICES)
    return None


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
    parser.add_argument("--seed", type=non_negative_int, default=0,
                        help="random seed (default 0)")
    parser.add_argument("--threads", type=thread_count, default=None,
                        help="BLAS threads for the whole run (default: all; at most %d)"
                             % MAX_THREADS)
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
    check_options(parser, args)
    return args


def run(args):
    # ---- data: X (N x D), y (N), names (D inputs + the target)
    truth = None
    if args.data is None:
        n = args.n or 2000
        check_memory("--n %d" % n, MATRICES * 8.0 * n * n,
                     "use a smaller --n (the demo holds %d N×N float64 matrices)" % MATRICES)
        X, y, names, truth = synthetic(n, args.dims or 3, args.seed)
        y_mean, source = 0.0, "synthetic GP draw (seed %d)" % args.seed
    else:
        X, y, names, y_mean, source = load_data(args.data, args.n, args.seed)
        n = len(y)
        check_memory("N=%d rows" % n, MATRICES * 8.0 * n * n,
                     "fit a subset of them with --n (the demo holds %d N×N float64 "
                     "matrices)" % MATRICES)
    n, dims = X.shape
    print("data: %s, N=%d, D=%d" % (source, n, dims))

    # ---- gradient check at the start point
    theta0 = start_point(X, y, args.noise)
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
                         % np.linalg.cond(covariance(theta_check, X)), theta_check, X, y,
                         args.threads)

    # ---- one gradient evaluation, stage by stage, by each route
    no_gpy = gpy_unavailable(n)
    routes = ("chol_rev", "closed") if no_gpy else ("chol_rev", "closed", "gpy")
    table = time_gradient(theta, X, y, args.threads, routes)
    heads = {"chol_rev": "chol_rev", "closed": "closed form", "gpy": "GPy backprop"}
    print("\none gradient evaluation, N=%d, P=%d (seconds, min of 3 runs):" % (n, len(theta)))
    print("  %-26s" % "" + "".join("%14s" % heads[route] for route in table))
    for stage, label in [("covariance", "covariance matrix"), ("factorization", "factorization"),
                         ("L_bar -> K_bar", "L_bar -> K_bar (or K^-1)"),
                         ("rest", "rest"), ("total", "total")]:
        print("  %-26s" % label + "".join("%14.4f" % table[route][stage] for route in table))
    if no_gpy:
        print("  (%s: no GPy column)" % no_gpy)

    if args.plot:
        plot(args.plot, theta, X, y, names, y_mean)
        print("\nplot saved to %s" % args.plot)


def main(argv=None):
    args = parse_args(argv)
    if args.dask is not None:                  # the dask demo: blockchol/demo/_dask.py
        from ._dask import from_demo
        return from_demo(args)

    def run_with_threads(args):
        with threadpool_limits(args.threads):  # None: leave the pools as they are
            run(args)
    run_reporting_errors(run_with_threads, args)
