"""Call-time plans: exact sizes from the real arguments, one plan per shape signature.

Theano variables carry no static shapes (``T.tensor4`` has four unknown
dimensions), so a plan made at compile time models guesses.  At a call the
numbers are in the input cells.  :class:`LowMemLinker` links a function once
(thunks, cells) and wraps its VM in a :class:`PlannedVM`, which at each call:

1. reads the *signature*: the shapes of the inputs ShapeFeature's shape graphs
   read (and the values of the inputs they read by value, e.g. ``arange(n)``),
   from the storage cells ``Function.__call__`` has just filled
   (function_module.py:870-897) -- a tuple of shape tuples, a dict lookup;
2. on a miss, evaluates every intermediate's shape with the
   :class:`ShapeProgram` (ShapeFeature's shape graphs flattened once into a
   tape and run with ``op.perform``), builds the memory model with those exact
   sizes (:class:`theano_lowmem.core.graph.Graph`; the structure is built once
   per function), schedules it (Theano's own executed order is a candidate,
   so the plan is never worse by the model), and builds a VM for the order
   over the *same* thunks and cells (``VM_Linker.make_vm``, vm.py:868-1011:
   the C VM takes its prerequisites from ``fgraph.orderings()`` when it is
   built, so a new ``CVM`` object runs another order with no C compilation);
3. checks the memory budget (flag ``lowmem_budget``) before anything is
   allocated, then runs the plan's VM.

Plans are kept per signature, least recently used dropped first (flag
``lowmem_plan_cache``).  Design record: docs/design/0005-call-time-plans.md.
"""
from __future__ import annotations

import contextlib
import time
import warnings
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import theano

from .arena import PlanArena, arena_lifetimes
from .config import parse_bytes
from .core.graph import Graph
from .core.memory import lifetimes, simulate
from .core.prereqs import cvm_prereqs
from .executed import is_lazy_node, vars_index
from .model import _workspace_rules
from .order import OrderFeature, _cvm_encoding, attach_order
from .core.schedule import schedule
from .shapes import ShapeProgram, signature_reader  # noqa: F401  (re-exported)

# (imported here, not in the functions that use them: an import inside the first call's
# planning was counted as planning time, 4 ms of randwire_ws's 13 ms when it came first)

#: Planners whose plans put arena views in cells (see :func:`release_shared_cells`).
_ARENA_PLANNERS: "weakref.WeakSet" = weakref.WeakSet()
#: Scheduler budget at call time: this many seconds per 1,000 Apply nodes (plus a floor),
#: never more than flag ``lowmem_time_budget``.
CALL_BUDGET_PER_1000 = 0.06
CALL_BUDGET_FLOOR = 0.01
#: ... for the first CALL_BUDGET_KNEE nodes; beyond, CALL_BUDGET_PER_1000_BEYOND (on 1,000-node
#: nets the heuristics and a few exact windows find the order; the shape tape, the arena and
#: the VM take the rest of the 100 ms per 1,000 nodes)
CALL_BUDGET_KNEE = 200
CALL_BUDGET_PER_1000_BEYOND = 0.025


#: A call-time order other than Theano's is run only if its modelled peak is at least this
#: fraction lower: another order costs locality (a value computed early is read cold).
#: Measured on the 12-cell memory-bound DAG of benchmarks/bench_arena.py (dag_D_cheap): an
#: order 8 bytes lower than Theano's (4,800,008 vs 4,800,016 B) ran 1.14x slower gc-on.
#: At 1%, densenet_train (small) lost its 0.7% lower order, and its arena, placed over
#: Theano's order, took the greedy refinement (53 ms against 14 ms of first-call planning).
MIN_PEAK_GAIN = 0.005


def _flag(name: str, default: Any) -> Any:
    return getattr(theano.config, name, default)


def call_budget(n_nodes: int) -> float:
    """Scheduler budget (seconds of deterministic work) for a call-time plan of
    ``n_nodes`` nodes: ``CALL_BUDGET_FLOOR`` plus ``CALL_BUDGET_PER_1000`` per 1,000 nodes
    up to ``CALL_BUDGET_KNEE`` nodes, ``CALL_BUDGET_PER_1000_BEYOND`` per 1,000 after
    (the rest of issue 10's 100 ms per 1,000 nodes goes to the shape tape, the model, the
    arena and the VM), capped by ``lowmem_time_budget``."""
    first = min(n_nodes, CALL_BUDGET_KNEE)
    rest = n_nodes - first
    return min(float(_flag("lowmem_time_budget", 0.25)),
               CALL_BUDGET_FLOOR + (CALL_BUDGET_PER_1000 * first +
                                    CALL_BUDGET_PER_1000_BEYOND * rest) / 1000)


@contextlib.contextmanager
def no_cyclic_gc():
    """Python's cyclic collector off while we plan: the planning code allocates many small
    objects, and each generation-2 collection walks the whole Theano graph (profiled: most of
    the link-time cost on a 93-node graph).  Nothing we build is collectable cyclic garbage;
    the collector's previous state is restored."""
    import gc
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


# --------------------------------------------------------------------------- plans
@dataclass
class Plan:
    """One call-time plan: what was planned for one signature, and the figures reports show.

    Attributes
    ----------
    signature : hashable
        Shapes of the inputs the shape graphs read (and values they read by value).
    exact : bool
        Every size was known (no dimension left to the ``lowmem_unknown_dim`` hint).
    order : tuple of int
        Node ids (model numbering: Theano's own executed order is ``range(n)``).
    method, optimal, lower_bound : as :class:`theano_lowmem.core.schedule.Schedule`
    peak, baseline_peak : int
        Modelled peak of this order and of Theano's order (gc-on, exact sizes).
    held : int
        Modelled bytes the cells hold after a call with ``allow_gc=False``.
    planned : int
        The figure the budget is checked against: ``peak`` (gc on) or ``held`` (gc off).
        With an arena, ``held`` is the arena's bytes plus the values outside it.
    arena : theano_lowmem.arena.PlanArena or None
        The plan's arena (flag ``lowmem_arena``; exact sizes only).
    seconds : dict
        Planning time by phase (``tape``: building the shape tape, first plan only;
        ``shapes``, ``model``, ``schedule``, ``vm``, ``total``).
    """

    signature: Any
    exact: bool
    order: tuple
    method: str
    optimal: bool
    lower_bound: int
    peak: int
    baseline_peak: int
    held: int
    planned: int
    seconds: dict
    dims: list = field(repr=False, default=None)
    over_budget: bool = False
    budget: int = 0
    calls: int = 0
    warned: bool = False
    vm: Any = field(repr=False, default=None)
    arena: Any = field(repr=False, default=None)
    arena_note: str = ""

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in (
            "exact", "method", "optimal", "lower_bound", "peak", "baseline_peak", "held",
            "planned", "over_budget", "budget", "calls", "arena_note")} | {
            "signature": repr(self.signature), "seconds": dict(self.seconds)} | (
            self.arena.summary() if self.arena is not None else {})


