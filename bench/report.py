"""Markdown from a run's JSON: the targets, the timing tables, the anchor, the accuracy table.

Quoted figures are minima and ratios of minima measured side by side; the
medians show how noisy each measurement was.
"""

__all__ = ["TARGETS", "render", "target_values"]


def _ratio(case, num, den, suite="targets"):
    return ("ratio", suite, case, num, den)


#: The targets of issues 8 and 11 (issue 9's below), as plain data: (label, how to compute it, bar, sense).
#: "ratio": min time of ``num`` / min time of ``den`` in one case.
TARGETS = [
    ("N=10: chol_rev / scipy.linalg.cholesky", _ratio("N=10", "chol_rev", "scipy.linalg.cholesky"), 3.0, "<="),
    ("N=100: chol_rev / torch backward", _ratio("N=100", "chol_rev", "torch"), 0.6, "<="),
    ("N=1000: sweep / dpotrf", _ratio("N=1000", "chol_rev sweep", "dpotrf"), 2.0, "<="),
    ("N=4000: sweep / dpotrf", _ratio("N=4000", "chol_rev sweep", "dpotrf"), 1.6, "<="),
    ("N=4000: sweep's rate / dgemm's rate", ("rate", "targets", "N=4000"), 0.65, ">="),
    ("N=4000: torch backward / chol_rev (closed)", _ratio("N=4000", "torch", "chol_rev"), 2.0, ">="),
    ("N=4000: jax vjp / chol_rev (closed)", _ratio("N=4000", "jax", "chol_rev"), 2.0, ">="),
    ("stack (1000, 32, 32): chol_rev / torch", _ratio("stack (1000, 32, 32) float64", "chol_rev", "torch"), 0.6, "<="),
    ("stack (10000, 8, 8): chol_rev / torch", _ratio("stack (10000, 8, 8) float64", "chol_rev", "torch"), 0.6, "<="),
    ("stack (100, 128, 128): chol_rev / torch", _ratio("stack (100, 128, 128) float64", "chol_rev", "torch"), 0.6, "<="),
    ("float32 stack (1000, 32, 32): chol_rev / jax", _ratio("stack (1000, 32, 32) float32", "chol_rev", "jax"), 1.0, "<="),
    ("float32 stack (10000, 8, 8): chol_rev / jax", _ratio("stack (10000, 8, 8) float32", "chol_rev", "jax"), 1.0, "<="),
    ("float32 stack (100, 128, 128): chol_rev / jax", _ratio("stack (100, 128, 128) float32", "chol_rev", "jax"), 1.0, "<="),
    ("1 → 2 threads: sweep speed-up", ("speedup", "threads", None, "chol_rev sweep"), 1.8, ">="),
]
#: Issue 9's: the whole GP gradient, the framework's own rules / blockchol's (speed-ups).
_TORCH, _JAX, _GPYT = "frameworks-torch", "frameworks-jax", "frameworks-torch-gpytorch"
for _n, _bar in ((100, 1.0), (1000, 1.0), (4000, 2.0)):
    TARGETS.append(("torch GP gradient N=%d: own rules / accelerate()" % _n,
                    _ratio("GP gradient, N=%d" % _n, "torch's own rules", "accelerate()", _TORCH), _bar, ">="))
for _n, _bar in ((100, 1.0), (1000, 1.0), (3000, 2.0), (4000, 2.5)):
    TARGETS.append(("jax GP gradient N=%d: jnp.linalg.cholesky / blockchol.jax" % _n,
                    _ratio("GP gradient, N=%d" % _n, "jnp.linalg.cholesky", "blockchol.jax", _JAX), _bar, ">="))
for _n in (2000, 4000):
    TARGETS.append(("GPyTorch ExactGP N=%d: own rules / accelerate()" % _n,
                    _ratio("GP gradient, N=%d" % _n, "torch's own rules", "accelerate()", _GPYT), 1.0, ">"))


def _find(records, suite, case, impl):
    for r in records:
        if r["suite"] == suite and (case is None or r["case"] == case) and r["impl"] == impl:
            return r
    return None


def target_values(records):
    """[(label, value or None, bar, sense, met)] for the targets the run measured."""
    out = []
    for label, how, bar, sense in TARGETS:
        kind, suite, case = how[:3]
        value = None
        if kind == "ratio":
            a, b = _find(records, suite, case, how[3]), _find(records, suite, case, how[4])
            if a and b:
                value = a["min"] / b["min"]
        elif kind == "rate":
            s, g = _find(records, suite, case, "chol_rev sweep"), _find(records, suite, case, "dgemm")
            if s and g:
                value = (s["flops_sweep"] / s["min"]) / (g["flops_gemm"] / g["min"])
        elif kind == "speedup":
            one, two = (_find(records, suite, None, "%s @%d" % (how[3], t)) for t in (1, 2))
            if one and two:
                value = one["min"] / two["min"]
                label = "%s (%s)" % (label, one["case"])
        met = None if value is None else {"<=": value <= bar, ">=": value >= bar, ">": value > bar}[sense]
        out.append((label, value, bar, sense, met))
    return out


