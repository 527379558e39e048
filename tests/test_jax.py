"""blockchol.jax: jax's Cholesky with blockchol's derivatives.

Oracles: jax's own Cholesky derivatives (jnp.linalg.cholesky) and
jax.test_util.check_grads (finite differences) -- never blockchol itself.
Matrices here are small, so most tests force the blockchol path by tracing
with every ``CROSSOVER_N`` at 0 (the fixture ``ours``), and every such test also
checks that blockchol was really called (the fixture counts the calls), so
that a silent fall-back to jax's own rule cannot pass for ours.

Tolerances: two computations of one derivative agree to N·eps·κ(K)
relative to its largest entry (:func:`tolerance`, κ² for the Hessian),
with eps of the lower precision compared; where both sides run the same
operations the results are compared bit for bit.  check_grads uses its own
defaults (finite differences, eps 1e-4 in double precision, tolerances
set by jax for the dtype).  The contract with jax's own functions -- NaN
patterns, exceptions, every entry accelerate() patches -- is in
tests/test_jax_contract.py.
"""

import threading

import numpy as np
import pytest

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
from jax.test_util import check_grads

import blockchol
import blockchol.jax as bj
from helpers import EPS, run_python

REAL_COMPLEX = [np.float64, np.complex128]


@pytest.fixture(scope="module", autouse=True)
def x64():
    """Double precision for this module; the previous setting comes back after it."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)


class Calls:
    """Records the shape of L for every call of blockchol.chol_rev / chol_fwd."""

    def __init__(self, monkeypatch):
        self.rev, self.fwd = [], []
        self._lock = threading.Lock()
        for name, log in (("chol_rev", self.rev), ("chol_fwd", self.fwd)):
            real = getattr(blockchol, name)

            def counted(L, X, *args, _real=real, _log=log, **kwargs):
                with self._lock:
                    _log.append(np.shape(L))
                return _real(L, X, *args, **kwargs)

            monkeypatch.setattr(blockchol, name, counted)

    def clear(self):
        self.rev.clear()
        self.fwd.clear()


@pytest.fixture
def calls(monkeypatch):
    return Calls(monkeypatch)


@pytest.fixture
def ours(monkeypatch, calls):
    """Trace with blockchol's rule at every size; yields the call log."""
    for name in bj.CROSSOVER_N:
        monkeypatch.setitem(bj.CROSSOVER_N, name, 0)
    return calls


def spd(n, dtype=np.float64, batch=(), seed=0, shift=1.0):
    rng = np.random.default_rng(seed)
    shape = tuple(batch) + (n, n + 2)
    a = rng.standard_normal(shape)
    if np.dtype(dtype).kind == "c":
        a = a + 1j * rng.standard_normal(shape)
    k = a @ np.conj(np.swapaxes(a, -1, -2)) / n + shift * np.eye(n)
    return jnp.asarray(k.astype(dtype))


