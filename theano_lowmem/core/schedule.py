"""Execution orders that minimise the peak of :func:`theano_lowmem.core.memory.peak`.

:func:`schedule` scores candidates with the one memory model and keeps the
best: the baseline order (what Theano would run); Liu's exact algorithm when
the graph is an in-forest (:func:`.sched_exact.tree_schedule`; when only extra
dependencies spoil the forest, Liu's order repaired to respect them); the fast
heuristics of :mod:`.sched_heuristics` (XLA list / DFS / post-order, the list
scheduler run from the end, Inductor LPMF / BFS / DFS, Kahn); then single-node
moves across the peak (:mod:`.sched_moves`) from the two best of them; then exact
search (:mod:`.sched_exact`) on the whole
graph when it is small, otherwise on the segment between two cut nodes that
holds the peak step, otherwise on windows of the best order around the peak
step, growing until a whole sweep of sizes finds nothing better (a local
optimum); there, the moves again if the windows changed the order, then, once, group
moves (:mod:`.sched_groups`: a node pulled before the peak step with its ancestors, or
pushed after it with its descendants; on small graphs they run instead before the
windows, right after the first single-node moves, with most of the budget left), then one
anytime depth-first branch and bound of the peak step's
segment (:meth:`.sched_exact._Window.search_dfs`) spends most of the budget left
looking for a lower peak, and the windows polish what it finds.  Early stop: after the
heuristics, after the multi-start moves and after the first moves of the windows' phase,
the minimum-cut bound (:func:`.sched_cuts.node_cut_bound`) of the nodes at the best
order's peak steps is tried; once one reaches the peak, the order is optimal and the
search stops (most call-time graphs of regular nets and elementwise DAGs, within a few
heuristics).  Candidates are scored with :func:`.sched_model.fast_trace`, which the
tests check against :func:`~.memory.simulate`, so bytes live across a window or
a cut are always accounted for.

Cut descent (:func:`cut_descent`), with work of its own beyond that budget (``EARLY_DESCENT``,
``END_DESCENT``), so the search above returns what it returned without it: the nodes at the
peak steps of an order are run, one after the other, at their least bytes given the blocks
the earlier ones fixed (one minimum cut each, :func:`.sched_cuts.cut_split`), then the
single-node moves repair the other steps.  It changes the order far more than the moves and
windows can, and leads them out of the local optima they stop in on RandWire cells.  Once
after the multi-start moves (if the minimum-cut proof then reaches the new order's peak, the
search stops there: the 84-node RandWire cell of ``families.randwire`` is optimal and proven
after 8,500 units, against 5% above the optimum after 14,600), and at the end from the best
order, while it lowers it; the result is the best of the search's order and the descents'.
When the early descent's order already has a lower peak than the search's, it is the result
and the end descent is skipped (on the 79-node ER cell of ``families.randwire`` the early
descent finds the proven optimum, 425,984 B, the search ends 7.7% above it, and the end
descent from there only found the early order's peak again, at 8,400 more units).

Determinism: every search counts its work in units (:class:`.sched_model.Budget`,
``time_budget * WORK_PER_SECOND`` of them), so the same arguments give the same
order on a loaded machine as on an idle one.  The wall clock is only a safety
cap at ``2 * time_budget + 0.1`` s; hitting it (``Schedule.capped``) is the one
source of non-determinism.

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
from dataclasses import dataclass, replace
from typing import Sequence

from .graph import Graph, GraphError
from .memory import simulate
from .sched_cuts import cut_lower_bound, cut_split, node_cut_bound
from .sched_groups import group_pass
from .sched_exact import (cut_positions, repair_order, solve_window, tree_parents,
                          tree_schedule)
from .sched_heuristics import HEURISTIC_COST, HEURISTICS, SCORE_COST
from .sched_model import (Budget, MemTables, fast_peak, mem_tables, static_lower_bound,
                          traced)
from .sched_moves import move_pass

__all__ = ["Schedule", "schedule", "exact_schedule", "reference_schedule", "brute_force_peak",
           "heuristic_orders"]

#: Work units one exact window search may spend, as a fraction of the whole budget
#: (``budget // WINDOW_SHARE``): a window that cannot be settled within it counts as "no
#: improvement", so a hard window cannot eat the budget of the rest of the sweep.  A
#: whole cut segment (which can prove the order optimal) may spend ``budget // SEGMENT_SHARE``.
WINDOW_SHARE = 8
#: Width of the first windows (at most ``exact_max_nodes``): narrow windows are cheap, so
#: the sweep reaches a local optimum well within a call-time budget, and the width doubles
#: when they stop helping.
WINDOW_START = 12
SEGMENT_SHARE = 2
#: At a local optimum of the windows, the depth-first search of the peak step's segment
#: (:meth:`.sched_exact._Window.search_dfs`) may spend ``DFS_SHARE / 4`` of the budget left,
#: and at most ``DFS_WORK_PER_EDGE * MemTables.edges`` units; the windows polish its order
#: with the rest.
DFS_SHARE = 3
DFS_WORK_PER_EDGE = 400
#: Single-node moves (:mod:`.sched_moves`) start from this many best distinct candidates,
#: each with at most ``1 / MULTI_START_SHARE`` of the budget left; the windows polish the
#: best result.  The list heuristics' local optima differ a lot on irregular graphs, and the
#: best start is often not the best after the moves (``benchmarks/bench_ordering.py``).
MULTI_START = 2
MULTI_START_SHARE = 8
#: Group moves (:mod:`.sched_groups`), run once at the first local optimum of the windows
#: and single-node moves, may spend this fraction (numerator, denominator) of the budget
#: left; the windows then polish their order, and the depth-first search gets the rest.
GROUP_SHARE = (1, 4)
#: With a budget of at least ``GROUP_EARLY_FROM`` units per node and edge (RandWire cells of
#: up to about 60 nodes, elementwise DAGs of up to about 70 at the call-time budget), the
#: group moves run at once after the first single-node moves, before the windows, with
#: ``GROUP_EARLY_SHARE`` of the budget left (``benchmarks/bench_ordering.py``).
GROUP_EARLY_FROM = 40
GROUP_EARLY_SHARE = (3, 4)
#: When the budget is at least ``HEURISTIC_SHARE_FROM`` units per node and edge (small
#: graphs: 40-100 nodes at the call-time budget), the heuristics after the first two run
#: only while the work spent, theirs included, stays within ``HEURISTIC_SHARE`` of the
#: budget: the last ones (rarely the best start) leave their work to the windows
#: (``benchmarks/bench_ordering.py``).  Larger graphs keep running every heuristic the
#: budget pays for (there, the search after them gets little, and costs more wall time
#: per unit).
HEURISTIC_SHARE = (1, 3)
HEURISTIC_SHARE_FROM = 20
#: Early stop: each time the best order's peak falls, the minimum-cut bound of the nodes at
#: its peak steps (:func:`.sched_cuts.node_cut_bound`, one max-flow each; only those can
#: reach the peak, as the order itself completes every down-set they minimise over) is
#: computed, and the search stops once one of them reaches the peak.  A flow may scan at
#: most ``CUT_WORK_PER_EDGE * MemTables.edges`` arcs; ``CUT_SCANS_PER_UNIT`` arc scans are
#: charged as one work unit (measured: 0.3-0.35 us per scan, about 1 us per unit).
CUT_WORK_PER_EDGE = 8
CUT_SCANS_PER_UNIT = 3
#: ... and all of them at most ``1 / CUT_SHARE`` of the budget.
#: The proofs run after the heuristics, after the multi-start moves and after the first
#: single-node and group moves of :func:`_improve`, not inside its window loop: there the
#: peak falls often and the flows (rarely proving on irregular graphs) cost the windows
#: units they need (``benchmarks/bench_ordering.py``, seeds 42 and 7: 2 RandWire cells
#: more above 3%, 2 more proven).
CUT_SHARE = 8
#: Cut descent (:func:`cut_descent`, one minimum cut per split): it gets work of its own,
#: beyond the budget of the search above, whose results it leaves as they were (they are
#: tuned to that budget: giving the descents a share of it instead lost more than they
#: won, RandWire cells of ``benchmarks/bench_ordering.py`` within 3% of the optimum, seeds
#: 7 / 1234: 73% / 68% with 40% of the budget taken from the search, 86% / 84% before).
#: ``EARLY_DESCENT``: after the multi-start moves, at most this fraction (numerator,
#: denominator) of the budget for a descent and single-node moves from the best order, and
#: ``1 / CUT_SHARE`` for the minimum-cut proofs of the orders it finds below the best peak;
#: when one reaches the peak, the search stops there, else the order is a candidate.
#: ``END_DESCENT``: at the end, at most this fraction for descents, each followed by
#: single-node moves, from the best order while they lower it (leximax of the steps):
#: seeds 7 / 1234 / 42, 100% / 100% / 91% within 3% (86% / 84% / 86% before; at 1/2 of
#: the budget 100% / 95% / 91%, at 2/5 91% / 95% on seeds 7 / 1234).  Skipped when the
#: early descent's order has a lower peak than the search's (that order is the result):
#: the same share within 3% on seeds 7 / 1234 / 3 / 42, every proven cell's peak unchanged,
#: 2 unproven cells of 160 3-5% higher, 8,400 units less on the randwire_er cell (25,534
#: -> 17,164; its first call still plans at 7.4-8.6 ms of ``schedule()``, 115-134 ms per
#: 1,000 nodes, ``benchmarks/bench_callplan.py`` in docs/results/nets.md; stopping after
#: the first better pass instead, or sharing the budget with the search, cost quality:
#: seed 1234 95%, seed 3 89%).
EARLY_DESCENT = (1, 5)
#: ... and ``EARLY_DESCENT_SMALL`` instead when the budget is at least ``GROUP_EARLY_FROM``
#: units per node and edge (the small graphs whose group moves also run early: RandWire
#: cells of up to about 60 nodes at the call-time budget).  At 1/5 the descent there stops
#: before it has split every peak node and no moves follow; at 3/5 it finishes and the moves
#: polish its order (seed 42 #32 of ``benchmarks/bench_ordering.py``: descent 54 -> 52 L,
#: moves -> 50 L, the optimum; 57 L at 1/5).  RandWire cells within 3% of the optimum,
#: seeds 42 / 7 / 1234 / 3: 95% / 100% / 100% / 95% (91% / 100% / 100% / 95% at 1/5; the
#: same with 2/3 or 4/5; 2/5 leaves #32); elementwise DAGs 100%; of the 320 graphs of the
#: four seeds, 1 lower peak (#32), 1 higher (an unproven elementwise DAG, seed 3 #36, 62 ->
#: 64 L), RandWire work +1.5%.  Larger graphs keep 1/5: there the longer descent only adds
#: work (the 79-node ER cell of ``families.randwire``, 39.5 units per node and edge, would
#: spend 18,821 units instead of 17,164 for the same order peak).
EARLY_DESCENT_SMALL = (3, 5)
END_DESCENT = (3, 5)
#: One flow of the descent may scan at most this many arcs per node and edge.
DESCENT_WORK_PER_EDGE = 40


class _CutProof:
    """Proofs of optimality by :func:`.sched_cuts.node_cut_bound` on a best order's peak
    steps; remembers each node's bound so a node is never flowed twice for nothing."""

    def __init__(self, graph: Graph, tables: MemTables, budget: Budget) -> None:
        self.graph, self.tables, self.budget = graph, tables, budget
        self.done: dict[int, tuple[int, bool]] = {}      # node -> (bound, exact or capped)
        self.checked = None                               # the last peak checked
        self.left = budget.limit // CUT_SHARE if budget.limit is not None else 1 << 62
        self.seen = [1 << 62] * graph.n_nodes                # least bytes live seen at each node

    def fork(self, budget: Budget) -> "_CutProof":
        """A copy that charges ``budget`` (its flows limited by it alone) and shares no
        state with this one, so the search that uses this one runs as without the copy."""
        p = _CutProof.__new__(_CutProof)
        p.graph, p.tables, p.budget = self.graph, self.tables, budget
        p.done, p.checked, p.left, p.seen = dict(self.done), None, 1 << 62, list(self.seen)
        return p

    def observe(self, order: Sequence[int], during: Sequence[int]) -> None:
        """Note the live bytes at each node's step of a valid order: a node's cut bound
        cannot exceed them, so a node seen below a peak is never flowed for it."""
        seen = self.seen
        for v, d in zip(order, during):
            if d < seen[v]:
                seen[v] = d

    def lower(self, order: Sequence[int], peak: int, during: Sequence[int] | None = None,
              lower: int = 0) -> int:
        """``lower`` raised by the cut bounds of ``order``'s peak-step nodes, stopping at
        the first that reaches ``peak`` (then the result is ``peak``: ``order`` is optimal)."""
        if self.checked is not None and peak >= self.checked or lower >= peak:
            return lower
        self.checked = peak
        t, budget = self.tables, self.budget
        # the trace and the filter (O(N + E), tens of us) are charged with the first flow
        # they lead to, so a search whose peaks never pass the filter spends the same
        # units as without the proofs
        pending = len(order) // 4
        if during is None:
            during = traced(t, order)[0]
            pending += t.edges // 2
        self.observe(order, during)
        cap = CUT_WORK_PER_EDGE * t.edges
        for i, d in enumerate(during):
            if d != peak:
                continue
            x = order[i]
            if self.seen[x] < peak:      # another order runs x with fewer bytes live
                continue
            if x in self.done:
                bound, final = self.done[x]
                if bound >= peak:
                    return peak
                if final:
                    continue
            if min(budget.left(), self.left) < cap // CUT_SCANS_PER_UNIT:
                break
            bound, exact, work = node_cut_bound(self.graph, t, x, target=peak, max_work=cap)
            units = work // CUT_SCANS_PER_UNIT + 1 + pending
            pending = 0
            budget.spend(units)
            self.left -= units
            self.done[x] = (bound, exact)
            lower = max(lower, bound)
            if bound >= peak:
                return peak
        return lower


