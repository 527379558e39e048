"""The implementations the harness can time, each a small :class:`Impl` record.

An Impl knows how to *prepare* itself for a :class:`~bench.problems.Problem`
(untimed: building a torch graph, jitting a jax function, copying inputs into
the layout a routine wants) into a :class:`Prepared`, whose ``thunk`` is the
one call that is timed and whose ``answer`` turns that call's output into a
numpy array in the reference's convention (the triangular gradient G for
reverse mode, L̇ for forward mode).

Adding a row to a suite is adding an Impl to one of the lists built at the
end of this module.
"""

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
from scipy.linalg import get_blas_funcs, get_lapack_funcs
from threadpoolctl import ThreadpoolController

import blockchol
from blockchol import reference

from . import peers
from .checks import triangular_from_full
from .problems import Problem

__all__ = ["Impl", "Prepared", "OURS", "SEED", "PEER", "YARDSTICK",
           "rev_flops", "potrf_flops", "gemm_flops",
           "chol_rev_impl", "chol_rev_kernel_impl", "KERNELS", "chol_rev_loop_impl", "seed_rev_impls", "gpy_impl", "torch_rev_impl",
           "jax_rev_impl", "potrf_impl", "gemm_impl", "numpy_cholesky_impl", "chol_fwd_impl",
           "symbolic_fwd_impl", "jax_fwd_impl", "lapack_name"]

# Roles, in the order rows are listed.
OURS = "ours"            # blockchol's own entry points
SEED = "seed"            # the slow reference forms in blockchol.reference
PEER = "peer"            # other libraries
YARDSTICK = "yardstick"  # LAPACK/BLAS routines that bound what is achievable


@dataclass
class Prepared:
    """A ready-to-time call and how to read its output."""

    thunk: Callable[[], object]
    answer: Callable[[object], np.ndarray] = np.asarray
    reference: Optional[np.ndarray] = None   # overrides the case's reference (yardsticks)


@dataclass
class Impl:
    """One implementation: a row in the tables."""

    name: str                                  # row label, unique within a case
    role: str                                  # OURS, SEED, PEER or YARDSTICK
    prepare: Callable[[Problem], Prepared]
    flops: Callable[[Problem], float]          # nominal flop count, for GFLOP/s
    timed: str = ""                            # what one timed call does, for the report
    key: str = ""                              # stable id across cases ("potrf" for d/s/z-potrf)
    peer: Optional[str] = None                 # the optional package it needs
    max_n: Optional[int] = None                # not run above this N (too slow)
    supports: Callable[[np.dtype], Optional[str]] = lambda dtype: None   # reason if not
    threads: Optional[int] = None              # thread count, when the row fixes one
    block_size: Optional[int] = None           # chol_rev's block_size, when the row fixes one

    def __post_init__(self):
        self.key = self.key or self.name


# --- flop counts ------------------------------------------------------------
# Nominal counts in real flops: a complex multiply-add is four real multiplies
# and four real adds against one and one, hence the factor 4 for complex.

def _scale(problem):
    return problem.count * (4.0 if problem.dtype.kind == "c" else 1.0)


def rev_flops(problem):
    """2N³/3: the blocked reverse sweep's count (twice the factorization's)."""
    return _scale(problem) * 2.0 * problem.n ** 3 / 3.0


def potrf_flops(problem):
    """N³/3: the Cholesky factorization."""
    return _scale(problem) * problem.n ** 3 / 3.0


def gemm_flops(problem):
    """2N³: one N × N × N matrix product."""
    return _scale(problem) * 2.0 * problem.n ** 3


def lapack_name(routine, dtype):
    """'dpotrf' for ('potrf', float64), 'cgemm' for ('gemm', complex64), ..."""
    return {"f": "s", "d": "d", "F": "c", "D": "z"}[np.dtype(dtype).char] + routine


def _real_only(what):
    return lambda dtype: ("%s is real-only" % what) if np.dtype(dtype).kind == "c" else None


def _float64_only(what):
    return lambda dtype: None if np.dtype(dtype) == np.float64 else "%s takes float64 only" % what


def _handle(peer):
    handle, reason = peers.load(peer)
    if handle is None:
        raise RuntimeError("%s %s" % (peer, reason))
    return handle


# --- reverse mode: blockchol and the seed's forms ----------------------------------

def chol_rev_impl(block_size=None, threads=None, name="chol_rev"):
    """blockchol.chol_rev on the problem's L and L̄ (a stack when the problem has one)."""
    def prepare(problem):
        L, L_bar = problem.L, problem.L_bar
        return Prepared(lambda: blockchol.chol_rev(L, L_bar, block_size=block_size,
                                                   threads=threads))
    settings = []
    if block_size is not None:
        settings.append("block_size=%d" % block_size)
    if threads is not None:
        settings.append("threads=%d" % threads)
    return Impl(name, OURS, prepare, rev_flops, key="chol_rev", threads=threads,
                block_size=block_size,
                timed="chol_rev(L, L_bar%s)" % "".join(", " + s for s in settings))


