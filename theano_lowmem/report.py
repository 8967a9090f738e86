"""What a compiled function costs in memory: modelled peaks per order, measured calls.

:func:`report` answers, for a compiled function and example inputs:

* MODELLED (the memory model :func:`theano_lowmem.core.memory.simulate`, with
  the sizes the example inputs give): the peak of the order stock Theano runs,
  of ours, and the optimum (proven, or the best found with a proven lower
  bound), plus the biggest values live at each peak;
* MEASURED (``tracemalloc`` around real calls, :func:`theano_lowmem.measure.measure_call`):
  the call's peak with gc on, stock against ours, and with gc off the bytes
  left in the storage cells, the number of cells and the arrays a warm call
  allocates anew.

How the variants are built (all share ``f``'s input containers, so shared
variables are the same; their values are saved before and restored after):
every variant relinks a clone of ``f``'s *optimized* graph (no re-optimization),
with a fresh ``DestroyHandler``.  "stock" is that clone linked by Theano's own
``VM_Linker(use_cloop=True)`` (the ``cvm``/``cvm_nogc`` linkers) with no pinned
order: the lowmem pass only pins an order and never rewrites the graph, so
this is what ``Mode(optimizer='fast_run')`` would run (``stock=`` overrides it
with a function compiled by the caller).  "ours" is the clone with our order
pinned (:func:`theano_lowmem.opt.attach_order`) linked by
:class:`~theano_lowmem.storage_reuse.LowMemLinker`.  Our order is the one the
lowmem pass pinned on ``f`` when there is one, else :func:`core.schedule.schedule`
run now on the concrete sizes.
"""
from __future__ import annotations

import copy
import json
import time
import tracemalloc
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np
from theano.compile.function_module import fgraph_updated_vars, infer_reuse_pattern
from theano.compile.sharedvalue import SharedVariable
from theano.gof.vm import VM_Linker

from .core.memory import keep_all_bytes, simulate
from .core.schedule import exact_schedule, schedule
from .callplan import planned_vm
from .executed import NotReplicable, cvm_order, is_lazy_node, traced_function
from .measure import _owner, measure_call
from .model import model_for
from .order import STAMP_ATTR, attach_order, planned_order
from .storage_reuse import LowMemLinker, ensure_destroy_handler

MODELLED = "MODELLED (memory model, sizes from the example inputs)"
MEASURED = "MEASURED (tracemalloc around real calls)"


# ------------------------------------------------------------------ variants
def relink(f, linker, order: Sequence[Any] | None = None):
    """``f``'s optimized graph relinked by ``linker``, optionally with ``order`` pinned.

    The graph is cloned (no re-optimization, fresh ``DestroyHandler``, no
    OrderFeature unless ``order`` is given: a list of ``f.maker.fgraph``'s
    Apply nodes).  The new function shares ``f``'s input containers, so its
    updates act on the same shared variables.  Returns ``(g, equiv)`` with
    ``equiv`` mapping ``f``'s variables and nodes to the clone's.

    Examples
    --------
    >>> import numpy as np, theano, theano.tensor as T
    >>> x = T.vector('x'); f = theano.function([x], T.exp(x).sum())
    >>> g, _ = relink(f, VM_Linker(use_cloop=True, allow_gc=False))
    >>> float(g(np.zeros(3)))
    3.0
    """
    fg = f.maker.fgraph
    clone, equiv = fg.clone_get_equiv(check_integrity=False, attach_feature=False)
    ensure_destroy_handler(clone)
    if order is not None:
        attach_order(clone, [equiv[n] for n in order])
    else:
        # Apply.clone copies the tag (graph.py:208), so the clone's nodes carry f's order
        # stamp, and our linker would pin it again (order.carry_order, for Function.copy):
        # "no OrderFeature" means none, so the stamps go (from the clone's own tag copies)
        for node in clone.apply_nodes:
            node.tag.__dict__.pop(STAMP_ATTR, None)
    maker = copy.copy(f.maker)
    maker.fgraph = clone
    n_out = len(maker.outputs)
    # as FunctionMaker.__init__ (function_module.py:1557-1571): updates are never borrowed
    no_borrow = [o for i, o in enumerate(clone.outputs) if i >= n_out or not maker.outputs[i].borrow]
    maker.linker = linker.accept(clone, no_recycling=infer_reuse_pattern(clone, no_borrow))
    maker.linker.accept_var_updates(fgraph_updated_vars(clone, maker.inputs))
    return maker.create(list(f.input_storage), trustme=True), equiv


