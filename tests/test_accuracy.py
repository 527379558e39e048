"""Accuracy on the matrices users factor, against extended-precision truths (issue 8).

Matrices: RBF and Matérn-5/2 kernel matrices of 1-D inputs, sorted (time
series) and unsorted, with jitter 1e-10 to 1e-6, from
:func:`blockchol.reference.covariance_problem`; cotangents random or the GP
log-likelihood's.  Random matrices without kernel structure hide the
problems measured here.

Truth: the closed form in long double (ε ≈ 5.4e-20) from the same float64
inputs; it agrees with a 50-digit mpmath evaluation to 2e-15 relative
(``test_truth_matches_mpmath``), 1000× below the smallest float64 error
measured on these cases.  Errors are normwise (Frobenius) relative.

The bars are the issue's:

* the default (``method="closed"``) is within 10× of the float64 closed
  form's error -- :func:`blockchol.reference.closed_rev` in float64, the
  two-solve form torch and jax compute;
* the sweep, at every block size, stacked or not, forward or reverse, real
  or complex, float64 or float32, is within 4× of the unblocked level-2
  sweep in the same precision.  Single draws of a sweep's error vary by up
  to 40× with the rounding pattern, so sweeps are compared by their
  typical error (:func:`helpers.typical_error`); the worst measured ratio
  over these families is 2.7×, about the ratio between two implementations
  of the same unblocked sweep;
* every case shows the problem: the level-2 sweep is at least 30× less
  accurate than the closed form (5× at N < 50, where it is milder: 10× at
  N = 17), so a benign matrix cannot slip in.

Every block size is exercised up to N = 300; above, where each typical
error costs seconds, 64, 128 and the default.  A block size that gives the
same sweep as one already measured (the default is 64 from N = 129 to
1000; a block as wide as the matrix is the unblocked matrix) is measured
once (``distinct_blocks``).
"""

import functools

import numpy as np
import pytest

import blockchol
from blockchol import reference as ref
from blockchol.core.thresholds import STACK_SWEEP_BLOCK_SIZES, SWEEP_BLOCK_SIZES
from helpers import default_block_size, fro_err, typical_error

DEFAULT = None      # block_size=None: the default choice

# (kernel, N, jitter, sorted): the table, then more sizes and unsorted inputs.
CASES = [
    ("rbf", 200, 1e-10, True), ("rbf", 500, 1e-10, True), ("rbf", 300, 1e-8, True),
    ("rbf", 600, 1e-6, True), ("matern52", 150, 1e-8, True),
    ("rbf", 17, 1e-10, True), ("rbf", 64, 1e-10, True), ("matern52", 100, 1e-10, True),
    ("matern52", 40, 1e-6, True), ("rbf", 250, 1e-8, False), ("rbf", 300, 1e-10, False),
]
BLOCK_SIZES = [16, 32, 64, 100, 128, DEFAULT]


def shows_the_problem(level2, closed64, n):
    return level2 > (30 if n >= 50 else 5) * closed64


def distinct_blocks(sizes, n, default=SWEEP_BLOCK_SIZES):
    """The block sizes of ``sizes`` that give different sweeps at order n, in order.

    None is the default from the ``default`` table of blockchol.core.thresholds
    (single matrices: SWEEP_BLOCK_SIZES; stacks: STACK_SWEEP_BLOCK_SIZES), and a
    block at least as wide as the matrix is the matrix: those repeat a computation
    already measured, bit for bit.
    """
    seen, out = set(), []
    for nb in sizes:
        width = min(nb or default_block_size(default, n), n)
        if width not in seen:
            seen.add(width)
            out.append(nb)
    return out


@functools.lru_cache(maxsize=None)
def problem(kernel, n, jitter, sort, cotangent="random", dtype=np.float64):
    K, L, Lb = ref.covariance_problem(kernel, n, jitter, sort=sort, cotangent=cotangent, dtype=dtype,
                                  seed=n)
    wide = np.clongdouble if np.iscomplexobj(L) else np.longdouble
    return L, Lb, ref.closed_rev(L, Lb, dtype=wide)


