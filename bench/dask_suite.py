"""blockchol.dask against the in-core chol_rev, and on a dask.distributed cluster.

The ``dask`` suite of ``python -m bench`` (its one timing loop, its records);
``python -m bench.dask_suite --model`` prints the performance model of
notes.md.  Float64, well-conditioned problems (K = A Aᵀ/N + 0.1 I, L̄ random
lower triangular), every answer checked against
:func:`blockchol.reference.closed_rev`:

* threaded scheduler: the tiled ``blockchol.dask.chol_rev`` (one worker
  thread per core, BLAS single-threaded inside the tasks) against the
  in-core ``blockchol.chol_rev`` (BLAS on every core), the same ``method`` on
  both sides, for a few tile sizes.  The tiled inputs are persisted first;
  the timed call builds the graph and computes the result into one numpy
  array, as the in-core call returns one;
* ``dask-distributed``: a LocalCluster with 1 and with 2 single-threaded
  worker processes, inputs persisted on the cluster, the timed call
  persisting the result there (nothing gathered): the speed-up from 1 to 2
  workers and the bytes the workers sent each other during the call
  (``Worker.transfer_outgoing_bytes_total``), also in units of one N×N matrix.
"""

import argparse
import math
import sys
import time
import warnings

from threadpoolctl import threadpool_limits

import blockchol

from .suites import rev_check, spd_problem

__all__ = ["run", "graph_stats", "model", "render_model", "main"]

#: N → tile sizes for the threaded scheduler; (N, tile) on the cluster.
TILES = {"full": {4000: (500, 1000, 2000), 8000: (1000, 2000)}, "quick": {2000: (500, 1000)}}
DIST = {"full": (4000, 1000), "quick": (2000, 500)}
METHODS = ("sweep", "closed")


def threads(b):
    import dask
    import dask.array as da
    import blockchol.dask as bd
    for n, tiles in TILES["quick" if b.quick else "full"].items():
        K, L, Lb = spd_problem(n)
        del K
        check = rev_check(L, Lb, 1e-8)
        for method in METHODS:
            impls = {"in-core": lambda method=method: blockchol.chol_rev(L, Lb, method=method)}
            for tile in tiles:
                Ld, Bd = dask.persist(da.from_array(L, chunks=tile), da.from_array(Lb, chunks=tile),
                                      scheduler="threads")

                def tiled(Ld=Ld, Bd=Bd, method=method):
                    with threadpool_limits(1):
                        return bd.chol_rev(Ld, Bd, method=method).compute(
                            scheduler="threads", num_workers=b.cores)
                impls["tile %d" % tile] = tiled
            b.compare("dask", "N=%d, %s, threaded scheduler" % (n, method), impls, check,
                      baseline="in-core", n=n, method=method)


