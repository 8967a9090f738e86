"""Group moves: a node pulled before the peak step with its ancestors, or pushed after it
with its descendants.

The single-node moves of :mod:`.sched_moves` move one node between its last
predecessor and its first successor; on irregular graphs (RandWire cells) the
optimum often runs a whole *group* elsewhere: a chain of large producers early,
with the readers that free them at once.  A *pull* takes node ``v`` at position
``a`` after the peak step and puts it at position ``b`` at or before it, preceded by
its ancestors among ``order[b:a]`` (their relative order kept); a *push* takes ``v``
at ``a`` at or before the peak step and puts it at ``b`` after it, followed by its
descendants among ``order[a + 1:b + 1]``.  Both give valid orders.

A move only changes the steps between ``a`` and ``b``; it is taken when it lowers the
*leximax* of those steps (their bytes sorted from the highest, compared
lexicographically), which, the other steps being unchanged, lowers the leximax of the
whole order: the peak never rises, plateaus of equal peaks are crossed (a move may
lower the second highest step only), and the search ends.  Only the ``TOP`` highest
steps count.  Target positions: the first step and the peak step (pulls), the peak step
and half-way to the last step (pushes); the first improving move is taken (nodes nearest
the peak first).

Cost: a candidate is evaluated on its span only, and only the buffers its group reads can
change the step they are freed at (:func:`_better`); a push rejected before the peak step
rules out the farther pushes of the same node; the step tables are updated in place on
the moved span after each move (:class:`_Steps`).  On RandWire #6 of
``benchmarks/bench_ordering.py`` (55 nodes) this reaches the optimum from the call-time
order in 11,100 units (charged as in the previous version: 2 steps or reads per unit)
and 16 ms, against 19,300 units and 26-30 ms before, on the same loaded box.
"""
from __future__ import annotations

from typing import Sequence

from .graph import Graph
from .sched_model import Budget, MemTables, fast_trace

#: Only the ``TOP`` highest steps of the order count in the leximax a move must lower.
TOP = 12
#: Steps, nodes, buffers and readers read per work unit (measured: at 3, a unit of group
#: moves takes 0.9-0.95x the wall time of a unit of single-node moves and of the average
#: unit of :func:`.schedule.schedule` on the 40-100-node graphs of
#: ``benchmarks/bench_ordering.py``; at 2 it took 0.7x, at 4 1.2-1.5x; see
#: :data:`.sched_model.WORK_PER_SECOND`).
STEP_OPS = 3
#: Larger graphs get no group moves: the ancestor and descendant bitmasks take O(N^2) bits.
MAX_NODES = 5000
#: Group moves start only with at least this many units per node and edge left: less
#: pays for the tables and about one candidate sweep, which changes the order (a plateau
#: move) without lowering the peak, and the searches after them start from another order.
MIN_WORK_PER_EDGE = 10


def closures(graph: Graph) -> tuple[list[int], list[int]]:
    """``(anc, desc)``: bitmasks of every node's ancestors and descendants.  O(N * E / 64).

    Examples
    --------
    >>> g = Graph([[0], [1], [1]], [[1], [2], [3]], size=[0, 1, 1, 1], pinned=[2, 3])
    >>> closures(g)
    ([0, 1, 1], [6, 0, 0])
    """
    anc, desc = [0] * graph.n_nodes, [0] * graph.n_nodes
    topo = graph.topological_order()
    for v in topo:
        for p in graph.preds[v]:
            anc[v] |= anc[p] | 1 << p
    for v in reversed(topo):
        for s in graph.succs[v]:
            desc[v] |= desc[s] | 1 << s
    return anc, desc


