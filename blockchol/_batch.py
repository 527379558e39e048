"""Stacks of matrices: the two ways through a stack, as the plan decided.

Large matrices (``path == "loop"``) go one at a time through :mod:`._one`,
which keeps a multithreaded BLAS busy.  Small and medium ones
(``path == "stacked"``) go through the stacked operations of
:mod:`._stacked`, a chunk of matrices per operation, the chunks shared
among the plan's worker threads (numpy releases the GIL inside its loops
and products, so they run in parallel).  The crossover is measured in
notes.md.
"""

import numpy as np

from . import _one, _stacked
from ._threads import parallel_map

__all__ = ["run"]


def run(plan, L, X):
    """The result for every matrix of the broadcast stack, shape ``plan.shape``."""
    if plan.path == "loop":
        return _loop(plan, L, X)
    return _stack(plan, L, X)


def _loop(plan, L, X):
    Ls, Xs = np.broadcast_to(L, plan.shape), np.broadcast_to(X, plan.shape)
    out = X if plan.overwrite else np.empty(plan.shape, plan.dtype)
    for index in np.ndindex(plan.shape[:-2]):
        _one.run(plan, Ls[index], Xs[index], target=out[index])
    return out


def _merged(a, count, n):
    """``a`` as a (count, N, N) view, or None where that would need a copy."""
    view = a.view()
    try:
        view.shape = (count, n, n)
    except AttributeError:
        return None
    return view


def _stack(plan, L, X):
    n, count, dtype = plan.n, plan.count, plan.dtype
    Ls = np.broadcast_to(L, plan.shape).reshape(count, n, n)
    Xs = np.broadcast_to(X, plan.shape).reshape(count, n, n)
    merged = _merged(X, count, n) if plan.overwrite else None
    out = merged if merged is not None else np.empty((count, n, n), dtype)
    conj = False
    if not plan.lower:
        # The upper factor U is Lᴴ: read the transposes and conjugate on the way.
        Ls, Xs, out_view = (np.swapaxes(a, -1, -2) for a in (Ls, Xs, out))
        conj = dtype.kind == "c"
    else:
        out_view = out
    m = min(_stacked.chunk_size(n, dtype, plan.batch_last), -(-count // plan.workers))
    chunks = [(i, min(i + m, count)) for i in range(0, count, m)]
    edges = np.linspace(0, len(chunks), min(plan.workers, len(chunks)) + 1).astype(int)

    def run_span(span):
        ws = _stacked.workspace(m, n, dtype)
        for i0, i1 in chunks[span[0]:span[1]]:
            _stacked.run_chunk(ws, plan.direction, plan.method, Ls[i0:i1], Xs[i0:i1],
                               out_view[i0:i1], plan.block_size, plan.symmetric, conj,
                               plan.scale_exp, plan.batch_last)

    parallel_map(run_span, list(zip(edges[:-1], edges[1:])))
    if plan.overwrite:
        if merged is None:
            X[...] = out.reshape(plan.shape)
        return X
    return out.reshape(plan.shape)
