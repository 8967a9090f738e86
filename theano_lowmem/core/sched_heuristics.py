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
from operator import neg
from typing import Callable, Sequence

from .graph import Graph
from .sched_model import MemTables


class _Freed:
    """Incremental "bytes freed if scheduled now" per node (XLA's ``BytesFreedIfScheduled``).

    ``freed[n]`` = bytes of freeable buffers of which ``n`` is the last unscheduled
    reader.  Each buffer changes state once: O(E) in total.
    """

    __slots__ = ("reads", "readers", "size", "left", "done", "freed")

    def __init__(self, t: MemTables, size: tuple[int, ...]) -> None:
        self.reads, self.readers, self.size = t.reads, t.readers, size
        self.left = {b: len(r) for b, r in t.readers.items()}
        self.done: list[bool] = [False] * len(t.alloc)
        self.freed = freed = [0] * len(t.alloc)
        for r, sz in t.single:          # the buffers with one reader
            freed[r] += sz

    def run(self, n: int) -> list[int] | tuple:
        """Mark ``n`` scheduled; return the nodes whose ``freed`` grew."""
        done, left = self.done, self.left
        done[n] = True
        changed: list[int] | tuple = ()         # most runs change nothing: no new list
        for b in self.reads[n]:
            k = left[b] - 1
            left[b] = k
            if k == 1:
                for last in self.readers[b]:
                    if not done[last]:
                        break
                self.freed[last] += self.size[b]
                if changed:
                    changed.append(last)
                else:
                    changed = [last]
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
    alloc, freed, done, run, succs = t.alloc, fr.freed, fr.done, fr.run, graph.succs
    users = [len(s) for s in succs]
    indeg = [len(p) for p in graph.preds]
    ver = [0] * graph.n_nodes
    pop, push = heapq.heappop, heapq.heappush
    # entries (alloc - freed, -users, id, version): the key, inlined
    heap = [(alloc[n] - freed[n], -users[n], n, 0) for n in range(graph.n_nodes) if indeg[n] == 0]
    heapq.heapify(heap)
    order: list[int] = []
    while heap:
        _, _, n, v = pop(heap)
        if v != ver[n] or done[n]:
            continue
        order.append(n)
        for m in run(n):
            if indeg[m] == 0:
                v = ver[m] = ver[m] + 1
                push(heap, (alloc[m] - freed[m], -users[m], m, v))
        for s in succs[n]:
            indeg[s] -= 1
            if indeg[s] == 0:
                push(heap, (alloc[s] - freed[s], -users[s], s, ver[s]))
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
    size, producer, reads, readers, preds = t.size, graph.producer, t.reads, t.readers, graph.preds
    opened = dict.fromkeys(readers, False)
    delta = []                                  # opened - closed, if placed now
    for rs in reads:
        d = 0
        for c in rs:
            d += size[c]
        delta.append(d)
    left = [len(s) for s in graph.succs]
    ver = [0] * n
    placed = [False] * n
    heap = [(delta[v], -v, 0) for v in range(n) if not left[v]]
    heapq.heapify(heap)
    pop, push = heapq.heappop, heapq.heappush
    order: list[int] = []
    while heap:
        _, v, k = pop(heap)
        v = -v
        if k != ver[v] or placed[v]:
            continue
        placed[v] = True
        order.append(v)
        touched = list(preds[v])
        for c in reads[v]:
            if not opened[c]:
                opened[c] = True
                sz = size[c]
                for r in readers[c]:
                    if not placed[r]:
                        delta[r] -= sz
                        touched.append(r)
                p = producer[c]
                delta[p] -= sz
                touched.append(p)
        for p in preds[v]:
            left[p] -= 1
        for r in touched:
            if not placed[r] and not left[r]:
                k = ver[r] = ver[r] + 1
                push(heap, (delta[r], -r, k))
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
    alloc, spike, freed, done, run, succs = t.alloc, t.spike, fr.freed, fr.done, fr.run, graph.succs
    nn = graph.n_nodes
    indeg = [len(p) for p in graph.preds]
    ver = [0] * nn
    by_net: list[tuple[int, int, int]] = []
    by_alloc: list[tuple[int, int, int, int]] = []
    pop, push = heapq.heappop, heapq.heappush

    def ready(n: int) -> None:
        """Push ``n`` (a new version of its entries) on both heaps."""
        v = ver[n] = ver[n] + 1
        net = alloc[n] - freed[n]
        push(by_net, (net, n, v))
        push(by_alloc, (spike[n], net, n, v))

    for n in range(nn):
        if indeg[n] == 0:
            ready(n)
    live, high = 0, t.held_total   # Inductor starts from the output bytes
    order: list[int] = []
    while len(order) < nn:
        top = by_alloc[0]
        while top[3] != ver[top[2]] or done[top[2]]:
            pop(by_alloc)
            top = by_alloc[0]
        pick = top[2]
        if live + spike[pick] <= high:            # something fits: least net among fitting
            aside = []
            while True:
                _, n, v = e = pop(by_net)
                if v != ver[n] or done[n]:
                    continue
                aside.append(e)
                if live + spike[n] <= high:
                    pick = n
                    break
            for e in aside:
                push(by_net, e)
        step = live + spike[pick]
        if step > high:
            high = step
        live += alloc[pick] - freed[pick]
        order.append(pick)
        for m in run(pick):
            if indeg[m] == 0 and not done[m]:
                ready(m)
        for s in succs[pick]:
            indeg[s] -= 1
            if indeg[s] == 0:
                ready(s)
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


