"""``theano_lowmem.core`` imports and works with neither Theano nor numpy importable.

A fresh interpreter (``python -S -E``: no site-packages, no ``.pth`` start-up
hook, no PYTHONPATH) installs a ``sys.meta_path`` finder that makes every
import of ``theano``, ``numpy`` and ``scipy`` raise, checks that it does, then
imports every module of ``theano_lowmem/core`` through a stub parent package
(``theano_lowmem/__init__.py`` imports Theano and must not run), runs a small
smoke use and the doctests of every core module, and finally checks that no
blocked module got into ``sys.modules`` by another route.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORE = os.path.join(ROOT, "theano_lowmem", "core")

CHILD = textwrap.dedent("""
    import importlib, importlib.abc, sys, types
    BLOCKED = ("theano", "numpy", "scipy")

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"blocked for this test: {name}")
            return None

    sys.meta_path.insert(0, Blocker())
    for name in BLOCKED:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            assert "blocked for this test" in str(exc), exc
        else:
            raise SystemExit(f"the blocker let {name} through")
    print("blocked:", ",".join(BLOCKED))

    core_dir = sys.argv[1]
    pkg = types.ModuleType("theano_lowmem")          # stub: the real __init__ imports theano
    pkg.__path__ = [core_dir.rsplit("/", 1)[0]]
    sys.modules["theano_lowmem"] = pkg
    import os
    names = sorted(f[:-3] for f in os.listdir(core_dir) if f.endswith(".py"))
    mods = {}
    for name in names:
        full = "theano_lowmem.core" + ("" if name == "__init__" else "." + name)
        mods[full] = importlib.import_module(full)
    print("imported:", ",".join(sorted(mods)))

    from theano_lowmem.core import Graph, memory
    from theano_lowmem.core.bufplan import check_plan, plan_buffers
    from theano_lowmem.core.randgraphs import erdos_renyi
    from theano_lowmem.core.schedule import exact_schedule, schedule
    # x -> a (8) -> c (1, output) ; x -> b (8) -> d (1, output): finish one branch first
    g = Graph([[0], [0], [1], [2]], [[1], [2], [3], [4]], size=[0, 8, 8, 1, 1], pinned=[3, 4])
    assert memory.peak(g, [0, 1, 2, 3]) == 17
    s = schedule(g, baseline=[0, 1, 2, 3], time_budget=0.1)
    assert (s.peak, s.optimal) == (10, True) and exact_schedule(g).peak == 10
    h = erdos_renyi(40, seed=1)
    s = schedule(h, baseline=h.topological_order(), time_budget=0.05)
    lts = memory.lifetimes(h, s.order)
    plan = plan_buffers(lts, {lt.buffer: "f8" for lt in lts})
    check_plan(lts, plan)
    assert plan.n_cells_after < plan.n_cells_before
    print("smoke: ok", s.peak, plan.n_cells_before, plan.n_cells_after)

    import doctest
    failed = tried = 0
    for name, mod in sorted(mods.items()):
        r = doctest.testmod(mod)
        failed, tried = failed + r.failed, tried + r.attempted
    print("doctests:", tried, "failed:", failed)
    assert failed == 0 and tried > 10

    leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    assert not leaked, leaked
    assert all(m.startswith("theano_lowmem.core") or m == "theano_lowmem"
               for m in sys.modules if m.startswith("theano_lowmem")), sorted(sys.modules)
    print("CORE PURE OK")
""")


def run_child(core_dir: str = CORE) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-S", "-E", "-c", CHILD, core_dir],
                          capture_output=True, text=True, timeout=120, cwd="/")


def test_core_imports_and_runs_without_theano_and_numpy():
    p = run_child()
    assert p.returncode == 0 and "CORE PURE OK" in p.stdout, p.stdout[-2000:] + p.stderr[-3000:]
    assert "blocked: theano,numpy,scipy" in p.stdout
    imported = p.stdout.split("imported: ")[1].split()[0].split(",")
    expected = sorted("theano_lowmem.core" + ("" if f == "__init__.py" else "." + f[:-3])
                      for f in os.listdir(CORE) if f.endswith(".py"))
    assert imported == expected


def test_blocked_numpy_import_is_reported(tmp_path):
    """The same child on a copy of the core where one module imports numpy fails, naming it."""
    broken = tmp_path / "theano_lowmem" / "core"
    broken.mkdir(parents=True)
    for f in os.listdir(CORE):
        if f.endswith(".py"):
            text = open(os.path.join(CORE, f)).read()
            if f == "bufplan.py":
                text = text.replace("import heapq\n", "import heapq\nimport numpy\n", 1)
            (broken / f).write_text(text)
    p = run_child(str(broken))
    assert p.returncode != 0 and "blocked for this test: numpy" in p.stderr, p.stderr[-2000:]
