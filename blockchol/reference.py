"""Slow reference forms of the Cholesky derivatives, for tests and benchmarks.

All take a *lower* factor L (K = L Lᴴ) and read only the lower triangles of
their arguments.  They favour clarity over speed and are what the fast code
in :mod:`blockchol` is checked against:

* :func:`smith_rev` -- the scalar triple loop of Smith (1995), real only;
* :func:`sweep_rev` -- the same sweep one column at a time with vector
  operations (Murray 2016, "chol_unblocked_rev");
* :func:`closed_rev` -- the closed form Φ(L⁻ᴴ (P + Pᴴ) L⁻¹), P = Φ(Lᴴ L̄);
* :func:`closed_fwd` -- the forward derivative L Φ(L⁻¹ K̇ L⁻ᴴ).

The reverse forms return the triangular gradient G (Smith/Murray/GPy
convention): df = Re Σ_{i≥j} conj(G_ij) dK_ij.

:func:`covariance_problem` makes the matrices users actually factor -- RBF and
Matérn-5/2 kernel matrices of sorted (time-series) or unsorted 1-D inputs
with a small jitter -- on which the sweeps lose accuracy and random
matrices without kernel structure hide it.

The closed forms take a ``dtype``: with ``np.longdouble`` (x86's 80-bit
extended precision, ε ≈ 5.4e-20) or ``np.clongdouble`` they are the
extended-precision truths the accuracy tests measure against, evaluated
from the same float64 inputs.  Their triangular solves are then plain
numpy substitution (LAPACK has no extended precision), far slower than
float64's.
"""

import numpy as np
from scipy.linalg import solve_triangular

from .core.threads import CORES, parallel_map

__all__ = ["smith_rev", "sweep_rev", "closed_rev", "closed_fwd", "phi",
           "hermitian_from_lower", "COVARIANCES", "covariance_problem", "relative_error", "typical_error"]


def phi(x):
    """Φ(X): the lower triangle of X with its diagonal halved."""
    out = np.tril(x)
    out[np.diag_indices_from(out)] *= 0.5
    return out


def hermitian_from_lower(x):
    """The Hermitian matrix whose lower triangle is that of ``x``."""
    low = np.tril(x, -1)
    return low + low.conj().T + np.diag(np.diag(x).real).astype(x.dtype)


def _work_copy(L, X, dtype=None):
    L, X = np.asarray(L), np.asarray(X)
    if dtype is None:
        dtype = np.result_type(L, X, np.float64)
    elif np.iscomplexobj(L) or np.iscomplexobj(X):
        dtype = np.result_type(dtype, np.complex64)
    return np.tril(L).astype(dtype), np.tril(X).astype(dtype)


def smith_rev(L, L_bar):
    """Smith's scalar reverse sweep, in pure Python (real matrices only).

    O(N³) interpreted operations: the bench's oldest anchor (notes: Benchmarks).
    """
    Lw, A = _work_copy(L, L_bar)
    if np.iscomplexobj(A):
        raise TypeError("smith_rev is the real-valued scalar loop; use sweep_rev for complex")
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


def sweep_rev(L, L_bar, dtype=None):
    """Murray's unblocked reverse sweep: one column at a time, right to left.

    With r, d, B, c the row left of, the pivot of, the block below-left of
    and the column below the pivot j (and the same slices of Ā)::

        d̄ ← (d̄ − Re(cᴴ c̄)/d)/d;  c̄ ← c̄/d;  r̄ ← r̄ − d̄ r − c̄ᴴ B;  B̄ ← B̄ − c̄ r;  d̄ ← d̄/2

    ``dtype`` (default: float64, or the inputs' wider type) sets the
    working precision, for the accuracy comparisons.
    """
    Lw, A = _work_copy(L, L_bar, dtype)
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


#: The dtypes LAPACK and BLAS have; every other precision is computed by numpy alone.
_LAPACK_DTYPES = (np.float32, np.float64, np.complex64, np.complex128)


