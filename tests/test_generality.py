"""Forward mode, complex factors and stacks of matrices.

Tolerances as in test_chol_rev.py (tests/helpers.py, ``tol``): two
computations of the same derivative, each within c_n(N) · eps · κ₂(L)² of
the exact one in their dtype, agree to ``agree(L, dtype)`` = 2 c_n(N) eps
κ₂(L)² (normwise relative); the references compute in float64 at least on
the same input values, so only the tested dtype's rounding counts.  An
algebra error (a missing conjugate, a wrong triangle) shows up at O(1).
"""

import numpy as np
import pytest

import blockchol
from blockchol import reference as ref
from blockchol.core.thresholds import (CLOSED_BLOCK, STACK_MAX_N, STACK_SWEEP_BLOCK_SIZES,
                                       SWEEP_BLOCK_SIZES)
METHODS = ("closed", "sweep")     # "auto" picks one of them: tested in test_accuracy.py
from helpers import (c_n, condition, default_block_size, eps, fro_err, layouts, random_factor,
                     random_like, tol)

DTYPES = [np.float32, np.float64, np.complex64, np.complex128]


def agree(L, dtype=np.float64, lower=True):
    """The bar for two computations of one derivative at the factor(s) L: 2 c_n(N) eps κ₂(L)²."""
    return tol(dtype, condition(L, lower), 2 * c_n(np.shape(L)[-1]))


def herm(a):
    return np.swapaxes(a, -1, -2).conj()


def hermitian_from(x, lower):
    """The Hermitian matrix whose read triangle is that of x (real diagonal)."""
    return ref.hermitian_from_lower(x if lower else herm(x))


def stack_case(batch, n, dtype, seed=0):
    rng = np.random.default_rng(seed)
    L = np.empty(batch + (n, n), dtype)
    for idx in np.ndindex(batch):
        L[idx] = random_factor(n, rng, dtype)[1]
    return L, random_like(batch + (n, n), rng, dtype)


def as_upper(L, X):
    return herm(L), herm(X)


# --------------------------------------------------------------------------
# Forward mode


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("n", [1, 2, 5, 16, 17, 40])
@pytest.mark.parametrize("dtype", DTYPES)
def test_fwd_matches_symbolic(n, dtype, method):
    rng = np.random.default_rng(n)
    _, L = random_factor(n, rng, dtype)
    Kd = random_like((n, n), rng, dtype)
    expected = ref.closed_fwd(L.astype(np.complex128 if np.iscomplexobj(L) else np.float64), Kd)
    for nb in (1, 4, 16, None):
        got = blockchol.chol_fwd(L, Kd, block_size=nb, method=method)
        assert got.dtype == dtype
        assert fro_err(got, expected) <= agree(L, dtype), nb
        assert not np.triu(got, 1).any()
        Lu, Kdu = as_upper(L, Kd)
        got_u = blockchol.chol_fwd(Lu, Kdu, lower=False, block_size=nb, method=method)
        assert fro_err(got_u, herm(expected)) <= agree(L, dtype), nb
        assert not np.tril(got_u, -1).any()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
