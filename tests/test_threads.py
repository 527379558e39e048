"""Threading policy: BLAS limits under concurrency, worker threads, what a call leaves behind.

The BLAS pools are process-wide; these tests read them through threadpoolctl
from inside calls (a spy on an internal step) and after them.

Values: thread counts change how work is split and BLAS's summation order,
never the arithmetic's accuracy, so results under any threading agree with
each other and with the reference to ``agree(L)`` = 2 c_n(N) eps κ₂(L)²
(tests/helpers.py, ``tol``); a lost or doubled chunk, or a race, is O(1).
"""

import gc
import threading
import tracemalloc

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

import blockchol
from blockchol.core import closed as _closed, stacks as _stacks, threads as _threads
from blockchol import reference as ref
from blockchol.core.thresholds import PARALLEL_N
from helpers import c_n, condition, fro_err, random_factor, random_like, tol, with_garbage


def agree(L):
    """The bar for two float64 computations of one derivative at the factor(s) L."""
    return tol(np.float64, condition(L), 2 * c_n(np.shape(L)[-1]))


def pools():
    return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]


def rev_case(n, seed=0, batch=()):
    rng = np.random.default_rng(seed)
    L = np.empty(batch + (n, n))
    for idx in np.ndindex(batch):
        L[idx] = random_factor(n, rng)[1]
    return L, random_like(batch + (n, n), rng)


@pytest.fixture
def spy(monkeypatch):
    """Records the BLAS pool sizes seen inside every call of the closed form's solves and of stacked chunks."""
    seen = []
    real_solves, real_chunk = _closed.Blocked.solve, _stacks._run_chunk

    def solves(*args, **kwargs):
        seen.append(("one", threading.current_thread().name, tuple(pools())))
        return real_solves(*args, **kwargs)

    def chunk(*args, **kwargs):
        seen.append(("chunk", threading.current_thread().name, tuple(pools())))
        return real_chunk(*args, **kwargs)

    monkeypatch.setattr(_closed.Blocked, "solve", solves)
    monkeypatch.setattr(_stacks, "_run_chunk", chunk)
    return seen


def test_threads_limits_the_pools_during_the_call_and_restores_them(spy):
    before = pools()
    L, Lb = rev_case(80, seed=1)
    blockchol.chol_rev(L, Lb, threads=1)
    assert spy and all(set(sizes) == {1} for _, _, sizes in spy)
    assert pools() == before


def test_threads_none_leaves_the_pools_alone(spy):
    # Also for stacks: the worker count adapts to the pools instead of changing them.
    before = pools()
    L, Lb = rev_case(8, seed=2, batch=(3000,))
    blockchol.chol_rev(L, Lb)
    blockchol.chol_rev(L[0], Lb[0])
    assert spy and all(list(sizes) == before for _, _, sizes in spy)


def test_workers_times_blas_threads_never_exceed_the_cores(spy):
    L, Lb = rev_case(32, seed=3, batch=(1500,))         # per-matrix BLAS solves
    for outer in (1, _threads.CORES):
        with threadpool_limits(outer, user_api="blas"):
            spy.clear()
            blockchol.chol_rev(L, Lb)
            workers = {name for _, name, _ in spy}
            assert len(workers) * outer <= max(_threads.CORES, outer)
            if outer == 1 and _threads.CORES > 1:
                assert len(workers) > 1        # the free cores are used
    for threads in (1, 2, 3, 1000):
        spy.clear()
        blockchol.chol_rev(L, Lb, threads=threads)
        workers = {name for _, name, _ in spy}
        blas = max(max(sizes) for _, _, sizes in spy)
        assert len(workers) <= min(threads, _threads.CORES)
        assert len(workers) * blas <= min(threads, _threads.CORES) or blas == 1


