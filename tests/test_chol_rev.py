"""chol_rev against the reference forms, finite differences and its own contract.

Both methods are checked here on well-conditioned matrices; their accuracy
on ill-conditioned kernel matrices is tests/test_accuracy.py's subject.

Tolerances (tests/helpers.py, ``tol``): the closed form, the blocked sweep
and the level-2 sweep all compute the same function, each within
c_n(N) · eps · κ₂(L)² of the exact result (normwise relative) on the
well-conditioned factors used here (κ₂(L) ≈ 6), so two of them agree to
``agree(L)`` = 2 c_n(N) eps κ₂(L)² (1e-13 at N = 200 in float64) and a
result against the long-double truth to c_n(N) eps κ₂(L)².  An algebra
error (a wrong triangle, sign, conjugate or block boundary) is O(1), and a
result computed in a lower precision than asked for is 1e-8 or worse.
"""


import numpy as np
import pytest

import blockchol
from blockchol import reference as ref
METHODS = ("closed", "sweep")     # "auto" picks one of them: tested in test_accuracy.py
from helpers import (c_n, condition, eps, fro_err, layouts, random_factor, random_like, tol,
                     with_garbage)


def agree(L, dtype=np.float64, lower=True):
    """The bar for two computations of one derivative at the factor L: 2 c_n(N) eps κ₂(L)²."""
    return tol(dtype, condition(L, lower), 2 * c_n(np.shape(L)[-1]))


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
        assert fro_err(ref.sweep_rev(L, Lb), g) <= agree(L)
        assert fro_err(ref.closed_rev(L, Lb), g) <= agree(L)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("block_size", [1, 2, 3, 8, 16])
def test_block_boundary_sizes(block_size, method):
    nb = block_size
    sizes = sorted({1, 2, 3, max(nb - 1, 1), nb, nb + 1, 2 * nb, 2 * nb + 1, 3 * nb + 2})
    for n in sizes:
        _, L, Lb = rev_case(n, seed=100 + n)
        expected = ref.smith_rev(L, Lb)
        got = blockchol.chol_rev(L, Lb, block_size=nb, method=method)
        assert fro_err(got, expected) <= agree(L, got.dtype), (n, nb)
        assert not np.triu(got, 1).any()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("n", [1, 7, 64, 129, 300, 520])
def test_default_block_size_matches_symbolic(n, method):
    _, L, Lb = rev_case(n, seed=n)
    got = blockchol.chol_rev(L, Lb, method=method)
    assert fro_err(got, ref.closed_rev(L, Lb)) <= agree(L)


@pytest.mark.parametrize("method", METHODS)
def test_block_size_does_not_change_the_answer(method):
    _, L, Lb = rev_case(200, seed=3)
    base = blockchol.chol_rev(L, Lb, block_size=200, method=method)
    for nb in (1, 5, 31, 64, 100, 199, 1000):
        assert fro_err(blockchol.chol_rev(L, Lb, block_size=nb, method=method), base) <= agree(L)


def test_the_sweeps_kernel_is_the_level2_reference():
    # The diagonal kernel is the unblocked sweep itself: with one block, the blocked
    # sweep is the level-2 sweep.
    _, L, Lb = rev_case(90, seed=9)
    assert fro_err(blockchol.chol_rev(L, Lb, method="sweep", block_size=90),
                   ref.sweep_rev(L, Lb)) <= agree(L)
    assert fro_err(blockchol.chol_rev(L, Lb, method="sweep", block_size=32),
                   ref.sweep_rev(L, Lb)) <= agree(L)


