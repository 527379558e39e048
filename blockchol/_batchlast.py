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

__all__ = ["TINY_N", "takes", "rev_chunk"]

#: Largest N whose stacks take this path in reverse, real and complex (measurements in notes.md:
#: against the stacked alternatives it was 1.4-2.6× faster up to these, slower beyond).
TINY_N = {"real": 20, "complex": 10}


def takes(direction, method, n, dtype):
    """Whether a stack of N×N matrices of ``dtype`` takes this form (reverse, closed form only)."""
    return (direction == "rev" and method == "closed"
            and n <= TINY_N["complex" if np.dtype(dtype).kind == "c" else "real"])


def _back_substitute(Lc, Y, pivots):
    """Y ← L⁻ᴴ Y in place, every array matrix index last: Lc = conj(L) (N, N, c), Y (N, m, c).

    Lᴴ is upper triangular: Y_i ← (Y_i − Σ_{k>i} conj(L_ki) Y_k) / L_ii, from the last row up.
    """
    n = Y.shape[0]
    for i in range(n - 1, -1, -1):
        if i + 1 < n:
            Y[i] -= np.einsum("kc,kjc->jc", Lc[i + 1:, i], Y[i + 1:])
        Y[i] /= pivots[i]


def rev_chunk(buffers, L, X, symmetric, conj, scale_exp):
    """G = Φ(X) (or S = ½ X made Hermitian) for a chunk, X = L⁻ᴴ (P + Pᴴ) L⁻¹, P = Φ(Lᴴ L̄).

    ``L`` and ``X`` (L̄) are the chunk's (c, N, N) views in lower
    orientation, as :func:`._stacked.run_chunk` gets them (``conj``: the
    matrices are the conjugates of the views); only their lower triangles
    are read.  Returns the result as a (c, N, N) view into ``buffers``, in
    the logical lower form, for the caller to store: three (N, N, c)
    C-ordered arrays of the dtype to work in (fresh memory would cost page
    faults every call: 11.4 against 3.7 ms for a chunk of 4096 8×8
    matrices).  ``scale_exp``: X is shrunk by 2^-scale_exp on the way in
    (the caller grows the result back).
    """
    n = L.shape[-1]
    complex_ = L.dtype.kind == "c"
    Lc, M, Z = buffers
    # conj(L)[i, j] is Lc[i, j, :]: only the conjugate is used, and the pivots are real.
    _transpose_in(Lc, L, complex_ and not conj)
    pivots = Lc[np.arange(n), np.arange(n)].real               # (N, c)
    _transpose_in(M, X, complex_ and conj)                     # L̄, matrix index last
    if scale_exp:
        M *= 2.0 ** -scale_exp
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
    _back_substitute(Lc, Z, pivots)                            # Z = L⁻ᴴ Yᴴ = Xᴴ: X_ij = conj(Z_ji)
    # The result into M, from X's lower triangle (Z's upper), the accurate one.
    for i in range(n):
        M[i, :i] = Z[:i, i].conj() if complex_ else Z[:i, i]  # X's strict lower triangle
        M[i, i] = Z[i, i].real * 0.5
        if symmetric:
            M[i, :i] *= 0.5
            M[i, i + 1:] = Z[i, i + 1:] * 0.5                  # S = ½ (X_L + X_Lᴴ), X_L strict
        else:
            M[i, i + 1:] = 0
    return M.transpose(2, 0, 1)


def _transpose_in(dest, a, conjugate):
    """dest (N, N, c) ← a (c, N, N) with the matrix index last, conjugated if asked."""
    if conjugate:
        np.conjugate(a.transpose(1, 2, 0), out=dest)
    else:
        np.copyto(dest, a.transpose(1, 2, 0))
