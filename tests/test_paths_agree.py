"""Every path agrees with the per-matrix reference form (issue 17): a differential property test.

blockchol serves a call by one of several paths (the ``small`` closed form
for single matrices up to SMALL_N, the blocked ``one`` path above it and for
the sweep, a ``loop`` over stacks of N > STACK_MAX_N, the ``stacked``
operations up to it -- the reverse closed form with the matrix index last
up to TINY_N, stacked substitution below PER_MATRIX_N, per-matrix BLAS from
it -- and the dask tiles).  Each test here draws calls that reach one group
of paths, with every option drawn independently, and holds every result to
the same oracle: :func:`blockchol.reference.closed_rev` /
:func:`~blockchol.reference.closed_fwd` in long double (ε ≈ 1.1e-19),
matrix by matrix, on the lower form of the inputs, turned into the caller's
convention (the conjugate transpose for ``lower=False``; S = G/2 off the
diagonal made Hermitian for ``symmetric=True``).

Inputs
------
* Factors and cotangents whose entries are exact in *every* dtype drawn
  (float16 included): L = ⌊256 · chol(K)⌉ / 256 with K = A Aᴴ/(N+3) + αI, and
  integer-valued L̄ / K̇ (|entries| ≤ 64).  So a drawn dtype, byte order or
  integer type never changes the mathematical problem, and the long-double
  truths are cached per (direction, N, seeds, kinds): hypothesis varies the
  storage freely while only a few hundred distinct truths are ever computed.
  An integer-typed factor is 256 · L (exact), whose derivatives are the
  truths / 256, exactly.
* Well-conditioned factors only (α = 0.5 or 0.1: κ₂(L) ≤ 9): the sweeps'
  error grows far faster than the closed form's with conditioning
  (tests/test_accuracy.py); this test is about every path computing the
  same function in the dtype asked for, which well-conditioned problems
  decide sharply.
* dtypes: float16/32/64 and complex64/128 for both; int16-64 for L (256 · L
  needs 16 bits), int8-64 and bool for L̄/K̇; each native and byte-swapped;
  L's and L̄'s/K̇'s drawn independently (real with complex both ways).
* Shapes: single matrices of every order around SMALL_N and TINY_N; stacks
  whose batch shapes broadcast (a leading axis missing or of length 1 on
  either side, empty stacks, N = 0) at every order around TINY_N,
  PER_MATRIX_N and the stacked sweep's block widths; a few stacks of
  N = STACK_MAX_N + 1 (each truth costs seconds there); dask arrays with
  ragged tiles, zero-size tiles, non-square chunkings (rechunked) and numpy
  arguments.
* Layouts, each matrix: C, F, a transposed view, row- and column-major views
  with a leading dimension, step-2 slices, negative strides, and for stacks
  a step-2 batch axis; the unread triangle holds zeros, random values, NaN,
  inf or 1e30; the memory around a view holds NaN (integers: 99).
* Options: lower, symmetric, method (auto/closed/sweep), block_size,
  overwrite_l_bar, check_finite, threads.

Checks, for every call: the values (the tolerance below); exact zeros in
the other triangle, or exact Hermitian symmetry (symmetric=True); a real
diagonal of G; dtype = np.result_type(L, X, float32) with integers and
booleans counted as float64 (float16 → float32); shape = the broadcast
shape; no warning; no input modified, nor the memory around a view; the
overwrite_l_bar rule of the docstring both ways, and a single matrix's
result in L's memory order.

Tolerance: ``tol(result dtype, κ₂(L), c_n(N))`` from tests/helpers.py, the
first-order bound c_N · eps · κ₂(L)² of the closed forms' two triangular
solves with c_N = 4 √(N + 1), the probabilistic (√N) growth of rounding
errors; its docstring derives it.  Over thousands of draws of this file
the largest error was 0.8 √(N + 1) · eps · κ², so the bar leaves a factor
5; for a float64 result at N = 257, κ ≈ 2 it is 6e-14, and any error that
is not rounding -- a wrong triangle, conjugate or sign (O(1)), a float64
result computed in float32 (1e-8) -- lies orders of magnitude above it.

Budget: derandomized (a seed fixed by each test's name, no example
database), so CI draws the same examples each run; see EXAMPLES.

Issue 17's regressions keep tests of their own beside the drawn ones:
item 1 (test_item1_cell, test_item1_real_factor_complex_cotangent_in_a_tiny_stack),
item 2 (test_item2_tiny_pivots_give_inf_with_a_warning_never_nan) and item 7
(test_item7_dask_forward_closed_form_with_a_zero_size_tile); each failed
before its fix.
"""