@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
def test_the_reverse_sweep_in_halves_is_the_unblocked_sweep(dtype):
    # The reverse sweep halves on the block grid (core.sweep._rev): odd and even block counts
    # at every level, a ragged last leaf, one-column leaves seven levels down, and the
    # lower-triangle product split the same way.  Every entry gets the unblocked sweep's
    # contributions, so the two agree to rounding, in both storage forms.
    for n, nb in ((97, 1), (97, 6), (100, 7), (128, 16), (129, 16), (200, 64)):
        _, L, Lb = rev_case(n, seed=n + nb, dtype=dtype)
        expected = ref.sweep_rev(L, Lb)
        got = blockchol.chol_rev(L, Lb, method="sweep", block_size=nb)
        assert fro_err(got, expected) <= agree(L), (n, nb)
        assert not np.triu(got, 1).any()
        upper = blockchol.chol_rev(L.conj().T, Lb.conj().T, lower=False, method="sweep",
                                   block_size=nb)
        assert fro_err(upper.conj().T, expected) <= agree(L), (n, nb)
        sym = blockchol.chol_rev(L, Lb, method="sweep", block_size=nb, symmetric=True)
        assert fro_err(np.tril(sym) + np.tril(sym, -1), expected) <= agree(L), (n, nb)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex64, np.complex128])
@pytest.mark.parametrize("n", [1, 2, 7, 64])
def test_the_diagonal_kernels_match_the_references(n, dtype):
    # The kernels' raw BLAS loops on their own, every dtype: reverse against the
    # level-2 reference (a different code path: numpy calls, float64 at least), forward
    # against the closed form.  A wrong address, stride or conjugation is O(1); the
    # references compute in float64 at least, on the same inputs, so the bar is the
    # kernel's rounding in its own dtype.
    from blockchol.core import sweep as _kernel
    dtype = np.dtype(dtype)
    rng = np.random.default_rng(n)
    K, L = random_factor(n, rng, dtype)
    Lb = random_like((n, n), rng, dtype)
    upper_junk = np.triu(random_like((n, n), rng, dtype), 1)   # never read by either kernel
    d = _kernel.work_copy(L + upper_junk)
    a = _kernel.work_copy(np.tril(Lb) + upper_junk)
    _kernel.kernel_rev(d, a)
    g = np.tril(a, -1)
    np.fill_diagonal(g, 0.5 * a.diagonal().real)
    assert fro_err(g, ref.sweep_rev(L, Lb)) <= agree(L, dtype)
    z = _kernel.work_copy(np.tril(K) + upper_junk)
    _kernel.kernel_fwd(d, z)
    assert fro_err(np.tril(z), ref.closed_fwd(L, K)) <= agree(L, dtype)
    assert np.array_equal(d, L + upper_junk)                   # the factor is only read


def test_the_diagonal_kernels_refuse_what_they_cannot_address():
    # The kernels compute every BLAS address from the work arrays' shape and a leading
    # dimension of n: anything but two Fortran-ordered square arrays of one shape and
    # BLAS dtype is refused before the first raw call, and the arrays are left as they were.
    from blockchol.core import sweep as _kernel
    rng = np.random.default_rng(4)
    _, L = random_factor(16, rng)
    d = _kernel.work_copy(L)
    X = _kernel.work_copy(np.tril(rng.standard_normal((16, 16))))
    read_only = X.copy(order="F")
    read_only.flags.writeable = False
    raw = np.zeros(X.nbytes + 8, np.uint8)
    misaligned = raw[1:1 + X.nbytes].view(np.float64).reshape(16, 16).T   # Fortran-ordered
    misaligned[...] = X
    for bad in (np.ascontiguousarray(X), X[::2, ::2], X[:8], X[:, :8], X.astype(np.float32),
                X.astype(np.int64), np.asfortranarray(X[None]), read_only, misaligned):
        for fn in (_kernel.kernel_rev, _kernel.kernel_fwd):
            before = bad.copy()
            with pytest.raises(ValueError, match="internal error: a diagonal kernel"):
                fn(d, bad)
            if bad is not read_only:          # a read-only factor is fine: it is only read
                with pytest.raises(ValueError, match="internal error: a diagonal kernel"):
                    fn(bad, X.copy(order="F"))
            assert np.array_equal(bad, before)
    _kernel.kernel_rev(d, X)                    # the good case runs


