"""Shared test helpers: random factors, layouts, error measures, a fresh interpreter."""

import hashlib
import os
import subprocess
import sys

import numpy as np
from threadpoolctl import threadpool_limits

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

EPS = {np.dtype(np.float32): np.finfo(np.float32).eps,
       np.dtype(np.float64): np.finfo(np.float64).eps,
       np.dtype(np.complex64): np.finfo(np.float32).eps,
       np.dtype(np.complex128): np.finfo(np.float64).eps}


def eps(dtype):
    """Unit roundoff ×2 (machine epsilon) of ``dtype``'s real type: 2⁻²³ for float32/complex64, 2⁻⁵² for float64/complex128."""
    return float(np.finfo(np.dtype(dtype)).eps)


def condition(L, lower=True):
    """κ₂ = σ_max / σ_min of the read triangle of ``L`` (lower or upper; of a stack: the largest).

    Remembered per factor (by its bytes): the tests ask for the same factor's κ in loops,
    and an SVD per comparison would cost more than the comparisons.  The SVD runs on one
    BLAS thread (two threads spinning on shared cores cost 10-100× its work).
    """
    L = np.asarray(L, dtype=np.complex128 if np.iscomplexobj(L) else np.float64)
    L = np.ascontiguousarray(np.tril(L) if lower else np.triu(L))
    if L.size == 0:
        return 1.0
    key = (L.shape, L.dtype.str, hashlib.sha1(L.tobytes()).hexdigest())
    if key not in _CONDITION:
        if len(_CONDITION) > 512:
            _CONDITION.clear()
        with threadpool_limits(1, user_api="blas"):     # an SVD: one thread is cheaper on shared cores
            _CONDITION[key] = float(np.max(np.linalg.cond(L)))
    return _CONDITION[key]


_CONDITION = {}


def tol(dtype, kappa=1.0, c=None, n=None):
    """The bar for a normwise relative error of a result in ``dtype``: c · eps(dtype) · κ².

    The bound behind it.  Both closed forms are two full triangular solves
    around triangular products: G = Φ(L⁻ᴴ (P + Pᴴ) L⁻¹) with P = Φ(Lᴴ L̄),
    and L̇ = L Φ(L⁻¹ K̇ L⁻ᴴ).  A computed triangular solve with N unknowns is
    the exact solve of a matrix within γ_N |L| of L (γ_N = N u / (1 − N u),
    u = eps / 2; Higham, *Accuracy and Stability*, Thm 8.5), so each solve
    adds a relative error of at most γ_N κ(L) to what it solves, and the
    products' rounding (γ_N |L|ᴴ |L̄|), carried through both solves, at most
    γ_N ‖L⁻¹‖² ‖L‖ ‖L̄‖ ≤ γ_N κ(L)² ‖result‖ when P + Pᴴ does not cancel
    (a random cotangent).  To first order::

        ‖computed − exact‖_F / ‖exact‖_F ≤ c_N · eps · κ₂(L)²

    with c_N = O(N) in the worst case.  Rounding errors are not worst-case:
    treated as independent and of mean zero, an inner product of N terms
    errs by at most λ √N u with probability ≥ 1 − 2 exp(−λ²/2) (Higham and
    Mary, SIAM J. Sci. Comput. 41, 2019), which gives c_N = O(√N).  The
    default ``c = c_n(n)`` = 4 √(N + 1) is that bound with the three stages
    (products, two solves) and λ ≈ 3 folded in; over thousands of drawn
    problems (tests/test_paths_agree.py, every path, every dtype, both
    methods) the largest error measured was 0.8 √(N + 1) eps κ², so the bar
    leaves a factor 5 for other BLAS kernels and summation orders, and any
    error that is not rounding -- a wrong triangle, sign or conjugate
    (O(1)), a float64 result computed in float32 (1e-8) -- lies orders of
    magnitude above it.  Comparing two computations, each within the bar of
    the exact result, takes ``c = 2 c_n(n)``.

    The sweeps compute the same function with the same rounding per entry
    and stay within the bar on well-conditioned factors; on ill-conditioned
    ones they lose far more (tests/test_accuracy.py, README "Accuracy"), so
    tests that hold a sweep to this bar use well-conditioned factors.
    ``kappa`` is κ₂(L) (:func:`condition`; 1 where conditioning does not
    enter).  The exact value must come from a more precise computation
    (long double, ε ≈ 1.1e-19), or the bar must also cover the reference's
    own error (a float64 reference: ``c = 2 c_n(n)``).
    """
    if c is None:
        c = c_n(n)
    return float(c) * eps(dtype) * float(kappa) ** 2


