"""Schedulers: exact == brute force, Liu == brute force on trees, heuristics valid, never
worse than the baseline, deterministic (also on a slow clock), budget respected; every
peak re-scored with ``core.memory``."""
from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from theano_lowmem.core import Graph, memory, sched_model
from theano_lowmem.core.randgraphs import FAMILIES, erdos_renyi, fan_out, watts_strogatz
from theano_lowmem.core.sched_exact import (cut_positions, repair_order, solve_window,
                                            tree_parents, tree_schedule)
from theano_lowmem.core.sched_model import Budget, fast_trace, mem_tables, static_lower_bound
from theano_lowmem.core.schedule import (brute_force_peak, exact_schedule, heuristic_orders,
                                         schedule)

from .strategies import graph_and_order, graphs


def relabel(g: Graph, perm: list[int]) -> Graph:
    """The same graph with node ``n`` renamed ``perm[n]`` (values unchanged)."""
    inv = [0] * len(perm)
    for n, p in enumerate(perm):
        inv[p] = n
    return Graph([g.node_inputs[inv[k]] for k in range(g.n_nodes)],
                 [g.node_outputs[inv[k]] for k in range(g.n_nodes)], g.size, g.alias_of,
                 sorted(g.pinned), [[perm[d] for d in g.extra_deps[inv[k]]] for k in range(g.n_nodes)],
                 workspace=[g.workspace[inv[k]] for k in range(g.n_nodes)])


@given(graphs(max_nodes=7))
def test_exact_equals_brute_force(g):
    best = brute_force_peak(g)
    ex = exact_schedule(g)
    g.check_order(ex.order)
    assert ex.peak == memory.peak(g, ex.order) == best
    assert ex.optimal and ex.lower_bound == best
    s = schedule(g)
    assert s.peak == memory.peak(g, s.order) == best and s.optimal
    assert static_lower_bound(mem_tables(g)) <= best


@given(graphs(max_nodes=7))
def test_heuristics_valid_and_not_below_optimum(g):
    best = brute_force_peak(g)
    orders = heuristic_orders(g)
    assert len(orders) >= 6
    for name, order in orders.items():
        g.check_order(order)
        assert memory.peak(g, order) >= best, name


@given(graph_and_order(max_nodes=12), st.sampled_from([0.0, 0.05]), st.sampled_from([0, 4, 20]))
def test_never_worse_than_baseline(go, budget, max_nodes):
    g, base = go
    s = schedule(g, baseline=base, time_budget=budget, exact_max_nodes=max_nodes)
    g.check_order(s.order)
    assert s.baseline_peak == memory.peak(g, base)
    assert s.peak == memory.peak(g, s.order) <= s.baseline_peak
    assert s.lower_bound <= s.peak
    if s.optimal:
        assert s.lower_bound == s.peak


@given(graph_and_order(max_nodes=12), st.data())
def test_window_bytes_match_simulate(go, data):
    """The exact search's incremental live bytes equal ``memory.simulate`` on its result."""
    g, order = go
    lo = data.draw(st.integers(0, g.n_nodes - 1))
    hi = data.draw(st.integers(lo + 1, g.n_nodes))
    tr = memory.simulate(g, order)
    r = solve_window(g, mem_tables(g), order, lo, hi, base=tr.after[lo - 1] if lo else 0,
                     ub=max(tr.during[lo:hi]) + 1, deadline=None)
    assert r.proved and r.order is not None      # ub above the current window peak: always found
    g.check_order(r.order)
    assert r.order[:lo] == order[:lo] and r.order[hi:] == order[hi:]
    new = memory.simulate(g, r.order)
    assert new.during[lo:hi] == r.during and new.after[lo:hi] == r.after
    assert r.peak == max(new.during[lo:hi]) <= max(tr.during[lo:hi])
    assert new.during[:lo] == tr.during[:lo] and new.during[hi:] == tr.during[hi:]


@given(graphs(max_nodes=10))
def test_cut_positions_are_forced(g):
    order = g.topological_order()
    cuts = cut_positions(g, order)
    for i, n in enumerate(order):
        desc = len(g.subgraph_nodes_reachable([n])) - 1
        ancestors = [m for m in range(g.n_nodes) if m != n and n in g.subgraph_nodes_reachable([m])]
        forced = len(ancestors) == i and len(ancestors) + desc + 1 == g.n_nodes
        assert (i in cuts) == forced, (i, n)


@settings(max_examples=15)
@given(graphs(max_nodes=7), st.randoms(use_true_random=False))
def test_independent_of_node_ids(g, rnd):
    perm = list(range(g.n_nodes))
    rnd.shuffle(perm)
    h = relabel(g, perm)
    assert exact_schedule(h).peak == exact_schedule(g).peak == schedule(h).peak


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_medium_graphs_reach_exact_optimum(family):
    """16-30 node graphs: ``schedule`` within the default budget matches exact search."""
    for seed in range(3):
        g = FAMILIES[family](16 + 7 * seed, seed, workspace_prob=0.1)
        base = g.topological_order()
        s1, s2 = schedule(g, baseline=base), schedule(g, baseline=base)
        assert s1.order == s2.order and s1.method == s2.method            # deterministic
        ex = exact_schedule(g, time_budget=5.0)
        assert s1.peak == memory.peak(g, s1.order) <= memory.peak(g, base)
        assert s1.lower_bound <= ex.peak and ex.lower_bound <= s1.peak
        if ex.optimal:
            assert s1.peak >= ex.peak
            if s1.optimal:
                assert s1.peak == ex.peak