# --------------------------------------------------------------------------
# Finite differences


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("n", [1, 4, 33])
@pytest.mark.parametrize("lower", [True, False])
def test_directional_derivative_matches_finite_differences(n, lower, method):
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
        G = blockchol.chol_rev(L, Lb, block_size=8, method=method)
        exact = np.sum(np.tril(G) * E)
    else:
        G = blockchol.chol_rev(L.T, Lb.T, lower=False, block_size=8, method=method)
        assert not np.tril(G, -1).any()
        exact = np.sum(np.triu(G) * E)
    # Central differences err by the truncation h²|f'''|/6 (1e-12 |f'''|) and the
    # cancellation ~eps |f| / h (1e-10 |f| at h = 1e-6); measured ≤ 3e-10 here.  The bar
    # is 1000 times the cancellation term; a wrong derivative is off by O(|exact|).
    assert abs(fd - exact) <= 1e3 * eps(np.float64) * max(1.0, abs(f(K))) / h


# --------------------------------------------------------------------------
# Layouts, triangles, conventions


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("lower", [True, False])
def test_every_layout_gives_the_same_answer(lower, method):
    n = 37
    _, L, Lb = rev_case(n, seed=5)
    expected = ref.closed_rev(L, Lb)
    if not lower:
        L, Lb, expected = L.T, Lb.T, expected.T
    for lname, Lx in layouts(L).items():
        for bname, Lbx in layouts(Lb).items():
            got = blockchol.chol_rev(Lx, Lbx, lower=lower, block_size=8, method=method)
            assert fro_err(got, expected) <= agree(L, lower=lower), (lname, bname)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("order", ["C", "F"])
def test_unread_triangle_is_ignored(method, order):
    # NaN, inf or huge values in the triangle that is not read change nothing, and the
    # other triangle of the result holds exact zeros (no NaN from inf·0).
    n = 20
    _, L, Lb = rev_case(n, seed=6)
    expected = blockchol.chol_rev(L, Lb)
    for value in (np.nan, np.inf, 1e300):
        for lower in (True, False):
            Lx, Lbx = (L, Lb) if lower else (L.T, Lb.T)
            got = blockchol.chol_rev(np.array(with_garbage(Lx, lower, value), order=order),
                                     np.array(with_garbage(Lbx, lower, value), order=order),
                                     lower=lower, block_size=7, method=method)
            assert fro_err(got if lower else got.T, expected) <= agree(L), (value, lower)
            other = np.triu(got, 1) if lower else np.tril(got, -1)
            assert not other.any(), (value, lower)


def test_lower_false_matches_scipy_upper_factor():
    import scipy.linalg
    rng = np.random.default_rng(11)
    K, _ = random_factor(25, rng)
    U = scipy.linalg.cholesky(K)            # upper, K = Uᵀ U
    Ub = np.triu(random_like((25, 25), rng))
    G = blockchol.chol_rev(U, Ub, lower=False)
    assert fro_err(G, ref.closed_rev(U.T, Ub.T).T) <= agree(U.T)


@pytest.mark.parametrize("method", METHODS)
def test_symmetric_convention(method):
    n = 30
    _, L, Lb = rev_case(n, seed=12)
    G = blockchol.chol_rev(L, Lb, method=method)
    S = blockchol.chol_rev(L, Lb, symmetric=True, block_size=8, method=method)
    assert np.array_equal(S, S.T)
    off = np.tril_indices(n, -1)
    assert fro_err(S[off], G[off] / 2) <= agree(L)
    assert fro_err(np.diag(S), np.diag(G)) <= agree(L)
    Su = blockchol.chol_rev(L.T, Lb.T, lower=False, symmetric=True, method=method)
    assert fro_err(Su, S) <= agree(L)


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
    # gradient on the manifold of symmetric matrices, which is S.  torch's backward is
    # another closed form (4N³ flops), within the same bound (measured 0.003 of it).
    assert fro_err(S, (gK + gK.T) / 2) <= agree(L)


def test_backprop_gradient_is_gpy_compatible():
    _, L, Lb = rev_case(50, seed=14)
    ours = blockchol.backprop_gradient(Lb, L)
    assert fro_err(ours, ref.smith_rev(L, Lb)) <= agree(L)
    gpy = pytest.importorskip("GPy.util.choleskies")
    assert fro_err(ours, gpy.backprop_gradient(Lb.copy(), L.copy())) <= agree(L)


