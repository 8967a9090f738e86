"""Scheduler quality and speed on seeded random graph families (seed 42).

Run: ``python benchmarks/bench_schedule.py [--quick]``.  Not part of the test run.

``--cells [--against DIR] [--rounds R]``: instead, ``schedule()`` alone on the graphs the
first call of the two RandWire cells of ``theano_lowmem.families`` plans (captured from
``theano.function`` with the ``cvm_lowmem_nogc`` linker; needs Theano): CPU ms (median of
``R`` runs, a fresh copy of the graph each), work units, peak, method.  With ``--against
DIR`` (a checkout of another commit, e.g. ``git worktree add DIR COMMIT``), that
checkout's ``theano_lowmem/core`` is loaded beside this one and the two run alternately in
one process: the medians of both, the median of the per-round ratios (this / other), and
whether the orders are the same.

Table 1, per family: % above the exact optimum (mean / max) of every heuristic
alone, of the best of them ("best-heur", what Inductor's
``reorder_for_peak_memory`` would keep), and of ``schedule`` (default 1 s
budget); % of instances where ``schedule`` is optimal.  The optimum comes from
``exact_schedule`` with a 30 s budget (or from ``schedule`` when that proves a
lower peak optimal); instances neither proves are counted in ``unproved`` and
left out.  Table 2: milliseconds on 1k and 10k nodes, work units spent, and
whether two runs gave the same order.
"""
from __future__ import annotations

import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from theano_lowmem.core import memory  # noqa: E402
from theano_lowmem.core.randgraphs import FAMILIES  # noqa: E402
from theano_lowmem.core.sched_heuristics import HEURISTICS  # noqa: E402
from theano_lowmem.core.sched_model import mem_tables  # noqa: E402
from theano_lowmem.core.schedule import exact_schedule, schedule  # noqa: E402

SEED = 42


def pct(p: int, opt: int) -> float:
    return 100.0 * (p - opt) / opt if opt else 0.0


def quality(family: str, sizes: list[int], count: int) -> list[str]:
    gaps: dict[str, list[float]] = {name: [] for name in [*HEURISTICS, "best-heur", "baseline", "schedule"]}
    hit, unproved, secs = 0, 0, []
    for k in range(count):
        g = FAMILIES[family](sizes[k % len(sizes)], SEED + k, workspace_prob=0.1)
        base = g.topological_order()
        s = schedule(g, baseline=base)
        ex = exact_schedule(g, time_budget=30.0)
        if s.optimal and s.peak < ex.peak:
            ex = s
        if not ex.optimal:
            unproved += 1
            continue
        t = mem_tables(g)
        peaks = {name: memory.peak(g, h(g, t)) for name, h in HEURISTICS.items()}
        secs.append(s.elapsed)
        peaks["best-heur"] = min(peaks.values())
        peaks["baseline"] = memory.peak(g, base)
        peaks["schedule"] = s.peak
        for name, p in peaks.items():
            gaps[name].append(pct(p, ex.peak))
        hit += s.peak == ex.peak
    n = len(gaps["schedule"])
    cells = [f"{statistics.mean(v):5.1f}/{max(v):5.1f}" if v else "  -  " for v in gaps.values()]
    return [family, f"{sizes[0]}-{sizes[-1]}", str(n), str(unproved), *cells,
            f"{100.0 * hit / max(n, 1):5.1f}", f"{1e3 * statistics.mean(secs):6.0f}" if secs else "-"]


def timing(family: str, n: int) -> list[str]:
    g = FAMILIES[family](n, SEED)
    t0 = time.perf_counter()
    t = mem_tables(g)                     # includes the Graph's derived tables (first use)
    cells = [f"{1e3 * (time.perf_counter() - t0):6.1f}"]
    for h in HEURISTICS.values():
        t0 = time.perf_counter()
        h(g, t)
        cells.append(f"{1e3 * (time.perf_counter() - t0):6.1f}")
    g = FAMILIES[family](n, SEED)         # cold graph: tables + every heuristic + scoring
    t0 = time.perf_counter()
    t = mem_tables(g)
    for h in HEURISTICS.values():
        memory.peak(g, h(g, t), check=False)
    cells.append(f"{1e3 * (time.perf_counter() - t0):6.1f}")
    g = FAMILIES[family](n, SEED)         # cold graph again: schedule pays for everything
    base = g.topological_order()
    t0 = time.perf_counter()
    s0 = schedule(g, baseline=base, time_budget=0.0)
    cells.append(f"{1e3 * (time.perf_counter() - t0):6.1f}")
    for budget in (0.25, 1.0):
        t0 = time.perf_counter()
        s1 = schedule(g, baseline=base, time_budget=budget)
        cells.append(f"{1e3 * (time.perf_counter() - t0):6.1f}")
    cells.append(f"{s1.work}")
    cells.append("yes" if schedule(g, baseline=base, time_budget=1.0).order == s1.order else "NO")
    cells.append(f"{pct(s0.peak, s1.peak):4.1f}% ({s1.method})")
    cells.append(f"{pct(s1.peak, s1.lower_bound):5.1f}%")
    return [family, str(g.n_nodes), *cells]


def show(head: list[str], rows: list[list[str]]) -> None:
    w = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, *rows]:
        print("  ".join(c.rjust(w[i]) for i, c in enumerate(r)))
    print()


