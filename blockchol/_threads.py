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
"""

import contextlib
import operator
import threading

__all__ = ["blas_threads", "check_threads"]

_cond = threading.Condition()
_active = 0          # limited calls now running
_current = None      # the limit they share
_limiter = None      # threadpoolctl's handle for restoring the original sizes
_controller = None


def check_threads(threads):
    """Validate the ``threads`` argument; returns it as an int or None."""
    if threads is None:
        return None
    try:
        threads = operator.index(threads)
    except TypeError:
        raise TypeError("threads must be None or an integer, got %r" % (threads,)) from None
    if threads < 1:
        raise ValueError("threads must be at least 1, got %d" % threads)
    return threads


def _get_controller():
    global _controller
    if _controller is None:
        from threadpoolctl import ThreadpoolController
        _controller = ThreadpoolController()
    return _controller


def blas_threads(threads):
    """Context in which every BLAS uses at most ``threads`` threads (None: unchanged)."""
    return contextlib.nullcontext() if threads is None else _limited(threads)


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
    try:
        yield
    finally:
        with _cond:
            _active -= 1
            if not _active:
                _limiter.restore_original_limits()
                _limiter = _current = None
                _cond.notify_all()