def distributed(b):
    import dask.array as da
    from distributed import Client, LocalCluster, wait
    import blockchol.dask as bd
    n, tile = DIST["quick" if b.quick else "full"]
    K, L, Lb = spd_problem(n)
    check = rev_check(L, Lb, 1e-8)
    # The inputs go to the cluster inside the graph (untimed): distributed's warning is expected.
    warnings.filterwarnings("ignore", message=".*Large object.*", category=UserWarning)
    best = {}
    for workers in (1, 2):
        with LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=None,
                          memory_limit=0) as cluster, Client(cluster) as client:
            Ld, Bd = client.persist(da.from_array(L, chunks=tile)), client.persist(da.from_array(Lb, chunks=tile))
            wait([Ld, Bd])
            for method in METHODS:
                error, ok = check(method, bd.chol_rev(Ld, Bd, method=method).compute())
                samples, sent = [], []
                for _ in range(b.rounds):
                    before = sum(client.run(_sent).values())
                    start = time.perf_counter()
                    wait(client.persist(bd.chol_rev(Ld, Bd, method=method)))
                    samples.append(time.perf_counter() - start)
                    sent.append(sum(client.run(_sent).values()) - before)
                best[workers, method] = min(samples)
                b.record("dask-distributed", "N=%d, tile %d, %s" % (n, tile, method),
                         "LocalCluster, %d × 1 thread" % workers, min=min(samples),
                         median=sorted(samples)[len(samples) // 2], samples=len(samples),
                         error=error, ok=ok, workers=workers, speedup=best[1, method] / min(samples),
                         bytes_sent=int(min(sent)), matrices_sent=min(sent) / (n * n * 8))


def _sent(dask_worker):
    return dask_worker.transfer_outgoing_bytes_total


def run(b):
    """The ``dask`` suite: the threaded scheduler, then the cluster."""
    threads(b)
    distributed(b)


# --------------------------------------------------------------------------
# The performance model (notes.md, "blockchol.dask")


def graph_stats(n, tile, form="closed_rev", dtype="float64"):
    """Task count, critical path and work of one form's graph, n × n with tile × tile tiles.

    Builds the graph as :func:`blockchol.dask.chol_rev` and ``chol_fwd`` do
    (lower factor, triangular result), on placeholder inputs, and computes
    nothing.  ``form``: closed_rev, sweep_rev, closed_fwd or sweep_fwd.
    Returns a dict: ``tiles`` (T), ``tasks`` (in the graph, without the
    inputs' own), ``products`` (the accumulating tasks), ``critical_path``
    (tasks on the longest dependency chain), ``span_s`` and ``work_s`` (the
    graph's cost model: its time on unboundedly many workers, and on one).
    """
    from blockchol.dask import _forms, _graph, _tiles

    class Recording(_graph.TaskGraph):
        work = 0.0

        def cost(self, flops):
            c = super().cost(flops)
            self.work += c
            return c

    sizes = [tile] * (n // tile) + ([n % tile] if n % tile else [])
    g = Recording("stats", sizes, dtype)
    method, direction = form.split("_")
    build, kind = _forms.FORMS[method, direction]
    tiles = build(g, _graph.inputs(g, "L", "factor", True, "L"),
                  _graph.inputs(g, "X", kind, True, "X"))
    _graph.output(g, "out", tiles, True, False)
    depth, products = {}, 0
    for key, task in g.dsk.items():          # in insertion order: every task after its inputs
        if not callable(task[0]):            # an alias of another key
            depth[key] = depth[task]
            continue
        depth[key] = 1 + max((depth[a] for a in task[1:] if isinstance(a, tuple) and a in depth),
                             default=0)
        products += getattr(task[0], "func", None) is _tiles.mac
    return {"n": n, "tile": tile, "form": form, "tiles": g.T, "tasks": len(g.dsk),
            "products": products, "critical_path": max(depth.values()),
            "span_s": max(g.done.values()), "work_s": g.work}


def model(rate=40e9, bandwidth=1.25e9, overhead=1e-3, kappa=0.5, live=2.5,
          cases=((100_000, 4000), (200_000, 5000), (500_000, 8000), (1_000_000, 12500)),
          workers=(16, 64, 256, 1024), method="closed"):
    """Rows of the model for chol_rev on P workers, each running one task at a time.

    ``rate``: a worker's gemm rate on one tile (flop/s); ``bandwidth``: what
    one worker can send (bytes/s); ``overhead``: the scheduler's time per
    task (s, serial); ``kappa``: the fraction of operand tiles fetched from
    another worker (1 is the worst case); ``live``: the live data in N×N
    matrices (the measured values of both are in notes.md, "Performance
    model").  Work W = 7N³/3 (closed) or 2N³/3 (sweep) flops; tasks
    7T³/6 + 4T² (closed) or T³/3 + 2.5T² (sweep); critical path S ≈ 4T + 2
    (closed) or 5T (sweep) tasks of 2b³ flops (as :func:`graph_stats` counts
    them on the built graphs); a product moves at most two tiles, so a
    worker sends κ·8/b bytes per flop it does.  Time on P workers,
    optimistic: T_P = max(W/(P R), S·2b³/R, tasks·overhead) + κ·bytes/(P·B)
    (communication not overlapped); pessimistic (Brent's bound): the sum of
    the four terms.  Efficiency E = W/(P R T_P).
    """
    rows = []
    for n, b in cases:
        T = math.ceil(n / b)
        if method == "closed":
            products, flops, span_tasks = 7 * T ** 3 / 6, 7 * n ** 3 / 3, 4 * T + 2
            tasks = products + 4 * T * T
        else:
            products, flops, span_tasks = T ** 3 / 3, 2 * n ** 3 / 3, 5 * T
            tasks = products + 2.5 * T * T
        task_s = 2 * b ** 3 / rate
        span = span_tasks * task_s
        moved = kappa * products * 2 * b * b * 8              # bytes, all workers together
        for p in workers:
            compute = flops / (p * rate)
            scheduler = tasks * overhead
            comm = moved / (p * bandwidth)
            t_p = max(compute, span, scheduler) + comm          # optimistic: overlap
            t_brent = compute + span + scheduler + comm         # pessimistic: Brent's bound
            rows.append({"time_pessimistic_s": t_brent, "efficiency_pessimistic": compute / t_brent,
                         "n": n, "tile": b, "T": T, "tasks": tasks, "flops": flops,
                         "task_s": task_s, "critical_path_tasks": span_tasks, "span_s": span,
                         "workers": p, "compute_s": compute, "scheduler_s": scheduler,
                         "comm_s": comm, "time_s": t_p, "efficiency": compute / t_p,
                         "bytes_per_worker": moved / p,
                         "bytes_per_worker_per_step": moved / p / T,
                         "memory_per_worker": live * n * n * 8 / p + 4 * b * b * 8,
                         "bytes_per_flop": kappa * 8 / b})
    return rows


def render_model(rows, **params):
    heading = ", ".join("%s=%s" % kv for kv in params.items())
    lines = ["### Performance model, chol_rev (%s)" % heading,
             "", "| N | tile | T | tasks | TFLOP | task s | critical path | P | memory/worker GB "
             "| sent/worker/step GB | T_P hours | efficiency |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    rows = sorted(rows, key=lambda r: (r["n"], r["workers"]))
    for r in rows:
        lines.append("| %d | %d | %d | %.3g | %.3g | %.2f | %d tasks, %.0f s | %d | %.1f | %.2f "
                     "| %.2f-%.2f | %.2f-%.2f |" % (
                         r["n"], r["tile"], r["T"], r["tasks"], r["flops"] / 1e12, r["task_s"],
                         r["critical_path_tasks"], r["span_s"], r["workers"],
                         r["memory_per_worker"] / 1e9, r["bytes_per_worker_per_step"] / 1e9,
                         r["time_s"] / 3600, r["time_pessimistic_s"] / 3600,
                         r["efficiency_pessimistic"], r["efficiency"]))
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.dask_suite",
                                     description="the performance model of notes.md")
    parser.add_argument("--model", action="store_true", help="print the performance model")
    parser.parse_args(argv)
    for params in ({"rate": 40e9, "bandwidth": 1.25e9, "kappa": 0.5},
                   {"rate": 1.0e12, "bandwidth": 12.5e9, "kappa": 0.5}):
        sys.stdout.write(render_model(model(**params), **params) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