import functools
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import blockchol
from blockchol import reference as ref
from blockchol.core import thresholds
from helpers import c_n, condition, tol

SMALL_N = thresholds.SMALL_N                  # single matrices up to this: the small path
STACK_MAX_N = thresholds.STACK_MAX_N          # stacks up to this: stacked; beyond: a loop
TINY_N = thresholds.TINY_N                    # reverse closed stacks up to this: batch-last
PER_MATRIX_N = thresholds.PER_MATRIX_N        # stacks from this: per-matrix BLAS

#: Examples per test: the file runs in about half a minute on two busy cores.
EXAMPLES = {"single": 60, "stack": 70, "loop": 3, "dask": 25, "item1": 10}


def budget(name, shrink=True):
    phases = (Phase.explicit, Phase.generate) + ((Phase.shrink,) if shrink else ())
    return settings(max_examples=EXAMPLES[name], deadline=None, derandomize=True, database=None,
                    phases=phases, suppress_health_check=list(HealthCheck))


# --------------------------------------------------------------------------
# The problems, exact in every dtype, and their long-double truths

LSEEDS, XSEEDS = 3, 3
SCALE = 256.0             # L's entries are multiples of 1/SCALE; an integer factor is SCALE · L


@functools.lru_cache(maxsize=None)
def base_factor(n, complex_, seed):
    """A lower factor with entries k/256, |k| < 2048 (exact in float16), κ₂ ≤ 9."""
    rng = np.random.default_rng([n, int(complex_), seed, 17])
    a = rng.standard_normal((n, n + 3))
    if complex_:
        a = a + 1j * rng.standard_normal((n, n + 3))
    alpha = 0.1 if seed == LSEEDS - 1 else 0.5
    L = np.linalg.cholesky(a @ a.conj().T / (n + 3) + alpha * np.eye(n))
    L = np.round(L * SCALE) / SCALE            # the diagonal stays ≥ 0.3 and real
    assert np.all(np.abs(L) * SCALE < 2048)
    return L


@functools.lru_cache(maxsize=None)
def base_cotangent(n, kind, seed):
    """L̄ / K̇ with integer entries, |k| ≤ 64 (exact in float16 and int8); kind real, complex or bool."""
    rng = np.random.default_rng([n, seed, 29])
    x = np.clip(np.round(16 * rng.standard_normal((n, n))), -64, 64)
    if kind == "complex":
        x = x + 1j * np.clip(np.round(16 * rng.standard_normal((n, n))), -64, 64)
    elif kind == "bool":
        x = (x > 0).astype(np.float64)
    return x


@functools.lru_cache(maxsize=None)
def truth(direction, n, lseed, lcomplex, xseed, xkind):
    """The long-double lower-form result for one pair of base matrices."""
    L, X = base_factor(n, lcomplex, lseed), base_cotangent(n, xkind, xseed)
    wide = np.clongdouble if lcomplex or xkind == "complex" else np.longdouble
    fn = ref.closed_rev if direction == "rev" else ref.closed_fwd
    return fn(L, X, dtype=wide)


@functools.lru_cache(maxsize=None)
def kappa(n, lcomplex, lseed):
    return condition(base_factor(n, lcomplex, lseed))


# --------------------------------------------------------------------------
# dtypes and layouts

def swapped(t):
    return np.dtype(t).newbyteorder(">" if np.dtype(t).byteorder in "=<" else "<")


L_FLOATS = [np.float16, np.float32, np.float64]
L_COMPLEX = [np.complex64, np.complex128]
L_INTS = [np.int16, np.int32, np.int64]                  # 256 · L fits from int16
X_REAL = [np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64, np.bool_]
X_COMPLEX = [np.complex64, np.complex128]


