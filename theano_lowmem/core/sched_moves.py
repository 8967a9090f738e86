"""Single-node moves: the cheap local search that runs before the exact windows.

A move takes one node of the order and puts it at another position between its
last predecessor and its first successor.  The windows of :mod:`.sched_exact`
reorder contiguous stretches only; a move carries a node across the whole
plateau of near-peak steps (a producer whose output is read late, run later; a
reader that frees a big buffer, run earlier), which is most of what separates
the list heuristics from the optimum on irregular graphs (RandWire cells).

Only moves across a peak step are tried, and one is taken when every step it
changes stays strictly below the peak: the number of steps at the peak drops,
the others do not reach it, so each move improves ``(peak, steps at the peak)``
and the search ends.  A move's steps are re-evaluated from the step tables of
the current order in O(distance moved): only the buffers the moved node reads
change the step they are freed at.
"""
from __future__ import annotations

from typing import Sequence

from .graph import Graph
from .sched_model import Budget, MemTables


class _Trace:
    """Step tables of an order: ``during``/``after`` bytes, bytes freed at each step,
    each freeable buffer's last reader position."""

    def __init__(self, graph: Graph, t: MemTables, order: list[int]) -> None:
        n = len(order)
        pos = [0] * n
        for i, v in enumerate(order):
            pos[v] = i
        at = pos.__getitem__
        size = t.size
        last: dict[int, int] = {}
        free = [0] * n
        for b, rd in t.readers.items():
            last[b] = j = max(map(at, rd))
            free[j] += size[b]
        during, after, live = [0] * n, [0] * n, 0
        spike, alloc = t.spike, t.alloc
        for i, v in enumerate(order):
            during[i] = live + spike[v]
            live += alloc[v] - free[i]
            after[i] = live
        # ``min(..., default=)`` parses keywords on each call: the test is cheaper
        succs, preds = graph.succs, graph.preds
        first_succ = [min(map(at, succs[v])) if succs[v] else n for v in order]
        last_pred = [max(map(at, preds[v])) if preds[v] else -1 for v in order]
        self.order, self.pos, self.last, self.free = order, pos, last, free
        self.during, self.after, self.first_succ, self.last_pred = during, after, first_succ, last_pred

    def move(self, graph: Graph, t: MemTables, a: int, b: int) -> int:
        """Move ``order[a]`` to position ``b`` and update the tables of the steps between;
        return the work done (steps and edges touched)."""
        order, pos, last, free = self.order, self.pos, self.last, self.free
        lo, hi = min(a, b), max(a, b)
        order.insert(b, order.pop(a))
        span = order[lo:hi + 1]
        for j, v in enumerate(span, lo):
            pos[v] = j
        work = hi - lo + 1
        for j in range(lo, hi + 1):
            free[j] = 0
        at = pos.__getitem__
        for c in {c for v in span for c in t.reads[v]}:
            rd = t.readers[c]
            last[c] = j = max(map(at, rd))
            work += len(rd)
            if lo <= j <= hi:
                free[j] += t.size[c]
        live = self.after[lo - 1] if lo else 0
        n = len(order)
        for j, v in enumerate(span, lo):
            self.during[j] = live + t.spike[v]
            live += t.alloc[v] - free[j]
            self.after[j] = live
        touched = set(span)
        for v in span:
            touched.update(graph.preds[v])
            touched.update(graph.succs[v])
        first_succ, last_pred, succs, preds = self.first_succ, self.last_pred, graph.succs, graph.preds
        for v in touched:
            j = pos[v]
            sv, pv = succs[v], preds[v]
            first_succ[j] = min(map(at, sv)) if sv else n
            last_pred[j] = max(map(at, pv)) if pv else -1
            work += len(sv) + len(pv)
        return work