def test_fwd_is_the_derivative_of_cholesky(dtype, method):
    rng = np.random.default_rng(3)
    n = 23
    K, L = random_factor(n, rng, dtype)
    Kd = random_like((n, n), rng, dtype)
    H = hermitian_from(Kd, True)
    h = 1e-6
    fd = (np.linalg.cholesky(K + h * H) - np.linalg.cholesky(K - h * H)) / (2 * h)
    got = blockchol.chol_fwd(L, Kd, block_size=8, method=method)
    # Central differences err by the truncation h² ‖d³L‖/6 and the cancellation
    # ~eps ‖L‖ / h (1e-10 relative at h = 1e-6); the bar is 1000 times the latter, and a
    # wrong derivative is off by O(1).
    assert fro_err(got, fd) <= 1e3 * eps(np.float64) * np.linalg.norm(L) / np.linalg.norm(fd) / h


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("lower", [True, False])
@pytest.mark.parametrize("n, nb", [(1, None), (9, 4), (33, 8), (70, None)])
def test_adjoint_identity(dtype, lower, n, nb, method):
    # Re Σ conj(L̄) ⊙ L̇ = Re Σ_read conj(G) ⊙ K̇ links chol_fwd and chol_rev.
    rng = np.random.default_rng(n)
    _, L = random_factor(n, rng, dtype)
    Lb = random_like((n, n), rng, dtype)
    Kd = random_like((n, n), rng, dtype)
    if not lower:
        L, Lb, Kd = herm(L), herm(Lb), herm(Kd)
    tri = np.tril if lower else np.triu
    Kd = tri(Kd)
    np.fill_diagonal(Kd, Kd.diagonal().real)   # a tangent of a Hermitian K has a real diagonal
    Ld = blockchol.chol_fwd(L, Kd, lower=lower, block_size=nb, method=method)
    G = blockchol.chol_rev(L, Lb, lower=lower, block_size=nb, method=method)
    lhs = np.vdot(tri(Lb), Ld).real
    rhs = np.vdot(G, Kd).real
    # Exact values are equal.  |<L̄, ΔL̇>| ≤ ‖L̄‖ ‖L̇‖ c_n(N) eps κ² (Cauchy-Schwarz and the bar
    # on L̇), the same for G, and each dot product of N² terms rounds by c_n(N²) eps ‖x‖ ‖y‖.
    scale = (np.linalg.norm(tri(Lb)) * np.linalg.norm(Ld) + np.linalg.norm(G) * np.linalg.norm(Kd))
    bound = tol(dtype, condition(L, lower), c_n(n)) + tol(dtype, 1.0, c_n(n * n))
    assert abs(lhs - rhs) <= bound * scale


@pytest.mark.parametrize("method", METHODS)
def test_fwd_layouts_and_garbage(method):
    rng = np.random.default_rng(4)
    n = 30
    _, L = random_factor(n, rng)
    Kd = random_like((n, n), rng)
    expected = ref.closed_fwd(L, Kd)
    Lg, Kdg = np.triu(np.full((n, n), np.nan), 1) + np.tril(L), np.triu(np.full((n, n), np.nan), 1) + np.tril(Kd)
    for name, Lx in layouts(Lg).items():
        for kname, Kx in layouts(Kdg).items():
            got = blockchol.chol_fwd(Lx, Kx, block_size=7, method=method)
            assert fro_err(got, expected) <= agree(L), (name, kname)
            assert not np.triu(got, 1).any()


def test_fwd_errors_and_inputs_untouched():
    rng = np.random.default_rng(5)
    _, L = random_factor(6, rng)
    Kd = random_like((6, 6), rng)
    L0, Kd0 = L.copy(), Kd.copy()
    blockchol.chol_fwd(L, Kd)
    assert np.array_equal(L, L0) and np.array_equal(Kd, Kd0)
    bad = Kd.copy()
    bad[4, 1] = np.inf
    with pytest.raises(ValueError, match="K_dot contains NaN"):
        blockchol.chol_fwd(L, bad)
    Lz = L.copy()
    Lz[2, 2] = 0
    with pytest.raises(np.linalg.LinAlgError, match=r"L\[2, 2\]"):
        blockchol.chol_fwd(Lz, Kd)
    with pytest.raises(ValueError, match="same shape"):
        blockchol.chol_fwd(L, Kd[:5, :5])
    with pytest.raises(ValueError):
        blockchol.chol_fwd(L, Kd, block_size=0)
    with pytest.raises(TypeError):
        blockchol.chol_fwd(L, Kd.astype(object))
    assert blockchol.chol_fwd(np.zeros((0, 0)), np.zeros((0, 0))).shape == (0, 0)


# --------------------------------------------------------------------------
# Complex


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
@pytest.mark.parametrize("lower", [True, False])
def test_complex_rev_matches_references(dtype, lower):
    rng = np.random.default_rng(6)
    n = 37
    _, L = random_factor(n, rng, dtype)
    Lb = random_like((n, n), rng, dtype)
    L128, Lb128 = L.astype(np.complex128), Lb.astype(np.complex128)
    expected = ref.closed_rev(L128, Lb128)
    assert fro_err(ref.sweep_rev(L128, Lb128), expected) <= agree(L128)
    for nb in (1, 5, 16, None):
        if lower:
            got = blockchol.chol_rev(L, Lb, block_size=nb)
        else:
            got = herm(blockchol.chol_rev(herm(L), herm(Lb), lower=False, block_size=nb))
        assert got.dtype == dtype
        assert fro_err(got, expected) <= agree(L128, dtype), nb
        assert not np.diagonal(got).imag.any()


