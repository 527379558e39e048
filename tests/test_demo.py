"""Tests for the GP demo (blockchol/demo/): its gradient, its fit and its command line."""

import os
import socket
import subprocess
import sys
import threading

import numpy as np
import pytest

from blockchol import demo
from helpers import REPO


def bar(theta, X):
    """What two computations of one gradient may differ by, relative to its norm: rounding
    amplified by the conditioning of the covariance K, 4 (N + 1) eps κ₂(K), as in
    test_dask.py.  A wrong formula is off by O(1)."""
    return 4 * (len(X) + 1) * np.finfo(np.float64).eps * np.linalg.cond(demo.covariance(theta, X))


@pytest.fixture(scope="module")
def small():
    """A 60-point, 2-D synthetic data set and a start point away from the truth."""
    X, y, _, truth = demo.synthetic(60, 2, seed=1)
    theta = truth + np.array([0.3, -0.2, 0.4, 0.5])
    return X, y, theta


def test_gradient_matches_closed_form_and_finite_differences(small):
    X, y, theta = small
    err_closed, err_fd = demo.check_gradient(theta, X, y, threads=None)
    assert err_closed < bar(theta, X)
    # Central differences with step h = 1e-5 in log-parameters: truncation ~ h² = 1e-10
    # relative, cancellation eps |f| / h ~ 1e-11 absolute; 1e-7 leaves 100× (measured
    # 5e-10), a wrong gradient misses by O(1).
    assert err_fd < 1e-7


def test_K_bar_matches_closed_form_entrywise(small):
    # The whole matrix, not just its contractions with the P dK/dtheta_p:
    # chol_rev is one-to-one from lower triangles to symmetric matrices,
    # so this pins down the hand-derived L_bar.
    X, y, theta = small
    f, K_bar, _ = demo.log_lik_and_K_bar(theta, X, y, route="chol_rev")
    f_closed, K_bar_closed, _ = demo.log_lik_and_K_bar(theta, X, y, route="closed")
    # f: the same operations on the same factor in all three functions.
    assert f == f_closed == demo.log_lik(theta, X, y)
    np.testing.assert_array_equal(K_bar, K_bar.T)
    scale = np.abs(K_bar_closed).max()
    np.testing.assert_allclose(K_bar, K_bar_closed, rtol=0, atol=bar(theta, X) * scale)


def test_gpy_route_agrees(small):
    pytest.importorskip("GPy")
    X, y, theta = small
    f, g = demo.log_lik_and_grad(theta, X, y, route="chol_rev")
    f_gpy, g_gpy = demo.log_lik_and_grad(theta, X, y, route="gpy")
    assert f == f_gpy
    assert np.linalg.norm(g - g_gpy) < bar(theta, X) * np.linalg.norm(g)


def test_fit_recovers_true_hyperparameters():
    # N=300 points on [0, 5]^2 with lengthscales (0.8, 1.5), signal variance
    # 1 and noise variance 0.01.  Over 30 seeds the maximum-likelihood
    # estimates scattered (sd of the log) by 0.07 and 0.06 for the
    # lengthscales, 0.09 for the noise variance and 0.3 for the signal
    # variance: the domain holds only ~20 lengthscale-cells, so the signal
    # variance is seen through few effectively independent values.  The
    # tolerances below are ~3 sd (and held for all 30 seeds); the seed is
    # fixed, so the test is deterministic.
    X, y, _, truth = demo.synthetic(300, 2, seed=0)
    theta0 = np.log(np.concatenate([X.std(axis=0), [y.var(), y.var() / 10]]))
    theta, f, res = demo.fit(theta0, X, y, verbose=False)
    assert res.success
    # the optimum beats the truth (it is the maximum), but not by much
    f_true = demo.log_lik(truth, X, y)
    assert f_true <= f < f_true + 10
    ratio = np.exp(theta - truth)
    np.testing.assert_allclose(ratio[:2], 1, atol=0.25)     # lengthscales within 25%
    assert 1 / 2.5 < ratio[2] < 2.5                         # signal variance within 2.5x
    assert ratio[3] == pytest.approx(1, abs=0.35)           # noise variance within 35%


