"""blockchol: fast, blocked derivatives of the Cholesky decomposition.

``chol_rev(L, L_bar)`` turns ∂f/∂L into ∂f/∂K for K = L Lᴴ with a blocked
right-to-left sweep of level-3 BLAS calls (Murray 2016, arXiv:1602.07527)
or an accurate closed form; ``chol_fwd`` is the forward derivative;
``backprop_gradient`` is a drop-in for GPy's.  Slow reference forms live in
:mod:`blockchol.reference`.

The package's folders: ``core/`` (numpy and BLAS: the public functions'
implementation), ``torch/`` and ``jax/`` (the framework adapters),
``dask/`` (the distributed path), ``demo/`` (the GP demonstration).
"""

from .core.api import backprop_gradient, chol_fwd, chol_rev

__all__ = ["chol_rev", "chol_fwd", "backprop_gradient"]
__version__ = "0.1.0"