@functools.lru_cache(maxsize=None)
def fwd_problem(kernel, n, jitter, sort, dtype=np.float64):
    """A random symmetric tangent K̇ for the kernel matrix's factor.

    (Along dK/dℓ, the kernel's own lengthscale derivative, L̇ is itself so
    ill-conditioned that the closed form and the sweeps lose the same
    digits -- 2.5e-7 and 9e-7 at RBF 200, 1e-10 -- and the comparison
    measures the problem, not the methods.)
    """
    K, L, _ = ref.covariance_problem(kernel, n, jitter, sort=sort, dtype=dtype, seed=n)
    rng = np.random.default_rng(n + 1)
    Kd = rng.standard_normal((n, n))
    Kd = (Kd + Kd.T).astype(dtype)
    wide = np.clongdouble if np.iscomplexobj(L) else np.longdouble
    return L, Kd, ref.closed_fwd(L, Kd, dtype=wide)


def test_truth_matches_mpmath():
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 50
    n = 30
    _, L, Lb = ref.covariance_problem("rbf", n, 1e-10, seed=1)
    mp = mpmath.mpf
    l = [[mp(float(L[i, j])) if j <= i else mp(0) for j in range(n)] for i in range(n)]
    lb = [[mp(float(Lb[i, j])) if j <= i else mp(0) for j in range(n)] for i in range(n)]
    P = [[sum((l[k][i] * lb[k][j] for k in range(i, n)), mp(0)) if j <= i else mp(0)
          for j in range(n)] for i in range(n)]
    for i in range(n):
        P[i][i] /= 2
    M = [[P[i][j] + P[j][i] for j in range(n)] for i in range(n)]
    Y = [[mp(0)] * n for _ in range(n)]                      # Y = L⁻ᵀ M
    for c in range(n):
        for i in range(n - 1, -1, -1):
            Y[i][c] = (M[i][c] - sum((l[k][i] * Y[k][c] for k in range(i + 1, n)), mp(0))) / l[i][i]
    X = [[mp(0)] * n for _ in range(n)]                      # X = Y L⁻¹
    for r in range(n):
        for j in range(n - 1, -1, -1):
            X[r][j] = (Y[r][j] - sum((X[r][k] * l[k][j] for k in range(j + 1, n)), mp(0))) / l[j][j]
    G = np.array([[float(X[i][j]) * (0.5 if i == j else 1.0) if j <= i else 0.0
                   for j in range(n)] for i in range(n)])
    truth = ref.closed_rev(L, Lb, dtype=np.longdouble)
    # The truths must resolve the float64 errors the bars below compare: 1e-14 is 1000×
    # below the smallest float64 closed-form error of CASES (2.5e-11 and up, README), and
    # 100× above G's own rounding to float64 (u = 1.1e-16).  κ₂(L) ≈ 1e5 here, so no eps·κ²
    # bound of long double's error is that tight; the measured agreement (2e-15) is.
    assert fro_err(truth, G) < 1e-14
    # and the float64 closed form is far coarser than that, so the truth resolves it
    assert fro_err(ref.closed_rev(L, Lb), G) > 100 * fro_err(truth, G)


@pytest.mark.parametrize("case", CASES, ids=lambda c: "%s-%d-%g-%s" % (c[0], c[1], c[2], "sorted" if c[3] else "unsorted"))
@pytest.mark.parametrize("cotangent", ["random", "gp"])
def test_reverse_single_matrices(case, cotangent):
    L, Lb, truth = problem(*case, cotangent)
    closed64 = fro_err(ref.closed_rev(L, Lb), truth)
    level2 = typical_error(lambda X: ref.sweep_rev(L, X), Lb, truth)
    assert shows_the_problem(level2, closed64, case[1])
    for lower in (True, False):
        got = blockchol.chol_rev(L if lower else L.T, Lb if lower else Lb.T, lower=lower)
        assert fro_err(got if lower else got.T, truth) <= 10 * closed64, lower
    sym = blockchol.chol_rev(L, Lb, symmetric=True)
    assert fro_err(np.tril(sym) + np.tril(sym, -1), truth) <= 10 * closed64
    for nb in distinct_blocks(BLOCK_SIZES if case[1] <= 300 else [64, 128, DEFAULT], case[1]):
        sweep = typical_error(lambda X: blockchol.chol_rev(L, X, method="sweep", block_size=nb),
                              Lb, truth)
        assert sweep <= 4 * level2, (nb, sweep / level2)


