"""blockchol inside jax: the jitted gradient of a GP negative log marginal likelihood.

The ``frameworks-jax`` suite of ``python -m bench``.  ``jax.jit(jax.grad(nll))``
with respect to the kernel's hyperparameters (ARD RBF kernel on 3 inputs:
three lengthscales, signal and noise variance), where ``nll`` builds K,
factors it, solves with ``jax.scipy.linalg.cho_solve`` and takes the
log-determinant from the factor's diagonal, with ``blockchol.jax.cholesky``
(blockchol's default method, and the closed form forced) and with
``jnp.linalg.cholesky`` (the baseline): float64, the same data, interleaved,
the first call (tracing and compilation) never timed.  Each gradient is
checked against ½ tr((K⁻¹ − ααᵀ) ∂K/∂θ), α = K⁻¹y, in numpy and scipy.

Then, at the largest N, where one gradient's time goes (``profile``), and
the size below which jax's own rule is faster than a host call
(``crossover``: ``blockchol.jax.CROSSOVER_N``).  ``python -m
bench.frameworks_jax --crossover`` runs the crossover measurement alone.
"""

import contextlib
import functools
import math

import numpy as np
import scipy.linalg

from .harness import with_method
from .suites import GP_DIMS as DIMS, gp_problem

__all__ = ["SIZES", "run", "gp_problem", "make_nll", "reference_gradient"]

SIZES = {"full": (100, 1000, 2000, 3000, 4000), "quick": (100, 1000)}
# cond(K) is at most about N·(signal + noise)/noise = 4e4 at N = 4000, so a correct gradient
# is within ~cond·eps·√N ≈ 1e-10 of the closed form; a wrong rule is O(1) off.
TOLERANCE = 1e-7


def _jax():
    import jax
    import jax.numpy as jnp
    import jax.scipy.linalg as jsl
    import blockchol.jax as bj
    return jax, jnp, jsl, bj


def make_nll(cholesky):
    """The negative log marginal likelihood of y under GP(0, k_theta), through ``cholesky``."""
    jax, jnp, jsl, _ = _jax()

    def nll(theta, X, y):
        L = cholesky(_kernel(theta, X))
        alpha = jsl.cho_solve((L, True), y)
        n = X.shape[0]
        return 0.5 * y @ alpha + jnp.sum(jnp.log(jnp.diagonal(L))) + 0.5 * n * math.log(2 * math.pi)

    return nll


def reference_gradient(theta, X, y):
    """d nll / d theta = ½ tr((K⁻¹ − ααᵀ) ∂K/∂θ), in numpy and scipy (no jax, no blockchol)."""
    ell, signal, noise = np.exp(theta[:DIMS]), np.exp(theta[DIMS]), np.exp(theta[DIMS + 1])
    n = X.shape[0]
    diff2 = [(X[:, d, None] - X[None, :, d]) ** 2 / ell[d] ** 2 for d in range(DIMS)]
    rbf = signal * np.exp(-0.5 * sum(diff2))
    K = rbf + noise * np.eye(n)
    factor = scipy.linalg.cho_factor(K, lower=True)
    alpha = scipy.linalg.cho_solve(factor, y)
    M = scipy.linalg.cho_solve(factor, np.eye(n)) - np.outer(alpha, alpha)   # K⁻¹ − ααᵀ
    grads = [0.5 * np.sum(M * rbf * diff2[d]) for d in range(DIMS)]          # ∂K/∂log ℓ_d
    grads.append(0.5 * np.sum(M * rbf))                                      # ∂K/∂log σ_f²
    grads.append(0.5 * noise * np.trace(M))                                  # ∂K/∂log σ_n²
    return np.array(grads)


@contextlib.contextmanager
def _x64():
    """jax's global x64 switch on (as a user's ``jax.config.update`` would), restored after.

    Global rather than ``with jax.enable_x64()``, whose thread-local setting
    makes blockchol.jax ship 64-bit data to its host calls as uint32 words.
    """
    jax, _, _, _ = _jax()
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", previous)


@contextlib.contextmanager
def _crossover_at(value):
    """Trace with every one of blockchol.jax's crossovers at value (read when a function is traced)."""
    _, _, _, bj = _jax()
    saved = dict(bj.CROSSOVER_N)
    bj.CROSSOVER_N.update(dict.fromkeys(saved, value))
    try:
        yield
    finally:
        bj.CROSSOVER_N.update(saved)


