"""The suites: cases as plain data, the implementations they time, the references they check against.

Every row is checked against an independent form: the reverse derivatives
against :func:`blockchol.reference.closed_rev` (scipy's triangular
solves), per matrix for stacks, and the anchor's rows against the same
form in long double; the factorization by its reconstruction; gemm against
numpy's product.  Peers (torch, jax, GPy) are timed on their
own backward only: the forward graph, the jit compilation and the
factorization are built once, untimed.
"""

import contextlib
import importlib

import numpy as np
import scipy.linalg as sl
from scipy.linalg import blas, lapack
from threadpoolctl import threadpool_limits

import blockchol
from blockchol import reference as ref

__all__ = ["SUITES"]

# --------------------------------------------------------------------------
# Cases

#: Single matrices for the speed targets, float64.
SIZES = {"full": (10, 100, 1000, 4000), "quick": (10, 100, 1000)}
#: Stacks (count, N, N) for the speed targets, float64 and float32.
STACKS = {"full": ((1000, 32, 32), (10000, 8, 8), (100, 128, 128)),
          "quick": ((1000, 32, 32), (10000, 8, 8), (100, 128, 128))}
#: Seconds slept before each sample of the targets: the peers' thread pools (torch's OpenMP,
#: XLA's, OpenBLAS's) spin after a call, and on two cores a spinning pool of one
#: implementation slowed the next one's N = 100 sample 40× (17 ms against 0.4).  Each
#: sample then follows one untimed call of its own (``warm``): a first call after a pause
#: measured page faults and wake-ups, 15.7 against 8 ms for a (10000, 8, 8) stack.
SETTLE = 0.25
#: The thread-scaling case.
THREAD_N = {"full": 4000, "quick": 1500}
#: Accuracy: (covariance family, N, jitter), sorted inputs: issue 8's table and one more.
ACCURACY = ((("rbf", 200, 1e-10), ("rbf", 500, 1e-10), ("rbf", 300, 1e-8), ("rbf", 600, 1e-6),
             ("matern52", 150, 1e-8), ("matern52", 100, 1e-10)))
#: Accuracy against conditioning: RBF, N = 200, sorted, these jitters.
JITTERS = tuple(10.0 ** -k for k in range(12, 0, -1))
#: The anchor: (N, BLAS threads) at which the seed's scalar loop (Smith 1995,
#: ``reference.smith_rev``) is timed beside GPy's loop, the unblocked sweep and both of
#: blockchol's methods.  N = 300 keeps the scalar loop at a few seconds a call (N³/3
#: interpreted steps); None leaves the BLAS pools as they are (blockchol's default).
ANCHOR = {"full": ((300, 1), (300, None)), "quick": ((100, 1),)}
#: Block sizes: (N, candidates) for the sweep's width and the closed form's product height.
BLOCKS = {"full": ((500, (32, 64, 128)), (1000, (32, 64, 128, 256)), (4000, (64, 128, 256))),
          "quick": ((500, (32, 64, 128)), (1000, (64, 128)))}


def spd_problem(n, batch=(), dtype=np.float64, seed=0):
    """(K, L, L̄): a well-conditioned random K (cond ~ 1e2), its factor, a random lower L̄."""
    rng = np.random.default_rng(seed + n)
    A = rng.standard_normal(batch + (n, n + 3))
    K = A @ np.swapaxes(A, -1, -2) / n + 0.1 * np.eye(n)
    L = np.linalg.cholesky(K).astype(dtype)
    if not batch:
        L = np.asfortranarray(L)          # as scipy.linalg.cholesky returns it
    Lb = np.tril(rng.standard_normal(batch + (n, n)))
    return K.astype(dtype), L, Lb.astype(dtype)


# --------------------------------------------------------------------------
# Peers: backward only, in their own convention (a full symmetric gradient S)


def _peer(name):
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


#: The frameworks suites' GP problem: an ARD RBF covariance on this many inputs.
GP_DIMS = 3


