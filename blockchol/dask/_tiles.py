"""Tile kernels for :mod:`blockchol.dask`: the body of every task in its graphs.

Each function takes a few tiles (ndarrays) and returns a new Fortran-ordered
tile; none modifies its arguments, so a scheduler may keep, copy, retry or
move any input.  Everything is in lower-factor terms (K = L Lᴴ); the graph
builder maps upper factors onto this by conjugate-transposing tiles in
:func:`prepare`.  Products and solves call the BLAS that scipy ships
through blockchol's ctypes bindings (:mod:`._blas`), which release the GIL
-- scipy.linalg.blas's f2py wrappers hold it, so on dask's threaded
scheduler they ran one at a time.  The diagonal tiles of the two sweeps go
through the in-core sweeps (:func:`blockchol.chol_rev` and
:func:`blockchol.chol_fwd` with ``method="sweep"``; their unblocked kernels
for small tiles).
This module needs only numpy and scipy.

Operand flags ``op``: 0 (``N``) the tile itself, 2 (``C``) its conjugate
transpose (the transpose for real dtypes).
"""

import numpy as np

from .. import _kernel, _small
from .. import chol_fwd as _chol_fwd, chol_rev as _chol_rev
from .._blas import routines
from .._triangles import phi_lower

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
        low = np.tril(a, -1)
        h = low + low.T.conj()
        np.fill_diagonal(h, np.diagonal(a).real)
        a = np.asfortranarray(h)
    return a


# --------------------------------------------------------------------------
# Products and solves (every one returns a new tile)


def mac(c, c_op, alpha, a, a_op, b, b_op, tri=None):
    """op(c) + alpha op(a) op(b); ``c`` may be None (then just the product).

    ``tri``: None for a general product (gemm); ``"a"`` or ``"b"`` when that
    operand is a lower-triangular diagonal tile (its upper part is not
    read), multiplied by trmm.  BLAS is called through :mod:`._blas`
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
# Elementwise tile maps


def phi(x):
    """Φ(x) on a diagonal tile: lower triangle, diagonal halved and made real."""
    a = np.asfortranarray(np.tril(x))
    d = np.diagonal(a).real * 0.5
    np.fill_diagonal(a, d)
    return a


def phi_hermitian(x):
    """Φ(x) + Φ(x)ᴴ of a diagonal tile (M = P + Pᴴ's diagonal tile, from Lᴴ L̄)."""
    p = phi(x)
    return np.asfortranarray(p + p.T.conj())


def hermitian_sum(g):
    """g + gᴴ (the sweep's X_D = G_D + G_Dᴴ)."""
    return np.asfortranarray(g + g.T.conj())


def symmetric_lower(g, diagonal):
    """The symmetric convention's tile from G's: halved off the diagonal.

    For a diagonal tile, the Hermitian tile with S_ii = G_ii and
    S_ij = G_ij / 2 (i > j); otherwise G / 2.
    """
    if not diagonal:
        return np.asfortranarray(g * 0.5)
    low = np.tril(g, -1) * 0.5
    s = low + low.T.conj()
    np.fill_diagonal(s, np.diagonal(g).real)
    return np.asfortranarray(s)


def conj_transpose(x):
    return _op(x, C, copy=True)


def zeros(shape, dtype):
    return np.zeros(shape, dtype=dtype, order="F")


# --------------------------------------------------------------------------
# Diagonal tiles of the sweeps


#: Up to this tile size the diagonal tiles take the unblocked sweeps directly.  The
#: in-core functions send matrices this small (N ≤ _small.SMALL_N) to the closed form
#: whatever ``method`` says, and the closed form as a sweep's diagonal kernel is up to
#: 10⁵× less accurate on GP kernel matrices (blockchol/_kernel.py; measured here: the
#: tiled sweep with 64-tiles lost 1800× on RBF N = 300, jitter 1e-8).
LEVEL2_MAX_N = max(128, getattr(_small, "SMALL_N", 0))


def rev_kernel(d, d_bar):
    """G_D, the reverse sweep of one diagonal tile on its own (lower triangles read; G_D lower).

    The in-core ``chol_rev(D, D̄, method="sweep")`` (the blocked sweep with
    the unblocked sweep on its blocks); for tiles up to :data:`LEVEL2_MAX_N`
    the unblocked sweep itself, the in-core sweep's kernel.
    """
    n = d.shape[0]
    if n > LEVEL2_MAX_N:
        return np.asfortranarray(_chol_rev(d, d_bar, method="sweep", check_finite=False))
    a = np.tril(d_bar).astype(np.result_type(d, d_bar), order="F")
    _kernel.level2_rev(_kernel.work_copy(d, a.dtype), a)   # strict lower: G's; diagonal: 2 G_jj
    phi_lower(a)                                           # G_D
    return a


def fwd_kernel(d, z):
    """Ḋ = D Φ(D⁻¹ Ż D⁻ᴴ) for one diagonal tile (Ż's lower triangle read), as :func:`rev_kernel`."""
    n = d.shape[0]
    if n > LEVEL2_MAX_N:
        return np.asfortranarray(_chol_fwd(d, z, method="sweep", check_finite=False))
    w = np.array(z, dtype=np.result_type(d, z), order="F")
    _kernel.level2_fwd(_kernel.work_copy(d, w.dtype), w)   # lower triangle: Ḋ; junk above
    return np.asfortranarray(np.tril(w))