def test_reverse_at_n_1000():
    L, Lb, truth = problem("rbf", 1000, 1e-8, True)
    closed64 = fro_err(ref.closed_rev(L, Lb), truth)
    assert fro_err(blockchol.chol_rev(L, Lb), truth) <= 10 * closed64
    level2 = typical_error(lambda X: ref.sweep_rev(L, X), Lb, truth)
    assert shows_the_problem(level2, closed64, 1000)
    for nb in distinct_blocks((64, DEFAULT), 1000):        # the default is 64 here
        sweep = typical_error(lambda X: blockchol.chol_rev(L, X, method="sweep", block_size=nb),
                              Lb, truth)
        assert sweep <= 4 * level2, (nb, sweep / level2)


@pytest.mark.parametrize("case", [("rbf", 8, 1e-10, True), ("matern52", 12, 1e-10, True),
                                  ("rbf", 20, 1e-10, True),       # N ≤ 20: _batchlast
                                  ("matern52", 16, 1e-6, True), ("rbf", 48, 1e-6, True),
                                  ("rbf", 17, 1e-10, True), ("rbf", 32, 1e-8, True),
                                  ("matern52", 32, 1e-8, True), ("rbf", 64, 1e-10, True),
                                  ("rbf", 200, 1e-10, True), ("matern52", 150, 1e-8, True),
                                  ("rbf", 150, 1e-10, False)],
                         ids=lambda c: "%s-%d-%g" % c[:3])
@pytest.mark.parametrize("cotangent", ["random", "gp"])
def test_reverse_stacks(case, cotangent):
    # Three different matrices per stack: the stacked paths (N ≤ 256).
    kernel, n, jitter, sort = case
    items = [ref.covariance_problem(kernel, n, jitter, sort=sort, seed=s, cotangent=cotangent)
             for s in range(3)]
    L = np.stack([it[1] for it in items])
    Lb = np.stack([it[2] for it in items])
    truths = [ref.closed_rev(L[i], Lb[i], dtype=np.longdouble) for i in range(3)]
    closed = blockchol.chol_rev(L, Lb)
    for i in range(3):
        closed64 = fro_err(ref.closed_rev(L[i], Lb[i]), truths[i])
        assert fro_err(closed[i], truths[i]) <= 10 * closed64, i
    i = 0
    level2 = typical_error(lambda X: ref.sweep_rev(L[i], X), Lb[i], truths[i])
    for nb in distinct_blocks((4, 8, 16, 32, 64, DEFAULT), n, STACK_SWEEP_BLOCK_SIZES):
        sweep = typical_error(lambda X: blockchol.chol_rev(L, np.stack([X, Lb[1], Lb[2]]),
                                                         method="sweep", block_size=nb)[0],
                              Lb[i], truths[i])
        assert sweep <= 4 * level2, (nb, sweep / level2)


@pytest.mark.parametrize("kernel, n, jitter", [("rbf", 64, 1e-3), ("matern52", 100, 1e-4),
                                               ("rbf", 300, 1e-3)])
def test_float32(kernel, n, jitter):
    # float32 factors of float32 kernel matrices; the bars are against the float32
    # forms (scipy's float32 solves for the closed form).
    L, Lb, truth = problem(kernel, n, jitter, True, "gp", np.float32)
    closed32 = fro_err(ref.closed_rev(L, Lb, dtype=np.float32), truth)
    level2 = typical_error(lambda X: ref.sweep_rev(L, X, dtype=np.float32), Lb, truth, np.float32)
    assert fro_err(blockchol.chol_rev(L, Lb), truth) <= 10 * closed32
    if n <= 256:
        stack = blockchol.chol_rev(np.stack([L, L]), np.stack([Lb, Lb]))
        assert fro_err(stack[1], truth) <= 10 * closed32
        stacked = typical_error(lambda X: blockchol.chol_rev(np.stack([L, L]), np.stack([X, X]),
                                                             method="sweep")[0], Lb, truth, np.float32)
        assert stacked <= 4 * level2
    for nb in distinct_blocks((16, 64, DEFAULT), n):
        sweep = typical_error(lambda X: blockchol.chol_rev(L, X, method="sweep", block_size=nb),
                              Lb, truth, np.float32)
        assert sweep <= 4 * level2, (nb, sweep / level2)


