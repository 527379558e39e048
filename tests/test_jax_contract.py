"""blockchol.jax keeps jax's contract: what accelerate() patches behaves as jax's own.

The three entry points accelerate() replaces -- ``jnp.linalg.cholesky``
(upper and lower, ``symmetrize_input`` both ways), ``jax.scipy.linalg.cholesky``
and ``cho_factor`` (both triangles) -- are called through their public
names inside ``accelerate()`` and compared with jax's originals, kept at
import: the factor bit for bit; tangents (jvp) and cotangents (vjp) to
rounding; the places of NaN and ±inf exactly; the exceptions by type and
message; the dtypes jax promotes to.  Float32, float64, complex64 and
complex128; stacks under ``jit``, ``vmap`` and eagerly; with every
crossover lowered to 0, so that blockchol serves every size, and at the
default crossovers, where these small matrices take jax's own rule.

The oracle of the derivatives is jax's own function of the matrix the
factorization reads: ``a`` itself for ``symmetrize_input=True``, and for
the functions that read one triangle the Hermitian matrix completed from
it.  There blockchol.jax differentiates what is computed (zero for the
unread triangle) where jax's rule differentiates as if every entry were
read (jax-ml/jax#40421); for Hermitian tangents the two agree, and that is
tested against jax's own function directly.
"""

import re

import numpy as np
import pytest

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl

import blockchol.jax as bj
from helpers import random_like, random_spd
from test_jax import H, Calls, from_lower, tolerance, x64  # noqa: F401 - x64: the module's autouse fixture

# jax's own, before any accelerate() (this module is imported outside one).
JAX_NUMPY_CHOLESKY = jnp.linalg.cholesky
JAX_SCIPY_CHOLESKY = jsl.cholesky
JAX_CHO_FACTOR = jsl.cho_factor

DTYPES = [np.float32, np.float64, np.complex64, np.complex128]
N = 4


@pytest.fixture
def calls(monkeypatch):
    return Calls(monkeypatch)


def serve(where, monkeypatch):
    """'lowered': every crossover at 0, blockchol serves every size; 'default': the table's."""
    if where == "lowered":
        for name in bj.CROSSOVER_N:
            monkeypatch.setitem(bj.CROSSOVER_N, name, 0)


def served(where, calls):
    """blockchol was called where it serves (a silent fall-back to jax's rule must not pass for
    ours), and not where jax's rule does."""
    if where == "lowered":
        assert calls.fwd and calls.rev
    else:
        assert not calls.fwd and not calls.rev


# name: (the call through jax's public name, jax's own, the matrix jax's own is given
# for the derivative oracle: the one that is factored).
ENTRIES = {
    "numpy": (lambda a: jnp.linalg.cholesky(a), JAX_NUMPY_CHOLESKY, lambda a: a),
    "numpy upper": (lambda a: jnp.linalg.cholesky(a, upper=True),
                    lambda a: JAX_NUMPY_CHOLESKY(a, upper=True), lambda a: a),
    "numpy lower-read": (lambda a: jnp.linalg.cholesky(a, symmetrize_input=False),
                         lambda a: JAX_NUMPY_CHOLESKY(a, symmetrize_input=False), from_lower),
    "numpy upper lower-read": (lambda a: jnp.linalg.cholesky(a, upper=True, symmetrize_input=False),
                               lambda a: JAX_NUMPY_CHOLESKY(a, upper=True, symmetrize_input=False),
                               from_lower),
    "scipy lower": (lambda a: jsl.cholesky(a, lower=True),
                    lambda a: JAX_SCIPY_CHOLESKY(a, lower=True), from_lower),
    "scipy upper": (lambda a: jsl.cholesky(a), JAX_SCIPY_CHOLESKY, lambda a: from_lower(H(a))),
    "cho_factor lower": (lambda a: jsl.cho_factor(a, lower=True)[0],
                         lambda a: JAX_CHO_FACTOR(a, lower=True)[0], from_lower),
    "cho_factor upper": (lambda a: jsl.cho_factor(a)[0], lambda a: JAX_CHO_FACTOR(a)[0],
                         lambda a: from_lower(H(a))),
}