def test_fixed_noise_stays_fixed():
    X, y, _, truth = demo.synthetic(80, 1, seed=2)
    theta0 = truth + np.array([0.5, -0.5, 0.0])
    theta, _, _ = demo.fit(theta0, X, y, fix_noise=True, verbose=False)
    assert theta[-1] == theta0[-1]


def test_the_demo_modules_import_without_a_cycle():
    # Every import between the modules of blockchol/demo/, those inside functions too:
    # the in-core demo (the package) and the dask demo both import the shared model,
    # and nothing imports back.
    import ast
    import pathlib
    folder = pathlib.Path(demo.__file__).parent
    modules = {"blockchol.demo" + ("" if p.stem == "__init__" else "." + p.stem): p
               for p in folder.glob("*.py")}
    imports = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = "blockchol.demo" if node.level else node.module
                if node.level and node.module:
                    base += "." + node.module
                # "from P import M" imports the module P.M where there is one, else P
                found.update(base + "." + alias.name if base + "." + alias.name in modules
                             else base for alias in node.names)
        imports[name] = {m for m in found if m in modules and m != name}
    done, active = set(), []

    def visit(name):                # depth first: a module met again on the path is a cycle
        assert name not in active, "import cycle: " + " -> ".join(active + [name])
        if name not in done:
            active.append(name)
            for other in sorted(imports[name]):
                visit(other)
            active.pop()
            done.add(name)
    for name in sorted(modules):
        visit(name)
    assert imports["blockchol.demo._dask"] == {"blockchol.demo._model"}
    assert imports["blockchol.demo._model"] == set()


# ---------------------------------------------------------------- CLI

def write(tmp_path, content, name="data.csv"):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return str(path)


def dense_1d(tmp_path):
    """60 points on [0, 1]: with (almost) no noise the kernel matrix is numerically singular."""
    x = np.linspace(0, 1, 60)
    return write(tmp_path, "x,y\n" + "".join("%r,%r\n" % (float(a), float(np.sin(6 * a)))
                                             for a in x))


BAD_INPUTS = {
    "missing file": (lambda tmp: ["--data", str(tmp / "nope.csv")],
                     "cannot read"),
    "ragged rows": (lambda tmp: ["--data", write(tmp, "a,b,y\n1,2,3\n4,5\n6,7,8\n")],
                    "line 3: 2 fields, but the header has 3"),
    "binary file": (lambda tmp: ["--data", write(tmp, b"\x89PNG\r\n\x1a\n\x00\x81\xff")],
                    "not a readable CSV file"),
    "empty file": (lambda tmp: ["--data", write(tmp, "")], "is empty"),
    "no header": (lambda tmp: ["--data", write(tmp, "1,2\n3,4\n5,6\n")],
                  "first row looks like data"),
    "one column": (lambda tmp: ["--data", write(tmp, "y\n1\n2\n3\n")],
                   "need at least two columns"),
    "non-numeric column": (lambda tmp: ["--data", write(tmp, "x,city,y\n1,Paris,2\n2,Rome,3\n")],
                           "column 'city' is not numeric ('Paris')"),
    "one row": (lambda tmp: ["--data", write(tmp, "x,y\n1,2\n")],
                "need at least 2 data rows, found 1"),
    "NaN": (lambda tmp: ["--data", write(tmp, "x,y\n1,2\n2,nan\n3,4\n")],
            "line 3: column 'y' is nan"),
    "missing value": (lambda tmp: ["--data", write(tmp, "x,y\n1,2\n2,\n3,4\n")],
                      "column 'y' is not numeric ('')"),
    "constant input": (lambda tmp: ["--data", write(tmp, "x,z,y\n1,0,2\n2,0,3\n3,0,1\n")],
                       "input column 'z' is constant"),
    "constant target": (lambda tmp: ["--data", write(tmp, "x,y\n1,2\n2,2\n3,2\n")],
                        "target 'y' is constant"),
    "not positive definite": (lambda tmp: ["--data", dense_1d(tmp), "--noise", "1e-300"],
                              "not positive definite even with the noise"),
    # Data whose variance over- or underflows float64 (the reliability issue).
    "target near 1e300": (lambda tmp: ["--data", scaled(tmp, 1, 1e300)],
                          "the target 'y' has a standard deviation of inf"),
    "inputs near 1e300": (lambda tmp: ["--data", scaled(tmp, 1e300, 1)],
                          "input column 'x' has a standard deviation of inf"),
    "inputs near 1e-310": (lambda tmp: ["--data", scaled(tmp, 1e-310, 1)],
                           "input column 'x' has a standard deviation of 0"),
    "target near 1e-300": (lambda tmp: ["--data", scaled(tmp, 1, 1e-300)],
                           "the target 'y' has a standard deviation of 0"),
    "more points than memory": (lambda tmp: ["--n", "99999999"],
                                "--n 99999999 needs at least 560 PB of memory"),
}