def _blocked(f, *args):
    """A thunk that calls f and waits for the result (jax dispatches asynchronously)."""
    def thunk():
        out = f(*args)
        out.block_until_ready()
        return out
    return thunk


def gp(b):
    jax, jnp, _, bj = _jax()
    with _x64():
        ours = jax.jit(jax.grad(make_nll(bj.cholesky)))
        base = jax.jit(jax.grad(make_nll(jnp.linalg.cholesky)))
        for n in SIZES["quick" if b.quick else "full"]:
            theta, X, y = gp_problem(n)
            expected = reference_gradient(theta, X, y)
            args = tuple(jnp.asarray(a) for a in (theta, X, y))
            impls = {"blockchol.jax": _blocked(ours, *args),
                     "jnp.linalg.cholesky": _blocked(base, *args)}
            if n >= bj.CROSSOVER_N["float64"]:
                impls["blockchol.jax, closed form"] = with_method("closed", impls["blockchol.jax"])
                impls["blockchol.jax, method='sweep'"] = with_method("sweep", impls["blockchol.jax"])

            def check(name, out):
                err = float(np.abs(np.asarray(out) - expected).max() / np.abs(expected).max())
                return err, err <= TOLERANCE
            b.compare("frameworks-jax", "GP gradient, N=%d" % n, impls, check,
                      baseline="jnp.linalg.cholesky", n=n)


def profile(b, n):
    """The parts of one gradient at size n, timed side by side (differences give the rest)."""
    jax, jnp, jsl, bj = _jax()
    import blockchol
    with _x64():
        theta, X, y = (jnp.asarray(a) for a in gp_problem(n))
        nll = make_nll(jnp.linalg.cholesky)
        K = jax.jit(_kernel)(theta, X)

        def tail(L, y):
            return 0.5 * y @ jsl.cho_solve((L, True), y) + jnp.sum(jnp.log(jnp.diagonal(L)))
        L = jnp.linalg.cholesky(K)
        L_bar = jax.grad(tail)(L, y)
        vjp = lambda chol: jax.jit(lambda K, Lb: jax.vjp(chol, K)[1](Lb)[0])   # noqa: E731
        impls = {"kernel matrix": _blocked(jax.jit(_kernel), theta, X),
                 "potrf": _blocked(jax.jit(jnp.linalg.cholesky), K),
                 "forward nll": _blocked(jax.jit(nll), theta, X, y),
                 "Cholesky vjp incl. potrf, blockchol": _blocked(vjp(bj.cholesky), K, L_bar),
                 "Cholesky vjp incl. potrf, jax's rule": _blocked(vjp(jnp.linalg.cholesky), K, L_bar),
                 "cho_solve + logdet, value and grad": _blocked(jax.jit(jax.grad(tail)), L, y),
                 "host: chol_rev alone (numpy)": functools.partial(
                     blockchol.chol_rev, np.asarray(L), np.asarray(L_bar), check_finite=False)}
        b.compare("frameworks-jax-profile", "N=%d" % n, impls, lambda name, out: (None, True),
                  baseline="Cholesky vjp incl. potrf, jax's rule", n=n)


def _kernel(theta, X):
    _, jnp, _, _ = _jax()
    ell, signal, noise = jnp.exp(theta[:DIMS]), jnp.exp(theta[DIMS]), jnp.exp(theta[DIMS + 1])
    Z = X / ell
    sq = jnp.sum(Z * Z, axis=1)
    d2 = jnp.maximum(sq[:, None] + sq[None, :] - 2.0 * (Z @ Z.T), 0.0)
    return signal * jnp.exp(-0.5 * d2) + noise * jnp.eye(X.shape[0], dtype=X.dtype)