def group_pass(graph: Graph, t: MemTables, order: Sequence[int], budget: Budget,
               masks: tuple[list[int], list[int]] | None = None) -> tuple[list[int], bool]:
    """Apply improving group moves (module docstring) until none helps or ``budget`` runs
    out; return the new order and whether it changed.

    Parameters
    ----------
    graph, t : Graph and its MemTables
    order : sequence of int
        A valid order (not changed).
    budget : Budget
        Charged with the work done.
    masks : (list of int, list of int), optional
        :func:`closures` of ``graph``, computed when not given (charged either way).

    Returns
    -------
    (list of int, bool)
        A valid order whose steps are never higher in leximax order (the peak never
        rises), and True if it differs from ``order``.

    Work: ``2 * MemTables.edges`` for the ancestor and descendant sets, ``MemTables.edges``
    for the step tables, then 1 unit per ``STEP_OPS`` steps, nodes, buffers and readers read
    by a candidate or updated after a move, and ``N / STEP_OPS`` per move searched; nothing
    when ``budget`` has less than ``MIN_WORK_PER_EDGE * MemTables.edges`` left or the graph
    has more than ``MAX_NODES`` nodes (the sets take O(N^2) bits).

    Examples
    --------
    >>> from theano_lowmem.core.sched_model import mem_tables, fast_peak
    >>> g = Graph([[0], [0], [1], [2]], [[1], [2], [3], [4]], size=[0, 8, 8, 1, 1], pinned=[3, 4])
    >>> t = mem_tables(g)
    >>> new, changed = group_pass(g, t, [0, 1, 2, 3], Budget(None, None))
    >>> fast_peak(t, [0, 1, 2, 3]), fast_peak(t, new), changed
    (17, 10, True)
    """
    order = list(order)
    if budget.left() < MIN_WORK_PER_EDGE * t.edges or graph.n_nodes > MAX_NODES:
        return order, False
    budget.spend(2 * t.edges)
    anc, desc = masks or closures(graph)
    budget.spend(t.edges)
    st = _Steps(t, order)
    changed = False
    while not budget.exhausted:
        move = _find_group_move(t, st, anc, desc, budget)
        if move is None:
            break
        budget.spend(st.apply(t, *move) // STEP_OPS + 1)
        changed = True
    return st.order, changed


class _Steps:
    """Step tables of an order, updated in place after a group move: ``pos``, ``last`` (each
    freeable buffer's last reader position), ``free`` (bytes freed at each position),
    ``during`` and ``after`` (:func:`.sched_model.fast_trace`)."""

    def __init__(self, t: MemTables, order: list[int]) -> None:
        n = len(order)
        self.order = order
        self.pos = pos = [0] * n
        for i, v in enumerate(order):
            pos[v] = i
        self.last = last = {c: max(pos[r] for r in rd) for c, rd in t.readers.items()}
        self.free = free = [0] * n
        for c, j in last.items():
            free[j] += t.size[c]
        self.during, self.after = fast_trace(t, order)

    def apply(self, t: MemTables, lo: int, hi: int, seg: list[int]) -> int:
        """Run ``seg`` (the same nodes as ``order[lo:hi + 1]``) there; return the work done
        (steps, buffers and readers touched).  Only the buffers the span's nodes read can
        change the step they are freed at, and those freed in the span stay in it."""
        order, pos, last, free, size = self.order, self.pos, self.last, self.free, t.size
        order[lo:hi + 1] = seg
        for j in range(lo, hi + 1):
            pos[order[j]] = j
            free[j] = 0
        work = 2 * len(seg)
        for c in {c for v in seg for c in t.reads[v]}:
            if lo <= last[c] <= hi:
                rd = t.readers[c]
                last[c] = j = max(pos[r] for r in rd)
                free[j] += size[c]
                work += len(rd)
        live = self.after[lo - 1] if lo else 0
        during, after, spike, alloc = self.during, self.after, t.spike, t.alloc
        for j in range(lo, hi + 1):
            v = order[j]
            during[j] = live + spike[v]
            live += alloc[v] - free[j]
            after[j] = live
        return work


def _find_group_move(t: MemTables, st: _Steps, anc: list[int], desc: list[int],
                     budget: Budget) -> tuple[int, int, list[int]] | None:
    """The first improving pull or push ``(lo, hi, new order[lo:hi + 1])`` across the first
    peak step ``p`` of ``st``, or None.

    Candidates, nearest the peak first (then pulls before pushes, then by target): pull
    ``order[a]`` (``a > p``) to ``0`` or ``p``; push ``order[a]`` (``a <= p``) to
    ``(p + n) // 2`` or ``p``.  (Of the moves the three targets each way of the previous
    version took on 30 graphs, none pulled to ``p // 2`` and 2 of 167 pushed to ``n - 1``.)
    Ranking the candidates by the bytes the moved nodes take off the peak step instead
    (measured with the evaluation before the in-place tables) took 38,000 units to reach
    52 L on RandWire #6, against 18,000 to reach 51 L nearest first.
    """
    order, during, after = st.order, st.during, st.after
    n = len(order)
    top = max(during)
    p = during.index(top)
    floor = sorted(during, reverse=True)[min(TOP, n) - 1]
    budget.spend(n // STEP_OPS + 1)
    early = (0, p) if p else (0,)
    late = ((p + n) // 2, p) if (p + n) // 2 > p else (p,)
    late = sorted(late)
    for d in range(max(p + 1, n - p)):
        for push, a in ((0, p + d), (1, p - d)):
            if not 0 <= a < n or (a == p and not push):
                continue
            v = order[a]
            for b in (late if push else early):
                if push:
                    if b <= a:
                        continue
                    lo, hi = a, b
                    seg, gm = _pushed(order, a, b, desc[v]), desc[v] | 1 << v
                else:
                    lo, hi = b, a
                    seg, gm = _pulled(order, a, b, anc[v]), anc[v] | 1 << v
                r = _better(t, st.pos, st.last, st.free, during, after[lo - 1] if lo else 0, lo,
                            hi, seg, gm, not push, floor, budget, p)
                if r > 0:
                    return lo, hi, seg
                if budget.exhausted:
                    return None
                if r < 0:                  # farther pushes of v: rejected too
                    break
    return None


def _pulled(order: list[int], a: int, b: int, anc_v: int) -> list[int]:
    """``order[b:a + 1]`` with ``order[a]`` and its ancestors there first."""
    group = [u for u in order[b:a] if anc_v >> u & 1]
    rest = [u for u in order[b:a] if not anc_v >> u & 1]
    return group + [order[a]] + rest


def _pushed(order: list[int], a: int, b: int, desc_v: int) -> list[int]:
    """``order[a:b + 1]`` with ``order[a]`` and its descendants there last."""
    group = [u for u in order[a + 1:b + 1] if desc_v >> u & 1]
    rest = [u for u in order[a + 1:b + 1] if not desc_v >> u & 1]
    return rest + [order[a]] + group


def _better(t: MemTables, pos: list[int], last: dict[int, int], free: list[int],
            during: list[int], live: int, lo: int, hi: int, seg: list[int], gm: int,
            pull: bool, floor: int, budget: Budget, cut: int = -1) -> int:
    """1 if running ``seg`` at positions ``lo..hi`` (from ``live`` bytes) lowers the
    leximax of those steps (steps below ``floor`` ignored), else 0, or -1 when a push is
    rejected at a step above the old highest one of a rest node from positions up to ``cut``:
    a push of the same node farther (a larger group) is rejected too (its rest nodes up to
    ``cut`` are the same and run first, and free the same buffers or fewer).

    ``seg`` is a pull (``pull``: the group, the nodes of ``gm`` in the span, first) or a
    push (the group last) of the current order's ``order[lo:hi + 1]``; ``pos``, ``last``
    (position of each buffer's last reader) and ``free`` (bytes freed at each position)
    are the current order's.  Each side keeps its relative order, so a buffer changes the
    node it is freed after only when its last reader was in the group and a node of the
    rest reads it too (pull: the rest's last reader frees it), or its last reader was in
    the rest and a group node reads it too (push: the group's last reader frees it): only
    the group's reads are scanned.  Stops at the first step above the span's old highest
    step, or once more steps reach it than before.  Work: 1 unit per ``STEP_OPS`` nodes of
    the span, buffers and readers read, and steps simulated."""
    old = during[lo:hi + 1]
    top = max(old)
    at_top = old.count(top)
    size, reads, readers = t.size, t.reads, t.readers
    ops = 2 * len(seg)                     # building seg and old's slice
    adj: dict[int, int] = {}               # node -> bytes freed after it, minus the old ones
    if pull:
        for u in seg:
            if not gm >> u & 1:
                break
            for c in reads[u]:
                ops += 1
                if last[c] != pos[u]:
                    continue
                rd = readers[c]
                ops += len(rd)
                r = max((pos[x] for x in rd if not gm >> x & 1 and lo <= pos[x] <= hi), default=-1)
                if r >= 0:                 # a rest node in the span reads c: it frees it now
                    adj[u] = adj.get(u, 0) - size[c]
                    x = _at(pos, rd, r)
                    adj[x] = adj.get(x, 0) + size[c]
    else:
        newlast: dict[int, int] = {}
        for u in reversed(seg):
            if not gm >> u & 1:
                break
            for c in reads[u]:
                ops += 1
                j = last[c]
                if lo <= j <= hi and j > pos[u] and c not in newlast:
                    newlast[c] = u         # the group's last reader (scanned from the end)
        for c, u in newlast.items():
            x = _at(pos, t.readers[c], last[c])
            ops += len(t.readers[c])
            if not gm >> x & 1:            # the old last reader stays in the rest
                adj[x] = adj.get(x, 0) - size[c]
                adj[u] = adj.get(u, 0) + size[c]
    new = []
    spike, alloc = t.spike, t.alloc
    for u in seg:
        d = live + spike[u]
        ops += 1
        if d >= top:
            if d > top:
                budget.spend(ops // STEP_OPS + 1)
                return -1 if not pull and pos[u] <= cut and not gm >> u & 1 else 0
            at_top -= 1
            if at_top < 0:
                budget.spend(ops // STEP_OPS + 1)
                return 0
        new.append(d)
        live += alloc[u] - free[pos[u]] - adj.get(u, 0)
    budget.spend(ops // STEP_OPS + 1)
    return int(sorted((d for d in new if d >= floor), reverse=True)
               < sorted((d for d in old if d >= floor), reverse=True))


def _at(pos: list[int], nodes, j: int) -> int:
    """The node of ``nodes`` at position ``j``."""
    for x in nodes:
        if pos[x] == j:
            return x
    raise AssertionError(j)
