"""The graphs of the four forms, tile by tile: closed_rev, sweep_rev, closed_fwd, sweep_fwd.

Each builder takes a :class:`._graph.TaskGraph` and the keys of the
prepared lower tiles of the factor (``Lp``) and of the second argument,
adds the tasks of its form and returns the keys of the lower tiles of the
result (G for the reverse forms, L̇ for the forward ones), all in
lower-factor terms.  The mathematics is the in-core functions': the closed
forms by full tiled triangular solves, the sweeps blocked with the tile as
the block and the in-core sweep on each diagonal tile.
"""

from . import _tiles
from ._tiles import C, N

__all__ = ["FORMS", "closed_rev", "sweep_rev", "closed_fwd", "sweep_fwd"]


def closed_rev(g, Lp, Bp):
    """G = Φ(X), X = Y L⁻¹, Y = L⁻ᴴ M, M = P + Pᴴ, P = Φ(Lᴴ L̄): the lower tiles of G."""
    T, s = g.T, g.sizes
    # P's lower tiles: P_IJ = Σ_{K ≥ I} L_KIᴴ L̄_KJ (the K = I term by trmm), and M's diagonal.
    P = {}
    for I in range(T):
        for J in range(I + 1):
            terms = [g.term(1.0, Lp[I, I], C, Bp[I, J], N, (s[I], s[I], s[J]), tri="a")]
            terms += [g.term(1.0, Lp[K, I], C, Bp[K, J], N, (s[I], s[K], s[J]))
                      for K in range(I + 1, T)]
            P[I, J], _ = g.chain("closed-rev-P", (I, J), None, N, terms)
        P[I, I] = g.elementwise("closed-rev-M", (I, I), _tiles.phi_hermitian, P[I, I])

    def M(I, J):    # M = P + Pᴴ: P below the diagonal, Pᴴ above
        return (P[I, J], N) if I >= J else (P[J, I], C)

    # Y = L⁻ᴴ M, all tiles: Y_IJ = L_IIᴴ⁻¹ (M_IJ − Σ_{K > I} L_KIᴴ Y_KJ), bottom row first.
    Y = {}
    for I in reversed(range(T)):
        for J in range(T):
            terms = [g.term(-1.0, Lp[K, I], C, Y[K, J], N, (s[I], s[K], s[J]))
                     for K in range(I + 1, T)]
            acc, op = g.chain("closed-rev-Y-update", (I, J), *M(I, J), terms)
            Y[I, J] = g.solve("closed-rev-Y", (I, J), acc, op, Lp[I, I], 0, C, s[I], s[J])
    # X = Y L⁻¹, all tiles: X_IJ = (Y_IJ − Σ_{K > J} X_IK L_KJ) L_JJ⁻¹, last column first.
    X = {}
    for J in reversed(range(T)):
        for I in range(T):
            terms = [g.term(-1.0, X[I, K], N, Lp[K, J], N, (s[I], s[K], s[J]))
                     for K in range(J + 1, T)]
            acc, op = g.chain("closed-rev-X-update", (I, J), Y[I, J], N, terms)
            X[I, J] = g.solve("closed-rev-X", (I, J), acc, op, Lp[J, J], 1, N, s[I], s[J])
    G = {(I, J): X[I, J] for I in range(T) for J in range(I)}
    for I in range(T):
        G[I, I] = g.elementwise("closed-rev-phi", (I, I), _tiles.phi, X[I, I])
    return G


def sweep_rev(g, Lp, Bp):
    """The blocked reverse sweep with tiles as blocks: notes.md section 1's loop, tile by tile.

    Step J (last to first) with R = L[J, :J], D = L_JJ, B = L[J+1:, :J],
    C = L[J+1:, J]:  C̄ ← C̄ D⁻¹;  B̄ ← B̄ − C̄ R;  D̄ ← D̄ − C̄ᴴ C;
    G_D = chol_rev(D, D̄);  R̄ ← R̄ − C̄ᴴ B − (G_D + G_Dᴴ) R.
    Each tile's updates are one chain, gathered when the tile is solved:
    tile (I, J), I > J, receives −C̄_I'Iᴴ L_I'J (I' > I, step I),
    −X_I L_IJ (step I) and −C̄_IJ' L_J'J (J < J' < I, steps J').
    """
    T, s = g.T, g.sizes
    Cb, Xd, G = {}, {}, {}
    for J in reversed(range(T)):
        for I in range(J + 1, T):
            terms = [g.term(-1.0, Cb[I2, I], C, Lp[I2, J], N, (s[I], s[I2], s[J]))
                     for I2 in range(I + 1, T)]
            terms.append(g.term(-1.0, Xd[I], N, Lp[I, J], N, (s[I], s[I], s[J])))
            terms += [g.term(-1.0, Cb[I, J2], N, Lp[J2, J], N, (s[I], s[J2], s[J]))
                      for J2 in range(J + 1, I)]
            acc, op = g.chain("sweep-rev-update", (I, J), Bp[I, J], N, terms)
            Cb[I, J] = g.solve("sweep-rev-solve", (I, J), acc, op, Lp[J, J], 1, N, s[I], s[J])
        terms = [g.term(-1.0, Cb[I, J], C, Lp[I, J], N, (s[J], s[I], s[J]))
                 for I in range(J + 1, T)]
        acc, _ = g.chain("sweep-rev-diagonal-update", (J,), Bp[J, J], N, terms)
        G[J, J] = g.add(g.key("sweep-rev-kernel", J, J), 2.0 / 3.0 * s[J] ** 3,
                        _tiles.rev_kernel, Lp[J, J], acc)
        if J:
            Xd[J] = g.elementwise("sweep-rev-hermitian", (J,), _tiles.hermitian_sum, G[J, J])
    G.update(Cb)
    return G


