"""torch.linalg.cholesky with blockchol's derivatives, and a switch that installs it.

:func:`cholesky` and :func:`cholesky_ex` have the contracts of
``torch.linalg.cholesky`` and ``torch.linalg.cholesky_ex``: the factorization
is torch's own, and only the triangle torch reads is read.  What changes is
the derivative.  Reverse mode goes through :func:`blockchol.chol_rev`, forward
mode through :func:`blockchol.chol_fwd`, both on the factor torch computed, and
both return exactly what torch's own rules return (to rounding):

* backward: for K = L Lᴴ (``upper=False``) or K = Uᴴ U (``upper=True``) and a
  real loss f, the gradient ``A.grad`` satisfies df = Re Σ_ij conj(Ā_ij) dA_ij.
  For real A it is the symmetric S of ``chol_rev(..., symmetric=True)``; for
  complex A, torch's gradient is S plus an anti-Hermitian part (which no
  Hermitian perturbation of A can see), and it is reproduced as well.
* forward mode (``torch.func.jvp``, ``torch.autograd.forward_ad``): the
  tangent of the factor, L̇ = L Φ(L⁻¹ Ȧ L⁻ᴴ) with Φ the lower triangle with
  the diagonal halved.  For a Hermitian tangent Ȧ this is ``chol_fwd``; torch
  also accepts a non-Hermitian Ȧ and uses all of it, which is reproduced too.

Higher orders (``create_graph=True``, ``torch.autograd.gradgradcheck``,
``torch.func.hessian``) and the ``torch.func`` transforms (``grad``, ``jvp``,
``vjp``, ``vmap``, ``jacrev``, ``jacfwd``) compose; under ``vmap`` a batch goes
to blockchol as one stack.  :func:`cholesky_solve` is ``torch.cholesky_solve``
with a backward in O(N²k) for k right-hand sides instead of torch's O(N³).

Calls that blockchol does not serve go to torch's own operator exactly as
they were made, with torch's results, errors and ``__torch_function__``
dispatch: devices other than the CPU, dtypes other than float32, float64,
complex64 and complex128, tensor subclasses and other objects with
``__torch_function__`` (torch function modes other than a default device
likewise), ``out=``, code being compiled by ``torch.compile``, and matrices
smaller than the measured crossover ``CROSSOVER_N[dtype name]``
(``CROSSOVER_N["float64"]`` = 1024), where torch's own rules are faster.
The three functions compare and hash equal to torch's, so tables keyed by
torch's functions (linear_operator's ``__torch_function__`` dispatch) find
them whichever was installed when the table was built.

:func:`accelerate` installs the three functions into ``torch.linalg`` and
``torch`` for the duration of a ``with`` block (or a decorated call), so that
code written against torch (GPyTorch, BoTorch, Pyro) gets the fast
derivatives without edits.

Examples
--------
>>> import torch, blockchol.torch as bt
>>> X = torch.randn(1100, 1100, dtype=torch.float64)
>>> A = (X @ X.mT / 1100 + torch.eye(1100, dtype=torch.float64)).requires_grad_()
>>> L = bt.cholesky(A)                       # torch's factor
>>> torch.equal(L, torch.linalg.cholesky(A))
True
>>> L.diagonal().log().sum().backward()      # ½ log det A: the gradient is ½ A⁻¹
>>> torch.allclose(A.grad, torch.linalg.inv(A.detach()) / 2)
True
"""

try:
    import torch
except ImportError as error:        # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError("blockchol.torch needs PyTorch, which is not installed: "
                      "pip install 'blockchol[torch]'") from error

from blockchol import _patching
from blockchol.core import thresholds as _thresholds

from ._functions import (Cholesky as _Cholesky, CholeskyEx as _CholeskyEx,
                         CholeskySolve as _CholeskySolve, _torch_cholesky, _torch_cholesky_ex,
                         _torch_cholesky_solve)
from ._override import TorchFunction as _TorchFunction

__all__ = ["cholesky", "cholesky_ex", "cholesky_solve", "accelerate", "CROSSOVER_N",
           "SOLVE_CROSSOVER_N", "SINGLE_THREAD_N"]

