"""The core: the derivatives on numpy arrays, through the BLAS that scipy ships.

Imports point down this list; nothing here imports a framework adapter.

* :mod:`.api` -- :func:`chol_rev`, :func:`chol_fwd`: check the arguments and
  decide everything once into a :class:`~.api.Plan`, then run one executor;
* :mod:`.stacks` -- stacks of matrices, a chunk per numpy step, and single
  small matrices as stacks of one; a loop over :mod:`.one` for large ones;
* :mod:`.one` -- one matrix through BLAS: its operands where they lie;
* :mod:`.closed` -- the closed forms, written once, and their blocked
  operations on one large matrix;
* :mod:`.sweep` -- the blocked sweeps (Murray 2016) and their diagonal-block
  kernels;
* :mod:`.blas` -- raw BLAS bindings, bounds-checked operands, memory layouts;
* :mod:`.triangles` -- Φ, the Hermitian mirror, triangle copies and checks;
* :mod:`.threads` -- the threading policy, the one place that touches pools;
* :mod:`.thresholds` -- every tuning threshold, with its reason.
"""
