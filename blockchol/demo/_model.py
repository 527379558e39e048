"""The GP model and the data of both demos: the in-core one and the dask one import it.

The model is exact GP regression with an ARD squared-exponential
covariance and Gaussian noise,

    K(theta) = sf2 * exp(-1/2 sum_d (x_id - x_jd)^2 / ell_d^2) + sn2 * I,

with theta = log(ell_1, ..., ell_D, sf2, sn2).  Here: the covariance, its
factor, the log marginal likelihood and its gradient through
blockchol.chol_rev (and two other routes to check it), the data (CSV files,
Mauna Loa CO2) and their checks, the start point, and the command-line
argument types and limits both demos use.  Every bad input raises
:class:`DemoError`, which the command line reports as one line.
"""

import argparse
import csv
import math
import os
import time

import numpy as np
import scipy.linalg
from scipy.spatial.distance import cdist

from blockchol import chol_rev

TRUE_ELL = (0.8, 1.5, 3.0)   # synthetic truth: lengthscales (cycled for more dims),
TRUE_SF2 = 1.0               # signal variance
TRUE_SN2 = 0.01              # and noise variance; inputs are uniform on [0, 5]^D

#: The spread (standard deviation) a data column may have.  Outside it the covariance, its
#: factor or the gradient over- or underflow float64 (a variance of 1e300 or 1e-310 is
#: inf or 0); within it there are over 100 decades of headroom for N, the conditioning
#: and the optimizer's steps.
SPREAD = (1e-100, 1e100)
#: N×N float64 matrices alive at once in one gradient by chol_rev or by the closed form
#: (6.2 measured with tracemalloc: the covariance, its noise-free part, the factor, L_bar,
#: K_bar and the temporaries of dK/dtheta); the command line refuses an N whose matrices
#: would not fit in the machine's memory.
MATRICES = 7
#: blockchol's limit on ``threads`` (chol_rev raises above it).
MAX_THREADS = 1 << 16


class DemoError(Exception):
    """Bad input or an unusable covariance: reported as one line, no traceback."""


# --------------------------------------------------------------------------
# The model: covariance, log marginal likelihood and its gradient

def unpack(theta):
    """log-parameters -> (lengthscales, signal variance, noise variance)."""
    p = np.exp(theta)
    return p[:-2], p[-2], p[-1]


def se_covariance(X1, X2, ell, sf2):
    """ARD squared exponential: sf2 * exp(-1/2 |(x1 - x2) / ell|^2)."""
    return sf2 * np.exp(-0.5 * cdist(X1 / ell, X2 / ell, "sqeuclidean"))


def covariance(theta, X):
    """K(theta) at the inputs X, noise included."""
    ell, sf2, sn2 = unpack(theta)
    return se_covariance(X, X, ell, sf2) + sn2 * np.eye(len(X))


def cholesky(K, theta):
    """Lower Cholesky factor of K; DemoError, with the noise it would need, if K is not PD."""
    ell, sf2, sn2 = unpack(theta)
    if not np.isfinite(K).all():
        raise DemoError("the covariance matrix overflowed (lengthscales %s, signal variance "
                        "%.3g, noise variance %.3g)" % (np.array2string(ell, precision=3),
                                                        sf2, sn2))
    try:
        return scipy.linalg.cholesky(K, lower=True, check_finite=False)
    except np.linalg.LinAlgError:
        pass
    # Find how much must be added to the diagonal: minus the smallest
    # eigenvalue, plus the rounding error of the factorization (about
    # N eps max K_ii), grown 10x at a time until the factorization goes through.
    lam = scipy.linalg.eigvalsh(K, subset_by_index=[0, 0])[0]
    start = max(-lam, 0.0) + len(K) * np.finfo(float).eps * np.diag(K).max()
    start = max(start, np.finfo(float).tiny)        # a zero K needs a positive jitter too
    for jitter in start * 10.0 ** np.arange(17):
        try:
            scipy.linalg.cholesky(K + jitter * np.eye(len(K)), lower=True, check_finite=False)
            break
        except np.linalg.LinAlgError:
            pass
    # Barely factorizable is still too close to singular for accurate
    # gradients: suggest at least the customary jitter of 1e-6 sf2.
    suggest = _round_up(max(sn2 + jitter, 1e-6 * sf2))
    raise DemoError(
        "the covariance matrix is not positive definite even with the noise "
        "(lengthscales %s, signal variance %.3g, noise variance %.3g): its smallest "
        "eigenvalue is %.3g, and it needs about %.2g more on the diagonal just to "
        "factorize; fix the noise variance with --noise %s or larger"
        % (np.array2string(ell, precision=3), sf2, sn2, lam, jitter, suggest))


def _round_up(x):
    """x > 0 as a decimal of two significant digits, rounded up: never below x, never 0."""
    text = "%.1e" % x
    if float(text) < x:
        mantissa, exponent = text.split("e")
        text = "%.1fe%s" % (float(mantissa) + 0.1, exponent)
    return "%g" % float(text)


class Stopwatch:
    """Accumulates wall time per stage into a dict (or does nothing for None)."""

    def __init__(self, times):
        self.times, self.t = times, time.perf_counter()

    def __call__(self, stage):
        now = time.perf_counter()
        if self.times is not None:
            self.times[stage] = self.times.get(stage, 0.0) + now - self.t
        self.t = now


