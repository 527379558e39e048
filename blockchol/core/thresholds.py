"""Every tuning threshold of blockchol, in one table.

Each constant picks between two ways of computing the same result; none
changes a result beyond rounding.  Each line says what the constant
decides and why it has its value; the measurement behind it is in the
section of notes.md named in brackets.  A constant that serves a single
dtype × size cell is kept only where a side-by-side measurement shows that
it pays.  Sizes are matrix orders N.
"""

import math

__all__ = [
    "SMALL_N", "STACK_MAX_N", "TINY_N", "PER_MATRIX_N", "BASE",
    "AUTO_SWEEP_N", "AUTO_SWEEP_KAPPA", "CLOSED_BLOCK", "SWEEP_BLOCK_SIZES", "STACK_SWEEP_BLOCK_SIZES",
    "PARALLEL_N", "STRIP", "MIN_WORKER_FLOPS", "CHUNK_BYTES", "BATCH_LAST_CHUNK_BYTES",
    "TORCH_CROSSOVER_N", "TORCH_SOLVE_CROSSOVER_N", "TORCH_SINGLE_THREAD_N", "JAX_CROSSOVER_N",
]

# --- which path serves a call ------------------------------------------------------------

#: Single matrices up to this order take the closed form as a stack of one (a few
#: whole-array calls), skipping blocks, strips and operand objects, which cost more than
#: the arithmetic at these sizes [notes: Design, "Paths"].
SMALL_N = 64
#: Stacks of matrices up to this order are computed a chunk of matrices per numpy
#: operation; larger ones one matrix at a time, which keeps a multithreaded BLAS busy
#: [notes: Design, "Stacks"].
STACK_MAX_N = 256
#: Stacks up to this order take the reverse closed form with the matrix index last (no
#: BLAS calls, a vector operation per step over the whole chunk): faster than the other
#: stacked forms up to these orders, slower beyond [notes: Design, "Stacks"].
TINY_N = {"real": 20, "complex": 10}
#: From this order a stack's closed-form products and solves go to BLAS one matrix at a
#: time; below, stacked numpy substitution is faster (the two cross between N = 12 and 16,
#: real and complex) [notes: Design, "Stacks"].
PER_MATRIX_N = 14
#: Rows of the explicitly inverted diagonal blocks in the stacked triangular solves:
#: 2-wide blocks stayed within 1.8x of substitution's error on GP kernel matrices, 4-wide
#: ones lost up to 47x [notes: Accuracy].
BASE = 2

# --- which method, which blocks ----------------------------------------------------------

#: method="auto" takes the sweep for single matrices from this order; below it the
#: closed form is as fast or faster [notes: Accuracy, "The auto switch"].
AUTO_SWEEP_N = 500
#: ... when LAPACK's estimate of κ₁(L) is at most this: below it the sweep stayed within
#: 2x of the closed form's error, above it lost up to 18x, and far more at tiny jitter
#: [notes: Accuracy, "The auto switch"].
AUTO_SWEEP_KAPPA = 1000.0
#: Row-block height of the closed form's triangular products [notes: Design, "Products"].
CLOSED_BLOCK = 256


#: Block width of the single-matrix sweeps, by order: (largest N, width) pairs, the first
#: that fits applies (widths at or above N mean one block).  A block is one diagonal kernel
#: call, one Python step per column, so small matrices are one block; larger blocks make
#: the gemms larger but the kernel's level-2 work grows with them [notes: Design, "Block sizes"].
SWEEP_BLOCK_SIZES = ((128, 128), (1000, 64), (math.inf, 128))
#: The same for the stacked sweeps [notes: Design, "Stacks"].
STACK_SWEEP_BLOCK_SIZES = ((16, 16), (48, 16), (160, 32), (math.inf, 64))


# --- threads and memory ------------------------------------------------------------------

#: From this order the memory-bound passes over a whole matrix (Φ, fills, checks) run
#: on worker threads: serial, they capped the 1 -> 2 thread speed-up of the sweep at
#: N = 4000 at 1.65-1.71x [notes: Design, "Threads"].
PARALLEL_N = 1024
#: Rows per strip of those passes: temporaries stay at O(N · STRIP) [notes: Design, "Threads"].
STRIP = 256
#: A stack is shared among worker threads only in pieces of at least this much work
#: (count · N³): below it, handing work to a thread costs more than it saves (a setting
#: from the thread pool's overhead, not a measured crossover).
MIN_WORKER_FLOPS = 1 << 20
#: Bytes per matrix array of a stacked chunk: a chunk that stays in cache [notes: Design, "Stacks"].
CHUNK_BYTES = 2 * 1024 * 1024
#: The same for the matrix-index-last form, whose every step is one vector operation over
#: the chunk: there fewer, larger chunks win [notes: Design, "Stacks"].
BATCH_LAST_CHUNK_BYTES = 8 * 1024 * 1024

# --- the framework adapters --------------------------------------------------------------

#: blockchol.torch: below these orders (by dtype name) a matrix goes to torch's own
#: derivative rules, which are faster there [notes: Frameworks, "torch crossovers"].
TORCH_CROSSOVER_N = {"float64": 1024, "complex128": 2048, "float32": 1536, "complex64": 2048}
#: blockchol.torch.cholesky_solve: from this order its O(N² k) backward beats torch's
#: O(N³) one despite ~0.1 ms of Python [notes: Frameworks, "torch crossovers"].
TORCH_SOLVE_CROSSOVER_N = 256
#: blockchol.torch: below this order blockchol runs single-threaded, which avoids waiting
#: for torch's spinning threads to yield the cores [notes: Frameworks, "torch crossovers"].
TORCH_SINGLE_THREAD_N = 1024
#: blockchol.jax: below these orders (by dtype name) jax's own derivative rule is faster
#: than a host call into blockchol [notes: Frameworks, "jax crossovers"].
JAX_CROSSOVER_N = {"float64": 512, "complex128": 256, "float32": 768, "complex64": 256}
