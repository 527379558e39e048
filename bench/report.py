"""Markdown tables from the records of a run.

Quoted numbers are minima and ratios of minima measured side by side; the
medians are there to show how noisy each measurement was.
"""

from collections import OrderedDict

import blockchol
from blockchol import _sweep

from . import impls as I
from .machine import markdown as machine_markdown

# Notes that concern the whole run rather than one suite, listed under the settings.
GLOBAL = "settings"

__all__ = ["GLOBAL", "render", "comparison_table", "blocks_table", "threads_table", "memory_table"]

_TITLES = OrderedDict([
    ("core", "Reverse mode: chol_rev against the seed's forms, peers and yardsticks"),
    ("blocks", "Block-size sweep of chol_rev"),
    ("kernels", "Diagonal kernels of the reverse sweep"),
    ("threads", "Thread scaling"),
    ("memory", "Peak extra memory of chol_rev"),
    ("batch", "Batches (stacks of matrices)"),
    ("complex", "Complex Hermitian K = L Lᴴ"),
    ("fwd", "Forward mode"),
])

_INTROS = {
    "core": "GFLOP/s on the nominal 2N³/3 flops of the reverse sweep (N³/3 for potrf, 2N³ for "
            "gemm); × potrf = time / potrf's time; % gemm peak = GFLOP/s / gemm's GFLOP/s; "
            "chol_rev speed-up = this row's time / chol_rev's time (above 1: chol_rev is faster).",
    "blocks": "Minimum ms per call for each block_size; * marks the default_block_size(N) pick.",
    "kernels": "The blocked sweep with each diagonal kernel: the closed form (blockchol's "
               "default), Murray's level-2 column loop, and a second level of blocking (the "
               "sweep again on each diagonal block, 16 wide, level-2 inside). Speed-up "
               "relative to the first row.",
    "threads": "Speed-up = time at the fewest threads measured (1 by default) / time at this count.",
    "memory": "Peak of the memory numpy allocates during one call (tracemalloc; the result "
              "array included, BLAS-internal buffers not), against one N × N matrix.",
    "batch": "GFLOP/s on count · 2N³/3 (count · N³/3 for the factorization); speed-up relative "
             "to the first blockchol row.",
    "complex": "Real flops: 4 × the real counts (a complex multiply-add is 4 real multiplies and "
               "4 adds). Columns as in the reverse-mode table.",
    "fwd": "GFLOP/s on a nominal 2N³/3; speed-up relative to chol_fwd.",
}


# --- formatting -------------------------------------------------------------------------

def _num(x):
    """About three significant digits, whole numbers from 100 up, '—' for none."""
    if x is None:
        return "—"
    if x == 0:
        return "0"
    if abs(x) >= 100:
        return "%.0f" % x
    if abs(x) >= 1e-3:
        return "%.3g" % x
    return "%.2e" % x


def _ms(seconds):
    return _num(None if seconds is None else 1e3 * seconds)


def _diff(x):
    return "—" if x is None else ("inf" if x == float("inf") else "%.1e" % x)


def _table(header, rows, left=2):
    """A Markdown table; the first ``left`` columns are text, the others numbers."""
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if i < left else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _group(records, key):
    groups = OrderedDict()
    for record in records:
        groups.setdefault(key(record), []).append(record)
    return groups


def _check_cell(record):
    if record.status == "ERROR":
        return "ERROR: " + record.note
    cell = record.status
    if record.note:
        cell += " (" + record.note + ")"
    return cell


def _gflops(record):
    return record.flops / record.min / 1e9 if record.min else None


# --- the tables ----------------------------------------------------------------------------

def comparison_table(records, ours="chol_rev"):
    """One row per implementation and case: times, rates, ratios, the correctness check."""
    header = ["case", "implementation", "min ms", "median ms", "GFLOP/s", "× potrf",
              "% gemm peak", "%s speed-up" % ours, "max rel diff", "check"]
    rows = []
    for case, group in _group(records, lambda r: r.case).items():
        potrf = next((r.min for r in group if r.key == "potrf" and r.min), None)
        gemm = next((_gflops(r) for r in group if r.key == "gemm" and r.min), None)
        base = next((r.min for r in group if r.role == I.OURS and r.min), None)
        for r in group:
            rate = _gflops(r)
            rows.append([case, r.impl, _ms(r.min), _ms(r.median), _num(rate),
                         _num(r.min / potrf) if r.min and potrf else "—",
                         _num(100 * rate / gemm) if rate and gemm else "—",
                         _num(r.min / base) if r.min and base else "—",
                         _diff(r.rel_diff), _check_cell(r)])
            case = ""
    return _table(header, rows)


