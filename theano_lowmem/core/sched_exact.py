"""Exact min-peak ordering of a window of an order (the whole order is one window).

A *window* is ``order[lo:hi]``: the nodes before it (the prefix) are fixed, so
are those after it.  The live bytes after running the prefix plus a set ``S`` of
window nodes depend on ``S`` only, and so does the bytes a step needs, so the
steps outside the window do not change when the window is reordered: the
window's own peak is the only thing to minimise, and a window that is a
segment between two cut nodes (see :func:`cut_positions`) is an independent
subproblem.

Search: best-first (A*, bottleneck cost ``g`` = highest step so far) over sets
of executed window nodes, memoised on a bitmask int; only orders strictly
below ``ub`` (an upper bound, e.g. the best heuristic's peak) are explored.
Admissible bound ``h(S)`` = bytes that stay live through the window +
max over unrun nodes of (bytes it allocates + workspace + freeable bytes it reads), and the
bytes held when the window ends.  Dominance rule (sound by an exchange
argument, see ``_Window.search``): a ready node that does not raise the live bytes
and allocates no more than any other ready node (or fits under ``g``) is run
at once, as the only successor.

The number of states is at most the number of down-sets of the window
(``2**k`` for ``k`` independent nodes), O(k) work each; the deadline bounds it.

References
----------
Serenity (Ahn et al., MLSys 2020): DP over executed sets with budget pruning
and divide-and-conquer at cut nodes.  Liu (1987) and Kayaaslan et al. (2018)
give polynomial algorithms for trees and series-parallel graphs (not used here).
"""
from __future__ import annotations

import heapq
import time
from dataclasses import dataclass
from typing import Sequence

from .graph import Graph
from .sched_model import MemTables


@dataclass(frozen=True)
class WindowResult:
    """``order``: the improved full order (None if none strictly below ``ub`` was found);
    ``peak``: its window peak; ``proved``: the search finished, so the window optimum is
    ``peak`` (or >= ``ub`` when ``order`` is None); ``lower``: a proven lower bound on
    the window optimum."""

    order: list[int] | None
    peak: int | None
    proved: bool
    lower: int
    during: tuple[int, ...] = ()    # the window's new ``during`` / ``after`` bytes, step by step
    after: tuple[int, ...] = ()


def cut_positions(graph: Graph, order: Sequence[int]) -> list[int]:
    """Positions ``i`` whose node runs at ``i`` in *every* order (a cut: all nodes before
    it are its ancestors, all after it its descendants).  O(N + E).

    Examples
    --------
    >>> g = Graph([[0], [1], [1], [2, 3]], [[1], [2], [3], [4]], size=[0, 1, 1, 1, 1])
    >>> cut_positions(g, [0, 1, 2, 3])
    [0, 3]
    """
    n = len(order)
    pos = [0] * graph.n_nodes
    for i, v in enumerate(order):
        pos[v] = i
    first_succ = [min((pos[s] for s in graph.succs[v]), default=n) for v in order]
    last_pred = [max((pos[p] for p in graph.preds[v]), default=-1) for v in order]
    ok_before = [True] * n      # every node before i has a successor at or before i
    reach = -1
    for i in range(n):
        ok_before[i] = reach <= i
        reach = max(reach, first_succ[i])
    cuts, low = [], n
    for i in range(n - 1, -1, -1):      # every node after i has a predecessor at or after i
        if ok_before[i] and low >= i:
            cuts.append(i)
        low = min(low, last_pred[i])
    return cuts[::-1]


def solve_window(graph: Graph, t: MemTables, order: Sequence[int], lo: int, hi: int, *,
                 base: int, ub: int, deadline: float | None) -> WindowResult:
    """Reorder ``order[lo:hi]`` to minimise the peak of its steps, looking only below ``ub``.

    Parameters
    ----------
    graph, t : Graph and its MemTables
    order : sequence of int
        A valid order; only positions ``lo..hi-1`` change.
    base : int
        Live bytes once ``order[:lo]`` ran (``simulate(...).after[lo - 1]``, 0 if ``lo == 0``).
    ub : int
        Only window orders whose peak is strictly below ``ub`` are searched for.
    deadline : float or None
        ``time.perf_counter()`` value at which to stop (best found so far is returned).

    Examples
    --------
    >>> g = Graph([[0], [0], [1], [2]], [[1], [2], [3], [4]], size=[0, 8, 8, 1, 1], pinned=[3, 4])
    >>> from theano_lowmem.core.sched_model import mem_tables
    >>> r = solve_window(g, mem_tables(g), [0, 1, 2, 3], 0, 4, base=0, ub=100, deadline=None)
    >>> r.order, r.peak, r.proved
    ([0, 2, 1, 3], 10, True)
    """
    w = _Window(graph, t, order, lo, hi, base)
    local, peak, proved, lower = w.search(ub, deadline)
    if local is None:
        return WindowResult(None, None, proved, lower)
    new = list(order)
    new[lo:hi] = [w.nodes[i] for i in local]
    return WindowResult(new, peak, proved, lower, *w.replay(local))


