"""Fast list and DFS schedulers of the kinds XLA and PyTorch Inductor use.

Each function maps a :class:`~.graph.Graph` (plus its :class:`~.sched_model.MemTables`)
to a topological order in O((N + E) log N) or better; every tie is broken by
an explicit key ending in the node id.  They are *candidates*: the caller scores
each with :func:`~.memory.peak` and keeps the best.

References
----------
XLA ``xla/service/hlo_memory_scheduler.cc``: ``ListMemoryScheduler`` (priority =
bytes freed - bytes defined, then user count), ``DFSMemoryScheduler`` (operands
with more extra users, then larger cumulative sizes, first), ``PostOrderMemoryScheduler``.
:func:`reverse_freed` is the list scheduler run from the end (the best single start on
the irregular graphs of ``benchmarks/bench_ordering.py``).
PyTorch ``torch/_inductor/memory.py``: ``topological_sort_lpmf`` (least peak
memory first), ``topological_sort_bfs``, ``topological_sort_dfs``.
"""
from __future__ import annotations

import heapq
from typing import Callable

from .graph import Graph
from .sched_model import MemTables


class _Freed:
    """Incremental "bytes freed if scheduled now" per node (XLA's ``BytesFreedIfScheduled``).

    ``freed[n]`` = bytes of freeable buffers of which ``n`` is the last unscheduled
    reader.  Each buffer changes state once: O(E) in total.
    """

    def __init__(self, t: MemTables, size: tuple[int, ...]) -> None:
        self.t, self.size = t, size
        self.left = {b: len(r) for b, r in t.readers.items()}
        self.done: list[bool] = [False] * len(t.alloc)
        self.freed = [0] * len(t.alloc)
        for b, r in t.readers.items():
            if len(r) == 1:
                self.freed[r[0]] += size[b]

    def run(self, n: int) -> list[int]:
        """Mark ``n`` scheduled; return the nodes whose ``freed`` grew."""
        done, left = self.done, self.left
        done[n] = True
        changed = []
        for b in self.t.reads[n]:
            k = left[b] - 1
            left[b] = k
            if k == 1:
                for last in self.t.readers[b]:
                    if not done[last]:
                        break
                self.freed[last] += self.size[b]
                changed.append(last)
        return changed


def list_freed(graph: Graph, t: MemTables) -> list[int]:
    """XLA list scheduler: ready node with max (bytes freed - bytes defined, #users), then min id.

    Examples
    --------
    >>> g = Graph([[0], [0], [1], [2]], [[1], [2], [3], [4]], size=[0, 8, 8, 1, 1], pinned=[3, 4])
    >>> from theano_lowmem.core.sched_model import mem_tables
    >>> list_freed(g, mem_tables(g))
    [0, 2, 1, 3]
    """
    fr = _Freed(t, graph.size)
    users = [len(s) for s in graph.succs]
    indeg = [len(p) for p in graph.preds]
    ver = [0] * graph.n_nodes

    def key(n: int) -> tuple[int, int, int, int]:
        return (t.alloc[n] - fr.freed[n], -users[n], n, ver[n])

    heap = [key(n) for n in range(graph.n_nodes) if indeg[n] == 0]
    heapq.heapify(heap)
    order: list[int] = []
    while heap:
        *_, n, v = heapq.heappop(heap)
        if v != ver[n] or fr.done[n]:
            continue
        order.append(n)
        for m in fr.run(n):
            if indeg[m] == 0:
                ver[m] += 1
                heapq.heappush(heap, key(m))
        for s in graph.succs[n]:
            indeg[s] -= 1
            if indeg[s] == 0:
                heapq.heappush(heap, key(s))
    return order