@pytest.mark.parametrize("lower", [True, False])
def test_complex_rev_finite_differences(lower):
    # f(K) = Re Σ conj(L̄) ⊙ chol(K); df along Hermitian E is Re Σ_read conj(G) ⊙ E.
    rng = np.random.default_rng(7)
    n = 12
    K, L = random_factor(n, rng, np.complex128)
    Lb = random_like((n, n), rng, np.complex128)
    E = random_like((n, n), rng, np.complex128)
    E = E + herm(E)
    f = lambda K: np.vdot(np.tril(Lb), np.linalg.cholesky(K)).real
    h = 1e-6
    fd = (f(K + h * E) - f(K - h * E)) / (2 * h)
    if lower:
        G = blockchol.chol_rev(L, Lb, block_size=4)
        exact = np.vdot(G, np.tril(E)).real
    else:
        G = blockchol.chol_rev(herm(L), herm(Lb), lower=False, block_size=4)
        exact = np.vdot(G, np.triu(E)).real
    # As in test_chol_rev: 1000 times central differences' cancellation error eps |f| / h.
    assert abs(fd - exact) <= 1e3 * eps(np.float64) * max(1.0, abs(f(K))) / h


def test_complex_symmetric_is_hermitian_and_matches_torch():
    rng = np.random.default_rng(8)
    n = 20
    K, L = random_factor(n, rng, np.complex128)
    Lb = random_like((n, n), rng, np.complex128)
    S = blockchol.chol_rev(L, Lb, symmetric=True, block_size=8)
    G = blockchol.chol_rev(L, Lb)
    assert np.array_equal(S, herm(S))
    off = np.tril_indices(n, -1)
    assert fro_err(S[off], G[off] / 2) <= agree(L)
    assert fro_err(np.diagonal(S), np.diagonal(G)) <= agree(L)
    torch = pytest.importorskip("torch")
    Kt = torch.tensor(K, requires_grad=True)
    (gK,) = torch.autograd.grad(torch.linalg.cholesky(Kt), Kt, torch.tensor(np.tril(Lb)))
    gK = gK.numpy()
    # torch's gradient for complex K is the conjugate-Wirtinger form (df = Re Σ conj(gK) dK);
    # its Hermitian part is the gradient restricted to Hermitian K, i.e. S; torch's
    # backward is another closed form, within the same bound.
    assert fro_err(S, (gK + herm(gK)) / 2) <= agree(L)


def test_complex_diagonal_must_be_real():
    rng = np.random.default_rng(9)
    _, L = random_factor(5, rng, np.complex128)
    L[3, 3] += 1e-3j
    with pytest.raises(np.linalg.LinAlgError, match=r"L\[3, 3\]"):
        blockchol.chol_rev(L, np.eye(5))
    with pytest.raises(np.linalg.LinAlgError, match=r"L\[3, 3\]"):
        blockchol.chol_fwd(L, np.eye(5))


def test_mixed_real_complex_promotes():
    rng = np.random.default_rng(10)
    _, L = random_factor(6, rng)
    Lb = random_like((6, 6), rng, np.complex64)
    out = blockchol.chol_rev(L, Lb)
    assert out.dtype == np.complex128
    # computed in complex128 from the same values: complex128's rounding, not complex64's
    assert fro_err(out, ref.closed_rev(L.astype(complex), Lb.astype(np.complex128))) <= agree(L, out.dtype)


# --------------------------------------------------------------------------
# Stacks


def per_matrix(fn, L, X, **kw):
    shape = np.broadcast_shapes(L.shape, X.shape)
    Lb, Xb = np.broadcast_to(L, shape), np.broadcast_to(X, shape)
    out = None
    for idx in np.ndindex(shape[:-2]):
        r = fn(Lb[idx], Xb[idx], **kw)
        if out is None:
            out = np.empty(shape, r.dtype)
        out[idx] = r
    return out


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("fn", [blockchol.chol_rev, blockchol.chol_fwd])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch, n", [((5,), 4), ((3, 2), 17), ((40,), 8), ((3,), 70), ((2,), 130),
                                      ((2,), 300)])
