"""Tiled derivatives of the Cholesky factorization for dask arrays.

For a Hermitian positive definite K = L Lᴴ held as a dask array of square
tiles -- typically the output of :func:`dask.array.linalg.cholesky` --
:func:`chol_rev` returns ∂f/∂K from ∂f/∂L and :func:`chol_fwd` returns L̇
from K̇, both as lazy dask arrays with L's tiles.  The conventions are those
of :func:`blockchol.chol_rev` and :func:`blockchol.chol_fwd`:

* ``lower=True``: K = L Lᴴ, only the lower triangles of both arguments are
  read; ``lower=False``: the factor is the upper U with K = Uᴴ U and only
  the upper triangles are read;
* reverse mode returns the triangular G = Φ(L⁻ᴴ (P + Pᴴ) L⁻¹), P = Φ(Lᴴ L̄)
  (Φ: lower triangle with the diagonal halved), so that
  df = Re Σ_read-triangle conj(G_ij) dK_ij, or with ``symmetric=True`` the
  Hermitian S (S_ij = G_ij / 2 off the diagonal, S_ii = G_ii) with
  df = Re Σ_ij conj(S_ij) dK_ij;
* forward mode returns L̇ = L Φ(L⁻¹ K̇ L⁻ᴴ) (U̇ = L̇ᴴ for ``lower=False``),
  K̇ being the Hermitian matrix of the read triangle of ``K_dot``;
* dtype ``np.result_type(L, X, float32)``, integers and booleans as float64;
  float32, float64, complex64, complex128.

The graph is built here, tile by tile; every task works on at most three
tiles and calls BLAS on them (:mod:`blockchol._tiles`), and any dask
scheduler runs it: the threaded and process schedulers, or dask.distributed.
Tiles are the chunks of ``L``: see :func:`chol_rev` for how other chunkings
are turned into square tiles.  The design, the task counts and a
performance model are in notes.md (section "blockchol.dask").

BLAS threads: each task calls BLAS on one tile, and the scheduler runs
tasks in parallel.  dask.distributed workers start with one BLAS thread
each; on the threaded scheduler wrap the compute in
``threadpoolctl.threadpool_limits(1)``, or the BLAS pools and dask's
threads compete for the cores.
"""

import math
from functools import partial

import numpy as np

try:
    import dask.array as da
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph
except ImportError as error:     # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError("blockchol.dask needs dask: pip install 'blockchol[dask]'") from error

from . import _tiles
from .._validation import as_input_array, result_dtype
from ._tiles import C, N

__all__ = ["chol_rev", "chol_fwd", "METHODS"]

#: The two ways to compute the derivatives (see :func:`chol_rev`).
METHODS = ("closed", "sweep")

# Cost model used only to order each tile's sum (and for the statistics in
# graph_stats): one task costs its flops at _RATE plus _OVERHEAD seconds.
_RATE = 3.5e10
_OVERHEAD = 1e-3


# --------------------------------------------------------------------------
# Public functions