#: The diagonal kernels the sweep can use, for the kernel comparison in notes.md.
KERNELS = ("symbolic", "level2", "recursive")


def _kernel(name, inner=16):
    from blockchol import _kernel as K, _sweep
    return {"symbolic": K.symbolic, "level2": K.level2,
            "recursive": _sweep.recursive_kernel(inner)}[name]


def chol_rev_kernel_impl(kernel, block_size):
    """The blocked sweep with a chosen diagonal kernel (private API; symbolic is the default).

    ``recursive`` runs the sweep again on each diagonal block with 16-wide
    inner blocks and the level-2 kernel inside: a second level of blocking.
    """
    import functools
    from blockchol import _one, _sweep

    def prepare(problem):
        sweep = functools.partial(_sweep.rev_sweep, kernel=_kernel(kernel))
        L, L_bar, dtype = problem.L, problem.L_bar, problem.dtype
        return Prepared(lambda: _one.run_one(sweep, L, L_bar, dtype, True, block_size))
    return Impl("block_size=%d, %s kernel" % (block_size, kernel), OURS, prepare, rev_flops,
                key="kernel_%s_%d" % (kernel, block_size), block_size=block_size,
                timed="the blocked sweep with the %s diagonal kernel" % kernel)


def chol_rev_loop_impl(name="chol_rev, one call per matrix"):
    """chol_rev called on each matrix of a stack in a Python loop (the batch baseline)."""
    def prepare(problem):
        L = problem.L.reshape((-1,) + problem.L.shape[-2:])
        L_bar = problem.L_bar.reshape(L.shape)
        shape = problem.L.shape
        return Prepared(lambda: [blockchol.chol_rev(a, b) for a, b in zip(L, L_bar)],
                        answer=lambda out: np.stack(out).reshape(shape))
    return Impl(name, OURS, prepare, rev_flops, key="chol_rev_loop",
                timed="[chol_rev(L[i], L_bar[i]) for each i]")


def _seed_rev(function, name, max_n=None, supports=lambda dtype: None):
    def prepare(problem):
        L, L_bar = problem.L, problem.L_bar
        return Prepared(lambda: function(L, L_bar))
    return Impl(name, SEED, prepare, rev_flops, max_n=max_n, supports=supports,
                timed="blockchol.reference.%s(L, L_bar) (computes in double precision)" % name)


def seed_rev_impls(smith_max_n, level2_max_n):
    """The seed's forms: Smith's scalar loop, the level-2 sweep, the closed form."""
    return [
        _seed_rev(reference.smith_rev, "smith_rev", smith_max_n,
                  _real_only("smith_rev (pure-Python scalar loop)")),
        _seed_rev(reference.level2_rev, "level2_rev", level2_max_n),
        _seed_rev(reference.symbolic_rev, "symbolic_rev"),
    ]


# --- reverse mode: peers ---------------------------------------------------------------

def gpy_impl():
    """GPy.util.choleskies.backprop_gradient(dL, L): compiled scalar loop, triangular result."""
    def prepare(problem):
        backprop_gradient = _handle("GPy")
        L, L_bar = problem.L, problem.L_bar
        return Prepared(lambda: backprop_gradient(L_bar, L))
    return Impl("GPy", PEER, prepare, rev_flops, peer="GPy",
                supports=_float64_only("GPy's compiled backprop_gradient"),
                timed="GPy.util.choleskies.backprop_gradient(L_bar, L) (Cython, OpenMP)")


def torch_rev_impl():
    """torch autograd: only the backward through torch.linalg.cholesky is timed."""
    def prepare(problem):
        torch = _handle("torch")
        K = torch.from_numpy(problem.K.copy()).requires_grad_()
        L = torch.linalg.cholesky(K)            # the graph, built once and kept
        L_bar = torch.from_numpy(problem.L_bar)
        return Prepared(
            lambda: torch.autograd.grad(L, K, L_bar, retain_graph=True)[0],
            answer=lambda out: triangular_from_full(out.numpy()))
    return Impl("torch", PEER, prepare, rev_flops, peer="torch",
                timed="torch.autograd.grad(L, K, grad_outputs=L_bar, retain_graph=True) on "
                      "the graph of L = torch.linalg.cholesky(K) built once: torch's "
                      "cholesky backward and the autograd engine, not the factorization")


def jax_rev_impl():
    """jax.vjp of jnp.linalg.cholesky: only the jitted application of the vjp is timed."""
    def prepare(problem):
        jax, jnp = _handle("jax")
        _, vjp = jax.vjp(jnp.linalg.cholesky, jax.device_put(problem.K))
        apply = jax.jit(lambda f, cotangent: f(cotangent)[0])
        # jax pairs cotangents with tangents bilinearly, without conjugation:
        # our df = Re Σ conj(L̄) dL needs the cotangent conj(L̄), and the result
        # is then conj(S) for our S.  Both conj are no-ops for real dtypes.
        cotangent = jax.device_put(np.conj(problem.L_bar))
        return Prepared(
            lambda: apply(vjp, cotangent).block_until_ready(),
            answer=lambda out: triangular_from_full(np.conj(np.asarray(out))))
    return Impl("jax", PEER, prepare, rev_flops, peer="jax",
                timed="jax.jit(lambda f, ct: f(ct))(vjp, L_bar) with vjp from "
                      "jax.vjp(jnp.linalg.cholesky, K) computed once, block_until_ready")


