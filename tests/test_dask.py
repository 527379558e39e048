"""blockchol.dask: the tiled derivatives against the in-core functions, and the graph's contract.

Tolerances: two computations of one derivative (tiled or in-core, closed
form or sweep) differ by rounding amplified by the conditioning; every
comparison uses :func:`tolerance`, 4 (N + 1) eps κ₂(K) relative to the
largest entry, except the accuracy tests on covariance matrices, whose bars
are relative to the in-core error and say so.
Most tests run on dask's synchronous scheduler; the threaded and process
schedulers and a dask.distributed cluster are tested separately.
"""

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import dask
import dask.array as da
from dask.callbacks import Callback
from dask.core import get_dependencies
from threadpoolctl import threadpool_limits

import blockchol
import blockchol.dask as bd
from blockchol import reference as ref
from helpers import REPO, random_factor, random_like, rel_err, run_python

DTYPES = [np.float32, np.float64, np.complex64, np.complex128]
METHODS = ["closed", "sweep"]
# (N, tile): one tile, even tiles, a short last tile, a last tile of one row.
SHAPES = [(1, 1), (6, 6), (12, 4), (13, 5), (17, 8)]


def tolerance(L, dtype=None):
    """Bar on the max-relative difference of two computations of one derivative at factor L.

    Both sides are backward stable, so they differ by a few roundings of the
    result amplified by the conditioning: 4 (N + 1) eps κ₂(K), κ₂(K) = κ₂(L)²,
    eps of ``dtype`` (default L's).  Measured on this module's problems
    (κ ≤ 70): at most 0.2 of the bar for N = 1 and 0.003 for N ≥ 6, every
    method, direction and dtype; an error in the algebra shows at O(1).
    """
    n = L.shape[0]
    with threadpool_limits(1):      # an SVD this small: threads only contend under load
        kappa = np.linalg.cond(L) ** 2 if n else 1.0
    return 4 * (n + 1) * np.finfo(np.dtype(dtype or L.dtype)).eps * kappa


def gp_tolerance(theta, X):
    """:func:`tolerance` for the demo's GP: 4 (N + 1) eps κ₂(K) of its covariance K."""
    from blockchol import demo
    with threadpool_limits(1):
        kappa = np.linalg.cond(demo.covariance(theta, X))
    return 4 * (len(X) + 1) * np.finfo(np.float64).eps * kappa


def herm(a):
    return a.T.conj()


def case(n, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed + n)
    _, L = random_factor(n, rng, dtype)
    return L, random_like((n, n), rng, dtype)


def compute(x):
    return x.compute(scheduler="sync")


# --------------------------------------------------------------------------
# Import


def test_import_blockchol_does_not_import_dask():
    r = run_python("import sys, blockchol; print(sorted(m for m in sys.modules "
                "if m.split('.')[0] in ('dask', 'distributed')))")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_import_without_dask_names_the_extra():
    r = run_python("import sys; sys.modules['dask'] = None; import blockchol\n"
                "try:\n    import blockchol.dask\nexcept ImportError as e:\n    print(e)\n"
                "else:\n    print('imported')")
    assert r.returncode == 0, r.stderr
    assert "pip install 'blockchol[dask]'" in r.stdout


# --------------------------------------------------------------------------
# Agreement with the in-core functions


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, tile", SHAPES)
def test_rev_matches_in_core(n, tile, dtype, method):
    L, Lb = case(n, dtype)
    tol = tolerance(L)
    for lower in (True, False):
        Lx, Bx = (L, Lb) if lower else (herm(L), herm(Lb))
        for symmetric in (False, True):
            expected = blockchol.chol_rev(Lx, Bx, lower=lower, symmetric=symmetric)
            got = bd.chol_rev(da.from_array(Lx, chunks=tile), da.from_array(Bx, chunks=tile),
                              lower=lower, symmetric=symmetric, method=method)
            assert got.dtype == dtype and got.chunks == da.from_array(Lx, chunks=tile).chunks
            value = compute(got)
            assert value.dtype == dtype
            assert rel_err(value, expected) < tol, (lower, symmetric)
            if symmetric:
                np.testing.assert_array_equal(value, herm(value))
            else:
                other = np.triu(value, 1) if lower else np.tril(value, -1)
                assert not other.any()
                assert not np.diagonal(value).imag.any()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, tile", SHAPES)
