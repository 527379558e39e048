"""Benchmark harness for blockchol: ``python -m bench [--quick] [--suite ...]``.

Times ``blockchol.chol_rev`` side by side with the seed's slow forms
(:mod:`blockchol.reference`), its peers when installed (GPy, torch, jax)
and the LAPACK/BLAS yardsticks (potrf, gemm), on the same matrices and
thread setting, checks every answer against chol_rev in the same run, and
writes Markdown, JSON and PNG results (default folder ``bench/out/``).

Modules: :mod:`.config` (profiles, command line), :mod:`.problems` (test
matrices), :mod:`.impls` (the rows), :mod:`.peers` (optional libraries),
:mod:`.features` (probes for planned blockchol features), :mod:`.timing`,
:mod:`.checks`, :mod:`.runner` (one case), :mod:`.suites`, :mod:`.report`,
:mod:`.plots`, :mod:`.machine`, :mod:`.cli`.
"""

from .cli import main, run
from .config import QUICK, STANDARD, Config

__all__ = ["main", "run", "Config", "STANDARD", "QUICK"]
