"""Stacks of matrices: broadcasting, and the two ways through a stack.

Large matrices go one at a time through the blocked sweep (``loop``), which
already keeps the BLAS busy.  Small matrices would spend their time in
per-call overhead that way, so they are processed as a whole stack with
stacked array operations (``stacked``): the closed forms of the two
derivatives, with the triangular inverse built by recursive halving out of
stacked products.  The stack is cut into chunks that run on the worker
threads of :func:`._threads.batch_workers`; numpy releases the GIL inside
its loops and products, so the chunks run in parallel.

The closed forms cost more flops than the sweep (about 6.3N³ against
2N³/3), which is why the stacked path is kept to small N; the crossover is
measured in notes.md.
"""

import numpy as np

from . import _one
from ._operands import real_diagonal
from ._threads import batch_worker_count, blas_threads, parallel_map

__all__ = ["STACK_MAX_N", "run_batch"]

#: Largest N processed as a stack when the caller forces no block size.
STACK_MAX_N = 64


def run_batch(direction, L, X, dtype, lower, batch_shape, block_size, overwrite, threads):
    """The result for every matrix of the broadcast stack, shape ``batch_shape + (N, N)``."""
    n = L.shape[-1]
    shape = batch_shape + (n, n)
    count = int(np.prod(batch_shape, dtype=np.int64))
    if count == 0 or n == 0:
        return np.zeros(shape, dtype)
    if n <= STACK_MAX_N and (block_size is None or block_size >= n):
        return _stacked(direction, L, X, dtype, lower, shape, count, threads)
    return _loop(direction, L, X, dtype, lower, shape, block_size, overwrite, threads)


def _loop(direction, L, X, dtype, lower, shape, block_size, overwrite, threads):
    sweep = _one.REV if direction == "rev" else _one.FWD
    Ls, Xs = np.broadcast_to(L, shape), np.broadcast_to(X, shape)
    # Results go straight into their slot of the output when its layout
    # suits BLAS; overwriting X is allowed only where X is not broadcast.
    reuse = overwrite and X.shape == shape and X.dtype == dtype
    out = X if reuse else np.empty(shape, dtype)
    with blas_threads(threads):
        for index in np.ndindex(shape[:-2]):
            target = out[index]
            res = _one.run_one(sweep, Ls[index], Xs[index], dtype, lower, block_size,
                               overwrite=reuse, out=target)
            if res is not target:
                target[...] = res
    return out


# --------------------------------------------------------------------------
# The stacked path


def _stacked(direction, L, X, dtype, lower, shape, count, threads):
    n = shape[-1]
    L = np.broadcast_to(L, shape).reshape(count, n, n)
    X = np.broadcast_to(X, shape).reshape(count, n, n)
    if not lower:  # the upper factor U is Lᴴ; work with L and convert back at the end
        L, X = _herm(L), _herm(X)
    out = np.empty((count, n, n), dtype)
    kernel = _stacked_rev if direction == "rev" else _stacked_fwd

    def chunk(bounds):
        i0, i1 = bounds
        out[i0:i1] = kernel(L[i0:i1].astype(dtype, copy=False), X[i0:i1].astype(dtype, copy=False))

    workers = batch_worker_count(threads, count)
    edges = np.linspace(0, count, workers + 1).astype(int)
    spans = list(zip(edges[:-1], edges[1:]))
    if workers > 1:
        # The chunks are the parallelism; one BLAS thread each avoids oversubscription.
        with blas_threads(1):
            parallel_map(chunk, spans)
    else:
        with blas_threads(threads):
            chunk(spans[0])
    if not lower:
        out = _herm(out)
    return out.reshape(shape)


def _herm(a):
    return np.swapaxes(a, -1, -2).conj() if np.iscomplexobj(a) else np.swapaxes(a, -1, -2)


def _phi(n, dtype):
    mask = np.tri(n, dtype=np.dtype(dtype).type(0).real.dtype)
    mask[np.diag_indices(n)] = 0.5
    return mask


def _stacked_rev(L, Lb):
    """G = Φ(L⁻ᴴ (P + Pᴴ) L⁻¹), P = Φ(Lᴴ L̄), for a stack (lower triangles read)."""
    n = L.shape[-1]
    phi = _phi(n, L.dtype)
    L = L * np.tri(n, dtype=bool)            # the unread triangle may hold anything
    Li = _tri_inv(L)
    P = _herm(L) @ (Lb * np.tri(n, dtype=bool))
    P *= phi
    M = P + _herm(P)
    X = _herm(Li) @ (M @ Li)
    X *= phi
    real_diagonal(X)
    return X


def _stacked_fwd(L, Kd):
    """L̇ = L Φ(L⁻¹ K̇ L⁻ᴴ), K̇ the Hermitian matrices of the lower triangles of ``Kd``."""
    n = L.shape[-1]
    phi = _phi(n, L.dtype)
    L = L * np.tri(n, dtype=bool)
    Li = _tri_inv(L)
    H = np.where(np.tri(n, dtype=bool), Kd, 0) * phi
    H = H + _herm(H)
    X = Li @ H @ _herm(Li)
    X *= phi
    real_diagonal(X)
    return L @ X


def _tri_inv(L):
    """Inverses of a stack of lower triangular matrices, by doubling.

    [A 0; C D]⁻¹ = [A⁻¹ 0; −D⁻¹ C A⁻¹  D⁻¹].  Starting from the inverted
    diagonal, each level joins every adjacent pair of inverted h×h diagonal
    blocks into one 2h×2h block, all pairs of all matrices in two stacked
    products on strided views -- 2 log₂N products in all, instead of a
    Python-level recursion over every block.
    """
    count, n = L.shape[0], L.shape[-1]
    size = 1 << max(n - 1, 0).bit_length()       # next power of two
    a = np.zeros((count, size, size), L.dtype)
    a[:, :n, :n] = L
    a[:, np.arange(n, size), np.arange(n, size)] = 1  # pad with the identity
    out = np.zeros_like(a)
    diag = np.arange(size)
    out[:, diag, diag] = 1.0 / a[:, diag, diag]
    h = 1
    while h < size:
        A_inv = _blocks(out, h, 0, 0)            # inverted diagonal blocks 0, 2, 4, ...
        D_inv = _blocks(out, h, h, h)            # inverted diagonal blocks 1, 3, 5, ...
        C = _blocks(a, h, h, 0)                  # the block below each A
        _blocks(out, h, h, 0)[...] = -_product(D_inv, _product(C, A_inv))
        h *= 2
    return out[:, :n, :n]


def _product(a, b):
    """Stacked a @ b.  For blocks under 8×8, numpy's matmul pays more per block
    than the arithmetic costs, so those are summed elementwise."""
    if a.shape[-1] >= 8:
        return a @ b
    return (a[..., :, :, None] * b[..., None, :, :]).sum(axis=-2)


def _blocks(a, h, row, col):
    """View of the h×h blocks at (2kh + row, 2kh + col), k = 0, 1, ..., of each matrix."""
    count, size = a.shape[0], a.shape[-1]
    s0, s1, s2 = a.strides
    return np.lib.stride_tricks.as_strided(
        a[:, row:, col:], shape=(count, size // (2 * h), h, h),
        strides=(s0, 2 * h * (s1 + s2), s1, s2), writeable=True)
