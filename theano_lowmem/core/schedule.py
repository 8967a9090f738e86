"""Execution orders that minimise the peak of :func:`theano_lowmem.core.memory.peak`.

:func:`schedule` scores candidates with the one memory model and keeps the
best: the baseline order (what Theano would run), the fast heuristics of
:mod:`.sched_heuristics` (XLA list / DFS / post-order, Inductor LPMF / BFS /
DFS, Kahn), then spends the rest of the time budget on exact search
(:mod:`.sched_exact`): the whole graph when it is small, otherwise the segment
between two cut nodes that holds the peak step, otherwise sliding windows of
the best order around the peak step, growing when stuck.  Every candidate is
scored with :func:`~.memory.simulate`, so bytes live across a window or a cut
are always accounted for.

References
----------
J. W. H. Liu, "An application of generalized tree pebbling to sparse matrix
factorization", SIAM J. Algebraic Discrete Methods 8(3), 1987.
K. Kayaaslan, T. Lambert, L. Marchal, B. Uçar, "Scheduling series-parallel task
graphs to minimize peak memory", Theoretical Computer Science 707, 2018.
B. H. Ahn, J. Lee, J. M. Lin, H.-P. Cheng, J. Hou, H. Esmaeilzadeh, "Ordering
chaos: memory-aware scheduling of irregularly wired neural networks for edge
devices" (Serenity), MLSys 2020.
XLA ``xla/service/hlo_memory_scheduler.cc``; PyTorch ``torch/_inductor/memory.py``.
"""
from __future__ import annotations

import bisect
import time
from dataclasses import dataclass
from typing import Sequence

from .graph import Graph, GraphError
from .memory import simulate
from .sched_exact import cut_positions, solve_window
from .sched_heuristics import HEURISTICS
from .sched_model import MemTables, mem_tables, static_lower_bound

__all__ = ["Schedule", "schedule", "exact_schedule", "brute_force_peak", "heuristic_orders"]


@dataclass(frozen=True)
class Schedule:
    """A scheduler's answer.

    ``order``: node ids, a valid order of the graph; ``peak`` ==
    ``memory.peak(graph, order)``; ``method``: the candidate it came from
    (``'baseline'``, a heuristic name, ``'exact'``, ``'segment'``, ``'window'``);
    ``optimal``: proven optimal; ``lower_bound``: proven lower bound on the optimum;
    ``baseline_peak``: peak of the given baseline; ``elapsed``: seconds spent.
    """

    order: tuple[int, ...]
    peak: int
    method: str
    optimal: bool
    lower_bound: int
    baseline_peak: int | None
    elapsed: float


def heuristic_orders(graph: Graph, tables: MemTables | None = None) -> dict[str, list[int]]:
    """Every fast heuristic's order, by name (see :data:`.sched_heuristics.HEURISTICS`).

    Examples
    --------
    >>> g = Graph([[0], [1]], [[1], [2]], size=[0, 4, 4], pinned=[2])
    >>> heuristic_orders(g)["greedy-freed"]
    [0, 1]
    """
    t = tables or mem_tables(graph)
    return {name: h(graph, t) for name, h in HEURISTICS.items()}


