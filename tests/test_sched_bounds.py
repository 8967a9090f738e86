"""The strong lower bound of the exact search and the single-node moves, against brute force.

Every reference value here comes from enumerating orders (``tests.oracles``) and scoring
them with ``core.memory.simulate``, never from the code under test.  The bound tests also
check that the bound is *tight* on a good share of the states (it equals the brute-force
optimum of the completion there), so a bound too large by even one byte fails them.
"""
from __future__ import annotations

import itertools
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from theano_lowmem.core import Graph, memory
from theano_lowmem.core.sched_exact import _Window, solve_window
from theano_lowmem.core.sched_heuristics import reverse_freed
from theano_lowmem.core.sched_model import Budget, fast_peak, mem_tables, static_lower_bound
from theano_lowmem.core.sched_moves import _earlier, _later, _Trace, move_pass

from .oracles import preds_of, random_dag, topological_orders
from .strategies import graph_and_order


def completion_optima(g: Graph, lo: int = 0, hi: int | None = None, order=None) -> dict:
    """``{(executed window nodes): least peak of the remaining window steps}`` over every
    valid reordering of ``order[lo:hi]`` (the whole graph by default), by brute force."""
    preds = preds_of(g)
    if order is None:
        orders = (list(o) for o in topological_orders(g))
        lo, hi = 0, g.n_nodes
    else:
        orders = (list(order[:lo]) + list(p) + list(order[hi:])
                  for p in itertools.permutations(order[lo:hi]))
    best: dict[frozenset, int] = {}
    for o in orders:
        pos = {n: i for i, n in enumerate(o)}
        if any(pos[p] > pos[n] for n in range(g.n_nodes) for p in preds[n]):
            continue
        during = memory.simulate(g, o).during
        for k in range(hi - lo):
            key = frozenset(o[lo:lo + k])
            v = max(during[lo + k:hi])
            if key not in best or v < best[key]:
                best[key] = v
    return best


def bound_along(w: _Window, order_local: list[int]) -> list[int]:
    """The strong bound at each prefix of a window order (local indices), built the way the
    searches build it (``_next_strong`` one node at a time)."""
    s, act, out = 0, (), []
    for i in order_local:
        out.append(w._h_strong(s, act)[0])
        s |= 1 << i
        act = w._next_strong(act, i, s)
    return out


def check_bound(g: Graph, order, lo: int, hi: int) -> tuple[int, int]:
    """Assert the bound never exceeds the brute-force optimum of any completion of any
    down-set of the window; return (states checked, states where it is tight)."""
    t = mem_tables(g)
    tr = memory.simulate(g, order)
    pos = [0] * g.n_nodes
    for i, n in enumerate(order):
        pos[n] = i
    w = _Window(g, t, order, lo, hi, tr.after[lo - 1] if lo else 0, pos, strong=True)
    best = completion_optima(g, lo, hi, None if (lo, hi) == (0, g.n_nodes) else order)
    checked = tight = 0
    seen = set()
    for key, opt in best.items():
        # any valid order of the window starting with ``key``: ``key`` in window order first
        local = sorted(pos[n] - lo for n in key)
        rest = [i for i in range(hi - lo) if i not in local]
        prefix_bounds = bound_along(w, local + rest)
        h = prefix_bounds[len(local)]
        assert h <= opt, (sorted(key), h, opt)
        if key not in seen:
            seen.add(key)
            checked += 1
            tight += h == opt
    return checked, tight