def reverse_freed(graph: Graph, t: MemTables) -> list[int]:
    """The list scheduler run from the end: repeatedly put last, among the nodes whose
    successors are all placed, the one that opens the fewest bytes (its freeable inputs
    not yet live at the boundary) minus the bytes it closes (its outputs that a placed
    node reads), then the largest id.  Forward list schedulers decide early what stays
    live across the whole graph; from the end, the joined outputs of a RandWire cell or
    an elementwise DAG are settled first.  O((N + E) log N).

    Examples
    --------
    >>> from theano_lowmem.core.sched_model import mem_tables
    >>> g = Graph([[0], [0], [1], [2]], [[1], [2], [3], [4]], size=[0, 8, 8, 1, 1], pinned=[3, 4])
    >>> reverse_freed(g, mem_tables(g))
    [0, 2, 1, 3]
    """
    n = graph.n_nodes
    size, producer = t.size, graph.producer
    opened = {b: False for b in t.readers}
    delta = [sum(size[c] for c in t.reads[v]) for v in range(n)]   # opened - closed, if placed now
    left = [len(s) for s in graph.succs]
    ver = [0] * n
    placed = [False] * n
    heap = [(delta[v], -v, 0) for v in range(n) if not left[v]]
    heapq.heapify(heap)
    order: list[int] = []
    while heap:
        _, v, k = heapq.heappop(heap)
        v = -v
        if k != ver[v] or placed[v]:
            continue
        placed[v] = True
        order.append(v)
        touched = list(graph.preds[v])
        for c in t.reads[v]:
            if not opened[c]:
                opened[c] = True
                for r in t.readers[c]:
                    if not placed[r]:
                        delta[r] -= size[c]
                        touched.append(r)
                delta[producer[c]] -= size[c]
                touched.append(producer[c])
        for p in graph.preds[v]:
            left[p] -= 1
        for r in touched:
            if not placed[r] and not left[r]:
                ver[r] += 1
                heapq.heappush(heap, (delta[r], -r, ver[r]))
    return order[::-1]


def lpmf(graph: Graph, t: MemTables) -> list[int]:
    """Inductor's least-peak-memory-first: among ready nodes that fit under the peak so far,
    the one with least (alloc - freed); if none fits, the one with least alloc + workspace.

    Two lazy heaps; popping non-fitting entries from the first is bounded by the
    number of ready nodes (O(N * ready) worst case, near O(N log N) in practice).

    Examples
    --------
    >>> from theano_lowmem.core.sched_model import mem_tables
    >>> g = Graph([[0], [0], [1], [2]], [[1], [2], [3], [4]], size=[0, 8, 8, 1, 1], pinned=[3, 4])
    >>> lpmf(g, mem_tables(g))
    [0, 2, 1, 3]
    """
    fr = _Freed(t, graph.size)
    indeg = [len(p) for p in graph.preds]
    ver = [0] * graph.n_nodes
    by_net: list[tuple[int, int, int]] = []
    by_alloc: list[tuple[int, int, int, int]] = []

    def push(n: int) -> None:
        ver[n] += 1
        net = t.alloc[n] - fr.freed[n]
        heapq.heappush(by_net, (net, n, ver[n]))
        heapq.heappush(by_alloc, (t.spike[n], net, n, ver[n]))

    for n in range(graph.n_nodes):
        if indeg[n] == 0:
            push(n)
    live, high = 0, t.held_total   # Inductor starts from the output bytes
    order: list[int] = []
    while len(order) < graph.n_nodes:
        while by_alloc[0][3] != ver[by_alloc[0][2]] or fr.done[by_alloc[0][2]]:
            heapq.heappop(by_alloc)
        pick = by_alloc[0][2]
        if live + t.spike[pick] <= high:          # something fits: least net among fitting
            aside = []
            while True:
                net, n, v = heapq.heappop(by_net)
                if v != ver[n] or fr.done[n]:
                    continue
                if live + t.spike[n] <= high:
                    pick = n
                    aside.append((net, n, v))
                    break
                aside.append((net, n, v))
            for e in aside:
                heapq.heappush(by_net, e)
        high = max(high, live + t.spike[pick])
        live += t.alloc[pick] - fr.freed[pick]
        order.append(pick)
        for m in fr.run(pick):
            if indeg[m] == 0 and not fr.done[m]:
                push(m)
        for s in graph.succs[pick]:
            indeg[s] -= 1
            if indeg[s] == 0:
                push(s)
    return order