@pytest.mark.parametrize("kernel, n, jitter", [("rbf", 150, 1e-10), ("matern52", 120, 1e-8)])
def test_complex(kernel, n, jitter):
    L, Lb, truth = problem(kernel, n, jitter, True, "random", np.complex128)
    closed64 = fro_err(ref.closed_rev(L, Lb), truth)
    level2 = typical_error(lambda X: ref.sweep_rev(L, X), Lb, truth)
    assert shows_the_problem(level2, closed64, n)
    assert fro_err(blockchol.chol_rev(L, Lb), truth) <= 10 * closed64
    assert fro_err(blockchol.chol_rev(np.stack([L, L]), np.stack([Lb, Lb]))[1], truth) <= 10 * closed64
    Lu, Lbu = np.ascontiguousarray(L.conj().T), np.ascontiguousarray(Lb.conj().T)
    assert fro_err(blockchol.chol_rev(Lu, Lbu, lower=False).conj().T, truth) <= 10 * closed64
    for nb in distinct_blocks((16, 64, DEFAULT), n):
        sweep = typical_error(lambda X: blockchol.chol_rev(L, X, method="sweep", block_size=nb),
                              Lb, truth)
        assert sweep <= 4 * level2, (nb, sweep / level2)
    stacked = typical_error(lambda X: blockchol.chol_rev(np.stack([L, L]), np.stack([X, X]),
                                                         method="sweep")[0], Lb, truth)
    assert stacked <= 4 * level2


@pytest.mark.parametrize("n", [4, 8, 10, 16, 24])
def test_complex_stacks(n):
    # Each of the three stacked solves of the closed form: batch-last (N ≤ 10 complex),
    # recursive stacked (11-20), BLAS per matrix (21 up); a float32 stack of the same.
    L, Lb, truth = problem("rbf", n, 1e-10, True, "random", np.complex128)
    closed64 = fro_err(ref.closed_rev(L, Lb), truth)
    got = blockchol.chol_rev(np.stack([L, L.conj()]), np.stack([Lb, Lb.conj()]))
    assert fro_err(got[0], truth) <= 10 * closed64
    assert fro_err(got[1].conj(), truth) <= 10 * closed64
    L32, Lb32 = L.astype(np.complex64), Lb.astype(np.complex64)
    truth32 = ref.closed_rev(L32, Lb32, dtype=np.clongdouble)
    closed32 = fro_err(ref.closed_rev(L32, Lb32, dtype=np.complex64), truth32)
    assert fro_err(blockchol.chol_rev(np.stack([L32, L32]), np.stack([Lb32, Lb32]))[1],
                   truth32) <= 10 * closed32


@pytest.mark.parametrize("case", [("rbf", 200, 1e-10, True), ("rbf", 300, 1e-8, True),
                                  ("matern52", 150, 1e-8, True), ("rbf", 250, 1e-10, False),
                                  # N ≤ 64: the small path's forward form
                                  ("rbf", 64, 1e-10, True), ("matern52", 40, 1e-6, True)],
                         ids=lambda c: "%s-%d-%g" % c[:3])
def test_forward(case):
    L, Kd, truth = fwd_problem(*case)
    closed64 = fro_err(ref.closed_fwd(L, Kd), truth)
    # the unblocked forward sweep: the blocked one with one-column blocks
    level2 = typical_error(lambda X: blockchol.chol_fwd(L, X, method="sweep", block_size=1),
                           Kd, truth)
    assert shows_the_problem(level2, closed64, case[1])
    assert fro_err(blockchol.chol_fwd(L, Kd), truth) <= 10 * closed64
    assert fro_err(blockchol.chol_fwd(L.T, Kd.T, lower=False).T, truth) <= 10 * closed64
    assert fro_err(blockchol.chol_fwd(np.stack([L, L]), np.stack([Kd, Kd]))[0], truth) <= 10 * closed64
    for nb in distinct_blocks(BLOCK_SIZES, case[1]):
        sweep = typical_error(lambda X: blockchol.chol_fwd(L, X, method="sweep", block_size=nb),
                              Kd, truth)
        assert sweep <= 4 * level2, (nb, sweep / level2)
    stacked = typical_error(lambda X: blockchol.chol_fwd(np.stack([L, L]), np.stack([X, X]),
                                                         method="sweep")[0], Kd, truth)
    assert stacked <= 4 * level2