def cases(dtype):
    """A stack of (input, tangent, cotangent) triples: good matrices and every kind of bad one."""
    rng = np.random.default_rng(7)
    K = [random_spd(N, rng, dtype) for _ in range(4)]
    T = [random_like((N, N), rng, dtype) for _ in range(7)]
    C = [random_like((N, N), rng, dtype) for _ in range(7)]
    bad = [k.copy() for k in K[:2]]
    bad[0] -= 10 * np.eye(N, dtype=dtype)             # 1: indefinite: potrf fails
    bad[1][2, 1] = np.nan                             # 2: NaN in both triangles
    inf_first, inf_last = K[2].copy(), K[3].copy()
    inf_first[0, 0] = np.inf                          # 3: potrf succeeds, L₀₀ = inf
    inf_last[-1, -1] = np.inf                         # 4: ... L₃₃ = inf
    nan_unread = K[1].copy()
    nan_unread[0, N - 1] = nan_unread[N - 1, 0] = np.nan   # 5: NaN in the corner entries
    T[6][3, 1] = np.nan                               # 6: a good matrix, NaN in the tangent
    C[6][2, 2] = np.nan                               # ... and in the cotangent
    unsymmetric = K[0] + 0.005 * np.triu(random_like((N, N), rng, dtype), 1)
    #                                                 0: good, not Hermitian (each reads its own)
    A = np.stack([unsymmetric, bad[0], bad[1], inf_first, inf_last, nan_unread, K[1]])
    return jnp.asarray(A), jnp.asarray(np.stack(T)), jnp.asarray(np.stack(C)), max(
        np.linalg.cond(k.astype(np.complex128)) for k in K)


def probe(f):
    """The factor, its tangent along t and the cotangent of c, at a."""
    def run(a, t, c):
        L, dL = jax.jvp(f, (a,), (t,))
        return L, dL, jax.vjp(f, a)[1](c)[0]
    return run


def assert_matches(got, want, tol, what):
    """Same dtype and shape, NaN and ±inf in the same places, finite entries close per matrix."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype and got.shape == want.shape, what
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=what + ": NaN pattern")
    infinite = np.isinf(want)
    np.testing.assert_array_equal(np.isinf(got), infinite, err_msg=what + ": inf pattern")
    np.testing.assert_array_equal(got[infinite], want[infinite], err_msg=what + ": infinities")
    np.testing.assert_array_equal(got == 0, want == 0, err_msg=what + ": exact zeros")
    for k, (g, w) in enumerate(zip(got.reshape((-1,) + got.shape[-2:]),
                                   want.reshape((-1,) + want.shape[-2:]))):
        finite = np.isfinite(w)
        if finite.any():
            scale = np.abs(w[finite]).max() or 1.0
            err = np.abs(g[finite] - w[finite]).max() / scale
            assert err <= tol, "%s, matrix %d: relative error %.3g > %.3g" % (what, k, err, tol)


def jit_vmap(probes, A, T, C):
    """Under jit and vmap: every entry in one program (one compilation, not eight)."""
    return jax.jit(lambda *args: {e: jax.vmap(f)(*args) for e, f in probes.items()})(A, T, C)


def jit_stack(probes, A, T, C):
    """Under jit, on the stack (..., N, N) itself."""
    return jax.jit(lambda *args: {e: f(*args) for e, f in probes.items()})(A, T, C)


def eager(probes, A, T, C):
    """Eagerly, one matrix at a time."""
    return {e: tuple(jnp.stack(x) for x in zip(*(f(a, t, c) for a, t, c in zip(A, T, C))))
            for e, f in probes.items()}


_ORACLES = {}


def oracle(dtype):
    """{entry: (factor, tangents, cotangents)} by jax's own (see the module docstring); cached."""
    key = np.dtype(dtype).name
    if key not in _ORACLES:
        A, T, C, _ = cases(dtype)
        probes = {e: probe(lambda a, own=own, factored=factored: own(factored(a)))
                  for e, (_, own, factored) in ENTRIES.items()}
        out = jit_vmap(probes, A, T, C)
        _ORACLES[key] = {e: (np.asarray(ENTRIES[e][1](A)),) + tuple(np.asarray(x) for x in out[e][1:])
                         for e in ENTRIES}
    return _ORACLES[key]


