"""One arena per call-time plan: the views handed to the ops (glue over :mod:`core.arena`).

For a plan (exact sizes, the order its VM runs), every *arena value* (an
intermediate buffer root the caller can never see: see
``LowMemLinker._never_shared``) gets an offset in one allocation
(:func:`theano_lowmem.core.arena.place`), and its storage cell gets a
C-contiguous, 64-byte-aligned numpy view ``arena[off:off + nbytes]`` of its
exact shape and dtype before the call runs.  Ops that write into a fitting
array already in their output cell then allocate nothing:

* C ``Elemwise`` calls ``PyArray_Resize`` on the array in its cell
  (elemwise_cgen.py:158-170); with the same number of elements numpy only
  rewrites dims and strides (a view of exact shape keeps both), with another
  size it refuses to resize a view (it does not own its data) and the op
  allocates a new array: never a write outside the view.
* Other C ops (CAReduce, Dot22, Gemv, CorrMM, Pool, Alloc...) reuse the array
  when its dims (and, for BLAS, strides) fit, else allocate.
* Python ``perform`` ops mostly allocate: they replace the view.

With ``allow_gc=False`` the views stay in the cells between calls, so they are
put there once per plan switch.  After the first call of a plan, the values
whose cell no longer holds their view (their op allocated its own array) are
the plan's *allocators*: the arena is placed again without them, so it reserves
no bytes they never use, and their cells are emptied after every call (an
allocator allocates on every call anyway: the array it left would only be held).  With ``allow_gc=True`` (flag ``lowmem_arena=always``)
the VM empties the cells during the call, so the views are put back before
every call and the arena stays allocated between calls.

When a plan stops being the current one, its views are taken out of the cells
and its arena is released: a cached plan holds offsets, not memory.
Design record: docs/design/0006-arena.md.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .core.arena import ALIGN, CONFLICT_SECOND_MAX, GREEDY_IF_ABOVE, ArenaPlan, bit_lists, \
    check_arena, check_arena_conflicts, place, place_conflicts
from .core.conflicts import LazyStructure, conflict_sets
from .core.memory import Lifetime


def new_arena(nbytes: int, align: int = ALIGN) -> np.ndarray:
    """A uint8 array of ``nbytes`` whose first byte is ``align``-aligned."""
    raw = np.empty(nbytes + align, dtype=np.uint8)
    skip = (-raw.ctypes.data) % align
    return raw[skip:skip + nbytes]


class PlanArena:
    """The arena of one plan: placement, then (while current) the buffer and its views.

    Parameters
    ----------
    lifetimes : dict of int to Lifetime
        Arena candidates in the plan's order (value id -> lifetime).
    cells : dict of int to list
        Value id -> its storage cell.
    group_cells : dict of int to list of list
        Value id -> the cells of every value sharing its buffer (views, inplace
        outputs), itself included.
    shapes : dict of int to tuple
        Value id -> exact shape.
    dtypes : dict of int to numpy dtype
    check : bool
        Check the placement (:func:`~theano_lowmem.core.arena.check_arena`).
    conflicts : Conflicts, optional
        For a lazy graph (no single executed order): the values' conflict sets
        (:func:`lazy_conflicts`); ``lifetimes`` then only names the values (its
        values are ignored) and the placement is
        :func:`~theano_lowmem.core.arena.place_conflicts`.
    provisional : bool
        The placement will be redone by :meth:`probe` after the first call (gc off):
        place with the cheapest method only (``greedy=False``) until then.
    """

    def __init__(self, lifetimes: dict, cells: dict, group_cells: dict, shapes: dict,
                 dtypes: dict, check: bool = False, conflicts: "Conflicts | None" = None,
                 provisional: bool = False) -> None:
        self.conflicts = conflicts
        self.provisional = provisional
        self.lifetimes = lifetimes
        self.cells, self.group_cells = cells, group_cells
        self.shapes, self.dtypes = shapes, dtypes
        self.check = check
        self.allocators: tuple[int, ...] = ()
        self.allocator_cells: list = []
        self.probed = False
        self.buffer = None
        self.views: list | None = None
        self.installed = False
        self.plan = self._place(lifetimes, greedy=not provisional)

    def _place(self, lifetimes: dict, greedy: bool = True) -> ArenaPlan:
        ci = self.conflicts
        if ci is not None:
            sizes = [0] * len(ci.ids)
            active = []
            for v in lifetimes:
                k = ci.index[v]
                sizes[k] = int(np.prod(self.shapes[v], dtype=np.int64)) * self.dtypes[v].itemsize
                active.append(k)
            plan = place_conflicts(ci.ids, sizes, ci.conflicts, active, order=ci.order,
                                   lists=ci.lists, greedy=greedy)
            if self.check:
                check_arena_conflicts(ci.ids, sizes, ci.conflicts, active, plan)
            return plan
        lts = list(lifetimes.values())
        plan = place(lts, greedy=greedy)
        if self.check:
            check_arena(lts, plan)
        return plan

    @property
    def ids(self) -> tuple[int, ...]:
        """The values that get arena bytes (allocators excluded)."""
        return tuple(self.lifetimes)

    @property
    def allocator_bytes(self) -> int:
        """Bytes of the allocators' own arrays (held with ``allow_gc=False``)."""
        return sum(int(np.prod(self.shapes[v], dtype=np.int64)) * self.dtypes[v].itemsize
                   for v in self.allocators)

    def _views(self) -> list:
        if self.views is None:
            buf = new_arena(self.plan.size)
            views = []
            for v in self.lifetimes:
                off = self.plan.offset[v]
                views.append((self.cells[v], np.ndarray(self.shapes[v], dtype=self.dtypes[v],
                                                        buffer=buf, offset=off)))
            self.buffer, self.views = buf, views
        return self.views

    def refill(self) -> None:
        """Put the views in their cells (allocating the arena if released)."""
        for c, view in self._views():
            c[0] = view
        self.installed = True

    def emptied_first(self) -> bool:
        """Whether the first view is out of its cell (``Function.free()`` empties every
        cell at once, function_module.py:1009-1021): one comparison per call."""
        views = self.views
        return bool(views) and views[0][0][0] is not views[0][1]

    def release(self) -> None:
        """Forget the buffer and the views (the caller empties the cells)."""
        self.buffer = self.views = None
        self.installed = False

    def probe(self, all_cells: Sequence[list]) -> bool:
        """After a ``allow_gc=False`` call: find the allocators (ops that replaced their
        view) and place the arena again without them (they reserve no bytes), or, if
        there are none, with every method when the placement was provisional and a
        refinement may pay.  Returns True if the views changed (the new ones are
        installed)."""
        self.probed = True
        owner = _owner(self.buffer)
        allocators = []
        for v, (c, view) in zip(self.lifetimes, self.views or ()):
            a = c[0]
            if a is not view and (owner is None or _owner(a) is not owner):
                allocators.append(v)
        provisional, self.provisional = self.provisional, False
        if allocators:
            self.allocators = tuple(allocators)
            self.allocator_cells = [c for v in allocators for c in self.group_cells[v]]
            drop = set(allocators)
            self.lifetimes = {v: lt for v, lt in self.lifetimes.items() if v not in drop}
            self.plan = self._place(self.lifetimes)
        elif provisional and self._refinable():
            plan = self._place(self.lifetimes)
            if plan.size >= self.plan.size:
                return False
            self.plan = plan
        else:
            return False
        self.release()
        for c in all_cells:
            c[0] = None
        self.refill()
        return True

    def _refinable(self) -> bool:
        """Whether the full placement may beat the provisional one (it runs its second
        method only above ``GREEDY_IF_ABOVE`` x the bound, and over a conflict graph only
        up to ``CONFLICT_SECOND_MAX`` buffers)."""
        p = self.plan
        if p.size <= GREEDY_IF_ABOVE * p.lower_bound:
            return False
        return self.conflicts is None or len(self.lifetimes) <= CONFLICT_SECOND_MAX

    def summary(self) -> dict:
        """Figures for reports (all modelled: bytes the plan reserves)."""
        return dict(arena_bytes=self.plan.size, arena_lower_bound=self.plan.lower_bound,
                    arena_method=self.plan.method, arena_values=len(self.lifetimes),
                    allocators=len(self.allocators), allocator_bytes=self.allocator_bytes,
                    probed=self.probed)