@pytest.mark.parametrize("method", METHODS)
def test_n_zero_and_one(method):
    out = blockchol.chol_rev(np.zeros((0, 0)), np.zeros((0, 0)), method=method)
    assert out.shape == (0, 0) and out.dtype == np.float64
    out = blockchol.chol_rev(np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32),
                             symmetric=True, method=method)
    assert out.shape == (0, 0) and out.dtype == np.float32
    # K = [k]: L = √k, f = b L  ⇒  df/dk = b / (2√k).
    out = blockchol.chol_rev([[2.0]], [[3.0]], method=method)
    assert out.shape == (1, 1) and out[0, 0] == pytest.approx(3.0 / 4.0)


# --------------------------------------------------------------------------
# dtypes


@pytest.mark.parametrize("method", METHODS)
def test_float32_within_its_precision(method):
    n = 120
    _, L, Lb = rev_case(n, seed=15, dtype=np.float32)
    truth = ref.closed_rev(L, Lb, dtype=np.longdouble)      # of the float32 inputs themselves
    got = blockchol.chol_rev(L, Lb, block_size=32, method=method)
    assert got.dtype == np.float32
    err = fro_err(got, truth)
    assert err <= tol(np.float32, condition(L), c_n(n))
    # and really computed in float32: more error than float64 arithmetic can make
    assert err > tol(np.float64, condition(L), c_n(n))


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
    # small integers: every dtype holds the inputs exactly; only the result's rounding counts
    assert fro_err(out, ref.smith_rev(L.astype(float), Lb.astype(float))) <= agree(L.astype(float), expected)


def test_accepts_lists():
    out = blockchol.chol_rev([[2.0, 0.0], [1.0, 3.0]], [[1.0, 0.0], [1.0, 1.0]])
    L = np.array([[2.0, 0], [1, 3]])
    assert fro_err(out, ref.smith_rev(L, np.array([[1.0, 0], [1, 1]]))) <= agree(L)


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


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("lower", [True, False])
def test_overwrite_reuses_compatible_l_bar(order, lower, method):
    _, L, Lb = rev_case(50, seed=18)
    if not lower:
        L, Lb = L.T, Lb.T
    L, Lb = np.array(L, order=order), np.array(Lb, order=order)
    expected = blockchol.chol_rev(L, Lb, lower=lower)
    work = Lb.copy(order="A")
    out = blockchol.chol_rev(L, work, lower=lower, overwrite_l_bar=True, block_size=16,
                             method=method)
    assert out is work
    assert fro_err(out, expected) <= agree(L, lower=lower)


def test_overwrite_falls_back_to_a_copy_when_it_must():
    _, L, Lb = rev_case(30, seed=19)
    cases = {
        "other order": np.asfortranarray(Lb),        # L is C-ordered
        "other dtype": Lb.astype(np.float32),
        "strided": layouts(Lb)["strided"],
    }
    for name, Lbx in cases.items():
        before = Lbx.copy()
        expected = blockchol.chol_rev(L, Lbx.astype(np.float64))     # of the same values
        out = blockchol.chol_rev(L, Lbx, overwrite_l_bar=True)
        assert not np.shares_memory(out, Lbx), name
        assert np.array_equal(Lbx, before), name
        assert fro_err(out, expected) <= agree(L), name
    # L_bar aliasing L must never be overwritten while L is still being read.
    M = L + np.triu(Lb, 1)
    out = blockchol.chol_rev(M, M, overwrite_l_bar=True)
    assert fro_err(out, blockchol.chol_rev(L, L)) <= agree(L)


# --------------------------------------------------------------------------
# Memory


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("overwrite", [False, True])
def test_extra_memory(overwrite, method):
    import tracemalloc
    n, nb = 600, 64
    _, L, Lb = rev_case(n, seed=21)
    work = Lb.copy()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        out = blockchol.chol_rev(L, work, block_size=nb, overwrite_l_bar=overwrite, method=method)
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
    (dict(threads=10**30), ValueError), (dict(threads=2**63), ValueError), (dict(threads=65537), ValueError),
    (dict(method="symbolic"), ValueError), (dict(method=None), ValueError),
])
def test_bad_options(kw, exc):
    with pytest.raises(exc):
        blockchol.chol_rev(np.eye(3), np.eye(3), **kw)