def test_budget_respected_on_large_graph():
    g = watts_strogatz(2000, seed=1)
    base = g.topological_order()
    t0 = time.perf_counter()
    s = schedule(g, baseline=base, time_budget=0.01)
    wall = time.perf_counter() - t0
    g.check_order(s.order)
    assert s.peak == memory.peak(g, s.order) <= memory.peak(g, base)
    assert wall < 1.0 and s.elapsed <= wall
    s2 = schedule(g, baseline=base, time_budget=0.3)
    assert s2.peak <= s.peak and time.perf_counter() - t0 - wall < 1.3


def test_exact_schedule_budget_returns_best_found():
    g = erdos_renyi(60, seed=5)
    ex = exact_schedule(g, time_budget=0.05)
    g.check_order(ex.order)
    assert ex.peak == memory.peak(g, ex.order)
    assert ex.lower_bound <= ex.peak
    assert ex.elapsed < 1.0


def test_small_example_improves_on_theano_like_order():
    # v0 -> a (8) -> c (1, output) ; v0 -> b (8) -> d (1, output): finish one branch first
    g = Graph([[0], [0], [1], [2]], [[1], [2], [3], [4]], size=[0, 8, 8, 1, 1], pinned=[3, 4])
    s = schedule(g, baseline=[0, 1, 2, 3])
    assert (s.baseline_peak, s.peak, s.optimal) == (17, 10, True)
    assert s.order in ((0, 2, 1, 3), (1, 3, 0, 2))


@st.composite
def forests(draw, max_nodes: int = 9) -> Graph:
    """A random in-forest: node ``i``'s parent is a later node (or none); a parent reads a
    non-empty subset of each child's 1-2 outputs (duplicates too), some outputs alias an
    input, some are pinned, some nodes have workspace or an extra dependency on a
    descendant (implied by the forest)."""
    n = draw(st.integers(1, max_nodes))
    parent = [draw(st.integers(i + 1, n)) if i < n - 1 else n for i in range(n)]
    parent = [-1 if p == n or draw(st.floats(0, 1)) < 0.1 else p for p in parent]
    kids: list[list[int]] = [[] for _ in range(n)]
    for i, p in enumerate(parent):
        if p >= 0:
            kids[p].append(i)
    size, alias = [draw(st.sampled_from([0, 5, 40]))], [-1]
    ins: list[list[int]] = [[] for _ in range(n)]
    outs: list[list[int]] = [[] for _ in range(n)]
    extra: list[list[int]] = [[] for _ in range(n)]
    for i in range(n):
        for c in kids[i]:
            ins[i] += draw(st.lists(st.sampled_from(outs[c]), min_size=1, max_size=3))
            if kids[c] and draw(st.booleans()):
                extra[i].append(kids[c][0])              # a grandchild: implied
        if not ins[i] or draw(st.floats(0, 1)) < 0.3:
            ins[i].append(0)
        for _ in range(draw(st.integers(1, 2))):
            outs[i].append(len(size))
            size.append(draw(st.sampled_from([0, 1, 8, 16, 64, 100, 256])))
            alias.append(draw(st.sampled_from(ins[i])) if draw(st.floats(0, 1)) < 0.3 else -1)
    pinned = [v for v in range(1, len(size)) if draw(st.floats(0, 1)) < 0.15]
    ws = [draw(st.sampled_from([0, 0, 0, 32])) for _ in range(n)]
    return Graph(ins, outs, size, alias, pinned, extra, workspace=ws)


@settings(max_examples=120, deadline=None)
@given(forests(max_nodes=8))
def test_liu_tree_schedule_is_optimal(g):
    """Liu's algorithm on in-forests (aliases, pinned and unread outputs, workspace,
    implied extra deps) equals brute force, and its own peak equals ``memory.peak``."""
    assert tree_parents(g) is not None
    order, peak_ = tree_schedule(g, mem_tables(g))
    g.check_order(order)
    assert peak_ == memory.peak(g, order) == brute_force_peak(g)
    s = schedule(g, baseline=g.topological_order(), time_budget=0.0)
    assert s.method in ("tree", "baseline") and s.optimal and s.peak == peak_


