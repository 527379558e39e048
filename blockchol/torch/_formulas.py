"""The derivative formulas of the Cholesky factor in torch ops, each written once.

Everything here is a plain torch expression, so autograd and forward-mode
AD differentiate through it to any order.  The formulas are written for a
lower factor L (K = L Lᴴ); an upper factor U (K = Uᴴ U) is the lower factor
Uᴴ, and :func:`low` converts: a cotangent or tangent of U is the conjugate
transpose of L's, and Hermitian quantities are the same in both forms.

With Φ(X) the lower triangle of X with its diagonal halved:

* F(L, X) = L Φ(L⁻¹ X L⁻ᴴ), the tangent of the factor along X
  (``blockchol.chol_fwd`` for a Hermitian X; torch uses it for any X);
* its adjoint, R̃(L, M) = L⁻ᴴ Φ(Lᴴ tril(M)) L⁻¹, whose Hermitian part
  R(L, M) = ½ (R̃ + R̃ᴴ) is ``blockchol.chol_rev(..., symmetric=True)``;
* the derivatives of F with respect to L, in reverse mode
  (:func:`l_gradient`) and in forward mode (:func:`l_tangent`).
"""

import torch

__all__ = ["low", "phi", "hermitian_part", "skew_part", "hermitian_from", "triangular_from", "l_solve", "lh_solve",
           "solve_l", "solve_lh", "fwd", "rev_full", "rev", "l_gradient", "l_tangent"]


def low(X, upper):
    """The lower form of X: X itself, or Xᴴ for the upper form."""
    return X.mH if upper else X


def phi(X):
    """Φ(X): the lower triangle of X with its diagonal halved."""
    return X.tril() - 0.5 * torch.diag_embed(X.diagonal(dim1=-2, dim2=-1))


def hermitian_part(X):
    """½ (X + Xᴴ)."""
    return 0.5 * (X + X.mH)


def skew_part(X):
    """½ (X − Xᴴ), the anti-Hermitian part."""
    return 0.5 * (X - X.mH)


def hermitian_from(K, upper):
    """The Hermitian matrix whose read triangle is K's (the diagonal's real part)."""
    T = K.triu(1) if upper else K.tril(-1)
    d = K.diagonal(dim1=-2, dim2=-1)
    if K.is_complex():
        d = d.real.to(K.dtype)
    return T + T.mH + torch.diag_embed(d)


def triangular_from(S, upper):
    """Smith's triangular G from the Hermitian S: G_ij = 2 S_ij off the diagonal, G_ii = S_ii."""
    T = S.triu(1) if upper else S.tril(-1)
    return 2 * T + torch.diag_embed(S.diagonal(dim1=-2, dim2=-1))


def l_solve(L, X):          # L⁻¹ X
    return torch.linalg.solve_triangular(L, X, upper=False)


def lh_solve(L, X):         # L⁻ᴴ X
    return torch.linalg.solve_triangular(L.mH, X, upper=True)


def solve_l(L, X):          # X L⁻¹
    return torch.linalg.solve_triangular(L, X, upper=False, left=False)


def solve_lh(L, X):         # X L⁻ᴴ
    return torch.linalg.solve_triangular(L.mH, X, upper=True, left=False)


def fwd(L, X):
    """F(L, X) = L Φ(L⁻¹ X L⁻ᴴ) for lower L and any X (NaN in, NaN out, as torch)."""
    return L @ phi(solve_lh(L, l_solve(L, X)))


def rev_full(L, M):
    """R̃(L, M) = L⁻ᴴ Φ(Lᴴ tril(M)) L⁻¹, the adjoint of F(L, ·): Re⟨M, F(L, X)⟩ = Re⟨R̃, X⟩."""
    return solve_l(L, lh_solve(L, phi(L.mH @ M.tril())))


def rev(L, M):
    """R(L, M) = ½ L⁻ᴴ (P + Pᴴ) L⁻¹, P = Φ(Lᴴ tril(M)): the Hermitian part of R̃."""
    P = phi(L.mH @ M.tril())
    return 0.5 * solve_l(L, lh_solve(L, P + P.mH))


def l_gradient(L, M, FX, SX):
    """∂/∂L of Re⟨M, F(L, X)⟩ for lower L (its upper triangle held at zero).

    FX = F(L, X) and SX = R̃ Xᴴ + R̃ᴴ X with R̃ = R̃(L, M) are passed in, computed
    however the caller has them (for Hermitian X, SX = 2 R(L, M) X):

        ∂/∂L = tril((tril(M) F(L, X)ᴴ − SX) L⁻ᴴ).
    """
    return solve_lh(L, M.tril() @ FX.mH - SX).tril()


def l_tangent(L, dL, X, FX, sign):
    """The forward-mode derivative of F(L, X) along dL, for lower L and dL and a Hermitian
    (``sign=1``) or anti-Hermitian (``sign=-1``) X, Xᴴ = sign · X:

        dF = dL L⁻¹ F(L, X) + F(L, −(Z + Z')),  Z = dL L⁻¹ X,  Z' = X L⁻ᴴ dLᴴ = sign · Zᴴ.

    Returns (Z + Z', dL L⁻¹ F(L, X)): the caller applies its own F to its
    tangent of X minus the first (F is linear in X) and adds the second.
    """
    Z = dL @ l_solve(L, X)
    return Z + sign * Z.mH, dL @ l_solve(L, FX)
