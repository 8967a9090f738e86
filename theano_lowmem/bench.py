"""The benchmark suite: stock Theano against theano_lowmem on the graph families.

``python -m theano_lowmem bench [--size tiny|small|medium|large] [--families a,b]
[--out DIR] [--plots]``  (``--families nets`` = every Lasagne-style net family)

For each family (:mod:`theano_lowmem.families`, and the Lasagne-style nets of
:mod:`theano_lowmem.families_nets`, whose inputs have every dimension unknown at
compile time) the same graph is compiled with both modes in alternating rounds (at least
COMPILE_ROUNDS, more for fast compiles: :func:`compile_more`) (stock first in odd rounds, ours first in even ones; same process, warm C cache, objects alive before a compile frozen
out of the cyclic collector; the fastest compile of each is shown, the ratio is the
median of the rounds' ratios after the first, in CPU seconds of the process, with its 95%
confidence interval (:func:`median_ci`), then in wall seconds):

* stock: ``theano.Mode(linker='cvm', optimizer='fast_run')``;
* ours: ``theano.Mode(linker='cvm_lowmem_nogc', optimizer='fast_run+lowmem')``.

Both are called from the same shared values (reset before each call); every
output and every updated shared value must be bit-identical (same dtype,
``np.array_equal``), else :class:`MismatchError`.  Then :func:`theano_lowmem.report.report`
gives the modelled peaks (memory model: Theano's order, ours, the optimum) and
the measured ones (tracemalloc), and each function is timed (best of N).
One table per run, plus the scheduling cost of the ``lowmem`` pass, plus for the
net families a table of compile time (issue 12: lowmem <= 1.10x stock) and
measured peaks; net families are also checked bit-identical at a second batch
size (and sequence length).
"""
from __future__ import annotations

import gc
import inspect
import math
import os
import platform
import statistics
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import theano
from theano.gof.vm import VM_Linker

from . import families as fam
from . import families_nets as nets
from .report import fmt_bytes, ratio, relink, report

STOCK_MODE = dict(linker="cvm", optimizer="fast_run")
#: compiles per mode and family (alternating; the fastest is shown, the ratio is Row.compile_ratio):
#: at least COMPILE_ROUNDS rounds, then more until stock's compiles add up to COMPILE_SECONDS
#: CPU seconds, at most COMPILE_ROUNDS_MAX rounds.  One compile of a sub-second graph varies
#: by -25%..+45% against the next (``benchmarks/bench_compile.py --rounds 13 --clock cpu
#: mlp_mnist_train``, 2026-12-02 16:07 UTC: paired ratios 0.77-1.46), so 7 pairs leave the
#: median ratio of a 0.15 s compile uncertain by about +-10%; 40 pairs by about +-4%.
COMPILE_ROUNDS = 8
COMPILE_SECONDS = 8.0
COMPILE_ROUNDS_MAX = 40
OURS_MODE = dict(linker="cvm_lowmem_nogc", optimizer="fast_run+lowmem")

