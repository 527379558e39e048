"""Stacks of matrices, and single small matrices as stacks of one.

Large matrices of a stack (``path == "loop"``) go one at a time through
:mod:`.one`, which keeps a multithreaded BLAS busy.  Small and medium ones
(``path == "stacked"``) go a *chunk* of matrices per step: numpy loops over
the chunk in C, and the chunks are shared among the plan's worker threads
(numpy and ctypes release the GIL).  Everything runs in the logical lower
form (K = L Lᴴ): :func:`_load` and :func:`_store` translate the caller's
orientation.  A single small matrix (``path == "small"``) is a stack of one
that skips the chunk machinery (:func:`run_small`).

The closed forms are :mod:`.closed`'s, on a chunk's operations
(:class:`Chunk`): BLAS one matrix at a time from
:data:`~.thresholds.PER_MATRIX_N` (and for a single matrix), stacked numpy
substitution below it, where a raw call per matrix costs more than the
arithmetic.  The stacked solves are blocked recursively down to diagonal
blocks of :data:`~.thresholds.BASE` rows, inverted explicitly (larger
inverted blocks cost accuracy on GP kernel matrices: notes, Accuracy).
Stacks of the tiniest matrices in reverse take the matrix-index-last form
(:func:`batch_last_rev`), whose every step is one vector operation over the
whole chunk.  The sweeps have their stacked form here too
(:func:`sweep_rev`, :func:`sweep_fwd`): the loop of :mod:`.sweep` with the
unblocked sweep vectorized over the chunk as the diagonal-block kernel.

Fresh memory is expensive (every new page faults, and on a virtual machine
a fault costs microseconds), so each thread keeps its buffers
(:func:`_workspace`) across chunks and calls.
"""

import threading

import numpy as np
from scipy.linalg.blas import get_blas_funcs

from . import one
from .blas import PREFIX, routines
from .closed import closed_fwd, closed_rev
from .threads import parallel_map
from .thresholds import BASE, BATCH_LAST_CHUNK_BYTES, CHUNK_BYTES, PER_MATRIX_N, TINY_N
from .triangles import (check_finite_triangle, herm, lower_mask, mirror_lower, phi_lower,
                        strict_upper_mask)

__all__ = ["run_small", "run_loop", "run_stacked", "takes_batch_last", "Chunk", "BatchLast",
           "closed_lower", "sweep_rev", "sweep_fwd", "batch_last_rev"]

_local = threading.local()

#: Workspaces of single small matrices kept per thread: beyond this many (N, dtype)
#: pairs they are dropped.
_MAX_SMALL_WORKSPACES = 16


def takes_batch_last(direction, method, n, dtype):
    """Whether a stack of N×N matrices of ``dtype`` takes the matrix-index-last form."""
    return (direction == "rev" and method == "closed"
            and n <= TINY_N["complex" if np.dtype(dtype).kind == "c" else "real"])


# --------------------------------------------------------------------------
# The three executors


def run_small(plan, L, X):
    """One small matrix, as a stack of one, through the closed form; L's memory order.

    The arguments are copied once into a thread's workspace in the lower
    form (zeros above, which also disposes of whatever the unread triangle
    holds); with ``plan.check_copies`` the read triangles' finiteness is
    checked on those copies, both in one pass.
    """
    n, lower = plan.n, plan.lower
    space, ops = _small_workspace(n, plan.dtype)
    mask = lower_mask(n)
    np.copyto(space[0], L if lower else herm(L), where=mask)  # the upper triangle stays zero
    A = space[1]
    A.fill(0)
    np.copyto(A, X if lower else herm(X), where=mask)
    if plan.check_copies and not np.isfinite(space).all():
        _report_non_finite(plan, L, X)
    _compute(plan.direction, ops, plan.symmetric, plan.scale_exp)
    out = A if lower else herm(A)
    if plan.overwrite:
        X[...] = out
        return X
    return np.array(out, order="C" if plan.row_major else "F")


