"""Small numpy helpers on triangles: masks, conjugate transposes, real diagonals.

Masks are cached only up to :data:`CACHED_N` (the passes over large
matrices work in strips of at most that height, so larger masks are never
needed twice and would only hold memory).
"""

import functools

import numpy as np

__all__ = ["CACHED_N", "lower_mask", "strict_upper_mask", "herm", "real_diagonal"]

#: Largest mask side kept in the cache.
CACHED_N = 256


def lower_mask(n):
    """Read-only boolean mask of the lower triangle of an n×n matrix, diagonal included."""
    return _lower_mask(n) if n <= CACHED_N else _make_lower_mask(n)


def _make_lower_mask(n):
    mask = np.tri(n, dtype=bool)
    mask.flags.writeable = False
    return mask


_lower_mask = functools.lru_cache(maxsize=CACHED_N)(_make_lower_mask)


def strict_upper_mask(n):
    """Read-only boolean mask of the strict upper triangle of an n×n matrix (~lower_mask(n))."""
    return _strict_upper_mask(n) if n <= CACHED_N else _make_strict_upper_mask(n)


def _make_strict_upper_mask(n):
    mask = ~np.tri(n, dtype=bool)
    mask.flags.writeable = False
    return mask


_strict_upper_mask = functools.lru_cache(maxsize=CACHED_N)(_make_strict_upper_mask)


def herm(a):
    """The conjugate transpose of ``a``, or of each matrix of a stack (a view for real data)."""
    t = a.swapaxes(-1, -2)                      # the method: no dispatch through numpy's wrappers
    return t.conj() if a.dtype.kind == "c" else t


def real_diagonal(a):
    """Drop the imaginary part of the diagonal of ``a`` (2-D or a stack), in place.

    Hermitian results have a real diagonal in exact arithmetic; products
    leave ~eps of imaginary part, which would make them not exactly Hermitian.
    """
    if np.iscomplexobj(a):
        n = a.shape[-1]
        a.imag[..., np.arange(n), np.arange(n)] = 0