def scaled(tmp_path, x_scale, y_scale):
    """30 points of a smooth function, inputs and target scaled."""
    x = np.linspace(0, 1, 30)
    return write(tmp_path, "x,y\n" + "".join("%r,%r\n" % (float(a * x_scale),
                                                          float(np.sin(6 * a) * y_scale))
                                             for a in x), name="scaled.csv")


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_exits_with_message(case, tmp_path, capsys):
    make_args, message = BAD_INPUTS[case]
    with pytest.raises(SystemExit) as exc:
        demo.main(make_args(tmp_path))
    # SystemExit(str) prints the string to stderr and exits with status 1
    assert isinstance(exc.value.code, str)
    assert exc.value.code.startswith("blockchol-demo: error: ")
    assert message in exc.value.code


def test_not_positive_definite_suggests_a_jitter_that_works(tmp_path):
    path = dense_1d(tmp_path)
    with pytest.raises(SystemExit) as exc:
        demo.main(["--data", path, "--noise", "1e-300"])
    suggested = exc.value.code.split("--noise ")[1].split()[0]
    X, y, _ = demo.load_csv(path)
    y = y - y.mean()
    theta = np.log([X.std(), y.var(), float(suggested)])
    demo.log_lik(theta, X, y)           # factorizes now


@pytest.mark.parametrize("argv", [["--n", "0"], ["--threads", "0"], ["--noise", "nan"],
                                  ["--data", "co2", "--dims", "2"], ["--n", "1"],
                                  ["--data", "co2", "--n", "1"], ["--threads", "100000"],
                                  ["--seed", "-1"], ["--seed", "x"]])
def test_bad_options_are_argparse_errors(argv, capsys):
    # argparse's usage, then one line naming the option; exit status 2.
    with pytest.raises(SystemExit) as exc:
        demo.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: blockchol-demo")
    assert err.splitlines()[-1].startswith("blockchol-demo: error: ")
    assert "Traceback" not in err


def test_the_thread_limit_is_blockchols():
    # --threads accepts what blockchol.chol_rev accepts, and nothing more.
    from blockchol import chol_rev
    from blockchol.demo import _model
    one = np.ones((1, 1))
    chol_rev(one, one, threads=_model.MAX_THREADS)
    with pytest.raises(ValueError, match="threads"):
        chol_rev(one, one, threads=_model.MAX_THREADS + 1)
    assert demo.parse_args(["--threads", str(_model.MAX_THREADS)]).threads == _model.MAX_THREADS


@pytest.mark.parametrize("K, theta", [
    (np.zeros((3, 3)), [0.0, -800.0, -800.0]),      # signal and noise variance underflow to 0
    (np.full((3, 3), 1e-300), [0.0, np.log(1e-300), -800.0]),
], ids=["zero", "tiny"])
def test_the_suggested_noise_is_accepted_and_works(K, theta):
    # The advice names a --noise the parser accepts (it said "--noise 0" for a zero
    # covariance), and that much noise makes K factorize.
    with pytest.raises(demo.DemoError, match="--noise") as exc:
        demo.cholesky(K, np.array(theta))
    suggested = str(exc.value).split("--noise ")[1].split()[0]
    noise = demo.positive_float(suggested)
    demo.cholesky(K + noise * np.eye(len(K)), np.array(theta))


def test_an_overflowed_covariance_is_reported():
    # An infinite covariance (a huge signal variance from the optimizer) is named as such;
    # LAPACK "factorized" this one into an infinite factor, on which chol_rev then raised.
    theta = np.array([0.0, 800.0, 0.0])
    with np.errstate(over="ignore"):
        K = demo.covariance(theta, np.arange(3.0)[:, None])
        with pytest.raises(demo.DemoError, match="covariance matrix overflowed"):
            demo.cholesky(K, theta)


