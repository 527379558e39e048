"""Memory layouts: how BLAS will see an array, and when a result may reuse an input.

A C-ordered matrix is the column-major storage of its transpose, so every
matrix whose elements are unit-strided along one axis, with a sane leading
dimension along the other, can be handed to BLAS where it lies
(:func:`blas_view`).  Arrays that fail that test are copied once.

The rule for ``overwrite_l_bar`` lives here, once, for every path
(:func:`can_overwrite`).
"""

import numpy as np

from ._operands import bad_blas_layout

__all__ = ["blas_view", "is_row_major", "can_overwrite", "non_overlapping"]


def blas_view(a):
    """``(stored, transposed)`` with ``stored`` a column-major view of matrix ``a``, or None.

    ``transposed`` is True when ``stored`` is ``a.T`` (``a`` row-major).
    """
    if bad_blas_layout(a) is None:
        return a, False
    if bad_blas_layout(a.T) is None:
        return a.T, True
    return None


def is_row_major(a):
    """Whether the last two axes of ``a`` are laid out row by row (C order; the default).

    A matrix is column-major when its rows are closer together in memory
    than its columns; a 1×1, 1×N or N×1 matrix counts as row-major unless it
    is only Fortran-contiguous.
    """
    s0, s1 = abs(a.strides[-2]), abs(a.strides[-1])
    if a.shape[-2] > 1 and a.shape[-1] > 1:
        return s1 <= s0
    return not (a.flags.f_contiguous and not a.flags.c_contiguous)


def non_overlapping(a):
    """True when no two elements of ``a`` share memory (decided from the strides alone).

    Sufficient, not necessary: axes sorted by stride must each step over the
    whole extent of the smaller ones.  Views made with ``as_strided`` whose
    matrices overlap fail it.
    """
    extent = a.itemsize
    for stride, size in sorted((abs(s), n) for s, n in zip(a.strides, a.shape) if n > 1):
        if stride < extent:
            return False
        extent = stride * size
    return True


def can_overwrite(X, L, shape, dtype):
    """The ``overwrite_l_bar`` rule: may the result be written over ``X``?

    Yes when ``X`` has the result's shape (no broadcasting) and dtype, is
    writeable, overlaps neither ``L`` nor itself, and its matrices are laid
    out as BLAS can address them (unit stride along rows or columns) in the
    same memory order as ``L``'s -- the order the result takes, so that
    every BLAS call sees one storage form.
    """
    return (X.shape == shape and X.dtype == dtype and X.flags.writeable
            and blas_view(X[(0,) * (X.ndim - 2)]) is not None
            and is_row_major(X) == is_row_major(L)
            and not np.may_share_memory(X, L) and non_overlapping(X))
