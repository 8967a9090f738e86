"""One arena per call-time plan (issue 11): held bytes, allocation per call, call time.

    python benchmarks/bench_arena.py [--size small] [--repeat 21] [--families a,b] [--out FILE]
    python benchmarks/bench_arena.py --overhead lstm_seq_train [--repeat 41]

Every family is compiled four times in one process: stock Theano with ``allow_gc``
on (``cvm``) and off (``cvm_nogc``), and theano_lowmem's linker with it on
(``cvm_lowmem``: call-time order, no arena) and off (``cvm_lowmem_nogc``: call-time
order plus the arena).  All four must return bit-identical outputs and updates
(checked at two input shapes for ours).  Columns, all **measured** with tracemalloc
on a warm call unless marked modelled:

* ``gc-on peak``: high-water mark of a call above the level before it (stock / ours);
* ``held gc-off``: bytes of distinct arrays left in the intermediate cells after a
  call with ``allow_gc=False`` (stock / ours), and ``held/peak``: ours held over
  ours' gc-on peak (the issue-11 target is <= 1.10);
* ``arena/lb`` (modelled): arena bytes over the largest bytes its values have live
  at one step (the no-fragmentation lower bound; target <= 1.05);
* ``alloc/call gc-off``: bytes a warm ``allow_gc=False`` call allocates at its
  high-water mark, minus the outputs' bytes (a new output array every call is
  Theano's contract) (stock / ours), and the op classes whose outputs still
  allocate in ours (their arrays are not kept between calls);
* ``call ms``: median of interleaved warm calls (one of each per round, the order rotated
  every round): stock gc-on, stock gc-off, ours gc-off; then ours over stock gc-off and
  over stock gc-on, each the median over rounds of the two calls' ratio in that round, with
  its 95% confidence interval in brackets (sign test, distribution-free).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time


sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import theano  # noqa: E402

from theano_lowmem import families as fam  # noqa: E402
from theano_lowmem import families_nets as nets  # noqa: E402
from theano_lowmem.bench import _results, check_identical, median_ci, progress  # noqa: E402
from theano_lowmem.callplan import planned_vm  # noqa: E402
from theano_lowmem.measure import measure_call  # noqa: E402
from theano_lowmem.report import fmt_bytes  # noqa: E402

MODES = {"stock_gc": dict(linker="cvm", optimizer="fast_run"),
         "stock_nogc": dict(linker="cvm_nogc", optimizer="fast_run"),
         "ours_gc": dict(linker="cvm_lowmem", optimizer="fast_run+lowmem"),
         "ours_nogc": dict(linker="cvm_lowmem_nogc", optimizer="fast_run+lowmem")}

DAGS = {   # name -> mixed_dag arguments (issue 11's irregular graphs: L, 2L, 4L doubles)
    "dag_A": dict(n=60, seed=1), "dag_B": dict(n=100, seed=2),
    "dag_C": dict(n=100, seed=3, max_in=2), "dag_D": dict(n=12, seed=4),
    # allocation-heavy: the same graphs with memory-bound cells (no tanh), where allocating
    # an output is a large part of a cell's cost
    "dag_A_cheap": dict(n=60, seed=1, cheap=True), "dag_C_cheap": dict(n=100, seed=3, max_in=2,
                                                                      cheap=True),
    "dag_D_cheap": dict(n=12, seed=4, cheap=True)}
NETS = ("resnet_bneck_train", "inception_net_train", "densenet_train", "resnet_sd_train", "mlp_mnist_train",
        "lstm_seq_train")


def build(name: str, size: str):
    if name in DAGS:
        kw = dict(DAGS[name])
        if size == "tiny":
            kw["length"] = 1000
        case = fam.mixed_dag(**kw)
        second = case.make_args(length=case.make_args()[0].shape[1] // 2)
        return case, case.make_args(), second
    case = nets.FAMILIES[name](**nets.family_kwargs(name, size))
    args = case.make_args()
    kw = dict(batch=len(args[-1]) + 3)
    if "lstm" in name:
        kw["steps"] = args[0].shape[0] + 4
    return case, args, case.make_args(**kw)


def _warm_measure(f, case, args):
    case.reset()
    f(*args)
    case.reset()
    m = measure_call(f, *args)
    case.reset()
    return m


def run(name: str, size: str, repeat: int) -> dict:
    case, args, args2 = build(name, size)
    progress(f"{name}: compiling")
    fs = {k: case.compile(theano.Mode(**m)) for k, m in MODES.items()}
    progress(f"{name}: checking results ({len(fs['stock_gc'].maker.fgraph.apply_nodes)} nodes)")
    ref = _results(fs["stock_gc"], case, args)
    ref2 = _results(fs["stock_gc"], case, args2)
    for k in ("stock_nogc", "ours_gc", "ours_nogc"):
        check_identical(name, ref, _results(fs[k], case, args), k)
    check_identical(name, ref2, _results(fs["ours_nogc"], case, args2), "ours_nogc, 2nd shape")
    check_identical(name, ref, _results(fs["ours_nogc"], case, args), "ours_nogc, 1st again")
    out_bytes = sum(r.nbytes for r in ref[:len(case.outputs)])
    progress(f"{name}: measuring")
    m = {k: _warm_measure(f, case, args) for k, f in fs.items()}
    pv = planned_vm(fs["ours_nogc"])
    plan = pv.current if pv is not None else None
    arena = plan.arena if plan is not None else None
    allocators = []
    if arena is not None:
        model = pv._planner.model
        allocators = sorted({type(model.variables[v].owner.op).__name__ for v in arena.allocators})
    progress(f"{name}: timing")
    times = rotated_times({k: fs[k] for k in ("stock_gc", "stock_nogc", "ours_nogc")},
                          args, repeat)
    case.reset()
    return dict(name=name, nodes=len(fs["stock_gc"].maker.fgraph.apply_nodes),
                peak_stock=m["stock_gc"].peak, peak_ours=m["ours_gc"].peak,
                held_stock=m["stock_nogc"].held, held_ours=m["ours_nogc"].held,
                alloc_stock=max(0, m["stock_nogc"].peak - out_bytes),
                alloc_ours=max(0, m["ours_nogc"].peak - out_bytes),
                arena=arena.plan.size if arena else 0,
                arena_lb=arena.plan.lower_bound if arena else 0,
                allocators=allocators,
                ms={k: 1e3 * statistics.median(v) for k, v in times.items()},
                paired=paired(times, "ours_nogc", "stock_nogc"),
                paired_gc=paired(times, "ours_nogc", "stock_gc"))


def rotated_times(fs: dict, args, repeat: int) -> dict:
    """Seconds of ``repeat`` warm calls of each function, interleaved: one call of each per
    round, the order rotated every round (round r starts with the r-th function), so that
    no function always runs right after the same one (the caches it leaves)."""
    keys = list(fs)
    times = {k: [] for k in keys}
    for k in keys:
        fs[k](*args)
    for rnd in range(repeat):
        for k in keys[rnd % len(keys):] + keys[:rnd % len(keys)]:
            t0 = time.perf_counter()
            fs[k](*args)
            times[k].append(time.perf_counter() - t0)
    return times


def paired(times: dict, a: str, b: str) -> tuple[float, float, float]:
    """Median over rounds of ``a``'s call time over ``b``'s in the same round, and its 95%
    confidence interval (:func:`theano_lowmem.bench.median_ci`): ``(median, low, high)``."""
    ratios = [x / y for x, y in zip(times[a], times[b])]
    return (statistics.median(ratios),) + median_ci(ratios)


def fmt_paired(p: tuple[float, float, float]) -> str:
    return f"{p[0]:.3f} [{p[1]:.3f}-{p[2]:.3f}]"


def table(rows) -> str:
    head = ("| family | Apply | gc-on peak stock / ours | held gc-off stock / ours | "
            "held/peak | arena/lb (modelled) | alloc/call gc-off stock / ours | "
            "ops still allocating (ours) | call ms gc-on / gc-off / ours gc-off | "
            "ours / stock gc-off (paired) | ours / stock gc-on (paired) |")
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        ratio = r["held_ours"] / r["peak_ours"] if r["peak_ours"] else float("nan")
        frag = r["arena"] / r["arena_lb"] if r["arena_lb"] else float("nan")
        ms = r["ms"]
        lines.append(
            f"| {r['name']} | {r['nodes']} | {fmt_bytes(r['peak_stock'])} / "
            f"{fmt_bytes(r['peak_ours'])} | {fmt_bytes(r['held_stock'])} / "
            f"{fmt_bytes(r['held_ours'])} | {ratio:.2f} | {frag:.3f} | "
            f"{fmt_bytes(r['alloc_stock'])} / {fmt_bytes(r['alloc_ours'])} | "
            f"{', '.join(r['allocators']) or '-'} | {ms['stock_gc']:.2f} / "
            f"{ms['stock_nogc']:.2f} / {ms['ours_nogc']:.2f} | {fmt_paired(r['paired'])} | "
            f"{fmt_paired(r['paired_gc'])} |")
    return "\n".join(lines)


def overhead(name: str, size: str, repeat: int) -> str:
    """Median warm gc-off call (and bytes held after it) of one family: stock (gc on, the
    reference for allocation-heavy graphs, and gc off), ours without call-time plans, ours
    with plans and same-Type cells (arena off), ours with the arena."""
    case, args, _ = build(name, size)
    variants = [("stock cvm (gc on)", "cvm", "fast_run", {}),
                ("stock cvm_nogc", "cvm_nogc", "fast_run", {}),
                ("ours, no call-time plan", "cvm_lowmem_nogc", "fast_run+lowmem",
                 dict(lowmem_call_plan=False)),
                ("ours, plans + shared cells", "cvm_lowmem_nogc", "fast_run+lowmem",
                 dict(lowmem_arena="off")),
                ("ours, plans + arena", "cvm_lowmem_nogc", "fast_run+lowmem", {})]
    fs = {}
    for label, linker, opt, flags in variants:
        old = {k: getattr(theano.config, k) for k in flags}
        try:
            for k, v in flags.items():
                setattr(theano.config, k, v)
            fs[label] = case.compile(theano.Mode(linker=linker, optimizer=opt))
        finally:
            for k, v in old.items():
                setattr(theano.config, k, v)
    for f in fs.values():
        f(*args)
    times = rotated_times(fs, args, repeat)
    held = {k: _warm_measure(f, case, args).held for k, f in fs.items()}
    case.reset()
    return "\n".join(f"{k:<28s} {1e3 * statistics.median(v):8.3f} ms  held {fmt_bytes(held[k])}"
                      f"  / stock cvm_nogc (paired) {fmt_paired(paired(times, k, 'stock cvm_nogc'))}"
                      for k, v in times.items())


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="small", choices=sorted(nets.SIZES))
    ap.add_argument("--repeat", type=int, default=21)
    ap.add_argument("--families", default=",".join(list(DAGS) + list(NETS)))
    ap.add_argument("--out", default=None, help="also write the table to this file")
    ap.add_argument("--overhead", default=None, metavar="FAMILY",
                    help="only FAMILY's calls (median ms, held bytes): stock gc on and off, ours "
                         "gc off with and without call-time plans and the arena")
    a = ap.parse_args(argv)
    if a.overhead:
        print(overhead(a.overhead, a.size, a.repeat))
        return
    rows = [run(n, a.size, a.repeat) for n in a.families.split(",") if n]
    text = table(rows)
    print(text)
    if a.out:
        with open(a.out, "w") as fh:
            fh.write(f"<!-- python benchmarks/bench_arena.py --size {a.size} --repeat {a.repeat}"
                     f" --families {a.families} -->\n\n{text}\n")


if __name__ == "__main__":
    main()
