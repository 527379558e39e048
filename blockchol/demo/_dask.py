"""The GP demo on dask: log marginal likelihood and gradient with every N×N object a dask array.

    python -m blockchol.demo --dask                   # LocalCluster, N = 10000
    python -m blockchol.demo --dask --n 20000
    python -m blockchol.demo --dask tcp://host:8786   # a running cluster
    python -m blockchol.demo._dask --help             # the extra options (tiles, method, ...)

The model is the in-core demo's (blockchol/demo/_model.py): ARD
squared-exponential covariance plus noise, theta = log(ell_1..ell_D, sf2,
sn2), evaluated once at the demo's start point.  Tile by tile, lazily:

    K      = se_covariance(X_I, X_J) (+ sn2 I on diagonal tiles)  tiles from the inputs
    L      = dask.array.linalg.cholesky(K, lower=True)
    v      = L⁻¹ y,  alpha = L⁻ᵀ v                               dask's solve_triangular
    f      = -1/2 vᵀv - Σ log L_ii - N/2 log 2π
    L_bar  = alpha vᵀ - diag(1 / L_ii)                           (lower tiles read)
    G      = blockchol.dask.chol_rev(L, L_bar)                   df = Σ_{i≥j} G_ij dK_ij
    df/dθ  = Σ over lower tiles of G_IJ ⊙ ∂K_IJ/∂θ, a tree sum of per-tile vectors

Only the inputs X (N×D), y and the gradient pass through this process.
Without an address the demo starts a LocalCluster of single-threaded
workers, one per core, each with a memory limit below one N×N float64
matrix (they spill to disk beyond 60 % of it), shows dask's progress bar,
samples every worker's memory while it runs and prints the peaks.  It then
checks the gradient against the in-core demo (blockchol.chol_rev) on the
first ``--check-n`` points, where both fit.

Synthetic data for large N are drawn from the GP approximately, by random
Fourier features (an exact draw would need the N×N factor in this
process); the in-core demo draws exactly.
"""

import argparse
import math
import sys
import threading
import time
import warnings

import numpy as np

from . import _model as model
from ._model import DemoError

DEFAULT_N = 10000
DEFAULT_TILE = 1000
CHECK_N = 2000
FEATURES = 2000          # random Fourier features for the synthetic draw
#: Seconds to wait for the scheduler at ADDRESS (dask's own default is 30).
CONNECT_TIMEOUT = 5
#: Bytes per task of the graph held in this process (620-700 measured with
#: tracemalloc for 8-24 tiles per side); with blockchol's products alone as the
#: task count, a lower bound on the graph's memory, which refuses what cannot fit.
BYTES_PER_TASK = 600


# --------------------------------------------------------------------------
# Data


def synthetic(n, dims, seed):
    """n points uniform on [0, 5]^dims; y = f + noise with f an approximate GP draw (RFF).

    f(x) = sqrt(2 sf2 / M) Σ_m cos(ω_m·x + b_m), ω_m ~ N(0, diag(ell⁻²)),
    b_m ~ U(0, 2π): its covariance tends to the squared-exponential kernel
    as M grows.  Returns X, y, names, the true log-parameters.
    """
    rng = np.random.default_rng(seed)
    ell = np.resize(model.TRUE_ELL, dims)
    X = rng.uniform(0.0, 5.0, size=(n, dims))
    omega = rng.standard_normal((dims, FEATURES)) / ell[:, None]
    phase = rng.uniform(0.0, 2 * np.pi, FEATURES)
    weights = rng.standard_normal(FEATURES) * np.sqrt(2 * model.TRUE_SF2 / FEATURES)
    f = np.concatenate([np.cos(X[i:i + 4096] @ omega + phase) @ weights
                        for i in range(0, n, 4096)])
    y = f + np.sqrt(model.TRUE_SN2) * rng.standard_normal(n)
    theta = np.log(np.concatenate([ell, [model.TRUE_SF2, model.TRUE_SN2]]))
    return X, y, ["x%d" % (d + 1) for d in range(dims)] + ["y"], theta