def _solve_lower(L, B, adjoint=False):
    """L⁻¹ B, or L⁻ᴴ B with ``adjoint``, for lower triangular L, in any precision numpy has.

    float32/64 and complex go to LAPACK; long double by blocked substitution,
    its column panels on threads (numpy's matmul releases the GIL, and
    without BLAS this precision is the truths' whole cost).
    """
    if L.dtype in _LAPACK_DTYPES:
        return solve_triangular(L, B, lower=True, trans="C" if adjoint else "N")
    X = np.array(B, dtype=np.result_type(L, B))
    _column_panels(X.shape[1], lambda a, b: _substitute(L, X[:, a:b], adjoint))
    return X


def _matmul(A, B):
    """A @ B, in column panels on threads where there is no BLAS (as :func:`_solve_lower`)."""
    if A.dtype in _LAPACK_DTYPES:
        return A @ B
    out = np.empty((A.shape[0], B.shape[1]), np.result_type(A, B))
    _column_panels(B.shape[1], lambda a, b: np.matmul(A, B[:, a:b], out=out[:, a:b]))
    return out


def _column_panels(ncols, fn):
    """fn(a, b) for column panels [a, b) covering ncols columns, one per core, on threads."""
    bounds = np.linspace(0, ncols, min(CORES, ncols) + 1).astype(int)
    parallel_map(lambda ab: fn(*ab), list(zip(bounds[:-1].tolist(), bounds[1:].tolist())))


