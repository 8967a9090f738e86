"""Command line: ``python -m theano_lowmem {report,bench,flags}`` (console script ``theano-lowmem``).

``report SCRIPT.py [--function NAME] [--out report.png] [--json out.json]``
    Runs SCRIPT.py, which either defines ``lowmem_report_targets()`` returning
    ``[(name, compiled_function, [example inputs]), ...]``, or defines the
    variables ``f`` (a compiled function) and ``args`` (its example inputs).
    Prints the report of each target (``--function`` picks one by name).

``report FUNCTION.pkl --inputs INPUTS.npz``
    A pickled compiled function and its example inputs saved with
    ``np.savez(path, *args)`` (taken in ``arr_0, arr_1, ...`` order).

``bench [--size tiny|small|medium|large] [--families a,b] [--out DIR] [--plots]``
    The benchmark suite (:mod:`theano_lowmem.bench`).

``flags``
    The table of theano_lowmem's flags.
"""
from __future__ import annotations

import argparse
import os
import pickle
import runpy
import sys
from typing import Sequence


def load_targets(path: str, inputs: str | None = None) -> list[tuple[str, object, list]]:
    """``[(name, f, args)]`` from a script or a pickled function (see the module docstring)."""
    if path.endswith((".pkl", ".pickle")):
        if inputs is None:
            raise SystemExit("a pickled function needs --inputs INPUTS.npz (np.savez(path, *args))")
        with open(path, "rb") as fh:
            f = pickle.load(fh)
        with __import__("numpy").load(inputs, allow_pickle=False) as npz:
            keys = sorted(npz.files, key=lambda k: (not k.startswith("arr_"),
                                                   int(k[4:]) if k[4:].isdigit() else 0, k))
            args = [npz[k] for k in keys]
        return [(getattr(f, "name", None) or os.path.basename(path), f, args)]
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    ns = runpy.run_path(path, run_name="__lowmem_report__")
    if "lowmem_report_targets" in ns:
        return [(str(n), f, list(a)) for n, f, a in ns["lowmem_report_targets"]()]
    if "f" in ns and "args" in ns:
        return [(getattr(ns["f"], "name", None) or "f", ns["f"], list(ns["args"]))]
    raise SystemExit(f"{path} defines neither lowmem_report_targets() nor the variables f and args")


def _report(a) -> int:
    from .report import report
    targets = load_targets(a.target, a.inputs)
    if a.function:
        targets = [t for t in targets if t[0] == a.function]
        if not targets:
            raise SystemExit(f"no target named {a.function!r} in {a.target}")
    many = len(targets) > 1
    dicts = {}
    for name, f, args in targets:
        r = report(f, *args, time_budget=a.time_budget, name=name, measure=not a.no_measure)
        print(r, end="\n\n")
        if a.out:
            root, ext = os.path.splitext(a.out)
            path = f"{root}_{name}{ext or '.png'}" if many else a.out
            print(f"plot: {r.plot(path)}")
        dicts[name] = r.to_dict()
    if a.json:
        import json
        with open(a.json, "w", encoding="utf-8") as fh:
            json.dump(dicts if many else next(iter(dicts.values())), fh, indent=1)
        print(f"json: {a.json}")
    return 0


def _bench(a, argv: Sequence[str]) -> int:
    from .bench import run
    fams = [x for x in a.families.split(",") if x] if a.families else None
    run(size=a.size, families=fams, out=a.out, plots=a.plots, time_budget=a.time_budget,
        command="python -m theano_lowmem " + " ".join(argv))
    return 0


def _flags(a) -> int:
    from . import config
    if hasattr(config, "flag_table_markdown"):
        print(config.flag_table_markdown())
    else:
        for name, default, help_ in config.FLAGS:
            print(f"{name:<26s} {default!s:<8s} {help_}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m theano_lowmem`` and of the ``theano-lowmem`` script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="theano-lowmem", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("report", help="memory report of compiled functions")
    r.add_argument("target", help="a script (.py) or a pickled function (.pkl)")
    r.add_argument("--function", help="only the target with this name")
    r.add_argument("--inputs", help="example inputs of a pickled function (.npz)")
    r.add_argument("--out", help="write the plot to this PNG")
    r.add_argument("--json", help="write the report(s) as JSON")
    r.add_argument("--time-budget", type=float, default=5.0, help="seconds per search (default 5)")
    r.add_argument("--no-measure", action="store_true", help="modelled numbers only (no calls)")
    b = sub.add_parser("bench", help="stock Theano against theano_lowmem on the graph families")
    b.add_argument("--size", default="small", choices=["tiny", "small", "medium", "large"])
    b.add_argument("--families", help="comma-separated subset (default: all of the size)")
    b.add_argument("--out", help="directory for results.md (and plots)")
    b.add_argument("--plots", action="store_true", help="also write PNG plots into --out")
    b.add_argument("--time-budget", type=float, default=2.0,
                   help="seconds for the report's searches per family (default 2)")
    sub.add_parser("flags", help="print the flag table")
    a = p.parse_args(argv)
    import theano_lowmem  # noqa: F401  registers the pass, linkers and flags
    if a.cmd == "report":
        return _report(a)
    if a.cmd == "bench":
        return _bench(a, argv)
    return _flags(a)


if __name__ == "__main__":
    sys.exit(main())