def randn(shape, dtype=np.float64, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    if np.dtype(dtype).kind == "c":
        x = x + 1j * rng.standard_normal(shape)
    return jnp.asarray(x.astype(dtype))


def hermitian(x):
    return (x + jnp.conj(jnp.swapaxes(x, -1, -2))) / 2


def H(x):
    return jnp.conj(jnp.swapaxes(x, -1, -2))


def from_lower(a):
    """The Hermitian matrix completed from a's lower triangle (real part of its diagonal);
    selected, not summed, so that an infinity stays where it is."""
    i, j = np.indices(a.shape[-2:])
    return jnp.where(i > j, a, jnp.where(i < j, H(a), jnp.real(a).astype(a.dtype)))


def rel(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.abs(a - b).max() / np.abs(b).max())


def kappa(a):
    """κ₂ of a Hermitian positive definite matrix, the largest over a stack, in double precision."""
    a = np.asarray(a)
    w = np.linalg.eigvalsh(a.astype(np.complex128 if np.iscomplexobj(a) else np.float64))
    return float(np.max(w[..., -1] / w[..., 0]))


def tolerance(n, dtype, cond, order=1):
    """The bar for two computations of one derivative at a matrix of order n and condition
    number cond, relative to the derivative's largest entry: N·eps·κ^order.

    Each computation passes through two triangular solves with L, κ(L)² = κ(K), and products
    of length N, so each is within ~N·eps·κ(K) of the exact derivative (first order; the
    Hessian differentiates again, κ²).  Measured errors in these tests stay below 0.05 of it;
    an algebra error is O(1) relative."""
    return n * EPS[np.dtype(dtype)] * cond ** order


def assert_close(got, want, a, dtype=None, order=1):
    """got ≈ want, the derivatives at a (its order and κ), in dtype (default a's)."""
    a = np.asarray(a)
    err = rel(got, want)
    bar = tolerance(a.shape[-1], dtype or a.dtype, kappa(a), order)
    assert err <= bar, "relative error %.3g > %.3g" % (err, bar)


def loss_of(chol, W, **kw):
    """A real loss of the factor that weights every entry differently (and a nonlinear term)."""
    def loss(a):
        L = chol(a, **kw)
        diagonal = jnp.real(jnp.diagonal(L, axis1=-2, axis2=-1))
        return jnp.real(jnp.sum(W * L)) + jnp.sum(jnp.log(diagonal))
    return loss


# ---------------------------------------------------------------------------
# Imports


def test_import_blockchol_does_not_import_jax():
    result = run_python("import sys, blockchol; blockchol.chol_rev([[1.0]], [[1.0]]); "
                  "print('jax' in sys.modules, 'jaxlib' in sys.modules)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]


def test_import_without_jax_names_the_extra():
    result = run_python("import sys; sys.modules['jax'] = None\n"
                  "try:\n    import blockchol.jax\n"
                  "except ImportError as e:\n    print('IMPORTERROR', e)\n")
    assert result.returncode == 0, result.stderr
    assert "IMPORTERROR" in result.stdout
    assert "pip install 'blockchol[jax]'" in result.stdout


# ---------------------------------------------------------------------------
# The factor: jax's own


# Promotion of integer and boolean input and the exceptions for what jax refuses:
# tests/test_jax_contract.py (test_inputs_as_jax), against jax's own.


# ---------------------------------------------------------------------------
# check_grads: finite differences, orders 1 and 2, forward and reverse


@pytest.mark.parametrize("dtype", REAL_COMPLEX)
@pytest.mark.parametrize("upper", [False, True])
@pytest.mark.parametrize("symmetrize_input", [True, False])
def test_check_grads_order_2(ours, dtype, upper, symmetrize_input):
    a = spd(5, dtype)
    f = lambda a: bj.cholesky(a, upper=upper, symmetrize_input=symmetrize_input)
    check_grads(f, (a,), order=2, modes=("fwd", "rev"))
    assert ours.fwd and ours.rev


@pytest.mark.parametrize("dtype", REAL_COMPLEX)
def test_check_grads_order_1_jit_and_batch(ours, dtype):
    a = spd(6, dtype, batch=(2, 3))
    check_grads(jax.jit(bj.cholesky), (a,), order=1, modes=("fwd", "rev"))
    assert (2, 3, 6, 6) in ours.fwd and (2, 3, 6, 6) in ours.rev


def test_check_grads_fails_for_a_wrong_rule(monkeypatch, ours):
    """The oracle can fail: chol_rev applied to jax's cotangent as it is (the complex trap)."""
    real = blockchol.chol_rev

    def unwrapped(L, C, **kwargs):    # undoes the conjugations around it: chol_rev(L, C)
        return np.conj(real(L, np.conj(C), **kwargs))

    monkeypatch.setattr(blockchol, "chol_rev", unwrapped)
    with pytest.raises(AssertionError):
        check_grads(jax.jit(bj.cholesky), (spd(5, np.complex128),), order=1, modes=("rev",))


# ---------------------------------------------------------------------------
# Against jax's own derivatives


def test_hessian_matches_jax(ours):
    """jax.hessian (forward over reverse) under jit; check_grads covers the other orders."""
    a = spd(5)
    W = randn((5, 5))
    H = jax.jit(jax.hessian(loss_of(bj.cholesky, W)))(a)
    H_jax = jax.hessian(loss_of(jnp.linalg.cholesky, W))(a)
    assert H.shape == (5, 5, 5, 5)
    assert_close(H, H_jax, a, order=2)
    assert ours.rev and ours.fwd


def test_symmetrize_input_false_reads_the_lower_triangle_only(ours):
    """The derivative of what is computed: zero above the diagonal, jax's own on from_lower(a)."""
    a = spd(7) + jnp.triu(randn((7, 7)), 1)
    W = randn((7, 7), seed=4)
    g = jax.grad(loss_of(bj.cholesky, W, symmetrize_input=False))(a)
    assert not np.triu(np.asarray(g), 1).any()
    g_oracle = jax.grad(lambda a: loss_of(jnp.linalg.cholesky, W)(from_lower(a)))(a)
    assert_close(g, g_oracle, from_lower(a))
    # along a tangent of the unread triangle the factor does not move
    upper_only = jnp.triu(randn((7, 7)), 1)
    _, d = jax.jvp(lambda x: bj.cholesky(x, symmetrize_input=False), (a,), (upper_only,))
    assert not np.asarray(d).any()
    # and for Hermitian tangents it is jax's own rule
    t = hermitian(randn((7, 7), seed=6))
    _, d = jax.jvp(lambda x: bj.cholesky(x, symmetrize_input=False), (a,), (t,))
    _, d_jax = jax.jvp(lambda x: jnp.linalg.cholesky(x, symmetrize_input=False), (a,), (t,))
    assert_close(d, d_jax, from_lower(a))


def test_symmetrize_input_true_gradient_is_symmetric(ours):
    a = spd(7) + 0.3 * jnp.triu(randn((7, 7)), 1)    # not symmetric: the mean is factored
    g = np.asarray(jax.grad(loss_of(bj.cholesky, randn((7, 7), seed=2)))(a))
    np.testing.assert_array_equal(g, g.T)     # the transpose of (a + aᵀ)/2: symmetric, bitwise
    assert g[np.triu_indices(7, 1)].all()     # not the one-triangle gradient


# ---------------------------------------------------------------------------
# float32


@pytest.mark.parametrize("dtype, wide", [(np.float32, np.float64), (np.complex64, np.complex128)])
def test_single_precision(ours, dtype, wide):
    a = spd(12, wide, batch=(2,))
    W = randn((12, 12), wide)
    g64 = jax.grad(loss_of(jnp.linalg.cholesky, W))(a)
    g32 = jax.jit(jax.grad(loss_of(bj.cholesky, W.astype(dtype))))(a.astype(dtype))
    assert g32.dtype == dtype
    assert_close(g32, g64, a, dtype)
    t = hermitian(randn(a.shape, wide, seed=7))
    d64 = jax.jvp(jnp.linalg.cholesky, (a,), (t,))[1]
    jvp = jax.jit(lambda a, t: jax.jvp(bj.cholesky, (a,), (t,))[1])
    d32 = jvp(a.astype(dtype), t.astype(dtype))
    assert d32.dtype == dtype
    assert_close(d32, d64, a, dtype)
    assert ours.rev[0] == (2, 12, 12) and ours.fwd


def test_float32_default_mode_in_a_subprocess():
    """jax's default (x64 off) and a 64-bit block under `with jax.enable_x64()`: the callback
    runs on an XLA thread, where the thread-local x64 setting does not reach (N = 512: not a
    computation small enough for XLA to run it on the calling thread)."""
    code = """
import jax, jax.numpy as jnp, numpy as np, blockchol, blockchol.jax as bj
bj.CROSSOVER_N.update(dict.fromkeys(bj.CROSSOVER_N, 0))
served = []
chol_rev = blockchol.chol_rev
blockchol.chol_rev = lambda L, *args, **kwargs: served.append(L.dtype) or chol_rev(L, *args, **kwargs)
rng = np.random.default_rng(0)
def case(n, dtype):
    a = rng.standard_normal((n, n)); k = jnp.asarray((a @ a.T / n + np.eye(n)).astype(dtype))
    W = jnp.asarray(rng.standard_normal((n, n)).astype(dtype))
    out = []
    for chol in (bj.cholesky, jnp.linalg.cholesky):
        f = lambda k: jnp.sum(W * chol(k))
        out.append(np.asarray(jax.jit(jax.grad(f))(k)))
    err = float(np.abs(out[0] - out[1]).max() / np.abs(out[1]).max())
    return out[0].dtype, served.pop(), n, err, np.linalg.cond(np.asarray(k, np.float64))
print(*case(64, np.float32))
with jax.enable_x64(True):
    print(*case(512, np.float64))
"""
    result = run_python(code)
    assert result.returncode == 0, result.stderr[-3000:]
    for line, dtype in zip(result.stdout.split("\n")[:2], ("float32", "float64")):
        got, host, n, err, cond = line.split()
        assert got == host == dtype
        assert float(err) <= tolerance(int(n), dtype, float(cond)), (dtype, err)


# ---------------------------------------------------------------------------
# vmap: one host call per batch


def test_vmap_grad_is_one_call(ours):
    a = spd(8, batch=(5,))
    W = randn((8, 8))
    g = jax.jit(jax.vmap(jax.grad(loss_of(bj.cholesky, W))))(a)
    assert ours.rev == [(5, 8, 8)]
    assert_close(g, jax.vmap(jax.grad(loss_of(jnp.linalg.cholesky, W)))(a), a)


def test_vmap_jvp_nested_is_one_call(ours):
    a = spd(6, np.complex128, batch=(2, 3))
    t = hermitian(randn(a.shape, np.complex128))
    jvp = lambda a, t: jax.jvp(bj.cholesky, (a,), (t,))[1]
    d = jax.vmap(jax.vmap(jvp))(a, t)
    assert ours.fwd == [(2, 3, 6, 6)]
    assert_close(d, jax.jvp(jnp.linalg.cholesky, (a,), (t,))[1], a)


def test_vmap_over_cotangents_only_is_one_call(ours):
    """jacrev vmaps the vjp over cotangents with one factor: still one call."""
    a = spd(4)
    J = jax.jacrev(bj.cholesky)(a)
    assert ours.rev == [(16, 4, 4)]
    assert_close(J, jax.jacrev(jnp.linalg.cholesky)(a), a)


def test_vmap_in_axes_other_than_zero(ours):
    a = jnp.moveaxis(spd(5, batch=(3,)), 0, 2)          # batch axis last
    W = randn((5, 5))
    g = jax.vmap(jax.grad(loss_of(bj.cholesky, W)), in_axes=2, out_axes=2)(a)
    g_jax = jax.vmap(jax.grad(loss_of(jnp.linalg.cholesky, W)), in_axes=2, out_axes=2)(a)
    assert ours.rev == [(3, 5, 5)]
    assert_close(g, g_jax, jnp.moveaxis(a, 2, 0))


# ---------------------------------------------------------------------------
# Input that is not positive definite: NaN, as jax's own, never an exception


def test_not_positive_definite_gives_nan(ours, dtype=np.float64):
    """Issue 17 item 6, the case as found; every entry, dtype and kind of bad input:
    tests/test_jax_contract.py."""
    good = spd(6, dtype, batch=(3,))
    a = good.at[1].set(good[1] - 10 * jnp.eye(6, dtype=dtype))     # the middle one indefinite
    W = randn((6, 6), dtype)
    L = bj.cholesky(a)
    assert np.isnan(np.tril(np.asarray(L[1]))[np.tril_indices(6)]).all()
    assert np.isfinite(np.asarray(L[::2])).all()
    f = jax.jit(jax.grad(lambda a: jnp.real(jnp.sum(W * bj.cholesky(a)))))
    g = np.asarray(f(a))
    g_jax = np.asarray(jax.grad(lambda a: jnp.real(jnp.sum(W * jnp.linalg.cholesky(a))))(a))
    np.testing.assert_array_equal(np.isnan(g), np.isnan(g_jax))
    assert np.isnan(g[1]).all()
    assert_close(g[::2], g_jax[::2], good[::2])
    d = np.asarray(jax.jvp(bj.cholesky, (a,), (a,))[1])             # eager too
    d_jax = np.asarray(jax.jvp(jnp.linalg.cholesky, (a,), (a,))[1])
    lower = np.tril(np.ones((6, 6), bool))
    assert np.isnan(d[1][lower]).all() and (d[1][~lower] == 0).all()   # jax's: 0 above
    np.testing.assert_array_equal(np.isnan(d), np.isnan(d_jax))
    assert_close(d[::2], d_jax[::2], good[::2])
    assert ours.rev and ours.fwd


# ---------------------------------------------------------------------------
# The crossover


def test_crossover_is_the_table():
    """The one table of thresholds, its very dict: what is set there is what is read."""
    from blockchol.core import thresholds
    assert bj.CROSSOVER_N is thresholds.JAX_CROSSOVER_N
    assert set(bj.CROSSOVER_N) == {"float32", "float64", "complex64", "complex128"}


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex64, np.complex128])
def test_crossover_dispatch(monkeypatch, calls, dtype):
    """From its dtype's crossover (read when traced) blockchol serves, below it jax's own rule;
    the other dtypes' entries (at 0) do not count.  (Both rules' values at the crossover:
    tests/test_jax_contract.py, lowered and default.)"""
    n = 6
    for name in bj.CROSSOVER_N:
        monkeypatch.setitem(bj.CROSSOVER_N, name, n if name == np.dtype(dtype).name else 0)
    W = randn((n, n), dtype)
    for size in (n - 1, n):            # traced only: which rule is in the program
        program = jax.make_jaxpr(jax.grad(loss_of(bj.cholesky, W[:size, :size])))(spd(size, dtype))
        assert ("blockchol_chol_rev" in str(program)) == (size >= n), size
    # below it, the program is jax's own, op for op
    a = spd(n - 1, dtype)
    for upper in (False, True):
        ours = jax.make_jaxpr(jax.grad(loss_of(bj.cholesky, W[1:, 1:], upper=upper)))(a)
        theirs = jax.make_jaxpr(jax.grad(loss_of(jnp.linalg.cholesky, W[1:, 1:], upper=upper)))(a)
        assert str(ours) == str(theirs)
    assert not calls.rev and not calls.fwd