def log_lik(theta, X, y):
    """Log marginal likelihood alone (for finite differences)."""
    L = cholesky(covariance(theta, X), theta)
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
    """f, the symmetric df/dK, and the noise-free covariance Kf."""
    tick = Stopwatch(times)
    n = len(y)
    ell, sf2, sn2 = unpack(theta)
    Kf = se_covariance(X, X, ell, sf2)          # noise-free part, reused for dK/dtheta
    K = Kf + sn2 * np.eye(n)
    tick("covariance")
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
    L = cholesky(covariance(theta, X), theta)
    Ks = se_covariance(Xs, X, ell, sf2)
    alpha = scipy.linalg.cho_solve((L, True), y)
    W = scipy.linalg.solve_triangular(L, Ks.T, lower=True)
    return Ks @ alpha, sf2 + sn2 - (W * W).sum(axis=0)


def start_point(X, y, noise=None):
    """Lengthscales at the inputs' spread, signal variance at the target's, noise at a tenth
    of it (or fixed at ``noise``): the log-parameters where both demos start."""
    noise0 = noise if noise is not None else y.var() / 10
    return np.log(np.concatenate([X.std(axis=0), [y.var(), noise0]]))


# --------------------------------------------------------------------------
# Data

def load_data(data, n, seed):
    """``--data``: a CSV file or "co2", ``n`` rows of it drawn with ``seed`` (None: all).

    Returns X, the centred target y, the column names, the target's mean
    and a description; the data pass :func:`check_data`.
    """
    X, y, names = load_co2() if data == "co2" else load_csv(data)
    if n is not None and n < len(y):
        keep = np.sort(np.random.default_rng(seed).choice(len(y), n, replace=False))
        X, y = X[keep], y[keep]
    check_data(X, y, names)
    y_mean = y.mean()                   # a zero-mean GP on the centred target
    return X, y - y_mean, names, y_mean, "Mauna Loa CO2, monthly means" if data == "co2" else data


def check_data(X, y, names):
    """DemoError unless every column varies, within :data:`SPREAD`."""
    columns = [("input column %r" % name, x, "drop it") for name, x in zip(names, X.T)]
    columns.append(("the target %r" % names[-1], y, "nothing to fit"))
    for column, x, advice in columns:
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            constant, spread = np.ptp(x) == 0, np.std(x)
        if constant:
            raise DemoError("%s is constant: %s" % (column, advice))
        if not SPREAD[0] <= spread <= SPREAD[1]:
            raise DemoError("%s has a standard deviation of %.3g, outside [%.0e, %.0e], where "
                            "the covariance and its gradient would over- or underflow: "
                            "rescale it" % (column, spread, SPREAD[0], SPREAD[1]))


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

    One squared-exponential covariance cannot describe both the rising trend
    and the seasonal cycle.  From the default start the fit finds the smooth
    trend (lengthscale ~50 years) and calls the seasonal cycle noise; a
    lengthscale of a few months gives a higher likelihood by tracing the
    cycle, but reverts to the mean within months of the last data.  The
    textbook fix is a sum of covariances (trend + periodic + ...), beyond
    this demo.
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
# Memory

def physical_memory():
    """Bytes of memory of this machine (None where the system does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def check_memory(what, needed, advice):
    """DemoError if ``needed`` bytes exceed this machine's memory: ``what`` needs them."""
    have = physical_memory()
    if have is not None and needed > have:
        raise DemoError("%s needs at least %s of memory, and this machine has %s: %s"
                        % (what, _bytes(needed), _bytes(have), advice))


def _bytes(b):
    for unit in ("bytes", "kB", "MB", "GB", "TB", "PB"):
        if b < 1000 or unit == "PB":
            return "%.3g %s" % (b, unit)
        b /= 1000.0


# --------------------------------------------------------------------------
# Command-line argument types and checks

def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError("expected a positive integer, got %r" % text)
    return value


def non_negative_int(text):
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError("expected a non-negative integer, got %r" % text)
    return value


def thread_count(text):
    value = positive_int(text)
    if value > MAX_THREADS:
        raise argparse.ArgumentTypeError("expected at most %d threads, got %r"
                                         % (MAX_THREADS, text))
    return value


def positive_float(text):
    try:
        value = float(text)
    except ValueError:
        value = np.nan
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError("expected a positive number, got %r" % text)
    return value


def check_options(parser, args):
    """The checks across options that both demos' parsers make (argparse errors)."""
    if args.data is not None and args.dims is not None:
        parser.error("--dims only applies to the synthetic data")
    if args.n is not None and args.n < 2:
        parser.error("--n must be at least 2")


def run_reporting_errors(run, args):
    """``run(args)``, with bad input and exhausted memory reported as one line and exit 1."""
    try:
        return run(args)
    except DemoError as e:
        raise SystemExit("blockchol-demo: error: %s" % e) from None
    except MemoryError as e:
        raise SystemExit("blockchol-demo: error: out of memory (%s): use a smaller --n"
                         % (e or "no detail")) from None
