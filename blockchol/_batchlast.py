"""Stacks of tiny matrices: the reverse closed form with the matrix index last.

Up to :data:`TINY_N` a product or a triangular solve on one matrix is a
few dozen flops, and any per-matrix call -- numpy's stacked matmul calls
BLAS once per matrix -- costs more than the arithmetic.  Here the chunk
is transposed once to shape (N, N, count), so that every step of a
substitution is a vector operation over all matrices at once, contiguous
along the matrix index, and nothing calls BLAS (so the plan may share the
chunks among as many worker threads as there are cores, whatever the
BLAS pools hold).

The arithmetic is that of :mod:`._closed`: P = Φ(Lᴴ L̄) from the
triangles, M = P + Pᴴ, Y = L⁻ᴴ M by back substitution, and X = Y L⁻¹
computed as Xᴴ = L⁻ᴴ Yᴴ, of which the lower triangle of X is kept (the
accurate one, notes.md "Accuracy").  The solves are plain substitution,
row by row, with no inverted blocks.
"""

import numpy as np

__all__ = ["TINY_N", "takes", "rev_closed"]

#: Largest N whose stacks take this path in reverse, real and complex (measurements in notes.md:
#: against the stacked alternatives it was 1.4-2.6× faster up to these, slower beyond).
TINY_N = {"real": 20, "complex": 10}


def takes(n, dtype):
    """Whether a stack of N×N matrices of ``dtype`` takes this path in reverse."""
    return n <= TINY_N["complex" if np.dtype(dtype).kind == "c" else "real"]


def _back_substitute(Lc, Y, pivots):
    """Y ← L⁻ᴴ Y in place, every array matrix index last: Lc = conj(L) (N, N, c), Y (N, m, c).

    Lᴴ is upper triangular: Y_i ← (Y_i − Σ_{k>i} conj(L_ki) Y_k) / L_ii, from the last row up.
    """
    n = Y.shape[0]
    for i in range(n - 1, -1, -1):
        if i + 1 < n:
            Y[i] -= np.einsum("kc,kjc->jc", Lc[i + 1:, i], Y[i + 1:])
        Y[i] /= pivots[i]


def rev_closed(Lw, A, buffers):
    """A ← X = L⁻ᴴ (P + Pᴴ) L⁻¹ for a chunk, P = Φ(Lᴴ L̄); only X's lower triangle is accurate.

    ``Lw`` and ``A`` are (c, N, N) chunks in the logical lower form, zeros
    above the diagonal; A holds L̄ on entry.  The caller reduces X to G or S.
    ``buffers`` are three (N, N, c) C-ordered arrays of the dtype to work in
    (fresh memory would cost page faults every call: 11.4 against 4.5 ms
    for a chunk of 4096 8×8 matrices).
    """
    n = Lw.shape[-1]
    complex_ = Lw.dtype.kind == "c"
    Lc, M, Z = buffers
    # conj(L)[i, j] is Lc[i, j, :]: only the conjugate is used, and the pivots are real.
    if complex_:
        np.conjugate(Lw.transpose(1, 2, 0), out=Lc)
    else:
        np.copyto(Lc, Lw.transpose(1, 2, 0))
    pivots = Lc[np.arange(n), np.arange(n)].real               # (N, c)
    np.copyto(M, A.transpose(1, 2, 0))                         # L̄, matrix index last
    for i in range(n):                  # P[i, :i+1] = Σ_{k≥i} conj(L[k, i]) L̄[k, :i+1], over L̄'s row i
        M[i, :i + 1] = np.einsum("kc,kjc->jc", Lc[i:, i], M[i:, :i + 1])
    for i in range(n):                  # M = Φ(P) + Φ(P)ᴴ
        M[i, i] = M[i, i].real
        M[:i, i] = M[i, :i].conj() if complex_ else M[i, :i]
    _back_substitute(Lc, M, pivots)                            # Y = L⁻ᴴ M
    if complex_:
        np.conjugate(M.transpose(1, 0, 2), out=Z)
    else:
        np.copyto(Z, M.transpose(1, 0, 2))
    _back_substitute(Lc, Z, pivots)                            # Z = L⁻ᴴ Yᴴ = Xᴴ
    X = Z.transpose(2, 1, 0)                                   # (c, N, N): X = Zᴴ
    if complex_:
        np.conjugate(X, out=A)
    else:
        A[...] = X