@given(graphs(max_nodes=8))
def test_tree_parents_only_on_forests(g):
    """``tree_parents`` accepts exactly the graphs whose every node has at most one successor
    once the extra deps implied by the data edges are dropped."""
    par = tree_parents(g)
    consumers = [{r for v in g.node_outputs[n] for r in g.readers[v]} for n in range(g.n_nodes)]
    if any(len(c) > 1 for c in consumers):
        assert par is None
        return
    if par is not None:
        assert par == [next(iter(c)) if c else -1 for c in consumers]
        for n, ds in enumerate(g.extra_deps):     # each extra dep is a data ancestor
            for d in ds:
                x = d
                while x not in (-1, n):
                    x = par[x]
                assert x == n


@given(graph_and_order(max_nodes=12))
def test_fast_trace_matches_simulate(go):
    g, order = go
    tr = memory.simulate(g, order)
    assert fast_trace(mem_tables(g), order) == (list(tr.during), list(tr.after))


@given(graph_and_order(max_nodes=10))
def test_repair_order_valid_and_identity_on_valid(go):
    g, order = go
    assert repair_order(g, order) == order
    shuffled = sorted(order, key=lambda n: (-n * 7919) % 101)
    fixed = repair_order(g, shuffled)
    g.check_order(fixed)


def test_tree_family_graphs_scheduled_optimally():
    for seed in range(4):
        g = FAMILIES["in_tree"](400, seed, extra_prob=0.0, workspace_prob=0.1)
        s = schedule(g, baseline=g.topological_order(), time_budget=0.0)
        assert s.method in ("tree", "baseline") and s.optimal
        assert s.peak == memory.peak(g, s.order) <= s.baseline_peak


class SlowClock:
    """Stand-in for ``time.perf_counter``: every call advances ``step`` seconds."""

    def __init__(self, step: float) -> None:
        self.now, self.step, self.calls = 1000.0, step, 0

    def __call__(self) -> float:
        self.calls += 1
        self.now += self.step
        return self.now


DET_CASES = [(watts_strogatz, 300, 0.2), (fan_out, 200, 0.2), (erdos_renyi, 60, 0.3)]


@pytest.mark.parametrize("family,n,budget", DET_CASES)
def test_same_order_on_a_slow_machine(monkeypatch, family, n, budget):
    """The order depends on work done, not on time: a clock that makes the run look
    1.5x longer than its budget (below the 2x safety cap) gives the identical result,
    and so does a second run.  The old wall-clock budget stopped earlier on such a clock."""
    g = family(n, seed=3, workspace_prob=0.1)
    base = g.topological_order()
    ref = schedule(g, baseline=base, time_budget=budget)
    assert not ref.capped and ref.work > 0
    counter = SlowClock(0.0)
    monkeypatch.setattr(sched_model.time, "perf_counter", counter)
    again = schedule(g, baseline=base, time_budget=budget)
    calls = counter.calls
    assert (again.order, again.method, again.work) == (ref.order, ref.method, ref.work)
    slow = SlowClock(1.5 * budget / max(calls, 1))
    monkeypatch.setattr(sched_model.time, "perf_counter", slow)
    s = schedule(g, baseline=base, time_budget=budget)
    assert slow.now - 1000.0 > budget               # the run "took" longer than its budget
    assert not s.capped
    assert (s.order, s.method, s.peak, s.work, s.optimal) == \
        (ref.order, ref.method, ref.peak, ref.work, ref.optimal)


def test_safety_cap_returns_valid_order(monkeypatch):
    """A clock that jumps 10 s per reading hits the cap at its first check: the search
    stops, the result is still a valid order, never worse than the baseline or than
    the first heuristic, and says it was capped."""
    g = watts_strogatz(300, seed=3, workspace_prob=0.1)
    base = g.topological_order()
    monkeypatch.setattr(sched_model.time, "perf_counter", SlowClock(10.0))
    s = schedule(g, baseline=base, time_budget=1.0)
    assert s.capped and s.work < 1_000_000
    g.check_order(s.order)
    first = heuristic_orders(g)["greedy-freed"]
    assert s.peak == memory.peak(g, s.order) <= min(memory.peak(g, base), memory.peak(g, first))


def test_budget_counts_work_deterministically():
    b = Budget(100, None)
    assert b.spend(60) and b.left() == 40 and not b.exhausted
    assert not b.spend(40) and b.exhausted and b.left() == 0
    u = Budget.for_seconds(None)
    assert u.spend(10 ** 9) and u.left() > 10 ** 12
    g = erdos_renyi(40, seed=2)
    works = {schedule(g, time_budget=0.05).work for _ in range(3)}
    assert len(works) == 1 and works.pop() <= 0.05 * sched_model.WORK_PER_SECOND + 10 ** 5


def test_window_search_stops_at_local_optimum():
    """When no window helps, the search stops well before the budget (it used to run
    to the end of it): ``work`` stays far below ``time_budget * WORK_PER_SECOND``."""
    g = fan_out(40, seed=1)
    s1 = schedule(g, baseline=g.topological_order(), time_budget=1.0)
    s10 = schedule(g, baseline=g.topological_order(), time_budget=10.0)
    assert s1.work < sched_model.WORK_PER_SECOND // 4
    assert s10.order == s1.order or s10.peak < s1.peak