def _postorder(graph: Graph, roots: list[int], kids: Sequence[Sequence[int]]) -> list[int]:
    """Iterative DFS post-order over ``preds`` from ``roots`` (visited in the given order),
    the children of node ``n`` visited in the order of ``kids[n]``."""
    seen = [False] * graph.n_nodes
    order: list[int] = []
    for r in roots:
        if seen[r]:
            continue
        seen[r] = True
        stack = [(r, iter(kids[r]))]
        while stack:
            n, it = stack[-1]
            for c in it:
                if not seen[c]:
                    seen[c] = True
                    stack.append((c, iter(kids[c])))
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
    roots = [n for _, n in sorted(zip(swr, range(graph.n_nodes)))]     # by (swr[n], n)
    at = _ranks(roots).__getitem__
    return _postorder(graph, roots, [sorted(p, key=at) if len(p) > 1 else p for p in graph.preds])


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
    # sorted by (-extra, -total, id): the tuples built by ``zip`` rather than a key function
    keys = sorted(zip(map(neg, extra), map(neg, total), range(nn)))
    at = _ranks([k[2] for k in keys]).__getitem__
    sinks = sorted((n for n in range(nn) if not succs[n]), key=at)
    return _postorder(graph, sinks, [sorted(p, key=at) if len(p) > 1 else p for p in preds])


def postorder(graph: Graph, t: MemTables) -> list[int]:
    """XLA's post-order: DFS from the sinks (by id), predecessors in input order.

    Examples
    --------
    >>> from theano_lowmem.core.sched_model import mem_tables
    >>> g = Graph([[0], [0], [1], [2]], [[1], [2], [3], [4]], size=[0, 8, 8, 1, 1], pinned=[3, 4])
    >>> postorder(g, mem_tables(g))
    [0, 2, 1, 3]
    """
    producer, extra_deps = graph.producer, graph.extra_deps
    kids = []
    for n, ins in enumerate(graph.node_inputs):
        seen: dict[int, None] = {}
        for v in ins:
            if producer[v] >= 0:
                seen.setdefault(producer[v], None)
        for d in extra_deps[n]:
            seen.setdefault(d, None)
        kids.append(list(seen))
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