def move_pass(graph: Graph, t: MemTables, order: Sequence[int], budget: Budget
              ) -> tuple[list[int], bool]:
    """Apply improving single-node moves to ``order`` until none helps or ``budget``
    runs out; return the new order and whether it changed.

    Work: ``MemTables.edges`` for the step tables, then 1 unit per step re-evaluated
    and per step and edge of the tables updated after a move; nothing when ``budget``
    has less than twice ``MemTables.edges`` left.

    Examples
    --------
    >>> from theano_lowmem.core.sched_model import mem_tables, fast_peak
    >>> g = Graph([[0], [0], [1], [2]], [[1], [2], [3], [4]], size=[0, 8, 8, 1, 1], pinned=[3, 4])
    >>> t = mem_tables(g)
    >>> new, changed = move_pass(g, t, [0, 1, 2, 3], Budget(None, None))
    >>> fast_peak(t, [0, 1, 2, 3]), fast_peak(t, new), changed
    (17, 10, True)
    """
    order = list(order)
    if budget.left() < 2 * t.edges:                # not even the tables and one scan
        return order, False
    budget.spend(t.edges)
    tr = _Trace(graph, t, order)
    changed = False
    while not budget.exhausted:
        move = _find_move(graph, t, tr, budget)
        if move is None:
            break
        budget.spend(tr.move(graph, t, *move))
        changed = True
    return tr.order, changed


