"""Hypothesis strategies for random core graphs (no Theano)."""
from __future__ import annotations

from hypothesis import strategies as st

from theano_lowmem.core import Graph


@st.composite
def graphs(draw, max_nodes: int = 10, max_inputs: int = 3, alias_prob: float = 0.25,
           extra_dep_prob: float = 0.1) -> Graph:
    """A random DAG: each node reads earlier values, writes 1-2 new values; some
    outputs alias an input (view/inplace), some values are pinned, a few extra deps."""
    n_nodes = draw(st.integers(1, max_nodes))
    n_ext = draw(st.integers(1, 3))
    size = [draw(st.integers(0, 64)) for _ in range(n_ext)]
    alias_of = [-1] * n_ext
    node_inputs, node_outputs = [], []
    for n in range(n_nodes):
        k = draw(st.integers(1, max_inputs))
        ins = [draw(st.integers(0, len(size) - 1)) for _ in range(k)]
        outs = []
        for _ in range(draw(st.integers(1, 2))):
            v = len(size)
            size.append(draw(st.sampled_from([0, 1, 8, 16, 64, 100, 256])))
            alias = ins[0] if draw(st.floats(0, 1)) < alias_prob else -1
            alias_of.append(alias)
            outs.append(v)
        node_inputs.append(ins)
        node_outputs.append(outs)
    produced = list(range(n_ext, len(size)))
    pinned = [v for v in produced if draw(st.floats(0, 1)) < 0.15]
    extra = []
    for n in range(n_nodes):
        deps = [d for d in range(n) if draw(st.floats(0, 1)) < extra_dep_prob]
        extra.append(deps)
    workspace = [draw(st.sampled_from([0, 0, 0, 32])) for _ in range(n_nodes)]
    return Graph(node_inputs, node_outputs, size, alias_of, pinned, extra, workspace=workspace)


@st.composite
def graph_and_order(draw, **kw):
    """A graph and a random valid order of it (random Kahn tie-breaks)."""
    g = draw(graphs(**kw))
    indeg = [len(p) for p in g.preds]
    ready = sorted(n for n in range(g.n_nodes) if indeg[n] == 0)
    order = []
    while ready:
        n = ready.pop(draw(st.integers(0, len(ready) - 1)))
        order.append(n)
        for s in g.succs[n]:
            indeg[s] -= 1
            if indeg[s] == 0:
                ready.append(s)
    return g, order
