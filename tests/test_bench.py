"""Tests of the benchmark harness (bench/) at tiny sizes.

They check what the harness reports -- rows, skips, verdicts, files -- and
never a timing.  Peers are kept out (the --impls filter, or a simulated
missing import) except in the one convention test that needs them.
"""

import importlib.util
import io
import json
import time
from dataclasses import replace

import numpy as np
import pytest

# bench/ is a package at the repository root, not installed with blockchol;
# pyproject.toml's pytest settings put the root on sys.path.
import blockchol
from bench import cli, config as config_module, peers, plots, suites
from bench.checks import relative_difference, tolerance, triangular_from_full, verdict
from bench.config import STANDARD, parse_args
from bench.impls import PEER, Impl, Prepared, jax_rev_impl, rev_flops, torch_rev_impl
from bench.problems import make_problem
from bench.report import render
from bench.timing import plan_repeats, time_interleaved

# Implementations that need no optional package.
OWN = frozenset({"chol_rev", "chol_rev_loop", "smith_rev", "level2_rev", "symbolic_rev",
                 "chol_fwd", "symbolic_fwd"})


def tiny(**changes):
    """A configuration that runs in milliseconds: tiny sizes, two samples, no files."""
    base = replace(STANDARD, suites=("core",), sizes=(8, 16), dtypes=("float64",),
                   threads=2, impls=OWN, repeats=2, budget=1.0, min_sample=1e-4,
                   thread_counts=(1, 2), thread_sizes=(12,), block_sizes=(4, 8),
                   memory_sizes=(12,), batch_shapes=((3, 5, 5), (2, 9, 9)),
                   complex_sizes=(6,), fwd_sizes=(7,), plots=False)
    return replace(base, **changes)


def run(config):
    """Run quietly; returns (context, markdown)."""
    ctx = cli.run(config, stream=io.StringIO())
    return ctx, render(ctx.records, ctx.notes, {"date": "-", "cpu": "-", "logical_cpus": 1,
                                                 "usable_cpus": 1, "platform": "-",
                                                 "python": "-", "versions": {},
                                                 "missing": [], "thread_pools": []}, config)


def rows(ctx, suite):
    return [(r.case, r.impl) for r in ctx.records if r.suite == suite]


@pytest.fixture
def no_peers(monkeypatch):
    """Simulate an environment where none of GPy, torch or jax can be imported."""
    real_import = peers._import

    def failing_import(name):
        if name.split(".")[0] in ("GPy", "torch", "jax"):
            raise ImportError("No module named %r" % name)
        return real_import(name)
    peers.forget()
    monkeypatch.setattr(peers, "_import", failing_import)
    yield
    peers.forget()


def test_core_table_has_a_row_per_implementation_and_size():
    ctx, markdown = run(tiny(dtypes=("float64", "float32")))
    expected = {"float64": ["chol_rev", "smith_rev", "level2_rev", "symbolic_rev", "dpotrf", "dgemm"],
                "float32": ["chol_rev", "smith_rev", "level2_rev", "symbolic_rev", "spotrf", "sgemm"]}
    for dtype, names in expected.items():
        for n in (8, 16):
            got = [r.impl for r in ctx.records if r.dtype == dtype and r.n == n]
            assert got == names
    assert all(r.status == "ok" and len(r.samples) == 2 for r in ctx.records)
    for heading in ("### float64, 2 threads", "### float32, 2 threads"):
        assert heading in markdown
    table = markdown.split("### float64")[1]
    assert "| N=8 | chol_rev |" in table and "| N=16 | chol_rev |" in table
    assert "chol_rev speed-up" in table and "% gemm peak" in table


def test_missing_peers_are_skipped_with_a_note(no_peers):
    ctx, markdown = run(tiny(impls=None, sizes=(8,)))
    assert {r.role for r in ctx.records} == {"ours", "seed", "yardstick"}
    notes = ctx.notes["core"]
    for peer in ("GPy", "torch", "jax"):
        assert any(n.startswith(peer + " skipped: not available (ImportError") for n in notes)
        assert "- %s skipped: not available" % peer in markdown


def test_a_wrong_implementation_is_flagged_not_hidden():
    def prepare(problem):
        L, L_bar = problem.L, problem.L_bar
        return Prepared(lambda: blockchol.chol_rev(L, L_bar) * 1.001)   # 0.1 % off
    broken = Impl("off_by_a_bit", PEER, prepare, rev_flops)
    ctx, markdown = run(tiny(extra_impls=(broken,), impls=OWN | {"off_by_a_bit"}))
    flagged = [r for r in ctx.records if r.impl == "off_by_a_bit"]
    assert [r.status for r in flagged] == ["WRONG", "WRONG"]
    assert all(r.samples for r in flagged)          # still timed and shown
    assert markdown.count("| off_by_a_bit |") == 2
    assert "| WRONG |" in markdown
    assert all(r.status == "ok" for r in ctx.records if r.impl != "off_by_a_bit")


