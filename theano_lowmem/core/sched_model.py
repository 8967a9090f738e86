"""Per-node byte tables the schedulers read (derived once from :mod:`.memory`'s rules).

The peak itself is always scored by :func:`theano_lowmem.core.memory.peak`; this
module only tabulates, per node, what the incremental evaluators of the
heuristics and of the exact search need: the bytes a node allocates and the
freeable buffers it reads.  ``tests/test_schedule.py`` checks that the
incremental live bytes they compute (:func:`fast_trace`, the exact search's
windows, Liu's tree profiles) equal :func:`~.memory.simulate`.

It also holds :class:`Budget`, the deterministic work counter every search
charges, so that the same graph gets the same order on a loaded machine as on
an idle one.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

from .graph import Graph

#: Work units per second of ``time_budget``.  One unit is about a microsecond of
#: pure-Python work on the 2-core development box (an A* state expanded costs
#: 1 + its children, a heuristic about 2 per node and edge); calibrated with
#: ``benchmarks/bench_schedule.py`` so that a 1 s budget runs well under 1 s there.
#: Measured at stop 18 (``docs/results/nets.md``): 0.42-0.49 us per unit for ``schedule``
#: on the 79-84-node RandWire cells of ``families.randwire`` (a budget of ``s`` seconds
#: runs in about ``s / 2``); left as it is, since the units, not the seconds, decide the
#: orders.
WORK_PER_SECOND = 1_000_000
#: The wall clock is read once per this many work units, at deterministic points.
CLOCK_EVERY = 4096


@dataclass(frozen=True)
class MemTables:
    """Byte tables of a graph under the memory model of :mod:`.memory`.

    ``alloc[n]``: bytes node ``n`` allocates (its non-alias outputs).
    ``spike[n]``: ``alloc[n]`` + its workspace: what its step adds to the live bytes.
    ``reads[n]``: the *freeable* buffers (roots) ``n`` reads, sorted, no duplicates;
    a buffer is freeable if its alias group is not pinned and has a reader.
    ``readers[b]``: the nodes reading any value of buffer ``b``'s alias group, sorted
    (keys: the freeable buffers, ascending).
    ``held[n]``: bytes of ``n``'s output buffers that are never freed.
    ``inbytes[n]``: bytes of every produced buffer ``n`` reads (freeable or not).
    ``held_total``: bytes live when the call returns (pinned groups, unread buffers).
    ``size``: the graph's ``size``; ``edges``: N + number of (node, input) and
    (node, predecessor) pairs, the unit heuristics' work is counted in.
    """

    alloc: tuple[int, ...]
    spike: tuple[int, ...]
    reads: tuple[tuple[int, ...], ...]
    readers: dict[int, tuple[int, ...]]
    held: tuple[int, ...]
    inbytes: tuple[int, ...]
    held_total: int
    size: tuple[int, ...] = ()
    edges: int = 0
    #: ``readers`` split for :func:`fast_trace`: ``(reader, size)`` of the freeable buffers
    #: with one reader, ``(readers, size)`` of the others
    single: tuple[tuple[int, int], ...] = ()
    multi: tuple[tuple[tuple[int, ...], int], ...] = ()
    #: ``outs[n]``: ``(buffer, size)`` of node ``n``'s own freeable output buffers (not
    #: views; the exact windows' tables)
    outs: tuple[tuple[tuple[int, int], ...], ...] = ()
    #: :func:`traced`'s memo: ``tuple(order) -> (during, after, peak)`` of the last
    #: ``TRACE_MEMO`` orders it scored (a cache, not part of the tables' value: every
    #: instance, ``dataclasses.replace``'s included, starts with its own empty one)
    traces: dict = field(default_factory=dict, init=False, compare=False, repr=False)


def mem_tables(graph: Graph) -> MemTables:
    """Tabulate :class:`MemTables` for ``graph``.  O(V + E).

    Examples
    --------
    >>> g = Graph([[0], [1], [1]], [[1], [2], [3]], size=[0, 8, 4, 4], pinned=[2, 3])
    >>> t = mem_tables(g)
    >>> t.alloc, t.reads, t.held_total
    ((8, 4, 4), ((), (1,), (1,)), 8)
    """
    size, producer, g_readers, pinned = graph.size, graph.producer, graph.readers, graph.group_pinned
    root = graph._roots                 # graph.root(v) of every value, one table
    alloc, held = [0] * graph.n_nodes, [0] * graph.n_nodes
    readers: dict[int, tuple[int, ...]] = {}
    group = graph.group
    for b in graph.buffers:
        vs = group[b]
        rd = g_readers[b] if len(vs) == 1 else tuple(sorted({n for v in vs for n in g_readers[v]}))
        alloc[producer[b]] += size[b]
        if b in pinned or not rd:
            held[producer[b]] += size[b]
        else:
            readers[b] = rd
    reads, inbytes = [], []
    for ins in graph.node_inputs:
        roots = sorted({root[v] for v in ins}) if len(ins) > 1 else [root[v] for v in ins]
        rd, ib = [], 0
        for b in roots:
            if b in readers:
                rd.append(b)
            if producer[b] >= 0:
                ib += size[b]
        reads.append(tuple(rd))
        inbytes.append(ib)
    spike = tuple(a + w for a, w in zip(alloc, graph.workspace))
    edges = graph.n_nodes + sum(map(len, graph.node_inputs)) + sum(map(len, graph.preds))
    single = tuple((rd[0], size[b]) for b, rd in readers.items() if len(rd) == 1)
    multi = tuple((rd, size[b]) for b, rd in readers.items() if len(rd) > 1)
    alias_of = graph.alias_of
    outs = []
    for vs in graph.node_outputs:
        outs.append(tuple([(b, size[b]) for b in vs if alias_of[b] < 0 and b in readers]))
    return MemTables(tuple(alloc), spike, tuple(reads), readers, tuple(held), tuple(inbytes),
                     sum(held), size, edges, single, multi, tuple(outs))


def static_lower_bound(tables: MemTables) -> int:
    """A peak no order can beat: max(bytes held at the end, max over nodes of inputs + outputs + workspace).

    Examples
    --------
    >>> g = Graph([[0], [1]], [[1], [2]], size=[0, 8, 4], pinned=[2])
    >>> static_lower_bound(mem_tables(g))
    12
    """
    step = max((a + i for a, i in zip(tables.spike, tables.inbytes)), default=0)
    return max(step, tables.held_total)


def fast_trace(t: MemTables, order: Sequence[int]) -> tuple[list[int], list[int]]:
    """``(during, after)`` of :func:`~.memory.simulate` from the tables, in O(N + E).

    The incremental evaluator the schedulers score candidates with (about 5x
    faster than ``simulate``); ``order`` must be valid (not checked).  Tests check
    it equals ``simulate`` on random graphs and orders.

    Examples
    --------
    >>> g = Graph([[0], [1], [2]], [[1], [2], [3]], size=[0, 8, 8, 8], pinned=[3])
    >>> fast_trace(mem_tables(g), [0, 1, 2])
    ([8, 16, 16], [8, 8, 8])
    """
    pos = [0] * len(t.alloc)
    for i, n in enumerate(order):
        pos[n] = i
    free = [0] * len(order)
    for r, sz in t.single:
        free[pos[r]] += sz
    at = pos.__getitem__
    for rd, sz in t.multi:
        free[max(map(at, rd))] += sz
    during, after, live = [], [], 0
    alloc, spike = t.alloc, t.spike
    for i, n in enumerate(order):
        during.append(live + spike[n])
        live += alloc[n] - free[i]
        after.append(live)
    return during, after


#: :func:`traced` remembers the traces of this many orders (per :class:`MemTables`).
TRACE_MEMO = 4


def traced(t: MemTables, order: Sequence[int]) -> tuple[list[int], list[int], int]:
    """``(during, after, peak)``: :func:`fast_trace` of ``order`` and its peak, from
    ``t.traces`` when it scored the same order among the last ``TRACE_MEMO`` (``schedule``
    scores the same order again at several points: a heuristic's order and the proof of
    its peak, a descent's result, the final order).  The lists are the caller's to change.

    Examples
    --------
    >>> g = Graph([[0], [1], [2]], [[1], [2], [3]], size=[0, 8, 8, 8], pinned=[3])
    >>> t = mem_tables(g)
    >>> traced(t, [0, 1, 2]), traced(t, (0, 1, 2)), len(t.traces)
    (([8, 16, 16], [8, 8, 8], 16), ([8, 16, 16], [8, 8, 8], 16), 1)
    """
    key = tuple(order)
    memo = t.traces
    hit = memo.get(key)
    if hit is not None:
        return list(hit[0]), list(hit[1]), hit[2]
    during, after = fast_trace(t, key)
    peak = max(during) if during else 0
    if len(memo) >= TRACE_MEMO:
        del memo[next(iter(memo))]          # the oldest
    memo[key] = (tuple(during), tuple(after), peak)
    return during, after, peak


def fast_peak(t: MemTables, order: Sequence[int]) -> int:
    """``memory.peak`` of a valid ``order`` via :func:`fast_trace`."""
    during = fast_trace(t, order)[0]
    return max(during) if during else 0


class Budget:
    """A deterministic allowance of work units, with a wall-clock safety cap.

    Every search decision depends only on the units spent (:meth:`spend`,
    :meth:`left`), never on the time, so one call does the same work, and returns
    the same order, on a fast or a slow machine.  The clock is read only every
    :data:`CLOCK_EVERY` units to enforce ``cap`` (``time.perf_counter()`` value); hitting
    the cap, which should essentially never happen (it is 2x the budget plus 0.1 s),
    is the **only** source of non-determinism, and it is reported (``capped``).

    Parameters
    ----------
    work : int or None
        Units allowed; None for no limit.
    cap : float or None
        ``time.perf_counter()`` value after which everything stops; None for none.

    Examples
    --------
    >>> b = Budget(10, None)
    >>> b.spend(4), b.left(), b.spend(6), b.exhausted
    (True, 6, False, True)
    """

    __slots__ = ("limit", "spent", "cap", "capped", "_next_clock")

    def __init__(self, work: int | None, cap: float | None) -> None:
        self.limit, self.spent, self.cap, self.capped = work, 0, cap, False
        self._next_clock = CLOCK_EVERY

    @classmethod
    def for_seconds(cls, seconds: float | None) -> "Budget":
        """``seconds * WORK_PER_SECOND`` units, capped at ``2 * seconds + 0.1`` s of wall time."""
        if seconds is None:
            return cls(None, None)
        return cls(int(seconds * WORK_PER_SECOND), time.perf_counter() + 2 * seconds + 0.1)

    def left(self) -> int:
        """Units left (a large number when unlimited, 0 once capped)."""
        if self.capped:
            return 0
        return max(self.limit - self.spent, 0) if self.limit is not None else 1 << 62

    @property
    def exhausted(self) -> bool:
        return self.capped or (self.limit is not None and self.spent >= self.limit)

    def spend(self, units: int) -> bool:
        """Count ``units`` done; False once the work or the wall-clock cap is used up."""
        spent = self.spent = self.spent + units
        if spent >= self._next_clock:
            self._next_clock = spent + CLOCK_EVERY
            if self.cap is not None and not self.capped and time.perf_counter() > self.cap:
                self.capped = True
        limit = self.limit                  # ``not self.exhausted``, inlined
        return not (self.capped or (limit is not None and spent >= limit))
