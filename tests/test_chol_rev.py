"""chol_rev against the reference forms, finite differences and its own contract.

Tolerances: the blocked sweep, the level-2 sweep and the closed form all
compute the same function with O(N) rounding errors per entry, so in
float64 they agree to a few hundred ulps relative to the largest entry of
the gradient for the well-conditioned matrices used here (measured
≤ 1e-15 up to N = 200); 1e-12 leaves room without hiding an algebra error,
which shows up at O(1).
"""

import threading

import numpy as np
import pytest

import blockchol
from blockchol import reference as ref
from helpers import EPS, layouts, random_factor, random_like, rel_err, with_garbage

RTOL = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 2e-4}


def rev_case(n, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    K, L = random_factor(n, rng, dtype)
    Lb = random_like((n, n), rng, dtype)
    return K, L, Lb


# --------------------------------------------------------------------------
# Agreement with the reference forms


def test_references_agree_with_each_other():
    # The three slow forms are independent derivations; if they agree, each
    # is a trustworthy oracle.
    for n in (1, 2, 5, 30):
        _, L, Lb = rev_case(n, seed=n)
        g = ref.smith_rev(L, Lb)
        assert rel_err(ref.level2_rev(L, Lb), g) < 1e-13
        assert rel_err(ref.symbolic_rev(L, Lb), g) < 1e-13


@pytest.mark.parametrize("block_size", [1, 2, 3, 8, 16])
def test_block_boundary_sizes(block_size):
    nb = block_size
    sizes = sorted({1, 2, 3, max(nb - 1, 1), nb, nb + 1, 2 * nb, 2 * nb + 1, 3 * nb + 2})
    for n in sizes:
        _, L, Lb = rev_case(n, seed=100 + n)
        expected = ref.smith_rev(L, Lb)
        got = blockchol.chol_rev(L, Lb, block_size=nb)
        assert rel_err(got, expected) < RTOL[got.dtype], (n, nb)
        assert not np.triu(got, 1).any()


@pytest.mark.parametrize("n", [1, 7, 64, 129, 300, 520])
def test_default_block_size_matches_symbolic(n):
    _, L, Lb = rev_case(n, seed=n)
    assert rel_err(blockchol.chol_rev(L, Lb), ref.symbolic_rev(L, Lb)) < RTOL[np.dtype(np.float64)]


def test_block_size_does_not_change_the_answer():
    _, L, Lb = rev_case(200, seed=3)
    base = blockchol.chol_rev(L, Lb, block_size=200)
    for nb in (1, 5, 31, 64, 100, 199, 1000):
        assert rel_err(blockchol.chol_rev(L, Lb, block_size=nb), base) < 1e-13


def test_level2_sweep_agrees_at_larger_n():
    _, L, Lb = rev_case(250, seed=9)
    assert rel_err(blockchol.chol_rev(L, Lb, block_size=64), ref.level2_rev(L, Lb)) < 1e-12


# --------------------------------------------------------------------------
# Finite differences


@pytest.mark.parametrize("n", [1, 4, 33])
@pytest.mark.parametrize("lower", [True, False])
def test_directional_derivative_matches_finite_differences(n, lower):
    # f(K) = <Lb, chol(K)>; df in direction E (symmetric) is Σ_read G ⊙ E.
    rng = np.random.default_rng(n)
    K, L = random_factor(n, rng)
    Lb = random_like((n, n), rng)
    E = random_like((n, n), rng)
    E = E + E.T

    def f(K):
        c = np.linalg.cholesky(K)
        return np.sum(np.tril(Lb) * c)

    h = 1e-6
    fd = (f(K + h * E) - f(K - h * E)) / (2 * h)
    if lower:
        G = blockchol.chol_rev(L, Lb, block_size=8)
        exact = np.sum(np.tril(G) * E)
    else:
        G = blockchol.chol_rev(L.T, Lb.T, lower=False, block_size=8)
        assert not np.tril(G, -1).any()
        exact = np.sum(np.triu(G) * E)
    # Central differences: truncation O(h²‖f'''‖) and cancellation O(eps‖f‖/h), both ~1e-9 here.
    assert abs(fd - exact) <= 1e-6 * max(1.0, abs(exact))


# --------------------------------------------------------------------------
# Layouts, triangles, conventions


@pytest.mark.parametrize("lower", [True, False])
def test_every_layout_gives_the_same_answer(lower):
    n = 37
    _, L, Lb = rev_case(n, seed=5)
    expected = ref.symbolic_rev(L, Lb)
    if not lower:
        L, Lb, expected = L.T, Lb.T, expected.T
    for lname, Lx in layouts(L).items():
        for bname, Lbx in layouts(Lb).items():
            got = blockchol.chol_rev(Lx, Lbx, lower=lower, block_size=8)
            assert rel_err(got, expected) < 1e-12, (lname, bname)


def test_unread_triangle_is_ignored():
    n = 20
    _, L, Lb = rev_case(n, seed=6)
    expected = blockchol.chol_rev(L, Lb)
    for value in (np.nan, np.inf, 1e300):
        got = blockchol.chol_rev(with_garbage(L, True, value), with_garbage(Lb, True, value),
                                 block_size=7)
        assert rel_err(got, expected) < 1e-13
        got_u = blockchol.chol_rev(with_garbage(L.T, False, value), with_garbage(Lb.T, False, value),
                                   lower=False, block_size=7)
        assert rel_err(got_u, expected.T) < 1e-13


def test_lower_false_matches_scipy_upper_factor():
    import scipy.linalg
    rng = np.random.default_rng(11)
    K, _ = random_factor(25, rng)
    U = scipy.linalg.cholesky(K)            # upper, K = Uᵀ U
    Ub = np.triu(random_like((25, 25), rng))
    G = blockchol.chol_rev(U, Ub, lower=False)
    assert rel_err(G, ref.symbolic_rev(U.T, Ub.T).T) < 1e-12


def test_symmetric_convention():
    n = 30
    _, L, Lb = rev_case(n, seed=12)
    G = blockchol.chol_rev(L, Lb)
    S = blockchol.chol_rev(L, Lb, symmetric=True, block_size=8)
    assert np.array_equal(S, S.T)
    off = np.tril_indices(n, -1)
    assert rel_err(S[off], G[off] / 2) < 1e-13
    assert rel_err(np.diag(S), np.diag(G)) < 1e-13
    Su = blockchol.chol_rev(L.T, Lb.T, lower=False, symmetric=True)
    assert rel_err(Su, S) < 1e-13


def test_symmetric_matches_torch():
    torch = pytest.importorskip("torch")
    n = 40
    K, L, Lb = rev_case(n, seed=13)
    Kt = torch.tensor(K, requires_grad=True)
    Lt = torch.linalg.cholesky(Kt)
    (gK,) = torch.autograd.grad(Lt, Kt, torch.tensor(np.tril(Lb)))
    gK = gK.numpy()
    S = blockchol.chol_rev(L, Lb, symmetric=True)
    # torch returns a gradient for all N² entries of K; its symmetric part is the
    # gradient on the manifold of symmetric matrices, which is S.
    assert rel_err(S, (gK + gK.T) / 2) < 1e-10


def test_backprop_gradient_is_gpy_compatible():
    _, L, Lb = rev_case(50, seed=14)
    ours = blockchol.backprop_gradient(Lb, L)
    assert rel_err(ours, ref.smith_rev(L, Lb)) < 1e-12
    gpy = pytest.importorskip("GPy.util.choleskies")
    assert rel_err(ours, gpy.backprop_gradient(Lb.copy(), L.copy())) < 1e-12


def test_n_zero_and_one():
    out = blockchol.chol_rev(np.zeros((0, 0)), np.zeros((0, 0)))
    assert out.shape == (0, 0) and out.dtype == np.float64
    out = blockchol.chol_rev(np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32),
                             symmetric=True)
    assert out.shape == (0, 0) and out.dtype == np.float32
    # K = [k]: L = √k, f = b L  ⇒  df/dk = b / (2√k).
    out = blockchol.chol_rev([[2.0]], [[3.0]])
    assert out.shape == (1, 1) and out[0, 0] == pytest.approx(3.0 / 4.0)