def chol_rev(L, L_bar, *, lower=True, symmetric=False, method="closed"):
    """Reverse-mode derivative of the Cholesky factorization, tiled: ∂f/∂K from ∂f/∂L.

    Parameters
    ----------
    L : (N, N) dask array or array_like
        Cholesky factor: K = L Lᴴ with the lower triangle read
        (``lower=True``), or the upper factor U, K = Uᴴ U, with the upper
        triangle read (``lower=False``).  Its diagonal must be real and
        positive.  Its chunks are the tiles of the computation and of the
        result.  Square tiles (``L.chunks[0] == L.chunks[1]``; uneven tiles
        allowed, such as a short last one) are used as they are; otherwise
        both arguments are rechunked to regular b × b tiles with
        b = ⌊√(r c)⌋, r and c the largest row and column chunk of `L`
        (about the memory of its largest chunk).  A numpy `L` is wrapped
        with `L_bar`'s chunks if that is a dask array, else with dask's
        automatic chunks.
    L_bar : (N, N) dask array or array_like
        ∂f/∂L; the same triangle as of `L` is read.  Rechunked to `L`'s
        tiles when its chunks differ.
    lower : bool, optional
        Whether `L` is the lower (default) or the upper factor.
    symmetric : bool, optional
        Output convention; see Returns.
    method : {"closed", "sweep"}, optional
        ``"closed"`` (default): the closed form by two full tiled triangular
        solves, Y = L⁻ᴴ (P + Pᴴ), X = Y L⁻¹, G = Φ(lower triangle of X),
        with P = Φ(Lᴴ L̄) formed from the triangles; ≈ 7N³/3 flops and the
        most accurate on ill-conditioned K.  ``"sweep"``: the blocked
        right-to-left sweep (Murray 2016) with the tile as the block and
        the in-core sweep (``blockchol.chol_rev(..., method="sweep")``, or
        its unblocked kernel for tiles up to 128) on each diagonal tile;
        2N³/3 flops, as accurate as the in-core sweep.  There is no
        ``"auto"``: the in-core choice rests on a condition estimate of
        the whole factor.

    Returns
    -------
    K_bar : (N, N) dask array
        Lazy; nothing is computed until it is.  With ``symmetric=False``
        the triangular G (lower for ``lower=True``, upper otherwise, zero
        tiles in the other triangle) such that
        df = Re Σ_read-triangle conj(G_ij) dK_ij; with ``symmetric=True``
        the Hermitian S, S_ij = G_ij / 2 off the diagonal and S_ii = G_ii,
        so that df = Re Σ_ij conj(S_ij) dK_ij for Hermitian dK.  The chunks
        are `L`'s square tiles; each tile is a Fortran-ordered ndarray.

    Raises
    ------
    ValueError
        When the graph is built: arguments that are not square 2-D arrays
        of one shape (or of unknown shape), an unknown `method`.  At
        compute time: NaN or infinity in a read triangle.
    TypeError
        When the graph is built: dtypes BLAS has no routines for.
    numpy.linalg.LinAlgError
        At compute time: a diagonal entry of `L` that is not real, positive
        and finite, named by its global index.

    See Also
    --------
    blockchol.chol_rev : the in-core function, same conventions.
    chol_fwd : the forward derivative.

    Notes
    -----
    With T tiles per side the graph has O(T³) tasks (≈ 7T³/6 products for
    ``"closed"``, T³/3 for ``"sweep"``) and a critical path of O(T) tasks.
    Every task reads at most three tiles and writes one; sums of tile
    products are chains of accumulating tasks, each chain taking its terms
    in the order they are expected to become ready, so that no task holds
    a tile row or column.

    Examples
    --------
    >>> import numpy as np, dask.array as da, blockchol, blockchol.dask
    >>> rng = np.random.default_rng(0)
    >>> A = rng.standard_normal((8, 8))
    >>> K = da.from_array(A @ A.T + 8 * np.eye(8), chunks=4)    # 2 × 2 tiles of 4 × 4
    >>> L = da.linalg.cholesky(K, lower=True)                   # dask's own, lazy
    >>> L_bar = da.ones((8, 8), chunks=4)                       # only its lower triangle is read
    >>> G = blockchol.dask.chol_rev(L, L_bar)                   # lazy too
    >>> G.chunks
    ((4, 4), (4, 4))
    >>> G_in_core = blockchol.chol_rev(L.compute(), np.ones((8, 8)))
    >>> bool(np.allclose(G.compute(), G_in_core, rtol=1e-12, atol=0))
    True

    Any square tiles will do, such as a short last one:

    >>> L5 = da.from_array(L.compute(), chunks=5)
    >>> S = blockchol.dask.chol_rev(L5, np.ones((8, 8)), symmetric=True, method="sweep")
    >>> S.chunks
    ((5, 3), (5, 3))
    >>> S_in_core = blockchol.chol_rev(L.compute(), np.ones((8, 8)), symmetric=True)
    >>> bool(np.allclose(S.compute(), S_in_core))
    True
    """
    symmetric = bool(symmetric)
    L, X, dtype = _arguments(L, L_bar, ("L", "L_bar"), method)
    token = tokenize("blockchol-chol-rev", L, X, bool(lower), symmetric, method, dtype)
    if L.shape[0] == 0:
        return da.zeros((0, 0), dtype=dtype)
    g = _Graph(token, L.chunks[0], dtype)
    build = _rev_closed if method == "closed" else _rev_sweep
    tiles = build(g, _prepare(g, L, "factor", lower, "L"), _prepare(g, X, "lower", lower, "L_bar"))
    name = "blockchol-chol-rev-" + token
    _output(g, name, tiles, lower, symmetric)
    return _array(g, name, L, X, dtype)


