"""``python -m bench.compare --base PATH [--quick] [--out FOLDER]``: this checkout against another, side by side.

A change that should not cost speed is measured here: the package of this
checkout and the package of another checkout (``--base``: the root of a
``git worktree`` at the commit before the change) are imported in one
process, the other one under the name ``blockchol_base``, and every case
is timed with both, interleaved, by the bench's one timing loop, at one
thread setting.  The cases are the targets' (single matrices, stacks, both
directions, both methods) and the framework adapters' (torch's and jax's
gradients through ``accelerate()``, above their crossovers).  Each row
reports the two medians and their ratio; every output is checked against
the other package's (they must agree to rounding).
"""

import argparse
import os
import re
import shutil
import sys
import tempfile

import numpy as np

import blockchol
from .harness import Bench
from .suites import SETTLE, spd_problem

#: (label, direction, method, batch, N, dtype) of the in-core cases.
CORE = (("N=10", "rev", "auto", (), 10, np.float64),
        ("N=30", "rev", "auto", (), 30, np.float64),
        ("N=100", "rev", "auto", (), 100, np.float64),
        ("N=1000", "rev", "auto", (), 1000, np.float64),
        ("N=1000 closed", "rev", "closed", (), 1000, np.float64),
        ("N=4000", "rev", "auto", (), 4000, np.float64),
        ("N=4000 closed", "rev", "closed", (), 4000, np.float64),
        ("fwd N=30", "fwd", "auto", (), 30, np.float64),
        ("fwd N=1000", "fwd", "auto", (), 1000, np.float64),
        ("fwd N=1000 closed", "fwd", "closed", (), 1000, np.float64),
        ("stack (10000, 8, 8)", "rev", "auto", (10000,), 8, np.float64),
        ("stack (1000, 32, 32)", "rev", "auto", (1000,), 32, np.float64),
        ("stack (100, 128, 128)", "rev", "auto", (100,), 128, np.float64),
        ("stack (10000, 8, 8) f32", "rev", "auto", (10000,), 8, np.float32),
        ("stack (1000, 32, 32) f32", "rev", "auto", (1000,), 32, np.float32),
        ("stack (2000, 16, 16) complex", "rev", "auto", (2000,), 16, np.complex128),
        ("fwd stack (10000, 8, 8)", "fwd", "auto", (10000,), 8, np.float64),
        ("fwd stack (1000, 32, 32)", "fwd", "auto", (1000,), 32, np.float64),
        ("stack sweep (1000, 32, 32)", "rev", "sweep", (1000,), 32, np.float64),
        ("loop (3, 600, 600)", "rev", "auto", (3,), 600, np.float64))
QUICK_SKIP = ("N=4000", "N=4000 closed")


def load_base(root):
    """The package of the checkout at ``root``, imported as ``blockchol_base``."""
    folder = tempfile.mkdtemp(prefix="blockchol-base-")
    target = os.path.join(folder, "blockchol_base")
    shutil.copytree(os.path.join(root, "blockchol"), target)
    for dirpath, _, files in os.walk(target):        # its absolute self-imports, renamed
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(dirpath, name)
                with open(path) as f:
                    text = f.read()
                text = re.sub(r"\bimport blockchol as\b", "import blockchol_base as", text)
                text = re.sub(r"\bimport blockchol\b(?![.\w])(?! as\b)",
                              "import blockchol_base as blockchol", text)
                text = re.sub(r"\bfrom blockchol\b", "from blockchol_base", text)
                text = re.sub(r"\bimport blockchol\.", "import blockchol_base.", text)
                with open(path, "w") as f:
                    f.write(text)
    sys.path.insert(0, folder)
    import blockchol_base
    return blockchol_base


def _agree(a, b):
    """Max-norm relative difference, and whether it is at rounding level: the cases' factors
    have condition numbers near 10², so two computations of one result agree to 10⁴ ε."""
    a, b = np.asarray(a), np.asarray(b)
    err = float(np.abs(a - b).max()) / max(float(np.abs(b).max()), np.finfo(float).tiny)
    return err, err <= 1e4 * np.finfo(np.result_type(a.dtype, np.float32)).eps


