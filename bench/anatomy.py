"""Where the accuracy goes: the study behind the choice of method (notes.md, "Accuracy").

Three measurements, each against the long-double truth on GP kernel
matrices (RBF and Matérn-5/2, sorted 1-D inputs, small jitter):

* ``operations``: the blocked sweep run in long double with one class of
  operation done in float64 (its inputs rounded, BLAS in float64, the
  result back), for the level-2 kernel and for the closed-form kernel the
  sweep once had; "state" rounds the whole swept array to float64 after
  each block step and nothing else.
* ``formulations``: the closed form computed in several orders, with their
  flop counts, as error ratios to two full solves keeping the lower
  triangle of Y L⁻¹ (the accurate one): its other triangle, a cheap first
  solve (Q = P L⁻¹ is lower triangular), a cheap second solve (only the
  lower triangle of L⁻ᴴ Yᴴ), jax's order (L⁻ᴴ P first), explicit inverses,
  and a symmetric two-sided solve reusing the lower triangle of X (the
  structure of ``?sygst`` and of the sweep).
* ``kernels``: the blocked sweep's typical error (17 rounding patterns,
  :func:`blockchol.reference.typical_error`) with its level-2 kernel, with a
  ``?sygst`` kernel and with the closed-form kernel, as ratios to the
  unblocked level-2 sweep's.  The two experimental kernels live here.
"""

import numpy as np
import scipy.linalg as sl
from scipy.linalg import lapack

from blockchol import reference as ref

__all__ = ["run"]

LD = np.longdouble
CASES = (("rbf", 200, 1e-10), ("rbf", 300, 1e-8), ("matern52", 150, 1e-8))


def _fro(a, t):
    return float(np.linalg.norm((np.asarray(a, LD) - t).astype(float))
                 / np.linalg.norm(t.astype(float)))


def _st(L, B, trans=False, right=False):
    """op(L)⁻¹ B, or B op(L)⁻¹ with ``right``; float64 with scipy, long double by reference."""
    if right:
        return _st(L, B.T, trans=not trans).T
    if L.dtype == LD:
        return ref._solve_lower(L, B, adjoint=trans)
    return sl.solve_triangular(L, B, lower=True, trans="T" if trans else "N")


def _phi(x):
    return ref.phi(x)


# --------------------------------------------------------------------------
# operations