def schedule(graph: Graph, *, baseline: Sequence[int] | None = None, time_budget: float = 1.0,
             exact_max_nodes: int = 20, seed: int = 0) -> Schedule:
    """Order the nodes of ``graph`` to minimise the peak live bytes.

    Parameters
    ----------
    graph : Graph
    baseline : sequence of int, optional
        The order Theano would run.  It is a candidate, so the result's peak is
        never above its peak.
    time_budget : float
        Seconds to spend.  The first heuristic always runs, the others while the
        budget lasts; exact search stops at the budget and the best order found so
        far is returned (the final re-score may overrun it by one ``simulate``).
    exact_max_nodes : int
        Graphs up to this many nodes are searched exactly as a whole; larger ones by
        cut segments of up to this many nodes and by windows starting at this size.
    seed : int
        Reserved for randomised candidates; the result depends only on
        ``(graph, baseline, budget, exact_max_nodes, seed)`` and on time only through
        how far the search gets within the budget.

    Returns
    -------
    Schedule

    Raises
    ------
    GraphError
        If ``baseline`` is not a valid order of ``graph``.

    Notes
    -----
    Heuristics: O((N + E) log N) each.  Exact search: exponential in the
    window's width, bounded by the budget.

    Examples
    --------
    >>> # v0 -> a (8 bytes) -> c ; v0 -> b (8 bytes) -> d ; c and d small outputs
    >>> g = Graph([[0], [0], [1], [2]], [[1], [2], [3], [4]], size=[0, 8, 8, 1, 1], pinned=[3, 4])
    >>> s = schedule(g, baseline=[0, 1, 2, 3])
    >>> s.order, s.peak, s.baseline_peak, s.optimal
    ((0, 2, 1, 3), 10, 17, True)
    """
    t0 = time.perf_counter()
    deadline = t0 + time_budget
    tables = mem_tables(graph)
    cands: list[tuple[int, int, str, list[int]]] = []   # (peak, rank, method, order)
    base_peak = None
    if baseline is not None:
        graph.check_order(baseline)
        base_peak = simulate(graph, baseline, check=False).peak
        cands.append((base_peak, 0, "baseline", list(baseline)))
    score_time = 0.0
    for rank, (name, h) in enumerate(HEURISTICS.items(), 1):
        if rank > 1 and time.perf_counter() > deadline:
            break
        order = h(graph, tables)
        t1 = time.perf_counter()
        cands.append((simulate(graph, order, check=False).peak, rank, name, order))
        score_time = time.perf_counter() - t1
    best_peak, _, method, best = min(cands)
    lower = static_lower_bound(tables)
    optimal = best_peak <= lower
    if not optimal and graph.n_nodes:
        # leave time for the final re-score
        best, best_peak, method, optimal, lower = _improve(
            graph, tables, best, best_peak, method, lower, exact_max_nodes, deadline - score_time)
        best_peak = simulate(graph, best, check=False).peak    # authoritative re-score
    return Schedule(tuple(best), best_peak, method, optimal, min(lower, best_peak), base_peak,
                    time.perf_counter() - t0)