def _fmt(x):
    if x is None:
        return "—"
    return "%.3g" % x


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def render(data):
    m = data["machine"]
    parts = ["# blockchol benchmark", "",
             "- %s; %s, %s cores usable; Python %s" % (m["date"], m["cpu"], m["cores"], m["python"]),
             "- BLAS: " + "; ".join(m["blas"]),
             "- versions: " + ", ".join("%s %s" % kv for kv in m["versions"].items()),
             "- load average after the run: %s" % m["load"]]
    parts += ["- note: " + n for n in data["notes"]]
    records = data["records"]
    targets = [t for t in target_values(records) if t[1] is not None]
    if targets:
        parts += ["", "## Targets", "", _table(
            ["target", "measured", "bar", "met"],
            [(label, _fmt(v), "%s %g" % (sense, bar), "yes" if met else "**no**")
             for label, v, bar, sense, met in targets])]
    timed = [r for r in records if "min" in r and r["suite"] not in ("dask-distributed", "anchor")]
    for suite in dict.fromkeys(r["suite"] for r in timed):
        rows = [(r["case"], r["impl"], _fmt(1e3 * r["min"]), _fmt(1e3 * r["median"]),
                 _fmt(r.get("ratio")), _check(r), _fmt(r.get("error")))
                for r in timed if r["suite"] == suite]
        parts += ["", "## %s" % suite, "", "Minimum and median ms; × = min / min of the case's "
                  "baseline (%s)." % ", ".join(sorted({str(r.get("baseline")) for r in timed
                                                         if r["suite"] == suite})), "",
                  _table(["case", "implementation", "min ms", "median ms", "×", "check", "error"], rows)]
    anchor = [r for r in records if r["suite"] == "anchor"]
    if anchor:
        rows = []
        for r in anchor:
            base = _find(anchor, "anchor", r["case"], r["baseline"])
            rows.append((r["case"], r["impl"], _fmt(1e3 * r["min"]), _fmt(1e3 * r["median"]),
                         _fmt(base["min"] / r["min"]), _fmt(base["median"] / r["median"]),
                         "%.1e" % r["error"], _check(r)))
        parts += ["", "## anchor", "", "Smith's scalar loop (the seed's yardstick) beside GPy's "
                  "loop, the unblocked sweep and both methods: the same matrix, the same BLAS "
                  "thread setting, interleaved.  Minimum and median ms; speed-up = Smith's loop's "
                  "time / the row's (minima; medians); error: relative, against the closed form "
                  "in long double.", "",
                  _table(["case", "implementation", "min ms", "median ms", "speed-up (min)",
                          "speed-up (median)", "error", "check"], rows)]
    dist = [r for r in records if r["suite"] == "dask-distributed"]
    if dist:
        parts += ["", "## dask-distributed", "", "A LocalCluster; the result persisted on the "
                  "workers; bytes the workers sent each other during the call.", "",
                  _table(["case", "cluster", "min s", "speed-up over 1 worker", "GB sent",
                          "N×N matrices sent", "check"],
                         [(r["case"], r["impl"], _fmt(r["min"]), _fmt(r["speedup"]),
                           _fmt(r["bytes_sent"] / 1e9), _fmt(r["matrices_sent"]),
                           "ok" if r["ok"] else "**WRONG**") for r in dist])]
    acc = [r for r in records if r["suite"] == "accuracy"]
    if acc:
        impls = list(dict.fromkeys(r["impl"] for r in acc if r["impl"] != "worst block size"))
        cases = list(dict.fromkeys(r["case"] for r in acc))
        rows = []
        for case in cases:
            by = {r["impl"]: r["error"] for r in acc if r["case"] == case}
            rows.append([case] + [("%.1e" % by[i] if i in by else "—")
                                  + (" (nb=%d)" % by["worst block size"] if i == "sweep, worst block size" else "")
                                  for i in impls])
        parts += ["", "## accuracy", "", "Relative (Frobenius) errors against the long-double "
                  "truth; torch and jax against the truth from their own factor.", "",
                  _table(["covariance, N, jitter"] + impls, rows)]
    for suite, what in (("anatomy-operations", "relative error"),
                        ("anatomy-formulations", "error / the chosen form's (its error in brackets)"),
                        ("anatomy-kernels", "typical error / the unblocked level-2 sweep's")):
        recs = [r for r in records if r["suite"] == suite]
        if recs:
            cases = list(dict.fromkeys(r["case"] for r in recs))
            rows = [[impl] + [_cell(r) for case in cases for r in recs
                              if r["case"] == case and r["impl"] == impl]
                    for impl in dict.fromkeys(r["impl"] for r in recs)]
            parts += ["", "## %s" % suite, "", what + ".", "", _table(["", *cases], rows)]
    return "\n".join(parts) + "\n"


def _check(r):
    if r.get("ok") is False:
        return "**WRONG**"
    return "ok" if r.get("error") is not None else "—"


def _cell(r):
    if "ratio" in r and r["suite"] != "anatomy-operations":
        return "%.2g" % r["ratio"] + (" (%.1e)" % r["error"] if r["suite"] == "anatomy-formulations" else "")
    return "%.1e" % r["error"]