class _SharedValues:
    """Save the shared inputs' values of ``f`` and put them back (``restore``)."""

    def __init__(self, f):
        self.saved = [(c, np.array(c.data, copy=True) if isinstance(c.data, np.ndarray)
                       else copy.deepcopy(c.data))
                      for inp, c in zip(f.maker.inputs, f.input_storage)
                      if inp.implicit or isinstance(inp.variable, SharedVariable)]

    def restore(self) -> None:
        for c, val in self.saved:
            c.data = np.array(val, copy=True) if isinstance(val, np.ndarray) else copy.deepcopy(val)


def _intermediate_cells(g) -> dict:
    fg = g.maker.fgraph
    skip = set(fg.inputs) | set(fg.outputs)
    return {v: c for v, c in g.fn.storage_map.items() if v.owner is not None and v not in skip}


def _cell_count(g) -> int:
    return len({id(c) for c in _intermediate_cells(g).values()})


def _array_ids(g) -> set[int]:
    return {id(_owner(c[0])) for c in _intermediate_cells(g).values() if isinstance(c[0], np.ndarray)}


# ------------------------------------------------------------------ report
@dataclass
class Report:
    """What :func:`report` found.  Bytes are ints; ``None`` when not measured.

    ``modelled``: peaks of the orders (``theano``, ``ours``, ``rescheduled``,
    ``optimum``, ``lower_bound``, ``optimal``, ``keep_all``...).  ``measured``:
    per variant (``stock``, ``ours``, ``stock_nogc``, ``ours_nogc``) ``peak``,
    ``retained``, ``held``, ``cells``, ``new_arrays`` (intermediate arrays a warm
    gc-off call allocated anew).  ``orders``: node ids of the model (node ``i``
    is ``model.nodes[i]``).  ``series``: per-step bytes for the plot.

    Examples
    --------
    >>> import numpy as np, theano, theano.tensor as T
    >>> x = T.vector('x'); f = theano.function([x], (T.exp(x) + T.log1p(x ** 2)).sum())
    >>> r = report(f, np.ones(1000), measure=False)
    >>> r.modelled['ours'] <= r.modelled['theano']
    True
    >>> {'modelled', 'measured'} <= set(r.to_dict())
    True
    """

    name: str
    n_nodes: int
    n_values: int
    exact_sizes: bool
    modelled: dict
    measured: dict
    top_live: dict
    orders: dict
    series: dict
    notes: list = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    plans: dict = field(default_factory=dict)   # call-time plans of f, per signature

    def to_dict(self) -> dict:
        """Plain JSON-serialisable dict."""
        return json.loads(json.dumps(asdict(self), default=_jsonable))

    def to_json(self, **kw) -> str:
        return json.dumps(self.to_dict(), **kw)

    def plot(self, path: str, **kw) -> str:
        """Live bytes per step, Theano's order against ours, to a PNG (see :mod:`.plot`)."""
        from .plot import plot_report
        return plot_report(self, path, **kw)

    def __str__(self) -> str:
        m, me = self.modelled, self.measured
        lines = [f"theano_lowmem report: {self.name}  ({self.n_nodes} nodes, {self.n_values} values"
                 f"{'' if self.exact_sizes else ', some sizes estimated'})", "",
                 MODELLED + ":"]
        opt_label = "optimum (proven)" if m["optimal"] else \
            f"best found (optimum >= {fmt_bytes(m['lower_bound'])})"
        rows = [("Theano's order (stock CVM)", m["theano"], ""),
                (f"ours ({m['ours_source']}, {m['ours_method']})", m["ours"], ""),
                (opt_label, m["optimum"], ""),
                ("gc off, no sharing (keep all)", m["keep_all"], "")]
        if m.get("rescheduled") is not None and m["rescheduled"] != m["ours"]:
            rows.insert(2, ("rescheduled now on these sizes", m["rescheduled"], ""))
        for label, val, _ in rows:
            lines.append(f"  {label:<58s} {fmt_bytes(val):>10s}  {ratio(val, m['theano'])}")
        if me:
            lines += ["", MEASURED + ":",
                      f"  {'':<34s} {'stock':>10s} {'ours':>10s}  ours/stock"]
            for label, key, a, b in (("peak of a call, gc on", "peak", "stock", "ours"),
                                     ("gc off: bytes held in cells", "held", "stock_nogc", "ours_nogc"),
                                     ("gc off: peak of a warm call", "peak", "stock_nogc", "ours_nogc")):
                x, y = me[a][key], me[b][key]
                lines.append(f"  {label:<34s} {fmt_bytes(x):>10s} {fmt_bytes(y):>10s}  {ratio(y, x)}")
            for label, key in (("gc off: intermediate cells", "cells"),
                               ("gc off: new arrays per warm call", "new_arrays")):
                lines.append(f"  {label:<34s} {me['stock_nogc'][key]:>10d} {me['ours_nogc'][key]:>10d}")
        for which in ("theano", "ours"):
            lines += ["", f"Biggest values live at the peak of {which} order "
                          f"(step {self.modelled[which + '_peak_step']}, MODELLED):"]
            lines += [f"  {fmt_bytes(t['bytes']):>10s}  {t['label']}" for t in self.top_live[which]]
        lines += _plans_lines(self.plans)
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def _plans_section(pv, measured_peak) -> dict:
    """The call-time plans of ``f`` (per signature) and the state of its plan cache."""
    if pv is None:
        return {}
    plans = []
    for p in pv.plans.values():
        d = p.to_dict()
        d["current"] = p is pv.current
        d["measured_peak"] = measured_peak if p is pv.current else None
        plans.append(d)
    return dict(cache=dict(size=len(pv.plans), capacity=pv._max, hits=pv.hits,
                           misses=pv.misses, evicted=pv.evicted, failed=pv.failed,
                           arena_off=pv._planner.arena_off, call_path=_call_path()),
                plans=plans)