def with_byte_orders(types):
    out = []
    for t in types:
        out.append(np.dtype(t))
        if np.dtype(t).itemsize > 1:
            out.append(swapped(t))
    return out


L_DTYPES = with_byte_orders(L_FLOATS + L_COMPLEX + L_INTS)
X_DTYPES = with_byte_orders(X_REAL + X_COMPLEX)


def result_dtype(dl, dx):
    """The contract: np.result_type(L, X, float32), integers and booleans counted as float64."""
    return np.result_type(*[np.float64 if d.kind in "biu" else d for d in (dl, dx)], np.float32)


ROW_MAJOR = {"C", "ld"}                                 # unit stride along rows, as BLAS sees them
COL_MAJOR = {"F", "T", "ldF", "ldT"}
MATRIX_LAYOUTS = sorted(ROW_MAJOR | COL_MAJOR | {"step", "neg"})
STACK_LAYOUTS = MATRIX_LAYOUTS + ["batchstep"]


def recipe(layout, shape):
    """(buffer shape, buffer order, view): how ``layout`` stores a stack of ``shape`` inside a buffer."""
    *batch, n, _ = shape
    batch = tuple(batch)
    swap = lambda b: np.swapaxes(b, -1, -2)
    return {
        "C": (shape, "C", lambda b: b),
        "F": (shape, "F", lambda b: b),
        "T": (shape, "C", swap),                                   # each matrix column-major
        "ld": (batch + (n + 3, n + 5), "C", lambda b: b[..., 1:n + 1, 2:n + 2]),   # leading dim n + 5
        "ldF": (batch + (n + 3, n + 5), "F", lambda b: b[..., 1:n + 1, 2:n + 2]),  # leading dim n + 3
        "ldT": (batch + (n + 5, n + 3), "C", lambda b: swap(b[..., 2:n + 2, 1:n + 1])),
        "step": (batch + (2 * n, 2 * n), "C", lambda b: b[..., ::2, ::2]),          # no unit stride
        "neg": (shape, "C", lambda b: b[(slice(None, None, -1),) * b.ndim]),        # every axis reversed
        "batchstep": (((2 * batch[0] + 1,) + tuple(shape[1:])) if batch else None, "C",
                      lambda b: b[1::2]),                          # every other matrix of a stack
    }[layout]


def place(M, layout, fill):
    """(view, buffer): ``M`` stored in ``layout`` inside ``buffer``, the rest of which holds ``fill``."""
    shape, order, view = recipe(layout, M.shape)
    buf = np.full(shape, fill, M.dtype, order=order)
    v = view(buf)
    v[...] = M
    assert v.shape == M.shape
    return v, buf


def outside(layout, shape, buf):
    """A mask of ``buf``'s elements that ``layout``'s view of a ``shape`` stack does not cover."""
    _, order, view = recipe(layout, shape)
    mask = np.ones(buf.shape, bool, order=order)
    view(mask)[...] = False
    return mask


def fill_for(dtype):
    return 99 if dtype.kind in "biu" else np.nan


GARBAGE = ["zeros", "random", "nan", "inf", "huge"]


def with_unread(M, lower, garbage, dtype, rng):
    """``M`` with its unread triangle replaced by ``garbage`` (a value ``dtype`` can hold)."""
    n = M.shape[-1]
    i, j = np.triu_indices(n, 1) if lower else np.tril_indices(n, -1)
    out = np.array(M, dtype=np.complex128 if np.iscomplexobj(M) else np.float64)
    if dtype.kind in "biu" and garbage in ("nan", "inf", "huge"):
        garbage = "random"
    value = {"zeros": 0.0, "nan": np.nan, "inf": np.inf, "huge": 1e30}.get(garbage)
    if value is None:
        top = 1 if dtype.kind == "b" else 100
        value = rng.integers(-top if dtype.kind != "b" else 0, top + 1, out[..., i, j].shape)
    out[..., i, j] = value
    return out


def herm(a):
    return np.swapaxes(a, -1, -2).conj()


# --------------------------------------------------------------------------
# One call, every check