def test_gpy_is_left_out_where_it_cannot_fit(monkeypatch):
    pytest.importorskip("GPy")
    assert demo.gpy_unavailable(1000) is None
    monkeypatch.setattr(demo, "physical_memory", lambda: 22 * 8 * 1000 ** 2)
    assert "more than this machine's memory" in demo.gpy_unavailable(1000)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_out_of_memory_is_one_line(tmp_path):
    # An N that fits the machine's memory but not this process's (an address-space
    # limit of 300 MB above what is loaded; one 8000 × 8000 matrix is 512 MB).
    script = tmp_path / "oom.py"
    script.write_text(
        "import resource\n"
        "from blockchol import demo\n"
        "import scipy.linalg, scipy.optimize, scipy.spatial\n"
        "with open('/proc/self/status') as fh:\n"
        "    vm = next(int(l.split()[1]) * 1024 for l in fh if l.startswith('VmSize:'))\n"
        "resource.setrlimit(resource.RLIMIT_AS, (vm + 300 * 2**20, resource.RLIM_INFINITY))\n"
        "demo.main(['--n', '8000', '--threads', '1'])\n")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          env=env(), timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.startswith("blockchol-demo: error: out of memory (")
    assert proc.stderr.count("\n") == 1


def env():
    """The environment of a subprocess that imports blockchol from this checkout."""
    return dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))


def test_cli_error_has_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "blockchol.demo", "--data",
                           str(tmp_path / "nope.csv")], capture_output=True, text=True,
                          env=env(), cwd=REPO, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.startswith("blockchol-demo: error: cannot read")
    assert proc.stderr.count("\n") == 1


