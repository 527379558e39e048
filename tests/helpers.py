"""Shared test helpers: random factors, layouts, error measures, a fresh interpreter."""

import os
import subprocess
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

EPS = {np.dtype(np.float32): np.finfo(np.float32).eps,
       np.dtype(np.float64): np.finfo(np.float64).eps,
       np.dtype(np.complex64): np.finfo(np.float32).eps,
       np.dtype(np.complex128): np.finfo(np.float64).eps}


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
