"""Slow reference forms of the Cholesky derivatives, for tests and benchmarks.

All take a *lower* factor L (K = L Lᴴ) and read only the lower triangles of
their arguments.  They favour clarity over speed and are what the blocked
code in :mod:`blockchol` is checked against:

* :func:`smith_rev` -- the scalar triple loop of Smith (1995), real only;
* :func:`level2_rev` -- the same sweep one column at a time with vector
  operations (Murray 2016, "chol_unblocked_rev");
* :func:`symbolic_rev` -- the closed form Φ(L⁻ᴴ (P + Pᴴ) L⁻¹), P = Φ(Lᴴ L̄);
* :func:`symbolic_fwd` -- the forward derivative L Φ(L⁻¹ K̇ L⁻ᴴ).

The reverse forms return the triangular gradient G (Smith/Murray/GPy
convention): df = Re Σ_{i≥j} conj(G_ij) dK_ij.
"""

import numpy as np
from scipy.linalg import solve_triangular

__all__ = ["smith_rev", "level2_rev", "symbolic_rev", "symbolic_fwd", "phi", "hermitian_from_lower"]


def phi(x):
    """Φ(X): the lower triangle of X with its diagonal halved."""
    out = np.tril(x)
    out[np.diag_indices_from(out)] *= 0.5
    return out


def hermitian_from_lower(x):
    """The Hermitian matrix whose lower triangle is that of ``x``."""
    low = np.tril(x, -1)
    return low + low.conj().T + np.diag(np.diag(x).real).astype(x.dtype)


def _work_copy(L, L_bar):
    L = np.asarray(L)
    dtype = np.result_type(L, L_bar, np.float64)
    return np.array(L, dtype=dtype), np.tril(np.asarray(L_bar)).astype(dtype)


def smith_rev(L, L_bar):
    """Smith's scalar reverse sweep, in pure Python (real matrices only).

    O(N³) interpreted operations: about a second at N = 200.
    """
    Lw, A = _work_copy(L, L_bar)
    if np.iscomplexobj(A):
        raise TypeError("smith_rev is the real-valued scalar loop; use level2_rev for complex")
    n = A.shape[0]
    l = Lw.tolist()
    a = A.tolist()
    for k in range(n - 1, -1, -1):
        # Undo the updates that column k made to the trailing columns.
        for j in range(k + 1, n):
            for i in range(j, n):
                a[i][k] -= a[i][j] * l[j][k]
                a[j][k] -= a[i][j] * l[i][k]
        # Undo the scaling of column k and the square root on its pivot.
        lkk = l[k][k]
        for j in range(k + 1, n):
            a[j][k] /= lkk
            a[k][k] -= l[j][k] * a[j][k]
        a[k][k] /= 2.0 * lkk
    return np.array(a, dtype=A.dtype).reshape(n, n)


def level2_rev(L, L_bar):
    """Murray's unblocked reverse sweep: one column at a time, right to left.

    With r, d, B, c the row left of, the pivot of, the block below-left of
    and the column below the pivot j (and the same slices of Ā)::

        d̄ ← (d̄ − Re(cᴴ c̄)/d)/d;  c̄ ← c̄/d;  r̄ ← r̄ − d̄ r − c̄ᴴ B;  B̄ ← B̄ − c̄ r;  d̄ ← d̄/2
    """
    Lw, A = _work_copy(L, L_bar)
    n = A.shape[0]
    for j in range(n - 1, -1, -1):
        d = Lw[j, j].real
        r, B, c = Lw[j, :j], Lw[j + 1:, :j], Lw[j + 1:, j]
        rb, Bb, cb = A[j, :j], A[j + 1:, :j], A[j + 1:, j]
        db = (A[j, j].real - np.vdot(c, cb).real / d) / d
        cb /= d
        rb -= db * r + cb.conj() @ B
        Bb -= np.outer(cb, r)
        A[j, j] = db / 2
    return A


def symbolic_rev(L, L_bar):
    """The closed form Φ(L⁻ᴴ (P + Pᴴ) L⁻¹) with P = Φ(Lᴴ L̄) (Murray 2016, eq. 10)."""
    Lw, A = _work_copy(L, L_bar)
    Lw = np.tril(Lw)
    P = phi(Lw.conj().T @ A)
    X = solve_triangular(Lw, P + P.conj().T, lower=True, trans="C")
    X = solve_triangular(Lw, X.conj().T, lower=True, trans="C").conj().T
    return phi(X)


def symbolic_fwd(L, K_dot):
    """L̇ = L Φ(L⁻¹ K̇ L⁻ᴴ), with K̇ the Hermitian matrix of K_dot's lower triangle."""
    Lw, Kd = _work_copy(L, K_dot)
    Lw = np.tril(Lw)
    Kd = hermitian_from_lower(Kd)
    X = solve_triangular(Lw, Kd, lower=True)
    X = solve_triangular(Lw, X.conj().T, lower=True).conj().T
    return Lw @ phi(X)