# --------------------------------------------------------------------------
# dtypes


def test_float32_within_its_precision():
    n = 120
    _, L, Lb = rev_case(n, seed=15)
    expected = ref.symbolic_rev(L, Lb)
    got = blockchol.chol_rev(L.astype(np.float32), Lb.astype(np.float32), block_size=32)
    assert got.dtype == np.float32
    # Rounding the inputs to float32 already moves the answer by ~cond·eps32;
    # K here has cond ~1e3, so 2e-4 relative bounds both input and sweep rounding.
    assert rel_err(got, expected) < 2e-4
    assert rel_err(got, expected) > 10 * EPS[np.dtype(np.float64)]  # really computed in float32


@pytest.mark.parametrize("dtypes, expected", [
    ((np.float32, np.float32), np.float32),
    ((np.float32, np.float64), np.float64),
    ((np.float64, np.float32), np.float64),
    ((np.int64, np.float32), np.float64),
    ((np.int32, np.int32), np.float64),
    ((np.bool_, np.float32), np.float64),
    ((np.float16, np.float16), np.float32),
    ((np.float16, np.float32), np.float32),
])
def test_dtype_promotion(dtypes, expected):
    L = np.array([[2, 0], [1, 3]])
    Lb = np.array([[1, 0], [1, 1]])
    L, Lb = L.astype(dtypes[0]), Lb.astype(dtypes[1])
    out = blockchol.chol_rev(L, Lb)
    assert out.dtype == expected
    assert rel_err(out, ref.smith_rev(L.astype(float), Lb.astype(float))) < 1e-6