def test_bad_scheduler_addresses_are_one_line_within_a_bounded_wait(tmp_path):
    # Malformed addresses, an unknown scheme, a closed port and a server that answers
    # but is no dask scheduler.  Each process must end well within dask's own 30 s
    # connect timeout (the demo waits 5 s): the subprocess timeout bounds the wait.
    pytest.importorskip("distributed")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def answer():                   # what an HTTP server says to a dask handshake
        conn, _ = server.accept()
        with conn:
            conn.recv(1024)
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n" + b"x" * 64)
    threading.Thread(target=answer, daemon=True).start()
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))   # bound, not listening: connections are refused
    addresses = ["nonsense", "foo://bar:99", "tcp://127.0.0.1:%d" % closed.getsockname()[1],
                 "tcp://127.0.0.1:%d" % server.getsockname()[1]]
    procs = [subprocess.Popen([sys.executable, "-m", "blockchol.demo", "--dask", address,
                               "--n", "40"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env(), cwd=REPO) for address in addresses]
    try:
        for address, proc in zip(addresses, procs):
            _, err = proc.communicate(timeout=25)
            assert proc.returncode == 1, (address, err[-2000:])
            assert err.startswith("blockchol-demo: error: cannot connect to a dask "
                                  "scheduler at %s (" % address), err[-2000:]
            assert err.count("\n") == 1, err[-2000:]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        server.close()
        closed.close()


def test_the_dask_demo_refuses_what_cannot_fit(monkeypatch):
    # The task graph (built in this process), one task's tiles, and the check against the
    # in-core demo, each against the machine's memory: here 1 GB.
    from argparse import Namespace
    from blockchol.demo import _dask, _model
    monkeypatch.setattr(_model, "physical_memory", lambda: 10 ** 9)

    def opts(tile=None, check_n=_dask.CHECK_N, method="closed"):
        return Namespace(tile=tile, check_n=check_n, method=method)
    assert _dask.settle_tiles(20000, opts()) == 1000
    with pytest.raises(demo.DemoError, match=r"task graph of N=99999999 .* use a smaller --n"):
        _dask.settle_tiles(99999999, opts())
    with pytest.raises(demo.DemoError, match=r"a task on 20000 × 20000 tiles .* --tile"):
        _dask.settle_tiles(20000, opts(tile=20000))
    with pytest.raises(demo.DemoError, match=r"the check .* on 20000 points .* --check-n"):
        _dask.settle_tiles(20000, opts(check_n=20000))
    with pytest.raises(demo.DemoError, match="does not divide"):
        _dask.settle_tiles(20000, opts(tile=3000))
    # The check takes any tiling: one tile where N has no divisor near N / 4.
    assert _dask.tiles_for_check(2000) == 500 and _dask.tiles_for_check(37) == 37


def test_co2_without_statsmodels(monkeypatch):
    monkeypatch.setitem(sys.modules, "statsmodels.datasets", None)   # import fails
    with pytest.raises(SystemExit) as exc:
        demo.main(["--data", "co2"])
    assert "needs statsmodels" in exc.value.code


# ---------------------------------------------------------------- end to end

def test_default_run_end_to_end(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    png = tmp_path / "fit.png"
    demo.main(["--n", "150", "--threads", "1", "--plot", str(png)])
    out = capsys.readouterr().out
    assert "data: synthetic GP draw (seed 0), N=150, D=3" in out
    (closed, fd), (closed_ill, fd_ill) = gradient_checks(out)
    X, y, _, _ = demo.synthetic(150, 3, 0)
    assert closed < bar(demo.start_point(X, y), X)
    # At the noise variance / 100 the run prints cond(K): the same bar from it.
    kappa = float(out.split("(cond(K) ")[1].split(")")[0])
    assert closed_ill < 4 * 151 * np.finfo(np.float64).eps * kappa
    # Finite differences as in test_gradient_matches_closed_form_and_finite_differences;
    # at the ill-conditioned point the differences of f lose ~κ more.
    assert fd < 1e-6 and fd_ill < 1e-4
    assert "  iter   1   log lik" in out
    for row in ["lengthscale x1", "lengthscale x3", "signal variance", "noise variance",
                "final log marginal likelihood", "at the true hyperparameters",
                "L_bar -> K_bar (or K^-1)", "factorization", "total"]:
        assert row in out
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"


def test_csv_run_end_to_end(tmp_path, capsys):
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 4, 40)
    rows = "".join("%r,%r,%r\n" % (float(a), float(b), float(np.sin(2 * a) + 0.1 * b))
                   for a, b in zip(x, rng.uniform(0, 1, 40)))
    path = write(tmp_path, "time,dose,response\n" + rows)
    demo.main(["--data", path, "--n", "30"])
    out = capsys.readouterr().out
    assert "N=30, D=2" in out
    assert "lengthscale time" in out and "lengthscale dose" in out
    assert "true" not in out.split("hyperparameters:")[1].split("\n")[1]


def gradient_checks(out):
    """(closed-form error, finite-difference error) of every gradient check printed."""
    found = []
    for part in out.split("gradient check at ")[1:]:
        closed = float(part.split("vs closed form")[1].split(":")[1].split()[0])
        fd = float(part.split("vs central finite differences")[1].split(":")[1].split()[0])
        found.append((closed, fd))
    return found


def test_co2_end_to_end(tmp_path, capsys):
    # The real time series: sorted 1-D inputs, the accuracy issue's family.  Its gradient is
    # checked against finite differences at the start and at the fitted point.
    pytest.importorskip("statsmodels")
    demo.main(["--data", "co2", "--n", "200"])
    out = capsys.readouterr().out
    assert "Mauna Loa CO2, monthly means, N=200, D=1" in out
    assert "lengthscale year" in out
    (closed, fd), (closed_ill, fd_ill) = gradient_checks(out)
    # central differences with step 1e-5 in log-parameters: ~h² = 1e-10 truncation
    assert fd < 1e-6
    # at the noise variance / 100, cond(K) ~ 1e7: the closed form through K⁻¹ and the
    # differences of f (cancellation eps·|f|/h ~ 1e-8 absolute) are the coarser sides
    assert fd_ill < 1e-4
    # chol_rev against the closed form: bar() at the start point (the run's data, drawn as
    # the run draws them), and from the printed cond(K) at the ill-conditioned point.
    X, y, _, _, _ = demo.load_data("co2", 200, 0)
    assert closed < bar(demo.start_point(X, y), X)
    kappa = float(out.split("(cond(K) ")[1].split(")")[0])
    assert closed_ill < 4 * 201 * np.finfo(np.float64).eps * kappa
