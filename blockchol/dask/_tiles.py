"""Tile kernels for :mod:`blockchol.dask`: the body of every task in its graphs.

Each function takes a few tiles (ndarrays) and returns a new Fortran-ordered
tile; none modifies its arguments, so a scheduler may keep, copy, retry or
move any input.  Everything is in lower-factor terms (K = L Lᴴ); the graph
builder maps upper factors onto this by conjugate-transposing tiles in
:func:`prepare`.  Products and solves call the BLAS that scipy ships
through blockchol's ctypes bindings (:mod:`blockchol.core.blas`), which
release the GIL -- scipy.linalg.blas's f2py wrappers hold it, so on dask's
threaded scheduler they ran one at a time.  The diagonal tiles of the two
sweeps go through the core's single-matrix sweeps
(:func:`blockchol.core.one.derivative`), Φ and the Hermitian mirror are the
core's (:mod:`blockchol.core.triangles`).
This module needs only numpy and scipy.

Operand flags ``op``: 0 (``N``) the tile itself, 2 (``C``) its conjugate
transpose (the transpose for real dtypes).
"""

import numpy as np

from ..core.blas import routines
from ..core.one import derivative
from ..core.triangles import mirror_lower, phi_lower

N, C = 0, 2
_OP = {N: "N", C: "C"}


def _op(x, op, copy):
    """op(x) as a Fortran-ordered array (a new one if ``copy`` or ``op`` is C)."""
    if op == C:
        if x.dtype.kind != "c":
            return np.array(x.T, order="F")
        out = np.empty(x.shape[::-1], dtype=x.dtype, order="F")
        return np.conjugate(x.T, out=out)
    return np.array(x, order="F", copy=True) if copy else np.asfortranarray(x)


def _operand(x, dtype):
    """``(address, leading dimension)`` of a Fortran-ordered tile of ``dtype`` (copied if not)."""
    if x.dtype != dtype or not x.flags.f_contiguous or not x.flags.aligned:
        x = np.asfortranarray(x, dtype=dtype)
    return x, x.__array_interface__["data"][0], max(1, x.shape[0])


def _shape(x, op):
    return x.shape if op == N else x.shape[::-1]


# --------------------------------------------------------------------------
# Input tiles


def prepare(x, dtype, conj_t, kind, row0, col0, name, lower, diagonal):
    """An input tile in lower-factor form: dtype, Fortran order, checks.

    ``x`` is the stored tile; with ``conj_t`` (upper factors) it is the
    stored tile at the mirrored position and the logical tile is ``xᴴ``.
    ``diagonal``: whether it is a diagonal tile (I = J); not ``row0 == col0``,
    which also holds below an empty diagonal tile.  ``kind``:

    * ``"factor"``: a tile of L; on the diagonal its upper triangle is zeroed
      and its diagonal must be real, positive and finite
      (``numpy.linalg.LinAlgError`` naming the global index otherwise);
    * ``"lower"``: a tile of L̄ (or K̇ for the sweep), upper triangle of a
      diagonal tile zeroed;
    * ``"hermitian"``: a tile of K̇ for the closed form; a diagonal tile
      becomes the Hermitian matrix of its lower triangle (real diagonal).

    The read entries must be finite (``ValueError`` naming the tile).
    ``row0``, ``col0`` are the logical tile's global offsets, for messages.
    """
    a = np.array(x.T.conj() if conj_t else x, dtype=dtype, order="F")
    if diagonal:
        a = np.asfortranarray(np.tril(a))
    with np.errstate(over="ignore", invalid="ignore"):
        finite = np.isfinite(a.sum())
    if not finite and not np.isfinite(a).all():
        i, j = (int(v) for v in np.argwhere(~np.isfinite(a))[0])
        i, j = (j, i) if not lower else (i, j)
        r, c = (col0, row0) if not lower else (row0, col0)
        raise ValueError("%s contains NaN or infinity in its %s triangle (first at [%d, %d])"
                         % (name, "lower" if lower else "upper", r + i, c + j))
    if not diagonal:
        return a
    if kind == "factor":
        d = np.diagonal(a)
        bad = (~(d.real > 0)) | (~np.isfinite(d.real))
        if np.iscomplexobj(d):
            bad |= d.imag != 0
        if bad.any():
            i = int(np.argmax(bad))
            raise np.linalg.LinAlgError(
                "%s[%d, %d] = %s: the diagonal of a Cholesky factor must be real, positive "
                "and finite" % (name, row0 + i, row0 + i, x[i, i]))
    elif kind == "hermitian":
        mirror_lower(a)
    return a


# --------------------------------------------------------------------------
# Products and solves (every one returns a new tile)