def chol_fwd(L, K_dot, *, lower=True, method="closed"):
    """Forward-mode derivative of the Cholesky factorization, tiled: L̇ from K̇.

    Parameters
    ----------
    L : (N, N) dask array or array_like
        Cholesky factor, as in :func:`chol_rev` (tiles and rechunking too).
    K_dot : (N, N) dask array or array_like
        A Hermitian tangent K̇ of K of which only the read triangle is used
        (the other is taken as its conjugate transpose; the imaginary part
        of the diagonal is ignored).
    lower : bool, optional
        Whether `L` is the lower (default) or the upper factor.
    method : {"closed", "sweep"}, optional
        ``"closed"`` (default): two full tiled triangular solves,
        Y = K̇ L⁻ᴴ, X = L⁻¹ Y, then L̇ = L Φ(lower triangle of X), the
        products with triangular tiles by trmm; ≈ 7N³/3 flops and the most
        accurate on ill-conditioned K.  ``"sweep"``: the blocked
        left-to-right sweep with the tile as the block and the in-core
        forward sweep on each diagonal tile, as in :func:`chol_rev`.

    Returns
    -------
    L_dot : (N, N) dask array
        Lazy L̇ = L Φ(L⁻¹ K̇ L⁻ᴴ) (Φ: lower triangle, diagonal halved),
        lower triangular for ``lower=True``, the upper U̇ = L̇ᴴ for
        ``lower=False``, zero tiles in the other triangle; `L`'s tiles.
        It is the adjoint of :func:`chol_rev`:
        Re Σ conj(L̄) ⊙ L̇ = Re Σ_read conj(G) ⊙ K̇.

    Raises
    ------
    As :func:`chol_rev`.

    Examples
    --------
    >>> import numpy as np, dask.array as da, blockchol, blockchol.dask
    >>> K = np.array([[4.0, 2.0], [2.0, 3.0]])
    >>> L = da.from_array(np.linalg.cholesky(K), chunks=1)
    >>> blockchol.dask.chol_fwd(L, np.eye(2)).compute()   # d chol(K + t I)/dt at t = 0
    array([[ 0.25      ,  0.        ],
           [-0.125     ,  0.44194174]])
    """
    L, X, dtype = _arguments(L, K_dot, ("L", "K_dot"), method)
    token = tokenize("blockchol-chol-fwd", L, X, bool(lower), method, dtype)
    if L.shape[0] == 0:
        return da.zeros((0, 0), dtype=dtype)
    g = _Graph(token, L.chunks[0], dtype)
    if method == "closed":
        tiles = _fwd_closed(g, _prepare(g, L, "factor", lower, "L"),
                            _prepare(g, X, "hermitian", lower, "K_dot"))
    else:
        tiles = _fwd_sweep(g, _prepare(g, L, "factor", lower, "L"),
                           _prepare(g, X, "lower", lower, "K_dot"))
    name = "blockchol-chol-fwd-" + token
    _output(g, name, tiles, lower, False)
    return _array(g, name, L, X, dtype)


# --------------------------------------------------------------------------
# Arguments


def _arguments(L, X, names, method):
    """Both arguments as dask arrays with the same square tiles, and the result dtype."""
    if method not in METHODS:
        raise ValueError("method must be one of %s, got %r"
                         % (", ".join(map(repr, METHODS)), method))
    L, X = (_input(a, name) for a, name in zip((L, X), names))
    for a, name in zip((L, X), names):
        if a.ndim != 2:
            raise ValueError("%s must be a square matrix (2-D), got an array of shape %s"
                             % (name, a.shape))
        if any(math.isnan(s) for s in a.shape):
            raise ValueError("%s has an unknown shape %s: call compute_chunk_sizes() first"
                             % (name, a.shape))
        if a.shape[0] != a.shape[1]:
            raise ValueError("%s must be square, got shape %s" % (name, a.shape))
    if L.shape != X.shape:
        raise ValueError("%s and %s must have the same shape, got %s and %s"
                         % (names[0], names[1], L.shape, X.shape))
    dtype = result_dtype(L, X)
    # Wrap numpy arguments, then settle on square tiles.
    if not isinstance(L, da.Array):
        L = da.from_array(L, chunks=X.chunks if isinstance(X, da.Array) else "auto")
    if not isinstance(X, da.Array):
        X = da.from_array(X, chunks=L.chunks)
    rows, cols = L.chunks
    if rows != cols:
        b = max(1, math.isqrt(max(rows) * max(cols)))
        L = L.rechunk((b, b))
    if X.chunks != L.chunks:
        X = X.rechunk(L.chunks)
    return L, X, dtype


