"""Plots from a run's results.json: ``python -m bench.plots [FOLDER]`` (a separate reader of the JSON)."""

import json
import os
import sys

__all__ = ["make_plots"]


def make_plots(folder):
    """accuracy_vs_cond.png, threads.png and frameworks.png in ``folder`` from its results.json;
    returns the paths."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    with open(os.path.join(folder, "results.json")) as f:
        data = json.load(f)
    records, paths = data["records"], []
    acc = [r for r in records if r["suite"] == "accuracy-cond"]
    if acc:
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        for impl in dict.fromkeys(r["impl"] for r in acc):
            pts = sorted((r["cond"], r["error"]) for r in acc if r["impl"] == impl)
            ax.loglog(*zip(*pts), marker="o", ms=3, label=impl)
        ax.set_xlabel("cond(K): RBF covariance, N = 200, sorted 1-D inputs, jitter 1e-12 … 1e-1")
        ax.set_ylabel("relative error of ∂f/∂K (long-double truth)")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title("Accuracy against conditioning (%s)" % data["machine"]["cpu"], fontsize=9)
        paths.append(_save(plt, fig, folder, "accuracy_vs_cond.png"))
    thr = [r for r in records if r["suite"] == "threads"]
    if thr:
        fig, ax = plt.subplots(figsize=(6, 4))
        for impl in dict.fromkeys(r["impl"].split(" @")[0] for r in thr):
            pts = sorted((int(r["impl"].split("@")[1]), r["min"]) for r in thr
                         if r["impl"].split(" @")[0] == impl)
            ax.plot([t for t, _ in pts], [pts[0][1] / s for _, s in pts], marker="o", label=impl)
        ax.set_xlabel("threads")
        ax.set_ylabel("speed-up over 1 thread")
        ax.legend(fontsize=8)
        ax.set_title("Thread scaling, %s (%s)" % (thr[0]["case"], data["machine"]["cpu"]), fontsize=9)
        paths.append(_save(plt, fig, folder, "threads.png"))
    suites = ("frameworks-torch", "frameworks-torch-gpytorch", "frameworks-jax")
    fw = [r for r in records if r["suite"] in suites and r.get("n")]
    if fw:
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        for suite in suites:
            rows = [r for r in fw if r["suite"] == suite]
            for impl in dict.fromkeys(r["impl"] for r in rows if r["impl"] != r["baseline"]):
                pts = sorted((r["n"], 1 / r["ratio"]) for r in rows if r["impl"] == impl)
                ax.plot(*zip(*pts), marker="o", ms=3, label="%s: %s" % (suite.replace("frameworks-", ""), impl))
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set_xlabel("N (GP gradient, ARD RBF covariance on 3 inputs, float64)")
        ax.set_ylabel("speed-up over the framework's own rules")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
        ax.set_title("GP gradients inside torch and jax (%s)" % data["machine"]["cpu"], fontsize=9)
        paths.append(_save(plt, fig, folder, "frameworks.png"))
    return paths


def _save(plt, fig, folder, name):
    path = os.path.join(folder, name)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


if __name__ == "__main__":
    print("\n".join(make_plots(sys.argv[1] if len(sys.argv) > 1 else "bench/out")))