class CallPlanner:
    """Makes :class:`Plan` objects for one linked function (built once at link time).

    Parameters
    ----------
    linker : LowMemLinker
        The linker that made the thunks; its ``make_vm`` builds each plan's VM.
    model : FGModel
        Structural model, node ids in Theano's executed order (the baseline).
    link_ids : sequence of int
        The order the linked (base) VM runs.
    extra_deps : list of list of int
        Ordering constraints every plan must keep (DestroyHandler's, and those
        that keep the link-time shared cells valid).
    cell_groups : list of list of int
        Values sharing one cell (``allow_gc=False``), for the held bytes.
    vm_args : dict
        The arguments the linker passed to ``make_vm`` for the base VM.
    """

    def __init__(self, linker, fgraph, model, link_ids, extra_deps, cell_groups, vm_args,
                 base_vm, shape_feature, make_vm=None, arena_ids=(), arena_fortran=None,
                 input_views=(), lazy=None, lazy_ops=(), cvm_walk=None) -> None:
        self.linker = linker
        self.fgraph = fgraph
        self.model = model
        self.link_ids = tuple(link_ids)
        self.structure = dict(model.structure, extra_deps=extra_deps)
        # the structure, checked once, at link time (plans only change the sizes)
        self.graph = model.graph if list(map(list, model.graph.extra_deps)) == \
            [sorted(set(d)) for d in extra_deps] else Graph(size=model.graph.size, **self.structure)
        self.cell_groups = cell_groups
        # a lazy graph (ifelse): Theano's walk runs, the arena is placed by conflict sets
        self.lazy, self.lazy_ops = lazy, tuple(lazy_ops)
        self.vm_args = vm_args
        self.base_vm = base_vm
        # the make_vm to build plans' VMs with: the linker's own, not a subclass's that
        # wraps thunks (the stored thunks are already what such a subclass made of them)
        self.make_vm = make_vm or type(linker).make_vm
        self.gc = bool(linker.allow_gc)
        self.itemsize = model.itemsize
        rules = _workspace_rules()
        self.ws_nodes = [(i, rules[type(a.op)]) for i, a in enumerate(model.nodes)
                         if type(a.op) in rules]
        self.input_cells = [vm_args["storage_map"][v] for v in fgraph.inputs]
        # arena candidates (storage_reuse.LowMemLinker._never_shared says which)
        smap = vm_args["storage_map"]
        self.arena_ids = tuple(arena_ids)
        self.arena_cells = {b: smap[model.variables[b]] for b in self.arena_ids}
        # every cell that may hold (a view of) a candidate's array: its alias group's
        g = model.graph
        self.arena_group_cells = {b: [smap[model.variables[v]] for v in g.group[b]
                                      if model.variables[v] in smap] for b in self.arena_ids}
        self.all_arena_cells = [c for cs in self.arena_group_cells.values() for c in cs]
        self.arena_dtypes = {b: np.dtype(model.variables[b].type.dtype) for b in self.arena_ids}
        self.arena_off = None           # why the arena was switched off, if it was
        # views of inputs / shared variables (emptied after gc-off arena calls)
        self.input_view_cells = [smap[model.variables[v]] for v in input_views
                                 if model.variables[v] in smap]
        # candidates that may be Fortran-ordered when some inputs are: value -> input bits
        self.arena_fortran = dict(arena_fortran or {})
        bits = 0
        for m in self.arena_fortran.values():
            bits |= m
        self.fortran_inputs = [i for i in range(len(fgraph.inputs)) if bits >> i & 1]
        self._shape_of = shape_feature.shape_of
        self.program = None
        self.program_seconds = 0.0       # the tape's build, when the first call made it
        # set with the tape; until then, as if the shape graphs read input values
        self.shape_cells, self.value_cells = [], [None]
        # builds the plans' C VMs: made here, with the linked VM, since what it computes
        # (make_vm's arguments that do not depend on the order) is link-time work
        self._cvm = None
        self.link_seconds = 0.0
        if linker.use_cloop and type(base_vm).__name__ == "CVM" and lazy is None:
            feature = next((f for f in fgraph._features if isinstance(f, OrderFeature)), None)
            if feature is not None or cvm_walk is not None:
                t0 = time.perf_counter()
                self._cvm = _CVMFactory(linker, fgraph, vm_args, feature, base_vm, cvm_walk)
                self.link_seconds = time.perf_counter() - t0
                if cvm_walk is not None and not self._cvm.walk_reused:
                    # The base CVM was built over other nodes than the replica walked (a
                    # schedule that changed between two calls), so its walk may not be
                    # link_ids: build one that runs link_ids over the same thunks.
                    self.base_vm = self._cvm_vm([model.nodes[i] for i in self.link_ids])
        elif cvm_walk is not None:
            raise PlanningError("the linked VM is not the C VM the replica walked")
        self.budget = 0
        self.action = "warn"
        # The shape tape depends on the graph only, not on the shapes of a call: it is link
        # work, like the C thunks (issue 10: "compile [the shape graphs] into one small shape
        # function"), and counted in the compile time (tape_seconds).  Should building it
        # fail, the first call tries again, inside the planning failure's fallback (one
        # warning, Theano's order).
        self.tape_seconds = 0.0
        self.tape_error: Exception = RuntimeError("no shape tape")
        self.signature = self._first_signature
        t0 = time.perf_counter()
        try:
            with no_cyclic_gc():
                self._build_tape()
        except Exception:
            self.program, self.signature = None, self._first_signature
            self.shape_cells, self.value_cells = [], [None]
        self.tape_seconds = time.perf_counter() - t0

    def _first_signature(self):
        """Build the shape tape and the signature reader (if link time could not), then
        read the signature.  If the build fails again, :meth:`plan` raises its error (the
        planning failure's fallback: one warning, Theano's order)."""
        with no_cyclic_gc():
            t0 = time.perf_counter()
            try:
                self._build_tape()
            except Exception as exc:
                self.program, self.tape_error = None, exc
                return ("no shape tape", type(exc).__name__)
            self.program_seconds = time.perf_counter() - t0
        return self.signature()

    def _build_tape(self) -> None:
        """The shape tape, and ``self.signature``: the reader of the call's signature."""
        self.program = ShapeProgram(self.fgraph, self.model.variables, self._shape_of)
        cells = self.input_cells
        self.shape_cells = [cells[i] for i in sorted(self.program.shape_inputs)]
        self.value_cells = [cells[i] for i in sorted(self.program.value_inputs)]
        read = signature_reader(self.shape_cells, self.value_cells)
        if self.fortran_inputs:     # the layout of the inputs that decide some layouts
            fcells = [(1 << i, cells[i]) for i in self.fortran_inputs]

            def read_with_layout(read=read, fcells=fcells):
                bits = 0
                for b, c in fcells:          # inputs of 2+ dimensions only (fortran_masks)
                    if c[0].flags.f_contiguous:
                        bits |= b
                return read(), bits
            self.signature = read_with_layout
        else:
            self.signature = read

    def refresh_budget(self) -> None:
        self.budget = parse_bytes(_flag("lowmem_budget", "0"))
        self.action = str(_flag("lowmem_budget_action", "warn"))

    def plan(self, sig) -> Plan:
        """Plan for the shapes now in the input cells (signature ``sig``)."""
        if self.program is None:
            raise self.tape_error
        t0 = time.perf_counter()
        dims = self.program.run(self.input_cells)
        t1 = time.perf_counter()
        hint = int(_flag("lowmem_unknown_dim", 128))
        exact = True
        size = []
        for d, isz in zip(dims, self.itemsize):
            if d is None:
                size.append(0)
                continue
            n = 1
            for x in d:
                if x is None:
                    exact, x = False, hint
                n *= x
            size.append(n * isz)
        workspace = None
        if self.ws_nodes:
            workspace = list(self.structure["workspace"])
            ev = _DimsView(self.model, dims, hint)
            for i, rule in self.ws_nodes:
                workspace[i] = rule(self.model.nodes[i], ev, hint)
        g = self.graph.with_sizes(size, workspace)
        t2 = time.perf_counter()
        n = g.n_nodes
        baseline = list(range(n))
        if exact and self.lazy is None:
            res = schedule(g, baseline=baseline, time_budget=call_budget(n),
                           exact_max_nodes=int(_flag("lowmem_exact_max_nodes", 20)))
            order, method, optimal, lower = res.order, res.method, res.optimal, res.lower_bound
            peak, base_peak = res.peak, res.baseline_peak
            if peak > base_peak * (1 - MIN_PEAK_GAIN) and tuple(order) != tuple(baseline):
                # Theano's own order (its locality, and the linked VM) unless ours is
                # clearly lower: see MIN_PEAK_GAIN
                method = f"baseline (the search's best, {method}, is {base_peak - peak:,} B " \
                    f"lower)"
                order, peak, optimal = tuple(baseline), base_peak, optimal and peak == base_peak
        else:   # never reorder on guessed sizes, nor a walk that depends on the data
            tr = simulate(g, baseline, check=False)
            order, optimal, lower = tuple(baseline), False, 0
            method = "baseline (inexact sizes)" if self.lazy is None else \
                "Theano's walk (lazy graph; peak modelled on a topological order)"
            peak = base_peak = tr.peak
        t3 = time.perf_counter()
        arena, arena_note = self._arena(g, order, dims, sig[1] if self.fortran_inputs else 0) \
            if self.arena_ids else (None, "")
        held = self._held(g) if arena is None else (
            arena.plan.size + sum(g.size[b] for b in g.buffers if b not in arena.lifetimes))
        t4 = time.perf_counter()
        vm = self._vm_for(order)
        t5 = time.perf_counter()
        tape, self.program_seconds = self.program_seconds, 0.0   # if the first call built it
        p = Plan(sig, exact, tuple(order), method, optimal, lower, peak, base_peak, held,
                 peak if self.gc else held,
                 dict(tape=tape, shapes=t1 - t0, model=t2 - t1, schedule=t3 - t2,
                      arena=t4 - t3, vm=t5 - t4, total=t5 - t0 + tape),
                 dims=dims, vm=vm, arena=arena, arena_note=arena_note)
        self.refresh_budget()
        p.budget = self.budget
        p.over_budget = bool(self.budget) and p.planned > self.budget
        return p

    def _arena(self, g: Graph, order, dims, fortran: int = 0):
        """The plan's :class:`~theano_lowmem.arena.PlanArena` (placement only: the
        buffer is allocated when the plan is installed; None if nothing is placed) and a
        note saying which candidates keep their own arrays for this signature (reports).  ``fortran``: bits of the
        inputs that are Fortran-ordered in this call (their dependents stay out)."""
        # values of unknown size (data-dependent shapes) keep their own arrays
        ids = [b for b in self.arena_ids if dims[b] is not None and None not in dims[b]]
        notes = []
        if len(ids) < len(self.arena_ids):
            notes.append(f"{len(self.arena_ids) - len(ids)} value(s) of data-dependent size "
                         f"keep their own arrays")
        if fortran:
            kept = [b for b in ids if not self.arena_fortran.get(b, 0) & fortran]
            if len(kept) < len(ids):
                notes.append(f"{len(ids) - len(kept)} value(s) follow a Fortran-ordered input "
                             f"and keep their own arrays")
            ids = kept
        note = "; ".join(notes)
        if not ids:
            return None, "no arena for this signature: " + (note or "nothing to place")
        check = bool(_flag("lowmem_check_plan", False))
        # gc off: the first call's probe places again (without the values whose op
        # replaced its view), so the first placement is the cheapest one
        provisional = not self.gc
        if self.lazy is not None:
            return PlanArena(dict.fromkeys(ids), self.arena_cells, self.arena_group_cells,
                             {b: tuple(dims[b]) for b in ids}, self.arena_dtypes,
                             check=check, conflicts=self.lazy, provisional=provisional), note
        lts = arena_lifetimes(lifetimes(g, order, check=False), ids)
        return PlanArena(lts, self.arena_cells, self.arena_group_cells,
                         {b: tuple(dims[b]) for b in lts}, self.arena_dtypes, check=check,
                         provisional=provisional), note

    def disable_arena(self, why: str) -> None:
        """Stop placing values in an arena (cells emptied; plans made again), with one
        warning; the report shows ``why``."""
        if self.arena_ids and _flag("lowmem_warn", True):
            warnings.warn(f"theano_lowmem: function {getattr(self.fgraph, 'name', '') or '<unnamed>'}"
                          f" no longer places its intermediates in an arena: {why}",
                          stacklevel=4)
        for c in self.all_arena_cells:
            c[0] = None
        self.arena_ids, self.arena_cells, self.arena_off = (), {}, why
        self.arena_group_cells, self.all_arena_cells = {}, []
        ref = getattr(self, "proxy", None)
        proxy = ref() if ref is not None else None
        if proxy is not None:
            proxy.clear_plans()

    def _held(self, g: Graph) -> int:
        """Bytes held after a gc-off call: a shared cell holds its largest occupant."""
        grouped = {v for grp in self.cell_groups for v in grp}
        held = sum(g.size[b] for b in g.buffers if b not in grouped)
        return held + sum(max(g.size[v] for v in grp) for grp in self.cell_groups)

    def _vm_for(self, order: Sequence[int]):
        """A VM over the linked thunks that runs ``order`` (model node ids)."""
        if tuple(order) == self.link_ids:
            return self.base_vm
        nodes = [self.model.nodes[i] for i in order]
        feature = next((f for f in self.fgraph._features if isinstance(f, OrderFeature)), None)
        if self.linker.use_cloop and type(self.base_vm).__name__ == "CVM":
            if self._cvm is None:
                self._cvm = _CVMFactory(self.linker, self.fgraph, self.vm_args, feature,
                                        self.base_vm)
            vm = self._cvm_vm(nodes)
            if vm is not None:
                return vm
        args = dict(self.vm_args)
        if not self.linker.use_cloop:          # Loop / LoopGC run their node list
            pos = {a: i for i, a in enumerate(args["nodes"])}
            args["thunks"] = [args["thunks"][pos[a]] for a in nodes]
            args["nodes"] = nodes
            if args["post_thunk_clear"] is not None:
                args["post_thunk_clear"] = _post_thunk_clear(self.fgraph, nodes,
                                                             args["storage_map"])
        attached = feature is None      # nothing pinned (a C VM graph): pin for this build
        if attached:
            feature = attach_order(self.fgraph, nodes)
        saved = (feature.order, feature.chained, feature.valid)
        try:                                   # the CVM reads orderings() when built
            _set_order(feature, nodes)
            vm = self.make_vm(self.linker, **args)
        finally:
            if attached:
                self.fgraph.remove_feature(feature)
            else:
                _set_order(feature, saved[0], saved[1], saved[2])
        vm.storage_map = args["storage_map"]          # as VM_Linker.make_all does (vm.py:1144-1145)
        vm.compute_map = args["compute_map"]
        return vm


    def _cvm_vm(self, nodes):
        """The factory's C VM that runs ``nodes`` (None if it cannot build one)."""
        vm = self._cvm.build(nodes)
        if vm is not None:
            vm.storage_map = self.vm_args["storage_map"]     # as make_all (vm.py:1144)
            vm.compute_map = self.vm_args["compute_map"]
        return vm


