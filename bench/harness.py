"""The timing loop, the records and the files of one benchmark run.

These machines are shared and noisy, so a run quotes minima and ratios of
implementations timed side by side: one timing loop, every implementation
once per round, the order rotated each round, so slow drifts fall on all of
them alike.  The first call of each is never timed (imports, jit
compilation, page faults); its output is checked against an independent
reference form before any timing, and the check is part of the record.
"""

import datetime
import json
import math
import os
import platform
import statistics
import sys
import time
from importlib import metadata

from threadpoolctl import threadpool_info

__all__ = ["Bench", "machine", "with_method"]

_PACKAGES = ("blockchol", "numpy", "scipy", "threadpoolctl", "torch", "jax", "jaxlib", "GPy",
             "gpytorch", "dask", "distributed")


def machine():
    """CPU, cores, BLAS pools, versions, date and load: printed above the tables, saved in the JSON."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    versions = {}
    for p in _PACKAGES:
        try:
            versions[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            pass
    pools = ["%s %s, %s threads (%s)" % (i.get("internal_api"), i.get("version"),
                                          i.get("num_threads"), os.path.basename(i.get("filepath", "")))
             for i in threadpool_info() if i.get("user_api") == "blas"]
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "cpu": cpu, "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
            else os.cpu_count(), "python": platform.python_version(), "versions": versions,
            "blas": pools, "load": [round(x, 2) for x in os.getloadavg()]}


class Bench:
    """Records of one run; :meth:`compare` is the one timing loop."""

    def __init__(self, quick=False, stream=sys.stderr, rounds=None):
        self.quick = quick
        self.stream = stream
        self.rounds = rounds or (3 if quick else 5)
        self.records = []
        self.notes = []
        self.cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()

    def note(self, text):
        self.notes.append(text)
        print("note: " + text, file=self.stream, flush=True)

    def compare(self, suite, case, impls, check, baseline=None, budget=None, settle=0.0,
                warm=False, **extra):
        """Time ``impls`` (name → no-argument callable) side by side; returns {name: record}.

        ``check(name, output)`` returns the output's error against the
        case's independent reference and whether it passes.  Samples of
        calls faster than 5 ms are means of several calls.  ``budget``
        (seconds per implementation, default 20, 5 with ``quick``) caps the
        rounds for slow implementations; at least two are always taken.
        ``extra`` is stored in every record (sizes, flops, thread counts).
        ``settle`` seconds are slept before each sample, so that thread pools
        still spinning after one implementation (OpenBLAS's spin for ~0.1 s)
        do not slow the next one's sample.  ``warm``: each sample is preceded
        by one untimed call of the same implementation, so that it measures
        back-to-back use (a training loop) rather than a first call after a
        pause: caches, pages and its own pools warm, nobody else's spinning.
        """
        budget = budget or (5.0 if self.quick else 20.0)
        outputs, first = {}, {}
        for name, fn in impls.items():
            start = time.perf_counter()
            outputs[name] = fn()
            first[name] = time.perf_counter() - start
        checks = {name: check(name, out) for name, out in outputs.items()}
        del outputs
        estimate = {name: max(first[name], 1e-7) for name in impls}
        for name, fn in impls.items():      # a second warm-up for fast calls
            if first[name] < 0.05:
                start = time.perf_counter()
                fn()
                estimate[name] = max(time.perf_counter() - start, 1e-7)
        number = {name: max(1, math.ceil(0.005 / estimate[name])) for name in impls}
        rounds = max(2, min(self.rounds, int(budget / max(estimate.values()))))
        samples = {name: [] for name in impls}
        names = list(impls)
        for r in range(rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                fn, k = impls[name], number[name]
                if settle:
                    time.sleep(settle)
                if warm:
                    fn()
                start = time.perf_counter()
                for _ in range(k):
                    fn()
                samples[name].append((time.perf_counter() - start) / k)
        out = {}
        base = min(samples[baseline]) if baseline in samples else None
        for name in names:
            error, ok = checks[name]
            rec = {"suite": suite, "case": case, "impl": name, "min": min(samples[name]),
                   "median": statistics.median(samples[name]), "samples": len(samples[name]),
                   "baseline": baseline, "ratio": min(samples[name]) / base if base else None,
                   "error": error, "ok": ok, **extra}
            self.records.append(rec)
            out[name] = rec
        self._progress(suite, case, out)
        return out

    def record(self, suite, case, impl, **fields):
        """A record without timing (accuracy tables)."""
        rec = {"suite": suite, "case": case, "impl": impl, **fields}
        self.records.append(rec)
        return rec

    def _progress(self, suite, case, out):
        parts = ["%s %.3g ms%s" % (n, 1e3 * r["min"], "" if r["ok"] else " WRONG")
                 for n, r in out.items()]
        print("[%s] %s: %s" % (suite, case, ", ".join(parts)), file=self.stream, flush=True)

    def write(self, folder, settings):
        """results.json (everything) and results.md (the tables) in ``folder``; returns the markdown."""
        from . import report
        os.makedirs(folder, exist_ok=True)
        data = {"machine": machine(), "settings": settings, "notes": self.notes,
                "records": self.records}
        with open(os.path.join(folder, "results.json"), "w") as f:
            json.dump(data, f, indent=1, default=str)
        markdown = report.render(data)
        with open(os.path.join(folder, "results.md"), "w") as f:
            f.write(markdown)
        return markdown


def with_method(method, thunk):
    """The thunk, run while blockchol.chol_rev/chol_fwd default to ``method``.

    The framework adapters look these functions up when they call them, so
    the switch applies to this thunk's calls only (the bench is one thread).
    """
    import functools
    import blockchol

    def switched():
        saved = blockchol.chol_rev, blockchol.chol_fwd
        blockchol.chol_rev = functools.partial(saved[0], method=method)
        blockchol.chol_fwd = functools.partial(saved[1], method=method)
        try:
            return thunk()
        finally:
            blockchol.chol_rev, blockchol.chol_fwd = saved
    return switched