def test_stack_matches_per_matrix_loop(fn, dtype, batch, n, method):
    L, X = stack_case(batch, n, dtype, seed=n)
    for lower in (True, False):
        Lx, Xx = (L, X) if lower else as_upper(L, X)
        got = fn(Lx, Xx, lower=lower, method=method)
        assert got.shape == batch + (n, n) and got.dtype == dtype
        assert fro_err(got, per_matrix(fn, Lx, Xx, lower=lower, method=method)) <= agree(L, dtype)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("n", [1, 5, 24, 40, 77, 130, 256])
@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
def test_stacked_and_looped_paths_agree_to_rounding(n, dtype, method):
    # Up to STACK_MAX_N stacks take the stacked operations, single matrices the BLAS
    # path; with the same block size the two agree to rounding.
    assert n <= STACK_MAX_N
    L, X = stack_case((6,), n, dtype, seed=n)
    if method == "closed":
        sizes = (16, None)          # only the products' row blocks: the closed form is one block
    else:
        sizes = (1, 3, 8, 16, 33, n, None) if n <= 77 else (16, 64, None)
    # A size whose widths on both paths (None: each path's default; at most N) repeat an
    # earlier size's is the same pair of computations, bit for bit: measured once.
    stack_default, single_default = ((lambda n: n, lambda n: CLOSED_BLOCK) if method == "closed"
                                     else (lambda n: default_block_size(STACK_SWEEP_BLOCK_SIZES, n),
                                           lambda n: default_block_size(SWEEP_BLOCK_SIZES, n)))
    widths = {}
    for nb in sizes:
        widths.setdefault((min(nb or stack_default(n), n), min(nb or single_default(n), n)), nb)
    for fn in (blockchol.chol_rev, blockchol.chol_fwd):
        for nb in widths.values():
            expected = per_matrix(fn, L, X, block_size=nb, method=method)
            got = fn(L, X, block_size=nb, method=method)
            assert fro_err(got, expected) <= agree(L, dtype), (fn.__name__, nb)


def test_stack_symmetric_and_threads():
    L, X = stack_case((33,), 10, np.complex128, seed=12)
    S = blockchol.chol_rev(L, X, symmetric=True)
    assert np.array_equal(S, herm(S))
    assert fro_err(S, per_matrix(blockchol.chol_rev, L, X, symmetric=True)) <= agree(L, S.dtype)
    G = blockchol.chol_rev(L, X)
    assert fro_err(G, per_matrix(blockchol.chol_rev, L, X)) <= agree(L, G.dtype)
    for t in (1, 2, 3):
        # Worker threads split the stack into chunks; every matrix's arithmetic is its own.
        assert fro_err(blockchol.chol_rev(L, X, threads=t), G) <= agree(L, G.dtype), t
        St = blockchol.chol_rev(L, X, symmetric=True, threads=t)
        assert np.array_equal(St, herm(St)) and fro_err(St, S) <= agree(L, S.dtype), t


@pytest.mark.parametrize("n", [6, 90])   # stacked and looped paths
def test_broadcasting(n):
    rng = np.random.default_rng(13)
    _, L1 = random_factor(n, rng)
    X = random_like((4, 1, n, n), rng)
    Ls = np.stack([L1, random_factor(n, rng)[1], random_factor(n, rng)[1]])   # (3, n, n)
    for L, Xx, shape in [(L1, X, (4, 1)), (Ls, X, (4, 3)), (Ls, X[0, 0], (3,))]:
        for fn in (blockchol.chol_rev, blockchol.chol_fwd):
            got = fn(L, Xx)
            assert got.shape == shape + (n, n)
            assert fro_err(got, per_matrix(fn, L, Xx)) <= agree(Ls)
    with pytest.raises(ValueError, match="broadcast"):
        blockchol.chol_rev(Ls, np.zeros((2, n, n)))