def test_stacks_that_call_no_blas_use_every_core(spy, monkeypatch):
    # The tiniest matrices' reverse closed form (batch-last) calls no BLAS, so the
    # pools' size does not limit its workers; nothing of the BLAS paths runs.
    def no_blas(*args, **kwargs):
        raise AssertionError("a BLAS path ran")
    L, Lb = rev_case(8, seed=4, batch=(10000,))
    expected = blockchol.chol_rev(L[7], Lb[7])          # a single matrix: through BLAS
    monkeypatch.setattr(_stacks, "solve", no_blas)
    monkeypatch.setattr(_stacks, "_PerMatrix", no_blas)
    monkeypatch.setattr(_stacks, "_OneMatrix", no_blas)
    with threadpool_limits(_threads.CORES, user_api="blas"):
        g = blockchol.chol_rev(L, Lb)
    assert len({name for _, name, _ in spy}) == _threads.CORES
    assert fro_err(g[7], expected) <= agree(L[7])


def test_split_threads_rule():
    for threads in (1, 2, 3, 7, 64):
        for tasks in (1, 2, 5, 100):
            workers, blas = _threads.split_threads(threads, tasks)
            assert 1 <= workers <= min(threads, tasks, _threads.CORES)
            assert workers * blas <= min(threads, _threads.CORES)
    with threadpool_limits(1, user_api="blas"):
        assert _threads.split_threads(None, 100) == (_threads.CORES, None)
    with threadpool_limits(_threads.CORES, user_api="blas"):
        assert _threads.split_threads(None, 100) == (1, None)
        assert _threads.split_threads(None, 100, uses_blas=False) == (_threads.CORES, None)


def test_concurrent_limits_restore_the_pools_and_leave_others_in_control():
    # The stress run of issue 11: a threads=1 call in one thread while another calls
    # with a stack; afterwards the pools are as before, and a limit set by another
    # library, or by a later call from another thread, takes effect.
    before = pools()
    L1, Lb1 = rev_case(400, seed=4)
    Ls, Lbs = rev_case(16, seed=5, batch=(2000,))
    errors = []

    def run(fn):
        try:
            for _ in range(3):
                fn()
        except Exception as exc:      # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(lambda: blockchol.chol_rev(L1, Lb1, threads=1),)),
               threading.Thread(target=run, args=(lambda: blockchol.chol_rev(Ls, Lbs, threads=2),)),
               threading.Thread(target=run, args=(lambda: blockchol.chol_rev(Ls, Lbs),))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert pools() == before

    inside = []

    def other_library():
        with threadpool_limits(1, user_api="blas"):
            inside.append(pools())

    t = threading.Thread(target=other_library)
    t.start()
    t.join()
    assert inside and set(inside[0]) == {1}
    assert pools() == before


def test_a_limit_from_a_worker_thread_after_a_limited_call(spy):
    L, Lb = rev_case(80, seed=6)
    blockchol.chol_rev(L, Lb, threads=1)
    spy.clear()
    t = threading.Thread(target=lambda: blockchol.chol_rev(L, Lb, threads=1))
    t.start()
    t.join()
    assert spy and set(spy[0][2]) == {1}


def test_no_threads_left_behind():
    L, Lb = rev_case(8, seed=7, batch=(2000,))
    blockchol.chol_rev(L, Lb, threads=2)          # the pool exists from here
    baseline = threading.active_count()
    for threads in (3, 1000, 2, 17):
        blockchol.chol_rev(L, Lb, threads=threads)
    assert threading.active_count() <= max(baseline, 1 + _threads.CORES)


def test_no_large_memory_kept_between_calls():
    # Masks are cached only up to 256×256; nothing N×N survives a call.  Above PARALLEL_N,
    # so that the passes over the matrix run on worker threads too.
    n = PARALLEL_N + 76
    L, Lb = rev_case(n, seed=8)
    blockchol.chol_rev(L, Lb, block_size=n, method="sweep")     # warm-up: imports, pools
    gc.collect()
    tracemalloc.start()
    try:
        for method in ("sweep", "closed"):
            out = blockchol.chol_rev(L, Lb, block_size=n, method=method)
            del out
        gc.collect()
        kept, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert kept < 0.05 * n * n * 8, kept


