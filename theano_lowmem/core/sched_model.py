"""Per-node byte tables the schedulers read (derived once from :mod:`.memory`'s rules).

The peak itself is always scored by :func:`theano_lowmem.core.memory.peak`; this
module only tabulates, per node, what the incremental evaluators of the
heuristics and of the exact search need: the bytes a node allocates and the
freeable buffers it reads.  ``tests/test_schedule.py`` checks that the
incremental live bytes they compute equal :func:`~.memory.simulate`.
"""
from __future__ import annotations

from dataclasses import dataclass

from .graph import Graph


@dataclass(frozen=True)
class MemTables:
    """Byte tables of a graph under the memory model of :mod:`.memory`.

    ``alloc[n]``: bytes node ``n`` allocates (its non-alias outputs).
    ``spike[n]``: ``alloc[n]`` + its workspace: what its step adds to the live bytes.
    ``reads[n]``: the *freeable* buffers (roots) ``n`` reads, sorted, no duplicates;
    a buffer is freeable if its alias group is not pinned and has a reader.
    ``readers[b]``: the nodes reading any value of buffer ``b``'s alias group, sorted.
    ``held[n]``: bytes of ``n``'s output buffers that are never freed.
    ``inbytes[n]``: bytes of every produced buffer ``n`` reads (freeable or not).
    ``held_total``: bytes live when the call returns (pinned groups, unread buffers).
    """

    alloc: tuple[int, ...]
    spike: tuple[int, ...]
    reads: tuple[tuple[int, ...], ...]
    readers: dict[int, tuple[int, ...]]
    held: tuple[int, ...]
    inbytes: tuple[int, ...]
    held_total: int


def mem_tables(graph: Graph) -> MemTables:
    """Tabulate :class:`MemTables` for ``graph``.  O(V + E).

    Examples
    --------
    >>> g = Graph([[0], [1], [1]], [[1], [2], [3]], size=[0, 8, 4, 4], pinned=[2, 3])
    >>> t = mem_tables(g)
    >>> t.alloc, t.reads, t.held_total
    ((8, 4, 4), ((), (1,), (1,)), 8)
    """
    size, producer = graph.size, graph.producer
    alloc, held = [0] * graph.n_nodes, [0] * graph.n_nodes
    readers: dict[int, tuple[int, ...]] = {}
    freeable: set[int] = set()
    for b in graph.buffers:
        rd = sorted({n for v in graph.group[b] for n in graph.readers[v]})
        alloc[producer[b]] += size[b]
        if b in graph.group_pinned or not rd:
            held[producer[b]] += size[b]
        else:
            freeable.add(b)
            readers[b] = tuple(rd)
    reads, inbytes = [], []
    for ins in graph.node_inputs:
        roots = sorted({graph.root(v) for v in ins if producer[graph.root(v)] >= 0})
        reads.append(tuple(b for b in roots if b in freeable))
        inbytes.append(sum(size[b] for b in roots))
    spike = tuple(a + w for a, w in zip(alloc, graph.workspace))
    return MemTables(tuple(alloc), spike, tuple(reads), readers, tuple(held), tuple(inbytes), sum(held))


def static_lower_bound(tables: MemTables) -> int:
    """A peak no order can beat: max(bytes held at the end, max over nodes of inputs + outputs + workspace).

    Examples
    --------
    >>> g = Graph([[0], [1]], [[1], [2]], size=[0, 8, 4], pinned=[2])
    >>> static_lower_bound(mem_tables(g))
    12
    """
    step = max((a + i for a, i in zip(tables.spike, tables.inbytes)), default=0)
    return max(step, tables.held_total)