def _call_path() -> str:
    """How a call with a cached signature runs: the C proxy, or the Python one (why)."""
    from .callplan import CALL_PROXY
    return CALL_PROXY


def _plans_lines(plans: dict) -> list:
    if not plans:
        return []
    c = plans["cache"]
    out = ["", f"Call-time plans (one per input-shape signature; cache {c['size']}/{c['capacity']},"
               f" {c['hits']} hits, {c['misses']} misses, {c['evicted']} evicted"
               + (f"; planning FAILED: {c['failed']}" if c["failed"] else "")
               + (f"; arena off: {c['arena_off']}" if c.get("arena_off") else "")
               + f"; cached signatures' call path: {c.get('call_path', '?')}" + "):",
           f"  {'signature':<40s} {'sizes':>7s} {'modelled':>10s} {'measured':>10s} "
           f"{'Theano':>10s} {'plan ms':>8s} {'calls':>6s}  method"]
    for p in plans["plans"]:
        sig = p["signature"] if len(p["signature"]) <= 40 else p["signature"][:37] + "..."
        out.append(f"  {sig:<40s} {'exact' if p['exact'] else 'GUESSED':>7s} "
                   f"{fmt_bytes(p['peak']):>10s} {fmt_bytes(p['measured_peak']):>10s} "
                   f"{fmt_bytes(p['baseline_peak']):>10s} {1e3 * p['seconds']['total']:>8.1f} "
                   f"{p['calls']:>6d}  {p['method']}{'  <- these inputs' if p['current'] else ''}")
        if p.get("arena_bytes") is not None:
            lb = p["arena_lower_bound"]
            lazy = "conflicts" in str(p.get("arena_method", ""))
            out.append(f"  {'':<40s} arena {fmt_bytes(p['arena_bytes'])} for "
                       f"{p['arena_values']} values"
                       + (" placed for every branch (lazy graph)" if lazy else "")
                       + f" (lower bound {fmt_bytes(lb)}"
                       + (": values that may be live together" if lazy else "") + ", "
                       f"x{p['arena_bytes'] / lb if lb else 1.0:.3f}); "
                       + (f"{p['allocators']} value(s) allocate their own "
                          f"({fmt_bytes(p['allocator_bytes'])})" if p["probed"]
                          else "allocating ops not probed yet"))
        if p.get("arena_note"):
            out.append(f"  {'':<40s} {p['arena_note']}")
    out.append("  (modelled: gc-on peak of the plan's order; measured: tracemalloc, these inputs "
               "only; Theano: modelled peak of Theano's own order; arena: modelled bytes the "
               "plan reserves, allow_gc=False)")
    return out


def _jsonable(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (tuple, set, frozenset)):
        return list(o)
    return str(o)


def fmt_bytes(n: int | float | None) -> str:
    """``1536 -> '1.5 KB'`` (binary units)."""
    if n is None:
        return "-"
    n = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def ratio(x, base) -> str:
    """``'0.75x'``; three decimals below 0.1 (``'0.002x'``)."""
    if x is None or not base:
        return ""
    r = x / base
    return f"{r:.3f}x" if r < 0.1 else f"{r:.2f}x"