class Call:
    """The inputs of one drawn call, built from its description."""

    def __init__(self, d):
        self.d = d
        rng = np.random.default_rng(d["seed"])
        n, lower, lt, xt = d["n"], d["lower"], d["ldtype"], d["xdtype"]
        self.lcomplex = lt.kind == "c"
        self.xkind = "complex" if xt.kind == "c" else "bool" if xt.kind == "b" else "real"
        lb, xb = d["lbatch"], d["xbatch"]
        self.lseeds = np.arange(int(np.prod(lb))).reshape(lb) % (1 if d.get("lseed_only") else LSEEDS)
        self.xseeds = (np.arange(int(np.prod(xb))).reshape(xb) + d["xoffset"]) % XSEEDS
        Lbase = np.zeros(lb + (n, n), np.complex128 if self.lcomplex else np.float64)
        Xbase = np.zeros(xb + (n, n), np.complex128 if self.xkind == "complex" else np.float64)
        for idx in np.ndindex(lb):
            Lbase[idx] = base_factor(n, self.lcomplex, int(self.lseeds[idx]))
        for idx in np.ndindex(xb):
            Xbase[idx] = np.tril(base_cotangent(n, self.xkind, int(self.xseeds[idx])))
        self.lscale = SCALE if lt.kind in "iu" else 1.0
        Lc, Xc = Lbase * self.lscale, Xbase
        if not lower:
            Lc, Xc = herm(Lc), herm(Xc)
        Lc = with_unread(Lc, lower, d["lgarbage"], lt, rng)
        Xc = with_unread(Xc, lower, d["xgarbage"], xt, rng)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)       # inf, nan, 1e30 into float16 or ints
            Lc = Lc.astype(lt)
            Xc = Xc.astype(xt) if self.xkind != "bool" else (Xc != 0).astype(xt)
        self.L, self.Lbuf = place(Lc, d["llayout"], fill_for(lt))
        self.X, self.Xbuf = place(Xc, d["xlayout"], fill_for(xt))
        self.Lbuf0, self.Xbuf0 = self.Lbuf.copy(order="K"), self.Xbuf.copy(order="K")
        self.shape = np.broadcast_shapes(lb, xb) + (n, n)
        self.dtype = result_dtype(lt, xt)

    def expected(self, index):
        """The long-double result for the matrix at ``index`` of the broadcast stack, in the caller's convention."""
        d, n = self.d, self.d["n"]
        batch = self.shape[:-2]
        li = tuple(i if s > 1 else 0 for i, s in zip(index[len(index) - len(d["lbatch"]):], d["lbatch"]))
        xi = tuple(i if s > 1 else 0 for i, s in zip(index[len(index) - len(d["xbatch"]):], d["xbatch"]))
        assert len(index) == len(batch)
        G = truth(d["direction"], n, int(self.lseeds[li]), self.lcomplex, int(self.xseeds[xi]),
                  self.xkind) / self.lscale
        if d["direction"] == "rev" and d["symmetric"]:
            off = np.tril(G, -1) / 2
            return off + herm(off) + np.diag(np.diagonal(G))
        return G if d["lower"] else herm(G)

    def kappa(self, index):
        d = self.d
        li = tuple(i if s > 1 else 0 for i, s in zip(index[len(index) - len(d["lbatch"]):], d["lbatch"]))
        return kappa(d["n"], self.lcomplex, int(self.lseeds[li]))

    def run(self):
        d = self.d
        kw = dict(lower=d["lower"], method=d["method"], block_size=d["block_size"],
                  check_finite=d["check_finite"], threads=d["threads"])
        with warnings.catch_warnings():
            warnings.simplefilter("error")           # no ComplexWarning, no overflow, nothing
            if d["direction"] == "rev":
                return blockchol.chol_rev(self.L, self.X, symmetric=d["symmetric"],
                                          overwrite_l_bar=d["overwrite"], **kw)
            return blockchol.chol_fwd(self.L, self.X, **kw)


def relative_error(got, want):
    scale = np.linalg.norm(want.astype(np.clongdouble).ravel())
    diff = np.linalg.norm((got.astype(np.clongdouble) - want).ravel())
    if scale == 0:
        return 0.0 if diff == 0 else np.inf
    return float(diff / scale)


