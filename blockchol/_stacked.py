"""Stacks of small matrices: the same derivatives, one numpy operation per step for a chunk of matrices.

One matrix at a time, small matrices are all per-call overhead (Python and
ctypes for every BLAS call).  Here every step is one stacked numpy
operation over a *chunk* of matrices: numpy loops over the chunk in C,
calling BLAS for each product.  Everything runs in the logical lower form
(K = L Lᴴ); :func:`load` and :func:`store` translate the caller's
orientation.

The closed form's triangular product and two full solves go, from
:data:`PER_MATRIX_N` up, to BLAS's ``?trmm`` and ``?trsm`` one matrix at a
time (:func:`per_matrix`: a raw call costs ~2 µs, and from N ≈ 24 OpenBLAS
solves faster that way than any stacked formulation here).  Below, the
solves are stacked, blocked recursively down to diagonal blocks of
:data:`BASE` = 2 rows, which are inverted explicitly: explicit inverses of
larger blocks cost accuracy on GP kernel matrices (4-wide blocks were up to
47× less accurate than substitution at N = 32, 8-wide ones 15× at N = 64;
2-wide ones within 1.8×; notes.md, "Accuracy").  The tiniest matrices, in
reverse, go to :mod:`._batchlast` instead, straight from :func:`run_chunk`.

* ``closed``: X = L⁻ᴴ (P + Pᴴ) L⁻¹ by two full solves, keeping the
  accurate triangle, as :mod:`._closed` does;
* ``sweep``: the blocked sweep of :mod:`._sweep`, its diagonal kernel the
  unblocked column sweep vectorized over the chunk (the stacked analogue of
  the ``?sygst`` kernel: both reuse symmetry the way the unblocked sweep does).

Fresh memory is expensive (every new page faults, and on a virtual machine
a fault costs microseconds), so each thread keeps its buffers
(:func:`workspace`) across chunks and calls, sized for chunks of about
``CHUNK_BYTES`` per matrix array.
"""

import threading

import numpy as np

from . import _batchlast
from ._blas import routines
from ._triangles import herm, lower_mask, mirror_lower, phi_lower, strict_upper_mask

__all__ = ["CHUNK_BYTES", "BATCH_LAST_CHUNK_BYTES", "BASE", "PER_MATRIX_N", "chunk_size", "sweep_block_size",
           "workspace", "run_chunk"]

#: Bytes per matrix array of a chunk: a chunk of matrices that stays in cache.
CHUNK_BYTES = 2 * 1024 * 1024
#: The same for the batch-last form (:mod:`._batchlast`), whose every step is one vector
#: operation over the chunk: there fewer, larger chunks win (notes.md, "Stacks").
BATCH_LAST_CHUNK_BYTES = 8 * 1024 * 1024
#: Rows of the explicitly inverted diagonal blocks of the stacked triangular solves.
BASE = 2
#: From this N the closed forms' products and solves are BLAS's, one matrix at a time (notes.md).
PER_MATRIX_N = 21

_local = threading.local()


