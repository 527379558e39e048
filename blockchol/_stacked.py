"""The blocked sweeps over stacks of small and medium matrices, in stacked products.

One matrix at a time, a sweep over small matrices is all per-call overhead:
Python and ctypes for every BLAS call, a dozen calls per block.  Here the
same two sweeps as :mod:`._sweep` run over a *chunk* of matrices at once,
every step one stacked numpy operation (numpy loops over the matrices in
C, calling BLAS for each product).  The diagonal blocks take the closed
forms, with the block's inverse built by doubling (:class:`TriInverse`):

    reverse kernel:  D̄ ← Φ(D⁻ᴴ (P + Pᴴ) D⁻¹),  P = Φ(Dᴴ D̄)
    forward kernel:  Ḋ ← D Φ(D⁻¹ Ż D⁻ᴴ)

With one block (N ≤ the block size) these are the closed forms of the whole
derivative.

Two costs besides the flops shape the code.  Fresh memory is expensive
(every new page faults, and on a virtual machine a fault costs
microseconds), so each thread keeps its buffers (:func:`workspace`) across
chunks and calls, sized for chunks of about ``CHUNK_BYTES`` per matrix
array, which also keeps a chunk in cache.  And numpy pays per call, so the
inverse of small blocks avoids products of tiny matrices.  The buffers'
invariants (zeros above the diagonal, the identity in the padding) are set
once and never broken: steps only write lower triangles there.
"""

import threading

import numpy as np

from ._operands import herm, lower_mask, phi_mask, real_diagonal

__all__ = ["rev_chunk", "fwd_chunk", "chunk_size", "workspace", "block_size_for"]

#: Bytes per matrix array of a chunk: a chunk of matrices that stays in cache.
CHUNK_BYTES = 2 * 1024 * 1024
#: Diagonal blocks up to this size are inverted by vectorized substitution,
#: the rest by doubling: stacked products of tiny blocks cost more per block
#: in numpy than the arithmetic.
BASE = 8

_local = threading.local()