class _CVMFactory:
    """Builds a plan's C VM over the linked thunks and cells.

    ``VM_Linker.make_vm`` (vm.py:898-1011) computes the CVM's arguments from the node
    list, the cells and ``fgraph.orderings()``; only ``node_prereqs`` depends on the order
    (``compute_gc_dependencies``, vm.py:825-866, reads the clients only).  This computes
    the rest once and, per order, the prerequisites exactly as ``make_vm`` would get them
    with the order pinned: the other features' orderings (DestroyHandler's) merged with
    the fewest prerequisites that make the C VM walk the order
    (:meth:`theano_lowmem.order.OrderFeature._cvm_orderings`: ``cvm_prereqs``, or the
    full chain if its replica walk does not give the order), as sorted sets of variable
    indices (vm.py:958-968).  ``build`` returns None when the graph is lazy (the order
    feature gives its chain there; ``make_vm`` is used)."""

    def __init__(self, linker, fgraph, args: dict, feature, base_vm, cvm_walk=None) -> None:
        # the thunks the linked VM really runs (VM.__init__ keeps them, vm.py:131-132):
        # whatever wrapped them below our make_vm (a tracer) is kept
        nodes = list(getattr(base_vm, "nodes", None) or args["nodes"])
        self.nodes = nodes
        self.thunks = list(getattr(base_vm, "thunks", None) or args["thunks"])
        self.lazy = any(is_lazy_node(n) for n in nodes)
        self.allow_gc = linker.allow_gc
        storage_map, compute_map = args["storage_map"], args["compute_map"]
        self.pre_call_clear = [storage_map[v] for v in linker.no_recycling]
        # make_vm's numbering: the link-time replica's when it walked these very nodes
        # (no OrderFeature then, so its prerequisites are every feature's)
        self.walk_reused = cvm_walk is not None and len(cvm_walk[0]) == len(nodes) and \
            all(a is b for a, b in zip(cvm_walk[0], nodes))
        self.enc = enc = cvm_walk[1] if self.walk_reused else \
            _cvm_encoding(fgraph, nodes, feature)
        vars_idx = vars_index(fgraph, nodes)
        inv = [None] * len(vars_idx)
        for v, i in vars_idx.items():
            inv[i] = v
        self.node_idx = {n: i for i, n in enumerate(nodes)}
        deps = linker.compute_gc_dependencies(storage_map)
        base_io, n_in, n_out, in_off, out_off = [], [], [], [], []
        for node in nodes:
            ins = [vars_idx[v] for v in node.inputs]
            outs = [vars_idx[v] for v in node.outputs]
            n_in.append(len(ins))
            n_out.append(len(outs))
            in_off.append(len(base_io))
            base_io.extend(ins)
            out_off.append(len(base_io))
            base_io.extend(outs)
        var_owner = [None] * len(vars_idx)
        for v, i in vars_idx.items():
            if v.owner:
                var_owner[i] = self.node_idx[v.owner]
        output_vars = [vars_idx[v] for v in fgraph.outputs]
        upd = {vars_idx[o]: vars_idx[i] for i, o in args["updated_vars"].items()}
        self.kw = dict(
            compute_map_list=[compute_map[v] for v in inv],
            storage_map_list=[storage_map[v] for v in inv],
            base_input_output_list=base_io, node_n_inputs=n_in, node_n_outputs=n_out,
            node_input_offset=in_off, node_output_offset=out_off, var_owner=var_owner,
            is_lazy_list=[int(th.lazy) for th in self.thunks], output_vars=output_vars,
            update_storage=[upd[o] for o in output_vars if o in upd],
            dependencies=None)
        # per-variable tuples (untracked by the cyclic collector once it has seen them);
        # the CVM wants lists (lazylinker_c.c:453-455): made per build
        self.dependencies = tuple(tuple([vars_idx[d] for d in deps[v]]) for v in inv)
        self.other = enc[3]        # DestroyHandler's (and others'): sorted, unique

    def prereqs(self, order_nodes: Sequence[Any]) -> list:
        """``node_prereqs`` for the VM that runs ``order_nodes`` (every node once)."""
        target = [self.node_idx[n] for n in order_nodes]
        pred, walked, _ = cvm_prereqs(target, *self.enc)
        if walked == target:
            ours = {i: pred[i] for i in target if pred[i] >= 0}
        else:                                   # the chain, as OrderFeature falls back to
            ours = {b: a for a, b in zip(target, target[1:])}
        node_outputs = self.enc[1]
        out = []
        for i, p in enumerate(self.other):
            if i in ours:
                out.append(sorted(set(p).union(node_outputs[ours[i]])))
            else:
                out.append(list(p))
        return out

    def build(self, order_nodes: Sequence[Any]):
        if self.lazy or len(order_nodes) != len(self.nodes):
            return None
        from theano.gof.vm import CVM
        n = len(self.nodes)
        return CVM(self.nodes, self.thunks, self.pre_call_clear, allow_gc=self.allow_gc,
                   call_counts=[0] * n, call_times=[0.0] * n,
                   node_prereqs=self.prereqs(order_nodes), node_output_size=[0] * n,
                   **dict(self.kw, dependencies=[list(d) for d in self.dependencies]))