def closed_fwd(g, Lp, Kp):
    """L̇ = L Φ(X), X = L⁻¹ Y, Y = K̇ L⁻ᴴ: both solves on all tiles, then the lower tiles of X."""
    T, s = g.T, g.sizes

    def Kd(I, J):   # the Hermitian K̇: prepared tiles below the diagonal, their ᴴ above
        return (Kp[I, J], N) if I >= J else (Kp[J, I], C)

    # Y = K̇ L⁻ᴴ: Y_IJ = (K̇_IJ − Σ_{K < J} Y_IK L_JKᴴ) L_JJ⁻ᴴ, first column first.
    Y = {}
    for J in range(T):
        for I in range(T):
            terms = [g.term(-1.0, Y[I, K], N, Lp[J, K], C, (s[I], s[K], s[J])) for K in range(J)]
            acc, op = g.chain("closed-fwd-Y-update", (I, J), *Kd(I, J), terms)
            Y[I, J] = g.solve("closed-fwd-Y", (I, J), acc, op, Lp[J, J], 1, C, s[I], s[J])
    # X = L⁻¹ Y: X_IJ = L_II⁻¹ (Y_IJ − Σ_{K < I} L_IK X_KJ), top row first.  Its
    # lower tiles need the upper ones above them: the solve is full.
    X = {}
    for I in range(T):
        for J in range(T):
            terms = [g.term(-1.0, Lp[I, K], N, X[K, J], N, (s[I], s[K], s[J])) for K in range(I)]
            acc, op = g.chain("closed-fwd-X-update", (I, J), Y[I, J], N, terms)
            X[I, J] = g.solve("closed-fwd-X", (I, J), acc, op, Lp[I, I], 0, N, s[I], s[J])
    F = {(I, J): X[I, J] for I in range(T) for J in range(I)}
    for I in range(T):
        F[I, I] = g.elementwise("closed-fwd-phi", (I, I), _tiles.phi, X[I, I])
    # L̇ = L Φ(X), both lower: L̇_IJ = Σ_{J ≤ K ≤ I} L_IK F_KJ (triangular tiles by trmm).
    Ld = {}
    for I in range(T):
        for J in range(I + 1):
            terms = [g.term(1.0, Lp[I, I], N, F[I, J], N, (s[I], s[I], s[J]), tri="a")]
            if J < I:
                terms.append(g.term(1.0, Lp[I, J], N, F[J, J], N, (s[I], s[J], s[J]), tri="b"))
            terms += [g.term(1.0, Lp[I, K], N, F[K, J], N, (s[I], s[K], s[J]))
                      for K in range(J + 1, I)]
            Ld[I, J], _ = g.chain("closed-fwd-product", (I, J), None, N, terms)
    return Ld


def sweep_fwd(g, Lp, Kp):
    """The blocked forward sweep with tiles as blocks (the in-core forward sweep, tile by tile).

    Step J (first to last): [Ż; Y] = [K̇_JJ; K̇_CJ] − [Ṙ; Ḃ] Rᴴ − [R; B] Ṙᴴ;
    Ḋ = chol_fwd(D, Ż);  Ċ = (Y − C Ḋᴴ) D⁻ᴴ.
    """
    T, s = g.T, g.sizes
    Ld = {}
    for J in range(T):
        for I in range(J, T):
            terms = []
            for K in range(J):
                terms.append(g.term(-1.0, Ld[I, K], N, Lp[J, K], C, (s[I], s[K], s[J])))
                terms.append(g.term(-1.0, Lp[I, K], N, Ld[J, K], C, (s[I], s[K], s[J])))
            if I > J:
                terms.append(g.term(-1.0, Lp[I, J], N, Ld[J, J], C, (s[I], s[J], s[J]), tri="b"))
            acc, op = g.chain("sweep-fwd-update", (I, J), Kp[I, J], N, terms)
            if I == J:
                Ld[J, J] = g.add(g.key("sweep-fwd-kernel", J, J), 2.0 * s[J] ** 3,
                                 _tiles.fwd_kernel, Lp[J, J], acc)
            else:
                Ld[I, J] = g.solve("sweep-fwd-solve", (I, J), acc, op, Lp[J, J], 1, C, s[I], s[J])
    return Ld


#: (method, direction) -> (builder, how its second argument's tiles are prepared: see
#: :func:`._tiles.prepare`; the closed forward form reads K̇ as a Hermitian matrix).
FORMS = {("closed", "rev"): (closed_rev, "lower"), ("sweep", "rev"): (sweep_rev, "lower"),
         ("closed", "fwd"): (closed_fwd, "hermitian"), ("sweep", "fwd"): (sweep_fwd, "lower")}
