"""The calls into blockchol's numpy functions, on torch tensors.

Each takes and returns CPU tensors (no autograd: the autograd.Functions in
``_functions`` wrap them).  Where blockchol refuses the input (non-finite
values, or a factor that torch marked as failed in ``cholesky_ex``), the
same formula in torch ops gives torch's answer (NaN in, NaN out); any other
refusal is a bug here and is raised.
"""

import numpy as np
import torch

import blockchol
import blockchol.torch as _package
from . import _formulas as fm

__all__ = ["rev_numpy", "fwd_numpy", "skew_numpy"]


def _np(t):
    return t.detach().resolve_conj().resolve_neg().numpy()


def _threads(L):
    """blockchol's ``threads=``: 1 below SINGLE_THREAD_N (read from the package at each call,
    where it can be lowered), else the BLAS pools as they are."""
    return 1 if L.shape[-1] < _package.SINGLE_THREAD_N else None


def _zeros_for(*arrays):
    shape = np.broadcast_shapes(*(a.shape for a in arrays))
    return torch.from_numpy(np.zeros(shape, np.result_type(*arrays, np.float32)))


def _refused(L, X, error, upper):
    """blockchol refused: non-finite input or a factor torch marked as failed (cholesky_ex).

    Anything else is a bug here, so it is raised rather than papered over.
    """
    d = fm.low(L, upper).diagonal(dim1=-2, dim2=-1)
    d_ok = (d.real > 0).all() & (d.imag == 0).all() if d.is_complex() else (d > 0).all()
    if bool(torch.isfinite(L).all() & torch.isfinite(X).all() & d_ok):
        raise error


def rev_numpy(L, M, upper, skip_zero=False):
    """Hermitian S = R(L, M) = blockchol.chol_rev(L, M, symmetric=True)."""
    Ln, Mn = _np(L), _np(M)
    if skip_zero and not Mn.any():
        return _zeros_for(Ln, Mn)
    try:
        return torch.from_numpy(blockchol.chol_rev(Ln, Mn, lower=not upper, symmetric=True,
                                                   threads=_threads(Ln)))
    except (ValueError, np.linalg.LinAlgError) as error:
        _refused(L, M, error, upper)
        return fm.rev(fm.low(L.detach(), upper), fm.low(M.detach(), upper))


def fwd_numpy(L, K, upper):
    """L̇ = F(L, K) = blockchol.chol_fwd(L, K) (K's read triangle, taken Hermitian)."""
    Ln, Kn = _np(L), _np(K)
    try:
        return torch.from_numpy(blockchol.chol_fwd(Ln, Kn, lower=not upper, threads=_threads(Ln)))
    except (ValueError, np.linalg.LinAlgError) as error:
        _refused(L, K, error, upper)
        Ll = fm.low(L.detach(), upper)
        return fm.low(fm.fwd(Ll, fm.hermitian_from(K.detach(), upper)), upper)


def skew_numpy(L, Q, upper):
    """F(L, Q) for anti-Hermitian Q: i Q is Hermitian, so it is -i chol_fwd(L, i Q)."""
    Ln, Qn = _np(L), _np(Q)
    if not Qn.any():
        return _zeros_for(Ln, Qn)
    ctype = np.result_type(Ln, Qn, np.complex64)
    try:
        out = blockchol.chol_fwd(Ln.astype(ctype, copy=False), 1j * Qn, lower=not upper,
                                 threads=_threads(Ln))
    except (ValueError, np.linalg.LinAlgError) as error:
        _refused(L, Q, error, upper)
        Ll = fm.low(L.detach(), upper)
        return fm.low(fm.fwd(Ll, Q.detach()), upper)
    out *= 1j if upper else -1j       # the upper form is the conjugate transpose of the lower
    if not (L.is_complex() or Q.is_complex()):
        out = out.real.copy()
    return torch.from_numpy(out)