def _improve(graph: Graph, tables: MemTables, best: list[int], best_peak: int, method: str,
             lower: int, max_nodes: int, deadline: float) -> tuple[list[int], int, str, bool, int]:
    """Exact search on the cut segment holding the peak step, else on windows around it.

    A segment ``[lo, hi)`` between cut positions has a forced prefix, so its own
    optimum is a lower bound on the whole graph's, and proving that it cannot go
    below the current peak proves the current order optimal.  A window is any
    ``[lo, hi)`` of the current order (prefix and suffix held fixed).  Each success
    lowers the peak or the number of steps at the peak, so the loop ends; when no
    window around the peak step helps, the width doubles up to the segment's size.
    """
    n = graph.n_nodes
    cuts = cut_positions(graph, best)
    bounds = sorted({0, n, *cuts, *(c + 1 for c in cuts)})
    width = max(max_nodes, 2)
    tried: set[tuple[int, int]] = set()
    trace = simulate(graph, best, check=False)
    during, after = list(trace.during), list(trace.after)
    while time.perf_counter() < deadline:
        p = during.index(best_peak)
        i = bisect.bisect_right(bounds, p)
        seg, seg_end = bounds[i - 1], bounds[i]
        spans = [(seg, seg_end)] if seg_end - seg <= width else []
        for lo in (p - width // 2, p - width + 1, p):
            lo = min(max(lo, seg), max(seg_end - width, seg))
            spans.append((lo, min(lo + width, seg_end)))
        improved = False
        for lo, hi in dict.fromkeys(spans):
            if (lo, hi) in tried:
                continue
            tried.add((lo, hi))
            r = solve_window(graph, tables, best, lo, hi, base=after[lo - 1] if lo else 0,
                             ub=best_peak, deadline=deadline)
            whole_seg = (lo, hi) == (seg, seg_end)
            if r.order is not None:
                # prefix and suffix steps are unchanged: patch the window's bytes only
                best, improved = r.order, True
                during[lo:hi], after[lo:hi] = r.during, r.after
                best_peak = max(during)
                method = "exact" if (lo, hi) == (0, n) else "segment" if whole_seg else "window"
                tried.clear()
                break
            if whole_seg and r.proved:     # the peak step's segment cannot go below best_peak
                return best, best_peak, method, True, best_peak
            if whole_seg:
                lower = max(lower, r.lower)
            if time.perf_counter() > deadline:
                break
        if not improved:
            if width >= seg_end - seg:
                break
            width = min(2 * width, seg_end - seg)
    return best, best_peak, method, False, lower


def exact_schedule(graph: Graph, *, time_budget: float | None = None,
                   upper_bound: int | None = None) -> Schedule:
    """Min-peak order by exact search over the whole graph.

    Parameters
    ----------
    graph : Graph
    time_budget : float, optional
        Seconds; when they run out the best order found so far (at worst the best
        heuristic's) is returned with ``optimal=False``.
    upper_bound : int, optional
        Search only for orders with peak below ``upper_bound`` (and below the best
        heuristic's peak).

    Returns
    -------
    Schedule
        ``method='exact'`` when the search found the order, else the heuristic's name.

    Notes
    -----
    Worst case exponential (number of down-sets of the DAG); see :mod:`.sched_exact`.

    Examples
    --------
    >>> g = Graph([[0], [0], [1], [2]], [[1], [2], [3], [4]], size=[0, 8, 8, 1, 1], pinned=[3, 4])
    >>> s = exact_schedule(g)
    >>> s.peak, s.optimal, s.lower_bound
    (10, True, 10)
    """
    t0 = time.perf_counter()
    deadline = None if time_budget is None else t0 + time_budget
    tables = mem_tables(graph)
    name, order = "greedy-freed", HEURISTICS["greedy-freed"](graph, tables)
    peak_ = simulate(graph, order, check=False).peak
    ub = peak_ if upper_bound is None else min(peak_, upper_bound)
    r = solve_window(graph, tables, order, 0, graph.n_nodes, base=0, ub=ub, deadline=deadline)
    if r.order is not None:
        order, name, peak_ = r.order, "exact", simulate(graph, r.order, check=False).peak
    optimal = r.proved and (r.order is not None or ub == peak_)
    lower = peak_ if optimal else min(max(r.lower, static_lower_bound(tables)), peak_)
    return Schedule(tuple(order), peak_, name, optimal, lower, None, time.perf_counter() - t0)


def brute_force_peak(graph: Graph) -> int:
    """Least peak over *all* topological orders, each scored by :func:`~.memory.simulate`.

    For tests on tiny graphs only: O(N! * (N + V)).

    Examples
    --------
    >>> g = Graph([[0], [0], [1], [2]], [[1], [2], [3], [4]], size=[0, 8, 8, 1, 1], pinned=[3, 4])
    >>> brute_force_peak(g)
    10
    """
    if graph.n_nodes > 10:
        raise GraphError(f"brute_force_peak enumerates every order; {graph.n_nodes} nodes is too many")
    indeg = [len(p) for p in graph.preds]
    order: list[int] = []
    best = [None]

    def rec() -> None:
        if len(order) == graph.n_nodes:
            p = simulate(graph, order, check=False).peak
            if best[0] is None or p < best[0]:
                best[0] = p
            return
        for n in range(graph.n_nodes):
            if indeg[n] == 0 and n not in order:
                order.append(n)
                for s in graph.succs[n]:
                    indeg[s] -= 1
                rec()
                for s in graph.succs[n]:
                    indeg[s] += 1
                order.pop()

    rec()
    return best[0] if best[0] is not None else 0