def test_thread_counts_give_the_same_result():
    before = pools()
    L, Lb = rev_case(300, seed=20)
    for method in ("closed", "sweep"):
        results = [blockchol.chol_rev(L, Lb, threads=t, block_size=64, method=method)
                   for t in (1, 2, 4)]
        for r in results[1:]:
            assert fro_err(r, results[0]) <= agree(L)
    assert pools() == before


def test_concurrent_calls_are_safe():
    cases = [rev_case(n, seed=n) for n in (60, 150, 257, 90)]
    expected = [ref.closed_rev(L, Lb) for L, Lb in cases]
    bars = [agree(L) for L, _ in cases]
    errors = []

    def work(i):
        try:
            for rep in range(5):
                L, Lb = cases[i]
                threads = (None, 1, 2)[(i + rep) % 3]
                method = ("closed", "sweep")[rep % 2]
                got = blockchol.chol_rev(L, Lb, threads=threads, block_size=32, method=method)
                if not fro_err(got, expected[i]) <= bars[i]:
                    errors.append((i, rep, fro_err(got, expected[i])))
        except Exception as exc:  # surfaced below
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(len(cases))]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert errors == []


def test_large_matrix_passes_on_worker_threads():
    # From N = PARALLEL_N the checks and passes run on worker threads: same results,
    # same errors, unread triangle still ignored.
    n = PARALLEL_N + 77
    L, Lb = rev_case(n, seed=24)
    Lg, Lbg = with_garbage(L, True), with_garbage(Lb, True)
    bar = agree(L)
    for method in ("closed", "sweep"):
        serial = blockchol.chol_rev(Lg, Lbg, threads=1, symmetric=True, method=method)
        for t in (2, 3):
            got = blockchol.chol_rev(Lg, Lbg, threads=t, symmetric=True, method=method)
            assert fro_err(got, serial) <= bar
        assert fro_err(serial, blockchol.chol_rev(L, Lb, symmetric=True)) <= bar
    Lbg[n - 5, 700] = np.inf
    with pytest.raises(ValueError, match="L_bar contains NaN or infinity"):
        blockchol.chol_rev(Lg, Lbg, threads=2)


def test_the_limit_is_restored_by_the_thread_that_set_it(monkeypatch):
    # A thread sets threads=1, a second joins the same limit and outlives it.  The
    # limit must still be restored (threadpoolctl lets only the thread that set a
    # limit change the pools again, so a restore from the second would be ignored).
    before = pools()
    setter_in, joiner_in, release = threading.Event(), threading.Event(), threading.Event()
    real = _closed.Blocked.adjoint_product
    inside = []

    def solves(*args, **kwargs):
        inside.append(set(pools()))
        if threading.current_thread().name == "setter":
            setter_in.set()
            joiner_in.wait(10)
        elif threading.current_thread().name == "joiner":
            joiner_in.set()
            release.wait(10)
        return real(*args, **kwargs)

    monkeypatch.setattr(_closed.Blocked, "adjoint_product", solves)
    L, Lb = rev_case(80, seed=9)
    returned, finish = threading.Event(), threading.Event()

    def setter_work():          # a long-lived thread, like a main thread: alive after its call
        blockchol.chol_rev(L, Lb, threads=1)
        returned.set()
        finish.wait(10)

    setter = threading.Thread(target=setter_work, name="setter")
    joiner = threading.Thread(target=lambda: blockchol.chol_rev(L, Lb, threads=1), name="joiner")
    setter.start()
    assert setter_in.wait(10)
    joiner.start()
    assert joiner_in.wait(10)
    returned.wait(0.3)          # the setter's own work is done
    release.set()
    joiner.join()
    assert returned.wait(10)
    try:
        assert inside == [{1}, {1}]       # the limit held for both calls
        assert pools() == before
    finally:
        finish.set()
        setter.join()
