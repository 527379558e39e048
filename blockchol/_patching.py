"""The switch behind ``accelerate()`` in the framework adapters.

:class:`Patches` installs replacement attributes into other modules while at
least one activation is open and restores the originals when the last one
closes.  The count is process-wide and lock-protected, so activations nest
and may overlap across threads; restoring also happens when the block
raises.  It imports no framework: each adapter passes its own list.
"""

import contextlib
import threading

__all__ = ["Patches"]


class Patches:
    """A lock-protected count of activations of one set of patches.

    ``patches`` is a callable returning ``(module, name, replacement)``
    triples, called at the first activation (so that modules may be
    imported late).
    """

    def __init__(self, patches):
        self._patches = patches
        self._lock = threading.Lock()
        self._depth = 0
        self._saved = []

    def activation(self):
        """A context manager and decorator (``contextlib.ContextDecorator``) for one activation."""
        return _Activation(self)

    def _enter(self):
        with self._lock:
            if self._depth == 0:
                patches = self._patches()
                self._saved = [(module, name, getattr(module, name)) for module, name, _ in patches]
                for module, name, replacement in patches:
                    setattr(module, name, replacement)
            self._depth += 1

    def _exit(self):
        with self._lock:
            self._depth -= 1
            if self._depth == 0:
                for module, name, original in self._saved:
                    setattr(module, name, original)
                self._saved = []


class _Activation(contextlib.ContextDecorator):
    def __init__(self, patches):
        self._patches = patches

    def __enter__(self):
        self._patches._enter()
        return self

    def __exit__(self, *exc_info):
        self._patches._exit()
        return False