def test_accepts_lists():
    out = blockchol.chol_rev([[2.0, 0.0], [1.0, 3.0]], [[1.0, 0.0], [1.0, 1.0]])
    assert rel_err(out, ref.smith_rev(np.array([[2.0, 0], [1, 3]]), np.array([[1.0, 0], [1, 1]]))) < 1e-14


# --------------------------------------------------------------------------
# Accuracy on ill-conditioned matrices


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ill_conditioned_no_worse_than_unblocked(seed):
    # Truth from the level-2 sweep in extended precision (64-bit mantissa,
    # ~2000× finer than float64).  Over seeds and N ≤ 200 at cond 1e10 the
    # blocked sweep's error was within 1.7× of the float64 level-2 sweep's;
    # 4× (plus a few ulps for tiny errors) flags a real loss of accuracy.
    rng = np.random.default_rng(seed)
    n = 120
    _, L = random_factor(n, rng, cond=1e10)
    Lb = random_like((n, n), rng)
    truth = ref.level2_rev(L.astype(np.longdouble), Lb.astype(np.longdouble))
    err_unblocked = rel_err(ref.level2_rev(L, Lb), truth)
    for nb in (8, 32, None):
        err = rel_err(blockchol.chol_rev(L, Lb, block_size=nb), truth)
        assert err <= 4 * err_unblocked + 10 * EPS[np.dtype(np.float64)], (nb, err, err_unblocked)


# --------------------------------------------------------------------------
# Inputs and overwrite


def test_inputs_are_not_modified():
    for lower in (True, False):
        _, L, Lb = rev_case(40, seed=16)
        if not lower:
            L, Lb = L.T.copy(), Lb.T.copy()
        L0, Lb0 = L.copy(), Lb.copy()
        for symmetric in (False, True):
            blockchol.chol_rev(L, Lb, lower=lower, symmetric=symmetric, block_size=16)
            assert np.array_equal(L, L0) and np.array_equal(Lb, Lb0)


def test_read_only_inputs_are_accepted():
    _, L, Lb = rev_case(20, seed=17)
    L.flags.writeable = False
    Lb.flags.writeable = False
    out = blockchol.chol_rev(L, Lb, overwrite_l_bar=True)
    assert out.flags.writeable and not np.shares_memory(out, Lb)


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("lower", [True, False])
def test_overwrite_reuses_compatible_l_bar(order, lower):
    _, L, Lb = rev_case(50, seed=18)
    if not lower:
        L, Lb = L.T, Lb.T
    L, Lb = np.array(L, order=order), np.array(Lb, order=order)
    expected = blockchol.chol_rev(L, Lb, lower=lower)
    work = Lb.copy(order="A")
    out = blockchol.chol_rev(L, work, lower=lower, overwrite_l_bar=True, block_size=16)
    assert out is work
    assert rel_err(out, expected) < 1e-13


def test_overwrite_falls_back_to_a_copy_when_it_must():
    _, L, Lb = rev_case(30, seed=19)
    cases = {
        "other order": np.asfortranarray(Lb),        # L is C-ordered
        "other dtype": Lb.astype(np.float32),
        "strided": layouts(Lb)["strided"],
    }
    expected = blockchol.chol_rev(L, Lb)
    for name, Lbx in cases.items():
        before = Lbx.copy()
        out = blockchol.chol_rev(L, Lbx, overwrite_l_bar=True)
        assert not np.shares_memory(out, Lbx), name
        assert np.array_equal(Lbx, before), name
        assert rel_err(out, expected) < 1e-6, name
    # L_bar aliasing L must never be overwritten while L is still being read.
    M = L + np.triu(Lb, 1)
    out = blockchol.chol_rev(M, M, overwrite_l_bar=True)
    assert rel_err(out, blockchol.chol_rev(L, L)) < 1e-13