def gp_problem(n, seed=0):
    """``(theta, X, y)`` of the frameworks suites: log-hyperparameters (three lengthscales,
    signal and noise variance), inputs (n, GP_DIMS) and targets (n,), float64 numpy."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(0.0, 5.0, size=(n, GP_DIMS))
    y = np.sin(X @ np.array([1.0, 0.5, 0.25])) + 0.3 * rng.standard_normal(n)
    theta = np.log(np.array([0.8, 1.5, 3.0, 1.0, 0.1]))    # lengthscales, signal, noise
    return theta, X, y


def torch_rev(K, Lb):
    torch = _peer("torch")
    Kt = torch.from_numpy(np.ascontiguousarray(K)).requires_grad_()
    Lt = torch.linalg.cholesky(Kt)
    g = torch.from_numpy(np.ascontiguousarray(Lb))
    return lambda: torch.autograd.grad(Lt, Kt, g, retain_graph=True)[0].numpy()


def jax_rev(K, Lb):
    # jax's thread-local x64 switch, around the set-up and each call: the
    # peer runs in float64 without changing jax's global setting for the
    # rest of the process (tests and doctests run after the bench suites).
    jax = _peer("jax")
    import jax.numpy as jnp
    with jax.enable_x64(True):
        _, vjp = jax.vjp(jnp.linalg.cholesky, jnp.asarray(K))
        apply = jax.jit(lambda f, ct: f(ct)[0])
        ct = jnp.asarray(Lb)

    def run():
        with jax.enable_x64(True):
            return np.asarray(apply(vjp, ct).block_until_ready())
    return run


def gpy_rev(L, Lb):
    mod = _peer("GPy.util.choleskies")
    return lambda: mod.backprop_gradient(np.array(Lb), np.array(L))


def triangular(S):
    """G from a full gradient S over all N² entries of K: both triangles summed onto the lower."""
    St = np.swapaxes(S, -1, -2)
    return np.tril(S) + np.tril(St, -1)


PEER_REV = {"torch": torch_rev, "jax": jax_rev}


def rev_check(L, Lb, tol):
    """check(name, output) against closed_rev, per matrix; peers' outputs converted to G."""
    if L.ndim == 2:
        expected = ref.closed_rev(L, Lb)
    else:
        expected = np.stack([ref.closed_rev(L[i], Lb[i]) for i in range(len(L))])

    def check(name, out):
        out = triangular(np.asarray(out)) if name in PEER_REV else np.asarray(out)
        err = float(np.abs(out - expected).max() / np.abs(expected).max())
        return err, err <= tol
    return check


# --------------------------------------------------------------------------
# Suites


def targets(b):
    """Issue 11's and issue 8's speed targets: single matrices, stacks, thread scaling; the anchor."""
    profile = "quick" if b.quick else "full"
    for n in SIZES[profile]:
        K, L, Lb = spd_problem(n)
        impls = {"chol_rev": lambda: blockchol.chol_rev(L, Lb),
                 "chol_rev sweep": lambda: blockchol.chol_rev(L, Lb, method="sweep")}
        if n == 10:
            impls["scipy.linalg.cholesky"] = lambda: sl.cholesky(K, lower=True)
        else:
            impls["dpotrf"] = lambda: lapack.dpotrf(K, lower=1)
        if n >= 1000:
            Kf = np.asfortranarray(K)
            impls["dgemm"] = lambda: blas.dgemm(1.0, Kf, Kf)
        for name, make in PEER_REV.items():
            if _peer(name) is not None:
                impls[name] = make(K, Lb)
        base = "scipy.linalg.cholesky" if n == 10 else "dpotrf"
        check = rev_check(L, Lb, 1e-9)
        b.compare("targets", "N=%d" % n, impls, _with_yardsticks(check, K, L), baseline=base,
                  settle=SETTLE, warm=True, n=n, flops_sweep=2 * n ** 3 / 3, flops_gemm=2 * n ** 3)
    for dtype in (np.float64, np.float32):
        for shape in STACKS[profile]:
            c, n, _ = shape
            K, L, Lb = spd_problem(n, (c,), dtype)
            impls = {"chol_rev": lambda: blockchol.chol_rev(L, Lb),
                     "chol_rev sweep": lambda: blockchol.chol_rev(L, Lb, method="sweep")}
            for name, make in PEER_REV.items():
                if _peer(name) is not None:
                    impls[name] = make(K, Lb)
            tol = 1e-9 if dtype == np.float64 else 1e-3
            b.compare("targets", "stack %s %s" % (shape, np.dtype(dtype).name), impls,
                      rev_check(L.astype(np.float64), Lb.astype(np.float64), tol),
                      baseline="torch", settle=SETTLE, warm=True, shape=list(shape), dtype=np.dtype(dtype).name)
    threads(b, THREAD_N[profile])
    anchor(b)