def _set_order(feature, order, chained=None, valid=True) -> None:
    if hasattr(feature, "set_order") and chained is None:
        feature.set_order(order)
        return
    feature.order = list(order)
    if chained is not None:
        feature.chained = chained
    feature.valid = valid
    feature._dirty = True
    for attr in ("_cache", "_prereqs"):        # any cached prerequisites of the old order
        if hasattr(feature, attr):
            setattr(feature, attr, None)


def _post_thunk_clear(fgraph, nodes, storage_map) -> list:
    """LoopGC's clear lists for ``nodes`` (as ``VM_Linker.make_all``, vm.py:1122-1134)."""
    from theano.gof.link import gc_helper
    computed, last_user = gc_helper(nodes)
    outs = set(fgraph.outputs)
    return [[storage_map[i] for i in node.inputs
             if i in computed and i not in outs and last_user[i] is node] for node in nodes]


class _DimsView:
    """``.shape(var)`` over a plan's dims (the interface of the model's workspace rules)."""

    def __init__(self, model, dims, hint: int) -> None:
        self.model, self.dims, self.hint = model, dims, hint

    def shape(self, var):
        v = self.model.value_id.get(var)
        d = None if v is None else self.dims[v]
        return None if d is None else tuple(self.hint if x is None else x for x in d)