def tile_for(n, target):
    """A tile size dividing n, near ``target`` (dask's cholesky needs equal tiles)."""
    if n <= target:
        return n
    divisors = [d for d in range(max(1, target // 2), min(n, 2 * target) + 1) if n % d == 0]
    if not divisors:
        raise DemoError(
            "dask.array.linalg.cholesky needs equal square tiles: N=%d has no divisor between "
            "%d and %d; choose N a multiple of %d (or pass --tile)" % (n, target // 2, 2 * target,
                                                                       target))
    return min(divisors, key=lambda d: abs(math.log(d / target)))


def tiles_for_check(m):
    """Tiles for the check on m points: about four per side, or one where m has no divisor
    near m / 4 (the check needs no particular tiling)."""
    try:
        return tile_for(m, max(1, m // 4))
    except DemoError:
        return m


# --------------------------------------------------------------------------
# The graph


def _covariance_tile(Xi, Xj, ell, sf2, sn2, diagonal):
    K = model.se_covariance(Xi, Xj, ell, sf2)
    if diagonal:
        K[np.diag_indices_from(K)] += sn2
    return K


def _contract_tile(G, Xi, Xj, ell, sf2, sn2, diagonal):
    """Σ G ⊙ ∂K/∂θ_p over one lower tile (G lower triangular on the diagonal), shape (1, 1, P)."""
    Kf = model.se_covariance(Xi, Xj, ell, sf2)
    W = G * Kf
    out = np.empty(len(ell) + 2)
    for d in range(len(ell)):
        diff = (Xi[:, d, None] - Xj[None, :, d]) / ell[d]
        out[d] = np.vdot(W, diff * diff)
    out[-2] = W.sum()
    out[-1] = sn2 * np.trace(G) if diagonal else 0.0
    return out.reshape(1, 1, -1)


def _zeros(p):
    return np.zeros((1, 1, p))


def log_lik_and_grad_graph(theta, X, y, tile, method="closed"):
    """Lazy (f, df/dθ) for the GP at θ, every N×N object a dask array of tile × tile tiles."""
    import dask.array as da
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    import blockchol.dask as bd

    n, dims = X.shape
    ell, sf2, sn2 = model.unpack(theta)
    Xd = da.from_array(X, chunks=(tile, dims))
    yd = da.from_array(y, chunks=tile)
    T = len(Xd.chunks[0])
    token = tokenize(theta, Xd, tile, method)

    # K, tile by tile from the inputs (dask's cholesky reads the upper and diagonal tiles).
    name = "gp-covariance-" + token
    dsk = {(name, i, j): (_covariance_tile, (Xd.name, i, 0), (Xd.name, j, 0), ell, sf2, sn2,
                          i == j)
           for i in range(T) for j in range(T)}
    K = da.Array(HighLevelGraph.from_collections(name, dsk, dependencies=[Xd]), name,
                 chunks=(Xd.chunks[0], Xd.chunks[0]), dtype=np.float64)

    L = da.linalg.cholesky(K, lower=True)
    v = da.linalg.solve_triangular(L, yd, lower=True)
    alpha = da.linalg.solve_triangular(L.T, v, lower=False)
    diag = da.diag(L)
    f = -0.5 * v.dot(v) - da.log(diag).sum() - 0.5 * n * np.log(2 * np.pi)

    # df/dL by hand (the in-core demo's derivation): L_bar = alpha vᵀ - diag(1/L_ii).
    with warnings.catch_warnings():     # "increasing the number of chunks": meant here
        warnings.simplefilter("ignore", da.PerformanceWarning)
        L_bar = da.outer(alpha, v) - da.diag(1.0 / diag)
    G = bd.chol_rev(L, L_bar, method=method)          # lower triangular: df = Σ_{i≥j} G_ij dK_ij

    p = dims + 2
    name = "gp-contract-" + token
    dsk = {}
    for i in range(T):
        for j in range(T):
            if i >= j:
                dsk[(name, i, j, 0)] = (_contract_tile, (G.name, i, j), (Xd.name, i, 0),
                                        (Xd.name, j, 0), ell, sf2, sn2, i == j)
            else:
                dsk[(name, i, j, 0)] = (_zeros, p)
    parts = da.Array(HighLevelGraph.from_collections(name, dsk, dependencies=[G, Xd]), name,
                     chunks=((1,) * T, (1,) * T, (p,)), dtype=np.float64)
    grad = parts.sum(axis=(0, 1))                     # dask's tree reduction
    return f, grad


# --------------------------------------------------------------------------
# Memory sampling


def _probe(dask_worker):
    import psutil
    data = dask_worker.data
    fast = getattr(getattr(data, "fast", None), "total_weight", None)
    slow = getattr(data, "spilled_total", None)
    return {"rss": psutil.Process().memory_info().rss,
            "managed": fast if fast is not None else dask_worker.state.nbytes,
            "spilled": slow.disk if slow is not None else 0}


class MemorySampler:
    """Polls every worker's RSS, in-memory managed data and spilled bytes; keeps the peaks."""

    def __init__(self, client, interval=0.5):
        self.client, self.interval = client, interval
        self.peaks = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                for address, sample in self.client.run(_probe).items():
                    peak = self.peaks.setdefault(address, dict.fromkeys(sample, 0))
                    for k, v in sample.items():
                        peak[k] = max(peak[k], v)
            except Exception:           # a worker restarting, the client closing
                pass
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


# --------------------------------------------------------------------------
# Driver


#: Below this per-worker limit the memory manager's thresholds on process memory
#: (spill 70 %, pause 80 %, terminate 95 % of the limit) would act on a worker's
#: own baseline (~100-200 MB of interpreter and libraries): they are then
#: switched off, and only the target on managed data (spill above 60 %) stays.
RSS_THRESHOLDS_FROM = 1.5e9


def _cluster(address, workers, memory_limit):
    import dask
    from distributed import Client, LocalCluster
    if address:
        try:
            return None, Client(address, timeout=CONNECT_TIMEOUT)
        except Exception as e:      # a malformed address, a refused or timed-out
            # connection, a server that is not a dask scheduler: all the user's to fix
            raise DemoError("cannot connect to a dask scheduler at %s (%s: %s)"
                            % (address, type(e).__name__, e)) from None
    config = {"distributed.worker.memory.target": 0.6}
    if memory_limit < RSS_THRESHOLDS_FROM:
        config.update({"distributed.worker.memory.spill": False,
                       "distributed.worker.memory.pause": False,
                       "distributed.worker.memory.terminate": False})
    with dask.config.set(config):
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1,
                               memory_limit=memory_limit, dashboard_address=None)
    return cluster, Client(cluster)


def evaluate(client, theta, X, y, tile, method, show_progress):
    """(f, grad, seconds) through the cluster; the progress bar on stdout if asked."""
    from distributed import progress
    start = time.perf_counter()
    f, grad = log_lik_and_grad_graph(theta, X, y, tile, method)
    futures = client.compute([f, grad])
    if show_progress:
        progress(futures)
        print()
    f, grad = client.gather(futures)
    return float(f), np.asarray(grad), time.perf_counter() - start


def settle_tiles(n, opts):
    """The tile size for N = n (``--tile`` or :func:`tile_for`); DemoError where the graph,
    one task's tiles or the check against the in-core demo cannot fit in memory."""
    tile = opts.tile if opts.tile else tile_for(n, min(DEFAULT_TILE, max(1, n // 4)))
    if n % tile:
        raise DemoError("--tile %d does not divide N=%d (dask's cholesky needs equal tiles)"
                        % (tile, n))
    T = n // tile
    products = 7 * T ** 3 / 6 if opts.method == "closed" else T ** 3 / 3
    model.check_memory("the task graph of N=%d in %d × %d tiles (%d per side, over %.3g tasks)"
                       % (n, tile, tile, T, products), products * BYTES_PER_TASK,
                       "use a smaller --n or a larger --tile")
    model.check_memory("a task on %d × %d tiles" % (tile, tile), 4 * 8.0 * tile * tile,
                       "use a smaller --tile")
    m = min(n, opts.check_n)
    model.check_memory("the check against the in-core demo on %d points" % m,
                       model.MATRICES * 8.0 * m * m, "use a smaller --check-n")
    return tile


def run(opts):
    if opts.data is None:
        n, data = opts.n or DEFAULT_N, None
    else:
        data = model.load_data(opts.data, opts.n, opts.seed)
        n = len(data[1])
    tile = settle_tiles(n, opts)
    matrix = n * n * 8
    workers = opts.workers or _usable_cores()
    limit = opts.memory_limit or int(0.9 * matrix)
    # The cluster before the synthetic draw (seconds at large N): a bad address fails at once.
    cluster, client = _cluster(opts.address, workers, limit)
    try:
        if data is None:
            X, y, names, _ = synthetic(n, opts.dims or 3, opts.seed)
            source = "synthetic GP draw (random Fourier features, seed %d)" % opts.seed
        else:
            X, y, names, _, source = data
        dims = X.shape[1]
        theta = model.start_point(X, y, opts.noise)
        print("data: %s, N=%d, D=%d; tiles %d × %d (%d per side), method %r"
              % (source, n, dims, tile, tile, n // tile, opts.method))
        if cluster is not None:
            print("LocalCluster: %d workers × 1 thread, memory limit %.2f GB each "
                  "(one N×N float64 matrix: %.2f GB; data spilled to disk above 60 %%%s)"
                  % (workers, limit / 1e9, matrix / 1e9,
                     "" if limit >= RSS_THRESHOLDS_FROM else
                     "; limits on process memory off below %.1f GB" % (RSS_THRESHOLDS_FROM / 1e9)))
        else:
            print("cluster at %s: %d workers"
                  % (opts.address, len(client.scheduler_info()["workers"])))
        with MemorySampler(client) as sampler:
            f, grad, seconds = evaluate(client, theta, X, y, tile, opts.method, True)
        print("log marginal likelihood at the start point: %.6f" % f)
        labels = ["log lengthscale " + name for name in names[:-1]]
        labels += ["log signal variance", "log noise variance"]
        print("gradient:")
        for label, g in zip(labels, grad):
            print("  %-28s %14.6e" % (label, g))
        print("wall time of the evaluation: %.1f s" % seconds)
        if sampler.peaks:
            print("peak memory per worker (sampled every 0.5 s):")
            for address, peak in sorted(sampler.peaks.items()):
                print("  %-24s RSS %6.2f GB (%.2f N×N), in-memory data %6.2f GB, spilled %6.2f GB"
                      % (address, peak["rss"] / 1e9, peak["rss"] / matrix, peak["managed"] / 1e9,
                         peak["spilled"] / 1e9))

        # ---- the check against the in-core demo, where both fit
        m = min(n, opts.check_n)
        Xc, yc = X[:m], y[:m]
        check_tile = tiles_for_check(m)
        f_dask, g_dask, _ = evaluate(client, theta, Xc, yc, check_tile, opts.method, False)
        f_core, g_core = model.log_lik_and_grad(theta, Xc, yc)
        _, g_closed = model.log_lik_and_grad(theta, Xc, yc, route="closed")
        rel = lambda a, b: np.linalg.norm(a - b) / np.linalg.norm(b)
        print("gradient check on the first %d points (tiles %d), relative error of the dask "
              "gradient:" % (m, check_tile))
        print("  vs the in-core demo (blockchol.chol_rev):                  %.2e"
              % rel(g_dask, g_core))
        print("  vs the closed form 1/2 tr((alpha alpha^T - K^-1) dK/dtheta): %.2e"
              % rel(g_dask, g_closed))
        print("  log likelihood, relative difference:                       %.2e"
              % (abs(f_dask - f_core) / abs(f_core)))
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _usable_cores():
    import os
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def parser():
    p = argparse.ArgumentParser(prog="python -m blockchol.demo._dask",
                                description="The GP log likelihood and gradient on dask, "
                                            "every N×N object a dask array.")
    p.add_argument("address", nargs="?", default="",
                   help="a dask.distributed scheduler (default: start a LocalCluster)")
    p.add_argument("--n", type=model.positive_int, default=None,
                   help="number of points (default %d)" % DEFAULT_N)
    p.add_argument("--dims", type=model.positive_int, default=None,
                   help="input dimensions (3)")
    p.add_argument("--seed", type=model.non_negative_int, default=0)
    p.add_argument("--data", metavar="PATH.csv", help="a CSV (header, target last) or 'co2'")
    p.add_argument("--noise", type=model.positive_float, default=None,
                   help="noise variance at the evaluation point (default var(y) / 10)")
    p.add_argument("--tile", type=model.positive_int, default=None,
                   help="tile size; must divide N (default: a divisor near min(%d, N/4))"
                        % DEFAULT_TILE)
    p.add_argument("--method", choices=("closed", "sweep"), default="closed",
                   help="blockchol.dask.chol_rev's method (default closed)")
    p.add_argument("--workers", type=model.positive_int, default=None,
                   help="LocalCluster workers (default: one per core)")
    p.add_argument("--memory-limit", type=model.positive_int, default=None, metavar="BYTES",
                   help="per LocalCluster worker (default 0.9 × one N×N float64 matrix)")
    p.add_argument("--check-n", type=model.positive_int, default=CHECK_N,
                   help="size of the gradient check against the in-core demo (%d)" % CHECK_N)
    return p


def main(argv=None):
    p = parser()
    opts = p.parse_args(argv)
    model.check_options(p, opts)
    _run_reporting_errors(opts)


def from_demo(args):
    """``python -m blockchol.demo --dask [ADDRESS]``: the demo's own options (checked by its
    parser) carried over, the others at their defaults."""
    opts = parser().parse_args([])
    opts.address = args.dask or ""
    for name in ("n", "dims", "seed", "data", "noise"):
        setattr(opts, name, getattr(args, name))
    _run_reporting_errors(opts)


def _run_reporting_errors(opts):
    try:
        import dask  # noqa: F401
        import distributed  # noqa: F401
    except ImportError:
        raise SystemExit("blockchol-demo: error: --dask needs dask and distributed: "
                         "pip install 'blockchol[dask]'") from None
    model.run_reporting_errors(run, opts)


if __name__ == "__main__":
    main(sys.argv[1:])
