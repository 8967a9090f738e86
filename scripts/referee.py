#!/usr/bin/env python
"""Theano's own test suite as referee: run a selection stock and with theano_lowmem on.

Both runs use the same interpreter, pytest, ``blas.ldflags``, compile cache and
``allow_gc`` (``False`` by default, so the sharing linker really shares cells);
they differ only in the plugin mode (``theano_lowmem/testing/referee_plugin.py``):

* ``stock``: scan fix only; ``theano_lowmem`` is not even on ``sys.path``.
* ``lowmem``: scan fix, ``THEANO_FLAGS=...,lowmem_order=True`` and
  ``theano_lowmem.activate.enable()`` before any test module imports Theano,
  so every default/FAST_RUN/VM-linker function gets the ``lowmem`` pass and
  ``LowMemLinker``.  The tests themselves are unmodified.

The junit XML of both runs is compared test by test.  Exit status: 0 when no
test that passes stock fails (or errors) with theano_lowmem, 1 otherwise
(a regression listed in ``KNOWN`` is printed with its explanation and only
counts with ``--strict``), 2 when a run could not produce a report.

Usage::

    python scripts/referee.py --install-deps --quick   # first time: pytest 7.4.4 + nose (pip --target)
    python scripts/referee.py --quick            # CI selection, minutes
    python scripts/referee.py --full             # adds tensor/scan/nnet modules, about an hour
    python scripts/referee.py theano/tensor/tests/test_elemwise.py   # any paths inside theano
    python scripts/referee.py --quick --allow-gc # both runs with allow_gc=True
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLUGIN_DIR = os.path.join(ROOT, "theano_lowmem", "testing")
RUNS = ("stock", "lowmem")

QUICK = ("theano/gof/tests", "theano/compile/tests", "theano/tests/test_ifelse.py")
FULL = QUICK + (
    "theano/tensor/tests/test_elemwise.py", "theano/tensor/tests/test_subtensor.py",
    "theano/tensor/tests/test_opt.py", "theano/tensor/tests/test_nlinalg.py",
    "theano/tensor/tests/test_extra_ops.py", "theano/tensor/tests/test_gc.py",
    "theano/scan_module/tests/test_scan.py", "theano/tensor/nnet/tests/test_nnet.py")
# Helpers named test_* that pytest collects by mistake (not tests: "fixture 'f' not found").
DESELECT = ("theano/compile/tests/test_builders.py::test_params",)

# pytest 7.4.4 (pytest 9 aborts modules holding nose-style yield tests) and nose (imported by
# many test modules), installed with `pip install --target` into this directory, never globally.
DEPS = ("pytest==7.4.4", "nose==1.3.7")
DEFAULT_DEPS_DIR = os.path.join(tempfile.gettempdir(), "theano_lowmem_referee_deps")

# Differences explained in docs/referee.md: junit test id -> why the outcome differs.  They are
# printed on every run with their explanation; they do not fail the run unless --strict.
KNOWN: dict[str, str] = {
    "theano.compile.tests.test_profiling.Test_profiling::test_profiling":
        "asserts Theano's profiler numbers for Theano's own order: with the pinned order the "
        "executed peak is 4104KB, not 4112KB, and count_minimum_peak prints 0KB under a full chain",
}


@dataclass(frozen=True)
class RunResult:
    """One pytest run: outcome per test id, wall seconds, pytest's exit code, report header."""

    outcomes: dict[str, str]
    seconds: float
    returncode: int
    header: str


def theano_dir() -> str:
    """Directory of the installed ``theano`` package, found without importing it."""
    import importlib.util
    spec = importlib.util.find_spec("theano")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("referee: theano is not installed")
    return list(spec.submodule_search_locations)[0]


def resolve(path: str) -> str:
    """``theano/...`` paths are taken inside the installed package; others as given."""
    if path.startswith("theano/") or path == "theano":
        return os.path.join(os.path.dirname(theano_dir()), path)
    return os.path.abspath(path)


def theano_flags(run: str, allow_gc: bool, compiledir: str | None) -> str:
    """THEANO_FLAGS of a run: the user's flags plus ldflags/compiledir defaults and allow_gc."""
    user = os.environ.get("THEANO_FLAGS", "")
    keys = {kv.split("=", 1)[0].strip() for kv in user.split(",") if "=" in kv}
    drop = ("allow_gc=",) + (("lowmem_",) if run == "stock" else ("lowmem_order=",))
    flags = [f for f in user.split(",") if f.strip() and not f.strip().startswith(drop)]
    if "blas.ldflags" not in keys:
        flags.append("blas.ldflags=-lopenblas" if _has_openblas() else "blas.ldflags=")
    if compiledir:
        flags = [f for f in flags if not f.strip().startswith("base_compiledir=")]
        flags.append(f"base_compiledir={compiledir}")
    elif "base_compiledir" not in keys:
        flags.append(f"base_compiledir={os.path.join(tempfile.gettempdir(), f'theano_lowmem_referee_{os.getuid()}')}")
    flags.append(f"allow_gc={allow_gc}")
    if run == "lowmem":
        flags.append("lowmem_order=True")
    return ",".join(flags)


