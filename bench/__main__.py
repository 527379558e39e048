"""``python -m bench [--quick] [--suite NAMES] [--out FOLDER]``: run, print the tables, write JSON and plots."""

import argparse
import sys

from .harness import Bench
from .suites import SUITES


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller cases, fewer rounds")
    parser.add_argument("--suite", default=",".join(SUITES),
                        help="comma-separated, from: %s (default: all)" % ", ".join(SUITES))
    parser.add_argument("--out", default="bench/out", help="folder for results.json/.md and plots")
    args = parser.parse_args(argv)
    names = [s for s in args.suite.split(",") if s]
    unknown = [s for s in names if s not in SUITES]
    if unknown:
        parser.error("unknown suite(s) %s; choose from %s" % (", ".join(unknown), ", ".join(SUITES)))
    b = Bench(quick=args.quick)
    for name in names:
        try:
            SUITES[name](b)
        except ImportError as error:        # a peer or an extra that is not installed
            b.note("%s suite skipped: %s" % (name, error))
    markdown = b.write(args.out, {"quick": args.quick, "suites": names})
    try:
        from .plots import make_plots
        make_plots(args.out)
    except ImportError as error:
        b.note("no plots: %s" % error)
    sys.stdout.write(markdown)
    return 1 if any(r.get("ok") is False for r in b.records) else 0


if __name__ == "__main__":
    sys.exit(main())