def test_an_implementation_that_raises_is_an_error_row():
    def prepare(problem):
        def fail():
            raise RuntimeError("boom")
        return Prepared(fail)
    ctx, markdown = run(tiny(sizes=(8,), extra_impls=(Impl("crashes", PEER, prepare, rev_flops),),
                             impls=OWN | {"crashes"}))
    [record] = [r for r in ctx.records if r.impl == "crashes"]
    assert record.status == "ERROR" and "boom" in record.note
    assert "ERROR: RuntimeError: boom" in markdown


def sleepy_impl(seconds):
    """chol_rev made slow by a sleep: a stand-in for an implementation too slow to time."""
    def prepare(problem):
        L, L_bar = problem.L, problem.L_bar
        return Prepared(lambda: (time.sleep(seconds), blockchol.chol_rev(L, L_bar))[1])
    return Impl("sleepy", PEER, prepare, rev_flops)


def test_slow_implementations_are_cut_by_the_budget():
    # 30 ms at N=8 extrapolates by N³ to 0.24 s at N=16, over a 0.1 s budget:
    # skipped there and at every larger size, with one note.
    ctx, markdown = run(tiny(sizes=(8, 16, 32), budget=0.1, extra_impls=(sleepy_impl(0.03),),
                             impls=frozenset({"chol_rev", "sleepy"})))
    assert [r.n for r in ctx.records if r.impl == "sleepy"] == [8]
    [note] = [n for n in ctx.notes["core"] if n.startswith("sleepy")]
    assert note.startswith("sleepy skipped from N=16 float64 on")
    # A first call over the whole budget: checked and listed, but not timed.
    ctx, markdown = run(tiny(sizes=(8,), budget=0.01, extra_impls=(sleepy_impl(0.03),),
                             impls=frozenset({"chol_rev", "sleepy"})))
    [record] = [r for r in ctx.records if r.impl == "sleepy"]
    assert record.status == "ok" and not record.samples and record.note.startswith("not timed")
    assert "| sleepy | — | — |" in markdown


def test_thresholds_depend_on_precision():
    assert tolerance(np.float64) == tolerance(np.complex128) == 1e-8
    assert tolerance(np.float32) == tolerance(np.complex64) == 1e-3
    assert verdict(1e-5, np.float32) == "ok" and verdict(1e-5, np.float64) == "WRONG"
    assert relative_difference(np.array([1.0, np.nan]), np.ones(2)) == float("inf")
    assert relative_difference(np.ones(3), np.ones(2)) == float("inf")


@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
def test_symmetric_gradients_convert_to_the_triangular_convention(dtype):
    p = make_problem(6, dtype)
    G = blockchol.chol_rev(p.L, p.L_bar)
    S = blockchol.chol_rev(p.L, p.L_bar, symmetric=True)
    assert relative_difference(triangular_from_full(S), G) < 1e-14
    # Only the Hermitian part of a gradient with respect to a full K matters
    # (torch returns a non-Hermitian one for complex K).
    skew = np.triu(np.ones((6, 6)), 1) * (1 + (1j if np.dtype(dtype).kind == "c" else 0))
    assert relative_difference(triangular_from_full(S + skew - skew.conj().T), G) < 1e-14


@pytest.mark.skipif(not (importlib.util.find_spec("torch") and importlib.util.find_spec("jax")),
                    reason="needs torch and jax")
@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
def test_peer_answers_match_chol_rev_after_conversion(dtype):
    peers.forget()
    p = make_problem(6, dtype)
    G = blockchol.chol_rev(p.L, p.L_bar)
    for impl in (torch_rev_impl(), jax_rev_impl()):
        prepared = impl.prepare(p)
        assert relative_difference(prepared.answer(prepared.thunk()), G) < 1e-12, impl.name


