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

The graph is built in this process, tile by tile, and any dask scheduler
runs it: the threaded and process schedulers, or dask.distributed.  Every
task works on at most three tiles and calls BLAS on them.  Tiles are the
chunks of ``L``: see :func:`chol_rev` for how other chunkings are turned
into square tiles.  The design, the task counts and a performance model are
in notes.md (section "blockchol.dask").

Modules: this one holds the public functions and their arguments;
:mod:`._graph` the task graph under construction (keys, cost model, input
and output tiles); :mod:`._forms` the graphs of the four forms closed_rev,
sweep_rev, closed_fwd and sweep_fwd; :mod:`._tiles` the tasks' bodies.

BLAS threads: each task calls BLAS on one tile, and the scheduler runs
tasks in parallel.  dask.distributed workers start with one BLAS thread
each; on the threaded scheduler wrap the compute in
``threadpoolctl.threadpool_limits(1)``, or the BLAS pools and dask's
threads compete for the cores.
"""

import math

import numpy as np

try:
    import dask.array as da
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph
except ImportError as error:     # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError("blockchol.dask needs dask: pip install 'blockchol[dask]'") from error

from ..core.api import as_input_array, result_dtype
from ._forms import FORMS
from ._graph import TaskGraph, inputs, output

__all__ = ["chol_rev", "chol_fwd", "METHODS"]

#: The two ways to compute the derivatives (see :func:`chol_rev`).
METHODS = ("closed", "sweep")


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
    L, X, dtype = _arguments(L, L_bar, ("L", "L_bar"), method)
    return _derivative("rev", method, L, X, ("L", "L_bar"), dtype, bool(lower), bool(symmetric))


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
    return _derivative("fwd", method, L, X, ("L", "K_dot"), dtype, bool(lower), False)


def _derivative(direction, method, L, X, names, dtype, lower, symmetric):
    """The lazy result of one form on arguments settled by :func:`_arguments`."""
    if L.shape[0] == 0:
        return da.zeros((0, 0), dtype=dtype)
    token = tokenize("blockchol-chol-" + direction, L, X, lower, symmetric, method, dtype)
    g = TaskGraph(token, L.chunks[0], dtype)
    build, kind = FORMS[method, direction]
    tiles = build(g, inputs(g, L.name, "factor", lower, names[0]),
                  inputs(g, X.name, kind, lower, names[1]))
    name = "blockchol-chol-%s-%s" % (direction, token)
    output(g, name, tiles, lower, symmetric)
    graph = HighLevelGraph.from_collections(name, g.dsk, dependencies=[L, X])
    return da.Array(graph, name, chunks=(g.sizes, g.sizes), meta=np.empty((0, 0), dtype=dtype))


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
