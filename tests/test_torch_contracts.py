"""torch's own contracts for blockchol.torch: torch's OpInfo samples, return types, exceptions.

torch describes each operator once for its own test suite (an ``OpInfo`` in
``torch.testing._internal.common_methods_invocations.op_db``): the sample
inputs (single matrices, stacks, empty matrices and empty stacks, upper and
lower), whether it has forward-mode derivatives, and how to make a sample's
perturbations valid (the Hermitian or triangular input wrappers).  Here each
sample of ``linalg.cholesky``, ``linalg.cholesky_ex`` and ``cholesky_solve``
goes through blockchol.torch with every crossover lowered to 0, so that
blockchol serves every size, and through torch's own operator: the values
(bit for bit: they are torch's computation), the return types (named tuples
included), the gradients (backward, and forward mode where torch has it) and
the exceptions (type and message) must agree.

Tolerances for the gradients: two correct implementations of a derivative
rule of a factorization differ by rounding amplified by the conditioning,
about N · eps · κ relative to the largest entry, with κ the condition number
of the factored matrix; the bar is 20 times that (a wrong rule is off by
O(1)).
"""

import functools

import pytest
import torch

import blockchol.torch as bt

TORCH = {"linalg.cholesky": torch.linalg.cholesky, "linalg.cholesky_ex": torch.linalg.cholesky_ex,
         "cholesky_solve": torch.cholesky_solve}
OURS = {"linalg.cholesky": bt.cholesky, "linalg.cholesky_ex": bt.cholesky_ex,
        "cholesky_solve": bt.cholesky_solve}
DTYPES = [torch.float32, torch.float64, torch.complex64, torch.complex128]


@pytest.fixture
def lowered(monkeypatch):
    """Every crossover at 0: blockchol serves every size, empty matrices included."""
    monkeypatch.setattr(bt, "CROSSOVER_N", dict.fromkeys(bt.CROSSOVER_N, 0))
    monkeypatch.setattr(bt, "SOLVE_CROSSOVER_N", 0)


@functools.lru_cache(maxsize=None)
def _opinfos():
    # torch's test helpers need expecttest (the project's test extra installs it)
    pytest.importorskip("expecttest")
    from torch.testing._internal.common_methods_invocations import op_db
    return {op.name: op for op in op_db if op.name in TORCH and not op.variant_test_name}


def _tensors(x):
    """The tensors of an output (a tensor, or a tuple such as linalg_cholesky_ex)."""
    return [x] if isinstance(x, torch.Tensor) else [t for t in x if isinstance(t, torch.Tensor)]


def _differentiable(x):
    return [t for t in _tensors(x) if t.dtype.is_floating_point or t.dtype.is_complex]


def _condition(name, sample):
    """κ of the matrix that is factored (or whose factor is given), in float64."""
    if name == "cholesky_solve":
        L = sample.args[0].detach()
        A = L @ L.mH
    else:
        A = sample.input.detach()
        A = A + A.mH                            # the Hermitian wrapper's matrix
    if A.numel() == 0:
        return 1.0
    A = A.to(torch.complex128 if A.is_complex() else torch.float64)
    return torch.linalg.cond(A).max().item()


def _assert_close(ours, theirs, n, dtype, kappa):
    eps = torch.finfo(dtype).eps
    bar = 20 * max(n, 1) * eps * kappa
    for a, b in zip(ours, theirs):
        assert (a is None) == (b is None)
        if a is None or b.numel() == 0:
            assert a is None or a.shape == b.shape
            continue
        assert a.shape == b.shape and a.dtype == b.dtype
        err = ((a - b).abs().max() / b.abs().max().clamp_min(torch.finfo(dtype).tiny)).item()
        assert err <= bar, (err, bar)


def _samples(name, dtype, requires_grad):
    return list(_opinfos()[name].sample_inputs("cpu", dtype, requires_grad=requires_grad))


def _call(fn, sample):
    return fn(sample.input, *sample.args, **sample.kwargs)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(TORCH))