def test_other_suites_run_at_tiny_sizes():
    names = ("blocks", "threads", "memory", "batch", "complex", "fwd")
    ctx, markdown = run(tiny(suites=names, sizes=(8, 12)))
    assert {r.suite for r in ctx.records} == set(names)
    assert all(r.status == "ok" for r in ctx.records), [
        (r.suite, r.impl, r.status, r.note) for r in ctx.records if r.status != "ok"]
    blocks = [(r.n, r.block_size) for r in ctx.records if r.suite == "blocks"]
    assert blocks == [(8, 4), (8, 8), (12, 4), (12, 8), (12, 12)]
    threads = [(r.key, r.threads) for r in ctx.records if r.suite == "threads"]
    assert threads == [("chol_rev", 1), ("chol_rev", 2), ("potrf", 1), ("potrf", 2)]
    memory = [r for r in ctx.records if r.suite == "memory"]
    assert [r.extra["result_is_l_bar"] for r in memory] == [False, True]
    assert any(impl.startswith("chol_rev, one call per matrix") for _, impl in rows(ctx, "batch"))
    assert {r.dtype for r in ctx.records if r.suite == "complex"} == {"complex128"}
    for title in ("Block-size sweep", "Thread scaling", "Peak extra memory", "Batches",
                  "Complex Hermitian", "Forward mode"):
        assert "## " + title in markdown


def test_unsupported_features_are_skipped_with_a_note(monkeypatch):
    monkeypatch.setattr(suites, "batch_support", lambda: "chol_rev does not take stacks: ValueError")
    monkeypatch.setattr(suites, "fwd_support", lambda: "blockchol has no chol_fwd yet")
    ctx, _ = run(tiny(suites=("batch", "fwd")))
    impls = {r.impl for r in ctx.records}
    assert "chol_rev (batched)" not in impls and "chol_fwd" not in impls
    assert "chol_rev, one call per matrix" in impls and "symbolic_fwd" in impls
    assert ctx.notes["batch"][0].startswith("chol_rev does not take stacks")
    assert ctx.notes["fwd"][0].startswith("blockchol has no chol_fwd yet")


def test_main_writes_markdown_json_and_plots(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    status = cli.main(["--suite", "core,threads", "--sizes", "8,16", "--dtypes", "float64",
                       "--impls", "chol_rev", "--thread-sizes", "12", "--thread-counts", "1,2",
                       "--repeats", "2", "--budget", "1", "--out", str(tmp_path)])
    assert status == 0
    out, err = capsys.readouterr()
    assert out.startswith("# blockchol benchmark") and "| N=16 | chol_rev |" in out
    assert "[core float64 N=8] chol_rev: min" in err          # one progress line per row
    assert (tmp_path / "results.md").read_text() == out
    saved = json.loads((tmp_path / "results.json").read_text())
    assert {"machine", "settings", "notes", "records"} <= set(saved)
    assert saved["machine"]["thread_pools"] and saved["machine"]["date"]
    assert all(len(r["samples"]) == 2 for r in saved["records"])
    for png in ("time_vs_n_float64.png", "thread_scaling.png"):
        assert (tmp_path / png).stat().st_size > 0


def test_plots_are_skipped_without_matplotlib(monkeypatch, tmp_path):
    def missing():
        raise ImportError("No module named 'matplotlib'")
    monkeypatch.setattr(plots, "_pyplot", missing)
    paths, note = plots.make_plots([], tmp_path)
    assert paths == [] and note.startswith("plots skipped: matplotlib")


def test_command_line_profiles_and_overrides():
    quick = parse_args(["--quick"])
    assert quick.quick and quick.sizes == config_module.QUICK.sizes
    config = parse_args(["--quick", "--sizes", "10,20", "--suite", "core,memory",
                         "--batch-shapes", "4x8x8", "--impls", "chol_rev,torch"])
    assert config.sizes == (10, 20) and config.suites == ("core", "memory")
    assert config.batch_shapes == ((4, 8, 8),) and config.impls == {"chol_rev", "torch"}
    assert config.repeats == config_module.QUICK.repeats
    assert parse_args([]).sizes == (100, 500, 1000, 2000, 4000)
    with pytest.raises(SystemExit):
        parse_args(["--suite", "nonsense"])


def test_default_thread_counts():
    assert config_module.default_thread_counts(2) == (1, 2)
    assert config_module.default_thread_counts(16) == (1, 2, 4, 8, 16)
    assert config_module.default_thread_counts(12) == (1, 2, 4, 8, 12)


def test_repeats_are_interleaved_and_planned_within_budget():
    calls = []
    thunks = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    plans = {"a": (1, 3), "b": (2, 2), "c": (1, 1)}
    timings = time_interleaved(thunks, plans)
    assert [len(timings[n].samples) for n in "abc"] == [3, 2, 1]
    assert calls == ["a", "b", "b", "c",      # round 0
                     "b", "b", "a",           # round 1, rotated by one (c is done)
                     "a"]                     # round 2
    assert plan_repeats(estimate=1e-5, min_sample=1e-3, repeats=7, budget=10) == (100, 7)
    assert plan_repeats(estimate=2.0, min_sample=1e-3, repeats=7, budget=10) == (1, 5)
    assert plan_repeats(estimate=20.0, min_sample=1e-3, repeats=7, budget=10) == (1, 3)