def c_n(n):
    """The constant of :func:`tol` for one computation with N unknowns: 4 √(N + 1)."""
    return 4.0 * float(np.sqrt(n + 1))


def run_python(code, timeout=120):
    """Run ``code`` in a fresh interpreter (the checkout importable); the CompletedProcess."""
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=timeout)


def random_spd(n, rng, dtype=np.float64, cond=None):
    """A Hermitian positive definite matrix; with ``cond``, eigenvalues log-spaced from 1 to 1/cond."""
    complex_ = np.issubdtype(dtype, np.complexfloating)
    def draw(*shape):
        x = rng.standard_normal(shape)
        return x + 1j * rng.standard_normal(shape) if complex_ else x
    if cond is None:
        a = draw(n, n + 3)
        K = a @ a.conj().T / n + 0.1 * np.eye(n)
    else:
        q, _ = np.linalg.qr(draw(n, n))
        K = (q * np.logspace(0, -np.log10(cond), n)) @ q.conj().T
    K = (K + K.conj().T) / 2
    return K.astype(dtype)


def random_factor(n, rng, dtype=np.float64, cond=None):
    """(K, L) with L the lower Cholesky factor of a random K, both in ``dtype``."""
    K = random_spd(n, rng, np.complex128 if np.issubdtype(dtype, np.complexfloating) else np.float64,
                   cond)
    return K.astype(dtype), np.linalg.cholesky(K).astype(dtype)


def random_like(shape, rng, dtype=np.float64):
    x = rng.standard_normal(shape)
    if np.issubdtype(dtype, np.complexfloating):
        x = x + 1j * rng.standard_normal(shape)
    return x.astype(dtype)


def rel_err(a, b):
    """max |a - b| / max |b| (0 for two empty arrays)."""
    a, b = np.asarray(a), np.asarray(b)
    if b.size == 0:
        return 0.0
    scale = np.abs(b).max()
    return float(np.abs(a - b).max() / (scale if scale else 1.0))


def with_garbage(x, lower, value=np.nan):
    """A copy of ``x`` whose unread triangle is filled with ``value``."""
    y = np.array(x)
    idx = np.triu_indices(x.shape[-1], 1) if lower else np.tril_indices(x.shape[-1], -1)
    y[..., idx[0], idx[1]] = value
    return y


def layouts(a):
    """The same matrix in several memory layouts BLAS can address, and some it can't."""
    n = a.shape[0]
    big = np.zeros((n + 3, n + 5), dtype=a.dtype)
    big[1:n + 1, 2:n + 2] = a
    bigf = np.asfortranarray(big)
    wide = np.zeros((2 * n, 2 * n), dtype=a.dtype)
    wide[::2, ::2] = a
    return {
        "C": np.ascontiguousarray(a),
        "F": np.asfortranarray(a),
        "C-view-ld": big[1:n + 1, 2:n + 2],         # row-major with leading dimension n + 5
        "F-view-ld": bigf[1:n + 1, 2:n + 2],        # column-major with leading dimension n + 3
        "strided": wide[::2, ::2],                  # no unit stride: must be copied
        "reversed": np.ascontiguousarray(a[::-1, ::-1])[::-1, ::-1],  # negative strides
    }



# The accuracy measures live with the reference forms, for the benchmark's use too.
from blockchol.reference import relative_error as fro_err, typical_error  # noqa: E402,F401


def default_block_size(table, n):
    """The block width a table of blockchol.core.thresholds gives at order n (clamped to n)."""
    return min(n, next(width for top, width in table if n <= top))