def test_strong_bound_admissible_on_whole_graphs():
    """At every down-set of 150 random DAGs of 5-9 nodes, the strong bound is at most the
    least peak of the remaining steps over every order (brute force), and equal to it on
    at least a fifth of the down-sets (so an over-estimate would be caught)."""
    checked = tight = root_tight = 0
    for seed in range(150):
        g = random_dag(seed)
        order = g.topological_order()
        c, k = check_bound(g, order, 0, g.n_nodes)
        checked, tight = checked + c, tight + k
        pos = [0] * g.n_nodes
        for i, n in enumerate(order):
            pos[n] = i
        w = _Window(g, mem_tables(g), order, 0, g.n_nodes, 0, pos, strong=True)
        root = max(w.keep_total, w._h_strong(0, ())[0])
        best = min(memory.peak(g, o) for o in topological_orders(g))
        assert static_lower_bound(mem_tables(g)) <= root <= best, seed    # stronger, still admissible
        root_tight += root == best
    assert checked > 3000 and tight >= checked // 5, (checked, tight)
    assert root_tight >= 60, root_tight


@settings(max_examples=60, deadline=None)
@given(graph_and_order(max_nodes=9), st.data())
def test_strong_bound_admissible_on_windows(go, data):
    """The same on windows of random orders (prefix and suffix fixed, bytes held across)."""
    g, order = go
    lo = data.draw(st.integers(0, g.n_nodes - 1))
    hi = data.draw(st.integers(lo + 1, min(g.n_nodes, lo + 6)))
    check_bound(g, order, lo, hi)


@settings(max_examples=60, deadline=None)
@given(graph_and_order(max_nodes=10), st.data(), st.booleans())
def test_strong_window_search_equals_brute_force(go, data, depth_first):
    """Both exact searches with the strong bound find the brute-force window optimum and
    prove it; below it they find nothing and say so."""
    g, order = go
    lo = data.draw(st.integers(0, g.n_nodes - 1))
    hi = data.draw(st.integers(lo + 1, min(g.n_nodes, lo + 6)))
    tr = memory.simulate(g, order)
    best = completion_optima(g, lo, hi, order)[frozenset()]
    t, base = mem_tables(g), tr.after[lo - 1] if lo else 0
    r = solve_window(g, t, order, lo, hi, base=base, ub=max(tr.during[lo:hi]) + 1,
                     depth_first=depth_first, strong=True)
    assert r.proved and r.order is not None
    g.check_order(r.order)
    new = memory.simulate(g, r.order)
    assert r.peak == max(new.during[lo:hi]) == best
    assert new.during[lo:hi] == r.during and new.after[lo:hi] == r.after
    below = solve_window(g, t, order, lo, hi, base=base, ub=best, depth_first=depth_first, strong=True)
    assert below.order is None and below.proved and below.lower <= best


# ------------------------------------------------------------------ single-node moves
def moved(order, a: int, b: int) -> list[int]:
    o = list(order)
    o.insert(b, o.pop(a))
    return o