def _input(x, name):
    """A dask array of a numeric dtype as it is; anything else as the in-core functions take it."""
    if isinstance(x, da.Array):
        if x.dtype.kind not in "biufc":
            raise TypeError("%s: expected a numeric array, got dtype %s" % (name, x.dtype))
        return x
    return as_input_array(x, name)


# --------------------------------------------------------------------------
# The graph


class _Graph:
    """A task dict under construction, with each key's estimated finish time.

    The estimate assumes as many workers as there is parallelism (each task
    starts when its inputs are done, costs its flops at ``_RATE`` plus
    ``_OVERHEAD``).  It decides the order in which each tile's sum takes
    its terms -- the ones expected ready first go first -- and gives the
    critical path reported by :func:`_graph_stats`.
    """

    def __init__(self, token, sizes, dtype):
        self.token = token
        self.sizes = tuple(int(s) for s in sizes)
        self.offsets = tuple(int(o) for o in np.cumsum((0,) + self.sizes[:-1]))
        self.T = len(self.sizes)
        self.dtype = np.dtype(dtype)
        self.flop_factor = 4.0 if self.dtype.kind == "c" else 1.0
        self.dsk = {}
        self.done = {}      # key -> estimated finish time
        self.depth = {}     # key -> tasks on the longest path ending at it
        self.work = 0.0     # total estimated task time

    def key(self, what, *idx):
        return ("blockchol-%s-%s" % (what, self.token),) + idx

    def add(self, key, flops, func, *args):
        deps = [a for a in args if isinstance(a, tuple) and a in self.done]
        start = max((self.done[d] for d in deps), default=0.0)
        cost = self.flop_factor * flops / _RATE + _OVERHEAD
        self.done[key] = start + cost
        self.depth[key] = 1 + max((self.depth[d] for d in deps), default=0)
        self.work += cost
        self.dsk[key] = (func,) + args
        return key

    def ready(self, key):
        return self.done.get(key, 0.0)

    def chain(self, what, idx, init, init_op, terms):
        """op(init) + Σ alpha op(a) op(b), one accumulating task per term.

        ``terms``: (alpha, a, a_op, b, b_op, tri, (m, k, n)) tuples (``tri``
        as in :func:`._tiles.mac`).  ``init`` None starts from the first
        product.  Terms are taken in order of expected readiness (ties in
        the order given).  Returns the (key, op) of the sum.
        """
        order = sorted(range(len(terms)),
                       key=lambda t: (max(self.ready(terms[t][1]), self.ready(terms[t][3])), t))
        acc, op = init, init_op
        for s, t in enumerate(order):
            alpha, a, a_op, b, b_op, tri, (m, k, n) = terms[t]
            flops = (1.0 if tri else 2.0) * m * k * n
            acc = self.add(self.key(what, *idx, s), flops, partial(_tiles.mac, tri=tri),
                           acc, op, alpha, a, a_op, b, b_op)
            op = N
        return acc, op

    def term(self, alpha, a, a_op, b, b_op, shape, tri=None):
        return (alpha, a, a_op, b, b_op, tri, shape)

    def solve(self, what, idx, acc, op, t, side, t_op, m, n):
        """op(acc) solved against the lower-triangular tile t (see :func:`._tiles.solve`)."""
        k = m if side == 0 else n
        return self.add(self.key(what, *idx), float(k) * m * n,
                        partial(_tiles.solve, side=side, t_op=t_op), acc, op, t)

    def elementwise(self, what, idx, func, *args):
        return self.add(self.key(what, *idx), 0.0, func, *args)


