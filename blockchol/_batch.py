"""Stacks of matrices: broadcasting, and the two ways through a stack.

Large matrices go one at a time through the blocked sweep (``_loop``), which
already keeps the BLAS busy; medium ones go through it on worker threads,
one BLAS thread each.  Small matrices would spend their time in per-call
overhead that way, so they are processed in chunks with stacked array
operations (``_stacked``, the closed forms of :mod:`._stacked`), the chunks
shared among worker threads: numpy releases the GIL inside its loops and
products, so they run in parallel.  The crossovers are measured in notes.md.
"""

import numpy as np

from . import _one
from . import _stacked as _stacked_mod
from ._threads import batch_worker_count, blas_threads, parallel_map

__all__ = ["STACK_MAX_N", "run_batch"]

#: Largest N processed as a stack when the caller forces no block size.
STACK_MAX_N = 64
#: Largest N for which the blocked sweeps of a stack run on worker threads
#: (one BLAS thread each) rather than one after another on all BLAS threads.
LOOP_PARALLEL_MAX_N = 256


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
    indices = list(np.ndindex(shape[:-2]))

    def run(span):
        for index in indices[span[0]:span[1]]:
            target = out[index]
            res = _one.run_one(sweep, Ls[index], Xs[index], dtype, lower, block_size,
                               overwrite=reuse, out=target)
            if res is not target:
                target[...] = res

    # Medium matrices keep a multithreaded BLAS only partly busy: give each
    # worker thread its own share of the stack instead.  Large ones use the
    # BLAS's own threads, one matrix at a time.
    parallel = shape[-1] <= LOOP_PARALLEL_MAX_N
    workers = batch_worker_count(threads, len(indices), min_chunk=1) if parallel else 1
    if workers > 1:
        edges = np.linspace(0, len(indices), workers + 1).astype(int)
        with blas_threads(1):
            parallel_map(run, list(zip(edges[:-1], edges[1:])))
    else:
        with blas_threads(threads):
            run((0, len(indices)))
    return out


# --------------------------------------------------------------------------
# The stacked path


def _stacked(direction, L, X, dtype, lower, shape, count, threads):
    n = shape[-1]
    L = np.broadcast_to(L, shape).reshape(count, n, n)
    X = np.broadcast_to(X, shape).reshape(count, n, n)
    if not lower:
        # The upper factor U is Lᴴ: read the transposes and conjugate on loading;
        # the result is then converted back at the end.
        L, X = np.swapaxes(L, -1, -2), np.swapaxes(X, -1, -2)
    conj = not lower and np.dtype(dtype).kind == "c"
    out = np.empty((count, n, n), dtype)
    kernel = _stacked_mod.rev_chunk if direction == "rev" else _stacked_mod.fwd_chunk
    m = _stacked_mod.chunk_size(n, dtype)
    chunks = [(i, min(i + m, count)) for i in range(0, count, m)]

    def run(span):
        ws = _stacked_mod.workspace(m, n, dtype)
        for i0, i1 in chunks[span[0]:span[1]]:
            kernel(ws, L[i0:i1], X[i0:i1], out[i0:i1], conj)

    workers = batch_worker_count(threads, len(chunks), min_chunk=1)
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
            out = out.conj()
    return out.reshape(shape)
