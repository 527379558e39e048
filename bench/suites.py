"""The suites: which problems go through which implementations.

Each suite is a function of a :class:`~bench.runner.Context` that appends
records to it.  ``SUITES`` maps the names accepted by ``--suite`` to them.
"""

import gc
import tracemalloc

import numpy as np

import blockchol
from blockchol import _sweep, reference

from . import impls as I
from .features import batch_support, complex_support, fwd_support
from .problems import make_problem
from .runner import Record, run_case, wide_reference

__all__ = ["SUITES", "core", "blocks", "kernels", "threads", "memory", "batch", "complex_", "fwd"]


def _rev_reference(ctx, suite, problem):
    """chol_rev in double precision, one matrix at a time; the closed form if it fails."""
    try:
        return wide_reference(blockchol.chol_rev, problem, "L", "L_bar")
    except Exception as error:
        ctx.note(suite, "reference: chol_rev failed (%s: %s), so answers are checked against "
                        "reference.symbolic_rev" % (type(error).__name__, error))
        return wide_reference(reference.symbolic_rev, problem, "L", "L_bar")


def _rev_peers():
    return [I.gpy_impl(), I.torch_rev_impl(), I.jax_rev_impl()]


def _yardsticks(dtype):
    return [I.potrf_impl(dtype), I.gemm_impl(dtype)]


def core_impls(config, dtype):
    """The rows of the main table, in order."""
    return ([I.chol_rev_impl()]
            + I.seed_rev_impls(config.smith_max_n, config.level2_max_n)
            + _rev_peers()
            + list(config.extra_impls)
            + _yardsticks(dtype))


def core(ctx):
    """Reverse mode, one matrix: chol_rev against the seed's forms, peers and yardsticks."""
    config = ctx.config
    for dtype in config.dtypes:
        for n in config.sizes:
            problem = make_problem(n, dtype, seed=config.seed)
            run_case(ctx, "core", problem, core_impls(config, dtype),
                     _rev_reference(ctx, "core", problem))


def block_sizes_for(n, candidates):
    """The block sizes worth timing at N: those below N, N itself, and the default pick."""
    sizes = {b for b in candidates if b < n}
    if n <= max(candidates):
        sizes.add(n)          # one block: the diagonal kernel on the whole matrix
    sizes.add(min(_sweep.default_block_size(n), n))
    return sorted(sizes)


def blocks(ctx):
    """chol_rev's block-size sweep, to justify default_block_size."""
    config = ctx.config
    for dtype in config.dtypes:
        for n in config.sizes:
            problem = make_problem(n, dtype, seed=config.seed)
            impls = [I.chol_rev_impl(block_size=b, name="chol_rev, block_size=%d" % b)
                     for b in block_sizes_for(n, config.block_sizes)]
            run_case(ctx, "blocks", problem, impls, _rev_reference(ctx, "blocks", problem))


def kernels(ctx):
    """The diagonal kernel: closed form (default) against the level-2 loop and two-level blocking."""
    config = ctx.config
    for dtype in config.dtypes:
        for n in config.kernel_sizes:
            problem = make_problem(n, dtype, seed=config.seed)
            impls = [I.chol_rev_kernel_impl(kernel, b)
                     for b in config.kernel_block_sizes if b < n for kernel in I.KERNELS]
            run_case(ctx, "kernels", problem, impls, _rev_reference(ctx, "kernels", problem))


def threads(ctx):
    """chol_rev and potrf at each thread count; run outside the harness's global limit."""
    config = ctx.config
    for dtype in config.dtypes:
        for n in config.thread_sizes:
            problem = make_problem(n, dtype, seed=config.seed)
            impls = [I.chol_rev_impl(threads=t, name="chol_rev, %d thread%s" % (t, "s"[t == 1:]))
                     for t in config.thread_counts]
            impls += [I.potrf_impl(dtype, threads=t) for t in config.thread_counts]
            run_case(ctx, "threads", problem, impls, _rev_reference(ctx, "threads", problem))


def _traced_peak(call):
    """(result, peak bytes allocated during ``call``) as seen by tracemalloc.

    numpy reports its array buffers to tracemalloc, so this counts every
    array chol_rev allocates (the result included), but not memory that the
    BLAS library allocates for itself.
    """
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        result = call()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return result, peak - before