@settings(max_examples=80, deadline=None)
@given(graph_and_order(max_nodes=10))
def test_move_evaluation_matches_simulate(go):
    """For every node and peak step it can cross, the position and value the move search
    reports (with no threshold) are the least, over the positions it considers, of the
    highest changed step of the moved order as ``memory.simulate`` scores it."""
    g, order = go
    t = mem_tables(g)
    tr = _Trace(g, t, list(order))
    sim = memory.simulate(g, order)
    assert tr.during == list(sim.during) and tr.after == list(sim.after)
    preds = preds_of(g)
    huge = 1 << 60
    for p in range(g.n_nodes):
        for a in range(g.n_nodes):
            first_succ = min((i for i, n in enumerate(order) if order[a] in preds[n]), default=g.n_nodes)
            last_pred = max((i for i, n in enumerate(order) if n in preds[order[a]]), default=-1)
            if a <= p and first_succ > p + (a == p):
                b, val = _later(t, tr, a, p, huge, Budget(None, None))
                vals = {c: max(memory.simulate(g, moved(order, a, c)).during[a:c + 1])
                        for c in range(max(p, a + 1), first_succ)}
                assert val == min(vals.values()) == vals[b], (a, p)
            if a >= p and last_pred < p - (a == p):
                b, val = _earlier(t, tr, a, p, huge, Budget(None, None))
                start = last_pred + 1
                vals = {c: max(memory.simulate(g, moved(order, a, c)).during[c:a + 1])
                        for c in {start, (start + p) // 2, p} if start <= c <= p and c < a}
                assert val == min(vals.values()) == vals[b], (a, p)


@settings(max_examples=80, deadline=None)
@given(graph_and_order(max_nodes=12))
def test_move_pass_improves_and_stays_valid(go):
    """``move_pass`` returns a valid order (checked with ``tests.oracles.preds_of``) whose
    ``(peak, steps at the peak)`` is never worse, and strictly better when it says so."""
    g, order = go
    new, changed = move_pass(g, mem_tables(g), order, Budget(None, None))
    preds = preds_of(g)
    pos = {n: i for i, n in enumerate(new)}
    assert sorted(new) == list(range(g.n_nodes))
    assert all(pos[p] < pos[n] for n in range(g.n_nodes) for p in preds[n])
    before, after = memory.simulate(g, order).during, memory.simulate(g, new).during
    key = lambda d: (max(d), d.count(max(d)))  # noqa: E731
    assert key(after) < key(before) if changed else new == list(order)


def test_move_pass_reaches_optimum_often():
    """From Kahn's order of 200 random DAGs of 5-9 nodes, the moves alone reach the
    brute-force optimum on most of them (a third of the orders are not optimal to start
    with), and never go below it."""
    start_opt = reached = 0
    for seed in range(200):
        g = random_dag(seed)
        t = mem_tables(g)
        best = min(memory.peak(g, o) for o in topological_orders(g))
        order = g.topological_order()
        new, _ = move_pass(g, t, order, Budget(None, None))
        assert memory.peak(g, new) >= best
        start_opt += memory.peak(g, order) == best
        reached += memory.peak(g, new) == best
    assert start_opt <= 150 and reached >= start_opt + 20, (start_opt, reached)


def test_reverse_freed_valid_and_sometimes_best():
    """The reverse list heuristic gives valid orders (independent dependency check) and, on
    random DAGs, the optimum of brute force on a good share of them."""
    hits = 0
    rng = random.Random(5)
    for seed in rng.sample(range(10_000), 150):
        g = random_dag(seed)
        o = reverse_freed(g, mem_tables(g))
        preds = preds_of(g)
        pos = {n: i for i, n in enumerate(o)}
        assert sorted(o) == list(range(g.n_nodes))
        assert all(pos[p] < pos[n] for n in range(g.n_nodes) for p in preds[n])
        hits += fast_peak(mem_tables(g), o) == min(memory.peak(g, x) for x in topological_orders(g))
    assert hits >= 60, hits


@settings(max_examples=80, deadline=None)
@given(graph_and_order(max_nodes=12), st.data())
def test_trace_update_after_move_equals_fresh_tables(go, data):
    """After any valid single-node move, the incrementally updated step tables equal tables
    built from scratch, and their bytes equal ``memory.simulate`` of the moved order."""
    g, order = go
    t = mem_tables(g)
    preds = preds_of(g)
    a = data.draw(st.integers(0, g.n_nodes - 1))
    lo = max((i + 1 for i, n in enumerate(order) if n in preds[order[a]]), default=0)
    hi = min((i - 1 for i, n in enumerate(order) if order[a] in preds[n]), default=g.n_nodes - 1)
    b = data.draw(st.integers(lo, hi))
    tr = _Trace(g, t, list(order))
    tr.move(g, t, a, b)
    new = moved(order, a, b)
    fresh = _Trace(g, t, new)
    assert tr.order == new
    for name in ("pos", "last", "free", "during", "after", "first_succ", "last_pred"):
        assert getattr(tr, name) == getattr(fresh, name), name
    sim = memory.simulate(g, new)
    assert tr.during == list(sim.during) and tr.after == list(sim.after)