def _has_openblas() -> bool:
    sys.path.insert(0, os.path.join(ROOT, "theano_lowmem"))
    try:
        import _startup   # the package's own detection, loaded without importing theano
        return _startup.find_openblas() is not None
    finally:
        sys.path.pop(0)


def ensure_deps(deps_dir: str, install: bool) -> None:
    """Check (or with ``install``, create) the directory holding pytest 7.4.4 and nose."""
    have = os.path.isdir(os.path.join(deps_dir, "nose")) and os.path.isdir(os.path.join(deps_dir, "pytest"))
    if have:
        return
    if not install:
        sys.exit(f"referee: {deps_dir} lacks {' and '.join(DEPS)}; rerun with --install-deps "
                 f"(pip install --no-deps --target {deps_dir} {' '.join(DEPS)})")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", deps_dir, *DEPS],
                   check=True)


def run_pytest(run: str, paths: list[str], outdir: str, allow_gc: bool, compiledir: str | None,
               extra: list[str], quiet: bool, deps_dir: str) -> RunResult:
    """Run pytest once (``run`` is ``'stock'`` or ``'lowmem'``) and parse its junit XML."""
    xml = os.path.join(outdir, f"{run}.xml")
    log = os.path.join(outdir, f"{run}.log")
    if os.path.exists(xml):
        os.remove(xml)
    env = dict(os.environ, THEANO_LOWMEM_REFEREE=run,
               THEANO_FLAGS=theano_flags(run, allow_gc, compiledir))
    pp = [deps_dir, PLUGIN_DIR] + ([ROOT] if run == "lowmem" else [])
    env["PYTHONPATH"] = os.pathsep.join(pp + [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
                                              if p and os.path.abspath(p) != ROOT])
    env.pop("PYTEST_ADDOPTS", None)
    cmd = [sys.executable, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider",
           f"--rootdir={os.path.dirname(theano_dir())}",
           "-p", "referee_plugin", f"--junitxml={xml}", "-o", "junit_family=xunit2",
           *[a for d in DESELECT for a in ("--deselect", d)], *extra, *paths]
    if not quiet:
        print(f"[referee] {run}: {' '.join(cmd)}\n[referee] THEANO_FLAGS={env['THEANO_FLAGS']}"
              f"\n[referee] log: {log}", flush=True)
    t0 = time.perf_counter()
    with open(log, "w") as fh:   # cwd=outdir: no conftest.py of the caller's tree is picked up
        proc = subprocess.run(cmd, cwd=outdir, env=env, stdout=fh, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - t0
    if not os.path.exists(xml):
        print(f"referee: the {run} run wrote no junit report (pytest exit {proc.returncode}); see {log}",
              file=sys.stderr)
        sys.exit(2)
    outcomes, header = parse_junit(xml)
    return RunResult(outcomes, seconds, proc.returncode, header)


def parse_junit(path: str) -> tuple[dict[str, str], str]:
    """``{test id: outcome}`` from a junit XML file, outcome in passed/failed/error/skipped,
    plus the ``referee`` property written by the plugin ('' if absent).

    A test that fails and then errors in teardown appears twice; the worse outcome wins.
    """
    rank = {"passed": 0, "skipped": 1, "failed": 2, "error": 3}
    root = ET.parse(path).getroot()
    header = ""
    for prop in root.iter("property"):
        if prop.get("name") == "referee":
            header = prop.get("value", "")
    out: dict[str, str] = {}
    for case in root.iter("testcase"):
        tid = f"{case.get('classname', '')}::{case.get('name', '')}"
        kinds = [c.tag for c in case if c.tag in ("failure", "error", "skipped")]
        outcome = ("error" if "error" in kinds else "failed" if "failure" in kinds
                   else "skipped" if "skipped" in kinds else "passed")
        if tid not in out or rank[outcome] > rank[out[tid]]:
            out[tid] = outcome
    return out, header


def compare(stock: dict[str, str], lowmem: dict[str, str]) -> list[tuple[str, str, str]]:
    """Tests whose outcome differs: ``(test id, stock outcome, lowmem outcome)``, sorted;
    a test missing from one run has outcome ``'absent'`` there."""
    ids = sorted(set(stock) | set(lowmem))
    return [(t, stock.get(t, "absent"), lowmem.get(t, "absent")) for t in ids
            if stock.get(t, "absent") != lowmem.get(t, "absent")]


def is_regression(stock_outcome: str, lowmem_outcome: str) -> bool:
    """Passed stock, not passed (failed, error, or vanished) with theano_lowmem."""
    return stock_outcome == "passed" and lowmem_outcome in ("failed", "error", "absent")


def counts(outcomes: dict[str, str]) -> dict[str, int]:
    keys = ("passed", "failed", "error", "skipped")
    return {k: sum(1 for o in outcomes.values() if o == k) for k in keys} | {"total": len(outcomes)}


def report(results: dict[str, RunResult], diffs: list[tuple[str, str, str]]) -> str:
    """The side-by-side table and the list of differing tests, as text."""
    c = {r: counts(results[r].outcomes) for r in results}
    lines = [f"{'':10}" + "".join(f"{r:>10}" for r in results)]
    for k in ("passed", "failed", "error", "skipped", "total"):
        lines.append(f"{k:10}" + "".join(f"{c[r][k]:>10}" for r in results))
    lines.append(f"{'wall s':10}" + "".join(f"{results[r].seconds:>10.0f}" for r in results))
    for r in results:
        lines.append(f"{r}: {results[r].header or '(no referee header: plugin not loaded?)'}")
    lines.append(f"{len(diffs)} test(s) with a different outcome:")
    for tid, a, b in diffs:
        tag = ("KNOWN" if tid in KNOWN else "REGRESSION") if is_regression(a, b) else "difference"
        lines.append(f"  {tag:10} {a:>7} -> {b:<7} {tid}")
        if tid in KNOWN:
            lines.append(f"             known: {KNOWN[tid]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sel = ap.add_mutually_exclusive_group()
    sel.add_argument("--quick", action="store_true", help=f"{' '.join(QUICK)} (default)")
    sel.add_argument("--full", action="store_true", help="the quick selection plus tensor, scan and nnet modules")
    ap.add_argument("paths", nargs="*", help="test paths (theano/... = inside the installed package)")
    ap.add_argument("--allow-gc", action="store_true", help="run both with allow_gc=True (default False)")
    ap.add_argument("--only", choices=RUNS, help="run one side only (prints its counts, never fails)")
    ap.add_argument("--outdir", default=None, help="where the junit XML and logs go (default: a new temp dir)")
    ap.add_argument("--compiledir", default=None, help="base_compiledir for both runs")
    ap.add_argument("--parallel", action="store_true", help="run stock and lowmem at the same time")
    ap.add_argument("--deps-dir", default=os.environ.get("THEANO_LOWMEM_REFEREE_DEPS", DEFAULT_DEPS_DIR),
                    help="directory with pytest 7.4.4 and nose (default %(default)s)")
    ap.add_argument("--install-deps", action="store_true", help="pip install them there (--target) if missing")
    ap.add_argument("--strict", action="store_true", help="known (explained) differences fail the run too")
    ap.add_argument("--pytest-arg", action="append", default=[], help="extra pytest argument (repeatable)")
    args = ap.parse_args(argv)
    paths = [resolve(p) for p in (args.paths or (FULL if args.full else QUICK))]
    missing = [p for p in paths if not os.path.exists(p.split("::")[0])]
    if missing:
        ap.error(f"no such test path: {', '.join(missing)}")
    ensure_deps(args.deps_dir, args.install_deps)
    outdir = args.outdir or tempfile.mkdtemp(prefix="lowmem_referee_")
    os.makedirs(outdir, exist_ok=True)
    runs = (args.only,) if args.only else RUNS
    common = dict(paths=paths, outdir=outdir, allow_gc=args.allow_gc, compiledir=args.compiledir,
                  extra=args.pytest_arg, quiet=False, deps_dir=args.deps_dir)
    if args.parallel and len(runs) == 2:
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(2) as ex:
            futs = {r: ex.submit(run_pytest, r, **common) for r in runs}
            results = {r: futs[r].result() for r in runs}
    else:
        results = {r: run_pytest(r, **common) for r in runs}
    diffs = compare(results["stock"].outcomes, results["lowmem"].outcomes) if len(runs) == 2 else []
    print(report(results, diffs), flush=True)
    print(f"[referee] reports in {outdir}")
    bad = [d for d in diffs if is_regression(d[1], d[2]) and (args.strict or d[0] not in KNOWN)]
    known = [d for d in diffs if is_regression(d[1], d[2]) and d[0] in KNOWN]
    if bad:
        print(f"[referee] FAIL: {len(bad)} test(s) pass stock and fail with theano_lowmem")
        return 1
    print(f"[referee] OK: no unexplained regression ({len(known)} known, explained above)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