def test_fwd_matches_in_core(n, tile, dtype, method):
    L, Kd = case(n, dtype, seed=1)
    for lower in (True, False):
        Lx, Kx = (L, Kd) if lower else (herm(L), herm(Kd))
        expected = blockchol.chol_fwd(Lx, Kx, lower=lower)
        got = bd.chol_fwd(da.from_array(Lx, chunks=tile), Kx, lower=lower, method=method)
        value = compute(got)
        assert value.dtype == dtype
        assert rel_err(value, expected) < tolerance(L), lower
        assert not (np.triu(value, 1) if lower else np.tril(value, -1)).any()


@pytest.mark.parametrize("method", METHODS)
def test_against_the_reference_closed_forms(method):
    # The slow closed forms of blockchol.reference, independent of the in-core sweep.
    for dtype in (np.float64, np.complex128):
        L, X = case(40, dtype, seed=2)
        Ld = da.from_array(L, chunks=9)
        bar = tolerance(L)
        assert rel_err(compute(bd.chol_rev(Ld, X, method=method)), ref.closed_rev(L, X)) < bar
        assert rel_err(compute(bd.chol_fwd(Ld, X, method=method)), ref.closed_fwd(L, X)) < bar


@pytest.mark.parametrize("method", METHODS)
def test_forward_is_the_adjoint_of_reverse(method):
    L, Lb = case(23, np.complex128, seed=3)
    Kd = random_like((23, 23), np.random.default_rng(4), np.complex128)
    Ld = da.from_array(L, chunks=7)
    G = compute(bd.chol_rev(Ld, Lb, method=method))
    L_dot = compute(bd.chol_fwd(Ld, Kd, method=method))
    lhs = np.vdot(np.tril(Lb), L_dot).real
    rhs = np.vdot(G, np.tril(Kd)).real
    # Each side errs by at most its result's error (tolerance · its largest entry) times
    # the sum of the other factor's entries; an adjoint error is O(|rhs|).
    bound = tolerance(L) * (np.abs(L_dot).max() * np.abs(np.tril(Lb)).sum()
                            + np.abs(G).max() * np.abs(np.tril(Kd)).sum())
    assert abs(lhs - rhs) < bound < 1e-3 * abs(rhs)


def test_unread_triangles_are_ignored():
    L, Lb = case(14)
    expected = blockchol.chol_rev(L, Lb)
    garbage_L = L + np.triu(np.full((14, 14), np.nan), 1)
    garbage_B = Lb + np.triu(np.ones((14, 14)) * 1e300, 1)
    got = compute(bd.chol_rev(da.from_array(garbage_L, chunks=4), garbage_B))
    assert rel_err(got, expected) < tolerance(L)


@pytest.mark.parametrize("covariance, n, jitter", [("rbf", 200, 1e-10), ("matern52", 150, 1e-8)])
def test_closed_form_accuracy_on_kernel_matrices(covariance, n, jitter):
    # The issue-8 bar of tests/test_accuracy.py, for the tiles: within 10× of the
    # float64 closed form's error against the long-double truth (measured ≤ 2×).
    _, L, Lb = ref.covariance_problem(covariance, n, jitter, cotangent="gp")
    Kd = np.tril(np.random.default_rng(1).standard_normal((n, n)))
    truth_rev = ref.closed_rev(L, Lb, dtype=np.longdouble)
    truth_fwd = ref.closed_fwd(L, Kd, dtype=np.longdouble)
    bar_rev = 10 * ref.relative_error(ref.closed_rev(L, Lb), truth_rev)
    bar_fwd = 10 * ref.relative_error(ref.closed_fwd(L, Kd), truth_fwd)
    for tile in (25, 64):
        Ld = da.from_array(L, chunks=tile)
        assert ref.relative_error(compute(bd.chol_rev(Ld, Lb)), truth_rev) < bar_rev
        assert ref.relative_error(compute(bd.chol_fwd(Ld, Kd)), truth_fwd) < bar_fwd