# --- yardsticks -----------------------------------------------------------------------

def potrf_impl(dtype, threads=None):
    """scipy's LAPACK ?potrf on K (lower), as a unit of 'one factorization'.

    With ``threads``, each call runs under a threadpoolctl BLAS limit, as
    ``chol_rev(..., threads=...)`` does, so both pay the same switching cost.
    """
    def prepare(problem):
        potrf = get_lapack_funcs("potrf", dtype=problem.dtype)
        K = np.asfortranarray(problem.K)

        def answer(out):
            factor, info = out
            return np.tril(factor) if info == 0 else np.full(factor.shape, np.nan)

        def call():
            return potrf(K, lower=1, clean=0, overwrite_a=0)
        if threads is None:
            return Prepared(call, answer, reference=problem.L)
        controller = ThreadpoolController()

        def limited_call():
            with controller.limit(limits=threads, user_api="blas"):
                return call()
        return Prepared(limited_call, answer, reference=problem.L)
    name = lapack_name("potrf", dtype)
    label = name if threads is None else "%s, %d thread%s" % (name, threads, "s"[threads == 1:])
    return Impl(label, YARDSTICK, prepare, potrf_flops, key="potrf", threads=threads,
                timed="scipy.linalg.lapack.%s(K, lower=1, clean=0, overwrite_a=0), "
                      "K Fortran-ordered (includes the copy of K, as chol_rev includes "
                      "its copy of L_bar)%s" % (name, "" if threads is None else
                                                 ", under a threadpoolctl BLAS limit"))


def gemm_impl(dtype):
    """scipy's BLAS ?gemm C = A B on Fortran-ordered N × N operands: the roofline."""
    def prepare(problem):
        gemm = get_blas_funcs("gemm", dtype=problem.dtype)
        A, B = np.asfortranarray(problem.K), np.asfortranarray(problem.L)
        return Prepared(lambda: gemm(1.0, A, B),
                        reference=problem.wide("K") @ problem.wide("L"))
    name = lapack_name("gemm", dtype)
    return Impl(name, YARDSTICK, prepare, gemm_flops, key="gemm",
                timed="scipy.linalg.blas.%s(1.0, A, B), N × N Fortran-ordered operands" % name)


def numpy_cholesky_impl():
    """np.linalg.cholesky of a stack: the factorization yardstick for batches."""
    def prepare(problem):
        K = problem.K
        return Prepared(lambda: np.linalg.cholesky(K), reference=problem.L)
    return Impl("numpy.linalg.cholesky", YARDSTICK, prepare, potrf_flops, key="potrf",
                timed="np.linalg.cholesky(K) on the whole stack")


# --- forward mode ----------------------------------------------------------------------

def chol_fwd_impl():
    """blockchol.chol_fwd(L, K_dot) (feature-detected by the caller)."""
    def prepare(problem):
        L, K_dot = problem.L, problem.K_dot
        return Prepared(lambda: blockchol.chol_fwd(L, K_dot))
    return Impl("chol_fwd", OURS, prepare, rev_flops, timed="chol_fwd(L, K_dot)")


def symbolic_fwd_impl():
    """The closed form L Φ(L⁻¹ K̇ L⁻ᴴ) of blockchol.reference."""
    def prepare(problem):
        L, K_dot = problem.L, problem.K_dot
        return Prepared(lambda: reference.symbolic_fwd(L, K_dot))
    return Impl("symbolic_fwd", SEED, prepare, rev_flops,
                timed="blockchol.reference.symbolic_fwd(L, K_dot) (computes in double precision)")


def jax_fwd_impl():
    """jax's tangent map of jnp.linalg.cholesky at K, jitted; the factorization is not timed.

    jax.linearize(f, K) runs the forward pass once and returns the linear map
    K̇ ↦ L̇ as a pytree holding its residuals; jitting its application times
    what jax.jvp does beyond the factorization.
    """
    def prepare(problem):
        jax, jnp = _handle("jax")
        _, tangent_map = jax.linearize(jnp.linalg.cholesky, jax.device_put(problem.K))
        apply = jax.jit(lambda f, tangent: f(tangent))
        K_dot = jax.device_put(problem.K_dot)    # Hermitian: jax symmetrizes its input
        return Prepared(lambda: apply(tangent_map, K_dot).block_until_ready())
    return Impl("jax", PEER, prepare, rev_flops, peer="jax",
                timed="jax.jit(lambda f, t: f(t))(jvp, K_dot) with jvp from "
                      "jax.linearize(jnp.linalg.cholesky, K) computed once (the jvp minus "
                      "the factorization), block_until_ready")