def test_crossover_bench_command(tmp_path):
    """The command the code cites for the crossover measurement exists and times both rules."""
    import json
    from bench.frameworks_jax import main
    args = ["--crossover", "--quick", "--sizes", "8", "--dtypes", "float32", "--stacks", "1"]
    assert main(args + ["--out", str(tmp_path)]) == 0
    records = json.loads((tmp_path / "results.json").read_text())["records"]
    assert sorted(r["impl"] for r in records) == [
        "grad, blockchol rule", "grad, jax rule", "jvp, blockchol rule", "jvp, jax rule"]
    assert all(r["min"] > 0 and r["case"].endswith("float32 N=8") for r in records)
    assert all(r["ok"] for r in records)        # each rule's program is the one it names


# ---------------------------------------------------------------------------
# accelerate()


def test_accelerate_context_and_restore_on_exception(ours):
    originals = (jnp.linalg.cholesky, jsl.cholesky, jsl.cho_factor)
    a = spd(6)
    W = randn((6, 6))
    with pytest.raises(RuntimeError, match="inside"):
        with bj.accelerate():
            assert jnp.linalg.cholesky is bj.cholesky
            with bj.accelerate():                      # nested
                pass
            assert jnp.linalg.cholesky is bj.cholesky
            g = jax.grad(loss_of(jnp.linalg.cholesky, W))(a)
            raise RuntimeError("inside")
    assert (jnp.linalg.cholesky, jsl.cholesky, jsl.cho_factor) == originals
    assert ours.rev
    ours.clear()
    g_jax = jax.grad(loss_of(jnp.linalg.cholesky, W))(a)
    assert not ours.rev
    assert_close(g, g_jax, a)