def chunk_size(n, dtype, batch_last=False):
    """Matrices per chunk for N×N matrices of ``dtype`` (in the batch-last form, ``batch_last``)."""
    budget = BATCH_LAST_CHUNK_BYTES if batch_last else CHUNK_BYTES
    return max(1, budget // (n * n * np.dtype(dtype).itemsize))


def sweep_block_size(n):
    """Block width of the stacked sweeps (measurements in notes.md)."""
    if n <= 16:
        return n
    return 16 if n <= 48 else 32 if n <= 160 else 64


class Workspace:
    """One thread's buffers for chunks of ``m`` N×N matrices of one dtype."""

    def __init__(self, m, n, dtype):
        self.key = (m, n, np.dtype(dtype))
        self.L = np.zeros((m, n, n), dtype)    # the factors' lower triangles, zeros above
        self.A = np.zeros((m, n, n), dtype)    # the working matrix
        self.B = np.zeros((m, n, n), dtype)    # a second one
        self.tri = lower_mask(n)
        self._batch_last = None

    def batch_last(self, c):
        """Three (N, N, c) C-ordered buffers for :func:`._batchlast.rev_chunk` (made on first use)."""
        m, n, dtype = self.key
        if self._batch_last is None:
            self._batch_last = np.zeros((3, m * n * n), dtype)
        return tuple(b[:n * n * c].reshape(n, n, c) for b in self._batch_last)


def workspace(m, n, dtype):
    """This thread's workspace for chunks of ``m`` N×N matrices (kept for the next call)."""
    ws = getattr(_local, "workspace", None)
    if ws is None or ws.key != (m, n, np.dtype(dtype)):
        ws = _local.workspace = Workspace(m, n, dtype)
    return ws


def load(ws, L, X, conj):
    """(Lw, A): the chunk's factors and the read triangles of X, lower form, zeros above.

    ``L`` and ``X`` are the chunk in lower orientation (upper factors come
    as transposed views, L = Uᴴ, hence ``conj``).
    """
    c = len(L)
    Lw, A = ws.L[:c], ws.A[:c]
    np.copyto(Lw, L, where=ws.tri)        # never touches the zeros above the diagonal
    A[...] = 0
    np.copyto(A, X, where=ws.tri)
    if conj:
        np.conjugate(Lw, out=Lw)
        np.conjugate(A, out=A)
    return Lw, A


def store(out, result, conj):
    """out ← result (conj: its conjugate), out being the chunk's view in lower orientation."""
    if conj:
        # out may be a strided view: no in-place unary ufunc on it (notes.md, "Known limits").
        out[...] = result.conj()
    else:
        out[...] = result


# --------------------------------------------------------------------------
# Stacked triangular solves


def block_inverses(Lw):
    """The inverses of the BASE×BASE diagonal blocks of the lower factors Lw, shape (c, nblocks, BASE, BASE).

    A last, partial block is padded with the identity.  Forward
    substitution one row at a time, each step a vector operation over all
    blocks of all matrices, with the block index last (contiguous):
    X[i, :i] = −x_ii Σ_k D[i, k] X[k, :i].
    """
    c, n = Lw.shape[0], Lw.shape[-1]
    nblk = -(-n // BASE)
    D = np.zeros((BASE, BASE, c, nblk), Lw.dtype)
    for b in range(nblk):
        r0, r1 = b * BASE, min(b * BASE + BASE, n)
        D[:r1 - r0, :r1 - r0, :, b] = np.moveaxis(Lw[:, r0:r1, r0:r1], 0, -1)
        D[np.arange(r1 - r0, BASE), np.arange(r1 - r0, BASE), :, b] = 1
    X = np.zeros_like(D)
    for i in range(BASE):
        X[i, i] = 1.0 / D[i, i]
        if i:
            acc = D[i, 0] * X[0, :i]
            for k in range(1, i):
                acc += D[i, k] * X[k, :i]
            acc *= X[i, i]
            np.negative(acc, out=acc)
            X[i, :i] = acc
    return np.ascontiguousarray(np.moveaxis(X, (2, 3), (0, 1)))


def solve(T, B, upper, inverses=None):
    """B ← T⁻¹ B in place for stacks: T lower (``upper=False``) or upper triangular.

    Recursive blocking: the larger the part, the larger the product that
    updates it.  The leaves are single rows, divided by T's diagonal (plain
    substitution), or, given ``inverses`` (the BASE×BASE diagonal blocks of
    T inverted, as :func:`block_inverses` gives them for lower T, or their
    conjugate transposes for upper T), BASE-row blocks multiplied by those.
    """
    base = 1 if inverses is None else BASE
    _solve(T, B, 0, T.shape[-1], upper, base, inverses)


def _solve(T, B, r0, r1, upper, base, inverses):
    if r1 - r0 <= base:
        if inverses is None:
            B[:, r0] /= T[:, r0, r0, None]
        else:
            k = r1 - r0
            B[:, r0:r1] = inverses[:, r0 // BASE, :k, :k] @ B[:, r0:r1]
        return
    h = r0 + ((r1 - r0) // 2 + base - 1) // base * base
    if upper:                       # the bottom part first, then the top
        _solve(T, B, h, r1, upper, base, inverses)
        B[:, r0:h] -= T[:, r0:h, h:r1] @ B[:, h:r1]
        _solve(T, B, r0, h, upper, base, inverses)
    else:                           # the top part first, then the bottom
        _solve(T, B, r0, h, upper, base, inverses)
        B[:, h:r1] -= T[:, h:r1, r0:h] @ B[:, r0:h]
        _solve(T, B, h, r1, upper, base, inverses)


def per_matrix(Lw, T, steps):
    """T ← the triangular ``steps`` applied to every matrix of the chunk, by BLAS, one matrix at a time.

    ``Lw`` (the factors, lower form) and ``T`` are C-ordered (c, N, N)
    chunks of this module's workspaces, so each matrix is the column-major
    storage of its transpose: BLAS sees U = Lᵀ (upper) and Tᵀ.  ``steps``
    are (routine, side, op) triples on those, e.g. ("trsm", "R", "C"):
    Tᵀ ← Tᵀ (Uᴴ)⁻¹, which is T ← L⁻ᴴ T.  Everything goes through scipy's
    BLAS, as the single-matrix path does: numpy's matmul would call numpy's
    own OpenBLAS, whose threads, spinning after a product, took the cores
    from scipy's (a 128×128 closed form mixing the two took 3.3 ms where
    one BLAS took 0.41).
    """
    c, n = Lw.shape[0], Lw.shape[-1]
    if not (Lw.flags.c_contiguous and T.flags.c_contiguous and T.shape == Lw.shape
            and T.dtype == Lw.dtype):
        raise ValueError("internal error: per_matrix needs two C-ordered chunks of one shape "
                         "and dtype, got %s %s and %s %s" % (Lw.shape, Lw.dtype, T.shape, T.dtype))
    blas = routines(T.dtype)
    for routine, side, op in steps:     # each step over the whole chunk: the same arguments
        each = blas.trsm_each if routine == "trsm" else blas.trmm_each
        each(side, "U", op, n, 1.0, Lw.ctypes.data, T.ctypes.data, n * n * T.itemsize, c)


#: The closed forms' triangular products and solves on the column-major transposes
#: (see :func:`per_matrix`).
_REV_PRODUCT = (("trmm", "R", "C"),)                     # P = Lᴴ L̄
_REV_SOLVES = (("trsm", "R", "C"), ("trsm", "L", "N"))   # Y = L⁻ᴴ M, then X = Y L⁻¹
_FWD_SOLVES = (("trsm", "L", "C"), ("trsm", "R", "N"))   # Y = K̇ L⁻ᴴ, then X = L⁻¹ Y
_FWD_PRODUCT = (("trmm", "R", "N"),)                     # L Φ(X)


# --------------------------------------------------------------------------
# The four computations on a chunk (lower form in, lower form out)


def rev_closed(ws, Lw, A, nb, symmetric):
    """A ← G (or S): the closed form with two full solves."""
    c, n = len(Lw), Lw.shape[-1]
    if n >= PER_MATRIX_N:
        per_matrix(Lw, A, _REV_PRODUCT)                   # Lᴴ L̄ (L̄ lower, zeros above)
        mirror_lower(A, 1.0, 1.0)                         # M = P + Pᴴ
        per_matrix(Lw, A, _REV_SOLVES)                    # X = L⁻ᴴ M L⁻¹
    else:
        U = ws.B[:c]
        U[...] = herm(Lw)                                 # U = Lᴴ, upper
        Ui = herm(block_inverses(Lw))
        T = herm(Lw) @ A                                  # Lᴴ L̄
        mirror_lower(T, 1.0, 1.0)                         # M = P + Pᴴ
        solve(U, T, True, Ui)                             # Y = L⁻ᴴ M
        Z = np.ascontiguousarray(herm(T))
        solve(U, Z, True, Ui)                       # Z = L⁻ᴴ Yᴴ = Xᴴ: its upper triangle is accurate
        A[...] = herm(Z)                                  # X, accurate in its lower triangle
    if symmetric:
        mirror_lower(A, 0.5, 0.5)
    else:
        phi_lower(A)


def fwd_closed(ws, Lw, A, nb):
    """A ← L̇ = L Φ(L⁻¹ K̇ L⁻ᴴ), two full solves."""
    n = Lw.shape[-1]
    mirror_lower(A, 1.0, 1.0)                           # K̇, Hermitian
    if n >= PER_MATRIX_N:
        per_matrix(Lw, A, _FWD_SOLVES)                  # X = L⁻¹ K̇ L⁻ᴴ, lower triangle accurate
        phi_lower(A)
        per_matrix(Lw, A, _FWD_PRODUCT)                 # L Φ(X), lower
        return
    Li = block_inverses(Lw)
    solve(Lw, A, False, Li)                             # V = L⁻¹ K̇, so Vᴴ = K̇ L⁻ᴴ
    Y = np.ascontiguousarray(herm(A))
    solve(Lw, Y, False, Li)                       # X = L⁻¹ (K̇ L⁻ᴴ): its lower triangle is accurate
    phi_lower(Y)
    np.matmul(Lw, Y, out=A)                             # L Φ(X), lower


def _level2_rev(D, A):
    """The unblocked reverse sweep on the diagonal blocks of a chunk, in place (Murray's column loop).

    On entry A holds D̄ in its lower triangle; on exit the whole block holds
    X = G + Gᴴ (see :mod:`._kernel`).  With r, d, B, c the row left of, the
    pivot of, the block below-left of and the column below pivot j::

        d̄ ← (d̄ − Re(cᴴ c̄)/d)/d;  c̄ ← c̄/d;  r̄ ← r̄ − d̄ r − c̄ᴴ B;  B̄ ← B̄ − c̄ r
    """
    w = D.shape[-1]
    g = np.empty(D.shape[:1] + (w,), D.real.dtype)
    for j in range(w - 1, -1, -1):
        d = D[:, j, j].real
        cc, cb = D[:, j + 1:, j], A[:, j + 1:, j]
        db = (A[:, j, j].real - np.einsum("ki,ki->k", cc.conj(), cb).real / d) / d
        cb /= d[:, None]
        if j:
            r, B = D[:, j, :j], D[:, j + 1:, :j]
            A[:, j, :j] -= db[:, None] * r + np.einsum("ki,kij->kj", cb.conj(), B)
            A[:, j + 1:, :j] -= cb[:, :, None] * r[:, None, :]
        g[:, j] = db
    mirror_lower(A)                                  # X = G + Gᴴ off the diagonal
    A[:, np.arange(w), np.arange(w)] = g             # X_jj = 2 G_jj = d̄_j


def rev_sweep(ws, Lw, A, nb, symmetric):
    """A ← G (or S): the blocked sweep of :mod:`._sweep`, stacked."""
    n = Lw.shape[-1]
    for j in range(((n - 1) // nb) * nb, -1, -nb):
        k = min(j + nb, n)
        D, Db = Lw[:, j:k, j:k], A[:, j:k, j:k]
        if k < n:
            C, Cb = Lw[:, k:, j:k], A[:, k:, j:k]
            Ct = np.ascontiguousarray(herm(Cb))
            Dh = np.ascontiguousarray(herm(D))
            solve(Dh, Ct, True)                                      # C̄ᴴ ← D⁻ᴴ C̄ᴴ
            Cb[...] = herm(Ct)                                       # C̄ ← C̄ D⁻¹
            if j:
                A[:, k:, :j] -= Cb @ Lw[:, j:k, :j]                  # B̄ ← B̄ − C̄ R
            Db -= herm(Cb) @ C                                       # D̄ ← D̄ − C̄ᴴ C
        _level2_rev(D, Db)                                           # D̄ ← X
        if j:
            A[:, j:k, :j] -= herm(A[:, j:, j:k]) @ Lw[:, j:, :j]     # R̄ ← R̄ − [X; C̄]ᴴ [R; B]
        phi_lower(Db)                                                # D̄ ← Φ(X)
    if symmetric:
        mirror_lower(A, 0.5, 1.0)


def _level2_fwd(D, Z):
    """Ḋ = D Φ(D⁻¹ Ż D⁻ᴴ) on the diagonal blocks of a chunk by the unblocked forward sweep, in place."""
    w = D.shape[-1]
    for j in range(w):
        d = D[:, j, j].real
        if j:
            Z[:, j:, j] -= np.einsum("kij,kj->ki", Z[:, j:, :j], D[:, j, :j].conj())
            Z[:, j:, j] -= np.einsum("kij,kj->ki", D[:, j:, :j], Z[:, j, :j].conj())
        zd = Z[:, j, j].real / (2 * d)                               # ḋ = ż / 2d
        Z[:, j, j] = zd
        if j + 1 < w:
            Z[:, j + 1:, j] = (Z[:, j + 1:, j] - D[:, j + 1:, j] * zd[:, None]) / d[:, None]
    np.copyto(Z, 0, where=strict_upper_mask(w))


def fwd_sweep(ws, Lw, T, nb):
    """T ← L̇: the forward blocked sweep of :mod:`._sweep`, stacked."""
    n = Lw.shape[-1]
    for j in range(0, n, nb):
        k = min(j + nb, n)
        D = Lw[:, j:k, j:k]
        if j:
            panel = T[:, j:, j:k]                                    # [K̇_DD; K̇_CD]
            panel -= T[:, j:, :j] @ herm(Lw[:, j:k, :j])             #   − [Ṙ; Ḃ] Rᴴ
            panel -= Lw[:, j:, :j] @ herm(T[:, j:k, :j])             #   − [R; B] Ṙᴴ
        _level2_fwd(D, T[:, j:k, j:k])                               # Ḋ
        if k < n:
            Cd = T[:, k:, j:k]
            Cd -= Lw[:, k:, j:k] @ herm(T[:, j:k, j:k])             # Y − C Ḋᴴ
            Ct = np.ascontiguousarray(herm(Cd))
            solve(D, Ct, False)                                      # Ċᴴ = D⁻¹ (...)ᴴ
            Cd[...] = herm(Ct)


def run_chunk(ws, direction, method, L, X, out, nb, symmetric, conj, scale_exp=0,
              batch_last=False):
    """One chunk: load, compute in lower form, store into ``out`` (which may be X's own memory).

    With ``scale_exp``, X is shrunk by 2^-scale_exp on the way in and the
    result grown back on the way out (see :func:`._plan._overflow_scaling`).
    ``batch_last``: the chunk takes :mod:`._batchlast`'s form (the plan's
    choice), which reads the chunk itself instead of :func:`load`'s copies.
    """
    if batch_last:
        A = _batchlast.rev_chunk(ws.batch_last(len(L)), L, X, symmetric, conj, scale_exp)
    else:
        Lw, A = load(ws, L, X, conj)
        if scale_exp:
            A *= 2.0 ** -scale_exp
        if direction == "rev":
            (rev_closed if method == "closed" else rev_sweep)(ws, Lw, A, nb, symmetric)
        else:
            (fwd_closed if method == "closed" else fwd_sweep)(ws, Lw, A, nb)
    if scale_exp:
        with np.errstate(over="ignore"):
            A *= 2.0 ** scale_exp
    store(out, A, conj)
