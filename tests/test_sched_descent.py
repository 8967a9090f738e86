"""The cut descent of :func:`theano_lowmem.core.schedule.schedule`
(:func:`theano_lowmem.core.sched_cuts.cut_split`, :func:`theano_lowmem.core.schedule.cut_descent`),
against independent references.

References: every down-set of a small graph enumerated, each scored with
:func:`theano_lowmem.core.memory.simulate` (the minimum cut's value and set);
:meth:`~theano_lowmem.core.sched_cuts.CutBound.node_bound` (a dict-based Edmonds-Karp on
bitmasks, written separately) for the value with forced nodes; brute force over every
topological order and the down-set DP of ``tests.oracles`` for the peaks ``schedule``
returns.  The last test breaks ``cut_split`` on purpose and checks these comparisons
catch it.
"""
from __future__ import annotations

import itertools
import random

import pytest

import theano_lowmem.core.schedule as sched
from theano_lowmem.core import memory, randgraphs
from theano_lowmem.core.sched_cuts import CutBound, cut_split
from theano_lowmem.core.sched_model import Budget, fast_trace, mem_tables

from .oracles import brute_force_optimum, downset_optimum, random_dag


def _downsets(g):
    """Every down-set of ``g`` (bitmasks), by brute force over subsets."""
    n = g.n_nodes
    pred = [sum(1 << p for p in g.preds[v]) for v in range(n)]
    for m in range(1 << n):
        if all(pred[v] & ~m == 0 for v in range(n) if m >> v & 1):
            yield m


def _step_of(g, D: int, x: int) -> int:
    """Bytes live while ``x`` runs when exactly the nodes of ``D`` ran before it, from
    ``memory.simulate`` of (``D`` in a topological order, ``x``, the rest)."""
    topo = g.topological_order()
    order = [v for v in topo if D >> v & 1] + [x] + [v for v in topo if not D >> v & 1 and v != x]
    return memory.simulate(g, order).during[sum(1 for v in topo if D >> v & 1)]


def _forced(g, rng):
    """Random sides: a down-set forced before some node ``x`` (not holding it or its
    descendants), an up-set forced after it (not holding its ancestors)."""
    n = g.n_nodes
    cb = CutBound(g)
    x = rng.randrange(n)
    downs = [m for m in _downsets(g) if not (m >> x & 1) and not m & cb.desc[x]]
    before = rng.choice(downs) if rng.random() < 0.6 else 0
    ups = [m for m in _downsets(g)]
    up_cands = [((1 << n) - 1) & ~m for m in ups if (m & (before | cb.anc[x])) == (before | cb.anc[x])
                and not (m >> x & 1)]
    after = rng.choice(up_cands) if rng.random() < 0.6 and up_cands else 0
    after &= ~(1 << x) & ~before & ~cb.anc[x]
    side = [1 if before >> v & 1 else 2 if after >> v & 1 else 0 for v in range(n)]
    return x, before, after, side


def test_cut_split_is_the_least_step_over_every_downset():
    """The value of :func:`cut_split` is the least bytes live during ``x``'s step over every
    down-set that may run before it (brute force, scored by ``memory.simulate``), the set it
    returns is such a down-set and reaches it; with forced nodes it also equals
    ``CutBound.node_bound``."""
    rng = random.Random(7)
    for seed in range(150):
        g = random_dag(seed, 4, 9)
        t, cb = mem_tables(g), CutBound(g)
        pred = [sum(1 << p for p in g.preds[v]) for v in range(g.n_nodes)]
        for _ in range(3):
            x, before, after, side = _forced(g, rng)
            D, value, work = cut_split(g, t, x, list(side))
            assert D is not None and work >= 0
            dm = sum(1 << v for v in range(g.n_nodes) if D[v])
            # a down-set holding the forced nodes and x's ancestors, none of x, its
            # descendants or the nodes forced after x
            assert all(pred[v] & ~dm == 0 for v in range(g.n_nodes) if dm >> v & 1), seed
            assert dm & (before | cb.anc[x]) == before | cb.anc[x], seed
            assert not dm & (after | cb.desc[x] | 1 << x), seed
            best = min(_step_of(g, m, x) for m in _downsets(g)
                       if m & (before | cb.anc[x]) == before | cb.anc[x]
                       and not m & (after | cb.desc[x] | 1 << x))
            assert value == best == _step_of(g, dm, x), (seed, x)
            if not after:
                assert value == cb.node_bound(before, x), (seed, x)