def _top_live(model, order: Sequence[int], k: int) -> tuple[int, list[dict]]:
    trace = simulate(model.graph, order)
    live = trace.live_at(model.graph, trace.peak_step) if trace.peak_step >= 0 else []
    return trace.peak_step, [dict(value=lt.buffer, label=model.describe(lt.buffer),
                                  shape=model.shapes[lt.buffer], bytes=lt.size,
                                  start=lt.start, end=lt.end) for lt in live[:k]]


def _measure_variant(g, args, shared: _SharedValues, warm: bool = True) -> dict:
    shared.restore()
    if warm:
        g(*args)
        shared.restore()
    before = _array_ids(g)
    m = measure_call(g, *args)
    new = len(_array_ids(g) - before)
    shared.restore()
    return dict(peak=m.peak, retained=m.retained, held=m.held, cells=_cell_count(g), new_arrays=new)


def _traced_steps(g, args, shared: _SharedValues) -> list[tuple[str, int]]:
    """Per node of one call: (node label, traced high-water mark above the call's start)."""
    t, log = traced_function(g, memory=True)
    shared.restore()
    t(*args)                    # warm
    shared.restore()
    del log[:]
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        t(*args)
    finally:
        if started:
            tracemalloc.stop()
        shared.restore()
    return [(str(node), max(hw - base, 0)) for node, _before, hw in log]


