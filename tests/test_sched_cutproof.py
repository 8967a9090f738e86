"""The call-time early stop of :func:`theano_lowmem.core.schedule.schedule`: the
minimum-cut bound of the nodes at the best order's peak steps
(:func:`theano_lowmem.core.sched_cuts.node_cut_bound`), against independent references.

References: brute force over every topological order and the down-set DP of
``tests.oracles`` (scored with ``core.memory``), and the dict-based Edmonds-Karp of
:class:`~theano_lowmem.core.sched_cuts.CutBound` for the bound's exact value.  The last
test breaks the rule on purpose (bounds inflated by 10%) and checks these comparisons
catch it, so they cannot pass vacuously.
"""
from __future__ import annotations

import pytest

import theano_lowmem.core.schedule as sched
from theano_lowmem.core import randgraphs
from theano_lowmem.core.sched_cuts import CutBound, node_cut_bound
from theano_lowmem.core.sched_model import mem_tables

from .oracles import brute_force_optimum, downset_optimum, random_dag


def test_node_cut_bound_is_sound_exact_and_often_tight():
    tight = 0
    for seed in range(120):
        g = random_dag(seed)
        opt, _ = brute_force_optimum(g)
        t, cb = mem_tables(g), CutBound(g)
        best = 0
        for x in range(g.n_nodes):
            b, exact, work = node_cut_bound(g, t, x)
            assert exact and work >= 0
            assert b == cb.node_bound(0, x), (seed, x)
            assert b <= opt, (seed, x)
            # stopping at a target never claims more than the exact bound
            for target in (b, b + 1, opt):
                b2, exact2, _ = node_cut_bound(g, t, x, target=target)
                assert b2 <= b and (b2 >= target) == (b >= target)
            b3, _, _ = node_cut_bound(g, t, x, max_work=5)
            assert b3 <= b
            best = max(best, b)
        tight += best == opt
    assert tight >= 60          # the bound reaches the optimum on most of these graphs


def _graphs():
    for seed in range(80):
        yield random_dag(seed, 6, 9), "brute"
    for seed in range(40):
        for make in (randgraphs.erdos_renyi, randgraphs.watts_strogatz):
            yield make(14 + seed % 5, seed), "dp"


def _wrong_claims() -> tuple[int, int]:
    """(schedule() claims of optimality that the oracle refutes, claims made by the cut
    proof) over :func:`_graphs`, at a call-time budget."""
    proofs = [0]
    real = sched.node_cut_bound

    def counting(*a, **k):
        r = sched._node_cut_bound_impl(*a, **k)
        proofs[0] += k.get("target") is not None and r[0] >= k["target"]
        return r

    wrong = 0
    sched.node_cut_bound = counting
    try:
        for g, how in _graphs():
            s = sched.schedule(g, baseline=g.topological_order(), time_budget=0.003)
            if not s.optimal:
                continue
            opt = brute_force_optimum(g)[0] if how == "brute" else downset_optimum(g)[0]
            assert s.lower_bound <= s.peak
            wrong += s.peak != opt
    finally:
        sched.node_cut_bound = real
    return wrong, proofs[0]


def test_cut_proof_claims_match_the_oracles(monkeypatch):
    monkeypatch.setattr(sched, "_node_cut_bound_impl", node_cut_bound, raising=False)
    wrong, proofs = _wrong_claims()
    assert wrong == 0
    assert proofs >= 20         # the early stop did fire on many of these graphs


def test_a_broken_cut_proof_is_caught(monkeypatch):
    def inflated(*a, **k):
        b, exact, work = node_cut_bound(*a, **{**k, "target": None})
        return b * 11 // 10 + 1, exact, work
    monkeypatch.setattr(sched, "_node_cut_bound_impl", inflated, raising=False)
    wrong, proofs = _wrong_claims()
    assert wrong > 0