# --------------------------------------------------------------------------- the VM
class PlanningError(RuntimeError):
    """Planning failed for a signature (the call then runs Theano's order)."""


class _PyProxy:
    """The short path of a cached signature's call, in Python: what the C extension
    ``theano_lowmem._callproxy.Proxy`` (PlannedVM's base when it is built, see setup.py)
    does without a Python frame.  ``_set_short(vm, cells, reader, sig, cell, view,
    plan)``: a call with no argument whose signature is ``plan.signature`` (the C type
    compares the shapes of ``cells`` with ``sig`` inline when ``cells`` is given, else
    ``reader()`` with ``sig``; here ``reader``, the planner's own signature reader, is
    always called), and, if ``cell`` is given, whose ``cell`` still holds ``view``, adds
    one to ``plan.calls`` and returns ``vm()``; any other call returns
    ``self._long_call(...)``."""

    def _set_short(self, vm, cells, reader, sig, cell, view, plan) -> None:
        self.__dict__["_short_t"] = (vm, cells, reader, sig, cell, view, plan)

    def _drop_short(self) -> None:
        self.__dict__["_short_t"] = None

    @property
    def _short(self):
        return self.__dict__.get("_short_t")

    def __call__(self, *args, **kwargs):
        t = self.__dict__.get("_short_t")
        if t is not None and not args and not kwargs:
            vm, _, reader, _, cell, view, plan = t
            try:
                again = reader() == plan.signature
            except Exception:       # an unreadable signature: the long path's business
                again = False
            if again and (cell is None or cell[0] is view):
                plan.calls += 1
                return vm()
        return self._long_call(*args, **kwargs)


