"""Closed-form derivatives over stacks of small matrices.

For small N a blocked sweep per matrix is all per-call overhead, so stacks
of small factors take the closed forms instead, as stacked products over a
chunk of matrices at a time:

    reverse:  G = Φ(L⁻ᴴ (P + Pᴴ) L⁻¹),  P = Φ(Lᴴ L̄)
    forward:  L̇ = L Φ(L⁻¹ K̇ L⁻ᴴ)

with the triangular inverses built by doubling (:func:`_tri_inv`).
These cost about 6N³ flops against the sweep's 2N³/3, which is why the path
is kept to small N (the crossover is in notes.md).

Two things dominate at these sizes besides the flops, and shape the code:
fresh memory is expensive (every new page faults, and on a virtual machine
a fault costs microseconds), and numpy pays per call.  So each thread keeps
a :class:`Workspace` sized for one chunk of ``CHUNK_BYTES`` per array,
reused across chunks and calls, and every step writes into it with
``out=``.  The workspace's invariants (zeros above the diagonal, the
identity in the padding) are set once and never broken: steps only ever
write the lower triangles.
"""

import threading

import numpy as np

from ._operands import real_diagonal

__all__ = ["rev_chunk", "fwd_chunk", "chunk_size", "workspace"]

#: Bytes per workspace array: a chunk of matrices that stays in cache.
CHUNK_BYTES = 1024 * 1024
#: Diagonal blocks up to this size are inverted by vectorized substitution,
#: the rest by doubling: stacked products of tiny blocks cost more per block
#: in numpy than the arithmetic.
BASE = 8

_local = threading.local()


