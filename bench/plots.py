"""PNG plots of a run (matplotlib, Agg backend); skipped with a note without matplotlib."""

from collections import OrderedDict

from . import impls as I

__all__ = ["make_plots"]


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")     # files only: no display needed, none opened
    import matplotlib.pyplot as plt
    return plt


def _series(records, key):
    """OrderedDict label → sorted [(x, y)] of the timed records, grouped by ``key``."""
    series = OrderedDict()
    for r in records:
        if r.min:
            series.setdefault(key(r), []).append(r)
    return series


def _save(plt, fig, ax, path, grid):
    """Grid, legend, layout; write the PNG and free the figure."""
    ax.grid(True, which=grid, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def time_vs_n(plt, records, dtype, path):
    """Every implementation's minimum time against N, log-log, with potrf and the flop floor."""
    rows = [r for r in records if r.suite == "core" and r.dtype == dtype and r.min]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(7, 5))
    for name, runs in _series([r for r in rows if r.role != I.YARDSTICK], lambda r: r.impl).items():
        ax.loglog([r.n for r in runs], [r.min for r in runs], "o-", label=name)
    potrf = sorted((r.n, r.min) for r in rows if r.key == "potrf")
    if potrf:
        ns, ts = zip(*potrf)
        ax.loglog(ns, ts, "k-", lw=2, label=I.lapack_name("potrf", dtype))
        # The reverse sweep needs 2N³/3 flops, twice potrf's N³/3: at potrf's
        # rate that takes twice potrf's time, the floor a sweep can hope for.
        ax.loglog(ns, [2 * t for t in ts], "k--", lw=1, label="flop floor (2 × potrf)")
    ax.set_xlabel("N")
    ax.set_ylabel("seconds per call (minimum)")
    ax.set_title("Reverse-mode Cholesky derivative, %s" % dtype)
    return _save(plt, fig, ax, path, "both")


def thread_scaling(plt, records, path):
    """Speed-up against the fewest threads measured, per implementation, N and dtype."""
    rows = [r for r in records if r.suite == "threads" and r.min]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(7, 5))
    counts = sorted({r.threads for r in rows})
    for label, runs in _series(rows, lambda r: "%s %s N=%d" % (
            I.lapack_name("potrf", r.dtype) if r.key == "potrf" else r.key, r.dtype, r.n)).items():
        runs.sort(key=lambda r: r.threads)
        ax.plot([r.threads for r in runs], [runs[0].min / r.min for r in runs], "o-", label=label)
    ax.plot(counts, [c / counts[0] for c in counts], "k:", label="ideal")
    ax.set_xticks(counts)
    ax.set_xlabel("threads")
    ax.set_ylabel("speed-up")
    ax.set_title("Thread scaling")
    return _save(plt, fig, ax, path, "major")


def block_sizes(plt, records, path):
    """chol_rev's time at each block size relative to the best, per N and dtype."""
    rows = [r for r in records if r.suite == "blocks" and r.min]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(7, 5))
    for label, runs in _series(rows, lambda r: "%s N=%d" % (r.dtype, r.n)).items():
        runs.sort(key=lambda r: r.block_size)
        best = min(r.min for r in runs)
        ax.semilogx([r.block_size for r in runs], [r.min / best for r in runs], "o-", label=label)
    ax.set_xlabel("block_size")
    ax.set_ylabel("time / best time")
    ax.set_title("chol_rev block-size sweep")
    return _save(plt, fig, ax, path, "both")


def make_plots(records, out_dir):
    """Write the plots into ``out_dir``; returns (paths written, note or None)."""
    try:
        plt = _pyplot()
    except ImportError as error:
        return [], "plots skipped: matplotlib is not available (%s)" % error
    paths = [time_vs_n(plt, records, dtype, out_dir / ("time_vs_n_%s.png" % dtype))
             for dtype in OrderedDict.fromkeys(r.dtype for r in records if r.suite == "core")]
    paths.append(thread_scaling(plt, records, out_dir / "thread_scaling.png"))
    paths.append(block_sizes(plt, records, out_dir / "block_sizes.png"))
    return [p for p in paths if p is not None], None
