"""Settings of one run: the standard and --quick profiles, and the command line."""

import argparse
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional

__all__ = ["Config", "STANDARD", "QUICK", "SUITE_NAMES", "default_thread_counts",
           "usable_cores", "parse_args"]

SUITE_NAMES = ("core", "blocks", "kernels", "threads", "memory", "batch", "complex", "fwd")
DEFAULT_OUT = Path(__file__).resolve().parent / "out"


def usable_cores():
    """CPUs this process may run on (the affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def default_thread_counts(cores):
    """1, 2, ..., cores; above 8 cores, the powers of two and the core count."""
    if cores <= 8:
        return tuple(range(1, cores + 1))
    counts = [2 ** k for k in range(cores.bit_length()) if 2 ** k < cores]
    return tuple(counts + [cores])


@dataclass(frozen=True)
class Config:
    suites: tuple = SUITE_NAMES
    sizes: tuple = (100, 500, 1000, 2000, 4000)
    dtypes: tuple = ("float64", "float32")
    threads: int = field(default_factory=usable_cores)    # the setting of every suite but 'threads'
    thread_counts: tuple = field(default_factory=lambda: default_thread_counts(usable_cores()))
    thread_sizes: tuple = (2000, 4000)
    block_sizes: tuple = (32, 64, 128, 256, 512, 1024)
    kernel_sizes: tuple = (1000, 2000)
    kernel_block_sizes: tuple = (64, 128, 256)
    memory_sizes: tuple = (1000, 2000, 4000)
    batch_shapes: tuple = ((1000, 32, 32), (100, 128, 128), (8, 1000, 1000))
    complex_sizes: tuple = (100, 500, 1000, 2000)
    fwd_sizes: tuple = (100, 500, 1000, 2000)
    impls: Optional[frozenset] = None      # None: all; the yardsticks always run
    repeats: int = 7                       # samples per implementation (at most)
    budget: float = 30.0                   # seconds of samples per implementation and case
    min_sample: float = 0.005              # seconds; faster calls are batched into one sample
    smith_max_n: int = 200                 # the pure-Python loop takes ~1 s at N = 200
    level2_max_n: int = 1000               # column-at-a-time numpy: seconds above N = 1000
    seed: int = 0
    out: Path = DEFAULT_OUT
    plots: bool = True
    quick: bool = False
    extra_impls: tuple = ()                # programmatic only: extra rows for the core suite


STANDARD = Config()

# Finishes in well under a minute on two cores, imports of the peers included.
QUICK = replace(STANDARD, sizes=(64, 256), thread_sizes=(400,), block_sizes=(32, 64, 128),
                kernel_sizes=(256,), kernel_block_sizes=(32, 64),
                memory_sizes=(256,), batch_shapes=((100, 32, 32), (10, 128, 128), (4, 256, 256)),
                complex_sizes=(64, 256), fwd_sizes=(64, 256), repeats=3, budget=2.0,
                min_sample=0.002, quick=True)


def _ints(text):
    return tuple(int(x) for x in text.split(",") if x.strip())


def _names(text):
    return tuple(x.strip() for x in text.split(",") if x.strip())


def _shapes(text):
    """'1000x32x32,8x1000x1000' → ((1000, 32, 32), (8, 1000, 1000))."""
    shapes = tuple(tuple(int(d) for d in s.lower().split("x")) for s in _names(text))
    for shape in shapes:
        if len(shape) < 3 or shape[-1] != shape[-2]:
            raise argparse.ArgumentTypeError("a batch shape is BxNxN, got %s" % "x".join(map(str, shape)))
    return shapes


def _suites(text):
    names = _names(text)
    unknown = [n for n in names if n not in SUITE_NAMES]
    if unknown:
        raise argparse.ArgumentTypeError("unknown suite(s) %s; choose from %s"
                                         % (", ".join(unknown), ",".join(SUITE_NAMES)))
    return names


def _dtypes(text):
    names = _names(text)
    for name in names:
        if name not in ("float64", "float32"):
            raise argparse.ArgumentTypeError("dtypes are float64 and float32 (the complex "
                                             "suite uses their complex counterparts), got %s" % name)
    return names


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark blockchol.chol_rev against the seed's forms, its peers (GPy, "
                    "torch, jax) and the LAPACK/BLAS yardsticks. Progress on stderr, the "
                    "Markdown tables on stdout; results.md, results.json and plots in --out.",
        epilog="Exit status: 0, or 1 when any row is WRONG or ERROR.")
    add = parser.add_argument
    add("--quick", action="store_true", help="small sizes and few repeats (under a minute)")
    add("--suite", type=_suites, dest="suites",
        help="comma-separated suites from %s (default: all)" % ",".join(SUITE_NAMES))
    add("--sizes", type=_ints, help="N for the core and blocks suites (default 100,500,1000,2000,4000)")
    add("--dtypes", type=_dtypes, help="float64,float32 (default both)")
    add("--threads", type=int, help="thread setting for every suite but 'threads' "
                                    "(default: all usable cores)")
    add("--thread-counts", type=_ints, help="thread counts of the threads suite (default 1..cores)")
    add("--thread-sizes", type=_ints, help="N for the threads suite (default 2000,4000)")
    add("--block-sizes", type=_ints, help="block sizes of the sweep (default 32,...,1024)")
    add("--kernel-sizes", type=_ints, help="N for the kernels suite (default 1000,2000)")
    add("--kernel-block-sizes", type=_ints, help="block sizes of the kernels suite (default 64,128,256)")
    add("--memory-sizes", type=_ints, help="N for the memory suite (default 1000,2000,4000)")
    add("--batch-shapes", type=_shapes, help="BxNxN stacks (default 1000x32x32,100x128x128,8x1000x1000)")
    add("--complex-sizes", type=_ints, help="N for the complex suite (default 100,...,2000)")
    add("--fwd-sizes", type=_ints, help="N for the forward-mode suite (default 100,...,2000)")
    add("--impls", type=_names, help="only these implementations (keys such as chol_rev, "
                                     "chol_rev_loop, smith_rev, level2_rev, symbolic_rev, GPy, "
                                     "torch, jax, symbolic_fwd, chol_fwd); the yardsticks "
                                     "always run")
    add("--repeats", type=int, help="samples per implementation and case (default 7)")
    add("--budget", type=float, help="seconds of samples per implementation and case; slower "
                                     "implementations get fewer samples (3 at least) or are skipped "
                                     "(default 30)")
    add("--seed", type=int, help="random seed of the test matrices (default 0)")
    add("--out", type=Path, help="output folder (default bench/out)")
    add("--no-plots", dest="plots", action="store_false", default=None, help="skip the PNG plots")
    return parser


def parse_args(argv=None):
    """The Config for a command line: the profile, then every option given."""
    args = build_parser().parse_args(argv)
    config = QUICK if args.quick else STANDARD
    given = {name: value for name, value in vars(args).items()
             if value is not None and name != "quick"}
    if "impls" in given:
        given["impls"] = frozenset(given["impls"])
    for name in ("threads", "repeats"):
        if name in given and given[name] < 1:
            raise SystemExit("--%s must be at least 1" % name)
    if "thread_counts" in given and min(given["thread_counts"]) < 1:
        raise SystemExit("--thread-counts must be at least 1")
    return replace(config, **given)