def test_numpy_integer_options_accepted():
    out = blockchol.chol_rev(np.eye(3), np.eye(3), block_size=np.int64(2), threads=np.int32(1))
    assert fro_err(out, ref.smith_rev(np.eye(3), np.eye(3))) <= agree(np.eye(3))


def test_threads_bound_and_huge_block_sizes():
    out = blockchol.chol_rev(np.eye(3), np.eye(3), threads=65536)
    assert fro_err(out, ref.smith_rev(np.eye(3), np.eye(3))) <= agree(np.eye(3))
    for method in METHODS:
        out = blockchol.chol_rev(np.eye(3), np.eye(3), block_size=10**30, method=method)
        assert fro_err(out, ref.smith_rev(np.eye(3), np.eye(3))) <= agree(np.eye(3))


# --------------------------------------------------------------------------
# Memory order, subclasses, overlapping memory


@pytest.mark.parametrize("order", ["C", "F"])
def test_result_has_the_factors_memory_order_even_when_it_is_converted(order):
    _, L, Lb = rev_case(30, seed=25)
    expected = blockchol.chol_rev(L, Lb)
    integer = np.tril(np.round(L * 10)) + 10 * np.eye(len(L))      # positive diagonal
    for Lx in (np.array(L, order=order, dtype=np.float32), np.array(L, order=order),
               np.array(integer.astype(np.int64), order=order)):
        for Lbx in (np.array(Lb, order="C"), np.array(Lb, order="F"), Lb.astype(np.float32)):
            for method in METHODS:
                out = blockchol.chol_rev(Lx, Lbx, method=method)
                assert out.flags["C_CONTIGUOUS" if order == "C" else "F_CONTIGUOUS"]
                same = blockchol.chol_rev(Lx.astype(out.dtype), Lbx.astype(out.dtype))
                assert fro_err(out, same) <= agree(Lx.astype(np.float64), out.dtype)
    strided = layouts(L)["strided"]           # neither C nor F: row-major, copied
    assert blockchol.chol_rev(strided, Lb).flags.c_contiguous
    assert fro_err(blockchol.chol_rev(strided, Lb), expected) <= agree(L)


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
@pytest.mark.parametrize("method", METHODS)
def test_overwrite_returns_the_callers_object(method, tmp_path):
    _, L, Lb = rev_case(25, seed=26)
    expected = blockchol.chol_rev(L, Lb)
    mm = np.lib.format.open_memmap(tmp_path / "lb.npy", mode="w+", dtype=np.float64, shape=Lb.shape)
    mm[...] = Lb
    out = blockchol.chol_rev(L, mm, overwrite_l_bar=True, method=method)
    assert out is mm and fro_err(np.asarray(mm), expected) <= agree(L)
    mat = np.matrix(Lb)
    out = blockchol.chol_rev(L, mat, overwrite_l_bar=True, method=method)
    assert out is mat and fro_err(np.asarray(mat), expected) <= agree(L)


@pytest.mark.parametrize("method", METHODS)
def test_overlapping_l_bar_is_not_overwritten(method):
    # Rows that overlap one another (as_strided): writing the result over them would
    # corrupt it, so the rule refuses and the input is left alone.
    n = 12
    rng = np.random.default_rng(27)
    K, L = random_factor(n, rng)
    base = rng.standard_normal(n * n)
    Lb = np.lib.stride_tricks.as_strided(base, shape=(n, n), strides=(8 * (n - 3), 8),
                                         writeable=True)
    before = np.array(Lb)
    out = blockchol.chol_rev(L, Lb, overwrite_l_bar=True, method=method)
    assert not np.shares_memory(out, base)
    assert np.array_equal(np.array(Lb), before)
    assert fro_err(out, ref.closed_rev(L, before)) <= agree(L)