def test_accelerate_decorator_forms(ours):
    @bj.accelerate
    def plain(a):
        return jnp.linalg.cholesky is bj.cholesky

    @bj.accelerate()
    def called(a):
        raise ValueError("boom")

    assert plain(None)
    with pytest.raises(ValueError):
        called(None)
    assert jnp.linalg.cholesky is not bj.cholesky
    with pytest.raises(TypeError):
        bj.accelerate(3)


@pytest.mark.parametrize("dtype", REAL_COMPLEX)
@pytest.mark.parametrize("lower", [True, False])
def test_accelerate_scipy_functions(ours, dtype, lower):
    a = spd(6, dtype) + jnp.tril(randn((6, 6), dtype), -1) if not lower else \
        spd(6, dtype) + jnp.triu(randn((6, 6), dtype), 1)        # garbage in the unread triangle
    W = randn((6, 6), dtype, seed=8)
    read = (lambda x: x) if lower else (lambda x: jnp.conj(x.T))   # the read triangle, as lower
    oracle = jax.grad(lambda a: jnp.real(jnp.sum(W * jnp.linalg.cholesky(from_lower(read(a)),
                                                                           upper=not lower))))(a)
    with bj.accelerate():
        L = jsl.cholesky(a, lower=lower)
        c, low = jsl.cho_factor(a, lower=lower)
        g = jax.grad(lambda a: jnp.real(jnp.sum(W * jsl.cholesky(a, lower=lower))))(a)
        x = jsl.cho_solve(jsl.cho_factor(a, lower=lower), jnp.ones(6, dtype))
    assert low is lower
    np.testing.assert_array_equal(np.asarray(L), np.asarray(jsl.cholesky(a, lower=lower)))
    np.testing.assert_array_equal(np.asarray(c), np.asarray(jsl.cho_factor(a, lower=lower)[0]))
    x_jax = jsl.cho_solve((c, lower), jnp.ones(6, dtype))
    np.testing.assert_array_equal(np.asarray(x), np.asarray(x_jax))     # the same factor
    unread = np.triu(np.asarray(g), 1) if lower else np.tril(np.asarray(g), -1)
    assert not unread.any()
    assert_close(g, oracle, from_lower(read(a)))
    assert ours.rev


def test_gp_gradient_through_cho_solve(ours):
    """The bench's loss in small: cho_solve and the log-determinant around the factor."""
    from bench.frameworks_jax import _kernel, gp_problem, make_nll, reference_gradient
    theta, X, y = gp_problem(40)
    g = jax.jit(jax.grad(make_nll(bj.cholesky)))(jnp.asarray(theta), jnp.asarray(X), jnp.asarray(y))
    K = np.asarray(_kernel(jnp.asarray(theta), jnp.asarray(X)))
    assert_close(g, reference_gradient(theta, X, y), K)
    assert ours.rev == [(40, 40)]


def test_other_backends_use_jax_rule(monkeypatch, ours):
    a = spd(6)
    W = randn((6, 6))
    real_backend = jax.default_backend
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    g = jax.grad(loss_of(bj.cholesky, W))(a)
    assert not ours.rev
    # jax's own program, op for op: the same bits
    np.testing.assert_array_equal(np.asarray(g), np.asarray(jax.grad(loss_of(jnp.linalg.cholesky, W))(a)))
    monkeypatch.setattr(jax, "default_backend", real_backend)
    jax.grad(loss_of(bj.cholesky, W))(a)
    assert ours.rev                                   # the same call on the CPU: blockchol