# blockchol serving (crossover lowered) in every dtype, under jit and vmap, and under jit on
# the stack and eagerly in one dtype each; jax's rule serving (the default crossover at
# N = 4), where only the Hermitian completion is blockchol.jax's, in two.
GRID = ([("lowered", jit_vmap, d) for d in DTYPES]
        + [("lowered", jit_stack, np.float64), ("lowered", eager, np.complex64)]
        + [("default", jit_vmap, d) for d in (np.float32, np.complex128)])


@pytest.mark.parametrize("where, mode, dtype", GRID,
                         ids=["%s-%s-%s" % (w, m.__name__, np.dtype(d).name) for w, m, d in GRID])
def test_contract(monkeypatch, calls, where, mode, dtype):
    """Every entry point under accelerate() against jax's own, on good and bad matrices."""
    serve(where, monkeypatch)
    A, T, C, cond = cases(dtype)
    with bj.accelerate():
        got = mode({e: probe(ENTRIES[e][0]) for e in ENTRIES}, A, T, C)
    tol = tolerance(N, dtype, cond)
    for entry, (L_own, dL_own, G_own) in oracle(dtype).items():
        L, dL, G = got[entry]
        np.testing.assert_array_equal(np.asarray(L), L_own, err_msg=entry + ": factor")
        assert_matches(dL, dL_own, tol, entry + ": tangent")
        assert_matches(G, G_own, tol, entry + ": cotangent")
    served(where, calls)


@pytest.mark.parametrize("entry", ["numpy", "numpy lower-read"])
def test_second_order_nan_pattern(monkeypatch, calls, entry):
    """jax.hessian (forward over reverse) of a weighted sum of the factor, per matrix of the
    stack, good and bad, against jax's own; blockchol serving."""
    serve("lowered", monkeypatch)
    A, _, C, cond = cases(np.float64)
    ours, own, factored = ENTRIES[entry]

    def hessians(chol):
        return jax.jit(jax.vmap(lambda a, w: jax.hessian(lambda a: jnp.sum(w * chol(a)))(a)))(A, C)

    with bj.accelerate():
        got = hessians(ours)
    want = hessians(lambda a: own(factored(a)))
    # second order: the error bound's κ enters squared
    assert_matches(got, want, tolerance(N, np.float64, cond, order=2), entry + ": hessian")
    served("lowered", calls)


# ---------------------------------------------------------------------------
# Inputs: what jax refuses raises as in jax; what it accepts comes out as from jax.

REFUSED = {
    "non-square": lambda: jnp.ones((3, 4)),
    "non-square stack": lambda: jnp.ones((2, 3, 4)),
    "non-square, zero rows": lambda: jnp.ones((0, 3)),
    "non-square, zero columns": lambda: np.ones((3, 0)),
    "1-D": lambda: jnp.ones(3),
    "0-D": lambda: jnp.ones(()),
    "Python float": lambda: 2.0,
    "None": lambda: None,
    "string": lambda: "abc",
    "object array": lambda: np.eye(2, dtype=object),
    "long double": lambda: np.eye(2, dtype=np.longdouble),
    "big-endian": lambda: np.eye(2).astype(">f8"),
    "float16": lambda: 4 * jnp.eye(3, dtype=jnp.float16),      # no LAPACK potrf for it
    "bfloat16": lambda: 4 * jnp.eye(3, dtype=jnp.bfloat16),
}