def test_gpy_drop_in_keeps_gpys_convention_on_the_accurate_path():
    L, Lb, truth = problem("rbf", 200, 1e-10, True, "gp")
    G = blockchol.backprop_gradient(Lb, L)
    assert not np.triu(G, 1).any()
    assert fro_err(G, truth) <= 10 * fro_err(ref.closed_rev(L, Lb), truth)


def _auto_cases():
    """Factors near the auto switch's threshold and adversarial ones, N = 500."""
    n, rng = 500, np.random.default_rng(11)
    out = {}
    for name, jitter in (("rbf, jitter 1", 1.0), ("matern52, jitter 0.3", 0.3),
                         ("rbf, jitter 1e-3", 1e-3)):
        K, L, Lb = ref.covariance_problem(name.split(",")[0], n, jitter, seed=3)
        out[name] = (L, Lb)
    for cond in (1e2, 1e4, 1e8):
        q, _ = np.linalg.qr(rng.standard_normal((n, n)))
        K = (q * np.logspace(0, -np.log10(cond), n)) @ q.T
        out["random eigenvectors, cond %g" % cond] = (np.linalg.cholesky((K + K.T) / 2), None)
    d = 10.0 ** rng.uniform(-4, 0, n)                       # graded: tiny pivots, benign
    A = rng.standard_normal((n, n + 5))
    out["graded"] = (np.linalg.cholesky((A @ A.T / n + 0.5 * np.eye(n)) * np.outer(d, d)), None)
    out["unit diagonal, growth"] = (np.eye(n) + np.tril(0.02 * rng.standard_normal((n, n)) + 0.02, -1),
                                    None)
    v = rng.standard_normal(n)
    v /= np.linalg.norm(v)
    out["one tiny direction"] = (np.linalg.cholesky(np.eye(n) - (1 - 1e-6) * np.outer(v, v)), None)
    return {name: (L, Lb if Lb is not None else np.tril(rng.standard_normal((n, n))))
            for name, (L, Lb) in out.items()}


def test_the_auto_switch_is_as_accurate_as_the_closed_form():
    # method="auto" takes the sweep where LAPACK estimates κ₁(L) ≤ 1000 (N ≥ 500): on
    # kernel matrices with a large jitter, random factors, graded and adversarial ones,
    # its error stays within 10× of the float64 closed form's, forward and reverse.
    # Where it takes the closed form it is the closed form, bit for bit (the closed
    # form's accuracy is test_reverse_single_matrices' and test_forward's subject).
    from blockchol.core.api import make_plan
    picked = {}
    for name, (L, Lb) in _auto_cases().items():
        plan, _, _ = make_plan("rev", L, Lb, ("L", "L_bar"), lower=True, symmetric=False,
                               method="auto", block_size=None, overwrite=False,
                               check_finite=True, threads=None)
        picked[name] = plan.method
        if plan.method == "closed":
            assert np.array_equal(blockchol.chol_rev(L, Lb), blockchol.chol_rev(L, Lb, method="closed"))
            assert np.array_equal(blockchol.chol_fwd(L, Lb + Lb.T),
                                  blockchol.chol_fwd(L, Lb + Lb.T, method="closed")), name
            continue
        truth = ref.closed_rev(L, Lb, dtype=np.longdouble)
        closed64 = fro_err(ref.closed_rev(L, Lb), truth)
        assert fro_err(blockchol.chol_rev(L, Lb), truth) <= 10 * closed64, name
        Kd = Lb + Lb.T
        ftruth = ref.closed_fwd(L, Kd, dtype=np.longdouble)
        assert fro_err(blockchol.chol_fwd(L, Kd), ftruth) <= 10 * fro_err(ref.closed_fwd(L, Kd), ftruth), name
    # both ways are exercised: well-conditioned factors take the sweep, the others not
    assert picked["random eigenvectors, cond 100"] == "sweep"
    assert picked["unit diagonal, growth"] == "sweep"
    assert picked["rbf, jitter 1e-3"] == "closed" and picked["random eigenvectors, cond 1e+08"] == "closed"
