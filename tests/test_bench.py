"""The benchmark harness (bench/): what it records and reports, never a timing."""

import io
import json
import os
import re

import numpy as np
import pytest

import blockchol
from bench import harness, report, suites
from bench.__main__ import main
from helpers import REPO, c_n, condition, tol


def check_bar(L):
    """The bar on ``rev_check``'s error for a correct float64 result at the factor L.

    rev_check measures max|Δ| / max|G|, at most N times the normwise relative error,
    which two float64 computations keep within 2 c_n(N) eps κ₂(L)² (helpers.tol).
    """
    n = L.shape[-1]
    return n * tol(np.float64, condition(L), 2 * c_n(n))


def quiet():
    return harness.Bench(quick=True, stream=io.StringIO(), rounds=2)


def test_compare_interleaves_checks_and_records():
    b = quiet()
    K, L, Lb = suites.spd_problem(12)
    check = suites.rev_check(L, Lb, 1e-9)
    calls = []

    def counted(name, fn):
        def run():
            calls.append(name)
            return fn()
        return run

    out = b.compare("s", "N=12", {"good": counted("good", lambda: blockchol.chol_rev(L, Lb)),
                                  "wrong": counted("wrong", lambda: blockchol.chol_rev(L, 2 * Lb))},
                    check, baseline="good", n=12)
    assert out["good"]["ok"] and out["good"]["error"] <= check_bar(L)
    assert out["wrong"]["ok"] is False and out["wrong"]["error"] > 0.5
    assert out["good"]["ratio"] == 1.0 and out["wrong"]["ratio"] > 0
    assert out["good"]["n"] == 12 and out["good"]["samples"] >= 2
    # interleaved: after the warm-ups (two each), samples alternate, the order rotated per round
    runs = [name for i, name in enumerate(calls[4:]) if i == 0 or calls[4 + i - 1] != name]
    assert runs == ["good", "wrong", "good"]


@pytest.mark.parametrize("peer", ["torch", "jax"])
def test_peer_outputs_are_checked_in_their_own_convention(peer):
    pytest.importorskip(peer)
    K, L, Lb = suites.spd_problem(15)
    check = suites.rev_check(L, Lb, 1e-9)
    S = suites.PEER_REV[peer](K, Lb)()
    assert isinstance(S, np.ndarray) and S.shape == (15, 15) and S.dtype == np.float64
    err, ok = check(peer, S)
    assert ok and err <= check_bar(L), err
    # The conversion is what makes it pass: read as blockchol's triangular G, the peer's
    # gradient over all N² entries is off by O(1) below the diagonal ...
    err, ok = check("chol_rev", S)
    assert not ok and err > 0.1, err
    # ... and a peer's wrong answer fails in the peer's own convention.
    bad = S.copy()
    bad[7, 2] += 0.01 * np.abs(S).max()
    assert not check(peer, bad)[1]


def test_stack_references_are_per_matrix():
    K, L, Lb = suites.spd_problem(6, (4,))
    check = suites.rev_check(L, Lb, 1e-9)
    good = blockchol.chol_rev(L, Lb)
    assert check("chol_rev", good)[1]
    bad = good.copy()
    bad[3] *= 1.01
    assert not check("chol_rev", bad)[1]


def test_targets_are_computed_from_records():
    recs = [{"suite": "targets", "case": "N=4000", "impl": "chol_rev sweep", "min": 1.5,
             "flops_sweep": 2.0, "flops_gemm": 6.0},
            {"suite": "targets", "case": "N=4000", "impl": "dpotrf", "min": 1.0},
            {"suite": "targets", "case": "N=4000", "impl": "dgemm", "min": 2.0, "flops_gemm": 6.0},
            {"suite": "threads", "case": "N=4000", "impl": "chol_rev sweep @1", "min": 2.0},
            {"suite": "threads", "case": "N=4000", "impl": "chol_rev sweep @2", "min": 1.0}]
    got = {label: (value, met) for label, value, _, _, met in report.target_values(recs)}
    assert got["N=4000: sweep / dpotrf"] == (1.5, True)
    assert got["N=4000: sweep's rate / dgemm's rate"][0] == pytest.approx((2 / 1.5) / (6 / 2.0))
    assert got["1 → 2 threads: sweep speed-up (N=4000)"] == (2.0, True)
    assert got["N=10: chol_rev / scipy.linalg.cholesky"] == (None, None)


def test_a_small_run_writes_json_markdown_and_plots(tmp_path, monkeypatch, capsys):
    pytest.importorskip("matplotlib")
    monkeypatch.setattr(suites, "SIZES", {"quick": (10, 40), "full": (10, 40)})
    monkeypatch.setattr(suites, "STACKS", {"quick": ((5, 6, 6),), "full": ((5, 6, 6),)})
    monkeypatch.setattr(suites, "THREAD_N", {"quick": 30, "full": 30})
    monkeypatch.setattr(suites, "ACCURACY", (("rbf", 30, 1e-8),))
    monkeypatch.setattr(suites, "JITTERS", (1e-8, 1e-4))
    monkeypatch.setattr(suites, "PEER_REV", {})
    monkeypatch.setattr(suites, "SETTLE", 0.0)        # no pauses between samples: not timed here
    code = main(["--quick", "--suite", "targets,accuracy", "--out", str(tmp_path)])
    assert code == 0
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["machine"]["cpu"] and data["records"]
    assert all(r["ok"] for r in data["records"] if "ok" in r)
    suites_seen = {r["suite"] for r in data["records"]}
    assert {"targets", "threads", "accuracy", "accuracy-cond"} <= suites_seen
    md = (tmp_path / "results.md").read_text()
    assert "## Targets" in md and "N=10: chol_rev / scipy.linalg.cholesky" in md
    assert (tmp_path / "accuracy_vs_cond.png").exists() and (tmp_path / "threads.png").exists()
    acc = {r["impl"]: r["error"] for r in data["records"] if r["suite"] == "accuracy"}
    assert acc["chol_rev (closed)"] < acc["level-2 sweep"]


def test_unknown_suite_is_an_error():
    with pytest.raises(SystemExit):
        main(["--suite", "nope"])


def test_the_registry_is_the_only_list_of_suites(tmp_path, monkeypatch):
    # The command line runs what the registry holds, in its order, and nothing else; a
    # subset runs in the order asked.  (Each suite stubbed: their timings are not the point.)
    ran = []
    for name in list(suites.SUITES):
        monkeypatch.setitem(suites.SUITES, name, lambda b, name=name: ran.append(name))
    assert main(["--quick", "--out", str(tmp_path)]) == 0
    assert ran == list(suites.SUITES) and len(ran) >= 2
    ran.clear()
    subset = list(suites.SUITES)[::-2]
    assert main(["--quick", "--suite", ",".join(subset), "--out", str(tmp_path)]) == 0
    assert ran == subset
    # and the README's list of suites is the registry
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        paragraph = f.read().split("\nSuites: ", 1)[1].split("\n\n", 1)[0]
    assert set(re.findall(r"`([a-z-]+)`", paragraph)) == set(suites.SUITES)