def chunk_size(n, dtype):
    """Matrices per chunk for N×N matrices of ``dtype``."""
    return max(1, CHUNK_BYTES // (n * n * np.dtype(dtype).itemsize))


class Workspace:
    """Buffers for one chunk of ``m`` matrices of size N, in one dtype."""

    def __init__(self, m, n, dtype):
        self.key = (m, n, np.dtype(dtype))
        size = 1 << max(n - 1, 0).bit_length()   # doubling needs a power of two
        self.size = size
        self.L = np.zeros((m, size, size), dtype)        # factor's lower triangle, identity pad
        pad = np.arange(n, size)
        self.L[:, pad, pad] = 1
        self.Li = np.zeros((m, size, size), dtype)       # its inverse
        self.X = np.zeros((m, n, n), dtype)              # the other input's lower triangle
        self.P = np.empty((m, n, n), dtype)
        self.M = np.empty((m, n, n), dtype)
        self.T = np.empty((m, n, n), dtype)
        self.tri = np.tri(n, dtype=bool)
        self.phi = np.tri(n, dtype=np.zeros(0, dtype).real.dtype)
        self.phi[np.diag_indices(n)] = 0.5
        # Strided views for the doubling inverse, made once (as_strided is slow):
        # the diagonal blocks of the base case, then each doubling level.
        h = self.base = min(size, BASE)
        self.base_blocks = (_diagonal_blocks(self.L, h),
                            _diagonal_blocks(self.Li, h)) if h > 1 else None
        # The base case works with the block index last (contiguous), so that
        # each step is one vector operation over all blocks of the chunk.
        self.base_work = (np.empty((h, h, m, size // h), dtype),
                          np.empty((h, h, m, size // h), dtype))
        self.diagonals = (_diagonal(self.L), _diagonal(self.Li))
        self.levels = []
        while h < size:
            self.levels.append((h,
                                _blocks(self.Li, h, 0, 0),    # inverted diagonal blocks 0, 2, 4, ...
                                _blocks(self.Li, h, h, h),    # inverted diagonal blocks 1, 3, 5, ...
                                _blocks(self.L, h, h, 0),     # the block below each A
                                _blocks(self.Li, h, h, 0)))   # where its inverse goes
            h *= 2


def workspace(m, n, dtype):
    """This thread's workspace for chunks of ``m`` N×N matrices (kept for the next call)."""
    ws = getattr(_local, "workspace", None)
    if ws is None or ws.key != (m, n, np.dtype(dtype)):
        ws = _local.workspace = Workspace(m, n, dtype)
    return ws


def _herm(a, buffer=None):
    """Conjugate transpose of a stack: a view for real data, else written to ``buffer``."""
    t = np.swapaxes(a, -1, -2)
    if not np.iscomplexobj(a):
        return t
    return np.conjugate(t, out=buffer)


def _load(ws, L, X, conj):
    """Copy the lower triangles of a chunk into the workspace; returns (L, L⁻¹, X) views.

    With ``conj`` the inputs are conjugated on the way (for upper factors,
    passed as transposed views: L = Uᴴ).
    """
    c, n = len(L), L.shape[-1]
    Lw, Xw = ws.L[:c, :n, :n], ws.X[:c]
    np.copyto(Lw, L, where=ws.tri)      # never touches the zeros above the diagonal
    np.copyto(Xw, X, where=ws.tri)
    if conj:
        np.conjugate(Lw, out=Lw)
        np.conjugate(Xw, out=Xw)
    _tri_inv(ws, c)
    return Lw, ws.Li[:c, :n, :n], Xw


def rev_chunk(ws, L, Lb, out, conj=False):
    """out ← G = Φ(L⁻ᴴ (P + Pᴴ) L⁻¹), P = Φ(Lᴴ L̄), for a chunk (lower triangles read)."""
    c = len(L)
    Lw, Li, Xw = _load(ws, L, Lb, conj)
    P, M, T = ws.P[:c], ws.M[:c], ws.T[:c]
    np.matmul(_herm(Lw, T), Xw, out=P)
    P *= ws.phi                                   # P = Φ(Lᴴ L̄)
    np.add(P, _herm(P, M) if np.iscomplexobj(P) else np.swapaxes(P, -1, -2), out=M)
    np.matmul(M, Li, out=T)                       # (P + Pᴴ) L⁻¹
    np.matmul(_herm(Li, P), T, out=out)           # L⁻ᴴ (P + Pᴴ) L⁻¹
    out *= ws.phi
    real_diagonal(out)


def fwd_chunk(ws, L, Kd, out, conj=False):
    """out ← L̇ = L Φ(L⁻¹ K̇ L⁻ᴴ), K̇ the Hermitian matrices of the lower triangles of Kd."""
    c = len(L)
    Lw, Li, Xw = _load(ws, L, Kd, conj)
    P, M, T = ws.P[:c], ws.M[:c], ws.T[:c]
    np.multiply(Xw, ws.phi, out=P)
    np.add(P, _herm(P, M) if np.iscomplexobj(P) else np.swapaxes(P, -1, -2), out=M)  # K̇
    np.matmul(Li, M, out=T)                       # L⁻¹ K̇
    np.matmul(T, _herm(Li, M), out=P)             # L⁻¹ K̇ L⁻ᴴ
    P *= ws.phi
    real_diagonal(P)
    np.matmul(Lw, P, out=out)


def _tri_inv(ws, c):
    """ws.Li ← ws.L⁻¹ for the first ``c`` matrices (lower triangular, 2^k × 2^k), by doubling.

    [A 0; C D]⁻¹ = [A⁻¹ 0; −D⁻¹ C A⁻¹  D⁻¹].  Starting from the inverted
    diagonal, each level joins every adjacent pair of inverted h×h diagonal
    blocks into one 2h×2h block -- all pairs of all matrices in two stacked
    products on strided views.  The diagonal blocks of the first level
    (``BASE``) come from :func:`_base_inverse`.  Only the lower triangle of
    ``ws.Li`` is written.
    """
    L_diag, Li_diag = ws.diagonals
    np.divide(1.0, L_diag[:c], out=Li_diag[:c])
    if ws.base_blocks is not None:
        B, X = ws.base_work[0][:, :, :c], ws.base_work[1][:, :, :c]
        np.copyto(B, ws.base_blocks[0][:c].transpose(2, 3, 0, 1))
        np.copyto(X, ws.base_blocks[1][:c].transpose(2, 3, 0, 1))    # its inverted diagonal
        _base_inverse(B, X)                                           # (zeros above stay)
        np.copyto(ws.base_blocks[1][:c], X.transpose(2, 3, 0, 1))
    for h, A_inv, D_inv, C, below in ws.levels:
        CA = C[:c] @ A_inv[:c]
        np.negative(CA, out=CA)
        np.matmul(D_inv[:c], CA, out=below[:c])   # −D⁻¹ C A⁻¹


def _base_inverse(B, X):
    """X ← B⁻¹ for small lower triangular blocks, stored with the block index last.

    ``B`` and ``X`` have shape (h, h, ...) and X's diagonal already holds the
    inverted diagonal.  Forward substitution one row at a time, each step a
    vector operation over all blocks: X[i, :i] = −x_ii Σ_k B[i, k] X[k, :i].
    """
    for i in range(1, B.shape[0]):
        row = X[i, :i]
        np.multiply(B[i, 0], X[0, :i], out=row)
        for k in range(1, i):
            row += B[i, k] * X[k, :i]
        row *= X[i, i]
        np.negative(row, out=row)


def _diagonal(a):
    """Writeable view of the diagonals of a stack."""
    s0, s1, s2 = a.strides
    return np.lib.stride_tricks.as_strided(a, shape=a.shape[:2], strides=(s0, s1 + s2),
                                           writeable=True)


def _blocks(a, h, row, col, step=None):
    """View of the h×h blocks at (k·step + row, k·step + col), k = 0, 1, ..., of each matrix.

    By default step = 2h: the pairs of blocks that doubling level h joins.
    """
    step = step or 2 * h
    count, n = a.shape[0], a.shape[-1]
    s0, s1, s2 = a.strides
    return np.lib.stride_tricks.as_strided(
        a[:, row:, col:], shape=(count, n // step, h, h),
        strides=(s0, step * (s1 + s2), s1, s2), writeable=True)


def _diagonal_blocks(a, h):
    """View of the h×h diagonal blocks of each matrix."""
    return _blocks(a, h, 0, 0, step=h)