def bfs(graph: Graph, t: MemTables) -> list[int]:
    """Inductor's BFS: ready node whose predecessors ran earliest (sorted positions), then id.

    Examples
    --------
    >>> from theano_lowmem.core.sched_model import mem_tables
    >>> g = Graph([[0], [0], [1], [2]], [[1], [2], [3], [4]], size=[0, 8, 8, 1, 1], pinned=[3, 4])
    >>> bfs(g, mem_tables(g))
    [0, 1, 2, 3]
    """
    indeg = [len(p) for p in graph.preds]
    pos = [0] * graph.n_nodes
    heap = [((), n) for n in range(graph.n_nodes) if indeg[n] == 0]
    heapq.heapify(heap)
    order: list[int] = []
    at, preds = pos.__getitem__, graph.preds
    while heap:
        _, n = heapq.heappop(heap)
        pos[n] = len(order)
        order.append(n)
        for s in graph.succs[n]:
            indeg[s] -= 1
            if indeg[s] == 0:
                heapq.heappush(heap, (tuple(sorted(map(at, preds[s]))), s))
    return order


def _postorder(graph: Graph, roots: list[int], child_order: Callable[[int], list[int]]) -> list[int]:
    """Iterative DFS post-order over ``preds`` from ``roots`` (visited in the given order)."""
    seen = [False] * graph.n_nodes
    order: list[int] = []
    for r in roots:
        if seen[r]:
            continue
        seen[r] = True
        stack = [(r, iter(child_order(r)))]
        while stack:
            n, it = stack[-1]
            for c in it:
                if not seen[c]:
                    seen[c] = True
                    stack.append((c, iter(child_order(c))))
                    break
            else:
                stack.pop()
                order.append(n)
    return order


def dfs_inductor(graph: Graph, t: MemTables) -> list[int]:
    """Inductor's DFS: outer loop and predecessors by ascending (alloc + bytes read, id).

    Examples
    --------
    >>> from theano_lowmem.core.sched_model import mem_tables
    >>> g = Graph([[0], [0], [1], [2]], [[1], [2], [3], [4]], size=[0, 8, 8, 1, 1], pinned=[3, 4])
    >>> dfs_inductor(g, mem_tables(g))
    [0, 1, 2, 3]
    """
    swr = [a + i for a, i in zip(t.spike, t.inbytes)]
    roots = sorted(range(graph.n_nodes), key=lambda n: (swr[n], n))
    rank = _ranks(roots)
    preds = graph.preds
    return _postorder(graph, roots, lambda n: sorted(preds[n], key=rank.__getitem__))


def dfs_subtree(graph: Graph, t: MemTables) -> list[int]:
    """XLA's DFS scheduler: operands with more extra users, then larger cumulative
    size, first; roots (nodes without successors) in the same order.

    Examples
    --------
    >>> from theano_lowmem.core.sched_model import mem_tables
    >>> g = Graph([[0], [0], [1], [2]], [[1], [2], [3], [4]], size=[0, 8, 8, 1, 1], pinned=[3, 4])
    >>> dfs_subtree(g, mem_tables(g))
    [0, 2, 1, 3]
    """
    nn = graph.n_nodes
    extra, total = [0] * nn, [0] * nn
    preds, succs, alloc = graph.preds, graph.succs, t.alloc
    cumulative = 0
    for n in _kahn(graph):
        e = len(succs[n]) - 1
        if e < 0:
            e = 0
        tot = alloc[n]
        for p in preds[n]:
            e += extra[p]
            tot += total[p]
        cumulative += alloc[n]
        total[n] = tot if tot < cumulative else cumulative
        extra[n] = e if e < nn else nn
    rank = _ranks(sorted(range(nn), key=lambda n: (-extra[n], -total[n], n)))
    at = rank.__getitem__
    sinks = sorted((n for n in range(nn) if not succs[n]), key=at)
    return _postorder(graph, sinks, lambda n: sorted(preds[n], key=at))