def test_cut_split_gives_up_on_max_work():
    g = randgraphs.watts_strogatz(40, 3)
    t = mem_tables(g)
    D, _, work = cut_split(g, t, g.n_nodes // 2, [0] * g.n_nodes, max_work=3)
    assert D is None and work > 3


def test_cut_descent_orders_are_valid_and_lower_the_split_steps():
    """On random DAGs and RandWire cells the descent returns a valid order of the same
    nodes; with one split, the split node's step is the least of every down-set
    (brute force) and never above its step in the order it started from."""
    for seed in range(80):
        g = random_dag(seed, 5, 9)
        t = mem_tables(g)
        order = g.topological_order()
        new = sched.cut_descent(g, t, order, Budget(None, None))
        g.check_order(new)
        assert sorted(new) == list(range(g.n_nodes))
        during = memory.simulate(g, order).during
        x = order[during.index(max(during))]
        one = sched.cut_descent(g, t, order, Budget(None, None), max_splits=1)
        g.check_order(one)
        cb = CutBound(g)
        best = min(_step_of(g, m, x) for m in _downsets(g)
                   if m & cb.anc[x] == cb.anc[x] and not m & (cb.desc[x] | 1 << x))
        step = memory.simulate(g, one).during[one.index(x)]
        assert step == best <= max(during), seed
    for seed in range(4):
        g = randgraphs.watts_strogatz(60, seed)
        new = sched.cut_descent(g, mem_tables(g), g.topological_order(), Budget(20_000, None))
        g.check_order(new)


def test_schedule_with_descent_is_valid_and_never_below_the_optimum():
    """``schedule`` (descents included) on random DAGs: a valid order whose peak is
    ``memory.simulate``'s, never below brute force, equal to it whenever it says optimal;
    on 20-26-node RandWire cells with mixed sizes, never below the down-set DP optimum and
    within 3% of it at the call-time budget."""
    from theano_lowmem.callplan import call_budget
    for seed in range(120):
        g = random_dag(seed)
        opt, _ = brute_force_optimum(g)
        s = sched.schedule(g, baseline=g.topological_order(), time_budget=0.002)
        g.check_order(s.order)
        assert s.peak == memory.simulate(g, s.order).peak >= opt, seed
        assert s.lower_bound <= opt, seed
        if s.optimal:
            assert s.peak == opt, seed
    ratios = []
    for seed in range(6):
        g = randgraphs.watts_strogatz(20 + seed, seed + 100)
        rng = random.Random(seed)
        g = g.with_sizes([0 if g.producer[v] < 0 else 8 * rng.choice((1, 2, 4))
                          for v in range(g.n_values)])
        s = sched.schedule(g, baseline=g.topological_order(), time_budget=call_budget(g.n_nodes))
        g.check_order(s.order)
        best = downset_optimum(g, max_states=200_000)[0]
        assert s.peak == memory.peak(g, s.order) >= best
        ratios.append(s.peak / best)
    assert all(r <= 1.03 for r in ratios), ratios


def test_early_descent_proves_a_randwire_cell_optimal():
    """A 40-node RandWire cell whose optimum (328, the down-set DP's) is its minimum-cut
    bound, as on the 84-node cell of ``families.randwire``: at the call-time budget the early
    descent reaches it and the proof stops the search at about half the budget (the search
    before the descent ran it to the end, 5% above: 344)."""
    from theano_lowmem.callplan import call_budget
    g = randgraphs.watts_strogatz(40, 3, k=4, p=0.75)
    rng = random.Random(3)
    g = g.with_sizes([0 if g.producer[v] < 0 else 8 * rng.choice((1, 2, 4))
                      for v in range(g.n_values)])
    best = downset_optimum(g, max_states=2_000_000)[0]
    budget = call_budget(g.n_nodes)
    s = sched.schedule(g, baseline=g.topological_order(), time_budget=budget)
    g.check_order(s.order)
    assert s.peak == memory.peak(g, s.order) == best == 328
    assert s.optimal and s.method == "cuts" and s.work < budget * 1_000_000 * 0.6


def test_same_result_twice():
    g = randgraphs.watts_strogatz(70, 5)
    rng = random.Random(5)
    g = g.with_sizes([0 if g.producer[v] < 0 else 8 * rng.choice((1, 2, 4))
                      for v in range(g.n_values)])
    a = sched.schedule(g, baseline=g.topological_order(), time_budget=0.0142)
    b = sched.schedule(g, baseline=g.topological_order(), time_budget=0.0142)
    assert (a.order, a.work, a.method) == (b.order, b.work, b.method) and not a.capped


def test_a_wrong_cut_split_is_caught(monkeypatch):
    """Break the rule on purpose: a cut that drops the last free node from ``D`` (when
    allowed) is no longer the least step, and the brute-force comparison fails."""
    real = cut_split

    def worse(g, t, x, side, max_work=None):
        D, value, work = real(g, t, x, side, max_work)
        free = [v for v in range(g.n_nodes) if D and D[v] and side[v] == 0]
        if free:
            D = list(D)
            D[free[-1]] = 0
        return D, value, work

    caught = 0
    rng = random.Random(3)
    for seed in range(60):
        g = random_dag(seed, 5, 9)
        t = mem_tables(g)
        cb = CutBound(g)
        pred = [sum(1 << p for p in g.preds[v]) for v in range(g.n_nodes)]
        x, before, after, side = _forced(g, rng)
        D, value, _ = worse(g, t, x, list(side))
        dm = sum(1 << v for v in range(g.n_nodes) if D[v])
        ok = all(pred[v] & ~dm == 0 for v in range(g.n_nodes) if dm >> v & 1) and \
            _step_of(g, dm, x) == value
        caught += not ok
    assert caught >= 5
