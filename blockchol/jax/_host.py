"""What the host callbacks run: blockchol.chol_fwd and chol_rev on numpy arrays.

Never raises for bad operands: a matrix of the stack whose factor
diagonal is not real, positive and finite (jax's potrf returns a NaN factor
for input that is not positive definite) is not handed to blockchol and
comes back as NaN, and NaN or infinite operands give non-finite results
without numpy's floating-point warnings (blockchol's own overflow warning
for a tiny pivot still comes).  A result that is not finite is replaced, on the jax side,
by jax's own rule (``_primitives.guarded``), so only its finiteness counts
here.  blockchol's functions are looked up at each call, so that a
replacement (the tests' call counter, the bench's method switch) applies.
"""

import numpy as np

import blockchol as _blockchol

__all__ = ["fwd", "rev"]


def _split_bad(L):
    """``(L, bad)``: L with each bad factor replaced by I (copied only then), bad a mask or None."""
    d = np.diagonal(L, axis1=-2, axis2=-1)
    good = np.isfinite(d) & (d.real > 0)
    if np.iscomplexobj(d):
        good &= d.imag == 0
    good = good.all(axis=-1)
    if good.all():
        return L, None
    L = np.array(L)
    bad = ~good
    L[bad] = np.eye(L.shape[-1], dtype=L.dtype)
    return L, bad


def fwd(L, X):
    """L̇ = chol_fwd(L, X) for a stack (or one matrix), lower triangles read."""
    L, bad = _split_bad(np.asarray(L))
    with np.errstate(all="ignore"):
        out = _blockchol.chol_fwd(L, np.asarray(X), check_finite=False)
    if bad is not None:
        out[bad] = np.nan
    return out


def rev(L, C):
    """The jax cotangent of K: conj(chol_rev(L, conj(C))), lower triangular (Smith's G)."""
    L, bad = _split_bad(np.asarray(L))
    C = np.asarray(C)
    with np.errstate(all="ignore"):
        if np.iscomplexobj(C):
            out = _blockchol.chol_rev(L, np.conj(C), check_finite=False, overwrite_l_bar=True)
            np.conjugate(out, out=out)
        else:
            out = _blockchol.chol_rev(L, C, check_finite=False)
    if bad is not None:
        out[bad] = np.nan
    return out