try:
    from ._callproxy import Proxy as _ProxyBase
    CALL_PROXY = "C"
except ImportError as _exc:        # not built: the same short path in Python
    _ProxyBase = _PyProxy
    CALL_PROXY = f"Python (the C extension theano_lowmem._callproxy is not built: {_exc})"
_PROXY_WARNED = [False]


def _warn_python_proxy() -> None:
    """One warning per process when the short path runs in Python (reports say it too)."""
    if _ProxyBase is _PyProxy and not _PROXY_WARNED[0] and _flag("lowmem_warn", True):
        _PROXY_WARNED[0] = True
        warnings.warn(f"theano_lowmem: calls with a cached signature take a Python path: "
                      f"{CALL_PROXY}; results are unaffected (reinstall with a C compiler: "
                      f"pip install -e . builds it)", stacklevel=3)


class PlannedVM(_ProxyBase):
    """The VM of a function with call-time plans (what ``Function.fn`` holds).

    Calls select the plan of the signature in the input cells (a tuple of
    shapes and one dict lookup when cached) and run its VM.  Every other
    attribute (``storage_map``, ``thunks``, ``nodes``, ``allow_gc``,
    ``need_update_inputs``, ``position_of_error``...) is the current VM's.

    Attributes
    ----------
    plans : OrderedDict
        Signature -> :class:`Plan`, least recently used first.
    hits, misses : int
        Calls that found their plan cached, and calls that planned.
    evicted : int
    failed : str or None
        Why planning was switched off for this function (after one warning).
    """

    def __init__(self, planner: CallPlanner, name: str = "") -> None:
        base = planner.base_vm
        self.__dict__.update(_planner=planner, _vm=base, plans=OrderedDict(),
                             misses=0, evicted=0, _evicted_calls=0, failed=None, name=name,
                             _hold=False, _held=None, _fast=None, _fast_calls=0,
                             _own_error=False, current=None, _sig=planner.signature,
                             _max=int(_flag("lowmem_plan_cache", 4)),
                             # read by Function.__call__ on every call (function_module.py:
                             # 940, 949): the same for every plan's VM, so no __getattr__
                             allow_gc=getattr(base, "allow_gc", False), _gc=planner.gc,
                             need_update_inputs=getattr(base, "need_update_inputs", True),
                             # read at every scan step (scan_op.py: the inner function's
                             # VM); every plan's VM has the linked cells (_vm_for)
                             storage_map=getattr(base, "storage_map", None))
        planner.proxy = weakref.ref(self)
        _warn_python_proxy()
        if planner.arena_ids:
            _ARENA_PLANNERS.add(planner)

    @property
    def vm(self):
        """The VM the last call ran (the linked one before any call)."""
        return self._vm

    def __copy__(self):
        """A shallow copy (as ``copy.copy`` gave before the C base class, which cannot be
        copied by ``__reduce_ex__``): the same state, no short path until a long call."""
        new = type(self).__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.__dict__.pop("_short_t", None)
        return new

    # Function.__call__ (function_module.py:903-917) asks for these on an error
    @property
    def position_of_error(self):
        if self._own_error:
            raise AttributeError("position_of_error")
        return self._vm.position_of_error

    def __getattr__(self, name):
        return getattr(self.__dict__["_vm"], name)

    def __setattr__(self, name, value):
        if name == "storage_map":       # make_all sets it (vm.py:1144): ours and the VM's
            self.__dict__[name] = value
            setattr(self._vm, name, value)
        elif name in self.__dict__:
            self.__dict__[name] = value
        else:
            setattr(self._vm, name, value)

    # __call__: the short path of a cached signature (_callproxy.Proxy.tp_call, or
    # _PyProxy.__call__), else this long path.  Function.__call__ calls ``fn()`` or
    # ``fn(output_subset=...)`` (function_module.py:903-904), Scan its inner ``fn()``
    # (scan_op.py:1335); the C VM also takes ``n_calls`` and ``time_thunks``
    # (Theano's own test_scan.py::test_speed_rnn calls ``f.fn(n_calls=...)``): the
    # arguments go to the VM as they came.
    def _long_call(self, *args, **kwargs):
        d = self.__dict__
        fast = d["_fast"]
        if fast is not None:        # a held plan with nothing to do around its VM
            d["_fast_calls"] += 1
            return fast(*args, **kwargs)
        d["_own_error"] = False
        self._drop_short()
        if d["failed"] is None:
            plan = d["_held"]
            if plan is None:
                try:
                    sig = d["_sig"]()
                except Exception as exc:   # e.g. a missing input: let the VM report it
                    sig = ("unreadable", type(exc).__name__)
                planner = d["_planner"]
                if d["_sig"] is not planner.signature:    # after the first call's set-up
                    d["_sig"] = planner.signature
                plan = d["current"]
                if plan is None or plan.signature != sig:
                    plan = self._select(sig)
                # not alive while the VM runs: a tracemalloc peak of the call counted it
                # (mlp_mnist_train gc-on: 503.5 KB against stock's 503.1 KB)
                del sig
                if plan is not None:
                    if plan.over_budget:
                        self._over_budget(plan)
                    if d["_hold"] and not planner.value_cells:   # see hold_inner_plans
                        d["_held"] = plan
            if plan is not None:
                plan.calls += 1
                arena = plan.arena
                if arena is not None:
                    # gc off: the views stay in the cells (unless Function.free() or
                    # Scan emptied them: emptied_first() reads one cell); gc on: the VM emptied them
                    if d["_gc"] or not arena.installed or arena.emptied_first():
                        arena.refill()
                    out = d["_vm"](*args, **kwargs)
                    if not d["_gc"]:
                        if not arena.probed:
                            self._probe(plan)
                        for c in arena.allocator_cells:
                            c[0] = None
                        for c in self._planner.input_view_cells:
                            c[0] = None
                        if not arena.installed:
                            pass
                        elif d["_held"] is not plan:
                            self._set_short_path(plan)
                        elif not (arena.allocator_cells or self._planner.input_view_cells):
                            d["_fast"] = d["_vm"]
                    elif arena.installed:
                        self._set_short_path(plan)
                    return out
                if d["_held"] is plan:
                    d["_fast"] = d["_vm"]
                else:
                    self._set_short_path(plan)
        return d["_vm"](*args, **kwargs)

    def _set_short_path(self, plan) -> None:
        """Let the next calls with ``plan``'s signature take the short path
        (:class:`_PyProxy` says what it does; ``_callproxy.Proxy`` does it in C): only for
        the current plan when planning is on, the plan is under the budget, no scan holds
        it and the signature reader is the settled one.  Every change of the current plan,
        of the arena or of the cache (``_select``, ``_leave_arena``, ``clear_plans``, a
        failed plan, a scan's hold or direct run) drops it, and a call that takes the long
        path drops it first.  With gc off and an arena, the arena's first view must still
        be in its cell (``Function.free()`` empties every cell at once, so the first tells,
        as :meth:`PlanArena.emptied_first`), and the cells the long path empties after the
        VM (allocators', views of inputs) are emptied after it; with gc on, the views go
        back into their cells before the VM."""
        d = self.__dict__
        planner = d["_planner"]
        if (plan is not d["current"] or d["failed"] is not None or plan.over_budget
                or d["_hold"] or d["_sig"] is not planner.signature
                or d["_vm"] is not plan.vm):
            return
        arena, vm = plan.arena, plan.vm
        cell = view = None
        if arena is not None and arena.views:
            if d["_gc"]:
                # the VM empties the cells: a call puts the views back first
                def run(refill=arena.refill, vm=vm):
                    refill()
                    return vm()
                vm = run
            else:
                cell, view = arena.views[0]
                clear = tuple(arena.allocator_cells) + tuple(planner.input_view_cells)
                if clear:
                    # the cells of the ops that replaced their view, and those of the
                    # views of inputs, are emptied after the VM, as the long path does
                    def run(clear=clear, vm=vm):
                        out = vm()
                        for c in clear:
                            c[0] = None
                        return out
                    vm = run
        if planner.value_cells or planner.fortran_inputs:
            cells, sig = None, plan.signature
        else:   # the C type reads these cells' shapes as shapes.signature_reader does
            cells = tuple(planner.shape_cells)
            sig = (plan.signature,) if len(cells) == 1 else tuple(plan.signature)
        self._set_short(vm, cells, planner.signature, sig, cell, view, plan)

    @property
    def hits(self) -> int:
        """Calls that found their plan cached."""
        return sum(p.calls for p in self.plans.values()) + self._evicted_calls - self.misses

    def _select(self, sig):
        """The plan of ``sig`` (made on a miss); it becomes the current plan."""
        d = self.__dict__
        plan = self.plans.get(sig)
        if plan is None:
            plan = self._miss(sig)
        else:
            self.plans.move_to_end(sig)
        self._drop_short()
        if plan is not None:
            if plan is not d["current"]:
                self._leave_arena()
            d["current"], d["_vm"] = plan, plan.vm
        return plan

    def _probe(self, plan) -> None:
        """After the first gc-off call of a plan: drop the allocators from its arena
        and update the plan's held bytes (arena + values outside it)."""
        arena = plan.arena
        before = arena.plan.size
        t0 = time.perf_counter()
        if arena.probe(self._planner.all_arena_cells):
            plan.held += arena.plan.size - before
            plan.planned = plan.held
        dt = time.perf_counter() - t0       # planning too: counted with the arena's
        plan.seconds["arena"] = plan.seconds.get("arena", 0.0) + dt
        plan.seconds["total"] = plan.seconds.get("total", 0.0) + dt

    def _leave_arena(self) -> None:
        """Release the current plan's arena and empty every arena cell, so that no
        view placed for one order stays in a cell when another order runs."""
        self._drop_short()
        cur = self.__dict__["current"]
        if cur is not None and cur.arena is not None:
            cur.arena.release()
        for c in self._planner.all_arena_cells:
            c[0] = None

    def _miss(self, sig):
        self.misses += 1
        try:
            with no_cyclic_gc():
                plan = self._planner.plan(sig)
        except Exception as exc:
            self.__dict__["failed"] = f"{type(exc).__name__}: {exc}"
            self._leave_arena()
            self.__dict__.update(_vm=self._planner.base_vm, current=None)
            if _flag("lowmem_warn", True):
                warnings.warn(f"theano_lowmem: call-time planning failed for function "
                              f"{self.name or '<unnamed>'} ({self.failed}); it runs Theano's "
                              f"order from now on (results are unaffected)", stacklevel=4)
            return None
        self.plans[sig] = plan
        while len(self.plans) > self._max:
            _, old = self.plans.popitem(last=False)
            self.evicted += 1
            self._evicted_calls += old.calls
        return plan

    def _over_budget(self, plan: Plan) -> None:
        what = "peak" if self._planner.gc else "held bytes (allow_gc=False)"
        msg = (f"theano_lowmem: function {self.name or '<unnamed>'} with input shapes "
               f"{plan.signature} has a planned {what} of {plan.planned:,} B, over the budget "
               f"of {plan.budget:,} B (flag lowmem_budget)")
        if self._planner.action == "raise":
            self.__dict__["_own_error"] = True     # Function.__call__ then re-raises as is
            raise MemoryError(msg + "; nothing was allocated for this call")
        if not plan.warned:
            plan.warned = True
            warnings.warn(msg, stacklevel=4)

    def executed_nodes(self) -> list:
        """The Apply nodes in the order the current plan runs (the link order before a call)."""
        p = self._planner
        ids = self.current.order if self.current is not None else p.link_ids
        return [p.model.nodes[i] for i in ids]

    def clear_plans(self) -> None:
        """Forget every plan (the next call plans again)."""
        self._leave_arena()
        self.plans.clear()
        self.__dict__.update(_vm=self._planner.base_vm, current=None)