#: size -> family -> builder keyword arguments.  ``tiny`` is for tests.  randwire stays at
#: <= 64 cells: Theano's GemmOptimizer is quadratic on its sums of dots (fast_run alone takes
#: about a minute at 100 cells).
SIZES: dict[str, dict[str, dict]] = {
    "tiny": {"branches": dict(n_branches=3, n=1000), "chain": dict(depth=3, width=16, batch=8),
             "mlp": dict(batch=8, sizes=(16, 32, 4)), "randwire_ws": dict(n=8, width=8, batch=8),
             "wide": dict(n_branches=20, n=64)},
    "small": {"mlp": dict(), "convnet": dict(), "lstm": dict(), "views_inplace": dict(),
              "chain": dict(depth=16, width=256, batch=256), "branches": dict(),
              "randwire_ws": dict(n=32, width=128, batch=128),
              "randwire_er": dict(n=32, width=128, batch=128),
              "inception": dict(), "resnet": dict(), "transformer": dict(),
              "wide": dict(n_branches=1000, n=4096)},
    "medium": {"mlp": dict(batch=256, sizes=(784, 1024, 1024, 10)),
               "convnet": dict(batch=32, image=32), "lstm": dict(steps=20, batch=32, n_hid=128),
               "views_inplace": dict(n=500), "chain": dict(), "branches": dict(n_branches=8),
               "randwire_ws": dict(n=48, width=256, batch=256),
               "randwire_er": dict(n=48, width=256, batch=256),
               "inception": dict(blocks=3, batch=16, channels=16, image=32),
               "resnet": dict(blocks=6, batch=16, channels=16, image=32),
               "transformer": dict(batch=8, seq=64, d=128, heads=4, ff=512, layers=2),
               "wide": dict(n_branches=2000, n=16384)},
    "large": {"mlp": dict(batch=512, sizes=(2048, 4096, 4096, 10)),
              "convnet": dict(batch=64, channels=(3, 32, 64), image=64),
              "lstm": dict(steps=50, batch=64, n_in=128, n_hid=256),
              "views_inplace": dict(n=1500), "chain": dict(depth=48, width=1024, batch=1024),
              "branches": dict(n_branches=16, n=4 * 10 ** 6),
              "randwire_ws": dict(n=64, width=512, batch=512),
              "randwire_er": dict(n=64, width=512, batch=512),
              "inception": dict(blocks=4, batch=32, channels=32, image=32),
              "resnet": dict(blocks=8, batch=32, channels=32, image=32),
              "transformer": dict(batch=16, seq=128, d=256, heads=8, ff=1024, layers=4),
              "wide": dict(n_branches=4000, n=65536)},
}
for _size, _spec in SIZES.items():
    _spec.update({n: nets.family_kwargs(n, _size) for n in nets.FAMILIES})
#: every family the suite knows: the graph families and the Lasagne-style nets
ALL_FAMILIES: dict[str, Callable] = {**fam.FAMILIES, **nets.FAMILIES}
#: names ``--families`` expands: ``nets`` = every net family, ``nets_train``/``nets_eval``
GROUPS = {"nets": list(nets.FAMILIES),
          "nets_train": [n for n in nets.FAMILIES if n.endswith("_train")],
          "nets_eval": [n for n in nets.FAMILIES if n.endswith("_eval")]}
#: issue 12: compile time with lowmem within this factor of stock on every family
COMPILE_RATIO_TARGET = 1.10
#: the ~1k-node Theano graph for the pass's cost, and the pure core graphs (nodes) per size
SCHED_THEANO = {"tiny": dict(n_branches=10, n=8), "small": dict(n_branches=333, n=64),
                "medium": dict(n_branches=333, n=64), "large": dict(n_branches=3333, n=64)}
SCHED_CORE = {"tiny": (200,), "small": (1000, 10000), "medium": (1000, 10000),
              "large": (1000, 10000, 30000)}
PLOT_FAMILIES = ("mlp", "branches", "randwire_ws", "transformer", "resnet")
REPEAT = {"tiny": 2, "small": 15, "medium": 7, "large": 3}


class MismatchError(AssertionError):
    """theano_lowmem changed a result: outputs or updated shared values differ from stock."""