def core_cases(b, base):
    for label, direction, method, batch, n, dtype in CORE:
        if b.quick and label in QUICK_SKIP:
            continue
        _, L, Lb = spd_problem(n, batch, np.dtype(dtype).type(0).real.dtype.type)
        if np.dtype(dtype).kind == "c":
            Lb = Lb + 1j * np.tril(np.random.default_rng(n).standard_normal(Lb.shape))
        L, Lb = L.astype(dtype), Lb.astype(dtype)
        impls = {}
        for name, pkg in (("now", blockchol), ("before", base)):
            fn = pkg.chol_rev if direction == "rev" else pkg.chol_fwd
            impls[name] = (lambda fn=fn: fn(L, Lb, method=method))
        reference = impls["before"]()
        b.compare("compare", label, impls, lambda name, out: _agree(out, reference),
                  baseline="before", settle=SETTLE if n >= 1000 else 0.0, warm=True, n=n)


def torch_cases(b, base):
    import torch
    import blockchol.torch as now_t
    base_t = __import__(base.__name__ + ".torch", fromlist=["accelerate"])
    for n, dtype in ((1100, torch.float64), (1600, torch.float32)):
        rng = np.random.default_rng(n)
        A = rng.standard_normal((n, n + 3))
        K = torch.from_numpy(A @ A.T / n + np.eye(n)).to(dtype)
        W = torch.from_numpy(rng.standard_normal((n, n))).to(dtype)

        def grad(module):
            def run():
                Kg = K.clone().requires_grad_()
                with module.accelerate():
                    L = torch.linalg.cholesky(Kg)
                (g,) = torch.autograd.grad((L * W).sum(), Kg)
                return g.numpy()
            return run
        impls = {"now": grad(now_t), "before": grad(base_t)}
        reference = impls["before"]()
        b.compare("compare", "torch grad N=%d %s" % (n, str(dtype)[6:]), impls,
                  lambda name, out: _agree(out, reference), baseline="before", settle=SETTLE,
                  warm=True, n=n)


def jax_cases(b, base):
    import jax
    import jax.numpy as jnp
    import blockchol.jax as now_j
    base_j = __import__(base.__name__ + ".jax", fromlist=["accelerate"])
    n = 1100
    rng = np.random.default_rng(n)
    A = rng.standard_normal((n, n + 3))
    K = jnp.asarray((A @ A.T / n + np.eye(n)).astype(np.float32))
    W = jnp.asarray(rng.standard_normal((n, n)).astype(np.float32))

    def grad(module):
        with module.accelerate():
            f = jax.jit(jax.grad(lambda k: jnp.sum(W * jnp.linalg.cholesky(k))))
            f(K).block_until_ready()                 # traced inside: blockchol's rule
        return lambda: np.asarray(f(K).block_until_ready())
    impls = {"now": grad(now_j), "before": grad(base_j)}
    reference = impls["before"]()
    b.compare("compare", "jax grad N=%d float32" % n, impls,
              lambda name, out: _agree(out, reference), baseline="before", settle=SETTLE,
              warm=True, n=n)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__)
    parser.add_argument("--base", required=True, help="root of the other checkout")
    parser.add_argument("--quick", action="store_true", help="smaller cases, fewer rounds")
    parser.add_argument("--rounds", type=int, default=None, help="samples per implementation")
    parser.add_argument("--frameworks", action="store_true", help="also torch's and jax's cases")
    parser.add_argument("--out", default="bench/out/compare", help="folder for results.json/.md")
    args = parser.parse_args(argv)
    base = load_base(os.path.abspath(args.base))
    b = Bench(quick=args.quick, rounds=args.rounds)
    core_cases(b, base)
    if args.frameworks:
        torch_cases(b, base)
        jax_cases(b, base)
    b.write(args.out, {"quick": args.quick, "base": os.path.abspath(args.base)})
    rows = [r for r in b.records if r["impl"] == "now"]
    print("| case | now / before (median) | now / before (min) | agree |")
    print("|---|---:|---:|---|")
    for r in rows:
        before = next(x for x in b.records if x["case"] == r["case"] and x["impl"] == "before")
        print("| %s | %.3f | %.3f | %s |" % (r["case"], r["median"] / before["median"],
                                            r["min"] / before["min"], "ok" if r["ok"] else "NO"))
    return 0 if all(r["ok"] for r in b.records) else 1


if __name__ == "__main__":
    sys.exit(main())