def test_opinfo_samples_values_and_types(lowered, name, dtype):
    for sample in _samples(name, dtype, requires_grad=False):
        ours, theirs = _call(OURS[name], sample), _call(TORCH[name], sample)
        assert type(ours) is type(theirs), (name, sample)
        for a, b in zip(_tensors(ours), _tensors(theirs)):
            torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(TORCH))
def test_opinfo_samples_gradients(lowered, name, dtype):
    op = _opinfos()[name]
    g = torch.Generator().manual_seed(0)
    for sample in _samples(name, dtype, requires_grad=True):
        inputs = [t for t in [sample.input, *sample.args] if isinstance(t, torch.Tensor)]
        n = sample.input.shape[-1]
        kappa = _condition(name, sample)

        def run(fn):
            out = op.gradcheck_wrapper(fn, sample.input, *sample.args, **sample.kwargs)
            return out, _differentiable(out)

        ours, outs = run(OURS[name])
        theirs, touts = run(TORCH[name])
        assert type(ours) is type(theirs)
        cotangents = [torch.randn(t.shape, dtype=t.dtype, generator=g) for t in touts]
        grads = torch.autograd.grad(outs, inputs, cotangents, allow_unused=True)
        tgrads = torch.autograd.grad(touts, inputs, cotangents, allow_unused=True)
        _assert_close(grads, tgrads, n, dtype, kappa)

        if op.supports_forward_ad:
            tangents = tuple(torch.randn(t.shape, dtype=t.dtype, generator=g) for t in inputs)
            primals = tuple(t.detach() for t in inputs)

            def jvp(fn):
                def f(*xs):                      # the sample with xs in its tensors' places
                    it = iter(xs)
                    first = next(it)
                    args = tuple(next(it) if isinstance(a, torch.Tensor) else a
                                 for a in sample.args)
                    return tuple(_differentiable(
                        op.gradcheck_wrapper(fn, first, *args, **sample.kwargs)))
                return torch.func.jvp(f, primals, tangents)[1]

            _assert_close(jvp(OURS[name]), jvp(TORCH[name]), n, dtype, kappa)


# --- return types on every path ---------------------------------------------------------------

def _spd(n, dtype=torch.float64, batch=()):
    X = torch.randn(*batch, n, n, dtype=dtype, generator=torch.Generator().manual_seed(0))
    return X @ X.mH / n + torch.eye(n, dtype=dtype)


def test_cholesky_ex_returns_torchs_named_tuple_on_every_path(lowered):
    """torch.return_types.linalg_cholesky_ex (with .L and .info) from our autograd path too."""
    import torch.autograd.forward_ad as fwAD
    A = _spd(6, batch=(2,))
    kind = torch.return_types.linalg_cholesky_ex
    results = {"no grad": bt.cholesky_ex(A), "grad": bt.cholesky_ex(A.clone().requires_grad_()),
               "upper": bt.cholesky_ex(A.clone().requires_grad_(), upper=True),
               "check_errors": bt.cholesky_ex(A.clone().requires_grad_(), check_errors=True),
               "vmap": torch.func.vmap(bt.cholesky_ex)(A.clone().requires_grad_())}
    with fwAD.dual_level():
        results["forward AD"] = bt.cholesky_ex(fwAD.make_dual(A, _spd(6, batch=(2,))))
    expect = torch.linalg.cholesky_ex(A).L
    for path, r in results.items():
        assert type(r) is kind, path
        L = fwAD.unpack_dual(r.L).primal if path == "forward AD" else r.L
        want = torch.linalg.cholesky_ex(A, upper=True).L if path == "upper" else expect
        torch.testing.assert_close(L.detach(), want, rtol=0, atol=0)
        assert r.info.dtype == torch.int32 and not r.info.any()
    r = results["grad"]
    assert r.L.grad_fn is not None and not r.info.requires_grad