def order(a, layout):
    """"row" or "col" where each matrix of ``a`` is plainly row- or column-major (unit stride), else None.

    (An F-ordered stack is neither: its matrices' elements interleave.)
    """
    if layout in ROW_MAJOR:
        return "row"
    if layout in COL_MAJOR and not (layout == "F" and a.ndim > 2):
        return "col"
    return None


def check(call, out):
    d, n = call.d, call.d["n"]
    # the contract's dtype and shape
    assert out.dtype == call.dtype, (out.dtype, call.dtype)
    assert out.shape == call.shape, (out.shape, call.shape)
    # nothing modified but, with overwrite_l_bar, the view of L_bar that is returned
    overwritten = out is call.X
    assert call.Lbuf.tobytes() == call.Lbuf0.tobytes(), "L was modified"
    if overwritten:
        assert d["overwrite"] and call.X.dtype == call.dtype and call.X.shape == call.shape
        assert call.X.flags.writeable and not np.shares_memory(call.X, call.L)
        mask = outside(d["xlayout"], call.X.shape, call.Xbuf)
        assert call.Xbuf[mask].tobytes() == call.Xbuf0[mask].tobytes(), \
            "the memory around L_bar's view was modified"
    else:
        assert call.Xbuf.tobytes() == call.Xbuf0.tobytes(), "L_bar / K_dot was modified"
        assert not np.shares_memory(out, call.Xbuf) and not np.shares_memory(out, call.Lbuf)
    # overwrite_l_bar's rule, the other way: when it must be taken, it is
    if (d["direction"] == "rev" and d["overwrite"] and n >= 2 and call.X.shape == call.shape
            and call.X.dtype == call.dtype and order(call.X, d["xlayout"])
            and order(call.X, d["xlayout"]) == order(call.L, d["llayout"])):
        assert overwritten, "overwrite_l_bar=True with a compatible L_bar returned a new array"
    # a single matrix's result has L's memory order
    if out.ndim == 2 and n >= 2 and not overwritten and not d.get("dask"):
        s0, s1 = (abs(s) for s in call.L.strides)
        assert out.flags.c_contiguous if s1 <= s0 else out.flags.f_contiguous, (call.L.strides, out.strides)
    if out.size == 0:
        return
    # the other triangle: exact zeros, or exact Hermitian symmetry
    symmetric = d["direction"] == "rev" and d["symmetric"]
    if symmetric:
        assert np.array_equal(out, herm(out)), "S is not exactly Hermitian"
    else:
        i, j = np.triu_indices(n, 1) if d["lower"] else np.tril_indices(n, -1)
        assert not out[..., i, j].any(), "the unread triangle of the result is not zero"
    if d["direction"] == "rev" and out.dtype.kind == "c":
        assert not np.diagonal(out, 0, -2, -1).imag.any(), "G's diagonal is not real"
    # the values, matrix by matrix
    for index in np.ndindex(call.shape[:-2]):
        want = call.expected(index)
        err = relative_error(out[index], want)
        bar = tol(out.dtype, call.kappa(index), c=c_n(n))
        assert err <= bar, "matrix %s: relative error %.3g > %.3g" % (index, err, bar)


# --------------------------------------------------------------------------
# What is drawn

TC, TR = TINY_N["complex"], TINY_N["real"]
# (N = 0 last: hypothesis draws the first entries of a list most often.)
SINGLE_NS = sorted({1, 2, 3, 5, 8, TC, TC + 1, 16, TR, TR + 1, 33, SMALL_N, SMALL_N + 1, 100, 129}) + [0]
STACK_NS = sorted({1, 2, 3, 5, TC, TC + 1, 16, 17, TR, TR + 1, PER_MATRIX_N - 1, PER_MATRIX_N,
                   PER_MATRIX_N + 1, 33, 48, 49, SMALL_N, SMALL_N + 1, 100, 130}) + [0]
LOOP_N = STACK_MAX_N + 1
BLOCK_SIZES = [None, None, 1, 2, 3, 7, 16, 64, 1000]


def sub_batch(draw, shape):
    """A batch shape that broadcasts to (a suffix of) ``shape``: leading axes dropped, some set to 1."""
    keep = draw(st.integers(0, len(shape)))
    return tuple(s if draw(st.booleans()) else 1 for s in shape[len(shape) - keep:])