def run_loop(plan, L, X):
    """Every matrix of the broadcast stack through :mod:`.one`, shape ``plan.shape``."""
    Ls, Xs = np.broadcast_to(L, plan.shape), np.broadcast_to(X, plan.shape)
    out = X if plan.overwrite else np.empty(plan.shape, plan.dtype)
    for index in np.ndindex(plan.shape[:-2]):
        one.run(plan, Ls[index], Xs[index], target=out[index])
    return out


def run_stacked(plan, L, X):
    """Every matrix of the broadcast stack, a chunk per step on the plan's workers."""
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
    budget = BATCH_LAST_CHUNK_BYTES if plan.batch_last else CHUNK_BYTES
    m = min(max(1, budget // (n * n * dtype.itemsize)), -(-count // plan.workers))
    chunks = [(i, min(i + m, count)) for i in range(0, count, m)]
    edges = np.linspace(0, len(chunks), min(plan.workers, len(chunks)) + 1).astype(int)

    def run_span(span):
        ws = _workspace(m, n, dtype)
        for i0, i1 in chunks[span[0]:span[1]]:
            _run_chunk(ws, plan, Ls[i0:i1], Xs[i0:i1], out_view[i0:i1], conj)

    parallel_map(run_span, list(zip(edges[:-1], edges[1:])))
    if plan.overwrite:
        if merged is None:
            X[...] = out.reshape(plan.shape)
        return X
    return out.reshape(plan.shape)


def closed_lower(direction, L, X, symmetric=False):
    """The closed form for a stack in the lower form, in stacked numpy (any dtype numpy has).

    ``L`` and ``X`` are (c, N, N); only their lower triangles are read.  No
    BLAS: this runs in extended precision too (``np.longdouble``), where
    float64 overflows on the way (see :func:`.api.chol_rev`'s warning).
    """
    c, n = L.shape[0], L.shape[-1]
    Lw = np.zeros((c, n, n), L.dtype)
    A = np.zeros((c, n, n), L.dtype)
    mask = lower_mask(n)
    np.copyto(Lw, L, where=mask)
    np.copyto(A, X, where=mask)
    _compute(direction, Chunk(Lw, A, False), symmetric, 0)
    return A


def _compute(direction, ops, symmetric, scale_exp):
    """ops.A ← the closed form for the chunk (lower form in, lower form out), scaled as planned."""
    A = ops.A
    if scale_exp:
        A *= 2.0 ** -scale_exp
    if direction == "rev":
        closed_rev(ops, symmetric)
    else:
        closed_fwd(ops)
    if scale_exp:
        with np.errstate(over="ignore"):
            A *= 2.0 ** scale_exp


def _run_chunk(ws, plan, L, X, out, conj):
    """One chunk: load, compute in lower form, store into ``out`` (which may be X's own memory)."""
    if plan.batch_last:
        A = batch_last_rev(ws.batch_last(len(L)), L, X, plan.symmetric, conj, plan.scale_exp)
        if plan.scale_exp:
            with np.errstate(over="ignore"):
                A *= 2.0 ** plan.scale_exp
    else:
        Lw, A = _load(ws, L, X, conj)
        if plan.method == "closed":
            _compute(plan.direction, Chunk(Lw, A, plan.n >= PER_MATRIX_N), plan.symmetric,
                     plan.scale_exp)
        else:
            if plan.scale_exp:
                A *= 2.0 ** -plan.scale_exp
            if plan.direction == "rev":
                sweep_rev(Lw, A, plan.block_size, plan.symmetric)
            else:
                sweep_fwd(Lw, A, plan.block_size)
            if plan.scale_exp:
                with np.errstate(over="ignore"):
                    A *= 2.0 ** plan.scale_exp
    _store(out, A, conj)


def _report_non_finite(plan, L, X):
    """The error the plan's checks would have raised: the copies hold a NaN or an infinity."""
    for a, name in zip((L, X), plan.names):
        check_finite_triangle(a, name, plan.lower, 1)


# --------------------------------------------------------------------------
# Workspaces, loading and storing


class _Workspace:
    """One thread's buffers for chunks of ``m`` N×N matrices of one dtype."""

    def __init__(self, m, n, dtype):
        self.key = (m, n, np.dtype(dtype))
        self.L = np.zeros((m, n, n), dtype)    # the factors' lower triangles, zeros above
        self.A = np.zeros((m, n, n), dtype)    # the working matrix
        self.tri = lower_mask(n)
        self._batch_last = None

    def batch_last(self, c):
        """Three (N, N, c) C-ordered buffers for :func:`batch_last_rev` (made on first use)."""
        m, n, dtype = self.key
        if self._batch_last is None:
            self._batch_last = np.zeros((3, m * n * n), dtype)
        return tuple(b[:n * n * c].reshape(n, n, c) for b in self._batch_last)


def _workspace(m, n, dtype):
    """This thread's workspace for chunks of ``m`` N×N matrices (kept for the next call)."""
    ws = getattr(_local, "workspace", None)
    if ws is None or ws.key != (m, n, np.dtype(dtype)):
        ws = _local.workspace = _Workspace(m, n, dtype)
    return ws


def _small_workspace(n, dtype):
    """``(space, ops)``: this thread's (2, N, N) C-ordered buffer for one small matrix, the
    factor's copy and then A, and the :class:`Chunk` operations on them (made once).

    The factor's strict upper triangle is zero and only ever written by
    masked copies of lower triangles, so it stays zero.
    """
    cache = getattr(_local, "small", None)
    if cache is None:
        cache = _local.small = {}
    entry = cache.get((n, dtype))
    if entry is None:
        if len(cache) >= _MAX_SMALL_WORKSPACES:
            cache.clear()
        space = np.zeros((2, n, n), dtype)
        entry = cache[(n, dtype)] = (space, Chunk(space[0:1], space[1:2], True))
    return entry


def _load(ws, L, X, conj):
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


def _store(out, result, conj):
    """out ← result (conj: its conjugate), out being the chunk's view in lower orientation."""
    if conj:
        # out may be a strided view: no in-place unary ufunc on it (notes: Known limits).
        out[...] = result.conj()
    else:
        out[...] = result


def _merged(a, count, n):
    """``a`` as a (count, N, N) view, or None where that would need a copy."""
    view = a.view()
    try:
        view.shape = (count, n, n)
    except AttributeError:
        return None
    return view


# --------------------------------------------------------------------------
# The closed forms' operations on a chunk


class Chunk:
    """The operations of :mod:`.closed`'s forms on a chunk of C-ordered (c, N, N) matrices.

    ``Lw`` holds the factors (lower form, zeros above), ``A`` the working
    matrices.  With ``by_blas`` every triangular product and solve is
    BLAS's, one matrix at a time (:func:`_per_matrix`); otherwise stacked
    numpy: products by matmul, solves by recursive substitution with the
    BASE×BASE diagonal blocks inverted, which works in any dtype numpy has.
    """

    def __init__(self, Lw, A, by_blas):
        self.Lw, self.A = Lw, A
        self._blas = None
        if by_blas:
            self._blas = _OneMatrix(Lw, A) if len(Lw) == 1 else _PerMatrix(Lw, A)
        self._upper = None          # Lᴴ and the inverses of its diagonal blocks, when needed
        self._lower = None          # the inverses of L's diagonal blocks, when needed

    def adjoint_product(self):
        if self._blas:
            self._blas("trmm", "L", "C")
        else:
            self.A[...] = herm(self.Lw) @ self.A

    def product(self):
        if self._blas:
            self._blas("trmm", "L", "N")
        else:
            self.A[...] = self.Lw @ self.A

    def solve(self, side, adjoint):
        """A ← op(L)⁻¹ A (side "L") or A op(L)⁻¹ (side "R"), op(L) = Lᴴ with ``adjoint``."""
        if self._blas:
            self._blas("trsm", side, "C" if adjoint else "N")
        elif side == "L":
            self._solve_left(self.A, adjoint)
        else:                       # A op(L)⁻¹ = (op(L)⁻ᴴ Aᴴ)ᴴ
            Z = np.ascontiguousarray(herm(self.A))
            self._solve_left(Z, not adjoint)
            self.A[...] = herm(Z)

    def _solve_left(self, B, adjoint):
        if adjoint:
            if self._upper is None:
                self._upper = (np.ascontiguousarray(herm(self.Lw)), herm(block_inverses(self.Lw)))
            solve(*self._upper[:1], B, True, self._upper[1])
        else:
            if self._lower is None:
                self._lower = block_inverses(self.Lw)
            solve(self.Lw, B, False, self._lower)

    def mirror(self):
        mirror_lower(self.A)

    def half(self):
        mirror_lower(self.A, 0.5, 0.5)

    def phi(self):
        phi_lower(self.A)


class _PerMatrix:
    """T ← op(L)⁻¹ T, T op(L)⁻¹ ("trsm") or op(L) T, T op(L) ("trmm") for every matrix of a chunk.

    BLAS, one matrix at a time.  ``Lw`` (the factors, lower form) and ``T``
    are C-ordered (c, N, N) chunks, so each matrix is the column-major
    storage of its transpose: BLAS sees U = Lᵀ (upper) and Tᵀ, and the
    logical T ← op(L) T is Tᵀ ← Tᵀ op(L)ᵀ, the other side with the same op
    on U.  Both chunks are checked, and their addresses taken, once, when
    this is made; every call then steps through the same addresses.
    Everything goes through scipy's BLAS, as the single-matrix path does:
    numpy's matmul would call numpy's own OpenBLAS, whose threads, spinning
    after a product, took the cores from scipy's (notes: Design, "Stacks").
    """

    __slots__ = ("blas", "args")

    def __init__(self, Lw, T):
        c, n = Lw.shape[0], Lw.shape[-1]
        if not (Lw.flags.c_contiguous and T.flags.c_contiguous and T.shape == Lw.shape
                and T.dtype == Lw.dtype and T.dtype in PREFIX):
            raise ValueError("internal error: per-matrix BLAS needs two C-ordered chunks of one "
                             "shape and BLAS dtype, got %s %s and %s %s"
                             % (Lw.shape, Lw.dtype, T.shape, T.dtype))
        self.blas = routines(T.dtype)
        self.args = (n, 1.0, Lw.__array_interface__["data"][0], T.__array_interface__["data"][0],
                     n * n * T.itemsize, c)

    def __call__(self, routine, side, op):
        each = self.blas.trsm_each if routine == "trsm" else self.blas.trmm_each
        each("R" if side == "L" else "L", "U", op, *self.args)


class _OneMatrix:
    """:class:`_PerMatrix` for a chunk of one matrix (a single small matrix): scipy's own BLAS wrappers.

    On these Fortran-ordered transposes of the right dtype they work in
    place without copying, and for one matrix they cost less than packing
    arguments for the raw bindings (notes: Design, "Paths").
    """

    __slots__ = ("L", "T", "blas")

    _OP = {"N": 0, "T": 1, "C": 2}

    def __init__(self, Lw, T):
        if not (Lw.flags.c_contiguous and T.flags.c_contiguous and T.shape == Lw.shape
                and T.dtype == Lw.dtype and T.dtype in PREFIX and len(T) == 1):
            raise ValueError("internal error: one-matrix BLAS needs two C-ordered (1, N, N) chunks "
                             "of one BLAS dtype, got %s %s and %s %s"
                             % (Lw.shape, Lw.dtype, T.shape, T.dtype))
        self.L, self.T = Lw[0].T, T[0].T            # U = Lᵀ and Tᵀ, Fortran-ordered
        self.blas = dict(zip(("trsm", "trmm"), _SCIPY_BLAS[T.dtype]))

    def __call__(self, routine, side, op):
        # scipy's wrappers: (alpha, a, b, side: 0 left / 1 right, lower, trans_a, diag, overwrite_b)
        self.blas[routine](1.0, self.L, self.T, side == "L", 0, self._OP[op], 0, 1)


_SCIPY_BLAS = {dtype: tuple(get_blas_funcs(name, dtype=dtype) for name in ("trsm", "trmm"))
               for dtype in PREFIX}


def _per_matrix(routine, side, op, Lw, T):
    """One step of :class:`_PerMatrix` on the chunks ``Lw`` and ``T``."""
    _PerMatrix(Lw, T)(routine, side, op)


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


# --------------------------------------------------------------------------
# The stacked sweeps


def _kernel_rev(D, A):
    """The unblocked reverse sweep on the diagonal blocks of a chunk, in place (Murray's column loop).

    On entry A holds D̄ in its lower triangle; on exit the whole block holds
    X = G + Gᴴ (see :func:`.sweep.kernel_rev`).  With r, d, B, c the row left of, the
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


def sweep_rev(Lw, A, nb, symmetric):
    """A ← G (or S): the blocked sweep of :mod:`.sweep`, stacked."""
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
        _kernel_rev(D, Db)                                           # D̄ ← X
        if j:
            A[:, j:k, :j] -= herm(A[:, j:, j:k]) @ Lw[:, j:, :j]     # R̄ ← R̄ − [X; C̄]ᴴ [R; B]
        phi_lower(Db)                                                # D̄ ← Φ(X)
    if symmetric:
        mirror_lower(A, 0.5, 1.0)


def _kernel_fwd(D, Z):
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


def sweep_fwd(Lw, T, nb):
    """T ← L̇: the forward blocked sweep of :mod:`.sweep`, stacked."""
    n = Lw.shape[-1]
    for j in range(0, n, nb):
        k = min(j + nb, n)
        D = Lw[:, j:k, j:k]
        if j:
            panel = T[:, j:, j:k]                                    # [K̇_DD; K̇_CD]
            panel -= T[:, j:, :j] @ herm(Lw[:, j:k, :j])             #   − [Ṙ; Ḃ] Rᴴ
            panel -= Lw[:, j:, :j] @ herm(T[:, j:k, :j])             #   − [R; B] Ṙᴴ
        _kernel_fwd(D, T[:, j:k, j:k])                               # Ḋ
        if k < n:
            Cd = T[:, k:, j:k]
            Cd -= Lw[:, k:, j:k] @ herm(T[:, j:k, j:k])             # Y − C Ḋᴴ
            Ct = np.ascontiguousarray(herm(Cd))
            solve(D, Ct, False)                                      # Ċᴴ = D⁻¹ (...)ᴴ
            Cd[...] = herm(Ct)


# --------------------------------------------------------------------------
# Tiny matrices: the reverse closed form with the matrix index last
#
# Up to TINY_N a product or a triangular solve on one matrix is a few dozen
# flops, and any per-matrix call -- numpy's stacked matmul calls BLAS once per
# matrix -- costs more than the arithmetic.  Here the chunk is transposed once
# to shape (N, N, count), so that every step of a substitution is a vector
# operation over all matrices at once, contiguous along the matrix index, and
# nothing calls BLAS (so the plan may share the chunks among as many worker
# threads as there are cores, whatever the BLAS pools hold).  The arithmetic
# is that of closed_rev: P = Φ(Lᴴ L̄) from the triangles, M = P + Pᴴ,
# Y = L⁻ᴴ M by back substitution, and X = Y L⁻¹ computed as Xᴴ = L⁻ᴴ Yᴴ, of
# which the lower triangle of X is kept: closed_rev's steps, on BatchLast.


def _back_substitute(Lc, Y, pivots):
    """Y ← L⁻ᴴ Y in place, every array matrix index last: Lc = conj(L) (N, N, c), Y (N, m, c).

    Lᴴ is upper triangular: Y_i ← (Y_i − Σ_{k>i} conj(L_ki) Y_k) / L_ii, from the last row up.
    """
    n = Y.shape[0]
    for i in range(n - 1, -1, -1):
        if i + 1 < n:
            Y[i] -= np.einsum("kc,kjc->jc", Lc[i + 1:, i], Y[i + 1:])
        Y[i] /= pivots[i]


def batch_last_rev(buffers, L, X, symmetric, conj, scale_exp):
    """G = Φ(X) (or S = ½ X) for a chunk by :func:`.closed.closed_rev` on :class:`BatchLast`.

    ``L`` and ``X`` (L̄) are the chunk's (c, N, N) views in lower
    orientation, as :func:`_run_chunk` gets them (``conj``: the matrices
    are the conjugates of the views); only their lower triangles are read.
    Returns the result as a (c, N, N) view into ``buffers``, in the logical
    lower form, for the caller to store: three (N, N, c) C-ordered arrays of
    the dtype to work in (fresh memory would cost page faults every call).
    ``scale_exp``: X is shrunk by 2^-scale_exp on the way in (the caller
    grows the result back).
    """
    Lc, M, Z = buffers
    complex_ = Lc.dtype.kind == "c"          # the computation's dtype, not the arguments'
    # conj(L)[i, j] is Lc[i, j, :]: only the conjugate is used, and the pivots are real.
    _transpose_in(Lc, L, complex_ and not conj)
    _transpose_in(M, X, complex_ and conj)                     # L̄, matrix index last
    if scale_exp:
        M *= 2.0 ** -scale_exp
    closed_rev(BatchLast(Lc, M, Z), symmetric)
    return M.transpose(2, 0, 1)


class BatchLast:
    """The reverse closed form's operations on (N, N, c) arrays, the matrix index last.

    ``Lc`` holds conj(L), ``M`` the working matrices, ``Z`` room for the
    transposed ones.  Every step is a loop over rows of vector operations
    across the chunk.  The second solve leaves Xᴴ in ``Z``, and the last
    step (Φ or ½) reads X's lower triangle from there, the accurate one, in
    the same pass that writes the result into ``M``.  Only the steps of
    :func:`.closed.closed_rev` are written: tiny stacks take this form in
    reverse only (:func:`takes_batch_last`).
    """

    def __init__(self, Lc, M, Z):
        self.Lc, self.M, self.Z = Lc, M, Z
        n = Lc.shape[0]
        self.n, self.complex = n, Lc.dtype.kind == "c"
        self.pivots = Lc[np.arange(n), np.arange(n)].real       # (N, c)

    def adjoint_product(self):
        """M ← Lᴴ L̄ on and below the diagonal: P[i, :i+1] = Σ_{k≥i} conj(L[k, i]) L̄[k, :i+1]."""
        Lc, M = self.Lc, self.M
        for i in range(self.n):
            M[i, :i + 1] = np.einsum("kc,kjc->jc", Lc[i:, i], M[i:, :i + 1])

    def mirror(self):
        """M ← Φ(M) + Φ(M)ᴴ from the lower triangle."""
        M = self.M
        for i in range(self.n):
            M[i, i] = M[i, i].real
            M[:i, i] = M[i, :i].conj() if self.complex else M[i, :i]

    def solve(self, side, adjoint):
        if (side, adjoint) == ("L", True):
            _back_substitute(self.Lc, self.M, self.pivots)       # Y = L⁻ᴴ M
        elif (side, adjoint) == ("R", False):
            if self.complex:                                     # Z = L⁻ᴴ Yᴴ = Xᴴ
                np.conjugate(self.M.transpose(1, 0, 2), out=self.Z)
            else:
                np.copyto(self.Z, self.M.transpose(1, 0, 2))
            _back_substitute(self.Lc, self.Z, self.pivots)
        else:
            raise NotImplementedError("the matrix-index-last form has the reverse steps only")

    def phi(self):
        self._from_transposed(False)

    def half(self):
        self._from_transposed(True)

    def _from_transposed(self, symmetric):
        """M ← Φ(X), or ½ X made Hermitian, from Z = Xᴴ (X_ij = conj(Z_ji))."""
        M, Z = self.M, self.Z
        for i in range(self.n):
            M[i, :i] = Z[:i, i].conj() if self.complex else Z[:i, i]   # X's strict lower triangle
            M[i, i] = Z[i, i].real * 0.5
            if symmetric:
                M[i, :i] *= 0.5
                M[i, i + 1:] = Z[i, i + 1:] * 0.5                       # S = ½ (X_L + X_Lᴴ)
            else:
                M[i, i + 1:] = 0


def _transpose_in(dest, a, conjugate):
    """dest (N, N, c) ← a (c, N, N) with the matrix index last, conjugated if asked."""
    if conjugate:
        np.conjugate(a.transpose(1, 2, 0), out=dest)
    else:
        np.copyto(dest, a.transpose(1, 2, 0))
