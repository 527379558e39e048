"""Correctness checks: convention conversion, relative differences, tolerances.

Every row of every table is checked against a reference computed in the same
run on the same inputs, and a row whose answer is off is printed as WRONG
rather than left out.
"""

import numpy as np

__all__ = ["tolerance", "relative_difference", "triangular_from_full", "verdict"]

# Why these thresholds.  Each answer is compared with the reference (chol_rev,
# or the closed form where chol_rev lacks the feature) computed in double
# precision on the very same inputs.  The test matrices are well conditioned
# (K = A Aᴴ/N + I, cond(K) < 10), so a correct implementation differs from
# the reference by a small multiple of its unit roundoff: about 1e-15..1e-13
# in double and 1e-7..1e-5 in single precision up to N = 4000 (rounding errors
# grow roughly like sqrt(N) · eps · cond).  The thresholds sit about three
# orders of magnitude above that, so rounding never trips them, and many
# orders below what a wrong formula gives (a lost factor 2 on the diagonal, a
# missing symmetrization or the wrong triangle change entries by O(1)
# relative to the largest).
DOUBLE_TOLERANCE = 1e-8
SINGLE_TOLERANCE = 1e-3


def tolerance(dtype):
    """Largest acceptable max-relative difference for results of this dtype."""
    precision = np.finfo(np.dtype(dtype)).precision   # 15 for double, 6 for single
    return DOUBLE_TOLERANCE if precision >= 15 else SINGLE_TOLERANCE


def relative_difference(answer, reference):
    """max |answer − reference| / max |reference|, in double precision.

    A shape mismatch, or NaN/inf anywhere in the answer, counts as infinitely
    wrong, so that it can never pass a threshold.
    """
    reference = np.asarray(reference)
    answer = np.asarray(answer)
    if answer.shape != reference.shape:
        return float("inf")
    wide = np.complex128 if (np.iscomplexobj(answer) or np.iscomplexobj(reference)) else np.float64
    a = answer.astype(wide, copy=False)
    r = reference.astype(wide, copy=False)
    if not np.isfinite(a).all():
        return float("inf")
    scale = np.max(np.abs(r)) if r.size else 0.0
    error = np.max(np.abs(a - r)) if r.size else 0.0
    return float(error / scale) if scale > 0 else float(error)


def triangular_from_full(S):
    """Triangular-convention gradient G from a gradient S with respect to a full K.

    torch and jax differentiate with respect to every entry of K, so that
    df = Re Σ_ij conj(S_ij) dK_ij.  Perturbations of K are Hermitian, so only
    the Hermitian part H = (S + Sᴴ)/2 is determined (torch returns a
    non-Hermitian S for complex K), and collecting dK_ij and dK_ji = conj(dK_ij)
    into the lower triangle gives G = tril(H) + tril(H, -1): the strictly lower
    part doubled, the diagonal kept.  For a Hermitian S this is exactly
    ``tril(S) + tril(S, -1)``.  Works on stacks (the last two axes).
    """
    S = np.asarray(S)
    H = 0.5 * (S + np.conj(np.swapaxes(S, -1, -2)))
    return np.tril(H) + np.tril(H, -1)


def verdict(difference, dtype):
    """'ok' or 'WRONG' for a relative difference of a result of ``dtype``."""
    return "ok" if difference <= tolerance(dtype) else "WRONG"