def test_empty_stacks():
    for shape in [(0, 3, 3), (2, 0, 3, 3), (4, 0, 0)]:
        for fn in (blockchol.chol_rev, blockchol.chol_fwd):
            out = fn(np.ones(shape), np.ones(shape))
            assert out.shape == shape and out.dtype == np.float64


def test_stack_errors_name_the_batch_index():
    L, X = stack_case((3, 4), 5, np.float64, seed=14)
    L[2, 1, 3, 3] = -1.0
    with pytest.raises(np.linalg.LinAlgError, match=r"L\[2, 1\]\[3, 3\]"):
        blockchol.chol_rev(L, X)
    L, X = stack_case((3, 4), 5, np.float64, seed=14)
    X[1, 2, 4, 0] = np.nan
    with pytest.raises(ValueError, match=r"L_bar\[1, 2\] contains NaN"):
        blockchol.chol_rev(L, X)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("n", [5, 90, 300])   # stacked and looped paths
@pytest.mark.parametrize("lower", [True, False])
def test_stack_unread_triangle_is_ignored(n, lower, method):
    # (Above STACK_MAX_N the loop takes one matrix at a time: two of them show it.)
    L, X = stack_case((4,) if n <= STACK_MAX_N else (2,), n, np.complex128, seed=n)
    if not lower:
        L, X = as_upper(L, X)
    iu = np.triu_indices(n, 1) if lower else np.tril_indices(n, -1)
    Lg, Xg = L.copy(), X.copy()
    Lg[..., iu[0], iu[1]] = np.nan
    Xg[..., iu[0], iu[1]] = np.inf
    for fn in (blockchol.chol_rev, blockchol.chol_fwd):
        clean = fn(L, X, lower=lower, method=method)
        assert np.isfinite(clean).all()
        dirty = fn(Lg, Xg, lower=lower, method=method)
        assert fro_err(dirty, clean) <= agree(L, clean.dtype, lower)
        assert not dirty[..., iu[0], iu[1]].any()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("n", [10, 300])            # stacked and looped paths
@pytest.mark.parametrize("lower", [True, False])
@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
def test_stack_inputs_untouched_and_overwrite(n, lower, dtype, method):
    L, X = stack_case((3,) if n <= STACK_MAX_N else (2,), n, dtype, seed=15)
    if not lower:
        L, X = as_upper(L, X)
        L, X = L.copy(), X.copy()
    L0, X0 = L.copy(), X.copy()
    expected = blockchol.chol_rev(L, X, lower=lower, method=method)
    assert np.array_equal(L, L0) and np.array_equal(X, X0)
    work = X.copy()
    out = blockchol.chol_rev(L, work, lower=lower, overwrite_l_bar=True, method=method)
    assert out is work and fro_err(out, expected) <= agree(L, dtype, lower)
    # A broadcast L_bar is never overwritten.
    Xb = X[0].copy()
    out = blockchol.chol_rev(L, Xb, lower=lower, overwrite_l_bar=True)
    assert out is not Xb and np.array_equal(Xb, X0[0])
    # Nor a read-only one.
    ro = X.copy()
    ro.flags.writeable = False
    out = blockchol.chol_rev(L, ro, lower=lower, overwrite_l_bar=True)
    assert out is not ro and fro_err(out, expected) <= agree(L, dtype, lower)


@pytest.mark.parametrize("chunk_matrices", [None, 2])
@pytest.mark.parametrize("n", [1, 4, 9, 20])
def test_stack_chunks_and_workers(n, chunk_matrices, monkeypatch):
    # Chunks are shared among worker threads and the last one is usually
    # short: every count and thread setting must give the per-matrix answers,
    # also when the chunk size (2 matrices here) splits a stack into many chunks.
    from blockchol.core import stacks
    if chunk_matrices:
        monkeypatch.setattr(stacks, "CHUNK_BYTES", chunk_matrices * n * n * 8)
    L, X = stack_case((9,), n, np.float64, seed=n)
    expected = {fn: per_matrix(fn, L, X) for fn in (blockchol.chol_rev, blockchol.chol_fwd)}
    for count in range(1, 10):
        for threads in (1, 2, 3):
            for fn, exp in expected.items():
                got = fn(L[:count], X[:count], threads=threads)
                assert fro_err(got, exp[:count]) <= agree(L), (fn.__name__, count, threads)