class _Window:
    """The window as bitmask tables over local indices ``0..k-1`` (``order[lo + i]``)."""

    def __init__(self, graph: Graph, t: MemTables, order: Sequence[int], lo: int, hi: int,
                 base: int) -> None:
        pos = {v: i for i, v in enumerate(order)}
        self.nodes = nodes = list(order[lo:hi])
        k = len(nodes)
        pred, frees, keep, inb = [0] * k, [], [0] * k, [0] * k
        freed_base: dict[int, int] = {}
        last = {}
        for i, n in enumerate(nodes):
            for p in graph.preds[n]:
                if pos[p] >= lo:
                    pred[i] |= 1 << (pos[p] - lo)
            fr = []
            for b in t.reads[n]:
                rd = t.readers[b]
                if b not in last:
                    last[b] = max(pos[r] for r in rd)
                if last[b] >= hi:
                    continue            # still needed after the window: never freed here
                m = 0
                for r in rd:
                    if pos[r] >= lo:
                        m |= 1 << (pos[r] - lo)
                fr.append((m, graph.size[b]))
                inb[i] += graph.size[b]
                if pos[graph.producer[b]] < lo:
                    freed_base[b] = graph.size[b]
            frees.append(tuple(fr))
        for i, n in enumerate(nodes):
            keep[i] = t.alloc[n]
            for b in graph.node_outputs[n]:
                if graph.alias_of[b] < 0 and b in t.readers:
                    if max(pos[r] for r in t.readers[b]) < hi:
                        keep[i] -= graph.size[b]
        self.k, self.pred, self.frees, self.keep, self.inb = k, pred, frees, keep, inb
        self.succ = [sorted(pos[m] - lo for m in graph.succs[n] if lo <= pos[m] < hi) for n in nodes]
        self.alloc = [t.alloc[n] for n in nodes]
        self.spike = [t.spike[n] for n in nodes]
        self.base, self.base_keep = base, base - sum(freed_base.values())
        self.keep_total = self.base_keep + sum(keep)
        self.by_need = sorted(range(k), key=lambda i: (-(self.spike[i] + inb[i]), i))

    def replay(self, local: list[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """``during`` and ``after`` bytes of each step of the window order ``local``."""
        s, live, during, after = 0, self.base, [], []
        for i in local:
            s |= 1 << i
            during.append(live + self.spike[i])
            live += self.alloc[i] - sum(sz for m, sz in self.frees[i] if not m & ~s)
            after.append(live)
        return tuple(during), tuple(after)

    def _h(self, s: int, keep: int) -> int:
        for i in self.by_need:
            if not s >> i & 1:
                return keep + self.spike[i] + self.inb[i]
        return 0

    def search(self, ub: int, deadline: float | None) -> tuple[list[int] | None, int | None, bool, int]:
        """Best-first search for a window order with peak < ``ub``: (order, peak, proved, lower).

        Single-child rule (exchange argument): if ready ``n`` has ``live_after <= live``
        then in every superset ``T`` of the state running ``n`` also does not raise the
        live bytes (it frees at least as much), so moving ``n`` to the front of any
        completion only lowers the later steps; its own step costs ``live + spike[n]``,
        no more than the first step of any completion when ``spike[n]`` is minimal among
        the ready nodes, and free when ``<= g``.  So ``n`` alone is expanded.
        """
        k, pred, succ, spike, alloc, frees, keepb = (self.k, self.pred, self.succ, self.spike,
                                                     self.alloc, self.frees, self.keep)
        full = (1 << k) - 1
        start_f = max(self.keep_total, self._h(0, self.base_keep))
        if start_f >= ub:
            return None, None, True, ub
        ready0 = sum(1 << i for i in range(k) if not pred[i])
        best = {0: 0}                                       # state -> lowest g reaching it
        info = {0: (self.base, self.base_keep, ready0)}     # state -> (live, keep, ready mask)
        parent: dict[int, tuple[int, int]] = {}
        heap = [(start_f, 0, 0, 0)]                         # (f, -depth, state, g)
        f = start_f
        while heap:
            f, negd, s, g = heapq.heappop(heap)
            if g > best[s]:
                continue
            if s == full:
                path = []
                while s:
                    s, i = parent[s]
                    path.append(i)
                return path[::-1], g, True, g
            if deadline is not None and time.perf_counter() > deadline:    # ~0.1 us, each pop
                return None, None, False, min(f, ub)
            live, keep, ready = info[s]
            kids, min_spike, r = [], None, ready
            while r:
                low = r & -r
                r ^= low
                i = low.bit_length() - 1
                s2 = s | low
                after = live + alloc[i]
                for m, sz in frees[i]:
                    if not m & ~s2:
                        after -= sz
                kids.append((i, s2, live + spike[i], after))
                if min_spike is None or spike[i] < min_spike:
                    min_spike = spike[i]
            for kid in kids:
                if kid[3] <= live and (spike[kid[0]] == min_spike or kid[2] <= g):
                    kids = [kid]
                    break
            for i, s2, out, after in kids:
                g2 = g if out <= g else out
                if g2 >= ub or g2 >= best.get(s2, ub):
                    continue
                keep2 = keep + keepb[i]
                f2 = max(f, g2, self._h(s2, keep2))
                if f2 >= ub:
                    continue
                ready2 = ready ^ (1 << i)
                for j in succ[i]:
                    if not pred[j] & ~s2:
                        ready2 |= 1 << j
                best[s2], info[s2], parent[s2] = g2, (after, keep2, ready2), (s, i)
                heapq.heappush(heap, (f2, negd - 1, s2, g2))
        return None, None, True, ub
