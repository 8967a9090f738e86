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


def node_cut_bound(graph: Graph, tables: MemTables, x: int, target: int | None = None,
                   max_work: int | None = None) -> tuple[int, bool, int]:
    """A lower bound on the peak of every order of ``graph`` from node ``x`` alone:
    :meth:`CutBound.node_bound` ``(0, x)``, computed with list-based arcs (Dinic's
    blocking flows) and able to stop early, for call-time proofs of optimality.

    Parameters
    ----------
    graph, tables : Graph and its MemTables
    x : int
        A node.  Only nodes at a peak step of an order can give a bound that reaches its
        peak (that order completes every down-set the bound minimises over), so a caller
        proving an order optimal tries those.
    target : int, optional
        Stop as soon as the bound reaches ``target`` (the flow found so far is a lower
        bound on the maximum flow).
    max_work : int, optional
        Stop after about this many arc scans (work units).

    Returns
    -------
    (bound, exact, work)
        ``bound``: a proven lower bound on the optimum peak; ``exact``: the maximum flow
        was completed (``bound == CutBound(graph).node_bound(0, x)``); ``work``: arc scans
        and arcs built (the units to charge).

    Examples
    --------
    >>> g = Graph([[0], [0], [1], [2]], [[1], [2], [3], [4]], size=[0, 8, 8, 1, 1], pinned=[3, 4])
    >>> t = mem_tables(g)
    >>> [node_cut_bound(g, t, v)[:2] for v in range(4)]
    [(8, True), (8, True), (9, True), (9, True)]
    """
    fixed, head, to, cap, work = _network(graph, tables, x, [0] * graph.n_nodes)
    need = None if target is None else target - fixed
    if not head[0] or not head[1] or (need is not None and need <= 0):
        return fixed, not head[0] or not head[1], work
    if need is not None and min(sum(cap[e] for e in head[0]),
                                sum(cap[e ^ 1] for e in head[1])) < need:
        # the down-sets "ancestors only" and "all but x's descendants" cost the source's
        # and the sink's arcs: the flow is below ``need``, no proof from this node
        return fixed, False, work + len(head[0]) + len(head[1])
    flow, exact, work = _dinic(head, to, cap, need, max_work, work)
    return fixed + flow, exact, work


def cut_split(graph: Graph, tables: MemTables, x: int, side: list[int],
              max_work: int | None = None) -> tuple[list[int] | None, int, int]:
    """The least bytes live while ``x`` runs over the down-sets ``D`` that run before it,
    given nodes forced before it (``side[v] == 1``) or after it (``side[v] == 2``), and
    one such ``D``: the source side of a minimum cut of :func:`node_cut_bound`'s network.

    Parameters
    ----------
    graph, tables : Graph and its MemTables
    x : int
        An unrun node (``side[x]`` is set to 2).
    side : list of int
        Per node: 0 free, 1 forced before ``x`` (a down-set), 2 forced after it (an
        up-set); updated in place: ``x``'s ancestors become 1, ``x`` and its descendants
        2.  Not both of an edge's ends may be forced against it.
    max_work : int, optional
        Give up (``D`` None) after about this many arc scans.

    Returns
    -------
    (D, value, work)
        ``D``: per node, 1 if it runs before ``x`` (a down-set holding the nodes forced
        before ``x``; running it, then ``x``, then the rest, each part in any valid order,
        gives ``x`` a step of ``value`` bytes, the least possible), None if ``max_work``
        ran out; ``work``: arc scans and arcs built (the units to charge).

    Examples
    --------
    >>> g = Graph([[0], [0], [1], [2]], [[1], [2], [3], [4]], size=[0, 8, 8, 1, 1], pinned=[3, 4])
    >>> cut_split(g, mem_tables(g), 3, [0, 0, 0, 0])[:2]       # d after b alone: 8 + 1
    ([0, 1, 0, 0], 9)
    >>> cut_split(g, mem_tables(g), 3, [1, 0, 0, 0])[:2]       # a forced first: c frees it
    ([1, 1, 1, 0], 10)
    """
    fixed, head, to, cap, work = _network(graph, tables, x, side)
    if head[0] and head[1]:
        flow, exact, work = _dinic(head, to, cap, None, max_work, work)
        if not exact:
            return None, fixed + flow, work
    else:
        flow = 0
    n = graph.n_nodes
    D = [1 if s == 1 else 0 for s in side]
    seen = [False] * len(head)          # the source side: reachable in the residual graph
    seen[0] = True
    queue = [0]
    for u in queue:
        for e in head[u]:
            v = to[e]
            if cap[e] > 0 and not seen[v]:
                seen[v] = True
                queue.append(v)
                if 2 <= v < n + 2:
                    D[v - 2] = 1
        work += len(head[u])
    return D, fixed + flow, work