@pytest.mark.parametrize("tile", [64, 150])
def test_sweep_accuracy_matches_the_in_core_sweep(tile):
    # The tiled sweep is a blocked sweep like the in-core one (tile = block; on
    # each diagonal tile the unblocked sweep up to 128, the in-core sweep above):
    # within 4× of its typical error (measured 0.6-1.6×, reverse and forward,
    # tiles 32-250; single draws vary by up to 40×, hence typical_error).  With
    # the closed form on 64-tiles it was 1800× worse.
    _, L, Lb = ref.covariance_problem("rbf", 300, 1e-8, cotangent="gp")
    Ld = da.from_array(L, chunks=tile)
    truth = ref.closed_rev(L, Lb, dtype=np.longdouble)
    in_core = ref.typical_error(lambda X: blockchol.chol_rev(L, X, method="sweep"), Lb, truth)
    tiled = ref.typical_error(lambda X: compute(bd.chol_rev(Ld, X, method="sweep")), Lb, truth)
    assert tiled < 4 * in_core
    if tile == 64:
        Kd = np.tril(np.random.default_rng(1).standard_normal((300, 300)))
        truth = ref.closed_fwd(L, Kd, dtype=np.longdouble)
        in_core = ref.typical_error(lambda X: blockchol.chol_fwd(L, X, method="sweep"), Kd, truth)
        tiled = ref.typical_error(lambda X: compute(bd.chol_fwd(Ld, X, method="sweep")), Kd, truth)
        assert tiled < 4 * in_core


# --------------------------------------------------------------------------
# Chunks, numpy inputs, dtypes


def test_mismatched_chunkings_are_rechunked_to_square_tiles():
    L, Lb = case(30)
    expected = blockchol.chol_rev(L, Lb)
    # Rows and columns chunked differently: b = floor(sqrt(10 * 15)) = 12.
    Ld = da.from_array(L, chunks=(10, 15))
    got = bd.chol_rev(Ld, da.from_array(Lb, chunks=(7, 30)))
    assert got.chunks == ((12, 12, 6), (12, 12, 6))
    assert rel_err(compute(got), expected) < tolerance(L)
    # Square but uneven tiles on L are kept; L_bar follows them.
    Ld = da.from_array(L, chunks=((5, 20, 5), (5, 20, 5)))
    got = bd.chol_rev(Ld, da.from_array(Lb, chunks=8), method="sweep")
    assert got.chunks == ((5, 20, 5), (5, 20, 5))
    assert rel_err(compute(got), expected) < tolerance(L)
    got = bd.chol_fwd(Ld, da.from_array(Lb, chunks=(3, 11)))
    assert got.chunks == Ld.chunks
    assert rel_err(compute(got), blockchol.chol_fwd(L, Lb)) < tolerance(L)


# Tile sizes of zero are legal dask chunks (slicing and rechunking make them): a zero
# tile first, in the middle, last and twice, with ragged tiles around them, and a
# non-square chunking with zeros (rechunked); the second argument chunked otherwise.
ZERO_AND_RAGGED = [((0, 16), (0, 16)), ((16, 0), (16, 0)), ((0, 0, 16), (0, 0, 16)),
                   ((5, 0, 7, 0, 1, 3, 0), (5, 0, 7, 0, 1, 3, 0)), ((0, 6, 10), (8, 0, 8))]


@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
@pytest.mark.parametrize("chunks", ZERO_AND_RAGGED, ids=str)
def test_zero_size_and_ragged_tiles(chunks, dtype):
    # Every method × direction × lower/upper × symmetric against the in-core functions.
    L, X = case(16, dtype, seed=6)
    for lower in (True, False):
        Lx, Xx = (L, X) if lower else (herm(L), herm(X))
        Ld = da.from_array(Lx, chunks=chunks)
        Xd = da.from_array(Xx, chunks=((3, 0, 13), (16, 0)))
        bar = tolerance(Lx, dtype)
        for method in METHODS:
            for symmetric in (False, True):
                got = bd.chol_rev(Ld, Xd, lower=lower, symmetric=symmetric, method=method)
                expected = blockchol.chol_rev(Lx, Xx, lower=lower, symmetric=symmetric)
                assert got.chunks[0] == got.chunks[1] and sum(got.chunks[0]) == 16
                assert rel_err(compute(got), expected) < bar, (lower, method, symmetric)
            got = bd.chol_fwd(Ld, Xd, lower=lower, method=method)
            expected = blockchol.chol_fwd(Lx, Xx, lower=lower)
            assert rel_err(compute(got), expected) < bar, (lower, method)