# The crossovers and the thread switch, from blockchol's table of thresholds
# (module globals, read at each call, so that they can be lowered); why each
# has its value is in notes.md, section "Frameworks".
#: Below these orders (by dtype name, ``CROSSOVER_N["float64"]``) a matrix, or each
#: matrix of a stack, goes to torch's own derivative rules, which are faster there.
CROSSOVER_N = _thresholds.TORCH_CROSSOVER_N
#: cholesky_solve: from this order its O(N² k) backward beats torch's O(N³) one.
SOLVE_CROSSOVER_N = _thresholds.TORCH_SOLVE_CROSSOVER_N
#: Below this order blockchol runs single-threaded: handing the cores between
#: torch's thread pool and the BLAS's costs more than a second thread gains.
SINGLE_THREAD_N = _thresholds.TORCH_SINGLE_THREAD_N

#: The dtypes blockchol serves, with their names (the crossovers' keys).
_DTYPE_NAMES = {torch.float32: "float32", torch.float64: "float64", torch.complex64: "complex64",
                torch.complex128: "complex128"}
_PLAIN_TYPES = (torch.Tensor, torch.nn.Parameter)


# --- which calls blockchol serves ------------------------------------------------------------

def _mode_allows():
    """No torch function mode is active, or only default-device contexts are."""
    try:
        from torch.utils._device import DeviceContext
        stack = torch.overrides._get_current_function_mode_stack()
    except (ImportError, AttributeError):        # pragma: no cover - other torch versions
        return False
    return all(isinstance(mode, DeviceContext) for mode in stack)


def _served(*tensors):
    """Whether these operands go through blockchol's path (else torch's own operator)."""
    for t in tensors:
        if (type(t) not in _PLAIN_TYPES or t.layout != torch.strided
                or t.device.type != "cpu" or t.dtype not in _DTYPE_NAMES):
            return False
    if torch.overrides.has_torch_function(tensors) and not _mode_allows():
        return False
    return not torch.compiler.is_compiling()


def _square_from(A, n):
    """A stack of square matrices of order at least n (torch's own reports other shapes)."""
    return A.dim() >= 2 and A.shape[-2] == A.shape[-1] >= n


def _flags(*values):
    """torch's flags are bools; anything else goes to torch, which reports it."""
    return all(type(v) is bool for v in values)


# --- the functions ---------------------------------------------------------------------------
#
# Each is written with torch's signature and returns NotImplemented for the calls
# it leaves to torch; _TorchFunction (in _override) then calls torch's own
# function exactly as the caller called this one.

def cholesky(input, *, upper=False, out=None):
    """``torch.linalg.cholesky`` with derivatives through blockchol.

    Parameters
    ----------
    input : (..., N, N) Tensor
        Hermitian positive definite matrices.  As torch does, only the lower
        triangle (``upper=False``) or the upper triangle (``upper=True``) is
        read.
    upper : bool, optional
        Return the upper factor U with A = Uᴴ U instead of the lower L with
        A = L Lᴴ.
    out : Tensor, optional
        As in torch (which does not differentiate ``out=`` calls); such calls
        go to torch's own operator.

    Returns
    -------
    L : (..., N, N) Tensor
        torch's factor (the same values: it is torch's computation).

    Raises
    ------
    torch.linalg.LinAlgError
        A matrix that is not positive definite, as torch raises it.

    Notes
    -----
    Derivatives, for a real loss f with df = Re Σ conj(L̄_ij) dL_ij:

    * backward: Ā = S = ``blockchol.chol_rev(L, L̄, symmetric=True)``, the
      Hermitian matrix with df = Re Σ_ij conj(S_ij) dA_ij for Hermitian dA
      (S = ½ L⁻ᴴ (P + Pᴴ) L⁻¹, P = Φ(Lᴴ L̄), Φ the lower triangle with the
      diagonal halved); for complex A torch adds the anti-Hermitian
      ½ i L⁻ᴴ diag(Im diag(Lᴴ L̄)) L⁻¹, and so does this function (with a
      second chol_rev call, skipped when that part is zero);
    * forward: L̇ = L Φ(L⁻¹ Ȧ L⁻ᴴ), ``blockchol.chol_fwd(L, Ȧ)`` for a
      Hermitian Ȧ;
    * second and higher orders: the rules of both are themselves
      differentiable (see the module's source for the formulas).

    The factor is torch's, so the values are torch's; the derivatives agree
    with torch's own to rounding.  Inputs blockchol does not serve, and
    matrices smaller than ``CROSSOVER_N[dtype name]`` (the measured crossover), go to
    torch's own operator.

    Examples
    --------
    >>> import torch, blockchol.torch as bt
    >>> X = torch.randn(2, 1100, 1100, dtype=torch.float64)
    >>> A = (X @ X.mT / 1100 + torch.eye(1100, dtype=torch.float64)).requires_grad_()
    >>> U = bt.cholesky(A, upper=True)                  # a stack: (2, 1100, 1100)
    >>> torch.allclose(U.mH @ U, A)
    True
    >>> (g,) = torch.autograd.grad(U.diagonal(dim1=-2, dim2=-1).sum(), A)
    >>> A2 = A.detach().clone().requires_grad_()
    >>> (g_torch,) = torch.autograd.grad(
    ...     torch.linalg.cholesky(A2, upper=True).diagonal(dim1=-2, dim2=-1).sum(), A2)
    >>> torch.allclose(g, g_torch)
    True
    """
    if (out is not None or not _served(input) or not _flags(upper)
            or not _square_from(input, CROSSOVER_N[_DTYPE_NAMES[input.dtype]])):
        return NotImplemented
    return _Cholesky.apply(input, upper)


