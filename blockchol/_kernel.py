"""Kernels for the diagonal blocks of the reverse sweep.

Each kernel differentiates the Cholesky factorization of one diagonal block
D on its own: given the block's adjoint D̄ (lower triangle), it produces
the gradient G_D = Φ(X) of the block's input, where Φ takes the lower
triangle and halves the diagonal and X is Hermitian.  The kernels share
one contract, which suits the sweep's next step:

Reverse kernels (``symbolic``, ``level2``):

* on entry the block ``Db`` holds D̄ in its logical lower triangle and zeros
  above it;
* on exit the *whole* block holds X = G_D + G_Dᴴ, which the sweep needs as
  (D̄ + D̄ᴴ) in the update of R̄, and then reduces to Φ(X) itself.

``W`` is a workspace block at least as large as ``Db``, in the same form.
The forward kernel ``symbolic_fwd`` is documented where it stands.

Which kernel is used, and why, is recorded in notes.md: ``symbolic`` (the
default) costs three level-3 calls per block; ``level2`` is Murray's
unblocked column loop, kept for comparison.
"""

import numpy as np

from . import reference
from ._operands import herm, phi_mask, real_diagonal, trmm, trsm


def symbolic(D, Db, W):
    """Closed form on the block: X = D⁻ᴴ (P + Pᴴ) D⁻¹ with P = Φ(Dᴴ D̄).

    From the forward derivative L̇ = L Φ(L⁻¹ K̇ L⁻ᴴ) (Murray 2016, eq. 10),
    the adjoint is K̄ = Φ(L⁻ᴴ (P + Pᴴ) L⁻¹) with P = Φ(Lᴴ L̄); applied here to
    the block alone.  All O(n³) work is two triangular solves and one
    triangular multiply.
    """
    n = Db.rows
    s, w = Db.stored, W.stored
    trmm("L", D, "C", Db)                                   # D̄ ← Dᴴ D̄ (now full)
    np.multiply(s, phi_mask(n, Db.upper, s.real.dtype), out=w)  # P = Φ(Dᴴ D̄)
    np.add(w, herm(w), out=s)                               # P + Pᴴ
    trsm("L", D, "C", Db)                                   # D⁻ᴴ (P + Pᴴ)
    trsm("R", D, "N", Db)                                   # ... D⁻¹


def symbolic_fwd(D, Dd, W):
    """Forward kernel: Ḋ = D Φ(D⁻¹ Ż D⁻ᴴ), Ż the Hermitian matrix of the block's lower triangle.

    On entry the block holds Ż in its logical lower triangle (anything
    above); on exit it holds Ḋ, lower triangular with exact zeros above.
    """
    n = Dd.rows
    s, w = Dd.stored, W.stored
    phi = phi_mask(n, Dd.upper, s.real.dtype)
    np.multiply(s, phi, out=w)                              # Φ(Ż) ...
    np.add(w, herm(w), out=s)                               # ... + Φ(Ż)ᴴ = Ż, Hermitian
    trsm("L", D, "N", Dd)                                   # D⁻¹ Ż
    trsm("R", D, "C", Dd)                                   # ... D⁻ᴴ
    s *= phi                                                # Φ(D⁻¹ Ż D⁻ᴴ)
    real_diagonal(s)
    trmm("L", D, "N", Dd)                                   # Ḋ = D Φ(...)


def level2(D, Db, W):
    """Murray's unblocked column sweep (Smith's loop at level 2) on the block."""
    d, db = _logical(D.stored, D.upper), _logical(Db.stored, Db.upper)
    g = reference.level2_rev(d, db)
    symmetrize(Db, g)


def symmetrize(Db, g=None):
    """Set the block to X = G + Gᴴ, from the triangular G (in ``g``, or in the block itself)."""
    s = Db.stored
    if g is None:
        g = _logical(s, Db.upper)
    x = g + herm(g)  # Hermitian, so its stored form is itself
    s[...] = x


def _logical(stored, upper):
    return herm(stored).copy() if upper else stored.copy()