def test_an_empty_tile_before_a_large_one():
    # The reliability issue's case: the closed forward form raised a broadcasting error.
    L, X = case(150, seed=7)
    Ld = da.from_array(L, chunks=((0, 150), (0, 150)))
    for method in METHODS:
        assert rel_err(compute(bd.chol_fwd(Ld, X, method=method)),
                       blockchol.chol_fwd(L, X)) < tolerance(L)
        assert rel_err(compute(bd.chol_rev(Ld, X, method=method)),
                       blockchol.chol_rev(L, X)) < tolerance(L)


def test_numpy_arguments():
    L, Lb = case(20)
    # numpy L_bar takes L's chunks; numpy L takes L_bar's; two numpy arrays: dask's auto chunks.
    assert bd.chol_rev(da.from_array(L, chunks=6), Lb).chunks == ((6, 6, 6, 2),) * 2
    assert bd.chol_rev(L, da.from_array(Lb, chunks=6)).chunks == ((6, 6, 6, 2),) * 2
    got = bd.chol_rev(L, Lb)
    assert isinstance(got, da.Array)
    assert rel_err(compute(got), blockchol.chol_rev(L, Lb)) < tolerance(L)
    assert rel_err(compute(bd.chol_fwd(L.tolist(), Lb)), blockchol.chol_fwd(L, Lb)) < tolerance(L)


def test_dtype_promotion():
    L, _ = case(9)
    ints = np.tril(np.arange(81).reshape(9, 9) % 5)
    for Lx, Bx, dtype in [(L, ints, np.float64),
                          (L.astype(np.float32), ints.astype(np.int8), np.float64),
                          (L.astype(np.float32), ints.astype(np.float32), np.float32),
                          (L.astype(np.float32), ints.astype(np.complex64), np.complex64),
                          (np.eye(9, dtype=np.int64), ints.astype(bool), np.float64),
                          (L.astype(np.float16), ints.astype(np.float16), np.float32)]:
        got = bd.chol_rev(da.from_array(Lx, chunks=4), Bx)
        expected = blockchol.chol_rev(Lx, Bx)
        assert got.dtype == expected.dtype == dtype
        assert compute(got).dtype == dtype
        assert rel_err(compute(got), expected) < tolerance(np.asarray(Lx, dtype))
        assert bd.chol_fwd(da.from_array(Lx, chunks=4), Bx).dtype == dtype


def test_empty_matrices():
    got = bd.chol_rev(np.zeros((0, 0)), np.zeros((0, 0)))
    assert got.shape == (0, 0) and compute(got).shape == (0, 0)
    assert bd.chol_fwd(np.zeros((0, 0), np.float32), np.zeros((0, 0))).dtype == np.float64


# --------------------------------------------------------------------------
# Errors


def test_shape_errors_when_the_graph_is_built():
    L = da.eye(6, chunks=3)
    for fn in (bd.chol_rev, bd.chol_fwd):
        with pytest.raises(ValueError, match="same shape"):
            fn(L, da.ones((5, 5), chunks=3))
        with pytest.raises(ValueError, match="square"):
            fn(da.ones((6, 5), chunks=3), L)
        with pytest.raises(ValueError, match="2-D"):
            fn(L, np.ones((2, 6, 6)))
        with pytest.raises(ValueError, match="method"):
            fn(L, L, method="cholesky")
        with pytest.raises(TypeError, match="numeric"):
            fn(L, np.full((6, 6), "x"))
        with pytest.raises(TypeError, match="not supported"):
            fn(L, np.ones((6, 6), np.longdouble))
    x = da.ones((12, 12), chunks=4)
    unknown = x[x[:, 0] > 0]                # shape (nan, 12)
    with pytest.raises(ValueError, match="unknown shape"):
        bd.chol_rev(unknown, x)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("lower", [True, False])