# --------------------------------------------------------------------------
# Overflow


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("lower", [True, False])
def test_a_tiny_pivot_gives_inf_with_a_warning_not_nan(method, lower):
    # L = diag(1, 1e-200, 1) with a coupling below it: the true gradient has entries
    # ~1e400, beyond float64; those must be ±inf, the others finite and right.
    L = np.array([[1.0, 0, 0], [0.5, 1e-200, 0], [0.25, 0.5, 1.0]])
    Lb = np.tril(np.ones((3, 3)))
    truth = ref.closed_rev(L, Lb, dtype=np.longdouble)   # long double reaches 1e4932
    Lx, Lbx = (L, Lb) if lower else (L.T.copy(), Lb.T.copy())
    with pytest.warns(RuntimeWarning, match="overflows float64"):
        G = blockchol.chol_rev(Lx, Lbx, lower=lower, method=method)
    G = G if lower else G.T
    assert not np.isnan(G).any()
    big = np.abs(truth) > np.finfo(np.float64).max
    assert big.any() and np.isinf(G[big]).all()
    assert np.array_equal(np.sign(G[big]), np.sign(truth[big]).astype(float))
    small = ~big & (np.tril(np.ones((3, 3))) > 0)
    # each a few operations on O(1) numbers and the pivot (measured 0.22 eps): a few ulps
    np.testing.assert_allclose(G[small], truth[small].astype(float), rtol=8 * eps(np.float64))
    assert not np.triu(G, 1).any()


# --------------------------------------------------------------------------
# The small path's per-thread workspaces


def test_small_path_workspaces_carry_nothing_from_one_call_to_the_next():
    # The small path keeps its workspaces between calls; whatever one call leaves
    # in them (a forward call's full product, an upper or complex call, a
    # non-finite input that was refused) must not reach the next call's result.
    rng = np.random.default_rng(5)
    n = 9
    A = rng.standard_normal((n, n))
    L = np.linalg.cholesky(A @ A.T / n + np.eye(n))
    Lb = rng.standard_normal((n, n))              # both triangles filled
    Kd = Lb + Lb.T
    rev, fwd = ref.closed_rev(L, np.tril(Lb)), ref.closed_fwd(L, Kd)
    bad = Lb.copy()
    bad[5, 2] = np.nan
    for _ in range(2):
        assert fro_err(blockchol.chol_fwd(L, Kd), fwd) <= agree(L)
        assert fro_err(blockchol.chol_rev(L, Lb), rev) <= agree(L)
        with pytest.raises(ValueError, match="L_bar contains NaN"):
            blockchol.chol_rev(L, bad)
        assert fro_err(blockchol.chol_rev(L.T.copy(), Lb.T.copy(), lower=False), rev.T) <= agree(L)
        Gc = blockchol.chol_rev(L + 0j, Lb + 1j * Lb)
        assert fro_err(Gc.real, rev) <= agree(L)
        assert fro_err(blockchol.chol_rev(L, Lb, symmetric=True), (rev + rev.T) / 2) <= agree(L)


def test_per_matrix_blas_calls_refuse_what_they_cannot_address():
    # The stacked path's raw per-matrix BLAS calls compute every address from the
    # chunk's shape: anything but two C-ordered chunks of one shape and dtype is refused
    # before the first call, and the arrays are left as they were.
    from blockchol.core import stacks
    rng = np.random.default_rng(5)
    L = np.ascontiguousarray(np.tril(rng.standard_normal((3, 24, 24))) + 24 * np.eye(24))
    T = rng.standard_normal((3, 24, 24))
    for bad_T in (np.asfortranarray(T), T[:, ::2, ::2].copy(), T[:2].copy(), T.astype(np.float32),
                  np.swapaxes(T, -1, -2)):
        before = bad_T.copy()
        with pytest.raises(ValueError, match="internal error: per-matrix BLAS"):
            stacks._per_matrix("trsm", "L", "N", L, bad_T)
        assert np.array_equal(bad_T, before)
    stacks._per_matrix("trsm", "L", "N", L, T)            # the good case runs