@st.composite
def calls(draw, kind):
    d = {"seed": draw(st.integers(0, 2 ** 32 - 1))}
    if kind == "single":
        d["n"] = draw(st.sampled_from(SINGLE_NS))
        d["lbatch"] = d["xbatch"] = ()
    elif kind == "loop":
        d["n"] = LOOP_N
        d["lbatch"], d["xbatch"] = draw(st.sampled_from([((1,), (1,)), ((2,), (2,)), ((), (2,)),
                                                         ((2,), ()), ((1,), (2,)), ((2,), (1,))]))
    else:
        d["n"] = draw(st.sampled_from(STACK_NS if kind == "stack" else range(2, TC + 1)))
        shape = draw(st.lists(st.integers(1, 3), min_size=1, max_size=2))
        if draw(st.sampled_from([False] * 12 + [True])):                # now and then
            shape[draw(st.integers(0, len(shape) - 1))] = 0             # an empty stack
        lb, xb = sub_batch(draw, shape), sub_batch(draw, shape)
        if not lb and not xb:
            xb = tuple(shape)
        d["lbatch"], d["xbatch"] = lb, xb
    d["direction"] = "rev" if kind == "item1" else draw(st.sampled_from(["rev", "fwd"]))
    d["method"] = draw(st.sampled_from(["auto", "closed"] if kind == "item1" else ["auto", "closed", "sweep"]))
    if kind == "loop":                  # one real base pair per direction: the truths cost seconds here
        d["ldtype"] = draw(st.sampled_from([t for t in L_DTYPES if t.kind != "c"]))
        d["xdtype"] = draw(st.sampled_from([t for t in X_DTYPES if t.kind not in "cb"]))
    elif kind == "item1":
        d["ldtype"] = draw(st.sampled_from([t for t in L_DTYPES if t.kind != "c"]))
        d["xdtype"] = draw(st.sampled_from([t for t in X_DTYPES if t.kind == "c"]))
    else:
        d["ldtype"] = draw(st.sampled_from(L_DTYPES))
        d["xdtype"] = draw(st.sampled_from(X_DTYPES))
    d["lower"] = draw(st.booleans())
    d["symmetric"] = d["direction"] == "rev" and draw(st.booleans())
    d["overwrite"] = d["direction"] == "rev" and draw(st.booleans())
    d["block_size"] = draw(st.sampled_from(BLOCK_SIZES))
    d["check_finite"] = draw(st.booleans())
    d["threads"] = draw(st.sampled_from([None, None, 1, 2]))
    stack_layouts = STACK_LAYOUTS if kind != "single" else MATRIX_LAYOUTS
    d["llayout"] = draw(st.sampled_from([x for x in stack_layouts if d["lbatch"] or x != "batchstep"]))
    d["xlayout"] = draw(st.sampled_from([x for x in stack_layouts if d["xbatch"] or x != "batchstep"]))
    d["lgarbage"] = draw(st.sampled_from(GARBAGE))
    d["xgarbage"] = draw(st.sampled_from(GARBAGE))
    d["xoffset"] = 0 if kind == "loop" else draw(st.integers(0, XSEEDS - 1))
    if kind == "loop":
        d["lseed_only"] = True
    return d


def run_and_check(d):
    call = Call(d)
    check(call, call.run())


# --------------------------------------------------------------------------
# The tests


@budget("single")
@given(calls("single"))
def test_single_matrices(d):
    """The small path (N ≤ SMALL_N, closed/auto) and the blocked one (larger N, or the sweep)."""
    run_and_check(d)


@budget("stack")
@given(calls("stack"))
def test_stacks(d):
    """Stacks of N ≤ STACK_MAX_N, broadcast: batch-last, stacked substitution, per-matrix BLAS."""
    run_and_check(d)


@budget("loop")
@given(calls("loop"))
def test_loop_stacks(d):
    """Stacks of N > STACK_MAX_N: one matrix at a time."""
    run_and_check(d)


@budget("item1")
@given(calls("item1"))
def test_item1_cell(d):
    """Issue 17 item 1's cell alone: a real factor and a complex cotangent in a stack of N ≤ 10
    (the batch-last form once took "complex" from L's dtype: wrong imaginary parts)."""
    run_and_check(d)