def _with_yardsticks(check, K, L):
    def full_check(name, out):
        if name in ("dpotrf", "scipy.linalg.cholesky"):
            F = np.tril(out[0] if isinstance(out, tuple) else out)
            err = float(np.abs(F @ F.T - K).max() / np.abs(K).max())
            return err, err < 1e-12
        if name == "dgemm":
            err = float(np.abs(out - K @ K).max() / np.abs(K @ K).max())
            return err, err < 1e-12
        return check(name, out)
    return full_check


def threads(b, n):
    """1 → 2 (… → all) threads at one N: every implementation at every count, side by side."""
    K, L, Lb = spd_problem(n)
    Kf = np.asfortranarray(K)
    counts = sorted({1, 2, b.cores} if b.cores > 2 else {1, b.cores})
    impls = {}
    for t in counts:
        impls["chol_rev sweep @%d" % t] = (lambda t=t: blockchol.chol_rev(L, Lb, method="sweep",
                                                                        threads=t))
        impls["chol_rev @%d" % t] = lambda t=t: blockchol.chol_rev(L, Lb, threads=t)
        impls["dpotrf @%d" % t] = lambda t=t: _limited(t, lambda: lapack.dpotrf(K, lower=1))
        impls["dgemm @%d" % t] = lambda t=t: _limited(t, lambda: blas.dgemm(1.0, Kf, Kf))
    check = rev_check(L, Lb, 1e-9)

    def named(name, out):
        return _with_yardsticks(check, K, L)(name.split(" @")[0], out)
    b.compare("threads", "N=%d" % n, impls, named, baseline="chol_rev sweep @1", n=n)


def _limited(t, fn):
    with threadpool_limits(t, user_api="blas"):
        return fn()


def anchor(b):
    """The oldest yardstick: Smith's scalar loop, GPy's loop, the unblocked sweep and both methods.

    One matrix per case, every implementation on the same L and L̄ under
    the same BLAS thread setting (set once around the case), interleaved;
    ratios are Smith's time over each row's.  Every row is checked against
    the long-double closed form.
    """
    gpy = _peer("GPy.util.choleskies")
    if gpy is None:
        b.note("anchor: GPy is not installed, its row is left out")
    # GPy's backprop_gradient is its compiled loop (backprop_gradient_par_c, a BLAS ?symv
    # per column) when its Cython module loads, a Python loop otherwise: the record says which.
    gpy_function = gpy.backprop_gradient.__name__ if gpy is not None else None
    for n, t in ANCHOR["quick" if b.quick else "full"]:
        K, L, Lb = spd_problem(n)
        impls = {"smith_rev": lambda: ref.smith_rev(L, Lb)}
        if gpy is not None:
            impls["GPy backprop_gradient"] = gpy_rev(L, Lb)
        impls["sweep_rev"] = lambda: ref.sweep_rev(L, Lb)
        impls["chol_rev sweep"] = lambda: blockchol.chol_rev(L, Lb, method="sweep")
        impls["chol_rev closed"] = lambda: blockchol.chol_rev(L, Lb, method="closed")
        setting = "BLAS %d thread%s" % (t, "s" * (t > 1)) if t else "BLAS pools as they are"
        with threadpool_limits(t, user_api="blas") if t else contextlib.nullcontext():
            b.compare("anchor", "N=%d, %s" % (n, setting), impls, truth_check(L, Lb, 1e-10),
                      baseline="smith_rev", n=n, threads=t, gpy_function=gpy_function)


def truth_check(L, Lb, tol):
    """check(name, output): relative Frobenius error against closed_rev in long double.

    ``spd_problem``'s matrices have cond(K) ~ 1e2, so every correct form
    lands near 1e-15 and ``tol`` only separates right from wrong.
    """
    truth = ref.closed_rev(L, Lb, dtype=np.longdouble)

    def check(name, out):
        err = _fro(out, truth)
        return err, err <= tol
    return check