def cholesky_ex(input, *, upper=False, check_errors=False, out=None):
    """``torch.linalg.cholesky_ex`` with derivatives through blockchol.

    Parameters
    ----------
    input : (..., N, N) Tensor
        As in :func:`cholesky`.
    upper : bool, optional
        As in :func:`cholesky`.
    check_errors : bool, optional
        Raise ``torch.linalg.LinAlgError`` for a matrix that is not positive
        definite instead of reporting it in ``info`` (torch's behaviour).
    out : tuple of Tensors, optional
        As in torch; such calls go to torch's own operator.

    Returns
    -------
    torch.return_types.linalg_cholesky_ex
        The named tuple (L, info), as torch returns it:
    L : (..., N, N) Tensor
        torch's factor; where ``info`` is positive, torch's partial result.
    info : (...) int32 Tensor
        0 where the factorization succeeded, else the order of the leading
        minor that is not positive definite (torch's, not differentiable).

    Notes
    -----
    Derivatives as in :func:`cholesky`.  A factor that torch marked as failed
    is not one blockchol accepts; its derivatives, should anyone ask for
    them, are torch's formula applied to it, as torch does.

    Examples
    --------
    >>> import torch, blockchol.torch as bt
    >>> A = torch.diag(torch.tensor([1.0, -1.0] * 50, dtype=torch.float64))
    >>> L, info = bt.cholesky_ex(A)
    >>> int(info)                                  # the leading minor of order 2
    2
    >>> bt.cholesky_ex(A).info                      # torch's named tuple: .L and .info
    tensor(2, dtype=torch.int32)
    """
    if (out is not None or not _served(input) or not _flags(upper, check_errors)
            or not _square_from(input, CROSSOVER_N[_DTYPE_NAMES[input.dtype]])):
        return NotImplemented
    return torch.return_types.linalg_cholesky_ex(_CholeskyEx.apply(input, upper, check_errors))


# --- cholesky_solve ---------------------------------------------------------------------

