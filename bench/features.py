"""Feature detection for blockchol's planned capabilities (batches, complex, forward mode).

Each probe returns None when the feature is there and a one-line reason
when it is not.  A probe only asks whether blockchol *accepts* the call:
whether the answer is right is for the benchmark's correctness check to
say (a wrong answer shows as WRONG in the tables, it is not hidden).
"""

import numpy as np

import blockchol

from .problems import make_problem

__all__ = ["batch_support", "complex_support", "fwd_support"]


def _refusal(call, what):
    try:
        call()
    except Exception as error:   # any refusal: ValueError, TypeError, NotImplementedError...
        return "%s: %s: %s" % (what, type(error).__name__, str(error).splitlines()[0])
    return None


def batch_support():
    """Does chol_rev take a (2, 4, 4) stack?"""
    p = make_problem(4, np.float64, batch=(2,))
    return _refusal(lambda: blockchol.chol_rev(p.L, p.L_bar),
                    "chol_rev does not take stacks")


def complex_support():
    """Does chol_rev take complex128 input?"""
    p = make_problem(4, np.complex128)
    return _refusal(lambda: blockchol.chol_rev(p.L, p.L_bar),
                    "chol_rev does not take complex input")


def fwd_support():
    """Is there a blockchol.chol_fwd that takes a 4 × 4 problem?"""
    if not hasattr(blockchol, "chol_fwd"):
        return "blockchol has no chol_fwd yet"
    p = make_problem(4, np.float64, tangent=True)
    return _refusal(lambda: blockchol.chol_fwd(p.L, p.K_dot), "chol_fwd fails")