def _prepare(g, X, kind, lower, name):
    """One task per read tile: X's tile (I, J), I ≥ J, in lower-factor form (see _tiles.prepare)."""
    tiles = {}
    for I in range(g.T):
        for J in range(I + 1):
            source = (X.name, I, J) if lower else (X.name, J, I)
            fn = partial(_tiles.prepare, dtype=g.dtype, conj_t=not lower, kind=kind,
                         row0=g.offsets[I], col0=g.offsets[J], name=name, lower=lower,
                         diagonal=I == J)
            tiles[I, J] = g.add(g.key("prepare-" + name.lower().replace("_", "-"), I, J), 0.0,
                                fn, source)
    return tiles


def _rev_closed(g, Lp, Bp):
    """G = Φ(X), X = Y L⁻¹, Y = L⁻ᴴ M, M = P + Pᴴ, P = Φ(Lᴴ L̄): the lower tiles of G."""
    T, s = g.T, g.sizes
    # P's lower tiles: P_IJ = Σ_{K ≥ I} L_KIᴴ L̄_KJ (the K = I term by trmm), and M's diagonal.
    P = {}
    for I in range(T):
        for J in range(I + 1):
            terms = [g.term(1.0, Lp[I, I], C, Bp[I, J], N, (s[I], s[I], s[J]), tri="a")]
            terms += [g.term(1.0, Lp[K, I], C, Bp[K, J], N, (s[I], s[K], s[J]))
                      for K in range(I + 1, T)]
            P[I, J], _ = g.chain("rev-P", (I, J), None, N, terms)
        P[I, I] = g.elementwise("rev-M", (I, I), _tiles.phi_hermitian, P[I, I])

    def M(I, J):    # M = P + Pᴴ: P below the diagonal, Pᴴ above
        return (P[I, J], N) if I >= J else (P[J, I], C)

    # Y = L⁻ᴴ M, all tiles: Y_IJ = L_IIᴴ⁻¹ (M_IJ − Σ_{K > I} L_KIᴴ Y_KJ), bottom row first.
    Y = {}
    for I in reversed(range(T)):
        for J in range(T):
            terms = [g.term(-1.0, Lp[K, I], C, Y[K, J], N, (s[I], s[K], s[J]))
                     for K in range(I + 1, T)]
            acc, op = g.chain("rev-Y-update", (I, J), *M(I, J), terms)
            Y[I, J] = g.solve("rev-Y", (I, J), acc, op, Lp[I, I], 0, C, s[I], s[J])
    # X = Y L⁻¹, all tiles: X_IJ = (Y_IJ − Σ_{K > J} X_IK L_KJ) L_JJ⁻¹, last column first.
    X = {}
    for J in reversed(range(T)):
        for I in range(T):
            terms = [g.term(-1.0, X[I, K], N, Lp[K, J], N, (s[I], s[K], s[J]))
                     for K in range(J + 1, T)]
            acc, op = g.chain("rev-X-update", (I, J), Y[I, J], N, terms)
            X[I, J] = g.solve("rev-X", (I, J), acc, op, Lp[J, J], 1, N, s[I], s[J])
    G = {(I, J): X[I, J] for I in range(T) for J in range(I)}
    for I in range(T):
        G[I, I] = g.elementwise("rev-phi", (I, I), _tiles.phi, X[I, I])
    return G


