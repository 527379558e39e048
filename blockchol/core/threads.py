"""Threading policy: the one module that touches thread pools.

blockchol's parallelism is the BLAS's own, plus worker threads for stacks of
small matrices and for the memory-bound passes over whole matrices.  Three
rules, decided once per call by the plan (:mod:`.api`):

* The BLAS pools are left alone unless the caller gives ``threads``; then
  they are limited for the duration of the call (:func:`blas_limit`) and
  restored afterwards.
* A ``threads`` above the cores counts as the cores.
* Worker threads × BLAS threads never exceed the cores
  (:func:`split_threads`): with ``threads=None``, a BLAS pool of p threads
  leaves room for ``cores // p`` workers.

The pools of OpenBLAS are process-wide, while calls may come from several
Python threads.  :class:`_SharedLimit` lets calls that ask for the same
limit share it, makes a call asking for a different one wait, and has the
thread that set a limit restore it, through threadpoolctl's own context
protocol, so that threadpoolctl's notion of which thread controls OpenBLAS
is released again (a limiter that is not entered and exited in one thread
leaves the pools limited, and other threads' limits ignored, for good).
"""

import concurrent.futures
import contextlib
import os
import threading

from .thresholds import PARALLEL_N, STRIP

__all__ = ["CORES", "MAX_THREADS", "blas_limit", "blas_pool_size", "split_threads",
           "parallel_map", "strips"]

#: Cores this process may run on.
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)

#: Largest ``threads`` accepted; beyond it the value is a mistake, not a setting.
MAX_THREADS = 1 << 16

_controller = None
_controller_lock = threading.Lock()


def _blas_controller():
    """threadpoolctl's controller for the BLAS libraries, made once (it costs milliseconds)."""
    global _controller
    with _controller_lock:
        if _controller is None:
            from threadpoolctl import ThreadpoolController
            _controller = ThreadpoolController().select(user_api="blas")
        return _controller


def blas_pool_size():
    """The largest thread count among the BLAS pools, as they are now."""
    return max([lib.num_threads for lib in _blas_controller().lib_controllers] or [1])


def split_threads(threads, tasks, uses_blas=True):
    """``(workers, blas)`` for ``tasks`` independent pieces of work.

    ``workers`` threads each run pieces with at most ``blas`` BLAS threads
    (``None``: the pools as they are), so that workers × BLAS threads stay
    within the cores and within ``threads`` when it is given.  Work that
    calls no BLAS (``uses_blas=False``) may have a worker per core.
    """
    if threads is None:
        workers = max(1, min(tasks, CORES // (blas_pool_size() if uses_blas else 1)))
        return workers, None
    threads = min(threads, CORES)
    workers = max(1, min(tasks, threads))
    return workers, max(1, threads // workers)


class _SharedLimit:
    """A process-wide BLAS thread limit shared by the calls that ask for the same value.

    The first call to enter sets the limit (entering threadpoolctl's limiter
    in its own thread); calls asking for the same value join it; a call
    asking for another value waits.  When the setting call is done it stops
    new calls from joining, waits for the ones running, and restores the
    original sizes by exiting the limiter in the thread that entered it.
    """

    def __init__(self):
        self._cond = threading.Condition()
        self._active = 0          # calls running under the limit
        self._value = None        # the limit they share
        self._closing = False     # the setter is waiting to restore
        self._owner = threading.local()   # .held: this thread is inside a limited call

    @contextlib.contextmanager
    def __call__(self, threads):
        if threads is None or getattr(self._owner, "held", False):
            # No limit asked for, or nested inside this thread's own limited call.
            yield
            return
        limiter = None
        with self._cond:
            while self._active and (self._value != threads or self._closing):
                self._cond.wait()
            if not self._active:
                limiter = _blas_controller().limit(limits=threads)
                limiter.__enter__()
                self._value = threads
            self._active += 1
        self._owner.held = True
        try:
            yield
        finally:
            self._owner.held = False
            with self._cond:
                self._active -= 1
                if limiter is not None:
                    self._closing = True
                    while self._active:
                        self._cond.wait()
                    limiter.__exit__(None, None, None)
                    self._value, self._closing = None, False
                self._cond.notify_all()


#: ``with blas_limit(n):`` -- every BLAS uses at most n threads inside (None: unchanged).
blas_limit = _SharedLimit()

_pool = None
_pool_lock = threading.Lock()


def parallel_map(fn, items):
    """``[fn(x) for x in items]``, the items on worker threads (at most :data:`CORES` of them).

    One pool serves every call; its threads are capped at the cores, so no
    call can leave more threads behind than there are cores.
    """
    global _pool
    if len(items) <= 1:
        return [fn(x) for x in items]
    with _pool_lock:
        if _pool is None:
            _pool = concurrent.futures.ThreadPoolExecutor(max_workers=CORES,
                                                          thread_name_prefix="blockchol")
    return [f.result() for f in [_pool.submit(fn, x) for x in items]]


def strips(fn, n, workers):
    """``fn(i0, i1)`` for every row strip of an N-row matrix, on ``workers`` threads from PARALLEL_N.

    The memory-bound passes over a whole matrix work in strips of
    :data:`~.thresholds.STRIP` rows, so that temporaries stay at O(N · STRIP);
    numpy runs each strip on one core, so from :data:`~.thresholds.PARALLEL_N`
    the strips are dealt out to worker threads, in turn, so that each worker
    gets short and long rows of a triangle alike.
    """
    if n <= STRIP:
        fn(0, n)
        return
    spans = [(i0, min(i0 + STRIP, n)) for i0 in range(0, n, STRIP)]
    workers = min(workers, len(spans)) if n >= PARALLEL_N else 1
    if workers <= 1:
        for i0, i1 in spans:
            fn(i0, i1)
    else:
        parallel_map(lambda group: [fn(i0, i1) for i0, i1 in group],
                     [spans[w::workers] for w in range(workers)])