def capture_cells() -> dict:
    """``{name: (graph, schedule kwargs)}`` of the first call of ``families.randwire`` (n=32,
    ws and er) with ``cvm_lowmem_nogc``: the arguments ``callplan`` passes to ``schedule``."""
    import theano
    import theano_lowmem  # noqa: F401  (registers the linker and the pass)
    from theano_lowmem import callplan, families
    got, orig = [], callplan.schedule

    def spy(g, **kw):
        got.append((g, kw))
        return orig(g, **kw)

    callplan.schedule = spy
    try:
        out = {}
        for kind in ("ws", "er"):
            case = families.randwire(n=32, kind=kind)
            mode = theano.Mode(linker="cvm_lowmem_nogc", optimizer="fast_run+lowmem")
            f = theano.function(case.inputs, case.outputs, mode=mode)
            f(*case.make_args())
            out[f"randwire_{kind}"] = got[-1]
    finally:
        callplan.schedule = orig
    return out


def load_core(root: str):
    """``theano_lowmem/core`` of the checkout ``root`` as the package ``_other_core`` (it
    imports nothing outside itself): its ``schedule`` module and ``Graph`` class."""
    import importlib
    import importlib.util
    path = os.path.join(os.path.abspath(root), "theano_lowmem", "core")
    spec = importlib.util.spec_from_file_location("_other_core", os.path.join(path, "__init__.py"),
                                                  submodule_search_locations=[path])
    mod = importlib.util.module_from_spec(spec)
    sys.modules["_other_core"] = mod
    spec.loader.exec_module(mod)
    return importlib.import_module("_other_core.schedule"), mod.Graph


def cells(argv: list[str]) -> None:
    import gc
    import pickle
    rounds = int(argv[argv.index("--rounds") + 1]) if "--rounds" in argv else 100
    other = argv[argv.index("--against") + 1] if "--against" in argv else None
    sides = [("this", schedule, None)]
    if other:
        sched2, graph2 = load_core(other)
        sides.append(("other", sched2.schedule, graph2))
    for name, (g, kw) in capture_cells().items():
        data = {}
        for side, fn, cls in sides:
            g2 = g if cls is None else cls(g.node_inputs, g.node_outputs, g.size, g.alias_of,
                                           g.pinned, g.extra_deps, workspace=g.workspace)
            data[side] = pickle.dumps(g2)
        times: dict[str, list[float]] = {side: [] for side, _, _ in sides}
        res = {}
        gc.disable()          # a full collection with Theano loaded costs tens of ms
        try:
            for r in range(rounds):
                if r % 25 == 0:
                    gc.collect()
                for side, fn, _ in (sides if r % 2 else sides[::-1]):
                    gr = pickle.loads(data[side])
                    t0 = time.process_time()
                    res[side] = fn(gr, **kw)
                    times[side].append(time.process_time() - t0)
        finally:
            gc.enable()
        line = [f"{name} ({g.n_nodes} nodes)"]
        for side, _, _ in sides:
            s = res[side]
            line.append(f"{side}: {1e3 * statistics.median(times[side]):.2f} ms, {s.work} units, "
                        f"peak {s.peak:,} B, {s.method}{', optimal' if s.optimal else ''}")
        if other:
            ratio = statistics.median(a / b for a, b in zip(times["this"], times["other"]))
            line.append(f"this / other {ratio:.3f} (median of {rounds} paired runs), same order: "
                        f"{'yes' if res['this'].order == res['other'].order else 'NO'}")
        print("\n  ".join(line))


def main() -> None:
    if "--cells" in sys.argv:
        cells(sys.argv)
        return
    quick = "--quick" in sys.argv
    m = 8 if quick else 40
    plan = [("erdos_renyi", [16, 20, 24, 28, 32], m), ("watts_strogatz", [16, 20, 24, 28, 32], m),
            ("chain", [24], m // 4), ("fan_out", [24, 32], m // 2), ("in_tree", [24, 32], m // 2),
            ("series_parallel", [16, 24], m // 2)]
    print(f"% above the exact optimum, mean/max (seed {SEED}; workspace on 10% of nodes)")
    show(["family", "nodes", "inst", "unproved", *HEURISTICS, "best-heur", "baseline(kahn)",
          "schedule", "%opt", "ms"], [quality(*p) for p in plan])
    print("milliseconds (tables = first derived tables of a fresh Graph; 'all heur+score' = tables +\n"
          "every heuristic + memory.peak of each on a fresh Graph; sched(0s) runs the first heuristic\n"
          "(or Liu on trees) only; sched(b): total time of schedule with budget b, baseline = kahn;\n"
          "work(1s): units spent; same: a second 1 s run gave the same order; gain of 1s over 0s and\n"
          "distance to the (weak) static lower bound)")
    show(["family", "nodes", "tables", *HEURISTICS, "all heur+score", "sched(0s)", "sched(.25s)",
          "sched(1s)", "work(1s)", "same", "0s->1s gain", "1s above LB"],
         [timing(f, n) for n in (1000, 10000)
          for f in ("erdos_renyi", "watts_strogatz", "fan_out", "in_tree")])


if __name__ == "__main__":
    main()
