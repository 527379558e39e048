"""Memory-bound passes over whole matrices: copying a triangle, Φ, Hermitian fills.

Each pass works on a 2-D array in the caller's orientation: ``lower`` says
which triangle holds the data (the triangle that is read).  The work goes
in row strips of :data:`STRIP` rows of the lower-triangular view, so
temporaries stay at O(N · STRIP); numpy runs each strip on one core, so
from :data:`PARALLEL_N` the strips are dealt out to worker threads (left
serial, these passes capped the 1 → 2 thread speed-up of the sweep at
N = 4000 at 1.65-1.71×; notes.md).  Zeros are written by assignment, never
by multiplying with a mask, so an infinity in the discarded triangle cannot
turn into NaN.
"""

import numpy as np

from ._threads import parallel_map
from ._triangles import herm, lower_mask, mirror_lower, phi_lower, strict_upper_mask

__all__ = ["STRIP", "PARALLEL_N", "copy_triangle", "phi", "hermitian_fill", "strips"]

#: Rows per strip.
STRIP = 256
#: From this N the strips run on the plan's worker threads.
PARALLEL_N = 1024


def strips(fn, n, workers):
    """``fn(i0, i1)`` for every row strip of an N-row matrix, on ``workers`` threads from PARALLEL_N.

    Strips are dealt out in turn, so each worker gets short and long rows
    of the triangle alike.
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


def _lower_view(a, lower):
    return a if lower else a.T


def copy_triangle(dst, src, lower, workers, zero_other=True):
    """dst ← the read triangle of src; exact zeros in the other with ``zero_other``.

    ``dst`` may be ``src`` (then only the zeros are written).
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
    """a ← the Hermitian matrix with lower triangle ``off_scale`` × the data's, diagonal ``diag_scale`` × its real part.

    With both scales 1 this is P + Pᴴ from the triangle of P's source
    (Lᴴ L̄ below the diagonal, whose real diagonal is that of P + Pᴴ); with
    ½, ½ it is the symmetric gradient S from X.
    """
    v = _lower_view(a, lower)

    def strip(i0, i1):
        below = v[i0:i1, :i0]
        if off_scale != 1.0:
            below *= off_scale
        v[:i0, i0:i1] = herm(below)
        mirror_lower(v[i0:i1, i0:i1], off_scale, diag_scale)

    strips(strip, v.shape[0], workers)