def crossover(b, sizes, dtypes=("float64", "float32"), stacks=(1, 8)):
    """Where jax's own rule stops being faster: blockchol's rule against jax's, per dtype and N.

    The jitted grad and jvp of sum(W ⊙ cholesky(K)) for one matrix and a stack (vmap), each
    traced once with every crossover at 0 (blockchol's rule) and once with every crossover
    out of reach (jax's rule), timed side by side; ratio = time / jax's rule's.  The
    crossover of a dtype (``blockchol.jax.CROSSOVER_N``) is the order from which blockchol's
    rule is faster.
    """
    jax, jnp, _, bj = _jax()
    rng = np.random.default_rng(0)
    with _x64():
        for dtype in dtypes:
            for stack in stacks:
                for n in sizes:
                    shape = (stack, n, n) if stack > 1 else (n, n)
                    A = rng.standard_normal(shape[:-1] + (n + 3,))
                    if np.dtype(dtype).kind == "c":
                        A = A + 1j * rng.standard_normal(A.shape)
                    K = A @ np.conj(np.swapaxes(A, -1, -2)) / n + 0.5 * np.eye(n)
                    K = jnp.asarray(K.astype(dtype))
                    W = jnp.asarray(rng.standard_normal((n, n)).astype(dtype))

                    def loss(k):
                        return jnp.real(jnp.sum(bj.cholesky(k) * W))

                    grad = jax.grad(loss)
                    jvp = lambda k: jax.jvp(bj.cholesky, (k,), (k,))[1]     # noqa: E731
                    if stack > 1:
                        grad, jvp = jax.vmap(grad), jax.vmap(jvp)
                    for mode, f in (("grad", grad), ("jvp", jvp)):
                        impls, served = {}, {}
                        for rule, value in (("blockchol", 0), ("jax", 1 << 62)):
                            name = "%s, %s rule" % (mode, rule)
                            # A function of its own per rule: jax.jit caches traces by the
                            # function, so jitting f twice would run the first rule twice.
                            g = jax.jit(lambda k, f=f: f(k))
                            with _crossover_at(value):
                                g(K).block_until_ready()              # traced under this setting
                                jaxpr = str(jax.make_jaxpr(g)(K))
                            served[name] = ("blockchol_chol" in jaxpr) == (rule == "blockchol")
                            impls[name] = _blocked(g, K)
                        b.compare("frameworks-jax-crossover",
                                  "%s %s N=%d%s" % (mode, dtype, n, " stack=%d" % stack if stack > 1 else ""),
                                  impls, lambda name, out: (None, served[name]),
                                  baseline="%s, jax rule" % mode, n=n, stack=stack, dtype=dtype)


CROSSOVER_SIZES = {"full": (256, 384, 512, 768, 1024), "quick": (256, 512)}


def run(b):
    """The ``frameworks-jax`` suite: the GP gradient, its profile, the crossover."""
    gp(b)
    profile(b, 1000 if b.quick else 4000)
    crossover(b, CROSSOVER_SIZES["quick" if b.quick else "full"], stacks=(1,) if b.quick else (1, 8))


def main(argv=None):
    """``python -m bench.frameworks_jax [--crossover] [--quick] [--sizes N,...] [--dtypes ...]``."""
    import argparse
    import sys
    from .harness import Bench
    parser = argparse.ArgumentParser(prog="python -m bench.frameworks_jax", description=__doc__)
    parser.add_argument("--crossover", action="store_true",
                        help="only the crossover measurement (blockchol's rule against jax's)")
    parser.add_argument("--quick", action="store_true", help="smaller cases, fewer rounds")
    parser.add_argument("--sizes", help="comma-separated orders N for --crossover")
    parser.add_argument("--dtypes", default="float64,float32",
                        help="comma-separated dtypes for --crossover (default: float64,float32)")
    parser.add_argument("--stacks", default="1,8", help="stack sizes for --crossover (default: 1,8)")
    parser.add_argument("--out", default="bench/out/frameworks-jax",
                        help="folder for results.json/.md")
    args = parser.parse_args(argv)
    b = Bench(quick=args.quick)
    if args.crossover:
        sizes = (tuple(int(n) for n in args.sizes.split(",")) if args.sizes
                 else CROSSOVER_SIZES["quick" if args.quick else "full"])
        crossover(b, sizes, tuple(args.dtypes.split(",")),
                  tuple(int(k) for k in args.stacks.split(",")))
    else:
        run(b)
    sys.stdout.write(b.write(args.out, {"quick": args.quick, "suites": ["frameworks-jax"],
                                        "argv": list(argv if argv is not None else sys.argv[1:])}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
