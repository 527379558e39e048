"""The benchmark harness (bench/): what it records and reports, never a timing."""

import io
import json

import numpy as np
import pytest

import blockchol
from bench import harness, report, suites
from bench.__main__ import main


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
    assert out["good"]["ok"] and out["good"]["error"] < 1e-12
    assert out["wrong"]["ok"] is False and out["wrong"]["error"] > 0.5
    assert out["good"]["ratio"] == 1.0 and out["wrong"]["ratio"] > 0
    assert out["good"]["n"] == 12 and out["good"]["samples"] >= 2
    # interleaved: after the warm-ups (two each), samples alternate, the order rotated per round
    runs = [name for i, name in enumerate(calls[4:]) if i == 0 or calls[4 + i - 1] != name]
    assert runs == ["good", "wrong", "good"]


def test_peer_outputs_are_checked_in_their_own_convention():
    torch = pytest.importorskip("torch")
    K, L, Lb = suites.spd_problem(15)
    check = suites.rev_check(L, Lb, 1e-9)
    err, ok = check("torch", suites.torch_rev(K, Lb)())
    assert ok, err
    err, ok = check("jax", suites.jax_rev(K, Lb)())
    assert ok, err
    assert torch is not None


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


def test_the_registry_is_the_only_list_of_suites():
    assert list(suites.SUITES) == ["targets", "blocks", "accuracy", "anatomy", "frameworks-torch",
                                   "frameworks-jax", "dask"]
    assert all(callable(s) for s in suites.SUITES.values())
    assert np.isfinite(suites.JITTERS).all()
