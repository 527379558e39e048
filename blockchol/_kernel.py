"""The diagonal-block kernels of the blocked sweeps (:mod:`._sweep`): the unblocked sweeps.

Each kernel differentiates the Cholesky factorization of one diagonal block
D on its own, one column at a time (Murray 2016, "chol_unblocked_rev" and
"chol_unblocked_fwd"), so that the blocked sweep does the unblocked sweep's
arithmetic, only with its updates outside the block gathered into gemms.
That is what keeps it as accurate as the unblocked sweep at every block
size.  Faster kernels that compute the same function lose accuracy on GP
kernel matrices (notes.md, "Accuracy"): the closed form on the block by up
to 10⁵× (the defect this module once had), a two-sided solve by LAPACK's
``?sygst`` by up to 7.6×, against 3.6× for this one (worst case over the
block sizes, kernel families and seeds measured).  The price is Python:
seven numpy calls per column, 10 µs alone at 64-wide blocks (14 at 128),
about twice that inside the sweep, whose gemms evict the caches between
blocks: half of the sweep at N = 1000, a ninth at N = 4000.  A left-looking
form of the same loop (the rank-1 updates delayed into one product with
the finished part of X per column) is twice as fast but 1.2× less
accurate on average, up to 2.4× (notes.md, "Accuracy"), so it is not used.

Both kernels work on logical lower-form copies of the block (D and the
block of the swept array) and write the result back.

Reverse (:func:`rev`): on entry the block ``Db`` holds D̄ in its logical
lower triangle (anything above); on exit the *whole* block holds the
Hermitian X = G_D + G_Dᴴ, G_D the block's gradient, which the sweep's
update of R̄ needs; the sweep then reduces it to Φ(X) = G_D.

Forward (:func:`fwd`): on entry the block holds Ż in its logical lower
triangle; on exit Ḋ = D Φ(D⁻¹ Ż D⁻ᴴ), lower triangular, zeros above.
"""

import numpy as np

from ._triangles import herm, logical

__all__ = ["rev", "fwd", "level2_rev", "level2_fwd"]


def level2_rev(d, a):
    """Murray's unblocked reverse sweep on an n×n block, in place on ``a``; returns G's diagonal.

    ``d`` is the lower factor, ``a`` holds L̄ in its lower triangle.  With r,
    δ, B, c the row left of, the pivot of, the block below-left of and the
    column below pivot j, and the same slices of ``a``, right to left::

        δ̄ ← (δ̄ − Re(cᴴ c̄)/δ)/δ;  c̄ ← c̄/δ;  [δ̄; c̄] r is taken from [r̄; B̄];  r̄ ← r̄ − c̄ᴴ B

    On exit ``a``'s strict lower triangle is G's; its diagonal holds 2 G_jj.
    """
    n = a.shape[0]
    complex_ = np.iscomplexobj(a)
    pivots = d.diagonal().real.tolist()
    diagonal = a.diagonal().real.tolist()       # δ̄_j is not updated before its own step
    for j in range(n - 1, -1, -1):
        p = pivots[j]
        c, cb = d[j + 1:, j], a[j + 1:, j]
        dot = np.vdot(c, cb).real if complex_ else c @ cb
        db = (diagonal[j] - dot / p) / p
        cb *= 1.0 / p
        a[j, j] = db
        if j:
            a[j:, :j] -= a[j:, j, None] * d[j, :j]                      # r̄ −= δ̄ r;  B̄ −= c̄ r
            a[j, :j] -= (cb.conj() if complex_ else cb) @ d[j + 1:, :j]    # r̄ −= c̄ᴴ B


def level2_fwd(d, z):
    """The unblocked forward sweep on an n×n block, in place on ``z``: Ż → Ḋ = D Φ(D⁻¹ Ż D⁻ᴴ).

    Left to right, with r, δ, B, c as in :func:`level2_rev` and ṙ, ċ the
    slices of Ḋ (ṙ final)::

        [ż; y] ← [ż; y] − [ṙ; Ḃ] r̄ − [r; B] ṙ̄;  δ̇ ← ż / 2δ;  ċ ← (y − c δ̇) / δ

    Reads only the lower triangle of ``z``; leaves junk above it.
    """
    n = z.shape[0]
    pivots = d.diagonal().real.tolist()
    for j in range(n):
        p = pivots[j]
        col = z[j:, j]
        if j:
            col -= z[j:, :j] @ d[j, :j].conj()
            col -= d[j:, :j] @ z[j, :j].conj()
        dd = col[0].real / (2.0 * p)
        col[0] = dd
        if j + 1 < n:
            col[1:] -= d[j + 1:, j] * dd
            col[1:] *= 1.0 / p


def rev(D, Db):
    """Db ← X = G_D + G_Dᴴ for the block (see the module)."""
    d = np.tril(logical(D.stored, D.upper))
    a = np.tril(logical(Db.stored, Db.upper))
    level2_rev(d, a)
    strict = np.tril(a, -1)
    x = strict + herm(strict)
    np.einsum("ii->i", x)[...] = a.diagonal().real          # X_jj = 2 G_jj
    Db.stored[...] = x          # Hermitian: the same array in either stored form


def fwd(D, Dd):
    """Dd ← Ḋ = D Φ(D⁻¹ Ż D⁻ᴴ) for the block (see the module)."""
    d = np.tril(logical(D.stored, D.upper))
    z = logical(Dd.stored, Dd.upper)
    level2_fwd(d, z)
    z = np.tril(z)
    Dd.stored[...] = herm(z) if Dd.upper else z