def _owner(a):
    """The array that owns ``a``'s data (``a`` itself if it owns it; None if not an array)."""
    if not isinstance(a, np.ndarray):
        return None
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def arena_lifetimes(lts: Sequence[Lifetime], ids: Sequence[int]) -> dict:
    """The lifetimes of ``ids`` (value ids), in the order of ``ids``."""
    by = {lt.buffer: lt for lt in lts}
    return {v: by[v] for v in ids if v in by}


class Conflicts:
    """The conflict sets of a lazy graph's arena candidates (built once per function).

    Attributes
    ----------
    ids : list of int
        Value id of each index.
    index : dict of int to int
        Value id -> index.
    conflicts : list of int
        Per index, the bit set of indices it may be live with
        (:func:`theano_lowmem.core.conflicts.conflict_sets`).
    order : list of int
        Indices by their writer's position in the model's topological order
        (the second best-fit priority).
    """

    def __init__(self, ids, conflicts, order) -> None:
        self.ids = list(ids)
        self.index = {v: k for k, v in enumerate(self.ids)}
        self.conflicts = list(conflicts)
        self.order = list(order)
        self._lists = None

    @property
    def lists(self) -> list:
        """Each conflict set as a list of indices (made once: it depends on the graph only)."""
        if self._lists is None:
            self._lists = bit_lists(self.conflicts)
        return self._lists