# --------------------------------------------------------------------------
# Threads


def test_thread_counts_give_the_same_result():
    from threadpoolctl import threadpool_info
    _, L, Lb = rev_case(300, seed=20)
    before = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
    results = [blockchol.chol_rev(L, Lb, threads=t, block_size=64) for t in (1, 2, 4)]
    for r in results[1:]:
        assert rel_err(r, results[0]) < 1e-13
    after = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
    assert after == before


def test_threads_limit_is_applied_during_the_call(monkeypatch):
    from threadpoolctl import threadpool_info
    from blockchol import _one
    seen = []
    real = _one.REV

    def spy(*args, **kwargs):
        seen.append({p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"})
        return real(*args, **kwargs)

    monkeypatch.setattr(_one, "REV", spy)
    _, L, Lb = rev_case(10)
    blockchol.chol_rev(L, Lb, threads=1)
    assert seen == [{1}]


def test_concurrent_calls_are_safe():
    cases = [rev_case(n, seed=n) for n in (60, 150, 257, 90)]
    expected = [ref.symbolic_rev(L, Lb) for _, L, Lb in cases]
    errors = []

    def work(i):
        try:
            for rep in range(5):
                _, L, Lb = cases[i]
                threads = (None, 1, 2)[(i + rep) % 3]
                got = blockchol.chol_rev(L, Lb, threads=threads, block_size=32)
                if rel_err(got, expected[i]) > 1e-12:
                    errors.append((i, rep, rel_err(got, expected[i])))
        except Exception as exc:  # surfaced below
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(len(cases))]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert errors == []


# --------------------------------------------------------------------------
# Memory


@pytest.mark.parametrize("overwrite", [False, True])
def test_extra_memory(overwrite):
    import tracemalloc
    n, nb = 600, 64
    _, L, Lb = rev_case(n, seed=21)
    work = Lb.copy()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        out = blockchol.chol_rev(L, work, block_size=nb, overwrite_l_bar=overwrite)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    full = n * n * 8
    if overwrite:
        assert out is work
        # O(N·nb): the workspace and masks are nb², the passes over the
        # inputs touch 256-row strips.
        assert peak < 0.25 * full, peak / full
    else:
        # the result, plus at most one N×N temporary
        assert peak < 2 * full + 0.25 * full, peak / full


# --------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize("L, Lb, match", [
    (np.ones(3), np.ones(3), "square matrix"),
    (np.ones((2, 3)), np.ones((2, 3)), "square"),
    (np.eye(3), np.eye(4), "same shape"),
    (np.eye(3), np.ones((3, 4)), "square"),
    (np.float64(2.0), np.float64(1.0), "square matrix"),
])
def test_bad_shapes(L, Lb, match):
    with pytest.raises(ValueError, match=match):
        blockchol.chol_rev(L, Lb)


def test_shape_errors_name_the_shapes():
    with pytest.raises(ValueError, match=r"\(3, 3\) and \(4, 4\)"):
        blockchol.chol_rev(np.eye(3), np.eye(4))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_entries(bad):
    _, L, Lb = rev_case(10)
    for target in ("L", "L_bar"):
        L2, Lb2 = L.copy(), Lb.copy()
        (L2 if target == "L" else Lb2)[7, 3] = bad
        with pytest.raises(ValueError, match=target + " contains NaN or infinity"):
            blockchol.chol_rev(L2, Lb2)
        with pytest.raises(ValueError, match="NaN or infinity"):
            blockchol.chol_rev(L2.T, Lb2.T, lower=False)
    # Without the check, the non-finite value propagates instead of raising.
    Lb2 = Lb.copy()
    Lb2[7, 3] = np.nan
    assert np.isnan(blockchol.chol_rev(L, Lb2, check_finite=False)).any()


def test_finite_check_across_row_blocks():
    # Big enough for several 256-row strips of the checking pass.
    _, L, Lb = rev_case(600, seed=22)
    Lb[599, 1] = np.inf
    with pytest.raises(ValueError, match="L_bar"):
        blockchol.chol_rev(L, Lb)
    Lb[599, 1] = 0.0
    Lb[300, 299] = np.nan
    with pytest.raises(ValueError, match="L_bar"):
        blockchol.chol_rev(L, Lb)


def test_huge_finite_values_pass_the_finite_check():
    # A sum that overflows is not a non-finite entry.
    L = np.diag([1.0, 1.0, 1.0])
    Lb = np.full((3, 3), 1e308)
    out = blockchol.chol_rev(L, Lb)
    assert out.shape == (3, 3)


