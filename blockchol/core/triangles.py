"""Φ, the Hermitian mirror and the triangle copies, defined once for numpy arrays.

Everything that takes a triangle, halves a diagonal or mirrors one
triangle onto the other is here: on small matrices and stacks of them
(:func:`phi_lower`, :func:`mirror_lower`, one masked copy each), and on
whole large matrices in the caller's orientation (:func:`copy_triangle`,
:func:`phi`, :func:`hermitian_fill`), which work in row strips of the
lower-triangular view on the plan's worker threads (:func:`.threads.strips`).
Zeros are written by assignment, never by multiplying with a mask, so an
infinity in the discarded triangle cannot turn into NaN.

Masks are cached only up to :data:`CACHED_N`: the passes over large
matrices work in strips of at most that height, so larger masks are never
needed twice and would only hold memory.
"""

import functools

import numpy as np

from .threads import strips
from .thresholds import STRIP

__all__ = ["CACHED_N", "lower_mask", "strict_upper_mask", "herm", "diagonal", "mirror_lower", "phi_lower",
           "copy_triangle", "phi", "hermitian_fill", "check_finite_triangle", "where"]

#: Largest mask side kept in the cache: the strips' height.
CACHED_N = STRIP


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


# --------------------------------------------------------------------------
# Small matrices and stacks, lower form, in place


def diagonal(x):
    """A writeable view of the diagonal of ``x`` (square or a stack): cheap for contiguous arrays."""
    n = x.shape[-1]
    if x.flags.c_contiguous:
        return x.reshape(x.shape[:-2] + (n * n,))[..., ::n + 1]
    if x.ndim == 2 and x.flags.f_contiguous:
        return x.T.reshape(n * n)[::n + 1]
    return np.einsum("...ii->...i", x)


def mirror_lower(x, off=1.0, diag=1.0):
    """x ← the Hermitian matrix with off × x's strict lower triangle and diag × Re(diag x), in place.

    ``x`` is square or a stack of square matrices; its upper triangle is
    overwritten, never read.  With both scales 1 this is P + Pᴴ for
    P = Φ(x) (the diagonal of P + Pᴴ is that of x, made real); with ½, ½ it
    is the symmetric gradient S from X.  One masked copy (notes: Design).
    The scales are powers of two, so the diagonal, scaled with the rest and
    then by diag / off, is exactly diag × its entries.
    """
    if off != 1.0:
        x *= off                        # the upper triangle is overwritten next
    np.copyto(x, herm(x), where=strict_upper_mask(x.shape[-1]))
    if x.dtype.kind == "c" or diag != off:
        d = diagonal(x)
        d[...] = d.real * (diag / off)


def phi_lower(x):
    """x ← Φ(x) in place (square or a stack): the lower triangle, diagonal halved and real, zeros above."""
    np.copyto(x, _ZERO, where=strict_upper_mask(x.shape[-1]))
    d = diagonal(x)
    if x.dtype.kind == "c":
        d[...] = d.real * 0.5
    else:
        np.multiply(d, 0.5, out=d)


#: The zero that masked copies write: an array already, which numpy converts faster than a
#: Python scalar (a measurable part of a call on one tiny matrix); casting keeps it exact.
_ZERO = np.zeros((), np.int8)


# --------------------------------------------------------------------------
# Whole matrices in the caller's orientation, in strips


def _lower_view(a, lower):
    return a if lower else a.T


def copy_triangle(dst, src, lower, workers, zero_other=True):
    """dst ← the read triangle of src; exact zeros in the other with ``zero_other``.

    ``lower`` says which triangle holds the data.  ``dst`` may be ``src``
    (then only the zeros are written).
    """
    dv, sv = _lower_view(dst, lower), _lower_view(src, lower)
    same = np.may_share_memory(dst, src)

    def strip(i0, i1):
        mask = lower_mask(i1 - i0)
        d = dv[i0:i1, i0:i1]
        if not same:
            dv[i0:i1, :i0] = sv[i0:i1, :i0]
            np.copyto(d, sv[i0:i1, i0:i1], where=mask)
        if zero_other:
            np.copyto(d, 0, where=strict_upper_mask(i1 - i0))
            dv[i0:i1, i1:] = 0

    strips(strip, dv.shape[0], workers)


def phi(a, lower, workers):
    """a ← Φ(a): the data triangle with its diagonal halved (and made real), zeros elsewhere."""
    v = _lower_view(a, lower)

    def strip(i0, i1):
        phi_lower(v[i0:i1, i0:i1])
        v[i0:i1, i1:] = 0

    strips(strip, v.shape[0], workers)


def hermitian_fill(a, lower, workers, off_scale=1.0, diag_scale=1.0):
    """a ← the Hermitian matrix of the data triangle, as :func:`mirror_lower` on a whole matrix."""
    v = _lower_view(a, lower)

    def strip(i0, i1):
        below = v[i0:i1, :i0]
        if off_scale != 1.0:
            below *= off_scale
        v[:i0, i0:i1] = herm(below)
        mirror_lower(v[i0:i1, i0:i1], off_scale, diag_scale)

    strips(strip, v.shape[0], workers)


# --------------------------------------------------------------------------
# Checks


def where(name, batch_index):
    """``name`` with a stack's batch index, for error messages: ``L[2, 1]``."""
    return name + ("[%s]" % ", ".join(map(str, batch_index)) if batch_index else "")


def check_finite_triangle(a, name, lower, workers):
    """ValueError if the triangle that will be read holds NaN or inf (of any matrix in a stack).

    A sum is finite only if every term is, so one reduction per strip
    decides the common case without a boolean temporary; a non-finite sum
    (possibly a harmless overflow) is confirmed element by element.
    """
    v = a if lower else np.swapaxes(a, -1, -2)
    if v.ndim == 2 and v.shape[0] <= STRIP:       # small: a sum, else one elementwise test
        with np.errstate(over="ignore", invalid="ignore"):
            if np.isfinite(v.sum()):              # far cheaper than the elementwise test
                return
        if np.isfinite(v).all(where=lower_mask(v.shape[0])):
            return

    def strip(i0, i1):
        rect, diag = v[..., i0:i1, :i0], v[..., i0:i1, i0:i1]
        mask = lower_mask(i1 - i0)
        with np.errstate(over="ignore", invalid="ignore"):
            # The whole strip first: an unmasked sum is several times faster than a
            # masked one, and finite unless something (read or not) is not.
            if np.isfinite(rect.sum() + diag.sum()):
                return
            if np.isfinite(rect.sum() + diag.sum(where=mask)):
                return
        ok = (np.isfinite(rect).all(axis=(-2, -1))
              & np.isfinite(np.where(mask, diag, 0)).all(axis=(-2, -1)))
        if not ok.all():
            index = tuple(int(i) for i in np.argwhere(~ok)[0]) if ok.ndim else ()
            raise ValueError("%s contains NaN or infinity in its %s triangle "
                             "(pass check_finite=False to skip this check)"
                             % (where(name, index), "lower" if lower else "upper"))

    strips(strip, v.shape[-1], workers)
