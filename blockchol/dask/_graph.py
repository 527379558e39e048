"""The task graph under construction: its keys, its cost model, its input and output tiles.

:class:`TaskGraph` holds the task dict that the four forms (:mod:`._forms`)
fill tile by tile, and an estimate of when each task finishes, which
decides the order in which a tile's sum takes its terms.  :func:`inputs`
adds the tasks that turn the arguments' tiles into lower-factor form;
:func:`output` the result's tiles in the caller's triangle and convention.
Everything here is plain Python on keys: no dask import, nothing computed.
"""

from functools import partial

import numpy as np

from . import _tiles
from ._tiles import N

__all__ = ["TaskGraph", "inputs", "output"]

# The cost model: one task costs its flops at RATE flop/s plus OVERHEAD seconds.  It
# only orders each tile's sum, so its figures need only be of the right magnitude.
RATE = 3.5e10
OVERHEAD = 1e-3


class TaskGraph:
    """A task dict under construction, with each key's estimated finish time.

    The estimate assumes as many workers as there is parallelism: each task
    starts when its inputs are done and takes :meth:`cost` seconds.  It
    decides the order in which each tile's sum takes its terms: the ones
    expected ready first go first.
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

    def key(self, what, *idx):
        return ("blockchol-%s-%s" % (what, self.token),) + idx

    def cost(self, flops):
        """Estimated seconds of a task of ``flops`` real (or complex) flops."""
        return self.flop_factor * flops / RATE + OVERHEAD

    def add(self, key, flops, func, *args):
        """The task ``func(*args)`` under ``key``; arguments that are keys of this graph wait."""
        start = max((self.done[a] for a in args if isinstance(a, tuple) and a in self.done),
                    default=0.0)
        self.done[key] = start + self.cost(flops)
        self.dsk[key] = (func,) + args
        return key

    def alias(self, key, target):
        """``key`` names the result of ``target``: no task of its own."""
        self.dsk[key] = target
        self.done[key] = self.done[target]

    def ready(self, key):
        return self.done.get(key, 0.0)

    def chain(self, what, idx, init, init_op, terms):
        """op(init) + Σ alpha op(a) op(b), one accumulating task per term.

        ``terms``: (alpha, a, a_op, b, b_op, tri, (m, k, n)) tuples from
        :meth:`term`.  ``init`` None starts from the first product.  Terms
        are taken in order of expected readiness (ties in the order given).
        Returns the (key, op) of the sum.
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

    @staticmethod
    def term(alpha, a, a_op, b, b_op, shape, tri=None):
        """One term alpha op(a) op(b) of a :meth:`chain`, op(a) op(b) of ``shape`` (m, k, n).

        ``tri`` as in :func:`._tiles.mac`: None, or the operand ("a" or "b")
        that is a lower-triangular diagonal tile.
        """
        return (alpha, a, a_op, b, b_op, tri, shape)

    def solve(self, what, idx, acc, op, t, side, t_op, m, n):
        """op(acc) solved against the lower-triangular tile t (see :func:`._tiles.solve`)."""
        k = m if side == 0 else n
        return self.add(self.key(what, *idx), float(k) * m * n,
                        partial(_tiles.solve, side=side, t_op=t_op), acc, op, t)

    def elementwise(self, what, idx, func, *args):
        return self.add(self.key(what, *idx), 0.0, func, *args)


def inputs(g, name, kind, lower, label):
    """One task per read tile of the array called ``name`` in the task dict: its tile (I, J),
    I ≥ J, in lower-factor form (see :func:`._tiles.prepare`; ``label`` names it in errors)."""
    tiles = {}
    for I in range(g.T):
        for J in range(I + 1):
            source = (name, I, J) if lower else (name, J, I)
            fn = partial(_tiles.prepare, dtype=g.dtype, conj_t=not lower, kind=kind,
                         row0=g.offsets[I], col0=g.offsets[J], name=label, lower=lower,
                         diagonal=I == J)
            tiles[I, J] = g.add(g.key("prepare-" + label.lower().replace("_", "-"), I, J), 0.0,
                                fn, source)
    return tiles


def output(g, name, tiles, lower, symmetric):
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
            elif I == J or (I > J) == lower:
                if lower:
                    g.alias(key, tiles[I, J])
                else:
                    g.add(key, 0.0, _tiles.conj_transpose, tiles[J, I])
            else:
                g.add(key, 0.0, partial(_tiles.zeros, (s[I], s[J]), g.dtype))