def _sweep(L, Lb, nb, kernel, in64=()):
    f64 = lambda x: x.astype(np.float64)          # noqa: E731
    L, A, n = np.tril(L).astype(LD), np.tril(Lb).astype(LD), L.shape[0]
    for j in range((n - 1) // nb * nb, -1, -nb):
        k = min(j + nb, n)
        R, D, C = L[j:k, :j], L[j:k, j:k], L[k:, j:k]
        if k < n:
            A[k:, j:k] = (_st(f64(D), f64(A[k:, j:k]), right=True) if "trsm" in in64
                          else _st(D, A[k:, j:k], right=True))                     # C̄ D⁻¹
            Cb = A[k:, j:k]
            A[k:, :j] = (f64(A[k:, :j]) - f64(Cb) @ f64(R) if "gemm B" in in64
                         else A[k:, :j] - Cb @ R)                                  # B̄ − C̄ R
            A[j:k, j:k] = (f64(A[j:k, j:k]) - np.tril(f64(Cb).T @ f64(C)) if "syrk" in in64
                           else A[j:k, j:k] - np.tril(Cb.T @ C))                   # D̄ − C̄ᵀC
        Dk, Db = (f64(D), f64(A[j:k, j:k])) if "kernel" in in64 else (D, A[j:k, j:k])
        if kernel == "level-2":
            g = ref.sweep_rev(Dk, Db, dtype=Dk.dtype)
            X = g + g.T
        else:
            P = _phi(Dk.T @ np.tril(Db))
            X = _st(Dk, _st(Dk, P + P.T, trans=True), right=True)
        A[j:k, j:k] = X
        if j:
            A[j:k, :j] = (f64(A[j:k, :j]) - f64(A[j:, j:k]).T @ f64(L[j:, :j]) if "gemm R" in in64
                          else A[j:k, :j] - A[j:, j:k].T @ L[j:, :j])              # R̄ update
        if "state" in in64:
            A[...] = f64(A)
        A[j:k, j:k] = _phi(A[j:k, j:k])
    return A


def operations(b):
    ops = ("trsm", "gemm B", "syrk", "kernel", "gemm R", "state")
    for kernel_family, n, jitter in CASES:
        K, L, Lb = ref.covariance_problem(kernel_family, n, jitter)
        truth = ref.closed_rev(L, Lb, dtype=LD)
        case = "%s %d %g" % (kernel_family, n, jitter)
        for kernel, nb in (("level-2", 1), ("level-2", 64), ("closed form", 64)):
            row = "%s kernel, nb=%d" % (kernel, nb)
            b.record("anatomy-operations", case, row + ": all in long double",
                     error=_fro(_sweep(L, Lb, nb, kernel), truth))
            for op in ops:
                b.record("anatomy-operations", case, row + ": %s in float64" % op,
                         error=_fro(_sweep(L, Lb, nb, kernel, (op,)), truth))
            b.record("anatomy-operations", case, row + ": all in float64",
                     error=_fro(_sweep(L, Lb, nb, kernel, ops[:-1]), truth))


# --------------------------------------------------------------------------
# formulations


def _forms(L, Lb):
    L = np.tril(L)
    P = _phi(L.T @ Lb)
    M = P + P.T
    Y = _st(L, M, trans=True)
    X = _st(L, Y, right=True)                                 # Y L⁻¹
    Q = np.tril(_st(L, P, right=True))                        # P L⁻¹, lower: cheap
    Z2 = _st(L, Q, trans=True)
    X8 = _st(L, Y.T, trans=True)                              # L⁻ᵀ Yᵀ; its lower triangle is cheap
    V = _st(L, P, trans=True)
    Z6 = _st(L, V, right=True)
    W = np.tril(lapack.dtrtri(L, lower=1)[0])
    Z4 = W.T @ (P @ W)
    return {"two full solves, lower triangle of Y L⁻¹ (chosen; 7N³/3)": _phi(X),
            "two full solves, upper triangle (7N³/3)": _phi(X.T),
            "cheap first solve Q = P L⁻¹ (5N³/3)": _phi(Z2 + Z2.T),
            "cheap second solve, lower triangle only (5N³/3)": _phi(X8),
            "jax's order, L⁻ᵀ P first (7N³/3)": _phi(Z6 + Z6.T),
            "explicit inverse W = L⁻¹ (5N³/3)": _phi(Z4 + Z4.T),
            "symmetric two-sided solve, sygst-like (N³)": _phi(_symmetric_solve(L, M))}


def _symmetric_solve(L, M):
    """X = L⁻ᵀ M L⁻¹ from the lower triangle of Y = L⁻ᵀ M, reusing X's computed lower triangle."""
    n = L.shape[0]
    Y = _st(L, M, trans=True)
    X = np.zeros_like(M)
    for j in range(n - 1, -1, -1):
        Xs = np.tril(X[j + 1:, j + 1:])
        Xs = Xs + np.tril(Xs, -1).T
        X[j + 1:, j] = (Y[j + 1:, j] - Xs @ L[j + 1:, j]) / L[j, j]
        X[j, j] = (Y[j, j] - X[j + 1:, j] @ L[j + 1:, j]) / L[j, j]
    return X


def formulations(b):
    for kernel_family, n, jitter in CASES:
        for cotangent in ("random", "gp"):
            K, L, Lb = ref.covariance_problem(kernel_family, n, jitter, cotangent=cotangent)
            truth = ref.closed_rev(L, Lb, dtype=LD)
            errors = {name: _fro(G, truth) for name, G in _forms(L, Lb).items()}
            base = next(iter(errors.values()))
            for name, err in errors.items():
                b.record("anatomy-formulations", "%s %d %g, %s L̄" % (kernel_family, n, jitter,
                                                                     cotangent), name,
                         error=err, ratio=err / base)


# --------------------------------------------------------------------------
# kernels: the experimental diagonal kernels, kept here and not in the package


def _hermitian(x):
    strict = np.tril(x, -1)
    out = strict + strict.T
    out[np.diag_indices_from(out)] = x.diagonal()
    return out


def sygst_kernel(D, Db):
    """X_D by LAPACK's ?sygst on the index-reversed block (J X J = E⁻¹ (J M J) E⁻ᵀ, E = J Dᵀ J)."""
    d = np.tril(D.stored if not D.upper else D.stored.T)
    m = _hermitian(d.T @ np.tril(Db.stored if not Db.upper else Db.stored.T))
    j = slice(None, None, -1)
    x, _ = lapack.dsygst(np.asfortranarray(m[j, j]), np.asfortranarray(d.T[j, j]), itype=1, lower=1)
    Db.stored[...] = _hermitian(x)[j, j]


def closed_kernel(D, Db):
    """X_D by the closed form on the block: the kernel the sweep had before issue 8."""
    d = np.tril(D.stored if not D.upper else D.stored.T)
    P = _phi(d.T @ np.tril(Db.stored if not Db.upper else Db.stored.T))
    Db.stored[...] = _st(d, _st(d, P + P.T, trans=True), right=True)


def kernels(b):
    import blockchol
    from blockchol.core import sweep
    cases = (("matern52", 40, 1e-10), ("matern52", 40, 1e-6), ("matern52", 100, 1e-8),
             ("rbf", 200, 1e-10)) if not b.quick else (("matern52", 40, 1e-10),)
    own = sweep._diagonal_rev
    for kernel_family, n, jitter in cases:
        for cotangent in ("random", "gp"):
            K, L, Lb = ref.covariance_problem(kernel_family, n, jitter, cotangent=cotangent, seed=0)
            truth = ref.closed_rev(L, Lb, dtype=LD)
            level2 = ref.typical_error(lambda X: ref.sweep_rev(L, X), Lb, truth)
            case = "%s %d %g, %s L̄" % (kernel_family, n, jitter, cotangent)
            for name, kernel in (("level-2 (blockchol)", own), ("?sygst", sygst_kernel),
                                 ("closed form", closed_kernel)):
                sweep._diagonal_rev = kernel
                try:
                    for nb in (16, 64):
                        err = ref.typical_error(lambda X: blockchol.chol_rev(
                            L, X, method="sweep", block_size=nb), Lb, truth)
                        b.record("anatomy-kernels", case, "%s, nb=%d" % (name, nb),
                                 error=err, ratio=err / level2)
                finally:
                    sweep._diagonal_rev = own


def run(b, parts=("operations", "formulations", "kernels")):
    for part in parts:
        {"operations": operations, "formulations": formulations, "kernels": kernels}[part](b)
