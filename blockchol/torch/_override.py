"""Stand-ins for torch's functions that dispatch as torch's own do.

A :class:`TorchFunction` is one of torch's functions with blockchol's
implementation where that implementation serves the call:

* a call the implementation does not serve (it returns ``NotImplemented``,
  or does not take the arguments) goes to torch's function exactly as the
  caller made it: torch's results, torch's errors, and torch's
  ``__torch_function__`` dispatch, which hands objects such as
  linear_operator's LinearOperators torch's own function object and the
  caller's own arguments (no ``out=None`` added);
* it compares and hashes equal to torch's function, so a table keyed by
  one finds the other.  linear_operator builds such a table at import from
  ``torch.linalg.cholesky``: imported while ``accelerate()`` is active, it
  records the stand-in, and torch's own function must still find the entry
  (and the stand-in torch's) after ``accelerate()`` exits.
"""

import functools

__all__ = ["TorchFunction"]


class TorchFunction:
    """torch's function ``original``, computed by ``impl`` where ``impl`` serves the call.

    ``impl`` has torch's signature and returns ``NotImplemented`` for the calls
    it leaves to torch.  Name, docstring and signature are ``impl``'s.
    """

    def __init__(self, impl, original):
        functools.update_wrapper(self, impl)
        self._blockchol_original = original

    def __call__(self, *args, **kwargs):
        try:
            result = self.__wrapped__(*args, **kwargs)
        except TypeError as error:
            if error.__traceback__.tb_next is not None:
                raise                    # raised inside impl, not by binding its arguments
            result = NotImplemented      # arguments impl does not take: torch's own answer
        if result is NotImplemented:       # (no **{}: torch would hand kwargs={} on, not None)
            original = self._blockchol_original
            return original(*args, **kwargs) if kwargs else original(*args)
        return result

    def __eq__(self, other):
        if isinstance(other, TorchFunction):
            other = other._blockchol_original
        return other is self._blockchol_original

    def __hash__(self):
        return hash(self._blockchol_original)

    def __repr__(self):
        return "<blockchol's %s.%s (torch's %s)>" % (self.__module__, self.__qualname__,
                                                    self._blockchol_original.__name__)

    def __reduce__(self):
        return self.__qualname__         # pickled by reference, as a function is