def chunk_size(n, dtype):
    """Matrices per chunk for N×N matrices of ``dtype``."""
    return max(1, CHUNK_BYTES // (n * n * np.dtype(dtype).itemsize))


def block_size_for(n):
    """Block width of the stacked sweeps (measurements in notes.md)."""
    if n <= 16:
        return n
    return 16 if n <= 48 else 32 if n <= 160 else 64


class Workspace:
    """One thread's buffers for chunks of ``m`` N×N matrices of one dtype."""

    def __init__(self, m, n, dtype):
        self.key = (m, n, np.dtype(dtype))
        self.m, self.dtype = m, np.dtype(dtype)
        self.L = np.zeros((m, n, n), dtype)    # the factors' lower triangles, zeros above
        self.tri = lower_mask(n, False)
        self._inverses = {}

    def inverse(self, k):
        """The :class:`TriInverse` for k×k diagonal blocks."""
        if k not in self._inverses:
            self._inverses[k] = TriInverse(self.m, k, self.dtype)
        return self._inverses[k]

    def masks(self, k):
        """(lower-triangle bool mask, Φ multiplier) for k×k blocks."""
        return lower_mask(k, False), phi_mask(k, False, np.zeros(0, self.dtype).real.dtype)


def workspace(m, n, dtype):
    """This thread's workspace for chunks of ``m`` N×N matrices (kept for the next call)."""
    ws = getattr(_local, "workspace", None)
    if ws is None or ws.key != (m, n, np.dtype(dtype)):
        ws = _local.workspace = Workspace(m, n, dtype)
    return ws


def _load(ws, L, X, out, conj):
    """ws.L ← the chunk's factors, out ← the lower triangles of X (zeros above).

    ``out`` may be ``X`` itself (overwrite).  With ``conj`` the inputs are
    conjugated on the way (upper factors are passed as transposed views:
    L = Uᴴ).
    """
    c = len(L)
    Lw = ws.L[:c]
    np.copyto(Lw, L, where=ws.tri)          # never touches the zeros above the diagonal
    if out is X:
        np.copyto(out, 0, where=~ws.tri)
    else:
        out[...] = 0
        np.copyto(out, X, where=ws.tri)
    if conj:
        np.conjugate(Lw, out=Lw)             # contiguous
        out[...] = out.conj()                # out may be a strided view (see _base_inverse)
    return Lw


def rev_chunk(ws, L, Lb, out, nb, conj=False):
    """out ← the reverse-mode gradients G for a chunk; the sweep of :mod:`._sweep`, stacked."""
    L = _load(ws, L, Lb, out, conj)
    A, n = out, L.shape[-1]
    for j in range(((n - 1) // nb) * nb, -1, -nb):
        k = min(j + nb, n)
        tri, phi = ws.masks(k - j)
        D, Db = L[:, j:k, j:k], A[:, j:k, j:k]
        Di = ws.inverse(k - j)(D)
        if k < n:
            C, Cb = L[:, k:, j:k], A[:, k:, j:k]
            Cb[...] = Cb @ Di                                  # C̄ ← C̄ D⁻¹
            if j:
                Bb = A[:, k:, :j]
                Bb -= Cb @ L[:, j:k, :j]                       # B̄ ← B̄ − C̄ R
            np.subtract(Db, herm(Cb) @ C, out=Db, where=tri)  # D̄ ← D̄ − tril(C̄ᴴ C)
        P = herm(D) @ Db                                      # closed form on the block:
        P *= phi                                               #   P = Φ(Dᴴ D̄)
        np.matmul(herm(Di), (P + herm(P)) @ Di, out=Db)      #   X = D⁻ᴴ (P + Pᴴ) D⁻¹
        if j:
            # R̄ ← R̄ − C̄ᴴ B − X R, as one product [X; C̄]ᴴ [R; B]
            Rb = A[:, j:k, :j]
            Rb -= herm(A[:, j:, j:k]) @ L[:, j:, :j]
        Db *= phi                                              # D̄ = Φ(X)
        real_diagonal(Db)


def fwd_chunk(ws, L, Kd, out, nb, conj=False):
    """out ← L̇ for a chunk; the forward sweep of :mod:`._sweep`, stacked."""
    L = _load(ws, L, Kd, out, conj)
    T, n = out, L.shape[-1]
    for j in range(0, n, nb):
        k = min(j + nb, n)
        tri, phi = ws.masks(k - j)
        D = L[:, j:k, j:k]
        Di = ws.inverse(k - j)(D)
        if j:
            panel = T[:, j:, j:k]                              # [K̇_DD; K̇_CD]
            panel -= T[:, j:, :j] @ herm(L[:, j:k, :j])       #   − [Ṙ; Ḃ] Rᴴ
            panel -= L[:, j:, :j] @ herm(T[:, j:k, :j])       #   − [R; B] Ṙᴴ
        Dd = T[:, j:k, j:k]
        Z = Dd * phi
        Z += herm(Z)                                          # Ż, Hermitian from its lower triangle
        X = Di @ Z @ herm(Di)                                 # D⁻¹ Ż D⁻ᴴ
        X *= phi
        real_diagonal(X)
        np.matmul(D, X, out=Dd)                                # Ḋ = D Φ(...), zeros above
        if k < n:
            Cd = T[:, k:, j:k]
            Cd -= L[:, k:, j:k] @ herm(Dd)                    # Y − C Ḋᴴ
            Cd[...] = Cd @ herm(Di)                           # Ċ = (...) D⁻ᴴ


class TriInverse:
    """Inverts stacks of k×k lower triangular blocks, reusing its buffers.

    [A 0; C D]⁻¹ = [A⁻¹ 0; −D⁻¹ C A⁻¹  D⁻¹].  The block is padded with the
    identity to a power of two; its small diagonal blocks (``BASE``) are
    inverted by vectorized substitution, then each doubling level joins every
    adjacent pair of inverted h×h diagonal blocks into one 2h×2h block --
    all pairs of all matrices in two stacked products on strided views.
    Only lower triangles are written, so the zeros above stay.
    """

    def __init__(self, m, k, dtype):
        self.k = k
        size = 1 << max(k - 1, 0).bit_length()
        self.tri = lower_mask(k, False)
        self.L = np.zeros((m, size, size), dtype)
        pad = np.arange(k, size)
        self.L[:, pad, pad] = 1
        self.Li = np.zeros((m, size, size), dtype)
        # Strided views, made once (as_strided is slow).
        h = min(size, BASE)
        self.base = (_diagonal_blocks(self.L, h), _diagonal_blocks(self.Li, h)) if h > 1 else None
        # The base case works with the block index last (contiguous), so that
        # each step is one vector operation over all blocks of the chunk.
        self.base_work = (np.empty((h, h, m, size // h), dtype),
                          np.empty((h, h, m, size // h), dtype))
        self.diagonals = (_diagonal(self.L), _diagonal(self.Li))
        self.levels = []
        while h < size:
            self.levels.append((_blocks(self.Li, h, 0, 0),    # inverted diagonal blocks 0, 2, 4, ...
                                _blocks(self.Li, h, h, h),    # inverted diagonal blocks 1, 3, 5, ...
                                _blocks(self.L, h, h, 0),     # the block below each A
                                _blocks(self.Li, h, h, 0)))   # where its inverse goes
            h *= 2

    def __call__(self, D):
        """D⁻¹ for a stack D of k×k blocks (lower triangles read); a view into the buffers."""
        c, k = len(D), self.k
        np.copyto(self.L[:c, :k, :k], D, where=self.tri)
        L_diag, Li_diag = self.diagonals
        np.divide(1.0, L_diag[:c], out=Li_diag[:c])
        if self.base is not None:
            B, X = self.base_work[0][:, :, :c], self.base_work[1][:, :, :c]
            np.copyto(B, self.base[0][:c].transpose(2, 3, 0, 1))
            np.copyto(X, self.base[1][:c].transpose(2, 3, 0, 1))    # its inverted diagonal
            _base_inverse(B, X)                                      # (zeros above stay)
            np.copyto(self.base[1][:c], X.transpose(2, 3, 0, 1))
        for A_inv, D_inv, C, below in self.levels:
            CA = C[:c] @ A_inv[:c]
            np.negative(CA, out=CA)
            np.matmul(D_inv[:c], CA, out=below[:c])              # −D⁻¹ C A⁻¹
        return self.Li[:c, :k, :k]


def _base_inverse(B, X):
    """X ← B⁻¹ for small lower triangular blocks, stored with the block index last.

    ``B`` and ``X`` have shape (h, h, ...) and X's diagonal already holds the
    inverted diagonal.  Forward substitution one row at a time, each step a
    vector operation over all blocks: X[i, :i] = −x_ii Σ_k B[i, k] X[k, :i].
    """
    for i in range(1, B.shape[0]):
        acc = B[i, 0] * X[0, :i]
        for k in range(1, i):
            acc += B[i, k] * X[k, :i]
        acc *= X[i, i]
        # Negate the fresh temporary, not the strided view: numpy 2.4.6's
        # np.negative(v, out=v) writes wrong values for some single-column
        # views (notes.md, "Known limits").
        np.negative(acc, out=acc)
        X[i, :i] = acc


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