def _rev_sweep(g, Lp, Bp):
    """The blocked reverse sweep with tiles as blocks (the loop of notes.md section 1, tile by tile).

    Step J (last to first) with R = L[J, :J], D = L_JJ, B = L[J+1:, :J],
    C = L[J+1:, J]:  C̄ ← C̄ D⁻¹;  B̄ ← B̄ − C̄ R;  D̄ ← D̄ − C̄ᴴ C;
    G_D = chol_rev(D, D̄);  R̄ ← R̄ − C̄ᴴ B − (G_D + G_Dᴴ) R.
    Each tile's updates are one chain, gathered when the tile is solved:
    tile (I, J), I > J, receives −C̄_I'Iᴴ L_I'J (I' > I, step I),
    −X_I L_IJ (step I) and −C̄_IJ' L_J'J (J < J' < I, steps J').
    """
    T, s = g.T, g.sizes
    Cb, Xd, G = {}, {}, {}
    for J in reversed(range(T)):
        for I in range(J + 1, T):
            terms = [g.term(-1.0, Cb[I2, I], C, Lp[I2, J], N, (s[I], s[I2], s[J]))
                     for I2 in range(I + 1, T)]
            terms.append(g.term(-1.0, Xd[I], N, Lp[I, J], N, (s[I], s[I], s[J])))
            terms += [g.term(-1.0, Cb[I, J2], N, Lp[J2, J], N, (s[I], s[J2], s[J]))
                      for J2 in range(J + 1, I)]
            acc, op = g.chain("rev-sweep-update", (I, J), Bp[I, J], N, terms)
            Cb[I, J] = g.solve("rev-sweep-solve", (I, J), acc, op, Lp[J, J], 1, N, s[I], s[J])
        terms = [g.term(-1.0, Cb[I, J], C, Lp[I, J], N, (s[J], s[I], s[J]))
                 for I in range(J + 1, T)]
        acc, _ = g.chain("rev-sweep-diagonal-update", (J,), Bp[J, J], N, terms)
        G[J, J] = g.add(g.key("rev-sweep-kernel", J, J), 2.0 / 3.0 * s[J] ** 3,
                        _tiles.rev_kernel, Lp[J, J], acc)
        if J:
            Xd[J] = g.elementwise("rev-sweep-hermitian", (J,), _tiles.hermitian_sum, G[J, J])
    G.update(Cb)
    return G


def _fwd_closed(g, Lp, Kp):
    """L̇ = L Φ(X), X = L⁻¹ Y, Y = K̇ L⁻ᴴ: both solves on all tiles, then the lower tiles of X."""
    T, s = g.T, g.sizes

    def Kd(I, J):   # the Hermitian K̇: prepared tiles below the diagonal, their ᴴ above
        return (Kp[I, J], N) if I >= J else (Kp[J, I], C)

    # Y = K̇ L⁻ᴴ: Y_IJ = (K̇_IJ − Σ_{K < J} Y_IK L_JKᴴ) L_JJ⁻ᴴ, first column first.
    Y = {}
    for J in range(T):
        for I in range(T):
            terms = [g.term(-1.0, Y[I, K], N, Lp[J, K], C, (s[I], s[K], s[J])) for K in range(J)]
            acc, op = g.chain("fwd-Y-update", (I, J), *Kd(I, J), terms)
            Y[I, J] = g.solve("fwd-Y", (I, J), acc, op, Lp[J, J], 1, C, s[I], s[J])
    # X = L⁻¹ Y: X_IJ = L_II⁻¹ (Y_IJ − Σ_{K < I} L_IK X_KJ), top row first.  Its
    # lower tiles need the upper ones above them: the solve is full.
    X = {}
    for I in range(T):
        for J in range(T):
            terms = [g.term(-1.0, Lp[I, K], N, X[K, J], N, (s[I], s[K], s[J])) for K in range(I)]
            acc, op = g.chain("fwd-X-update", (I, J), Y[I, J], N, terms)
            X[I, J] = g.solve("fwd-X", (I, J), acc, op, Lp[I, I], 0, N, s[I], s[J])
    F = {(I, J): X[I, J] for I in range(T) for J in range(I)}
    for I in range(T):
        F[I, I] = g.elementwise("fwd-phi", (I, I), _tiles.phi, X[I, I])
    # L̇ = L Φ(X), both lower: L̇_IJ = Σ_{J ≤ K ≤ I} L_IK F_KJ (triangular tiles by trmm).
    Ld = {}
    for I in range(T):
        for J in range(I + 1):
            terms = [g.term(1.0, Lp[I, I], N, F[I, J], N, (s[I], s[I], s[J]), tri="a")]
            if J < I:
                terms.append(g.term(1.0, Lp[I, J], N, F[J, J], N, (s[I], s[J], s[J]), tri="b"))
            terms += [g.term(1.0, Lp[I, K], N, F[K, J], N, (s[I], s[K], s[J]))
                      for K in range(J + 1, I)]
            Ld[I, J], _ = g.chain("fwd-product", (I, J), None, N, terms)
    return Ld