@dataclass
class Row:
    """One family's numbers (bytes, seconds)."""

    family: str
    nodes: int
    compile_stock: float
    compile_ours: float
    schedule_s: float
    pass_s: float
    method: str
    modelled: dict
    measured: dict
    call: dict
    identical: bool
    report: object = field(repr=False, default=None)
    compile_runs: dict = field(default_factory=dict)   # every compile time, per mode
    compile_runs_cpu: dict = field(default_factory=dict)   # the same compiles' CPU seconds
    lowmem_warnings: list = field(default_factory=list)   # the pass's / linker's fallbacks
    call_plan: dict | None = None                      # issue 10 (see call_plan_figures)
    checked: str = "example inputs"                    # what identical covers
    calls_made: int = 0                                # calls of the compiled lowmem function

    @property
    def compile_ratio(self) -> float:
        """Median over the rounds after the first of ours / stock of the same round, in CPU
        seconds of this process (the two compiles run back to back, stock first in odd
        rounds and ours first in even ones); the first round pays the C cache's loading.
        Sub-second compiles vary by +-20% from one compile to the next here (the same
        stock mode compiled twice in a row: 146 vs 118 ms min on mlp_mnist_eval), so a
        ratio of the two minima is dominated by one lucky compile; paired ratios are not.
        CPU seconds, because wall seconds also count whatever else the machine runs:
        ``benchmarks/bench_compile.py --rounds 15`` with two other jobs on the 2 cores
        (2026-12-02 13:05-13:10 UTC) gave paired wall ratios of 0.91-1.27 on resnet_sd_eval
        (median 1.13), and CPU ratios of 0.79-1.12 (median 1.02)."""
        return self._paired(self.compile_runs_cpu or self.compile_runs)

    @property
    def compile_ratio_wall(self) -> float:
        """:attr:`compile_ratio` in wall-clock seconds."""
        return self._paired(self.compile_runs)

    @property
    def compile_ci(self) -> tuple[float, float] | None:
        """95% confidence interval of :attr:`compile_ratio` (:func:`median_ci` of the paired
        ratios), or None without at least two pairs."""
        pairs = self._pairs(self.compile_runs_cpu or self.compile_runs)
        return median_ci(pairs) if len(pairs) >= 2 else None

    @staticmethod
    def _pairs(runs: dict) -> list[float]:
        s, o = runs.get("stock", []), runs.get("ours", [])
        return [b / a for a, b in list(zip(s, o))[1:] if a > 0]

    def _paired(self, runs: dict) -> float:
        pairs = self._pairs(runs)
        if not pairs:
            return self.compile_ours / self.compile_stock
        return statistics.median(pairs)

    def compile_cell(self) -> str:
        """``'1.03x cpu [0.98-1.07], 1.05x wall'`` (the bracket: :attr:`compile_ci`)."""
        ci = self.compile_ci
        band = f" [{ci[0]:.2f}-{ci[1]:.2f}]" if ci else ""
        return f"{self.compile_ratio:.2f}x cpu{band}, {self.compile_ratio_wall:.2f}x wall"