def test_bad_diagonal_raises_at_compute_naming_the_global_index(method, lower):
    L, Lb = case(10)
    L[6, 6] = -1.0
    Lx, Bx = (L, Lb) if lower else (herm(L), herm(Lb))
    for fn in (bd.chol_rev, bd.chol_fwd):
        lazy = fn(da.from_array(Lx, chunks=4), Bx, lower=lower, method=method)   # no error yet
        with pytest.raises(np.linalg.LinAlgError, match=r"L\[6, 6\] = -1\.0"):
            compute(lazy)
    Lc = L.astype(np.complex128)
    Lc[6, 6] = 1 + 1j
    with pytest.raises(np.linalg.LinAlgError, match=r"L\[6, 6\]"):
        compute(bd.chol_rev(da.from_array(Lc, chunks=4), Lb, method=method))


def test_nan_raises_at_compute():
    L, Lb = case(10)
    Lb[7, 2] = np.nan
    lazy = bd.chol_rev(da.from_array(L, chunks=4), Lb)
    with pytest.raises(ValueError, match=r"L_bar contains NaN.*\[7, 2\]"):
        compute(lazy)
    with pytest.raises(ValueError, match=r"K_dot contains NaN.*\[2, 7\]"):
        compute(bd.chol_fwd(da.from_array(herm(L), chunks=4), herm(Lb), lower=False))


# --------------------------------------------------------------------------
# Laziness and the shape of the graph


class Counter(Callback):
    def __init__(self):
        super().__init__()
        self.tasks = 0

    def _pretask(self, key, dsk, state):
        self.tasks += 1


def test_building_the_graph_computes_nothing():
    calls = []
    L, Lb = case(24)

    def source(block, block_info=None):     # records every tile dask asks it for
        calls.append(block_info[None]["chunk-location"])
        return block

    Ld = da.from_array(L, chunks=6).map_blocks(source, dtype=L.dtype)
    Bd = da.from_array(Lb, chunks=6).map_blocks(source, dtype=Lb.dtype)
    with Counter() as counter:
        lazy = [bd.chol_rev(Ld, Bd, method=m, symmetric=s) for m in METHODS for s in (False, True)]
        lazy += [bd.chol_fwd(Ld, Bd, method=m, lower=False) for m in METHODS]
        lazy += [bd.chol_rev(Ld.rechunk((8, 12)), Bd)]          # a rechunk, also lazy
    assert counter.tasks == 0 and calls == []
    with Counter() as counter:
        compute(lazy[0])
    assert counter.tasks > 0 and calls


def _critical_path(x):
    """Tasks on the longest dependency chain of blockchol's layer."""
    dsk = dict(x.dask.layers[x.name])
    deps = {k: {d for d in get_dependencies(dsk, k) if d in dsk} for k in dsk}
    depth = {}

    def walk(k):
        stack = [k]
        while stack:
            top = stack[-1]
            todo = [d for d in deps[top] if d not in depth]
            if todo:
                stack.extend(todo)
                continue
            stack.pop()
            depth[top] = 1 + max((depth[d] for d in deps[top]), default=0)
        return depth[k]

    return max(walk(k) for k in dsk)


@pytest.mark.parametrize("fn, method", [(bd.chol_rev, "closed"), (bd.chol_rev, "sweep"),
                                        (bd.chol_fwd, "closed"), (bd.chol_fwd, "sweep")])
def test_task_count_grows_as_tiles_cubed_and_critical_path_linearly(fn, method):
    counts, paths = [], []
    for T in (4, 8, 16):
        x = fn(da.eye(2 * T, chunks=2), da.eye(2 * T, chunks=2), method=method)
        counts.append(len(x.dask.layers[x.name]))
        paths.append(_critical_path(x))
    # T³ leading term: doubling T multiplies the count by 8 in the limit.
    assert 5.5 < counts[2] / counts[1] < 8.5 and counts[1] / counts[0] > 4.5
    assert counts[2] < 1.5 * 16 ** 3
    # The critical path is O(T): about 4-5 tasks per tile.
    assert 1.8 < paths[2] / paths[1] < 2.2 and paths[2] < 6 * 16


