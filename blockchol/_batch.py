"""Stacks of matrices: broadcasting, and the two ways through a stack.

Large matrices go one at a time through the blocked sweep (``_loop``), which
keeps a multithreaded BLAS busy.  Small and medium ones would spend their
time in per-call overhead that way, so they go through the same sweeps
written with stacked array operations (``_stacked``, :mod:`._stacked`), a
chunk of matrices per operation, the chunks shared among worker threads:
numpy releases the GIL inside its loops and products, so they run in
parallel.  The crossover is measured in notes.md.
"""

import numpy as np

from . import _one
from . import _stacked as _stacked_mod
from ._threads import batch_worker_count, blas_threads, parallel_map

__all__ = ["STACK_MAX_N", "run_batch"]

#: Largest N processed with stacked operations (:mod:`._stacked`).
STACK_MAX_N = 256


def run_batch(direction, L, X, dtype, lower, batch_shape, block_size, overwrite, threads):
    """The result for every matrix of the broadcast stack, shape ``batch_shape + (N, N)``."""
    n = L.shape[-1]
    shape = batch_shape + (n, n)
    count = int(np.prod(batch_shape, dtype=np.int64))
    if count == 0 or n == 0:
        return np.zeros(shape, dtype)
    if n <= STACK_MAX_N:
        return _stacked(direction, L, X, dtype, lower, shape, count, block_size, overwrite,
                        threads)
    return _loop(direction, L, X, dtype, lower, shape, block_size, overwrite, threads)


def _loop(direction, L, X, dtype, lower, shape, block_size, overwrite, threads):
    sweep = _one.REV if direction == "rev" else _one.FWD
    Ls, Xs = np.broadcast_to(L, shape), np.broadcast_to(X, shape)
    # Results go straight into their slot of the output when its layout
    # suits BLAS; overwriting X is allowed only where X is not broadcast.
    reuse = overwrite and _overwritable(X, L, shape, dtype)
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


def _stacked(direction, L, X, dtype, lower, shape, count, block_size, overwrite, threads):
    """The stacked sweeps, chunk by chunk; X's memory holds the result when overwriting."""
    n = shape[-1]
    given = X
    target = _in_place_view(X, L, shape, dtype, count) if overwrite else None
    L = np.broadcast_to(L, shape).reshape(count, n, n)
    X = np.broadcast_to(X, shape).reshape(count, n, n) if target is None else target
    if not lower:
        # The upper factor U is Lᴴ: read the transposes and conjugate on loading;
        # the result is then converted back at the end.
        L, X = np.swapaxes(L, -1, -2), np.swapaxes(X, -1, -2)
    conj = not lower and np.dtype(dtype).kind == "c"
    out = np.empty((count, n, n), dtype) if target is None else X
    kernel = _stacked_mod.rev_chunk if direction == "rev" else _stacked_mod.fwd_chunk
    # Chunks of at most CHUNK_BYTES per array, and at least one per worker.
    workers = batch_worker_count(threads, count)
    m = min(_stacked_mod.chunk_size(n, dtype), 1 << (-(-count // workers) - 1).bit_length())
    nb = min(block_size or _stacked_mod.block_size_for(n), n)
    chunks = [(i, min(i + m, count)) for i in range(0, count, m)]

    def run(span):
        ws = _stacked_mod.workspace(m, n, dtype)
        for i0, i1 in chunks[span[0]:span[1]]:
            chunk_out = out[i0:i1]
            kernel(ws, L[i0:i1], chunk_out if out is X else X[i0:i1], chunk_out, nb, conj)

    workers = min(workers, len(chunks))
    edges = np.linspace(0, len(chunks), workers + 1).astype(int)
    spans = list(zip(edges[:-1], edges[1:]))
    if workers > 1:
        # The chunks are the parallelism; one BLAS thread each avoids oversubscription.
        with blas_threads(1):
            parallel_map(run, spans)
    else:
        with blas_threads(threads):
            run(spans[0])
    if not lower:
        out = np.swapaxes(out, -1, -2)
        if conj:
            out[...] = out.conj()      # a strided view: no in-place unary ufunc (see _stacked)
    return out.reshape(shape) if target is None else given


def _overwritable(X, L, shape, dtype):
    """Whether X may hold the result: the result's shape and dtype, writeable, apart from L."""
    return (X.shape == shape and X.dtype == dtype and X.flags.writeable
            and not np.may_share_memory(L, X))


def _in_place_view(X, L, shape, dtype, count):
    """X as a (count, N, N) view to overwrite, or None where overwriting is not allowed."""
    if not _overwritable(X, L, shape, dtype):
        return None
    view = X.view()
    try:
        view.shape = (count,) + shape[-2:]      # refuses where a copy would be needed
    except AttributeError:
        return None
    return view