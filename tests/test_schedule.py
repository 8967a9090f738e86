"""Schedulers: exact == brute force, heuristics valid, never worse than the baseline,
deterministic, budget respected; every peak re-scored with ``core.memory``."""
from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from theano_lowmem.core import Graph, memory
from theano_lowmem.core.randgraphs import FAMILIES, erdos_renyi, watts_strogatz
from theano_lowmem.core.sched_exact import cut_positions, solve_window
from theano_lowmem.core.sched_model import mem_tables, static_lower_bound
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
