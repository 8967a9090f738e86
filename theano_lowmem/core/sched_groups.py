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
steps count.  Target positions: the first step, the peak step and half-way between
(pulls), the last step, the peak step and half-way (pushes); the first improving move is
taken (nodes nearest the peak first).
"""
from __future__ import annotations

from typing import Sequence

from .graph import Graph
from .sched_model import Budget, MemTables, fast_trace

#: Only the ``TOP`` highest steps of the order count in the leximax a move must lower.
TOP = 12
#: Steps and buffer reads of a candidate evaluated per work unit (measured; see
#: :data:`.sched_model.WORK_PER_SECOND`).
STEP_OPS = 2
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
    for the step tables before each move searched, 1 unit per ``STEP_OPS`` steps and buffers
    read by a candidate; nothing when ``budget`` has less than ``MIN_WORK_PER_EDGE *
    MemTables.edges`` left
    or the graph has more than ``MAX_NODES`` nodes (the sets take O(N^2) bits).

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
    changed = False
    while not budget.exhausted:
        budget.spend(t.edges)
        new = _find_group_move(t, order, anc, desc, budget)
        if new is None:
            break
        order, changed = new, True
    return order, changed


def _find_group_move(t: MemTables, order: list[int], anc: list[int], desc: list[int],
                     budget: Budget) -> list[int] | None:
    """The first improving pull or push across the first peak step ``p``, or None.

    Candidates, nearest the peak first (then pulls before pushes, then by target): pull
    ``order[a]`` (``a > p``) to ``0``, ``p // 2`` or ``p``; push ``order[a]`` (``a <= p``) to
    ``n - 1``, ``(p + n) // 2`` or ``p``.
    """
    during, after = fast_trace(t, order)
    n = len(order)
    p = during.index(max(during))
    floor = sorted(during, reverse=True)[min(TOP, n) - 1]
    pos = [0] * n
    for i, v in enumerate(order):
        pos[v] = i
    last = {c: max(pos[r] for r in rd) for c, rd in t.readers.items()}
    early = sorted({0, p // 2, p})
    late = sorted({n - 1, (p + n) // 2, p})
    cands = [(a - p, 0, b, a) for a in range(p + 1, n) for b in early]
    cands += [(p - a, 1, b, a) for a in range(p + 1) for b in late if b > a]
    cands.sort()
    budget.spend(len(cands) // 4 + 1)
    for _, push, b, a in cands:
        if push:
            lo, hi, seg = a, b, _pushed(order, a, b, desc[order[a]])
        else:
            lo, hi, seg = b, a, _pulled(order, a, b, anc[order[a]])
        if _better(t, last, during, after[lo - 1] if lo else 0, lo, hi, seg, floor, budget):
            return order[:lo] + seg + order[hi + 1:]
        if budget.exhausted:
            return None
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


def _better(t: MemTables, last: dict[int, int], during: list[int], live: int, lo: int,
            hi: int, seg: list[int], floor: int, budget: Budget) -> bool:
    """True if running ``seg`` at positions ``lo..hi`` (from ``live`` bytes) lowers the
    leximax of those steps (steps below ``floor`` ignored).  ``last[c]``: position of
    buffer ``c``'s last reader in the current order.  A buffer read in the span and by no
    node after it is freed after its last reader in ``seg`` (found scanning ``seg`` from
    the end); the others are not freed in the span.  Stops at the first step above the
    span's old highest step.  Work: 1 unit per ``STEP_OPS`` steps and buffers read."""
    old = during[lo:hi + 1]
    top = max(old)
    k = len(seg)
    free = [0] * k
    seen: set[int] = set()
    ops = k
    for j in range(k - 1, -1, -1):
        for c in t.reads[seg[j]]:
            if c not in seen:
                seen.add(c)
                if last[c] <= hi:
                    free[j] += t.size[c]
        ops += len(t.reads[seg[j]])
    new = []
    spike, alloc = t.spike, t.alloc
    for j, u in enumerate(seg):
        d = live + spike[u]
        if d > top:
            budget.spend(ops // STEP_OPS + 1)
            return False
        new.append(d)
        live += alloc[u] - free[j]
    budget.spend(ops // STEP_OPS + 1)
    return (sorted((d for d in new if d >= floor), reverse=True)
            < sorted((d for d in old if d >= floor), reverse=True))