# --------------------------------------------------------------------------
# The dask tiles

DASK_NS = [1, 2, 5, 8, 13, 40, 0]


@st.composite
def tilings(draw, n):
    """Chunk sizes summing to ``n``: ragged, sometimes with zero-size chunks."""
    sizes = []
    left = n
    while left:
        s = draw(st.integers(1, max(1, min(left, 16))))
        sizes.append(s)
        left -= s
    for _ in range(draw(st.integers(0, 2))):
        sizes.insert(draw(st.integers(0, len(sizes))), 0)
    return tuple(sizes) or (0,)


def tiles(d):
    """The tiles blockchol.dask works on: L's chunks if square, else regular ones (no zero-size)."""
    if d["lnumpy"]:                     # a numpy L takes L̄'s chunks
        return d["xchunks"]
    rows, cols = d["lchunks"]
    return rows if rows == cols else None


@st.composite
def dask_calls(draw):
    d = {"seed": draw(st.integers(0, 2 ** 32 - 1)), "lbatch": (), "xbatch": (), "dask": True}
    n = d["n"] = draw(st.sampled_from(DASK_NS))
    d["direction"] = draw(st.sampled_from(["rev", "fwd"]))
    d["method"] = draw(st.sampled_from(["closed", "sweep"]))
    d["ldtype"], d["xdtype"] = draw(st.sampled_from(L_DTYPES)), draw(st.sampled_from(X_DTYPES))
    d["lower"] = draw(st.booleans())
    d["symmetric"] = d["direction"] == "rev" and draw(st.booleans())
    d["overwrite"], d["block_size"], d["check_finite"], d["threads"] = False, None, True, None
    d["llayout"], d["xlayout"] = draw(st.sampled_from(MATRIX_LAYOUTS)), draw(st.sampled_from(MATRIX_LAYOUTS))
    d["lgarbage"], d["xgarbage"] = draw(st.sampled_from(GARBAGE)), draw(st.sampled_from(GARBAGE))
    d["xoffset"] = draw(st.integers(0, XSEEDS - 1))
    rows = draw(tilings(n))
    d["lchunks"] = (rows, rows) if draw(st.integers(0, 3)) else (rows, draw(tilings(n)))
    d["xform"] = draw(st.sampled_from(["same tiles", "other tiles", "numpy"]))
    d["xchunks"] = draw(tilings(n))
    d["lnumpy"] = d["xform"] != "numpy" and not draw(st.integers(0, 5))    # a numpy L, a dask L̄
    d["scheduler"] = draw(st.sampled_from(["sync", "threads"]))
    return d


