"""``python -m bench``: run the suites, print the tables, write the results."""

import contextlib
import json
import sys

from threadpoolctl import threadpool_limits

from . import peers
from .config import parse_args
from .machine import describe, load_average
from .plots import make_plots
from .report import GLOBAL, render
from .runner import Context
from .suites import SUITES

__all__ = ["main", "run"]

# Suites whose implementation lists include peers.
_PEER_SUITES = {"core", "batch", "complex", "fwd"}


def _wants_peers(config):
    if not _PEER_SUITES.intersection(config.suites):
        return []
    return [p for p in peers.PEERS if config.impls is None or p in config.impls]


def _thread_setting(config):
    """The harness's thread limit: every BLAS and OpenMP pool (GPy's loop, torch's MKL)."""
    return threadpool_limits(limits=config.threads)


def run(config, stream=None):
    """Run the configured suites; returns the :class:`~bench.runner.Context` with the records.

    The peers are imported first (so that the thread limits reach their
    pools, and no import lands inside a timing), jax after its thread flag.
    """
    ctx = Context(config, stream)
    wanted = _wants_peers(config)
    if "jax" in wanted:
        ctx.note(GLOBAL, peers.configure_jax_threads(config.threads))
    peers.set_thread_count(config.threads)
    for name in wanted:
        peers.load(name)
    for suite in config.suites:
        # The threads suite sets its own counts per call; the others run under the setting.
        limit = contextlib.nullcontext() if suite == "threads" else _thread_setting(config)
        try:
            with limit:
                SUITES[suite](ctx)
        except KeyboardInterrupt:
            # A long run stopped by hand still reports what it measured.
            ctx.note(GLOBAL, "interrupted during the %s suite: the results are partial" % suite)
            break
    return ctx


def write_results(ctx, machine, markdown):
    """results.md, results.json and the plots in the output folder; returns the paths."""
    config = ctx.config
    config.out.mkdir(parents=True, exist_ok=True)
    paths = [config.out / "results.md", config.out / "results.json"]
    settings = {k: (str(v) if k == "out" else v) for k, v in vars(config).items()
                if k != "extra_impls"}
    settings["impls"] = sorted(config.impls) if config.impls is not None else None
    with open(paths[1], "w") as f:
        json.dump({"machine": machine, "settings": settings, "notes": ctx.notes,
                   "records": [r.to_json() for r in ctx.records]}, f, indent=1, default=str)
    if config.plots:
        plots, note = make_plots(ctx.records, config.out)
        paths += plots
        if note:
            markdown += "\n" + note + "\n"
            ctx.progress(note)
    paths[0].write_text(markdown)
    return paths


def main(argv=None):
    config = parse_args(argv)
    load_before = load_average()
    ctx = run(config)
    machine = describe(load_before)
    markdown = render(ctx.records, ctx.notes, machine, config)
    paths = write_results(ctx, machine, markdown)
    sys.stdout.write(markdown)
    ctx.progress("wrote " + ", ".join(str(p) for p in paths))
    return 1 if any(r.status in ("WRONG", "ERROR") for r in ctx.records) else 0