def _fwd_sweep(g, Lp, Kp):
    """The blocked forward sweep with tiles as blocks (_sweep.fwd_sweep, tile by tile).

    Step J (first to last): [Ż; Y] = [K̇_JJ; K̇_CJ] − [Ṙ; Ḃ] Rᴴ − [R; B] Ṙᴴ;
    Ḋ = chol_fwd(D, Ż);  Ċ = (Y − C Ḋᴴ) D⁻ᴴ.
    """
    T, s = g.T, g.sizes
    Ld = {}
    for J in range(T):
        for I in range(J, T):
            terms = []
            for K in range(J):
                terms.append(g.term(-1.0, Ld[I, K], N, Lp[J, K], C, (s[I], s[K], s[J])))
                terms.append(g.term(-1.0, Lp[I, K], N, Ld[J, K], C, (s[I], s[K], s[J])))
            if I > J:
                terms.append(g.term(-1.0, Lp[I, J], N, Ld[J, J], C, (s[I], s[J], s[J]), tri="b"))
            acc, op = g.chain("fwd-sweep-update", (I, J), Kp[I, J], N, terms)
            if I == J:
                Ld[J, J] = g.add(g.key("fwd-sweep-kernel", J, J), 2.0 * s[J] ** 3,
                                 _tiles.fwd_kernel, Lp[J, J], acc)
            else:
                Ld[I, J] = g.solve("fwd-sweep-solve", (I, J), acc, op, Lp[J, J], 1, C, s[I], s[J])
    return Ld


def _output(g, name, tiles, lower, symmetric):
    """The result's tiles under ``name``: aliases of (or tasks on) the lower tiles of G."""
    T, s = g.T, g.sizes
    for I in range(T):
        for J in range(T):
            key = (name, I, J)
            if symmetric:
                if I >= J:
                    g.add(key, 0.0, partial(_tiles.symmetric_lower, diagonal=I == J), tiles[I, J])
                else:
                    g.add(key, 0.0, _tiles.conj_transpose, (name, J, I))
            elif (I >= J) == lower or I == J:
                if lower:
                    g.dsk[key] = tiles[I, J]        # alias
                    g.done[key], g.depth[key] = g.done[tiles[I, J]], g.depth[tiles[I, J]]
                else:
                    g.add(key, 0.0, _tiles.conj_transpose, tiles[J, I])
            else:
                g.add(key, 0.0, partial(_tiles.zeros, (s[I], s[J]), g.dtype))


def _array(g, name, L, X, dtype):
    graph = HighLevelGraph.from_collections(name, g.dsk, dependencies=[L, X])
    chunks = (g.sizes, g.sizes)
    return da.Array(graph, name, chunks=chunks, meta=np.empty((0, 0), dtype=dtype))


# --------------------------------------------------------------------------
# Statistics for the notes, the benchmark and the tests


def _graph_stats(n, tile, kind="rev", method="closed", dtype=np.float64):
    """Task count, critical path and work of the graph for an n × n problem with b × b tiles.

    Returns a dict: ``tiles`` (T), ``tasks`` (in the graph, without the
    inputs' own), ``products`` (the accumulating tasks), ``critical_path``
    (tasks on the longest dependency chain), ``span_s`` and ``work_s``
    (the cost model's time on unboundedly many workers, and on one).
    """
    sizes = [tile] * (n // tile) + ([n % tile] if n % tile else [])
    g = _Graph("stats", sizes, dtype)
    fake_L = type("Fake", (), {"name": "L"})()
    fake_X = type("Fake", (), {"name": "X"})()
    if kind == "rev":
        build = _rev_closed if method == "closed" else _rev_sweep
        tiles = build(g, _prepare(g, fake_L, "factor", True, "L"),
                      _prepare(g, fake_X, "lower", True, "L_bar"))
    else:
        build = _fwd_closed if method == "closed" else _fwd_sweep
        tiles = build(g, _prepare(g, fake_L, "factor", True, "L"),
                      _prepare(g, fake_X, "hermitian" if method == "closed" else "lower", True,
                               "K_dot"))
    _output(g, "out", tiles, True, False)
    products = sum(1 for task in g.dsk.values()
                   if isinstance(task, tuple) and isinstance(task[0], partial)
                   and task[0].func is _tiles.mac)
    return {"n": n, "tile": tile, "tiles": g.T, "tasks": len(g.dsk), "products": products,
            "critical_path": max(g.depth.values()), "span_s": max(g.done.values()),
            "work_s": g.work}