@pytest.mark.parametrize("method", METHODS)
def test_every_task_reads_at_most_three_tiles(method):
    eye = da.eye(40, chunks=5)
    for x in (bd.chol_rev(eye, eye, method=method, symmetric=True),
              bd.chol_fwd(eye, eye, method=method, lower=False)):
        dsk = dict(x.dask)
        layer = x.dask.layers[x.name]
        widest = max(len(get_dependencies(dsk, k)) for k in layer.keys())
        assert widest <= 3


# --------------------------------------------------------------------------
# Schedulers


def test_threaded_and_process_schedulers():
    L, Lb = case(40)
    expected = blockchol.chol_rev(L, Lb)
    lazy = bd.chol_rev(da.from_array(L, chunks=10), Lb, method="closed")
    assert rel_err(lazy.compute(scheduler="threads", num_workers=4), expected) < tolerance(L)
    lazy = bd.chol_rev(da.from_array(L, chunks=10), Lb, method="sweep")
    assert rel_err(lazy.compute(scheduler="processes", num_workers=2), expected) < tolerance(L)


def test_threaded_scheduler_from_several_threads():
    L, Lb = case(30)
    expected = blockchol.chol_rev(L, Lb)
    results = [None] * 4

    def run(i):
        results[i] = bd.chol_rev(da.from_array(L, chunks=7), Lb, method=METHODS[i % 2]).compute(
            scheduler="threads")

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        assert rel_err(r, expected) < tolerance(L)


def test_distributed_cluster_with_memory_limits_below_one_matrix():
    import distributed
    from distributed.diagnostics.plugin import WorkerPlugin

    n, tile = 240, 40
    nbytes = n * n * 8                                  # one N×N float64 matrix: 460.8 kB
    limit = int(0.8 * nbytes)

    class PeakMemory(WorkerPlugin):
        """Largest in-memory (not spilled) managed data seen on the worker."""
        def setup(self, worker):
            self.worker, worker.blockchol_peak = worker, 0

        def transition(self, key, start, finish, **kwargs):
            fast = self.worker.data.fast.total_weight if hasattr(self.worker.data, "fast") else 0
            self.worker.blockchol_peak = max(self.worker.blockchol_peak, fast)

    L, Lb = case(n)
    Kd = random_like((n, n), np.random.default_rng(5))
    # The memory manager's limits on process memory (spill/pause/terminate)
    # would act on this test process's RSS (in-process workers): off.  The
    # managed-memory target stays, so each worker keeps at most 60 % of its
    # limit in memory and spills the rest.
    config = {"distributed.worker.memory.target": 0.6,
              "distributed.worker.memory.spill": False,
              "distributed.worker.memory.pause": False,
              "distributed.worker.memory.terminate": False}
    with dask.config.set(config), distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, memory_limit=limit,
            dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        client.register_plugin(PeakMemory())
        # Inputs live on the cluster as tiles; nothing N×N passes through one worker.
        Ld, Bd, Kdd = (client.persist(da.from_array(a, chunks=tile)) for a in (L, Lb, Kd))
        for method in METHODS:
            G = bd.chol_rev(Ld, Bd, method=method, symmetric=True).compute()
            assert rel_err(G, blockchol.chol_rev(L, Lb, symmetric=True)) < tolerance(L)
        F = bd.chol_fwd(Ld, Kdd).compute()
        assert rel_err(F, blockchol.chol_fwd(L, Kd)) < tolerance(L)
        peaks = client.run(lambda dask_worker: dask_worker.blockchol_peak)
        sent = client.run(lambda dask_worker: dask_worker.transfer_outgoing_bytes_total)
    assert len(peaks) == 2
    for peak in peaks.values():
        assert 0 < peak <= 0.6 * limit + 3 * tile * tile * 8 < nbytes
    assert sum(sent.values()) > 0          # the work was shared: tiles moved between workers


# --------------------------------------------------------------------------
# The demo (python -m blockchol.demo --dask)