def blocks_table(records):
    """Per N: the time at each block size, the default pick, the best, their ratio."""
    sizes = sorted({r.block_size for r in records})
    header = (["N"] + ["%d" % b for b in sizes]
              + ["default pick", "best", "default / best", "check"])
    rows = []
    for n, group in _group(records, lambda r: r.n).items():
        timed = {r.block_size: r.min for r in group if r.min}
        pick = min(_sweep.default_block_size(n), n)
        cells = []
        for b in sizes:
            t = timed.get(b)
            cells.append("—" if t is None else _ms(t) + ("*" if b == pick else ""))
        best = min(timed, key=timed.get) if timed else None
        worst_check = "ok" if all(r.status == "ok" for r in group) else \
            ", ".join("%d: %s" % (r.block_size, r.status) for r in group if r.status != "ok")
        rows.append(["%d" % n] + cells + [
            "%d (%s ms)" % (pick, _ms(timed.get(pick))),
            "%d (%s ms)" % (best, _ms(timed[best])) if best else "—",
            _num(timed[pick] / timed[best]) if best and pick in timed else "—",
            worst_check])
    return _table(header, rows, left=1)


def threads_table(records):
    """Per N and implementation: time and speed-up at each thread count."""
    header = ["case", "implementation", "threads", "min ms", "median ms", "GFLOP/s",
              "speed-up", "max rel diff", "check"]
    rows = []
    for case, group in _group(records, lambda r: r.case).items():
        for key, runs in _group(group, lambda r: r.key).items():
            runs = sorted(runs, key=lambda r: r.threads)
            base = runs[0].min
            for r in runs:
                name = I.lapack_name("potrf", r.dtype) if key == "potrf" else key
                rows.append([case, name, r.threads, _ms(r.min), _ms(r.median), _num(_gflops(r)),
                             _num(base / r.min) if base and r.min else "—",
                             _diff(r.rel_diff), _check_cell(r)])
                case = ""
    return _table(header, rows)


def memory_table(records):
    header = ["case", "call", "peak extra MiB", "N²·itemsize MiB", "ratio", "result is L_bar"]
    rows = [[r.case, "`%s`" % r.impl, _num(r.extra["peak_bytes"] / 2 ** 20),
             _num(r.extra["matrix_bytes"] / 2 ** 20), _num(r.extra["ratio"]),
             "yes" if r.extra["result_is_l_bar"] else "no"] for r in records]
    return _table(header, rows)


def _suite_table(suite, records):
    if suite == "blocks":
        return blocks_table(records)
    if suite == "threads":
        return threads_table(records)
    if suite == "memory":
        return memory_table(records)
    return comparison_table(records, ours="chol_fwd" if suite == "fwd" else "chol_rev")


def _what_is_timed(records):
    """One line per implementation (the first row of each key: thread counts vary)."""
    seen = OrderedDict()
    for r in records:
        if r.timed and r.key not in seen:
            seen[r.key] = "- %s: `%s`" % (r.impl, r.timed)
    return list(seen.values())


def render(records, notes, machine, config):
    """The whole report as Markdown: machine, settings, then one section per suite."""
    out = ["# blockchol benchmark", "", machine_markdown(machine), "",
           "Settings: %d thread%s (all suites but 'threads'), up to %d samples per row "
           "(each at least %g ms), %g s budget per row, the first call never timed, "
           "implementations interleaved within each round%s. Quote minima and ratios."
           % (config.threads, "s"[config.threads == 1:], config.repeats,
              1e3 * config.min_sample, config.budget, ", --quick" if config.quick else ""), ""]
    out += ["- " + n for n in notes.get(GLOBAL, [])] + ([""] if notes.get(GLOBAL) else [])
    for suite in config.suites:
        records_here = [r for r in records if r.suite == suite]
        out += ["## " + _TITLES[suite], "", _INTROS[suite], ""]
        for dtype, group in _group(records_here, lambda r: r.dtype).items():
            threads = "" if suite == "threads" else ", %d threads" % config.threads
            out += ["### %s%s" % (dtype, threads), "", _suite_table(suite, group), ""]
        if not records_here:
            out += ["(no measurements)", ""]
        timed = _what_is_timed(records_here) if suite not in ("memory", "blocks") else []
        if timed:
            out += ["What one timed call is:", ""] + timed + [""]
        if notes.get(suite):
            out += ["Notes:", ""] + ["- " + n for n in notes[suite]] + [""]
    out.append("blockchol %s." % blockchol.__version__)
    return "\n".join(out) + "\n"