def postorder(graph: Graph, t: MemTables) -> list[int]:
    """XLA's post-order: DFS from the sinks (by id), predecessors in input order.

    Examples
    --------
    >>> from theano_lowmem.core.sched_model import mem_tables
    >>> g = Graph([[0], [0], [1], [2]], [[1], [2], [3], [4]], size=[0, 8, 8, 1, 1], pinned=[3, 4])
    >>> postorder(g, mem_tables(g))
    [0, 2, 1, 3]
    """
    def kids(n: int) -> list[int]:
        seen: dict[int, None] = {}
        for v in graph.node_inputs[n]:
            if graph.producer[v] >= 0:
                seen.setdefault(graph.producer[v], None)
        for d in graph.extra_deps[n]:
            seen.setdefault(d, None)
        return list(seen)
    return _postorder(graph, [n for n in range(graph.n_nodes) if not graph.succs[n]], kids)


def kahn(graph: Graph, t: MemTables) -> list[int]:
    """Kahn's algorithm, smallest id first (``Graph.topological_order``)."""
    return _kahn(graph)


def _kahn(graph: Graph) -> list[int]:
    """``graph.topological_order()`` (ready node with the smallest id first), with a heap
    of ids instead of ``(key, id)`` pairs: the same order in about half the time (a
    deliberate copy of that loop, for the heuristics' share of call-time planning)."""
    succs = graph.succs
    indeg = [len(p) for p in graph.preds]
    heap = [n for n in range(graph.n_nodes) if not indeg[n]]      # ascending: a heap
    pop, push = heapq.heappop, heapq.heappush
    order: list[int] = []
    while heap:
        n = pop(heap)
        order.append(n)
        for s in succs[n]:
            indeg[s] -= 1
            if not indeg[s]:
                push(heap, s)
    if len(order) != graph.n_nodes:
        return graph.topological_order()           # raises GraphError on the cycle
    return order


def _ranks(nodes: list[int]) -> list[int]:
    """``rank[v]``: the position of node ``v`` in ``nodes`` (a permutation of the ids):
    sorting by it is sorting by the key ``nodes`` was sorted with, when that key ends in
    the id (no ties), without calling the key again."""
    rank = [0] * len(nodes)
    for i, v in enumerate(nodes):
        rank[v] = i
    return rank


#: name -> heuristic, in the order ``schedule`` tries them (most useful per unit of work
#: first, on ``benchmarks/bench_schedule.py`` and ``bench_ordering.py``, where BFS is the
#: best start after the list schedulers more often than the DFS orders: ``schedule`` stops
#: the list when the budget cannot pay for the next one).
HEURISTICS: dict[str, Callable[[Graph, MemTables], list[int]]] = {
    "greedy-freed": list_freed,
    "reverse-freed": reverse_freed,
    "dfs-subtree": dfs_subtree,
    "lpmf": lpmf,
    "bfs": bfs,
    "dfs-inductor": dfs_inductor,
    "postorder": postorder,
    "kahn": kahn,
}

#: name -> work units per 4 ``MemTables.edges`` (nodes + edges) charged for running it:
#: the highest cost measured on the benchmark families (``benchmarks/bench_ordering.py``,
#: random DAGs, fan-outs and series-parallel graphs of 40-3,000 nodes), rounded up, in units
#: of :data:`.sched_model.WORK_PER_SECOND` (about 1 us, the unit the exact searches are
#: charged in).
HEURISTIC_COST: dict[str, int] = {
    "greedy-freed": 5, "reverse-freed": 5, "dfs-subtree": 7, "lpmf": 7, "dfs-inductor": 3,
    "postorder": 3, "bfs": 4, "kahn": 2,
}
#: Work units per 4 edges for scoring an order (:func:`.sched_model.fast_peak`).
SCORE_COST = 2
