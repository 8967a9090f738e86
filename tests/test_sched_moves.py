"""The single-node moves of :mod:`theano_lowmem.core.sched_moves`, against
:func:`theano_lowmem.core.memory.simulate` of the moved orders.

``_later`` / ``_earlier`` compute the steps a move changes from the step tables of the
current order (stretches scanned with ``max`` of slices, not step by step); here every
candidate position is tried by building the moved order and simulating it, and the
position and bytes they return must be the ones the rule in their docstrings picks from
those simulations.  ``_Trace.move`` must leave the tables a fresh ``_Trace`` of the new
order has.
"""
from __future__ import annotations

import random

import pytest

from theano_lowmem.core import memory, randgraphs
from theano_lowmem.core.sched_model import Budget, mem_tables
from theano_lowmem.core.sched_moves import _earlier, _later, _Trace

from .oracles import random_dag


def _graphs():
    for seed in range(12):
        yield random_dag(seed, 6, 12)
    for seed in range(4):
        rng = random.Random(seed)
        for make in (lambda s: randgraphs.erdos_renyi(18, s, alias_prob=0.1),
                     lambda s: randgraphs.watts_strogatz(18, s, k=4, p=0.75)):
            g = make(seed)
            yield g.with_sizes([0 if g.producer[v] < 0 else rng.choice((1, 2, 4, 8))
                                for v in range(g.n_values)],
                               [rng.choice((0, 0, 0, 3)) for _ in range(g.n_nodes)])


def _random_order(g, rng):
    """A random topological order (ready node picked uniformly)."""
    indeg = [len(p) for p in g.preds]
    ready = [v for v in range(g.n_nodes) if not indeg[v]]
    order = []
    while ready:
        v = ready.pop(rng.randrange(len(ready)))
        order.append(v)
        for s in g.succs[v]:
            indeg[s] -= 1
            if not indeg[s]:
                ready.append(s)
    return order


def _moved(order, a, b):
    new = list(order)
    new.insert(b, new.pop(a))
    return new


def _cases(seed_count=6):
    rng = random.Random(7)
    for g in _graphs():
        t = mem_tables(g)
        for _ in range(seed_count):
            order = _random_order(g, rng)
            during = memory.simulate(g, order).during
            peaks = sorted({max(during), *rng.sample(list(during), min(3, len(during)))})
            yield g, t, order, peaks


def test_later_matches_simulated_moves():
    checked = 0
    for g, t, order, peaks in _cases():
        n = len(order)
        pos = {v: i for i, v in enumerate(order)}
        for peak in peaks:
            for a in range(n):
                stop = min((pos[s] for s in g.succs[order[a]]), default=n)
                for p in range(a, stop):
                    tr = _Trace(g, t, list(order))
                    budget = Budget(None, None)
                    got = _later(t, tr, a, p, peak, budget)
                    # every b in [max(p, a + 1), stop): the changed steps of the moved order
                    best, best_val = None, peak
                    for b in range(max(p, a + 1), stop):
                        d = memory.simulate(g, _moved(order, a, b)).during
                        if max(d[a:b]) >= peak:
                            break          # a step v moves past reaches the peak: v cannot pass it
                        val = max(d[a:b + 1])
                        if val < best_val or (val == best_val and best is not None):
                            best, best_val = b, val
                    assert got == (best, best_val), (order, a, p, peak)
                    assert budget.spent >= 1
                    checked += 1
    assert checked > 1000


def test_earlier_matches_simulated_moves():
    checked = 0
    for g, t, order, peaks in _cases():
        n = len(order)
        pos = {v: i for i, v in enumerate(order)}
        for peak in peaks:
            for a in range(n):
                start = max((pos[x] for x in g.preds[order[a]]), default=-1) + 1
                for p in range(start, a + 1):
                    tr = _Trace(g, t, list(order))
                    got = _earlier(t, tr, a, p, peak, Budget(None, None))
                    best, best_val = None, peak
                    for b in dict.fromkeys((start, (start + p) // 2, p)):
                        if not start <= b <= p or b >= a:
                            continue
                        d = memory.simulate(g, _moved(order, a, b)).during
                        val = max(d[b:a + 1])
                        if val < best_val:
                            best, best_val = b, val
                    assert got == (best, best_val), (order, a, p, peak)
                    checked += 1
    assert checked > 1000


@pytest.mark.parametrize("seed", range(3))
def test_trace_move_keeps_tables(seed):
    rng = random.Random(seed)
    for g, t, order, _ in _cases(2):
        tr = _Trace(g, t, list(order))
        for _ in range(10):
            n = len(tr.order)
            a = rng.randrange(n)
            lo, hi = tr.last_pred[a] + 1, tr.first_succ[a] - 1
            b = rng.randint(lo, hi)
            tr.move(g, t, a, b)
            g.check_order(tr.order)
            fresh = _Trace(g, t, list(tr.order))
            sim = memory.simulate(g, tr.order)
            assert list(tr.during) == list(sim.during)
            for name in ("pos", "last", "free", "during", "after", "first_succ", "last_pred"):
                assert getattr(tr, name) == getattr(fresh, name), name


def test_a_wrong_scan_is_caught():
    """The comparison above catches a scan that skips the last step before ``p``."""
    import theano_lowmem.core.sched_moves as mv
    g = next(g for g in _graphs() if g.n_nodes >= 8)
    t = mem_tables(g)
    rng = random.Random(1)
    bad = 0
    for _ in range(20):
        order = _random_order(g, rng)
        n = len(order)
        pos = {v: i for i, v in enumerate(order)}
        during = memory.simulate(g, order).during
        peak = max(during)
        for a in range(n):
            stop = min((pos[s] for s in g.succs[order[a]]), default=n)
            for p in range(a + 2, stop):
                tr = _Trace(g, t, list(order))
                tr.during = list(tr.during)
                tr.during[p - 1] = 0          # hides step p - 1 from the scan
                got = mv._later(t, tr, a, p, peak, Budget(None, None))
                b_ok = []
                for b in range(p, stop):
                    d = memory.simulate(g, _moved(order, a, b)).during
                    if max(d[a:b]) >= peak:
                        break
                    if d[b] < peak:
                        b_ok.append(b)
                if got[0] is not None and got[0] not in b_ok:
                    bad += 1
    assert bad > 0