def hold_inner_plans(nodes, thunks) -> list:
    """``thunks`` with each Scan node's thunk wrapped so that, while it runs, its inner
    function reads its signature at the first step only, and, once a run has shown which
    plan the scan's outer input shapes select, later runs with those shapes call that
    plan's VM at every step with no Python in between, as stock Theano calls its VM.

    Scan's Python loop (scan_op.py:1122-1560, ``Scan.execute``) calls the inner VM once
    per step; the inner inputs are slices of the same sequences and of the same
    preallocated outputs, and non-sequences set once before the loop (lines 1210-1225),
    so their shapes and layouts do not change between the steps of one execution.  An
    inner function whose shape graphs read input *values* (``value_cells``) reads at
    every step.  Once the held plan has run a step and needs nothing around its VM
    (no arena, or a gc-off arena whose views stay in their cells, no allocator to
    drop), the later steps call that VM straight away (``_fast``; their count is added
    to the plan's calls when the hold ends).  The hold ends when the thunk returns or
    raises.  Only Python thunks (Scan's, without ``cthunk``) are wrapped, once.

    *Direct runs.*  Every inner input is a slice along the first axis of an outer input
    of the scan node (sequences, the state buffers made from the initial states'
    ``shape[1:]``, lines 1186-1203) or an outer input itself (shared values,
    non-sequences), so the outer input shapes decide the inner signature.  After a held
    run whose plan needed nothing around its VM, has no arena in the function at all
    (``arena_ids`` empty: Scan frees the cells after each run, design 0006), reads no
    value, no input layout and is under the budget, the node's outer tensor shapes map
    to that plan; a later run with the same shapes sets the inner ``Function.fn`` to the
    plan's VM for the run (``execute`` reads ``self.fn.fn`` once, line 1214, and
    ``Function.free`` reads its ``allow_gc`` and ``storage_map``, which are the same
    objects) and restores it after.  The plan must still be cached (else the run takes
    the held path) and planning not switched off (``failed``: then Theano's order, as
    the warning said); ``as_while`` scans, whose step count is not ``n_steps``, never run
    direct.  Each direct run adds ``n_steps`` to the plan's calls.  A stale mapping could
    only run an order planned for other sizes: every plan's order is valid for any
    sizes, and these functions place nothing in an arena."""
    from theano.scan_module.scan_op import Scan
    from theano.tensor.type import TensorType
    out = list(thunks)
    for i, (node, th) in enumerate(zip(nodes, thunks)):
        if not isinstance(node.op, Scan) or hasattr(th, "cthunk") or \
                getattr(th, "_lowmem_hold", False):
            continue
        inner = getattr(node.op, "fn", None)
        pv = planned_vm(inner)
        if pv is None:
            continue
        cells = getattr(th, "inputs", None)      # the node's input cells (scan_op.py:969)
        direct = None
        if cells is not None and len(cells) == len(node.inputs) and \
                not getattr(node.op, "as_while", True):
            direct = {"steps": cells[0],
                      "cells": tuple(c for c, v in zip(cells[1:], node.inputs[1:])
                                     if isinstance(v.type, TensorType)),
                      "plans": {}}

        def held(th=th, d=pv.__dict__, pv=pv, inner=inner, direct=direct):
            # the outer shapes are read before and after the run, never held during it
            # (a tracemalloc peak of the call would count them)
            if direct is not None:
                hit = direct["plans"].get(_outer_key(direct["cells"]))
                if hit is not None and d["failed"] is None and \
                        d["plans"].get(hit.signature) is hit:
                    d["current"], d["_vm"] = hit, hit.vm
                    pv._drop_short()
                    inner.fn = hit.vm
                    try:
                        return th()
                    finally:
                        inner.fn = pv
                        steps = direct["steps"][0]
                        if steps is not None:      # never mask the run's own error
                            hit.calls += int(steps)
            d["_hold"] = True
            pv._drop_short()
            try:
                return th()
            finally:
                plan = d["_held"]
                if plan is not None:
                    plan.calls += d["_fast_calls"]
                    if direct is not None and d["_fast"] is plan.vm and _direct_ok(pv, plan):
                        key = _outer_key(direct["cells"])
                        if key is not None:
                            direct["plans"][key] = plan
                d.update(_hold=False, _held=None, _fast=None, _fast_calls=0)
        held.__dict__.update(getattr(th, "__dict__", {}))
        held._lowmem_hold = True
        out[i] = held
    return out


