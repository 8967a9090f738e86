"""The minimum-cut bound and the offline reference scheduler, against brute force.

Every reference value comes from enumerating orders (``tests.oracles``) and scoring them
with ``core.memory.simulate``, never from the code under test.  The per-node cut bound
is *exact* for what it claims (the least bytes live while ``x`` runs over every order that
completes ``S``), so the test asserts equality, which catches an error either way.
"""
from __future__ import annotations

import pytest

from theano_lowmem.core import Graph, memory
from theano_lowmem.core.randgraphs import erdos_renyi, watts_strogatz
from theano_lowmem.core.sched_cuts import CutBound, cut_lower_bound
from theano_lowmem.core.schedule import exact_schedule, reference_schedule

from .oracles import brute_force_optimum, downset_optimum, random_dag, topological_orders


def mask(nodes) -> int:
    """Bitmask of a set of node ids."""
    return sum(1 << n for n in nodes)


def per_node_minima(g: Graph) -> dict[tuple[int, int], int]:
    """``{(executed mask, x): least bytes live while x runs}`` over every order that starts
    with the executed set, for every prefix of every topological order (brute force)."""
    best: dict[tuple[int, int], int] = {}
    for o in topological_orders(g):
        during = memory.simulate(g, o).during
        for k in range(len(o)):
            s = mask(o[:k])
            for j in range(k, len(o)):
                key = (s, o[j])
                if key not in best or during[j] < best[key]:
                    best[key] = during[j]
    return best


def test_node_bound_is_the_least_step_over_completions():
    """On 60 random DAGs of 5-9 nodes (views, inplace, pinned values, workspace, extra
    dependencies), ``node_bound(S, x)`` equals the least ``during`` of ``x`` over every
    order whose first nodes are the down-set ``S`` (brute force), for every such pair."""
    pairs = 0
    for seed in range(60):
        g = random_dag(seed)
        cb = CutBound(g)
        for (s, x), least in per_node_minima(g).items():
            assert cb.node_bound(s, x) == least, (seed, bin(s), x)
            pairs += 1
    assert pairs > 5000, pairs


def test_cut_lower_bound_admissible_and_often_tight():
    """``lower_bound(S)`` never exceeds the least peak of the remaining steps of any order
    completing ``S`` (brute force over every order, 80 random DAGs), and at the root it
    equals the optimum on most of them."""
    root_tight = 0
    for seed in range(100, 180):
        g = random_dag(seed)
        cb = CutBound(g)
        rest: dict[int, int] = {}
        for o in topological_orders(g):
            during = memory.simulate(g, o).during
            for k in range(len(o)):
                s = mask(o[:k])
                v = max(during[k:])
                rest[s] = min(rest.get(s, v), v)
        for s, opt in rest.items():
            assert cb.lower_bound(s) <= opt, (seed, bin(s))
        root_tight += cut_lower_bound(g) == rest[0]
    assert root_tight >= 50, root_tight


def test_reference_equals_brute_force():
    """The reference's order is valid, its peak is ``memory.simulate``'s and equals the
    brute-force optimum, proven, on 80 random DAGs of 5-9 nodes; with ``upper_bound`` at
    the optimum it proves nothing lies below (lower bound == optimum)."""
    for seed in range(200, 280):
        g = random_dag(seed)
        opt = brute_force_optimum(g)[0]
        r = reference_schedule(g)
        g.check_order(r.order)
        assert memory.simulate(g, r.order).peak == r.peak == opt, seed
        assert r.optimal and r.lower_bound == opt, seed
        below = reference_schedule(g, upper_bound=opt)
        assert below.lower_bound == opt, seed


@pytest.mark.parametrize("family, n, seed", [(erdos_renyi, 22, 1), (watts_strogatz, 22, 2),
                                             (watts_strogatz, 24, 5)])
def test_reference_on_medium_graphs_matches_downset_dp(family, n, seed):
    """On graphs of 23-25 nodes, the reference's proven optimum equals the exact DP over
    executed sets of ``tests.oracles`` (independent rules), and the cut bound is at most it."""
    g = family(n, seed)
    opt = downset_optimum(g)[0]
    r = reference_schedule(g, time_budget=20)
    assert r.optimal and r.peak == opt == memory.simulate(g, r.order).peak
    assert cut_lower_bound(g) <= opt
    assert exact_schedule(g, time_budget=20, floor=cut_lower_bound(g)).peak == opt