def test_multivariate_normal_with_validation_under_accelerate():
    """torch.distributions validates covariance_matrix with cholesky_ex(value).info: at and above
    the crossover (float64), under accelerate(), values and gradients are torch's."""
    n = bt.CROSSOVER_N["float64"]
    K = _spd(n)
    loc = torch.zeros(n, dtype=torch.float64)
    x = torch.randn(3, n, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

    def log_prob():
        Kr = K.clone().requires_grad_()
        d = torch.distributions.MultivariateNormal(loc, covariance_matrix=Kr, validate_args=True)
        lp = d.log_prob(x).sum()
        return lp.detach(), torch.autograd.grad(lp, Kr)[0]

    plain = log_prob()
    with bt.accelerate():
        fast = log_prob()
        with pytest.raises(ValueError, match="covariance_matrix"):      # validation still works
            bad = K.clone()
            bad[5, 5] = -1.0
            torch.distributions.MultivariateNormal(loc, covariance_matrix=bad, validate_args=True)
    eps, kappa = torch.finfo(torch.float64).eps, torch.linalg.cond(K).item()
    _assert_close(fast, plain, n, torch.float64, kappa)
    assert eps * kappa < 1e-10                      # a meaningful bar


# --- exceptions --------------------------------------------------------------------------------

def _bad_calls():
    A, B = _spd(4), torch.randn(4, 2, dtype=torch.float64)
    notpd = A.clone()
    notpd[2, 2] = -1.0
    L = torch.linalg.cholesky(A)
    return [
        ("linalg.cholesky", (torch.ones(3, 4, dtype=torch.float64),), {}),
        ("linalg.cholesky", (torch.ones(4, dtype=torch.float64),), {}),
        ("linalg.cholesky", (torch.tensor(2.0, dtype=torch.float64),), {}),
        ("linalg.cholesky", (notpd,), {}),
        ("linalg.cholesky", (notpd.requires_grad_(),), {"upper": True}),
        ("linalg.cholesky", (A.to(torch.int64),), {}),
        ("linalg.cholesky", (A.half(),), {}),
        ("linalg.cholesky", (A, True), {}),
        ("linalg.cholesky", (A,), {"upper": "yes"}),
        ("linalg.cholesky", (A,), {"lower": True}),
        ("linalg.cholesky", (A,), {"out": torch.empty(4, 4, dtype=torch.int64)}),
        ("linalg.cholesky", (A.clone().requires_grad_(),), {"out": torch.empty(4, 4, dtype=torch.float64)}),
        ("linalg.cholesky", (), {}),
        ("linalg.cholesky_ex", (notpd.detach(),), {"check_errors": True}),
        ("linalg.cholesky_ex", (torch.ones(3, 4, dtype=torch.float64),), {}),
        ("linalg.cholesky_ex", (A,), {"check_errors": "no"}),
        ("linalg.cholesky_ex", (A,), {"out": torch.empty(4, 4, dtype=torch.float64)}),
        ("cholesky_solve", (torch.randn(5, 2, dtype=torch.float64), L), {}),
        ("cholesky_solve", (B.float(), L), {}),
        ("cholesky_solve", (B, torch.ones(3, 4, dtype=torch.float64)), {}),
        ("cholesky_solve", (torch.randn(4, dtype=torch.float64), L), {}),
        ("cholesky_solve", (B, L), {"upper": "no"}),
        ("cholesky_solve", (B,), {}),
    ]


@pytest.mark.parametrize("index", range(len(_bad_calls())))
def test_errors_are_torchs(lowered, index):
    name, args, kwargs = _bad_calls()[index]
    with pytest.raises(Exception) as theirs:
        TORCH[name](*args, **kwargs)
    with pytest.raises(Exception) as ours:
        OURS[name](*args, **kwargs)
    assert type(ours.value) is type(theirs.value)
    assert str(ours.value) == str(theirs.value)


def test_keywords_as_torch_names_them(lowered):
    """accelerate() installs these as torch's functions: torch's keyword names must work."""
    A = _spd(5)
    B = torch.randn(5, 2, dtype=torch.float64)
    L = torch.linalg.cholesky(A)
    assert torch.equal(bt.cholesky(input=A), L)
    assert torch.equal(bt.cholesky_ex(input=A).L, L)
    assert torch.equal(bt.cholesky_solve(input=B, input2=L), torch.cholesky_solve(B, L))
