"""Cut lower bounds on the peak, and the offline reference scheduler built on them.

While node ``x`` runs, the live bytes are those of the set ``D`` of nodes run before
it (:func:`~.memory.simulate`: every buffer produced in ``D`` that a node outside
``D`` still reads, or that is held to the end) plus ``x``'s own step (outputs and
workspace).  ``D`` is a *down-set* (it holds the predecessors of its nodes) that
contains the executed nodes and ``x``'s ancestors and none of ``x`` and its
descendants.  So in every order that completes a down-set ``S``::

    peak >= spike[x] + min { live(D) : S | anc(x) <= D, D & ({x} | desc(x)) = {} }

for every unrun ``x``.  ``live(D)`` is a cut function of ``D`` (a buffer costs its
bytes when its producer is in ``D`` and not all of its readers are), so the minimum
is an s-t minimum cut (Picard 1976, minimum closure): nodes on the source side are
``D``; a buffer ``b`` with producer ``p`` and readers ``R`` becomes an auxiliary
vertex ``y`` with an arc ``p -> y`` of its size and infinite arcs ``y -> r``
(``y`` can join ``D`` only if every reader has, so the size is paid exactly when ``p``
is in ``D`` and some reader is not); a buffer held to the end is an arc
``p -> sink``; infinite arcs ``n -> pred`` keep ``D`` a down-set.

Unlike the bound of :meth:`.sched_exact._Window._h_strong` (bytes live during ``x``
in *every* order), the cut also charges the nodes that may run before or after
``x``: a reader of an ancestor's buffer that runs after ``x`` keeps that buffer live,
and one that runs before has its own outputs live.  At the root of the 40-100 node
graphs of ``benchmarks/bench_ordering.py`` it is within a few percent of the optimum.

:func:`reference_schedule` is the offline reference of the benchmark and the
tests (not used by call-time planning): the exact best-first search of
:func:`.schedule.exact_schedule`, started from the cut bound (the search can stop as
soon as it reaches it) and with a larger budget.

References
----------
J.-C. Picard, "Maximal closure of a graph and applications to combinatorial
problems", Management Science 22(11), 1976.  J. Edmonds, R. M. Karp,
"Theoretical improvements in algorithmic efficiency for network flow problems",
JACM 19(2), 1972.
"""
from __future__ import annotations

from collections import deque
from typing import Iterable

from .graph import Graph
from .sched_groups import closures
from .sched_model import MemTables, mem_tables

#: Capacity of the arcs no minimum cut crosses (precedence, "reader after buffer").
_INF = 1 << 62


def _bits(m: int) -> Iterable[int]:
    """Indices of the set bits of ``m``, ascending."""
    while m:
        low = m & -m
        m ^= low
        yield low.bit_length() - 1