def _memory_record(problem, label, peak, in_place):
    matrix_bytes = problem.n ** 2 * problem.dtype.itemsize
    return Record(suite="memory", dtype=str(problem.dtype), case=problem.label, n=problem.n,
                  batch=[], impl=label, key="chol_rev", role=I.OURS, timed=label,
                  flops=I.rev_flops(problem), status="ok",
                  extra={"peak_bytes": peak, "matrix_bytes": matrix_bytes,
                         "ratio": peak / matrix_bytes, "result_is_l_bar": in_place})


def memory(ctx):
    """Peak extra memory of chol_rev, default and overwrite_l_bar=True, against N² · itemsize."""
    config = ctx.config
    for dtype in config.dtypes:
        for n in config.memory_sizes:
            problem = make_problem(n, dtype, seed=config.seed)
            L = problem.L     # C-ordered, as is every L_bar copy below: overwrite applies
            for label, overwrite in (("chol_rev(L, L_bar)", False),
                                     ("chol_rev(L, L_bar, overwrite_l_bar=True)", True)):
                blockchol.chol_rev(L, problem.L_bar.copy(), overwrite_l_bar=overwrite)  # warm-up
                L_bar = problem.L_bar.copy()
                result, peak = _traced_peak(
                    lambda: blockchol.chol_rev(L, L_bar, overwrite_l_bar=overwrite))
                record = _memory_record(problem, label, peak, result is L_bar)
                del result, L_bar
                ctx.records.append(record)
                ctx.progress("[memory %s %s] %s: peak %.3g MiB = %.3g × N²·itemsize%s"
                             % (record.dtype, record.case, label, peak / 2 ** 20,
                                record.extra["ratio"],
                                ", result written over L_bar" if record.extra["result_is_l_bar"]
                                else ""))


def batch(ctx):
    """Stacks: batched chol_rev (when supported) against one call per matrix and the peers."""
    config = ctx.config
    unsupported = batch_support()
    if unsupported:
        ctx.note("batch", "%s; its batched row is skipped (one call per matrix is timed)"
                 % unsupported)
    for dtype in config.dtypes:
        for shape in config.batch_shapes:
            problem = make_problem(shape[-1], dtype, batch=shape[:-2], seed=config.seed)
            impls = [] if unsupported else [I.chol_rev_impl(name="chol_rev (batched)")]
            impls.append(I.chol_rev_loop_impl())
            for peer in (I.torch_rev_impl(), I.jax_rev_impl()):
                peer.name += " (batched)"
                impls.append(peer)
            impls.append(I.numpy_cholesky_impl())
            run_case(ctx, "batch", problem, impls, _rev_reference(ctx, "batch", problem))


_COMPLEX_OF = {np.dtype(np.float64): np.dtype(np.complex128),
               np.dtype(np.float32): np.dtype(np.complex64)}


def complex_(ctx):
    """Complex Hermitian K = L Lᴴ: chol_rev (when supported) against torch, jax, the seed's forms."""
    config = ctx.config
    unsupported = complex_support()
    if unsupported:
        ctx.note("complex", "%s; its row is skipped" % unsupported)
    for dtype in (_COMPLEX_OF[np.dtype(d)] for d in config.dtypes):
        for n in config.complex_sizes:
            problem = make_problem(n, dtype, seed=config.seed)
            impls = [] if unsupported else [I.chol_rev_impl()]
            impls += I.seed_rev_impls(config.smith_max_n, config.level2_max_n)[1:]  # Smith: real
            impls += [I.torch_rev_impl(), I.jax_rev_impl()] + _yardsticks(dtype)
            run_case(ctx, "complex", problem, impls, _rev_reference(ctx, "complex", problem))


def fwd(ctx):
    """Forward mode: chol_fwd (when present) against jax's jvp and the closed form."""
    config = ctx.config
    unsupported = fwd_support()
    if unsupported:
        ctx.note("fwd", "%s; its row is skipped and answers are checked against "
                        "reference.symbolic_fwd" % unsupported)
    for dtype in config.dtypes:
        for n in config.fwd_sizes:
            problem = make_problem(n, dtype, seed=config.seed, tangent=True)
            function = reference.symbolic_fwd if unsupported else blockchol.chol_fwd
            impls = [] if unsupported else [I.chol_fwd_impl()]
            impls += [I.symbolic_fwd_impl(), I.jax_fwd_impl()] + _yardsticks(dtype)
            run_case(ctx, "fwd", problem, impls, wide_reference(function, problem, "L", "K_dot"))


SUITES = {"core": core, "blocks": blocks, "kernels": kernels, "threads": threads,
          "memory": memory,
          "batch": batch, "complex": complex_, "fwd": fwd}
