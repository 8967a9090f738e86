"""The one definition of "peak" in theano_lowmem.

Walking an order, a node needs every live buffer plus its new output buffers
plus its own ``workspace`` at once (``during``); after it ran, every buffer
whose alias group has no reader left is freed (``after``).  Views and inplace outputs share their input's buffer
(no new bytes) and keep it alive until their own last reader.  Pinned groups
(outputs) are never freed; values without a producer (inputs, constants,
shared variables) were allocated before the call and are not counted.  A
produced value nobody reads stays until the end of the call, as in Theano's C
VM, which frees a value only when a node that reads it has run
(``lazylinker_c.c``, ``lazy_rec_eval``).

Every scheduler, the buffer planner, the report and the tests use
:func:`lifetimes` and :func:`simulate`; nothing else computes a peak from scratch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .graph import Graph


@dataclass(frozen=True)
class Lifetime:
    """The steps during which a buffer is live: allocated at ``start``, freed after ``end``."""

    buffer: int      # the root value owning the buffer
    start: int       # step of the producer
    end: int         # last step it is needed; len(order) if held past the last node
    size: int        # bytes

    def overlaps(self, other: "Lifetime") -> bool:
        """True if both buffers are live at some common step."""
        return self.start <= other.end and other.start <= self.end


@dataclass(frozen=True)
class MemoryTrace:
    """Live bytes over an order.

    ``during[i]`` is the bytes live while ``order[i]`` runs (everything live before
    plus its new outputs); ``after[i]`` the bytes live once it ran and the values
    it was the last reader of were freed.  ``peak = max(during)``.
    """

    order: tuple[int, ...]
    during: tuple[int, ...]
    after: tuple[int, ...]
    peak: int
    peak_step: int           # first step at which ``during`` reaches ``peak`` (-1 if empty)

    def live_at(self, graph: Graph, step: int) -> list[Lifetime]:
        """The buffers live during ``step``, largest first (what to shrink at the peak)."""
        lts = [lt for lt in lifetimes(graph, self.order) if lt.start <= step <= lt.end]
        return sorted(lts, key=lambda lt: (-lt.size, lt.buffer))


def lifetimes(graph: Graph, order: Sequence[int], *, check: bool = True) -> list[Lifetime]:
    """Lifetime of every buffer allocated during the call, for ``order``.

    Parameters
    ----------
    graph : Graph
    order : sequence of int
        Every node once, in execution order.
    check : bool
        Validate that ``order`` is a topological order of ``graph`` first.

    Returns
    -------
    list of Lifetime
        One per value in ``graph.buffers``, in that order.

    Raises
    ------
    GraphError
        If ``check`` and ``order`` is not a valid order.

    Examples
    --------
    >>> g = Graph([[0], [1], [2]], [[1], [2], [3]], size=[0, 8, 8, 8], pinned=[3])
    >>> [(lt.buffer, lt.start, lt.end) for lt in lifetimes(g, [0, 1, 2])]
    [(1, 0, 1), (2, 1, 2), (3, 2, 3)]
    """
    if check:
        graph.check_order(order)
    step = [0] * graph.n_nodes
    for i, n in enumerate(order):
        step[n] = i
    held = len(order)   # pinned, or never read: kept until the call returns
    out = []
    for b in graph.buffers:
        start = step[graph.producer[b]]
        if b in graph.group_pinned:
            end = held
        else:
            reads = [step[n] for v in graph.group[b] for n in graph.readers[v]]
            end = max(reads) if reads else held
        out.append(Lifetime(b, start, max(start, end), graph.size[b]))
    return out


def simulate(graph: Graph, order: Sequence[int], *, check: bool = True) -> MemoryTrace:
    """Live bytes at every step of ``order`` (see the module docstring for the rules).

    Complexity O(V + N) for N nodes and V values.

    Examples
    --------
    >>> g = Graph([[0], [1], [2]], [[1], [2], [3]], size=[0, 8, 8, 8], pinned=[3])
    >>> t = simulate(g, [0, 1, 2])
    >>> t.during, t.after, t.peak
    ((8, 16, 16), (8, 8, 8), 16)
    """
    n = len(order)
    alloc = [0] * (n + 1)
    free = [0] * (n + 1)
    for lt in lifetimes(graph, order, check=check):
        alloc[lt.start] += lt.size
        free[lt.end] += lt.size
    during, after, live = [], [], 0
    for i in range(n):
        live += alloc[i]
        during.append(live + graph.workspace[order[i]])
        live -= free[i]
        after.append(live)
    peak = max(during, default=0)
    return MemoryTrace(tuple(order), tuple(during), tuple(after), peak,
                       during.index(peak) if during else -1)


def peak(graph: Graph, order: Sequence[int], *, check: bool = True) -> int:
    """Peak live bytes of ``order``: ``simulate(graph, order).peak``."""
    return simulate(graph, order, check=check).peak


def keep_all_bytes(graph: Graph) -> int:
    """Bytes held when nothing is freed (Theano with ``allow_gc=False`` and no sharing)."""
    return sum(graph.size[b] for b in graph.buffers)