class CutBound:
    """Minimum-cut lower bounds of one graph (node sets are bitmasks over node ids).

    Parameters
    ----------
    graph : Graph
    tables : MemTables, optional
        ``mem_tables(graph)``, computed when not given.

    Examples
    --------
    >>> # x -> a (8 bytes) -> c ; x -> b (8 bytes) -> d ; c and d small outputs
    >>> g = Graph([[0], [0], [1], [2]], [[1], [2], [3], [4]], size=[0, 8, 8, 1, 1], pinned=[3, 4])
    >>> cb = CutBound(g)
    >>> cb.node_bound(0, 1), cb.node_bound(0, 3), cb.lower_bound()   # the optimum is 10
    (8, 9, 9)
    >>> cb.node_bound(0b0011, 2)          # a and b ran: d before c frees b's 8 bytes
    10
    """

    def __init__(self, graph: Graph, tables: MemTables | None = None) -> None:
        t = tables or mem_tables(graph)
        n = graph.n_nodes
        self.n, self.graph = n, graph
        self.pred = [sum(1 << p for p in graph.preds[v]) for v in range(n)]
        self.anc, self.desc = closures(graph)
        self.bufs = [(graph.producer[b], sum(1 << r for r in rd), t.size[b])
                     for b, rd in sorted(t.readers.items())]
        self.held, self.spike = t.held, t.spike
        self.full = (1 << n) - 1
        self.flows = 0            # max-flow computations so far (the work unit of the bound)

    def node_bound(self, executed: int, x: int) -> int:
        """Least bytes live while ``x`` runs, over every order completing ``executed``.

        Parameters
        ----------
        executed : int
            A down-set of node ids (bit ``n`` set: node ``n`` ran), not holding ``x``.
        x : int
            An unrun node.

        Returns
        -------
        int
            ``spike[x]`` plus the least ``live(D)`` over the down-sets ``D`` that may run
            before ``x``: exact (it is reached by some completion).  Cost: one max-flow
            (Edmonds-Karp) on the nodes neither forced before nor after ``x``.
        """
        fixed, arcs = self._network(executed | self.anc[x], self.desc[x] | 1 << x)
        fixed += self.spike[x]
        return fixed + (self._max_flow(arcs) if arcs else 0)

    def lower_bound(self, executed: int = 0) -> int:
        """A lower bound on the peak of the remaining steps of any order completing
        ``executed`` (a down-set bitmask, default: nothing ran).

        Returns
        -------
        int
            The max of :meth:`node_bound` over the unrun nodes, and of the bytes every
            order holds once they all ran.  Cost: one max-flow per unrun node.
        """
        unrun = self.full & ~executed
        held = sum(self.held[v] for v in range(self.n))
        return max([held] + [self.node_bound(executed, x) for x in _bits(unrun)])

    def _network(self, before: int, after: int) -> tuple[int, dict]:
        """Bytes every ``D`` in ``[before, ~after]`` keeps live, and the flow network of
        the rest: ``{u: {v: capacity}}`` with ``'s'``/``'t'`` the source (``D``) and sink,
        node ids, and ``('y', b)`` for a buffer whose readers may split."""
        free = self.full & ~before & ~after
        fixed = sum(self.held[v] for v in _bits(before))
        arcs: dict = {}

        def arc(u: object, v: object, cap: int) -> None:
            row = arcs.setdefault(u, {})
            row[v] = row.get(v, 0) + cap
            arcs.setdefault(v, {}).setdefault(u, 0)

        for j, (p, readers, size) in enumerate(self.bufs):
            if after >> p & 1:
                continue                           # produced after x: not live yet
            src = "s" if before >> p & 1 else p
            if readers & after:                    # a reader runs after x: live iff p ran
                if src == "s":
                    fixed += size
                else:
                    arc(p, "t", size)
            elif readers & free:                   # live iff p ran and a free reader did not
                y = ("y", j)
                arc(src, y, size)
                for r in _bits(readers & free):
                    arc(y, r, _INF)
        for v in _bits(free):
            if self.held[v]:
                arc(v, "t", self.held[v])
            for p in _bits(self.pred[v] & free):
                arc(v, p, _INF)
        if "s" not in arcs or "t" not in arcs:
            return fixed, {}
        return fixed, arcs

    def _max_flow(self, arcs: dict) -> int:
        """Edmonds-Karp (shortest augmenting paths) from ``'s'`` to ``'t'``; ``arcs`` is
        the residual network and is consumed."""
        self.flows += 1
        flow = 0
        while True:
            prev: dict = {"s": None}
            queue = deque(["s"])
            while queue and "t" not in prev:
                u = queue.popleft()
                for v, cap in arcs[u].items():
                    if cap > 0 and v not in prev:
                        prev[v] = u
                        queue.append(v)
            if "t" not in prev:
                return flow
            push, v = _INF, "t"
            while prev[v] is not None:
                push = min(push, arcs[prev[v]][v])
                v = prev[v]
            v = "t"
            while prev[v] is not None:
                u = prev[v]
                arcs[u][v] -= push
                arcs[v][u] += push
                v = u
            flow += push


def cut_lower_bound(graph: Graph, tables: MemTables | None = None) -> int:
    """A peak no order of ``graph`` can beat: :meth:`CutBound.lower_bound` of the empty set.

    O(N) max-flows on graphs of O(N + E) arcs; offline (tens of ms at 50-100 nodes).

    Examples
    --------
    >>> g = Graph([[0], [0], [1], [2]], [[1], [2], [3], [4]], size=[0, 8, 8, 1, 1], pinned=[3, 4])
    >>> cut_lower_bound(g)       # the optimum is 10: a, c, b, d
    9
    """
    return CutBound(graph, tables).lower_bound()