def _outer_key(cells):
    """The shapes in the scan node's outer tensor cells (None if one is empty)."""
    try:
        return tuple([c[0].shape for c in cells])
    except AttributeError:
        return None


def _direct_ok(pv: PlannedVM, plan: Plan) -> bool:
    """Whether runs may call ``plan``'s VM for every step (see :func:`hold_inner_plans`)."""
    p, d, vm = pv._planner, pv.__dict__, plan.vm
    return (d["failed"] is None and not p.arena_ids and plan.arena is None
            and not p.value_cells and not p.fortran_inputs and not plan.over_budget
            and getattr(vm, "storage_map", None) is d["storage_map"]
            and getattr(vm, "allow_gc", None) == d["allow_gc"]
            and getattr(vm, "need_update_inputs", True) == d["need_update_inputs"])


def release_shared_cells(cells) -> None:
    """Switch off the arena of every function whose arena cells are among ``cells``.

    ``Function.copy(share_memory=True)`` links the copy over the original's cells
    (function_module.py, ``Function.copy``): the copy's plans may run another order
    over the views the original placed, so neither places intermediates in an arena
    (the copy never does: its cells are supplied)."""
    ids = {id(c) for c in cells}
    for planner in list(_ARENA_PLANNERS):
        if any(id(c) in ids for c in planner.arena_cells.values()):
            planner.disable_arena("its cells are shared with a Function.copy(share_memory=True)")
            _ARENA_PLANNERS.discard(planner)


def planned_vm(f) -> PlannedVM | None:
    """The :class:`PlannedVM` of a compiled function, if it has one."""
    fn = getattr(f, "fn", None)
    return fn if isinstance(fn, PlannedVM) else None