def _substitute(L, X, adjoint):
    """X ← L⁻¹ X or L⁻ᴴ X in place, by blocks of 32 rows."""
    T = L.conj().T if adjoint else L
    n, nb = T.shape[0], 32
    order = range(0, n, nb) if not adjoint else range(((n - 1) // nb) * nb, -1, -nb)
    for i0 in order:
        i1 = min(i0 + nb, n)
        rows = range(i0, i1) if not adjoint else range(i1 - 1, i0 - 1, -1)
        if not adjoint and i0:
            X[i0:i1] -= T[i0:i1, :i0] @ X[:i0]
        if adjoint and i1 < n:
            X[i0:i1] -= T[i0:i1, i1:] @ X[i1:]
        for i in rows:
            part = slice(i0, i) if not adjoint else slice(i + 1, i1)
            X[i] = (X[i] - T[i, part] @ X[part]) / T[i, i]


def closed_rev(L, L_bar, dtype=None):
    """The closed form Φ(L⁻ᴴ (P + Pᴴ) L⁻¹) with P = Φ(Lᴴ L̄) (Murray 2016, eq. 10).

    Two full triangular solves, Y = L⁻ᴴ (P + Pᴴ) and X = Y L⁻¹, keeping
    X's lower triangle, the accurate one in float64 (notes.md).  ``dtype``
    sets the working precision (``np.longdouble`` for the truths).
    """
    Lw, A = _work_copy(L, L_bar, dtype)
    P = phi(_matmul(Lw.conj().T, A))
    Y = _solve_lower(Lw, P + P.conj().T, adjoint=True)
    X = _solve_lower(Lw, Y.conj().T, adjoint=True).conj().T
    return phi(X)


def closed_fwd(L, K_dot, dtype=None):
    """L̇ = L Φ(L⁻¹ K̇ L⁻ᴴ), with K̇ the Hermitian matrix of K_dot's lower triangle.

    Two full triangular solves, Y = K̇ L⁻ᴴ and X = L⁻¹ Y, keeping X's lower
    triangle, the accurate one in float64 (notes.md); ``dtype`` as in
    :func:`closed_rev`.
    """
    Lw, Kd = _work_copy(L, K_dot, dtype)
    Kd = hermitian_from_lower(Kd)
    Y = _solve_lower(Lw, Kd.conj().T).conj().T
    X = _solve_lower(Lw, Y)
    return _matmul(Lw, phi(X))


def _rbf(r):
    return np.exp(-0.5 * r * r)


def _matern52(r):
    s = np.sqrt(5.0) * r
    return (1.0 + s + s * s / 3.0) * np.exp(-s)


#: The kernel families of :func:`covariance_problem`, as functions of the scaled distance r = |x - x'| / ℓ.
COVARIANCES = {"rbf": _rbf, "matern52": _matern52}


def covariance_problem(kernel, n, jitter, *, seed=0, sort=True, lengthscale=0.1, cotangent="random",
                   dtype=np.float64):
    """``(K, L, L_bar)``: a GP kernel matrix, its lower factor, and a cotangent for it.

    K = k(|x_i − x_j| / ℓ) + jitter · I for n inputs uniform on [0, 1]
    (sorted by default, as time series come), k one of :data:`COVARIANCES`.
    For a complex ``dtype`` the kernel is multiplied by exp(i 2π (x_i − x_j)),
    which keeps it Hermitian positive definite.  ``cotangent`` is
    ``"random"`` (standard normal in the lower triangle) or ``"gp"``, the
    gradient with respect to L of the GP log likelihood
    −½ yᵀ K⁻¹ y − Σ log L_ii for a standard normal y:
    L̄ = tril(L⁻ᴴ α αᴴ) − diag(1 / L_ii) with α = L⁻¹ y.  L is computed
    in ``dtype`` (numpy's Cholesky); LinAlgError when K is not positive
    definite at that precision.
    """
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 1.0, n)
    if sort:
        x = np.sort(x)
    d = x[:, None] - x[None, :]
    K = COVARIANCES[kernel](np.abs(d) / lengthscale) + jitter * np.eye(n)
    complex_ = np.issubdtype(dtype, np.complexfloating)
    if complex_:
        K = K * np.exp(2j * np.pi * d)
    K = K.astype(dtype)
    L = np.linalg.cholesky(K)
    if cotangent == "random":
        Lb = rng.standard_normal((n, n))
        if complex_:
            Lb = Lb + 1j * rng.standard_normal((n, n))
        Lb = np.tril(Lb).astype(dtype)
    elif cotangent == "gp":
        y = rng.standard_normal(n).astype(dtype)
        a = solve_triangular(L, y, lower=True)
        b = solve_triangular(L, a, lower=True, trans="C")
        Lb = (np.tril(np.outer(b, a.conj())) - np.diag(1.0 / np.diag(L))).astype(dtype)
    else:
        raise ValueError("cotangent must be 'random' or 'gp', got %r" % (cotangent,))
    return K, L, Lb


def relative_error(a, truth):
    """Normwise relative error ‖a − truth‖_F / ‖truth‖_F, the difference taken in extended precision."""
    t = np.asarray(truth, dtype=np.clongdouble if np.iscomplexobj(truth) else np.longdouble)
    d = np.asarray(a).astype(t.dtype) - t
    low = np.complex128 if np.iscomplexobj(t) else np.float64
    return float(np.linalg.norm(d.astype(low)) / np.linalg.norm(t.astype(low)))


def typical_error(fn, X, truth, dtype=np.float64, patterns=17):
    """The geometric mean over ``patterns`` rounding patterns of relative_error(fn(X·s)/s, truth).

    s = 1 + k·2⁻⁴¹ (2⁻¹⁸ in single precision), k = −8 … 8: every operation
    rounds differently while the exact result, linear in X, only scales.  On
    ill-conditioned kernel matrices one draw of a sweep's error varies by up
    to 40× between rounding patterns, and two implementations of the same
    unblocked sweep differed by up to 6.6× on 5-9 patterns and 2.7× on 17
    (notes.md, "Accuracy"), so sweeps are compared by this typical error.
    """
    bits = 41 if np.finfo(dtype).bits == 64 else 18
    logs = []
    for k in range(-(patterns // 2), patterns // 2 + 1):
        s = 1.0 + k * 2.0 ** -bits
        logs.append(np.log(relative_error(np.asarray(fn((X * s).astype(X.dtype))) / s, truth)))
    return float(np.exp(np.mean(logs)))