def _network(graph: Graph, tables: MemTables, x: int, side: list[int]
             ) -> tuple[int, list[list[int]], list[int], list[int], int]:
    """:func:`node_cut_bound`'s flow network for node ``x``, with ``side`` (updated in
    place) as in :func:`cut_split`: ``(fixed bytes, head, to, cap, work)`` (vertex 0 the
    source, 1 the sink, node ``v`` is ``v + 2``, buffer vertices after the nodes)."""
    n = graph.n_nodes
    preds, succs = graph.preds, graph.succs
    side[x] = 2
    stack = [x]
    while stack:
        for p in preds[stack.pop()]:
            if not side[p]:
                side[p] = 1
                stack.append(p)
    stack = [x]
    while stack:
        for s in succs[stack.pop()]:
            if not side[s]:
                side[s] = 2
                stack.append(s)
    held, size, producer = tables.held, tables.size, graph.producer
    fixed = tables.spike[x]
    for h, s in zip(held, side):        # a loop: cheaper than ``sum`` of a generator
        if s == 1:
            fixed += h
    # arcs: vertex 0 source, 1 sink, node v is v + 2, buffer aux vertices after the nodes;
    # arc e and its reverse e ^ 1 (the helper calls of the first version, inlined)
    head: list[list[int]] = [[], []] + [[] for _ in range(n)]
    to: list[int] = []
    cap: list[int] = []
    for b, rd in tables.readers.items():
        p = producer[b]
        sp = side[p]
        if sp == 2:
            continue                    # produced after x: not live yet
        sz = size[b]
        free = []
        for r in rd:
            sr = side[r]
            if sr == 2:
                break
            if not sr:
                free.append(r)
        else:
            if free:                    # live iff p ran and some free reader did not
                y = len(head)
                e = len(to)
                head.append([e + 1])
                head[0 if sp == 1 else p + 2].append(e)
                to += (y, 0 if sp == 1 else p + 2)
                cap += (sz, 0)
                for r in free:
                    e += 2
                    head[y].append(e)
                    head[r + 2].append(e + 1)
                    to += (r + 2, y)
                    cap += (_INF, 0)
            continue
        if sp == 1:                     # a reader runs after x
            fixed += sz                 # live while x runs in every order
        else:
            e = len(to)
            head[p + 2].append(e)
            head[1].append(e + 1)
            to += (1, p + 2)
            cap += (sz, 0)
    for v in range(n):
        if side[v]:
            continue
        hv = head[v + 2]
        if held[v]:
            e = len(to)
            hv.append(e)
            head[1].append(e + 1)
            to += (1, v + 2)
            cap += (held[v], 0)
        for p in preds[v]:
            if not side[p]:
                e = len(to)
                hv.append(e)
                head[p + 2].append(e + 1)
                to += (p + 2, v + 2)
                cap += (_INF, 0)
    return fixed, head, to, cap, len(to)


def _dinic(head: list[list[int]], to: list[int], cap: list[int], need: int | None,
           max_work: int | None, work: int) -> tuple[int, bool, int]:
    """Dinic's blocking flows from vertex 0 to vertex 1 (``cap`` becomes the residual):
    ``(flow, exact, work)``; stops (not exact) once the flow reaches ``need`` or the work
    passes ``max_work``."""
    flow = 0
    nv = len(head)
    while True:
        level = [-1] * nv               # BFS levels from the source in the residual graph
        level[0] = 0
        queue = [0]
        for u in queue:
            lu = level[u] + 1
            hu = head[u]
            work += 1 + len(hu)
            for e in hu:
                if cap[e] > 0:
                    v = to[e]
                    if level[v] < 0:
                        level[v] = lu
                        queue.append(v)
        if level[1] < 0:
            return flow, True, work
        it = [0] * nv                   # blocking flow: iterative DFS along the levels
        while True:
            path: list[int] = []        # arcs from the source
            u = 0
            while u != 1:
                hu = head[u]
                i0 = i = it[u]
                nh = len(hu)
                lu = level[u] + 1
                while i < nh:
                    e = hu[i]
                    if cap[e] > 0 and level[to[e]] == lu:
                        break
                    i += 1
                work += i - i0 + 1
                it[u] = i
                if i == nh:             # dead end: retreat
                    if not path:
                        break
                    level[u] = -1
                    e = path.pop()
                    u = to[e ^ 1]
                    it[u] += 1
                    continue
                path.append(hu[i])
                u = to[hu[i]]
            if u != 1:
                break
            push = min(cap[e] for e in path)
            for e in path:
                cap[e] -= push
                cap[e ^ 1] += push
            flow += push
            work += len(path)
            if need is not None and flow >= need:
                return flow, False, work
            if max_work is not None and work > max_work:
                return flow, False, work