@pytest.mark.parametrize("value, index", [(0.0, 2), (-1.0, 0), (np.nan, 4), (np.inf, 1)])
def test_bad_diagonal_raises_linalgerror_naming_index(value, index):
    _, L, Lb = rev_case(6)
    L[index, index] = value
    with pytest.raises(np.linalg.LinAlgError, match=r"L\[%d, %d\]" % (index, index)):
        blockchol.chol_rev(L, Lb, check_finite=False)
    with pytest.raises(np.linalg.LinAlgError, match=r"\[%d, %d\]" % (index, index)):
        blockchol.chol_rev(L.T, Lb.T, lower=False, check_finite=False)


@pytest.mark.parametrize("bad", [np.array([["a", "b"], ["c", "d"]]),
                                 np.array([[None, 1], [2, 3]], dtype=object),
                                 np.zeros((2, 2), dtype="datetime64[s]"),
                                 np.zeros((2, 2), dtype=np.longdouble)])
def test_bad_dtypes(bad):
    with pytest.raises(TypeError):
        blockchol.chol_rev(bad, np.eye(2))
    with pytest.raises(TypeError):
        blockchol.chol_rev(np.eye(2), bad)


def test_masked_arrays_rejected():
    with pytest.raises(ValueError, match="masked"):
        blockchol.chol_rev(np.ma.masked_array(np.eye(2)), np.eye(2))


@pytest.mark.parametrize("kw, exc", [
    (dict(block_size=0), ValueError), (dict(block_size=-3), ValueError),
    (dict(block_size=2.5), TypeError), (dict(block_size="8"), TypeError),
    (dict(threads=0), ValueError), (dict(threads=-1), ValueError),
    (dict(threads=1.5), TypeError), (dict(threads=True), TypeError), (dict(block_size=True), TypeError),
])
def test_bad_options(kw, exc):
    with pytest.raises(exc):
        blockchol.chol_rev(np.eye(3), np.eye(3), **kw)


def test_numpy_integer_options_accepted():
    out = blockchol.chol_rev(np.eye(3), np.eye(3), block_size=np.int64(2), threads=np.int32(1))
    assert rel_err(out, ref.smith_rev(np.eye(3), np.eye(3))) < 1e-15


@pytest.mark.parametrize("upper", [False, True])
def test_alternative_diagonal_kernels_agree(upper):
    # The level-2 column loop and two-level blocking are kept for the kernel
    # comparison in notes.md; they must compute the same gradient.
    from blockchol import _kernel, _sweep
    from blockchol._operands import Matrix
    _, L, Lb = rev_case(70, seed=23)
    expected = ref.symbolic_rev(L, Lb)
    stored_L = np.asfortranarray(L.T if upper else L)
    for kernel in (_kernel.symbolic, _kernel.level2, _sweep.recursive_kernel(8)):
        A = np.asfortranarray(np.tril(Lb).T if upper else np.tril(Lb))
        W = np.empty((32, 32), order="F")
        _sweep.rev_sweep(Matrix(stored_L, upper), Matrix(A, upper), 32, Matrix(W, upper),
                         kernel=kernel)
        assert rel_err(A.T if upper else A, expected) < 1e-12, kernel


def test_large_matrix_passes_on_worker_threads():
    # From N = 1024 the checks and copies run on worker threads: same results,
    # same errors, unread triangle still ignored.
    from blockchol._validation import PARALLEL_PASS_N
    n = PARALLEL_PASS_N + 77
    _, L, Lb = rev_case(n, seed=24)
    Lg, Lbg = with_garbage(L, True), with_garbage(Lb, True)
    serial = blockchol.chol_rev(Lg, Lbg, threads=1, symmetric=True)
    for t in (2, 3):
        assert rel_err(blockchol.chol_rev(Lg, Lbg, threads=t, symmetric=True), serial) < 1e-13
    assert rel_err(serial, blockchol.chol_rev(L, Lb, symmetric=True)) < 1e-13
    Lbg[n - 5, 700] = np.inf
    with pytest.raises(ValueError, match="L_bar contains NaN or infinity"):
        blockchol.chol_rev(Lg, Lbg, threads=2)


def test_copied_factor_follows_l_bar_order_so_overwrite_still_applies():
    _, L, Lb = rev_case(40, seed=25)
    expected = blockchol.chol_rev(L, Lb)
    strided_L = layouts(L)["strided"]             # must be copied
    work = np.asfortranarray(Lb)
    out = blockchol.chol_rev(strided_L, work, overwrite_l_bar=True)
    assert out is work and rel_err(out, expected) < 1e-13
