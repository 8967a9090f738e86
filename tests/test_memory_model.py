"""Invariants of the pure memory model (core.graph, core.memory, core.executed)."""
from __future__ import annotations

import pytest
from hypothesis import given

from theano_lowmem.core import Graph, GraphError, lifetimes, simulate
from theano_lowmem.core.executed import cvm_order, stack_order

from .strategies import graph_and_order


def naive_live(g: Graph, order, step: int) -> int:
    """Independent oracle: bytes live during ``order[step]``, by scanning the future."""
    pos = {n: i for i, n in enumerate(order)}
    total = g.workspace[order[step]]
    for b in g.buffers:
        start = pos[g.producer[b]]
        if start > step:
            continue
        members = [v for v in range(g.n_values) if g.root(v) == b]
        if any(v in g.pinned for v in members):
            total += g.size[b]
            continue
        reads = [pos[r] for v in members for r in g.readers[v]]
        if not reads or max(reads) >= step or start == step:
            total += g.size[b]
    return total


@given(graph_and_order())
def test_trace_matches_oracle(go):
    g, order = go
    t = simulate(g, order)
    assert list(t.during) == [naive_live(g, order, i) for i in range(len(order))]
    assert t.peak == max(t.during)
    assert t.during[t.peak_step] == t.peak


@given(graph_and_order())
def test_peak_covers_each_node_inputs_and_outputs(go):
    g, order = go
    t = simulate(g, order)
    for i, n in enumerate(order):
        roots = {g.root(v) for v in g.node_inputs[n] + g.node_outputs[n]}
        need = sum(g.size[r] for r in roots if g.producer[r] >= 0) + g.workspace[n]
        assert t.during[i] >= need
        assert t.peak >= need


@given(graph_and_order())
def test_alias_groups_live_until_last_reader_and_pinned_never_freed(go):
    g, order = go
    pos = {n: i for i, n in enumerate(order)}
    lts = {lt.buffer: lt for lt in lifetimes(g, order)}
    for v in range(g.n_values):
        r = g.root(v)
        if r not in lts:
            continue          # external buffer: not allocated by the call
        for reader in g.readers[v]:
            assert lts[r].end >= pos[reader]
        if v in g.pinned:
            assert lts[r].end == len(order)


@given(graph_and_order())
def test_after_is_during_minus_freed(go):
    g, order = go
    t = simulate(g, order)
    for i in range(len(order)):
        assert 0 <= t.after[i] <= t.during[i] - g.workspace[order[i]]
        if i:
            assert t.during[i] >= t.after[i - 1]
    ends = sum(lt.size for lt in lifetimes(g, order) if lt.end == len(order))
    assert t.after[-1] == ends


def test_validation_errors():
    with pytest.raises(GraphError, match="cycle"):
        Graph([[1], [0]], [[0], [1]], size=[1, 1])
    with pytest.raises(GraphError, match="two producers"):
        Graph([[], []], [[0], [0]], size=[1])
    with pytest.raises(GraphError, match="no producer"):
        Graph([[0, 1]], [[2]], size=[1, 1, 1], external=[0])
    with pytest.raises(GraphError, match="not an input"):
        Graph([[0], [1]], [[1], [2]], size=[1, 1, 1], alias_of=[-1, -1, 0])
    g = Graph([[0], [1]], [[1], [2]], size=[1, 1, 1])
    with pytest.raises(GraphError, match="not topological"):
        g.check_order([1, 0])
    with pytest.raises(GraphError, match="each of the 2 nodes once"):
        g.check_order([0])


def test_views_cost_nothing_and_keep_base_alive():
    # x -> a (8) -> view v of a -> b reads v; a must stay until b ran
    g = Graph(node_inputs=[[0], [1], [0], [2]], node_outputs=[[1], [2], [3], [4]],
              size=[0, 8, 999, 16, 4], alias_of=[-1, -1, 1, -1, -1], pinned=[4])
    t = simulate(g, [0, 1, 2, 3])
    # the view's 999 never counts; a (8) lives until node 3 read its view; value 3 is
    # never read, so it is held to the end, like the pinned output 4
    assert t.during == (8, 8, 24, 28)
    assert t.after == (8, 8, 24, 20)
    assert t.peak == 28


def test_executed_replicas_on_two_branches():
    # outputs [b, d]: the CVM evaluates output 0 first, the Stack VM pops output 1 first
    ins, outs, owner = [[0], [1], [0], [3]], [[1], [2], [3], [4]], [-1, 0, 1, 2, 3]
    assert cvm_order(ins, outs, owner, [[]] * 4, [2, 4]) == [0, 1, 2, 3]
    assert stack_order(ins, outs, owner, [[]] * 4, [2, 4]) == [2, 3, 0, 1]
    # a chain through prerequisites forces another order on both
    prereq = [[4], [], [], []]      # node 0 waits for node 3's output
    assert cvm_order(ins, outs, owner, prereq, [2, 4]) == [2, 3, 0, 1]
    assert stack_order(ins, outs, owner, prereq, [2, 4]) == [2, 3, 0, 1]
