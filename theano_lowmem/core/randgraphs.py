"""Seeded random graph families for scheduler tests and benchmarks.

Every family draws a DAG skeleton (``preds[i]`` lists earlier nodes), then
:func:`dress` turns it into a :class:`~.graph.Graph`: one or two outputs per
node with mixed sizes, some outputs aliasing an input (views / inplace), sinks
and a few intermediates pinned, a few extra (non-data) dependencies, and node
ids optionally shuffled so that ids are not a topological order.  Same
arguments, same graph (``random.Random(seed)``).
"""
from __future__ import annotations

import random
from typing import Callable, Sequence

from .graph import Graph

SIZES = (1, 2, 4, 8, 16, 32, 64, 128)


def dress(preds: Sequence[Sequence[int]], seed: int, *, alias_prob: float = 0.15,
          multi_prob: float = 0.1, pin_prob: float = 0.05, extra_prob: float = 0.03,
          workspace_prob: float = 0.0, join_sinks: bool = True, shuffle: bool = True) -> Graph:
    """Turn a skeleton (``preds[i]`` ⊆ ``range(i)``) into a :class:`Graph`.

    Node ``i`` reads one output of each predecessor (sources read external value 0);
    sizes are drawn from :data:`SIZES` times 1-4.  With ``join_sinks`` a last node
    reads every sink (a loss / concatenation), so the graph has one output, as
    networks do, instead of many pinned sinks that would dominate the peak.

    Examples
    --------
    >>> g = dress([[], [0], [0], [1, 2]], seed=1)
    >>> g.n_nodes, len(g.topological_order())
    (4, 4)
    """
    rng = random.Random(seed)
    sinks = sorted(set(range(len(preds))) - {p for ps in preds for p in ps})
    if join_sinks and len(sinks) > 1:
        preds = [*preds, sinks]
    n = len(preds)
    perm = list(range(n))
    if shuffle:
        rng.shuffle(perm)                      # node i of the skeleton gets id perm[i]
    size, alias_of = [0], [-1]                 # value 0: an external input
    outs: list[list[int]] = [[] for _ in range(n)]
    ins: list[list[int]] = [[] for _ in range(n)]
    extra: list[list[int]] = [[] for _ in range(n)]
    workspace = [0] * n
    for i in range(n):
        ins[i] = [rng.choice(outs[p]) for p in preds[i]] or [0]
        for j in range(1 + (rng.random() < multi_prob)):
            outs[i].append(len(size))
            size.append(rng.choice(SIZES) * rng.randint(1, 4))
            alias_of.append(rng.choice(ins[i]) if j == 0 and rng.random() < alias_prob else -1)
        if i and rng.random() < extra_prob:
            d = rng.randrange(i)
            if d not in preds[i]:
                extra[i].append(d)
        if rng.random() < workspace_prob:
            workspace[i] = rng.choice(SIZES)
    has_succ = {p for ps in preds for p in ps}
    pinned = [outs[i][0] for i in range(n) if i not in has_succ]
    pinned += [v for v in range(1, len(size)) if rng.random() < pin_prob]
    inv = [0] * n
    for i, p in enumerate(perm):
        inv[p] = i
    return Graph(node_inputs=[ins[inv[k]] for k in range(n)],
                 node_outputs=[outs[inv[k]] for k in range(n)],
                 size=size, alias_of=alias_of, pinned=sorted(set(pinned)),
                 extra_deps=[[perm[d] for d in extra[inv[k]]] for k in range(n)],
                 workspace=[workspace[inv[k]] for k in range(n)])


def erdos_renyi(n: int, seed: int, *, p: float | None = None, **kw) -> Graph:
    """Erdős–Rényi DAG: edge ``i -> j`` (i < j) with probability ``p`` (default 3/n).

    Examples
    --------
    >>> erdos_renyi(20, seed=0).n_nodes     # 20 + the join node of the sinks
    21
    """
    rng = random.Random(seed * 7919 + 1)
    p = min(1.0, 3.0 / max(n, 1)) if p is None else p
    return dress([[i for i in range(j) if rng.random() < p] for j in range(n)], seed, **kw)


def watts_strogatz(n: int, seed: int, *, k: int = 4, p: float = 0.75, **kw) -> Graph:
    """RandWire-style DAG: a Watts–Strogatz ring (``k`` neighbours, rewiring ``p``)
    with every edge oriented from the lower to the higher index (Xie et al. 2019).

    Examples
    --------
    >>> watts_strogatz(16, seed=3).n_nodes
    17
    """
    rng = random.Random(seed * 7919 + 2)
    edges: set[tuple[int, int]] = set()
    for i in range(n):
        for d in range(1, k // 2 + 1):
            a, b = i, (i + d) % n
            if rng.random() < p:                     # rewire the far end (8 tries)
                for _ in range(8):
                    c = rng.randrange(n)
                    if c != a and (min(a, c), max(a, c)) not in edges:
                        b = c
                        break
            if a != b:
                edges.add((min(a, b), max(a, b)))
    preds: list[list[int]] = [[] for _ in range(n)]
    for a, b in sorted(edges):
        preds[b].append(a)
    return dress(preds, seed, **kw)


def chain(n: int, seed: int, **kw) -> Graph:
    """A chain ``0 -> 1 -> ... -> n-1``."""
    return dress([[i - 1] if i else [] for i in range(n)], seed, **kw)


def fan_out(n: int, seed: int, *, width: int | None = None, **kw) -> Graph:
    """One source, ``width`` independent branches of equal length, one reduction at the end."""
    width = width or max(2, int(round((n - 2) ** 0.5)))
    preds: list[list[int]] = [[]]
    tails = []
    for b in range(width):
        prev = 0
        for _ in range(max(1, (n - 2) // width)):
            preds.append([prev])
            prev = len(preds) - 1
        tails.append(prev)
    preds.append(tails)
    return dress(preds, seed, **kw)


def in_tree(n: int, seed: int, *, arity: int = 2, **kw) -> Graph:
    """A random reduction tree: each node feeds exactly one later node (leaves are sources)."""
    rng = random.Random(seed * 7919 + 3)
    preds: list[list[int]] = [[] for _ in range(n)]
    open_ = list(range(min(n, max(2, n // 2))))
    for j in range(len(open_), n):
        take = rng.sample(open_, min(len(open_), rng.randint(1, arity)))
        preds[j] = sorted(take)
        open_ = [o for o in open_ if o not in take] + [j]
    return dress(preds, seed, **kw)


def series_parallel(n: int, seed: int, **kw) -> Graph:
    """A random two-terminal series-parallel DAG with about ``n`` nodes (recursive: n <~ 500)."""
    rng = random.Random(seed * 7919 + 4)
    preds: list[list[int]] = []

    def build(budget: int, src: int) -> int:
        """Append a SP graph fed by node ``src``; return its sink."""
        if budget <= 1:
            preds.append([src])
            return len(preds) - 1
        a = rng.randint(1, budget - 1)
        if rng.random() < 0.5:                       # series
            return build(budget - a, build(a, src))
        s1, s2 = build(a, src), build(budget - a, src)  # parallel, joined by a new node
        preds.append(sorted({s1, s2}))
        return len(preds) - 1

    preds.append([])
    build(max(1, n - 1), 0)
    return dress(preds, seed, **kw)


#: family name -> generator ``(n, seed, **kw) -> Graph``.
FAMILIES: dict[str, Callable[..., Graph]] = {
    "erdos_renyi": erdos_renyi,
    "watts_strogatz": watts_strogatz,
    "chain": chain,
    "fan_out": fan_out,
    "in_tree": in_tree,
    "series_parallel": series_parallel,
}