ACCEPTED = {
    "int64": lambda: 4 * jnp.eye(3, dtype=jnp.int64),
    "int32 numpy": lambda: 4 * np.eye(3, dtype=np.int32),
    "uint8": lambda: 4 * np.eye(3, dtype=np.uint8),
    "bool": lambda: jnp.eye(3, dtype=bool),
    "weakly typed": lambda: jnp.full((3, 3), 0.5) + 3 * jnp.eye(3),
    "numpy float64": lambda: random_spd(3, np.random.default_rng(0)),
    "numpy complex64": lambda: random_spd(3, np.random.default_rng(0), np.complex64),
}

# jax.numpy's refuses them, jax.scipy's (a jitted function: they are pytrees of scalars) takes them
SEQUENCES = {
    "nested list": lambda: [[4.0, 1.0], [1.0, 4.0]],
    "nested tuple": lambda: ((4.0, 1.0), (1.0, 4.0)),
}

EMPTY = {"(0, 0)": (0, 0), "(0, 3, 3)": (0, 3, 3), "(2, 0, 0)": (2, 0, 0)}


def outcome(f, a):
    """What f(a) gives: ('raises', type, message) or ('returns', dtype, shape, weak, values)."""
    try:
        out = f(a)
    except Exception as error:              # noqa: BLE001 - any exception jax raises counts
        message = " ".join(str(error).split())
        return ("raises", type(error), re.sub(r" at 0x[0-9a-f]+", "", message))
    return ("returns", out.dtype, out.shape, out.weak_type, np.asarray(out).tobytes())


# The checks run before the crossover is read: refused inputs once, accepted ones both ways.
INPUTS = ([("default", name) for name in REFUSED]
          + [(where, name) for where in ("lowered", "default") for name in {**ACCEPTED, **SEQUENCES}])


@pytest.mark.parametrize("where, name", INPUTS, ids=["%s-%s" % pair for pair in INPUTS])
def test_inputs_as_jax(monkeypatch, name, where):
    """Exception type and message, or dtype, shape, weak type and bytes: jax's own."""
    serve(where, monkeypatch)
    make = {**REFUSED, **ACCEPTED, **SEQUENCES}[name]
    outcomes = {}
    for entry, (ours, own, _) in ENTRIES.items():
        want = outcome(own, make())
        with bj.accelerate():
            got = outcome(ours, make())
        assert got == want, entry
        outcomes[entry] = want[0]
    if name in SEQUENCES:         # the cases are what they claim to be
        assert {e: o for e, o in outcomes.items() if o == "raises"} == {
            e: "raises" for e in ENTRIES if e.startswith("numpy")}
    else:
        assert set(outcomes.values()) == {"raises" if name in REFUSED else "returns"}


@pytest.mark.parametrize("shape", EMPTY.values(), ids=list(EMPTY))
def test_empty_as_jax(monkeypatch, shape):
    """Zero-size matrices and stacks: factor, tangent and cotangent as jax's, blockchol serving."""
    serve("lowered", monkeypatch)
    a = jnp.zeros(shape, np.complex64)
    want = jit_stack({e: probe(lambda a, own=own, factored=factored: own(factored(a)))
                      for e, (_, own, factored) in ENTRIES.items()}, a, a, a)
    with bj.accelerate():
        got = jit_stack({e: probe(ENTRIES[e][0]) for e in ENTRIES}, a, a, a)
        for entry, (ours, _, _) in ENTRIES.items():     # blockchol's rule is in the program
            program = str(jax.make_jaxpr(probe(ours))(a, a, a))   # (jax calls no host for no data)
            assert "blockchol_chol_fwd" in program and "blockchol_chol_rev" in program, entry
    for entry in ENTRIES:
        for g, w in zip(got[entry], want[entry]):
            assert (g.dtype, g.shape) == (w.dtype, w.shape), entry