def blocks(b):
    """The sweep's block width and the closed form's product height, against N."""
    for n, sizes in BLOCKS["quick" if b.quick else "full"]:
        K, L, Lb = spd_problem(n)
        check = rev_check(L, Lb, 1e-9)
        impls = {}
        for nb in sizes:
            impls["sweep nb=%d" % nb] = lambda nb=nb: blockchol.chol_rev(L, Lb, method="sweep",
                                                                         block_size=nb)
        for nb in sizes + (512,):
            impls["closed nb=%d" % nb] = lambda nb=nb: blockchol.chol_rev(L, Lb, block_size=nb)
        impls["sweep default"] = lambda: blockchol.chol_rev(L, Lb, method="sweep")
        impls["closed default"] = lambda: blockchol.chol_rev(L, Lb)
        b.compare("blocks", "N=%d" % n, impls, check, baseline="closed default", n=n)


def accuracy(b):
    """Issue 8's table: relative errors against the long-double truth, every method, same matrices."""
    torch, jax = _peer("torch"), _peer("jax")
    for family, n, jitter in ACCURACY:
        K, L, Lb = ref.covariance_problem(family, n, jitter)
        row = _errors(K, L, Lb, torch, jax, worst=True)
        for impl, err in row.items():
            b.record("accuracy", "%s %d %g" % (family, n, jitter), impl, error=err,
                     cond=float(np.linalg.cond(K)))
    for jitter in JITTERS[::2] if b.quick else JITTERS:
        K, L, Lb = ref.covariance_problem("rbf", 200, jitter)
        cond = float(np.linalg.cond(K))
        for impl, err in _errors(K, L, Lb, torch, jax, worst=False).items():
            b.record("accuracy-cond", "rbf 200 %g" % jitter, impl, error=err, cond=cond)


def _fro(a, truth):
    return float(np.linalg.norm((np.asarray(a, np.longdouble) - truth).astype(float))
                 / np.linalg.norm(truth.astype(float)))


def _errors(K, L, Lb, torch, jax, worst):
    truth = ref.closed_rev(L, Lb, dtype=np.longdouble)
    row = {"chol_rev (closed)": _fro(blockchol.chol_rev(L, Lb), truth),
           "chol_rev sweep": _fro(blockchol.chol_rev(L, Lb, method="sweep"), truth)}
    if worst:
        errs = {nb: _fro(blockchol.chol_rev(L, Lb, method="sweep", block_size=nb), truth)
                for nb in (16, 32, 64, 100, 128)}
        nb = max(errs, key=errs.get)
        row["sweep, worst block size"] = errs[nb]
        row["worst block size"] = nb
    row["level-2 sweep"] = _fro(ref.sweep_rev(L, Lb), truth)
    gpy = _peer("GPy.util.choleskies")
    if gpy is not None:
        row["GPy"] = _fro(gpy_rev(L, Lb)(), truth)
    row["closed form, float64"] = _fro(ref.closed_rev(L, Lb), truth)
    # torch and jax factor K themselves: their errors are against the truth from their factor.
    if torch is not None:
        Kt = torch.from_numpy(K.copy()).requires_grad_()
        Lt = torch.linalg.cholesky(Kt)
        S = torch.autograd.grad(Lt, Kt, torch.from_numpy(Lb))[0].numpy()
        row["torch"] = _fro(triangular(S), ref.closed_rev(Lt.detach().numpy(), Lb,
                                                            dtype=np.longdouble))
    if jax is not None:
        import jax.numpy as jnp
        with jax.enable_x64(True):
            Lj, vjp = jax.vjp(jnp.linalg.cholesky, jnp.asarray(K))
            S = np.asarray(vjp(jnp.asarray(Lb))[0])
        row["jax"] = _fro(triangular(S), ref.closed_rev(np.asarray(Lj), Lb, dtype=np.longdouble))
    return row


def _external(module):
    """A suite kept in a module of its own with ``run(bench)``."""
    def suite(b):
        importlib.import_module("bench." + module).run(b)
    return suite


def anatomy(b):
    """Where the accuracy goes: operations, formulations, diagonal-block kernels (bench/anatomy.py)."""
    from . import anatomy as study
    study.run(b)


#: The one registry: name → suite.  ``python -m bench`` runs them in this order.
SUITES = {"targets": targets, "blocks": blocks, "accuracy": accuracy, "anatomy": anatomy,
          "frameworks-torch": _external("frameworks_torch"),
          "frameworks-jax": _external("frameworks_jax"), "dask": _external("dask_suite")}