@budget("dask")
@given(dask_calls())
def test_dask_tiles(d):
    """blockchol.dask: ragged and zero-size tiles, rechunking, numpy arguments."""
    da = pytest.importorskip("dask.array")
    import blockchol.dask
    call = Call(d)
    L = call.L if d["lnumpy"] else da.from_array(call.L, chunks=d["lchunks"])
    if d["xform"] == "numpy":
        X = call.X
    else:
        X = da.from_array(call.X, chunks=L.chunks if d["xform"] == "same tiles" and not d["lnumpy"]
                          else (d["xchunks"], d["xchunks"]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        if d["direction"] == "rev":
            lazy = blockchol.dask.chol_rev(L, X, lower=d["lower"], symmetric=d["symmetric"],
                                           method=d["method"])
        else:
            lazy = blockchol.dask.chol_fwd(L, X, lower=d["lower"], method=d["method"])
        assert isinstance(lazy, da.Array) and lazy.dtype == call.dtype
        if d["n"] and not d["lnumpy"] and d["lchunks"][0] == d["lchunks"][1]:
            assert lazy.chunks == d["lchunks"]                       # L's square tiles, kept
        out = lazy.compute(scheduler=d["scheduler"])
    check(call, out)


# --------------------------------------------------------------------------
# The regressions of issue 17, as plain tests (the lead removes each mark with its fix)


def _stack_of_factors(count, n, rng):
    A = rng.standard_normal((count, n, n))
    return np.linalg.cholesky(A @ A.transpose(0, 2, 1) / n + np.eye(n))


@pytest.mark.parametrize("ldtype, xdtype", [(np.float64, np.complex128), (np.float16, np.complex128),
                                            (np.float32, ">c8")])
def test_item1_real_factor_complex_cotangent_in_a_tiny_stack(ldtype, xdtype):
    # The reproduction: a (2, 5, 5) stack against the per-matrix calls and the truth.
    rng = np.random.default_rng(0)
    L = _stack_of_factors(2, 5, rng).astype(ldtype)
    Lb = np.tril(rng.standard_normal((2, 5, 5)) + 1j * rng.standard_normal((2, 5, 5))).astype(xdtype)
    got = blockchol.chol_rev(L, Lb)
    for i in range(2):
        want = ref.closed_rev(L[i].astype(np.float64), Lb[i].astype(np.complex128), dtype=np.clongdouble)
        err = relative_error(got[i], want)
        assert err <= tol(got.dtype, condition(L[i]), c=c_n(5)), (i, err)


TINY_PIVOTS = [(np.float32, 1e-30), (np.float64, 1e-300),           # normal, beyond the scaling's cap
               (np.float32, 1e-40), (np.float64, 5e-310)]           # subnormal


@pytest.mark.parametrize("method, lower", [("closed", True), ("sweep", True), ("closed", False)])
@pytest.mark.parametrize("stacked", [False, True], ids=["single", "stack"])
@pytest.mark.parametrize("direction", ["rev", "fwd"])
@pytest.mark.parametrize("dtype, pivot", TINY_PIVOTS, ids=lambda v: str(getattr(v, "__name__", v)))
def test_item2_tiny_pivots_give_inf_with_a_warning_never_nan(dtype, pivot, direction, stacked, method,
                                                             lower):
    # README: "Gradient entries that exceed the dtype's range (a factor with a tiny pivot)
    # are ±inf, with a RuntimeWarning, never NaN."  N = 30, one pivot of L tiny; in a stack
    # the other matrix is benign.  Today: NaN, from the overflow scaling's cap.
    n, rng = 30, np.random.default_rng(2)
    L = _stack_of_factors(2, n, rng).astype(dtype)
    L[1, 10, 10] = pivot
    X = np.tril(rng.standard_normal((2, n, n))).astype(dtype)
    if direction == "fwd":
        X = X + X.transpose(0, 2, 1)
    fn, reference = ((blockchol.chol_rev, ref.closed_rev) if direction == "rev"
                     else (blockchol.chol_fwd, ref.closed_fwd))
    Lc, Xc = (L, X) if stacked else (L[1], X[1])
    if not lower:
        Lc, Xc = herm(Lc), herm(Xc)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn(Lc, Xc, lower=lower, method=method)
    out = out if lower else herm(out)
    got = out[1] if stacked else out
    assert not np.isnan(out).any(), "%d NaN" % np.isnan(out).sum()
    truth = reference(L[1], X[1], dtype=np.longdouble)
    beyond = np.abs(truth) > np.finfo(dtype).max
    assert beyond.any()                                     # the case does overflow
    assert np.isinf(got[beyond]).all()
    assert np.array_equal(np.sign(got[beyond]), np.sign(truth[beyond]).astype(dtype))
    assert any(issubclass(w.category, RuntimeWarning) and "overflows %s" % np.dtype(dtype).name
               in str(w.message) for w in caught), [str(w.message) for w in caught]
    assert not np.triu(out, 1).any()
    if stacked:
        assert np.isfinite(out[0]).all()                    # the benign matrix


def test_item7_dask_forward_closed_form_with_a_zero_size_tile():
    # The chunks ((0, 150), (0, 150)): chol_rev and the sweep take them, chol_fwd's
    # closed form raised a broadcasting ValueError from its tile kernel.
    da = pytest.importorskip("dask.array")
    import blockchol.dask
    n = 150
    L, K_dot = base_factor(n, False, 0), base_cotangent(n, "real", 0)
    got = blockchol.dask.chol_fwd(da.from_array(L, chunks=((0, n), (0, n))), K_dot,
                                  method="closed").compute(scheduler="sync")
    err = relative_error(got, truth("fwd", n, 0, False, 0, "real"))
    assert err <= tol(got.dtype, kappa(n, False, 0), c=c_n(n))