def _find_move(graph: Graph, t: MemTables, tr: _Trace, budget: Budget) -> tuple[int, int] | None:
    """The first move ``(from, to)`` across a peak step that keeps every step it changes
    below the peak, or None."""
    during, first_succ, last_pred = tr.during, tr.first_succ, tr.last_pred
    peak = max(during)
    n = len(during)
    for p in [i for i, d in enumerate(during) if d == peak]:
        budget.spend(n // 8 + 1)                   # the candidates' checks below
        for a in range(p, -1, -1):                 # later: from a <= p to b >= p
            if first_succ[a] > p + (a == p):
                b = _later(t, tr, a, p, peak, budget)[0]
                if b is not None:
                    return a, b
                if budget.exhausted:
                    return None
        for a in range(p, n):                      # earlier: from a >= p to b <= p
            if last_pred[a] < p - (a == p):
                b = _earlier(t, tr, a, p, peak, budget)[0]
                if b is not None:
                    return a, b
                if budget.exhausted:
                    return None
        if budget.exhausted:
            return None
    return None


def _first_at_least(values: list[int], start: int, threshold: int) -> int:
    """The first index ``j >= start`` with ``values[j] >= threshold`` (there must be one).

    A plain loop: on CPython 3.11 it is about twice as fast as ``compress`` over
    ``map(threshold.__le__, ...)`` (a slot wrapper call per value) at every distance."""
    j = start
    while values[j] < threshold:
        j += 1
    return j


def _later(t: MemTables, tr: _Trace, a: int, p: int, peak: int, budget: Budget
           ) -> tuple[int | None, int]:
    """Position ``b`` (``p <= b < first successor``, ``b > a``) to move ``order[a]`` to, with
    every changed step below ``peak``: the one with the lowest highest changed step (the
    latest on ties), and that step's bytes; ``(None, peak)`` if there is none.

    With ``v = order[a]`` moved past step ``j``, the bytes before ``j``'s step are the
    trace's (``during[j]``) less ``v``'s net bytes (``after[a] - after[a - 1]``) plus
    ``v``'s inputs that ``v`` now holds past their last other reader (``held_at``, added
    after that reader's step).  Before ``p`` only the highest of those steps matters, and
    the offset changes at the few ``held_at`` steps only: the stretches between them are
    scanned with ``max`` of slices of ``during`` instead of step by step.  Same result and
    work units as the step-by-step scan (``steps``: one per step it would visit, the step
    at or above ``peak`` included)."""
    order, last, size = tr.order, tr.last, t.size
    during, after = tr.during, tr.after
    v = order[a]
    stop = tr.first_succ[a]
    held_at: dict[int, int] = {}                   # v's inputs another reader frees in (a, stop)
    reads = t.reads[v]
    for c in reads:
        j = last[c]
        if a < j < stop:
            held_at[j] = held_at.get(j, 0) + size[c]
    off = (after[a - 1] if a else 0) - after[a]    # added to during[j] / after[j] for j > a
    mx, best, best_val = 0, None, peak
    steps = 1 + len(reads)
    p2 = p if p > a else a + 1                     # the first step v may run after
    e = p2 if p2 < stop else stop
    x = a + 1                                      # steps before p2: the highest one only
    for h in sorted(held_at):
        if h >= e:
            break
        m = max(during[x:h + 1]) + off
        if m >= peak:
            x = _first_at_least(during, x, peak - off)
            budget.spend(steps + x - a)
            return None, peak
        if m > mx:
            mx = m
        off += held_at[h]
        x = h + 1
    if x < e:
        m = max(during[x:e]) + off
        if m >= peak:
            x = _first_at_least(during, x, peak - off)
            budget.spend(steps + x - a)
            return None, peak
        if m > mx:
            mx = m
    if e == stop:
        budget.spend(steps + stop - 1 - a)
        return None, peak
    sv = t.spike[v]
    j = p2
    for dj, aj in zip(during[p2:stop], after[p2:stop]):
        d = dj + off
        if d >= peak:
            break
        if d > mx:
            mx = d
        if j in held_at:
            off += held_at[j]
        val = aj + off + sv
        if val < mx:
            val = mx
        if val < best_val or (val == best_val and best is not None):
            best, best_val = j, val
        j += 1
    else:
        j -= 1                                     # no break: the last step visited
    budget.spend(steps + j - a)
    return best, best_val


def _earlier(t: MemTables, tr: _Trace, a: int, p: int, peak: int, budget: Budget
             ) -> tuple[int | None, int]:
    """Position ``b`` (``last predecessor < b <= p``, ``b < a``) to move ``order[a]`` to, with
    every changed step below ``peak``: of the earliest, the middle one and ``p``, the one
    with the lowest highest changed step, and that step's bytes; ``(None, peak)`` if none.

    With ``v = order[a]`` run at ``b``, the bytes before step ``j`` (``b <= j < a``) are
    the trace's (``during[j]``) plus ``v``'s net bytes, less ``v``'s inputs now freed by
    an earlier reader (``moved``, from the step after it): the highest step of each stretch
    between ``moved`` steps is ``max`` of a slice of ``during``.  Same result and work
    units as the step-by-step scan (``steps``: one per step visited while the highest
    step so far is below ``peak``)."""
    order, free, last, size, pos, readers = tr.order, tr.free, tr.last, t.size, tr.pos, t.readers
    during, after = tr.during, tr.after
    v = order[a]
    reads = t.reads[v]
    start = tr.last_pred[a] + 1
    best, best_val, steps = None, peak, 0
    for b in dict.fromkeys((start, (start + p) // 2, p)):
        if not start <= b <= p or b >= a:
            continue
        # v's inputs freed at a: freed at v's new step unless another reader runs in [b, a)
        moved: dict[int, int] = {}                 # step -> bytes now freed there instead of at a
        fv = free[a]
        for c in reads:
            if last[c] != a:
                continue
            r = -1                                 # the last other reader in [b, a)
            for x in readers[c]:
                q = pos[x]
                if b <= q < a and q > r:
                    r = q
            if r >= 0:
                moved[r] = moved.get(r, 0) + size[c]
                fv -= size[c]
        live = after[b - 1] if b else 0
        mx = live + t.spike[v]
        off = t.alloc[v] - fv                      # added to during[j] for b <= j < a
        steps += 1 + len(reads)
        x = b
        if mx < peak:
            for r in (*sorted(moved), a - 1):
                if r < x:
                    continue
                m = max(during[x:r + 1]) + off
                if m >= peak:
                    x = _first_at_least(during, x, peak - off)
                    steps += x - b + 1
                    mx = m
                    break
                if m > mx:
                    mx = m
                off -= moved.get(r, 0)
                x = r + 1
            else:
                steps += a - b
        if mx < best_val:
            best, best_val = b, mx
    budget.spend(steps)        # once for the (up to) three positions: the checks run after
    return best, best_val