def cholesky_solve(input, input2, upper=False, *, out=None):
    """``torch.cholesky_solve`` with a backward in O(N² k) for k right-hand sides.

    Parameters
    ----------
    input : (..., N, k) Tensor
        Right-hand sides B.
    input2 : (..., N, N) Tensor
        Cholesky factor of A: lower with A = L Lᴴ, or with ``upper=True``
        upper with A = Uᴴ U.  As torch does, only that triangle is read.
        Batch dimensions of `input` and `input2` broadcast.
    upper : bool, optional
        Whether `L` is the upper factor.
    out : Tensor, optional
        As in torch; such calls go to torch's own operator.

    Returns
    -------
    X : (..., N, k) Tensor
        A⁻¹ B, torch's computation.

    Notes
    -----
    The gradients are torch's: with G = A⁻¹ X̄ (another cholesky_solve),
    B̄ = G and L̄ = -(G Xᴴ + X Gᴴ) L (upper: -U (G Xᴴ + X Gᴴ)), the gradient
    with respect to every entry of `L` as torch defines it
    (df = Re Σ conj(L̄_ij) dL_ij for L read as a full matrix).  torch forms
    the N × N matrix G Xᴴ + X Gᴴ and multiplies it by L, 2N³ flops; here the
    product is grouped as G (Xᴴ L) + X (Gᴴ L) when 2k < N, 8N²k flops.
    Forward mode: Ẋ = A⁻¹ (Ḃ - Ȧ X), Ȧ = L̇ Lᴴ + L L̇ᴴ, also O(N² k).
    All orders compose (the rules call this function again).  Factors smaller
    than :data:`SOLVE_CROSSOVER_N` and inputs blockchol does not serve go to
    torch's own operator.

    Examples
    --------
    >>> import torch, blockchol.torch as bt
    >>> X = torch.randn(500, 500, dtype=torch.float64)
    >>> L = torch.linalg.cholesky(X @ X.mT / 500 + torch.eye(500, dtype=torch.float64))
    >>> L = L.requires_grad_()
    >>> y = torch.randn(500, 1, dtype=torch.float64)
    >>> (g,) = torch.autograd.grad((y * bt.cholesky_solve(y, L)).sum(), L)
    >>> (g_torch,) = torch.autograd.grad((y * torch.cholesky_solve(y, L)).sum(), L)
    >>> torch.allclose(g, g_torch)
    True
    """
    if (out is not None or not _served(input, input2) or not _flags(upper)
            or not _square_from(input2, SOLVE_CROSSOVER_N)):
        return NotImplemented
    return _CholeskySolve.apply(input, input2, upper)


cholesky = _TorchFunction(cholesky, _torch_cholesky)
cholesky_ex = _TorchFunction(cholesky_ex, _torch_cholesky_ex)
cholesky_solve = _TorchFunction(cholesky_solve, _torch_cholesky_solve)


# --- accelerate() -----------------------------------------------------------------------

_PATCHES = _patching.Patches(lambda: (
    (torch.linalg, "cholesky", cholesky), (torch.linalg, "cholesky_ex", cholesky_ex),
    (torch, "cholesky_solve", cholesky_solve)))


def accelerate(func=None):
    """Make ``torch.linalg.cholesky``, ``torch.linalg.cholesky_ex`` and
    ``torch.cholesky_solve`` this module's functions while active.

    Use it as a context manager (``with accelerate():``) or as a decorator
    (``@accelerate`` or ``@accelerate()``).  On exit -- also when the block
    or the decorated function raises -- torch's own functions are restored.

    Code that looks these functions up when it calls them (GPyTorch and
    linear_operator's ``psd_safe_cholesky``, which calls
    ``torch.linalg.cholesky_ex``, and their ``torch.cholesky_solve``; BoTorch
    and Pyro through them or directly) then gets blockchol's derivatives
    without edits.  Values are torch's, gradients agree with torch's to
    rounding.

    Warnings
    --------
    The switch is process-wide: while any ``accelerate()`` is active, every
    thread calling these torch functions gets this module's.  Activations
    nest and may overlap across threads: a lock-protected count installs the
    functions at the first entry and restores torch's at the last exit.
    References taken before the switch (``from torch.linalg import
    cholesky``) and methods (``Tensor.cholesky_solve``) are not affected,
    nor is ``torch.cholesky`` (deprecated by torch).

    Examples
    --------
    >>> import torch, blockchol.torch as bt
    >>> with bt.accelerate():
    ...     torch.linalg.cholesky is bt.cholesky
    True
    >>> torch.linalg.cholesky is bt.cholesky
    False
    >>> @bt.accelerate
    ... def factor(A):
    ...     return torch.linalg.cholesky_ex(A)[0]
    >>> factor(torch.eye(3)).diagonal()
    tensor([1., 1., 1.])
    """
    if func is None:
        return _PATCHES.activation()
    if not callable(func):
        raise TypeError("accelerate() takes a function to decorate, or nothing; got %r" % (func,))
    return _PATCHES.activation()(func)
