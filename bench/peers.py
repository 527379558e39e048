"""Optional peer libraries (GPy, torch, jax): import on demand, note when missing.

A peer that cannot be imported is skipped with a one-line note; nothing
else in the harness depends on it.  Tests simulate a missing peer by
monkeypatching :func:`_import` (and calling :func:`forget`).

Thread settings follow the harness's: torch through ``torch.set_num_threads``;
GPy's OpenMP loop through threadpoolctl's OpenMP limit (set by the caller);
jax only partly, see :func:`configure_jax_threads`.
"""

import importlib
import os
import sys

__all__ = ["PEERS", "load", "forget", "set_thread_count", "configure_jax_threads"]

PEERS = ("GPy", "torch", "jax")

_loaded = {}            # peer name -> (handle or None, reason or None)
_thread_count = None    # the harness's thread setting, applied to torch on load


def _import(module_name):
    """importlib.import_module; the seam tests replace to simulate a missing peer."""
    return importlib.import_module(module_name)


def forget():
    """Drop the cached import results (so that a monkeypatched _import takes effect)."""
    _loaded.clear()


def set_thread_count(threads):
    """Remember the thread setting and apply it to the peers already loaded."""
    global _thread_count
    _thread_count = threads
    torch, _ = _loaded.get("torch", (None, None))
    if torch is not None and threads:
        torch.set_num_threads(threads)


def configure_jax_threads(threads):
    """Best effort at making jax follow the thread setting; returns a note saying what holds.

    jax's LAPACK calls (the potrf of the forward pass, for instance) are
    scipy's, so they follow the BLAS limit set with threadpoolctl.  Its own
    ops (the matrix products and triangular solves of the vjp) run on XLA's
    Eigen pool, which takes no size: the one documented switch,
    ``--xla_cpu_multi_thread_eigen=false``, makes it single-threaded and only
    works if set in XLA_FLAGS before jax starts.  So a 1-thread run sets it;
    other thread counts leave jax's pool at one thread per core.
    """
    if threads != 1:
        return ("jax: XLA's own thread pool (matrix products, triangular solves) uses all "
                "cores; only its LAPACK calls, scipy's OpenBLAS, follow the %s-thread limit"
                % threads)
    if "jax" in sys.modules:
        return "jax: imported before the thread setting could be applied; it uses its own pool"
    flag = "--xla_cpu_multi_thread_eigen=false"
    flags = os.environ.get("XLA_FLAGS", "")
    if flag not in flags:
        os.environ["XLA_FLAGS"] = (flags + " " + flag).strip()
    return "jax: single-threaded through XLA_FLAGS=%s" % flag


def load(name):
    """``(handle, None)`` for an importable peer, ``(None, reason)`` otherwise.

    handle: the GPy ``backprop_gradient`` function, the ``torch`` module, or
    the pair ``(jax, jax.numpy)`` with 64-bit types enabled.
    """
    if name not in _loaded:
        try:
            _loaded[name] = (_LOADERS[name](), None)
        except Exception as error:   # ImportError, or a broken install failing on import
            reason = "%s: %s" % (type(error).__name__, str(error).splitlines()[0] if str(error) else "")
            _loaded[name] = (None, "not available (%s)" % reason.rstrip(": "))
    return _loaded[name]


def _load_gpy():
    choleskies = _import("GPy.util.choleskies")
    function = choleskies.backprop_gradient
    if not type(function).__name__.startswith("cython"):
        raise ImportError("GPy's compiled choleskies_cython is missing; only its pure-Python "
                          "fallback is installed")
    return function


def _load_torch():
    torch = _import("torch")
    if _thread_count:
        torch.set_num_threads(_thread_count)
    return torch


def _load_jax():
    jax = _import("jax")
    # Double precision is off by default in jax; the float64 rows need it.
    jax.config.update("jax_enable_x64", True)
    return jax, _import("jax.numpy")


_LOADERS = {"GPy": _load_gpy, "torch": _load_torch, "jax": _load_jax}