def report(f, *example_inputs, time_budget: float = 5.0, stock=None, name: str | None = None,
           measure: bool = True, top: int = 5, trace_steps: bool = True) -> Report:
    """Memory report of compiled function ``f`` on ``example_inputs``.

    Parameters
    ----------
    f : theano.compile.function_module.Function
        Compiled with or without the lowmem pass.
    *example_inputs
        Values for ``f``'s explicit inputs; they fix every size.
    time_budget : float
        Seconds for the scheduler and again for the exact search of the optimum.
    stock : Function, optional
        The same graph compiled by stock Theano, measured as "stock" instead of
        ``f``'s graph relinked by Theano's ``cvm`` linker.
    name : str, optional
        Title (default ``f.name`` or ``'function'``).
    measure : bool
        Call the variants (False: modelled numbers only, no call at all).
    top : int
        How many of the biggest live values at each peak to list.
    trace_steps : bool
        Also trace per-node measured bytes (gc on) for the plot.

    Returns
    -------
    Report

    Notes
    -----
    Shared variables are saved before the first call and restored after
    every call, so the report does not train the user's model.

    Examples
    --------
    >>> import numpy as np, theano, theano.tensor as T
    >>> x = T.vector('x'); f = theano.function([x], [T.exp(x).sum(), T.log(x + 2).sum()])
    >>> r = report(f, np.ones(10000), time_budget=0.5)
    >>> r.modelled['ours'] <= r.modelled['theano'], r.measured['stock']['peak'] > 0
    (True, True)
    """
    t0 = time.perf_counter()
    name = name or getattr(f, "name", None) or "function"
    fg = f.maker.fgraph
    notes: list[str] = []
    declined = getattr(f.maker.linker, "declined", None)
    if declined:
        notes.append(f"theano_lowmem runs this function as Theano does: {declined} "
                     f"(no call-time plan, arena or shared cells)")
    shared = _SharedValues(f)
    # Theano's order: what the C VM runs on the same graph without our chain
    base_fn, base_eq = relink(f, VM_Linker(use_cloop=True, allow_gc=True))
    inv = {equiv_v: k for k, equiv_v in base_eq.items() if k in fg.apply_nodes}
    traced = None
    try:
        theano_nodes = [inv[n] for n in cvm_order(base_fn.maker.fgraph)]
    except NotReplicable:
        from .executed import trace_order
        traced = [inv[n] for n in trace_order(base_fn, *example_inputs)]
        shared.restore()
        theano_nodes = [inv[n] for n in base_fn.maker.fgraph.toposort()]
        notes.append("lazy nodes (ifelse): Theano's order was traced from one call (data-dependent); "
                     "the memory model runs every node, so the untaken branch is placed as soon "
                     "as it is ready")
    model = model_for(f, *example_inputs, order=theano_nodes)
    g = model.graph
    theano_order = list(range(g.n_nodes))
    if traced is not None:
        rank = {model.node_id[n]: i for i, n in enumerate(traced)}
        theano_order = g.topological_order(key=lambda n: rank.get(n, len(rank)))
    pinned = planned_order(fg)
    pv = planned_vm(f)
    if pv is not None and measure:      # the plan f makes for these inputs: one real call
        try:
            f(*example_inputs)
        finally:
            shared.restore()
    t1 = time.perf_counter()
    sched = schedule(g, baseline=theano_order, time_budget=time_budget)
    t_sched = time.perf_counter() - t1
    if pv is not None and pv.current is not None:
        ours_order, source = model.ids(pv.executed_nodes()), "call-time plan for these shapes"
        ours_method = f"{pv.current.method}, {'exact' if pv.current.exact else 'INEXACT'} sizes"
    elif pinned is not None and len(pinned) == g.n_nodes:
        ours_order, source = model.ids(pinned), "pinned by the lowmem pass"
        info = next((ft.info for ft in fg._features if hasattr(ft, "info") and
                     type(ft).__name__ == "OrderFeature"), {})
        ours_method = str(info.get("method", "no scheduler info: pinned by the linker"))
    else:
        ours_order, source, ours_method = list(sched.order), "scheduled now", sched.method
        if pinned is not None:
            notes.append("f pins a partial order (lazy graph, or nodes added after the pass); "
                         "ours = a schedule made now")
    t1 = time.perf_counter()
    ex = exact_schedule(g, time_budget=time_budget)
    t_exact = time.perf_counter() - t1
    tr_theano, tr_ours = simulate(g, theano_order), simulate(g, ours_order)
    cands = [(sched.peak, sched.optimal, sched.lower_bound), (ex.peak, ex.optimal, ex.lower_bound),
             (tr_ours.peak, False, 0)]
    best = min(p for p, _, _ in cands)
    lower = min(max(lb for _, _, lb in cands), best)
    optimal = lower == best or any(o and p == best for p, o, _ in cands)
    lower = best if optimal else lower
    exact_sizes = all(model.exact[b] for b in g.buffers)
    if not exact_sizes:
        notes.append("some sizes could not be derived from the example inputs and use the "
                     "lowmem_unknown_dim hint")
    th_step, th_top = _top_live(model, theano_order, top)
    our_step, our_top = _top_live(model, ours_order, top)
    modelled = dict(theano=tr_theano.peak, ours=tr_ours.peak, rescheduled=sched.peak,
                    optimum=best, optimal=optimal, lower_bound=lower, keep_all=keep_all_bytes(g),
                    ours_source=source, ours_method=ours_method,
                    theano_peak_step=th_step, ours_peak_step=our_step)
    series = dict(theano_during=list(tr_theano.during), ours_during=list(tr_ours.during))
    measured: dict = {}
    timings = dict(schedule_s=t_sched, exact_s=t_exact)
    if measure:
        ours_nodes = [model.nodes[i] for i in ours_order]
        variants = {}
        if stock is not None:
            variants["stock"] = stock
            variants["stock_nogc"] = relink(stock, VM_Linker(use_cloop=True, allow_gc=False))[0]
        else:
            variants["stock"] = base_fn
            variants["stock_nogc"] = relink(f, VM_Linker(use_cloop=True, allow_gc=False))[0]
        # exactly the order reported (call_plan=False: no re-planning in the relinked copies);
        # but a lazy graph (ifelse) is what our linker makes of it, as users get it: gc on it
        # declines it (Theano's walk and cells, storage_reuse.LowMemLinker.make_all), gc off
        # it pins its own walk (pinning the model's topological order measured an order no
        # user runs: resnet_sd_train 21.0 MB "ours" against 20.8 MB real and stock)
        walk = any(is_lazy_node(n) for n in fg.apply_nodes)
        variants["ours"] = relink(f, LowMemLinker(use_cloop=True, allow_gc=True,
                                                  call_plan=walk),
                                  None if walk else ours_nodes)[0]
        # gc off: what the user gets, its own call-time plan (same shapes, same order:
        # the scheduler is deterministic) and its arena (flag lowmem_arena)
        variants["ours_nogc"] = relink(f, LowMemLinker(use_cloop=True, allow_gc=False),
                                       None if walk else ours_nodes)[0]
        try:
            for key, v in variants.items():
                measured[key] = _measure_variant(v, example_inputs, shared)
            if trace_steps:
                for key in ("stock", "ours"):
                    steps = _traced_steps(variants[key], example_inputs, shared)
                    series[f"measured_{key}"] = [b for _, b in steps]
        finally:
            shared.restore()
    timings["total_s"] = time.perf_counter() - t0
    plans = _plans_section(pv, measured.get("ours", {}).get("peak"))
    return Report(name=name, n_nodes=g.n_nodes, n_values=g.n_values, exact_sizes=exact_sizes,
                  modelled=modelled, measured=measured, top_live=dict(theano=th_top, ours=our_top),
                  orders=dict(theano=theano_order, ours=list(ours_order),
                              rescheduled=list(sched.order)),
                  series=series, notes=notes, timings=timings, plans=plans)