@dataclass(frozen=True)
class Schedule:
    """A scheduler's answer.

    ``order``: node ids, a valid order of the graph; ``peak`` ==
    ``memory.peak(graph, order)``; ``method``: the candidate it came from
    (``'baseline'``, ``'tree'``, ``'tree+deps'``, a heuristic name, a heuristic name + ``'+moves'``,
    ``'moves'``, ``'groups'``, ``'exact'``, ``'segment'``, ``'window'``, ``'dfs'``, ``'cuts'``);
    ``optimal``: proven optimal; ``lower_bound``: proven lower bound on the optimum;
    ``baseline_peak``: peak of the given baseline; ``elapsed``: seconds spent;
    ``work``: work units spent (deterministic); ``capped``: the wall-clock safety cap
    stopped the search (the only case where the result may depend on the machine).
    """

    order: tuple[int, ...]
    peak: int
    method: str
    optimal: bool
    lower_bound: int
    baseline_peak: int | None
    elapsed: float
    work: int = 0
    capped: bool = False


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
        Size of the search, in seconds of this project's reference machine: the
        search may do ``time_budget * WORK_PER_SECOND`` work units
        (:class:`.sched_model.Budget`), whatever the machine's speed or load.  The
        baseline, the tables and the first heuristic always run; the other
        heuristics while the budget can pay for them; then exact search until a
        local optimum, a proof of optimality, or the end of the budget.  The cut
        descents may do up to ``EARLY_DESCENT + 1 / CUT_SHARE + END_DESCENT`` (0.925;
        1.325 with ``EARLY_DESCENT_SMALL``) times that much more (``Schedule.work`` counts both; when the early descent is
        proven optimal, the rest is skipped; when its order beats the search's, the end
        descent is).  A safety cap stops everything after
        ``2 * time_budget + 0.1`` wall-clock seconds.
    exact_max_nodes : int
        Graphs up to this many nodes are searched exactly as a whole; larger ones by
        cut segments of up to this many nodes and by windows starting at this size.
    seed : int
        Reserved for randomised candidates (unused).

    Returns
    -------
    Schedule
        The same for the same ``(graph, baseline, time_budget, exact_max_nodes, seed)``
        unless ``capped``.

    Raises
    ------
    GraphError
        If ``baseline`` is not a valid order of ``graph``.

    Notes
    -----
    Tables and heuristics: O((N + E) log N) each; trees: Liu's algorithm,
    O(N log N) typically.  Exact search: exponential in the window's width,
    bounded by the budget.

    Examples
    --------
    >>> # v0 -> a (8 bytes) -> c ; v0 -> b (8 bytes) -> d ; c and d small outputs
    >>> g = Graph([[0], [0], [1], [2]], [[1], [2], [3], [4]], size=[0, 8, 8, 1, 1], pinned=[3, 4])
    >>> s = schedule(g, baseline=[0, 1, 2, 3])
    >>> s.order, s.peak, s.baseline_peak, s.optimal
    ((0, 2, 1, 3), 10, 17, True)
    """
    t0 = time.perf_counter()
    budget = Budget.for_seconds(time_budget)
    tables = mem_tables(graph)
    budget.spend(3 * tables.edges // 2)    # measured: 0.4-1.1 us per node and edge
    cands: list[tuple[int, int, str, list[int]]] = []   # (peak, rank, method, order)
    base_peak = None
    if baseline is not None:
        graph.check_order(baseline)
        base_peak = traced(tables, baseline)[2]
        cands.append((base_peak, 0, "baseline", list(baseline)))
        budget.spend(tables.edges // 2)    # check + score: 0.15-0.3 us per node and edge
    lower = static_lower_bound(tables)
    # Liu's algorithm is exact on in-forests and costs about as much as a heuristic,
    # so it always gets at least that much work, even from a zero budget
    tree_budget = Budget(max(budget.left(), 8 * tables.edges), budget.cap)
    tree = tree_schedule(graph, tables, tree_budget)
    relaxed = None
    if tree is None and any(graph.extra_deps) and tree_parents(graph, extra_deps=False):
        relaxed = tree_schedule(graph, tables, tree_budget, extra_deps=False)
    budget.spend(tree_budget.spent)
    budget.capped |= tree_budget.capped
    proof = _CutProof(graph, tables, budget) if tree is None else None
    if tree is not None:                   # exact on in-forests: nothing else to search
        order = tree[0]
        tree_peak = traced(tables, order)[2]
        cands.append((tree_peak, 1, "tree", order))
        lower = max(lower, tree_peak) if tree_peak == tree[1] else lower
    else:
        if relaxed is not None:            # a forest but for extra deps: Liu, then repaired
            order = repair_order(graph, relaxed[0])
            cands.append((traced(tables, order)[2], 1, "tree+deps", order))
            budget.spend(3 * tables.edges)
        for rank, (name, h) in enumerate(HEURISTICS.items(), 2):
            cost = (HEURISTIC_COST[name] + SCORE_COST) * tables.edges // 4    # run + score
            if rank > 2 and budget.left() < cost:
                break
            if (rank > 3 and budget.limit is not None
                    and budget.limit >= HEURISTIC_SHARE_FROM * tables.edges
                    and (budget.spent + cost) * HEURISTIC_SHARE[1] > budget.limit * HEURISTIC_SHARE[0]):
                break
            order = h(graph, tables)
            during, _, peak = traced(tables, order)
            proof.observe(order, during)
            cands.append((peak, rank, name, order))
            budget.spend(cost)
    best_peak, _, method, best = min(cands)
    if proof is not None and best_peak > lower:
        lower = proof.lower(best, best_peak, lower=lower)
    optimal = best_peak <= lower
    settled = False                        # the moves ran on ``best`` to a local optimum
    early, extra_work = None, 0            # the early descent's order (not proven optimal)
    if not optimal and tree is None and graph.n_nodes:
        best_peak, method, best, settled = _multi_start(graph, tables, cands, budget)
        lower = proof.lower(best, best_peak, lower=lower)
        optimal = best_peak <= lower
        if not optimal and budget.limit is not None:
            share = (EARLY_DESCENT_SMALL if budget.limit >= GROUP_EARLY_FROM * tables.edges
                     else EARLY_DESCENT)
            extra = Budget(budget.limit * share[0] // share[1], budget.cap)
            flows = Budget(budget.limit // CUT_SHARE, budget.cap)     # its proofs' own share
            early, ok = _early_descent(graph, tables, best, best_peak, lower,
                                       proof.fork(flows), extra)
            extra_work += extra.spent + flows.spent
            budget.capped |= extra.capped or flows.capped
            if ok:
                best, best_peak, method, optimal, lower = early, traced(tables, early)[2], \
                    "cuts", True, ok
    if not optimal and graph.n_nodes and budget.left() >= 2 * tables.edges:
        best, best_peak, method, optimal, lower = _improve(
            graph, tables, best, best_peak, method, lower, exact_max_nodes, budget, settled,
            proof)
    if (not optimal and early is not None
            and traced(tables, early)[2] < traced(tables, best)[2]):
        # the early descent's order beats the whole search: the result, without the end
        # descent (from the search's worse order it seldom goes below the early one, and
        # costs up to END_DESCENT more; its proof was tried when the early descent found it)
        best, method = early, "cuts"
    elif not optimal and tree is None and graph.n_nodes and budget.limit is not None:
        extra = Budget(budget.limit * END_DESCENT[0] // END_DESCENT[1], budget.cap)
        new = _end_descent(graph, tables, best, extra)
        if new is not None:
            best, method = new, "cuts"
        if early is not None and _leximax(tables, early) < _leximax(tables, best):
            best, method = early, "cuts"
        if new is not None or method == "cuts":
            lower = proof.fork(extra).lower(best, traced(tables, best)[2], lower=lower)
        extra_work += extra.spent
        budget.capped |= extra.capped
    best_peak = traced(tables, best)[2]
    return Schedule(tuple(best), best_peak, method, optimal or lower >= best_peak,
                    min(lower, best_peak), base_peak, time.perf_counter() - t0,
                    budget.spent + extra_work, budget.capped)


def _leximax(tables: MemTables, order: Sequence[int]) -> list[int]:
    """The steps' bytes of ``order``, highest first (compared lexicographically)."""
    return sorted(traced(tables, order)[0], reverse=True)


