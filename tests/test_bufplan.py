"""Tests of the pure buffer planner (theano_lowmem.core.bufplan)."""
from __future__ import annotations

import re

import pytest
from hypothesis import given, strategies as st

from theano_lowmem.core.bufplan import BufferPlan, PlanError, check_plan, plan_buffers
from theano_lowmem.core.graph import Graph
from theano_lowmem.core.memory import Lifetime, lifetimes


@st.composite
def problems(draw):
    """Random lifetimes (one per buffer id, ids shuffled), keys from a small alphabet, exclusions."""
    n = draw(st.integers(0, 30))
    ids = draw(st.permutations(list(range(100, 100 + n))))
    n_steps = draw(st.integers(1, 25))
    lts = []
    for b in ids:
        start = draw(st.integers(0, n_steps - 1))
        end = draw(st.integers(start, n_steps))     # n_steps: held to the end
        lts.append(Lifetime(b, start, end, draw(st.sampled_from([0, 8, 64]))))
    key = {b: draw(st.sampled_from([None, "a", "b", ("f8", (3, 4))])) for b in ids}
    excluded = set(draw(st.lists(st.sampled_from(ids), max_size=5))) if ids else set()
    prefer = {b: draw(st.sampled_from([None, "s1", "s2"])) for b in ids}
    return lts, key, excluded, prefer


def max_live(lts):
    """Most lifetimes live at one step (closed intervals), by a sweep over events."""
    events = sorted([(lt.start, 0) for lt in lts] + [(lt.end, 1) for lt in lts])
    live = best = 0
    for _, kind in events:          # starts (0) sort before ends (1) at the same step
        live += 1 if kind == 0 else -1
        best = max(best, live)
    return best


@given(problems())
def test_plan_is_valid_and_optimal(problem):
    lts, key, excluded, prefer = problem
    plan = plan_buffers(lts, key, excluded=excluded, prefer=prefer)
    check_plan(lts, plan, excluded=excluded, key=key)
    assert not (set(plan.cell_of) | set(plan.cell_of.values())) & excluded
    # cells per key class == max simultaneously live values of the class
    cell = {lt.buffer: plan.cell_of.get(lt.buffer, lt.buffer) for lt in lts}
    classes = {}
    for lt in lts:
        k = key[lt.buffer]
        if k is not None and lt.buffer not in excluded:
            classes.setdefault(k, []).append(lt)
    for k, members in classes.items():
        assert len({cell[lt.buffer] for lt in members}) == max_live(members), k
    # values that never share keep their own cell
    for lt in lts:
        if key[lt.buffer] is None or lt.buffer in excluded:
            assert cell[lt.buffer] == lt.buffer
    assert plan.n_cells_after == len(set(cell.values()))
    assert plan.bytes_before == sum(lt.size for lt in lts)
    held = {}
    for lt in lts:
        held[cell[lt.buffer]] = max(held.get(cell[lt.buffer], 0), lt.size)
    assert plan.bytes_after == sum(held.values())


@given(problems())
def test_plan_is_deterministic(problem):
    lts, key, excluded, prefer = problem
    assert plan_buffers(lts, key, excluded=excluded, prefer=prefer) == \
        plan_buffers(lts[::-1], key, excluded=excluded, prefer=prefer)


@given(problems(), st.data())
def test_corrupted_plan_is_rejected(problem, data):
    lts = problem[0]
    # pick two values whose lifetimes touch (a.start <= b.end and b.start <= a.end)
    pairs = [(a, b) for a in lts for b in lts if a.buffer < b.buffer and a.overlaps(b)]
    if not pairs:
        return
    a, b = data.draw(st.sampled_from(pairs))
    bad = BufferPlan({b.buffer: a.buffer}, len(lts), len(lts) - 1, 0, 0)
    with pytest.raises(PlanError) as err:
        check_plan(lts, bad)
    named = re.findall(r"values (\d+) .* and (\d+) ", str(err.value))
    assert named and sorted(map(int, named[0])) == sorted([a.buffer, b.buffer])


def test_prefer_picks_a_cell_whose_last_occupant_matches():
    # cells A (value 1, shape s1) and B (value 2, shape s2) both free when 3 (s1) starts;
    # B was freed more recently, but A's last occupant has 3's shape
    lts = [Lifetime(1, 0, 1, 8), Lifetime(2, 0, 2, 16), Lifetime(3, 3, 4, 8),
           Lifetime(4, 3, 4, 16)]
    key = dict.fromkeys([1, 2, 3, 4], "f8")
    assert plan_buffers(lts, key).cell_of == {3: 2, 4: 1}
    plan = plan_buffers(lts, key, prefer={1: "s1", 2: "s2", 3: "s1", 4: "s2"})
    assert plan.cell_of == {3: 1, 4: 2} and plan.bytes_after == 24


def test_no_write_into_own_input():
    # value 2 is produced at the step where value 1 is last read: must not share
    lts = [Lifetime(1, 0, 1, 8), Lifetime(2, 1, 2, 8), Lifetime(3, 2, 3, 8)]
    plan = plan_buffers(lts, {1: "k", 2: "k", 3: "k"})
    assert plan.cell_of == {3: 1}
    with pytest.raises(PlanError, match="1 .*2 "):
        check_plan(lts, BufferPlan({2: 1}, 3, 2, 24, 16))


def test_excluded_sharing_is_rejected():
    lts = [Lifetime(1, 0, 0, 8), Lifetime(2, 1, 1, 8)]
    plan = plan_buffers(lts, {1: "k", 2: "k"})
    assert plan.cell_of == {2: 1}
    with pytest.raises(PlanError, match="excluded value 1"):
        check_plan(lts, plan, excluded={1})
    assert plan_buffers(lts, {1: "k", 2: "k"}, excluded={1}).cell_of == {}


def test_chain_from_memory_model():
    # x -> n0 -> v1 -> n1 -> v2 -> ... -> v8 (pinned output): intermediates v1..v7
    n = 8
    g = Graph([[i] for i in range(n)], [[i + 1] for i in range(n)], size=[16] * (n + 1),
              pinned=[n])
    lts = lifetimes(g, list(range(n)))
    plan = plan_buffers(lts, {v: "f8" for v in range(n + 1)}, excluded=g.pinned)
    check_plan(lts, plan, excluded=g.pinned)
    assert plan.n_cells_before == n and plan.n_cells_after == 3    # 2 alternating + output
    assert plan.bytes_after == 3 * 16