def progress(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _results(f, case, args) -> list:
    case.reset()
    outs = f(*args)
    outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
    vals = [np.array(o, copy=True) for o in outs]
    vals += [np.array(var.get_value(borrow=False), copy=True) for var, _ in case.shared]
    case.reset()
    return vals


def check_identical(name: str, ref: Sequence, got: Sequence, what: str) -> None:
    """Raise :class:`MismatchError` unless every array is equal with the same dtype."""
    if len(ref) != len(got):
        raise MismatchError(f"{name}: {what} returned {len(got)} values, stock {len(ref)}")
    for i, (a, b) in enumerate(zip(ref, got)):
        if a.dtype != b.dtype or a.shape != b.shape or not np.array_equal(a, b, equal_nan=True):
            diff = np.max(np.abs(a.astype(float) - b.astype(float))) if a.shape == b.shape else "shape"
            raise MismatchError(f"{name}: {what} differs from stock at value {i} "
                                f"(dtypes {a.dtype}/{b.dtype}, shapes {a.shape}/{b.shape}, "
                                f"max abs diff {diff})")


def best_time(f, args, case, repeat: int) -> float:
    f(*args)                                   # warm (first call allocates cells)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        f(*args)
        times.append(time.perf_counter() - t0)
    case.reset()
    return min(times)


def call_plan_figures(f) -> dict | None:
    """The call-time plan (issue 10) of ``f``'s last call: exact-size modelled figures.

    ``None`` while call-time planning has not landed (or ``f`` has no plan); else
    :meth:`theano_lowmem.callplan.Plan.to_dict` (``peak`` = modelled gc-on peak of the
    executed order with exact sizes, ``exact``, ``held``, ``seconds``, ...).  The net
    table shows ``peak`` next to the measured gc-on peak.
    """
    try:
        from .callplan import planned_vm
    except ImportError:
        return None
    pv = planned_vm(f)
    plan = getattr(pv, "current", None) if pv is not None else None
    if plan is None or not hasattr(plan, "to_dict"):
        return None
    d = plan.to_dict()
    d.pop("signature", None)          # can hold raw bytes of values read by value
    d["n_plans"] = len(getattr(pv, "plans", ()))
    return d


def second_args(case, args: Sequence) -> list | None:
    """Inputs at another batch size (and sequence length): for builders whose
    ``make_args`` takes ``batch`` (the net families); ``None`` otherwise."""
    params = inspect.signature(case.make_args).parameters
    if "batch" not in params:
        return None
    batch = len(args[-1]) if len(args) > 1 else args[0].shape[0]
    kw = dict(batch=batch + 3)
    if "steps" in params:
        kw["steps"] = args[0].shape[0] + 4
    return case.make_args(**kw)


def compile_more(rounds_done: int, stock_cpu: Sequence[float]) -> bool:
    """Whether :func:`run_family` compiles another round: until ``COMPILE_ROUNDS`` rounds,
    then while stock's compiles add up to less than ``COMPILE_SECONDS`` CPU seconds, never
    beyond ``COMPILE_ROUNDS_MAX``."""
    if rounds_done < COMPILE_ROUNDS:
        return True
    return rounds_done < COMPILE_ROUNDS_MAX and sum(stock_cpu) < COMPILE_SECONDS


def median_ci(xs: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Distribution-free confidence interval of the median of ``xs``: the order statistics
    ``(x_(k), x_(n+1-k))`` with the largest ``k`` such that ``P(Binomial(n, 1/2) < k) <=
    (1 - level) / 2`` (the sign test's interval; no assumption on the distribution).  With
    too few values for that level, ``(min, max)``.

    >>> median_ci([5, 1, 4, 2, 3, 9, 8, 7, 6, 10])     # n = 10: x_(2), x_(9), 97.9%
    (2, 9)
    """
    v = sorted(xs)
    n = len(v)
    if not n:
        raise ValueError("median_ci of no values")
    tail, k, below = (1 - level) / 2, 0, 0.0
    while k < n // 2:
        below += math.comb(n, k) / 2 ** n           # P(Binomial(n, 1/2) <= k)
        if below > tail:
            break
        k += 1
    k = max(k, 1)
    return v[k - 1], v[n - k]


def _compile_timed(case, mode: dict, record: list | None = None):
    # the heap grows with every function kept alive, and a full cyclic collection walks all
    # of it: whichever compile a gen-2 collection happens to fall into pays for the whole
    # heap (+-0.5 s at inception_net_train, measured).  Objects alive before the compile are
    # frozen (gc.freeze: never scanned), so each compile pays only for what it creates.
    # Returns (function, wall seconds, CPU seconds of this process): the ratio is taken on
    # CPU seconds, which do not count the time other processes take from this one.
    gc.collect()
    gc.freeze()
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            f = case.compile(theano.Mode(**mode))
        t, c = time.perf_counter() - t0, time.process_time() - c0
    finally:
        gc.unfreeze()
    for w in caught:
        if record is not None and "theano_lowmem" in str(w.message):
            record.append(str(w.message))
        elif "theano_lowmem" not in str(w.message):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return f, t, c


def order_info(f) -> dict:
    for ft in f.maker.fgraph._features:
        if type(ft).__name__ == "OrderFeature":
            return dict(ft.info)
    return {}


def run_family(name: str, builder: Callable, kwargs: dict, *, repeat: int, time_budget: float,
               plots: bool) -> Row:
    """Compile, check, report and time one family."""
    case = builder(**kwargs)
    # stock, ours, ours, stock...: the first compile may pay g++ for ops missing from the
    # cache, and sub-second compiles vary by -25%..+45%, so each mode is compiled in
    # alternation in the same process, COMPILE_ROUNDS times or more (compile_more); the
    # fastest one is shown, the ratio is the median of the rounds' ratios (Row.compile_ratio)
    runs: dict = {"stock": [], "ours": []}
    cpu_runs: dict = {"stock": [], "ours": []}
    lowmem_warnings: list = []
    rnd = 0
    while compile_more(rnd, cpu_runs["stock"]):
        rnd += 1
        # stock first in odd rounds, ours first in even ones: whichever compiles second
        # in a pair finds the caches the first one warmed (ABBA, so that cancels out)
        for which in (("stock", "ours") if rnd % 2 else ("ours", "stock")):
            progress(f"{name}: compiling {which} (round {rnd})")
            if which == "stock":
                f_stock, t, c = _compile_timed(case, STOCK_MODE)
            else:
                lowmem_warnings = []         # the last compile's (every compile warns alike)
                f_ours, t, c = _compile_timed(case, OURS_MODE, lowmem_warnings)
            runs[which].append(t)
            cpu_runs[which].append(c)
    t_stock, t_ours = min(runs["stock"]), min(runs["ours"])
    args = case.make_args()
    progress(f"{name}: checking results")
    f_nogc = relink(f_stock, VM_Linker(use_cloop=True, allow_gc=False))[0]
    ref = _results(f_stock, case, args)
    check_identical(name, ref, _results(f_ours, case, args), "theano_lowmem (cvm_lowmem_nogc)")
    check_identical(name, ref, _results(f_ours, case, args), "theano_lowmem, second call")
    check_identical(name, ref, _results(f_nogc, case, args), "stock cvm_nogc")
    checked = "example inputs"
    args2 = second_args(case, args)
    if args2 is not None:     # another batch size (sequence length), then the first again
        check_identical(name, _results(f_stock, case, args2), _results(f_ours, case, args2),
                        "theano_lowmem at a second input shape")
        check_identical(name, ref, _results(f_ours, case, args), "theano_lowmem, back to the first shape")
        checked = "2 input shapes: " + ", ".join(
            "x".join(map(str, a.shape)) for a in (args[0], args2[0]))
    progress(f"{name}: report (modelled + measured)")
    case.reset()
    rep = report(f_ours, *args, stock=f_stock, time_budget=time_budget, name=name,
                 trace_steps=plots)
    progress(f"{name}: timing calls")
    call = dict(stock=best_time(f_stock, args, case, repeat),
                stock_nogc=best_time(f_nogc, args, case, repeat),
                ours=best_time(f_ours, args, case, repeat))
    case.reset()
    f_ours(*args)                        # the call-time plan (issue 10) is the example inputs'
    case.reset()
    calls_made = 2 + 2 * (args2 is not None) + (1 + repeat) + 1     # checks, timing, last
    info = order_info(f_ours)
    return Row(name, rep.n_nodes, t_stock, t_ours,
               float(info.get("schedule_seconds", 0.0)), float(info.get("pass_seconds", 0.0)),
               str(info.get("method", "-")), rep.modelled, rep.measured, call, True, rep,
               compile_runs=runs, compile_runs_cpu=cpu_runs,
               lowmem_warnings=sorted(set(lowmem_warnings)),
               call_plan=call_plan_figures(f_ours), checked=checked, calls_made=calls_made)


def sched_cost(size: str, time_budget: float) -> list[dict]:
    """Scheduling cost: the lowmem pass on a ~1k-node Theano graph, and the core scheduler
    on pure core graphs (no Theano) of 1k and 10k nodes."""
    from .core import randgraphs
    from .core.schedule import schedule
    rows = []
    # wide, not randwire: Theano's own GemmOptimizer is quadratic on randwire's sums of
    # dots (minutes at 300 cells, tensor/blas.py:1413), which would swamp what we measure
    kw = SCHED_THEANO[size]
    case = fam.wide(**kw)
    progress(f"scheduling cost: wide n_branches={kw['n_branches']} in Theano")
    case.compile(theano.Mode(**OURS_MODE))       # warm-up: g++ for ops missing from the cache
    t0 = time.perf_counter()
    f = case.compile(theano.Mode(**OURS_MODE))
    t_comp = time.perf_counter() - t0
    info = order_info(f)
    f(*case.make_args())                          # the first call plans (issue 10)
    case.reset()
    plan = call_plan_figures(f)
    rows.append(dict(graph=f"Theano wide (n_branches={kw['n_branches']})",
                     nodes=len(f.maker.fgraph.apply_nodes),
                     schedule_ms=1e3 * info["schedule_seconds"] if "schedule_seconds" in info
                     else None,
                     pass_ms=1e3 * info["pass_seconds"] if "pass_seconds" in info else None,
                     compile_s=t_comp, plan_ms=_plan_ms(plan, "total"),
                     plan_schedule_ms=_plan_ms(plan, "schedule"),
                     method=(plan or {}).get("method") or info.get("method", "-")))
    for n in SCHED_CORE[size]:
        progress(f"scheduling cost: core erdos_renyi n={n}")
        g = randgraphs.erdos_renyi(n, seed=0)
        base = g.topological_order()
        t0 = time.perf_counter()
        s = schedule(g, baseline=base, time_budget=time_budget)
        rows.append(dict(graph=f"core erdos_renyi (n={n}, no Theano)", nodes=g.n_nodes,
                         schedule_ms=1e3 * (time.perf_counter() - t0), pass_ms=None, compile_s=None,
                         plan_ms=None, plan_schedule_ms=None,
                         method=f"{s.method}, peak {s.peak / s.baseline_peak:.2f}x of Kahn order"))
    return rows


# ------------------------------------------------------------------ tables
def _cell(a, b, fmt=fmt_bytes) -> str:
    return f"{fmt(a)} / {fmt(b)}" + (f" ({ratio(b, a)})" if a else "")


def _ms(x: float) -> str:
    return f"{1e3 * x:.2f}"


def _fmt_ms(v: float | None) -> str:
    return "-" if v is None or v != v else format(v, ".1f")


def main_table(rows: Sequence[Row]) -> str:
    head = ("| family | nodes | compile s stock / ours (ratio cpu, wall) | first-call plan ms | modelled peak stock / ours (ratio) "
            "| modelled optimum | measured peak gc-on stock / ours (ratio) "
            "| held gc-off stock / arena (ratio) | call ms stock gc-on / stock gc-off / ours (ours÷stock) "
            "| identical |")
    out = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        m, me, c = r.modelled, r.measured, r.call
        opt = fmt_bytes(m["optimum"]) + (" (proven)" if m["optimal"] else
                                         f" (best found, ≥ {fmt_bytes(m['lower_bound'])})")
        out.append(
            f"| {r.family} | {r.nodes} | {r.compile_stock:.2f} / {r.compile_ours:.2f} "
            f"({r.compile_cell()}) "
            f"| {_fmt_ms(_plan_ms(r.call_plan, 'total'))} | {_cell(m['theano'], m['ours'])} | {opt} "
            f"| {_cell(me['stock']['peak'], me['ours']['peak'])} "
            f"| {_cell(me['stock_nogc']['held'], me['ours_nogc']['held'])} "
            f"| {_ms(c['stock'])} / {_ms(c['stock_nogc'])} / {_ms(c['ours'])} "
            f"({c['ours'] / c['stock']:.2f}x) | {'yes' if r.identical else 'NO'} |")
    return "\n".join(out)


def _plan_cell(r: Row) -> str:
    """Issue 10's column: modelled gc-on peak of the executed call-time plan (exact sizes)
    against the measured gc-on peak of ours; a dash until call-time planning lands."""
    p = r.call_plan
    if not p or "peak" not in p:
        return "—"
    meas = r.measured["ours"]["peak"]
    exact = "exact" if p.get("exact") else "guessed"
    return f"{fmt_bytes(p['peak'])} / {fmt_bytes(meas)} ({ratio(p['peak'], meas)}, {exact})"


def _lowmem_cell(r: Row) -> str:
    if r.lowmem_warnings:
        return "NOT PLANNED: " + "; ".join(w.replace("|", "/")[:160] for w in r.lowmem_warnings)
    if r.call_plan and "method" in r.call_plan:
        return (f"call-time: {r.call_plan['method']} "
                f"({r.call_plan.get('n_plans', '?')} plan(s) after {r.calls_made} calls)")
    return f"compile-time: {r.method}"


def nets_table(rows: Sequence[Row]) -> str:
    """Net families (every input dim unknown at compile time): compile time, measured peaks."""
    head = ("| family | Apply nodes | compile s stock / lowmem (ratio cpu, wall) | measured peak gc-on "
            "stock / lowmem (ratio) | lowmem plan (compile time) | call-time plan: modelled / "
            "measured peak gc-on (issue 10) | identical |")
    out = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        me = r.measured
        flag = " **> target**" if r.compile_ratio > COMPILE_RATIO_TARGET else ""
        out.append(
            f"| {r.family} | {r.nodes} | {r.compile_stock:.2f} / {r.compile_ours:.2f} "
            f"({r.compile_cell()}{flag}) "
            f"| {_cell(me['stock']['peak'], me['ours']['peak'])} "
            f"| {_lowmem_cell(r)} | {_plan_cell(r)} "
            f"| {'yes' if r.identical else 'NO'} ({r.checked}) |")
    worst = max(rows, key=lambda r: r.compile_ratio, default=None)
    if worst is not None:
        over = [r.family for r in rows if r.compile_ratio > COMPILE_RATIO_TARGET]
        out.append("")
        out.append(f"Compile time lowmem / stock: worst {worst.compile_ratio:.2f}x ({worst.family}); "
                   f"target <= {COMPILE_RATIO_TARGET:.2f}x: "
                   + (f"missed on {', '.join(over)}" if over else "met on every family"))
    return "\n".join(out)


def _plan_ms(plan: dict | None, key: str) -> float | None:
    secs = (plan or {}).get("seconds") or {}
    return 1e3 * secs[key] if key in secs else None


def sched_table(rows: Sequence[Row], cost: Sequence[dict]) -> str:
    """Scheduling cost: the ``lowmem`` pass at compile time and the first call's plan (the
    scheduler runs there once the sizes are known: issue 10), per family and for the
    ``cost`` rows of :func:`sched_cost`."""
    out = ["| graph | nodes | lowmem pass ms (schedule ms) | first-call plan ms (schedule ms) "
           "| plan ms per 1,000 nodes | plan % of compile | method |",
           "|---|---|---|---|---|---|---|"]
    items = [dict(graph=r.family, nodes=r.nodes, schedule_ms=1e3 * r.schedule_s,
                  pass_ms=1e3 * r.pass_s, compile_s=r.compile_ours,
                  plan_ms=_plan_ms(r.call_plan, "total"),
                  plan_schedule_ms=_plan_ms(r.call_plan, "schedule"),
                  method=(r.call_plan or {}).get("method") or r.method) for r in rows]

    for d in [*items, *cost]:
        plan = d.get("plan_ms")
        pct = f"{100 * plan / 1e3 / d['compile_s']:.1f}%" if plan is not None and \
            d["compile_s"] else "-"
        per_k = _fmt_ms(1000 * plan / d["nodes"]) if plan is not None and d["nodes"] else "-"
        out.append(f"| {d['graph']} | {d['nodes']} | {_fmt_ms(d['pass_ms'])} "
                   f"({_fmt_ms(d['schedule_ms'])}) | {_fmt_ms(plan)} "
                   f"({_fmt_ms(d.get('plan_schedule_ms'))}) "
                   f"| {per_k} | {pct} | {d['method']} |")
    return "\n".join(out)


def machine_info() -> dict:
    try:
        ldflags = theano.config.blas.ldflags
    except AttributeError:
        ldflags = "?"
    return dict(cpus=os.cpu_count(), python=platform.python_version(), numpy=np.__version__,
                theano=theano.__version__, blas_ldflags=ldflags, machine=platform.machine(),
                lowmem_time_budget=getattr(theano.config, "lowmem_time_budget", None))


LEGEND = """\
* **modelled** = the memory model (`theano_lowmem.core.memory.simulate`) with the sizes of the example
  inputs: live intermediate bytes at the worst step; *stock* = the order Theano's C VM runs, *ours* = the
  order a lowmem call runs (the call-time plan for these shapes; else the order the `lowmem` pass
  pinned); the optimum is exact search within the time budget (*proven*, or the
  best order found with a proven lower bound).
* **measured** = `tracemalloc` around a real warm call (numpy buffers incl. C ops, plus a few KB of Python
  objects). *peak gc-on*: stock `cvm` vs ours relinked with `cvm_lowmem` (gc on). *held gc-off*: bytes left in
  intermediate storage cells after a call with `allow_gc=False`: stock `cvm_nogc` vs our arena
  (`cvm_lowmem_nogc`), i.e. what gc-off functions keep between calls.
* **call ms**: best of N warm calls; stock gc-on (`cvm`), stock gc-off (`cvm_nogc`), ours (`cvm_lowmem_nogc`).
* **first-call plan ms**: the plan ours made at its call with these inputs' shapes (all phases; see Scheduling cost).
* **identical**: every output and every updated shared value of ours equals stock's bit for bit (checked
  before anything is measured; the run stops on any difference).
* **Scheduling cost**: the `lowmem` pass at compile time (it schedules only when no call-time plan
  will: with call-time plans its columns are `-` or near 0) and the plan the first call makes with the
  real sizes (model, schedule, arena, VM; the scheduler's budget grows with the nodes, capped by flag
  `lowmem_time_budget`), per 1,000 Apply nodes and as a share of the compile (issue 10's targets:
  <= 100 ms per 1,000 nodes, <= 10%). The core rows time the scheduler alone on pure graphs.
"""


NETS_LEGEND = f"""\
* Lasagne-style nets (:mod:`theano_lowmem.families_nets`): `T.tensor4('inputs')` / `T.tensor3` /
  `T.matrix` and `T.ivector('targets')`, float32, no test values; batch size (and sequence length) exist
  only at call time. `_train`: loss, `T.grad`, SGD updates (and batch-norm running statistics);
  `_eval`: deterministic forward pass, `[loss, accuracy]`.
* **compile s**: `theano.function` wall time, stock (`cvm`, `fast_run`) and lowmem (`cvm_lowmem_nogc`,
  `fast_run+lowmem`), each compiled in alternating rounds (at least {COMPILE_ROUNDS}, `COMPILE_ROUNDS`; more, up to {COMPILE_ROUNDS_MAX}, until stock's compiles add up to {COMPILE_SECONDS:g} CPU seconds, `COMPILE_SECONDS`) in this process (stock first in odd rounds, ours first in even ones; warm C
  cache, objects alive before a compile frozen out of the cyclic collector), the fastest shown; the
  ratio is the median, over the rounds after the first, of lowmem / stock of the same round (in brackets its 95% confidence interval, the sign test's, distribution-free), in CPU seconds of the
  process (`time.process_time`: time other processes take is not counted), then the same in wall
  seconds. Issue 12 target: CPU ratio <= {COMPILE_RATIO_TARGET:.2f}.
* **measured peak gc-on**: tracemalloc around a warm call, stock `cvm` vs ours with `cvm_lowmem`.
* **lowmem plan (compile time)**: the method of the `lowmem` pass, from sizes guessed at compile time
  (`lowmem_unknown_dim`), or NOT PLANNED with the fallback warning the pass or linker gave.
* **call-time plan (issue 10)**: the modelled gc-on peak of the plan made at the call with exact sizes,
  against the measured one; a dash until call-time planning lands.
* **identical**: outputs and updated shared values bit-identical to stock, at the example inputs and at a
  second batch size (sequence length), then the first again.
"""


def run(size: str = "small", families: Sequence[str] | None = None, out: str | None = None,
        plots: bool = False, time_budget: float = 2.0, command: str | None = None) -> list[Row]:
    """Run the suite, print the tables to stdout (progress on stderr), optionally write ``out``.

    Raises
    ------
    MismatchError
        If any family's results differ from stock Theano's.
    """
    spec = SIZES[size]
    names = [m for n in (families or spec) for m in GROUPS.get(n, [n])]
    unknown = [n for n in names if n not in ALL_FAMILIES]
    if unknown:
        raise ValueError(f"unknown families {unknown}; known: {sorted(ALL_FAMILIES)} "
                         f"and the groups {sorted(GROUPS)}")
    rows = []
    t_start = time.perf_counter()
    for i, name in enumerate(names, 1):
        progress(f"({i}/{len(names)}) {name} {spec.get(name, {})}")
        rows.append(run_family(name, ALL_FAMILIES[name], spec.get(name, {}), repeat=REPEAT[size],
                               time_budget=time_budget, plots=plots and out is not None))
    cost = sched_cost(size, float(getattr(theano.config, "lowmem_time_budget", 1.0)))
    progress(f"done in {time.perf_counter() - t_start:.0f} s")
    t1, t2 = main_table(rows), sched_table(rows, cost)
    net_rows = [r for r in rows if r.family in nets.FAMILIES]
    t3 = nets_table(net_rows) if net_rows else ""
    print(t1 + "\n\nScheduling cost\n\n" + t2
          + (f"\n\nNets: every input dimension unknown at compile time\n\n{t3}" if t3 else ""))
    if out:
        os.makedirs(out, exist_ok=True)
        pngs = []
        if plots:
            for r in rows:
                if r.family in PLOT_FAMILIES or len(rows) <= 3:
                    pngs.append(r.report.plot(os.path.join(out, f"{r.family}.png")))
        info = machine_info()
        md = [f"# theano_lowmem benchmark ({size})", "",
              f"Command: `{command or 'python -m theano_lowmem bench --size ' + size}`  ",
              f"Date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}  ",
              "Machine: " + ", ".join(f"{k}={v}" for k, v in info.items()), "",
              "All numbers of one table come from one run.", "", LEGEND, "## Results", "", t1, "",
              "## Scheduling cost", "", t2, ""]
        if t3:
            md += ["## Nets: every input dimension unknown at compile time", "", NETS_LEGEND, t3, ""]
        if pngs:
            md += ["## Plots", ""] + [f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in pngs]
        with open(os.path.join(out, "results.md"), "w", encoding="utf-8") as fh:
            fh.write("\n".join(md) + "\n")
        progress(f"wrote {os.path.join(out, 'results.md')} and {len(pngs)} plot(s)")
    return rows
