"""Threading policy: how many threads the BLAS may use during one call.

This is the only module that touches thread pools.  The parallelism of
blockchol is the BLAS's own; ``threads=n`` limits it for one call through
threadpoolctl and restores it afterwards.  numpy and scipy ship separate
OpenBLAS copies (numpy's serves numpy's own products, scipy's serves the
sweep), so the limit is applied to every BLAS that threadpoolctl finds.

Thread-pool sizes are process-wide, while calls may come from several Python
threads at once.  Calls asking for the same limit share it; a call asking
for a different one waits until those have finished, so no call ever runs
under a limit it did not ask for, and the original sizes come back when the
last limited call leaves.  Calls with ``threads=None`` take the pools as
they find them.

Stacks of small matrices are cut into chunks that run on a reused pool of
worker threads, as many as the thread setting (or, with ``threads=None``,
the size of the BLAS pools), each worker with one BLAS thread.
"""

import concurrent.futures
import contextlib
import threading

__all__ = ["blas_threads", "current_blas_threads",
           "batch_worker_count", "parallel_map"]

_cond = threading.Condition()
_active = 0          # limited calls now running
_current = None      # the limit they share
_limiter = None      # threadpoolctl's handle for restoring the original sizes
_controller = None
_owner = threading.local()   # .depth: 1 while this thread holds a limit
_pools = {}
_pools_lock = threading.Lock()


def _get_controller():
    global _controller
    if _controller is None:
        from threadpoolctl import ThreadpoolController
        _controller = ThreadpoolController()
    return _controller


def blas_threads(threads):
    """Context in which every BLAS uses at most ``threads`` threads (None: unchanged).

    A thread that already holds a limit keeps it for nested calls, so
    nesting never waits on itself.
    """
    if threads is None or getattr(_owner, "depth", 0):
        return contextlib.nullcontext()
    return _limited(threads)


def current_blas_threads():
    """The largest thread count among the BLAS pools, as they are now."""
    with _cond:
        libs = _get_controller().select(user_api="blas").lib_controllers
    return max([lib.num_threads for lib in libs] or [1])


def batch_worker_count(threads, count):
    """How many worker threads share ``count`` chunks of work: the thread setting, at most."""
    workers = threads if threads is not None else current_blas_threads()
    return max(1, min(workers, count))


def parallel_map(fn, items):
    """``[fn(x) for x in items]`` on a pool of ``len(items)`` threads (reused across calls)."""
    size = len(items)
    with _pools_lock:
        pool = _pools.get(size)
        if pool is None:
            pool = _pools[size] = concurrent.futures.ThreadPoolExecutor(
                max_workers=size, thread_name_prefix="blockchol")
    return [f.result() for f in [pool.submit(fn, x) for x in items]]


@contextlib.contextmanager
def _limited(threads):
    global _active, _current, _limiter
    with _cond:
        while _active and _current != threads:
            _cond.wait()
        if not _active:
            _limiter = _get_controller().limit(limits=threads, user_api="blas")
            _current = threads
        _active += 1
    _owner.depth = 1
    try:
        yield
    finally:
        _owner.depth = 0
        with _cond:
            _active -= 1
            if not _active:
                _limiter.restore_original_limits()
                _limiter = _current = None
                _cond.notify_all()