def lazy_conflicts(fgraph, model, ids) -> Conflicts:
    """Conflict sets of arena candidates ``ids`` (model value ids) in a graph with lazy
    nodes, from the C VM's walk (:mod:`theano_lowmem.core.conflicts`).

    ``model`` numbers the nodes in a topological order of ``fgraph`` that honours
    ``fgraph.orderings()`` (``fgraph.toposort()``).  The walk's facts used:
    prerequisites are always evaluated before a node (lazylinker_c.c:571-580); a
    non-lazy node evaluates all its inputs (lines 683-700); ``IfElse`` asks for its
    condition first (ifelse.py:246); any other lazy op may skip any input (the
    inputs and outputs of such ops must not be among ``ids``).  ``IfElse`` with
    ``as_view`` returns the then-branch's array (its ``view_map``) and copies the
    else-branch's (ifelse.py:255-282), so its output is a view, never a write: a
    buffer's writers are its root's producer and the ops that destroy it
    (``destroy_map``), its touching nodes those and every reader of any alias.
    """
    from theano.ifelse import IfElse
    from .executed import is_lazy_node
    g = model.graph
    nodes = model.nodes
    n = len(nodes)
    node_id = {a: i for i, a in enumerate(nodes)}
    ords = fgraph.orderings()
    prereq = [[node_id[p] for p in ords.get(a, ()) if p in node_id] for a in nodes]
    always, requesters = [], [[] for _ in range(n)]
    for i, a in enumerate(nodes):
        data = [g.producer[v] for v in g.node_inputs[i] if g.producer[v] >= 0]
        if not is_lazy_node(a):
            cond = data
        elif isinstance(a.op, IfElse):
            v0 = g.node_inputs[i][0]
            cond = [g.producer[v0]] if g.producer[v0] >= 0 else []
        else:
            cond = []
        always.append(sorted(set(prereq[i]) | set(cond)))
        for p in set(data) | set(prereq[i]):
            requesters[p].append(i)
    outs = [model.value_id[v] for v in fgraph.outputs if v in model.value_id]
    roots = frozenset(g.producer[v] for v in outs if g.producer[v] >= 0)
    # the pinned chain (order.OrderFeature: each chained node's orderings() prerequisite is
    # the previous one; conflict_sets checks it against ``prereq``)
    from .order import OrderFeature
    chain = [node_id[a] for f in fgraph._features if isinstance(f, OrderFeature) and f.valid
             for a in f.chain(fgraph) if a in node_id]
    s = LazyStructure(list(range(n)), always, requesters, roots, prereqs=prereq, chain=chain)
    writer, writers, touching = [], [], []
    variables = model.variables

    def destroys(v: int) -> bool:
        owner = variables[v].owner
        if owner is None:
            return False
        return owner.outputs.index(variables[v]) in (getattr(owner.op, "destroy_map", None) or {})

    for b in ids:
        grp = g.group[b]
        made = {g.producer[v] for v in grp if g.producer[v] >= 0}
        writer.append(g.producer[b])
        writers.append(sorted({g.producer[b]} | {g.producer[v] for v in grp
                                                 if v != b and destroys(v)}))
        touching.append(sorted(made | {r for v in grp for r in g.readers[v]}))
    conf = conflict_sets(s, writer, writers, touching)
    order = sorted(range(len(ids)), key=lambda k: (writer[k], k))
    return Conflicts(ids, conf, order)