def test_demo_graph_matches_the_in_core_demo():
    from blockchol import demo
    from blockchol.demo import _dask as _dask_demo
    X, y, _, _ = _dask_demo.synthetic(90, 2, seed=3)
    theta = demo.start_point(X, y)
    f_core, g_core = demo.log_lik_and_grad(theta, X, y)
    # Two factorizations (dask's tiles, LAPACK) of the same covariance: the bound of
    # tolerance() with the covariance's condition number (κ ≈ 300 here).
    bar = gp_tolerance(theta, X)
    for method in METHODS:
        f, g = dask.compute(*_dask_demo.log_lik_and_grad_graph(theta, X, y, 30, method),
                            scheduler="sync")
        assert abs(f - f_core) < bar * abs(f_core)
        assert np.linalg.norm(g - g_core) < bar * np.linalg.norm(g_core)
    assert _dask_demo.tile_for(20000, 1000) == 1000 and _dask_demo.tile_for(1000, 300) == 250
    with pytest.raises(demo.DemoError, match="divisor"):
        _dask_demo.tile_for(10007, 1000)


def test_demo_command_line():
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-m", "blockchol.demo", "--dask", "--n", "240",
                        "--dims", "2"], capture_output=True, text=True, env=env, cwd=REPO,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    out = r.stdout
    assert "LocalCluster:" in out and "memory limit 0.00 GB each" in out   # 0.9 × 240² × 8 B
    assert "peak memory per worker" in out
    errors = [float(line.rsplit(None, 1)[1]) for line in out.splitlines()
              if line.strip().startswith("vs ")]
    # The check runs on all 240 points at the demo's start point (as in the test above).
    from blockchol import demo
    from blockchol.demo import _dask as _dask_demo
    X, y, _, _ = _dask_demo.synthetic(240, 2, seed=0)
    assert len(errors) == 2 and max(errors) < gp_tolerance(demo.start_point(X, y), X), out


# --------------------------------------------------------------------------
# The benchmark (python -m bench.dask_suite)


def test_bench_suite_rows(monkeypatch):
    import io
    from bench import dask_suite, harness
    monkeypatch.setattr(dask_suite, "TILES", {"quick": {300: (100,)}, "full": {300: (100,)}})
    b = harness.Bench(quick=True, stream=io.StringIO(), rounds=2)
    dask_suite.threads(b)
    assert {r["impl"] for r in b.records} == {"in-core", "tile 100"}
    assert {r["method"] for r in b.records} == {"sweep", "closed"}
    assert all(r["ok"] and r["min"] > 0 for r in b.records)
    m = dask_suite.model(cases=((100_000, 4000),), workers=(16,))
    assert m[0]["T"] == 25 and 0 < m[0]["efficiency"] <= 1
    assert "Performance model" in dask_suite.render_model(m)


@pytest.mark.parametrize("method", METHODS)
def test_the_performance_model_counts_the_built_graph(method):
    # bench.dask_suite.model's task count, product count and critical path (the
    # formulas of notes.md's performance model) against the graphs blockchol.dask
    # builds, T = 16: the formulas drop lower-order terms, within 5 % here.
    from bench import dask_suite
    T, b = 16, 3
    row = dask_suite.model(cases=((T * b, b),), workers=(1,), method=method)[0]
    for direction in ("rev", "fwd"):
        stats = dask_suite.graph_stats(T * b, b, "%s_%s" % (method, direction))
        assert stats["tiles"] == T
        if direction == "rev":      # the model is chol_rev's
            assert stats["tasks"] == pytest.approx(row["tasks"], rel=0.05)
            assert stats["critical_path"] == pytest.approx(row["critical_path_tasks"], rel=0.05)
        # products: 7T³/6 (closed) and T³/3 (sweep) in both directions; the forward
        # sweep's diagonal-tile updates add T²/2 (+7 % at T = 16).
        products = 7 * T ** 3 / 6 if method == "closed" else T ** 3 / 3 + (T * T / 2) * (
            direction == "fwd")
        assert stats["products"] == pytest.approx(products, rel=0.05)
        assert stats["span_s"] < stats["work_s"]
