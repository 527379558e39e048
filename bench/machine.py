"""A description of the machine and software, printed above the tables and saved in results.json."""

import datetime
import os
import platform
from importlib import metadata

from threadpoolctl import threadpool_info

from .config import usable_cores

__all__ = ["describe", "markdown", "load_average"]

_PACKAGES = ("blockchol", "numpy", "scipy", "threadpoolctl", "GPy", "torch", "jax", "jaxlib",
             "matplotlib")


def cpu_model():
    """The CPU's model name from /proc/cpuinfo, else what platform knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package):
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def thread_pools():
    """The loaded BLAS/OpenMP libraries, as threadpoolctl sees them now."""
    return [{"library": info.get("internal_api"), "api": info.get("user_api"),
             "version": info.get("version"), "threads": info.get("num_threads"),
             "architecture": info.get("architecture"),
             "file": os.path.basename(info.get("filepath", ""))}
            for info in threadpool_info()]


def load_average():
    """1, 5 and 15-minute load averages: other work on the machine shows here."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def describe(load_before=None):
    """A JSON-ready dict: CPU, cores, thread pools, versions, date, load.

    ``load_before``: the load averages taken before the run started, which
    show other work on the machine (the ones after include this run's own).
    """
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable_cores(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {p: v for p in _PACKAGES if (v := _version(p)) is not None},
        "missing": [p for p in _PACKAGES if _version(p) is None],
        "thread_pools": thread_pools(),
        "load_before": load_before,
        "load_after": load_average(),
    }


def markdown(description):
    """The description as a Markdown bullet list."""
    d = description
    lines = ["- date: %s" % d["date"],
             "- CPU: %s, %d logical CPUs (%d usable by this process)"
             % (d["cpu"], d["logical_cpus"], d["usable_cpus"]),
             "- platform: %s, Python %s" % (d["platform"], d["python"]),
             "- versions: " + ", ".join("%s %s" % kv for kv in d["versions"].items())]
    for when in ("before", "after"):
        if d.get("load_" + when):
            lines.append("- load average (1, 5, 15 min) %s the run: %s"
                         % (when, ", ".join("%.2f" % x for x in d["load_" + when])))
    if d["missing"]:
        lines.append("- not installed: " + ", ".join(d["missing"]))
    for pool in d["thread_pools"]:
        lines.append("- thread pool: %s %s (%s API, %s, %s threads)%s"
                     % (pool["library"], pool["version"] or "(version unknown)", pool["api"],
                        pool["file"], pool["threads"],
                        ", " + pool["architecture"] if pool["architecture"] else ""))
    return "\n".join(lines)