def mac(c, c_op, alpha, a, a_op, b, b_op, tri=None):
    """op(c) + alpha op(a) op(b); ``c`` may be None (then just the product).

    ``tri``: None for a general product (gemm); ``"a"`` or ``"b"`` when that
    operand is a lower-triangular diagonal tile (its upper part is not
    read), multiplied by trmm.  BLAS is called through :mod:`blockchol.core.blas`
    (ctypes, which releases the GIL: the threaded scheduler runs tasks in
    parallel; scipy.linalg.blas's wrappers hold it).
    """
    dtype = a.dtype if c is None else c.dtype
    rt = routines(dtype)
    (m, k), (k2, n) = _shape(a, a_op), _shape(b, b_op)
    if k != k2 or (c is not None and _shape(c, c_op) != (m, n)):
        raise ValueError("internal error: tile shapes %s, %s, %s do not fit"
                         % (a.shape, b.shape, None if c is None else c.shape))
    if tri is None:
        a, pa, lda = _operand(a, dtype)
        b, pb, ldb = _operand(b, dtype)
        if c is None:
            out, beta = np.empty((m, n), dtype=dtype, order="F"), 0.0
        else:
            out, beta = _op(c, c_op, copy=True), 1.0
        if m and n:
            rt.gemm(_OP[a_op], _OP[b_op], m, n, k, alpha, pa, lda, pb, ldb, beta,
                    out.__array_interface__["data"][0], max(1, m))
        return out
    if tri == "a":                                     # alpha op(a) op(b), a triangular (m = k)
        t, t_op, out, side = a, a_op, _op(b, b_op, copy=True), "L"
    else:                                              # alpha op(a) op(b), b triangular (n = k)
        t, t_op, out, side = b, b_op, _op(a, a_op, copy=True), "R"
    out = np.asfortranarray(out, dtype=dtype)
    t, pt, ldt = _operand(t, dtype)
    if m and n:
        rt.trmm(side, "L", _OP[t_op], m, n, alpha, pt, ldt, out.__array_interface__["data"][0],
                max(1, m))
    if c is not None:
        out += _op(c, c_op, copy=False)
    return out


def solve(b, b_op, t, side, t_op):
    """op(t)⁻¹ op(b) (side 0) or op(b) op(t)⁻¹ (side 1), t a lower-triangular tile."""
    out = _op(b, b_op, copy=True)
    m, n = out.shape
    if t.shape != ((m, m) if side == 0 else (n, n)):
        raise ValueError("internal error: tile shapes %s, %s do not fit" % (t.shape, out.shape))
    t, pt, ldt = _operand(t, out.dtype)
    if m and n:
        routines(out.dtype).trsm("L" if side == 0 else "R", "L", _OP[t_op], m, n, 1.0, pt, ldt,
                                 out.__array_interface__["data"][0], max(1, m))
    return out


# --------------------------------------------------------------------------
# Elementwise tile maps: Φ and the Hermitian mirror of the core (.core.triangles)


def _copy(x):
    return np.array(x, order="F")


def phi(x):
    """Φ(x) on a diagonal tile: lower triangle, diagonal halved and made real."""
    a = _copy(x)
    phi_lower(a)
    return a


def phi_hermitian(x):
    """Φ(x) + Φ(x)ᴴ of a diagonal tile (M = P + Pᴴ's diagonal tile, from Lᴴ L̄)."""
    a = _copy(x)
    mirror_lower(a)
    return a


def hermitian_sum(g):
    """g + gᴴ for a lower-triangular diagonal tile g (the sweep's X_D = G_D + G_Dᴴ)."""
    a = _copy(g)
    mirror_lower(a, 1.0, 2.0)
    return a


def symmetric_lower(g, diagonal):
    """The symmetric convention's tile from G's: halved off the diagonal.

    For a diagonal tile, the Hermitian tile with S_ii = G_ii and
    S_ij = G_ij / 2 (i > j); otherwise G / 2.
    """
    if not diagonal:
        return np.asfortranarray(g * 0.5)
    a = _copy(g)
    mirror_lower(a, 0.5, 1.0)
    return a


def conj_transpose(x):
    return _op(x, C, copy=True)


def zeros(shape, dtype):
    return np.zeros(shape, dtype=dtype, order="F")


# --------------------------------------------------------------------------
# Diagonal tiles of the sweeps: the core's single-matrix sweep (.core.one)


def rev_kernel(d, d_bar):
    """G_D, the reverse sweep of one diagonal tile on its own (lower triangles read; G_D lower)."""
    return np.asfortranarray(derivative("rev", "sweep", d, d_bar))


def fwd_kernel(d, z):
    """Ḋ = D Φ(D⁻¹ Ż D⁻ᴴ) for one diagonal tile (Ż's lower triangle read)."""
    return np.asfortranarray(derivative("fwd", "sweep", d, z))
