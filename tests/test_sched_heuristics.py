"""The DFS heuristics and Kahn's order of :mod:`theano_lowmem.core.sched_heuristics`
(sorted by precomputed ranks and with an id heap, for speed) against the plain
definitions written here: the sort keys of their docstrings, applied with ``sorted`` at
every node, and ``Graph.topological_order``."""
from __future__ import annotations

import random

from theano_lowmem.core import randgraphs
from theano_lowmem.core.sched_heuristics import bfs, dfs_inductor, dfs_subtree, kahn
from theano_lowmem.core.sched_model import mem_tables

from .oracles import random_dag


def _postorder(g, roots, kids):
    seen, order = set(), []

    def visit(v):
        seen.add(v)
        for c in kids(v):
            if c not in seen:
                visit(c)
        order.append(v)

    for r in roots:
        if r not in seen:
            visit(r)
    return order


def _dfs_subtree_plain(g, t):
    """XLA's DFS: operands with more extra users, then larger cumulative size, first."""
    n = g.n_nodes
    extra, total, cumulative = [0] * n, [0] * n, 0
    for v in g.topological_order():
        extra[v] = min(max(len(g.succs[v]) - 1, 0) + sum(extra[p] for p in g.preds[v]), n)
        cumulative += t.alloc[v]
        total[v] = min(t.alloc[v] + sum(total[p] for p in g.preds[v]), cumulative)
    key = lambda v: (-extra[v], -total[v], v)  # noqa: E731
    return _postorder(g, sorted((v for v in range(n) if not g.succs[v]), key=key),
                      lambda v: sorted(g.preds[v], key=key))


def _dfs_inductor_plain(g, t):
    swr = [a + i for a, i in zip(t.spike, t.inbytes)]
    key = lambda v: (swr[v], v)  # noqa: E731
    return _postorder(g, sorted(range(g.n_nodes), key=key), lambda v: sorted(g.preds[v], key=key))


def _bfs_plain(g, t):
    pos, order, left = {}, [], set(range(g.n_nodes))
    while left:
        ready = [v for v in left if all(p in pos for p in g.preds[v])]
        v = min(ready, key=lambda v: (tuple(sorted(pos[p] for p in g.preds[v])), v))
        pos[v] = len(order)
        order.append(v)
        left.remove(v)
    return order


def _graphs():
    for seed in range(30):
        yield random_dag(seed, 5, 14)
    for seed in range(6):
        rng = random.Random(seed)
        for g in (randgraphs.erdos_renyi(40, seed, alias_prob=0.1),
                  randgraphs.watts_strogatz(40, seed, k=4, p=0.75)):
            yield g.with_sizes([0 if g.producer[v] < 0 else rng.choice((1, 2, 4))
                                for v in range(g.n_values)])


def test_heuristics_match_their_plain_definitions():
    for g in _graphs():
        t = mem_tables(g)
        assert kahn(g, t) == g.topological_order()
        assert dfs_subtree(g, t) == _dfs_subtree_plain(g, t)
        assert dfs_inductor(g, t) == _dfs_inductor_plain(g, t)
        assert bfs(g, t) == _bfs_plain(g, t)