def _early_descent(graph: Graph, tables: MemTables, best: list[int], best_peak: int,
                   lower: int, proof: "_CutProof", budget: Budget) -> tuple[list[int], int]:
    """A descent from ``best``, then single-node moves (``budget``): ``(order, its proven
    lower bound)`` when the minimum-cut proof (``proof``, charging its own budget) reaches
    the peak of an order below ``best_peak`` (after a split, or after the moves), else
    ``(order, 0)``."""
    found = [0]

    def proven(order: list[int], during: list[int]) -> bool:
        peak = max(during)
        if peak < best_peak:
            found[0] = max(found[0], proof.lower(order, peak, during, lower))
            return found[0] >= peak
        return False

    order = cut_descent(graph, tables, best, budget, stop=proven)
    during = traced(tables, order)[0]
    budget.spend(tables.edges // 4)
    if proven(order, during):
        return order, found[0]
    order, changed = move_pass(graph, tables, order, budget)
    if changed:
        during = traced(tables, order)[0]
        budget.spend(tables.edges // 4)
        if proven(order, during):
            return order, found[0]
    return order, 0


def _end_descent(graph: Graph, tables: MemTables, best: list[int], budget: Budget
                 ) -> list[int] | None:
    """Descents, each followed by single-node moves, from ``best`` while they lower the
    leximax of the steps and ``budget`` lasts: the last better order, or None."""
    cur, found = _leximax(tables, best), None
    while not budget.exhausted:
        order = cut_descent(graph, tables, best, budget)
        order, _ = move_pass(graph, tables, order, budget)
        lex = _leximax(tables, order)
        budget.spend(tables.edges // 4)
        if lex >= cur:
            break
        cur, best = lex, order
        found = order
    return found


def cut_descent(graph: Graph, tables: MemTables, order: Sequence[int], budget: Budget,
                max_splits: int | None = None, stop=None) -> list[int]:
    """Run the nodes at the peak steps of ``order`` at their least bytes, one minimum cut
    each: a valid order with blocks of nodes whose relative order is ``order``'s.

    The order is a sequence of blocks (at first one, the whole order).  While a node ``x``
    at a peak step has not been split on: the nodes of the blocks before ``x``'s are forced
    to run before it, those of the blocks after it after it, and :func:`.sched_cuts.cut_split`
    gives the down-set ``D`` that runs ``x`` with the fewest bytes live; ``x``'s block
    becomes (its nodes in ``D``, ``x``, the rest), each keeping its order.  Every split
    gives ``x`` the least step the blocks allow (never above its step before), though the
    other steps may rise: the caller polishes the result with the moves and keeps it only
    if it is better.  A far-reaching change the local searches cannot make (they move one
    node, or a node and its ancestors or descendants, at a time): on the RandWire cells of
    ``benchmarks/bench_ordering.py`` it leads them out of local optima 5-10% above the
    optimum.

    Work: per split, ``MemTables.edges // 2`` (the trace and the blocks) and the flow's
    arc scans (``CUT_SCANS_PER_UNIT`` per unit, at most ``DESCENT_WORK_PER_EDGE`` per node
    and edge); stops at ``max_splits`` splits, when the budget left cannot pay for a flow of
    ``2 * MemTables.edges`` scans, when a flow runs out of work, when every peak step's node
    has been split on, or when ``stop(order, during)`` (called after each split with the
    order and its steps' bytes) returns True.

    Examples
    --------
    >>> g = Graph([[0], [0], [1], [2]], [[1], [2], [3], [4]], size=[0, 8, 8, 1, 1], pinned=[3, 4])
    >>> cut_descent(g, mem_tables(g), [0, 1, 2, 3], Budget(None, None))
    [0, 2, 1, 3]
    """
    n = len(order)
    blocks = [list(order)]
    where = [0] * n
    split = [False] * n
    cap = DESCENT_WORK_PER_EDGE * tables.edges
    done = 0
    while max_splits is None or done < max_splits:
        scans = min(cap, (budget.left() - tables.edges) * CUT_SCANS_PER_UNIT)
        if scans < 2 * tables.edges:
            break
        order = [v for b in blocks for v in b]
        during, _, peak = traced(tables, order)
        x = next((v for v, d in zip(order, during) if d == peak and not split[v]), None)
        budget.spend(tables.edges // 2)
        if x is None or (stop is not None and done and stop(order, during)):
            break
        for i, b in enumerate(blocks):
            for v in b:
                where[v] = i
        bi = where[x]
        side = [1 if where[v] < bi else 2 if where[v] > bi else 0 for v in range(n)]
        D, _, work = cut_split(graph, tables, x, side, max_work=scans)
        budget.spend(work // CUT_SCANS_PER_UNIT + 1)
        if D is None:
            break
        split[x] = True
        done += 1
        blk = blocks[bi]
        parts = [v for v in blk if D[v]], [x], [v for v in blk if not D[v] and v != x]
        blocks[bi:bi + 1] = [b for b in parts if b]
    return [v for b in blocks for v in b]


def _multi_start(graph: Graph, tables: MemTables, cands: list, budget: Budget
                 ) -> tuple[int, str, list[int], bool]:
    """Single-node moves from each of the ``MULTI_START`` best distinct candidates (by
    peak, then rank), each with at most ``1 / MULTI_START_SHARE`` of the budget left:
    the best result's ``(peak, method, order, moves ran to a local optimum)`` (ties: the
    better start)."""
    seen, out = set(), []
    share = budget.left() // MULTI_START_SHARE
    for peak_, rank, name, order in sorted(cands):
        if len(seen) == MULTI_START or share < 2 * tables.edges:
            break
        if tuple(order) in seen:
            continue
        seen.add(tuple(order))
        sub = Budget(share, budget.cap)
        new, changed = move_pass(graph, tables, order, sub)
        budget.spend(sub.spent)
        budget.capped |= sub.capped
        out.append((traced(tables, new)[2] if changed else peak_, len(out),
                    name + "+moves" if changed else name, new, not sub.exhausted))
        budget.spend(tables.edges // 4 if changed else 0)
    best_peak, _, method, best, settled = min(out or [(*min(cands), False)])
    return best_peak, method, best, settled


def _improve(graph: Graph, tables: MemTables, best: list[int], best_peak: int, method: str,
             lower: int, max_nodes: int, budget: Budget, settled: bool = False,
             proof: _CutProof | None = None) -> tuple[list[int], int, str, bool, int]:
    """Exact search on the cut segment holding the peak step, else on windows around it.

    A segment ``[lo, hi)`` between cut positions has a forced prefix, so its own
    optimum is a lower bound on the whole graph's, and proving that it cannot go
    below the current peak proves the current order optimal.  A window is any
    ``[lo, hi)`` of the current order (prefix and suffix held fixed).  Each success
    lowers the peak or the number of steps at the peak and restarts the sweep at the
    smallest width; when no window around the peak step helps, the width doubles up
    to the segment's size, and a sweep that ends without success is a local optimum:
    then single-node moves (:func:`.sched_moves.move_pass`, first run before the windows)
    if a window changed the order since they last ran, restarting the sweep if they help;
    else one depth-first search of the peak step's segment (at most ``DFS_SHARE / 4`` of the
    budget left, and ``DFS_WORK_PER_EDGE`` units per node and edge) looks for a lower peak:
    if it finds one, the sweep restarts from it (the depth-first search is not run again),
    else the search stops, whatever budget is left.  Each window may spend at most
    ``1 / WINDOW_SHARE`` of the budget (a whole segment ``1 / SEGMENT_SHARE``); once a
    window of some width exhausts its share without success, wider ones are not tried.
    """
    n = graph.n_nodes
    budget.spend(tables.edges)             # cuts + trace: about 0.5 us per node and edge
    cuts = cut_positions(graph, best)
    bounds = sorted({0, n, *cuts, *(c + 1 for c in cuts)})
    w0 = width = max(min(max_nodes, WINDOW_START), 2)
    window_work = None if budget.limit is None else max(budget.limit // WINDOW_SHARE, 1)
    seg_work = None if budget.limit is None else max(budget.limit // SEGMENT_SHARE, 1)
    tried: set[tuple[int, int]] = set()
    dfs_done = grouped = False
    moved = False          # the single-node moves ran on the current order and found nothing
    during = after = pos = []

    def moves(run: bool = True, groups: bool = False, share: tuple[int, int] = GROUP_SHARE) -> bool:
        """Single-node moves on ``best`` (:mod:`.sched_moves`), or group moves
        (:mod:`.sched_groups`, at most ``GROUP_SHARE`` of the budget left); refresh the
        step tables."""
        nonlocal best, best_peak, method, during, after, pos
        if groups:
            sub = Budget(budget.left() * share[0] // share[1], budget.cap)
            order, changed = group_pass(graph, tables, best, sub)
            budget.spend(sub.spent)
            budget.capped |= sub.capped
        else:
            order, changed = move_pass(graph, tables, best, budget) if run else (best, False)
        if changed:
            best, method = order, "groups" if groups else "moves"
        during, after, best_peak = traced(tables, best)
        pos = [0] * n
        for i, v in enumerate(best):
            pos[v] = i
        return changed

    moves(not settled)                    # ``settled``: they already ran to a local optimum
    moved = True
    if proof is not None:
        lower = proof.lower(best, best_peak, during, lower)
    if (budget.limit is not None and budget.limit >= GROUP_EARLY_FROM * tables.edges
            and best_peak > lower):
        grouped = True
        if moves(groups=True, share=GROUP_EARLY_SHARE):
            moved = False
    if proof is not None and grouped:
        lower = proof.lower(best, best_peak, during, lower)
    while not budget.exhausted:
        if lower >= best_peak:    # reached a bound proven earlier (a cut, a segment search)
            return best, best_peak, method, True, best_peak
        p = during.index(best_peak)
        i = bisect.bisect_right(bounds, p)
        seg, seg_end = bounds[i - 1], bounds[i]
        spans = [(seg, seg_end)] if seg_end - seg <= width else []
        for lo in (p - width // 2, p - width + 1, p):
            lo = min(max(lo, seg), max(seg_end - width, seg))
            spans.append((lo, min(lo + width, seg_end)))
        improved, settled = False, True
        for lo, hi in dict.fromkeys(spans):
            if (lo, hi) in tried:
                continue
            tried.add((lo, hi))
            whole_seg = (lo, hi) == (seg, seg_end)
            r = solve_window(graph, tables, best, lo, hi, base=after[lo - 1] if lo else 0, ub=best_peak,
                             budget=budget, max_work=seg_work if whole_seg else window_work, pos=pos)
            if r.order is not None:
                # prefix and suffix steps are unchanged: patch the window's bytes only
                best, improved, moved = r.order, True, False
                during[lo:hi], after[lo:hi] = r.during, r.after
                for j in range(lo, hi):
                    pos[best[j]] = j
                best_peak = max(during)
                method = "exact" if (lo, hi) == (0, n) else "segment" if whole_seg else "window"
                tried.clear()
                width = w0
                break
            if whole_seg and r.proved:     # the peak step's segment cannot go below best_peak
                return best, best_peak, method, True, best_peak
            if whole_seg:
                lower = max(lower, r.lower)
            settled = settled and r.proved
            if budget.exhausted:
                break
        if not improved:
            # a whole sweep found nothing (a local optimum), or windows of this width already
            # outgrow their work share (wider ones, holding them, would too): one depth-first
            # search of the peak step's segment, then stop unless it found a better order
            if width >= seg_end - seg or not settled:
                if not moved:      # the windows moved nodes: single-node moves may apply again
                    moved = True
                    if moves():
                        tried.clear()
                        width = w0
                        continue
                if not grouped:    # group moves, once, at a local optimum of the rest
                    grouped = True
                    if moves(groups=True):
                        tried.clear()
                        width, moved = w0, False
                        continue
                if dfs_done or budget.left() < tables.edges:
                    break
                dfs_done = True
                r = solve_window(graph, tables, best, seg, seg_end, base=after[seg - 1] if seg else 0,
                                 ub=best_peak, budget=budget, pos=pos, depth_first=True,
                                 max_work=min(budget.left() * DFS_SHARE // 4, DFS_WORK_PER_EDGE * tables.edges))
                if r.order is not None:
                    best, moved = r.order, False
                    during[seg:seg_end], after[seg:seg_end] = r.during, r.after
                    for j in range(seg, seg_end):
                        pos[best[j]] = j
                    best_peak = max(during)
                    method = "dfs"
                    tried.clear()
                    width = w0
                    continue
                if r.proved:               # nothing below best_peak in the peak step's segment
                    return best, best_peak, method, True, best_peak
                break
            width = min(2 * width, seg_end - seg)
    return best, best_peak, method, lower >= best_peak, lower


def exact_schedule(graph: Graph, *, time_budget: float | None = None,
                   upper_bound: int | None = None, floor: int = 0) -> Schedule:
    """Min-peak order by exact search over the whole graph (Liu's algorithm on in-forests).

    Parameters
    ----------
    graph : Graph
    time_budget : float, optional
        Size of the search, as for :func:`schedule` (deterministic work units, with a
        wall-clock cap at twice that plus 0.1 s); when it runs out the best order
        found so far (at worst the best heuristic's) is returned with ``optimal=False``.
        None: no limit.
    upper_bound : int, optional
        Search only for orders with peak below ``upper_bound`` (and below the best
        heuristic's peak).
    floor : int
        A proven lower bound on the optimum (e.g. :func:`.sched_cuts.cut_lower_bound`):
        the search stops at the first order reaching it.

    Returns
    -------
    Schedule
        ``method='exact'`` when the search found the order, ``'tree'`` for an in-forest,
        else the heuristic's name.

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
    budget = Budget.for_seconds(time_budget)
    tables = mem_tables(graph)
    tree = tree_schedule(graph, tables, budget)
    if tree is not None and fast_peak(tables, tree[0]) == tree[1]:
        return Schedule(tuple(tree[0]), tree[1], "tree", True, tree[1], None,
                        time.perf_counter() - t0, budget.spent, budget.capped)
    name, order = "greedy-freed", HEURISTICS["greedy-freed"](graph, tables)
    peak_ = fast_peak(tables, order)
    ub = peak_ if upper_bound is None else min(peak_, upper_bound)
    r = solve_window(graph, tables, order, 0, graph.n_nodes, base=0, ub=ub, budget=budget,
                     strong=True, floor=floor)
    if r.order is not None:
        order, name, peak_ = r.order, "exact", fast_peak(tables, r.order)
    optimal = r.proved and (r.order is not None or ub == peak_)
    lower = peak_ if optimal else min(max(r.lower, static_lower_bound(tables), floor), peak_)
    return Schedule(tuple(order), peak_, name, optimal, lower, None, time.perf_counter() - t0,
                    budget.spent, budget.capped)


def reference_schedule(graph: Graph, *, time_budget: float | None = None,
                       upper_bound: int | None = None) -> Schedule:
    """The offline reference of the benchmarks and tests (not used by call-time planning):
    :func:`exact_schedule` started from the minimum-cut lower bound
    (:func:`.sched_cuts.cut_lower_bound`), which also proves an order optimal whenever
    its peak reaches that bound.

    Parameters
    ----------
    graph : Graph
    time_budget : float, optional
        The exact search's budget (as for :func:`exact_schedule`; None: no limit).  The
        cut bound (one max-flow per node, tens of ms at 100 nodes) is not charged.
    upper_bound : int, optional
        Search only for orders with peak below ``upper_bound``: a known order's peak.

    Returns
    -------
    Schedule
        As :func:`exact_schedule`; ``lower_bound`` is at least the cut bound (capped at
        ``peak``) and ``optimal`` is also set when it reaches ``peak``.  When the search
        proves nothing below ``upper_bound`` exists, ``lower_bound == upper_bound``.

    Examples
    --------
    >>> g = Graph([[0], [0], [1], [2]], [[1], [2], [3], [4]], size=[0, 8, 8, 1, 1], pinned=[3, 4])
    >>> s = reference_schedule(g)
    >>> s.peak, s.optimal, s.lower_bound
    (10, True, 10)
    """
    t0 = time.perf_counter()
    floor = cut_lower_bound(graph)
    r = exact_schedule(graph, time_budget=time_budget, upper_bound=upper_bound, floor=floor)
    lower = max(r.lower_bound, min(floor, r.peak))
    return replace(r, optimal=r.optimal or lower >= r.peak, lower_bound=lower,
                   elapsed=time.perf_counter() - t0)


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
