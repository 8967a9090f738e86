"""The graph model every algorithm of theano_lowmem works on.

Pure Python: no Theano, no numpy.  Nodes and values are small integers.

A :class:`Graph` says which values each node reads and writes, how many bytes
each value's buffer takes, which values share the buffer of an input (views
and inplace outputs: ``alias_of``), which values are *pinned* (never freed and
never shared: function outputs, and every value without a producer, i.e.
inputs, constants and shared variables), and extra ordering constraints
between nodes (Theano's DestroyHandler orderings).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable, Iterable, Sequence

NO_ALIAS = -1
NO_PRODUCER = -1
#: Cached properties that depend on the structure only (not on sizes): see Graph.with_sizes.
_STRUCTURAL = ("readers", "preds", "succs", "_roots", "buffers", "group", "group_pinned")


class LazyNames(Sequence):
    """Labels made on first use: ``name(i)`` for ``i`` in ``range(n)``, each computed once.

    For labels that are costly to make and needed only by error messages and reports
    (the name of a Theano ``Composite`` op builds a string of its whole scalar graph).

    >>> names = LazyNames(3, lambda i: f"node {i}")
    >>> len(names), names[2], list(names)
    (3, 'node 2', ['node 0', 'node 1', 'node 2'])
    """

    def __init__(self, n: int, name: Callable[[int], str]) -> None:
        self._n, self._name, self._made = n, name, {}

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self._n))]
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(i)
        made = self._made.get(i)
        if made is None:
            made = self._made[i] = self._name(i)
        return made

    def __reduce__(self):          # pickled as the tuple of its labels (no function inside)
        return tuple, (tuple(self),)


class GraphError(ValueError):
    """A graph or an order that breaks the model's rules."""


@dataclass(frozen=True, eq=False)
class Graph:
    """Memory model of a computation graph.

    Parameters
    ----------
    node_inputs : sequence of sequences of int
        ``node_inputs[n]``: the values node ``n`` reads (duplicates allowed).
    node_outputs : sequence of sequences of int
        ``node_outputs[n]``: the values node ``n`` writes.
    size : sequence of int
        Bytes of each value's own buffer.  Ignored for aliases (they own no
        buffer) and for values without a producer (allocated before the call).
    alias_of : sequence of int, optional
        ``alias_of[v]`` is the input value whose buffer ``v`` shares (a view of
        it, or an output that overwrites it inplace), or ``-1``.
    pinned : iterable of int, optional
        Values that are never freed and never share a buffer (outputs).  Every
        value without a producer is pinned as well.
    extra_deps : sequence of sequences of int, optional
        ``extra_deps[n]``: nodes that must run before node ``n`` although no
        value connects them.
    value_names, node_names : sequence of str, optional
        Labels for reports and error messages (a :class:`LazyNames` is kept as it is).
    workspace : sequence of int, optional
        ``workspace[n]``: extra bytes node ``n`` needs only while it runs
        (scratch arrays, a scan's inner function).  Default 0.
    external : iterable of int, optional
        The values allowed to have no producer (inputs, constants, shared
        variables).  When given, any other value without a producer is an error.

    Examples
    --------
    >>> g = Graph(node_inputs=[[0], [1]], node_outputs=[[1], [2]],
    ...           size=[8, 16, 4], pinned=[2])
    >>> g.producer, g.readers[1], g.root(2)
    ((-1, 0, 1), (1,), 2)
    """

    node_inputs: Sequence[Sequence[int]]
    node_outputs: Sequence[Sequence[int]]
    size: Sequence[int]
    alias_of: Sequence[int] = ()
    pinned: Iterable[int] = ()
    extra_deps: Sequence[Sequence[int]] = ()
    value_names: Sequence[str] = ()
    node_names: Sequence[str] = ()
    workspace: Sequence[int] = ()
    external: Iterable[int] | None = None

    def __post_init__(self) -> None:
        n_values = len(self.size)
        set_ = object.__setattr__
        set_(self, "node_inputs", tuple(tuple(int(v) for v in vs) for vs in self.node_inputs))
        set_(self, "node_outputs", tuple(tuple(int(v) for v in vs) for vs in self.node_outputs))
        set_(self, "size", tuple(int(s) for s in self.size))
        alias = tuple(int(a) for a in self.alias_of) if self.alias_of else (NO_ALIAS,) * n_values
        set_(self, "alias_of", alias)
        deps = self.extra_deps or ((),) * len(self.node_inputs)
        set_(self, "extra_deps", tuple(tuple(sorted(set(int(d) for d in ds))) for ds in deps))
        set_(self, "workspace", tuple(int(w) for w in self.workspace) or (0,) * len(self.node_inputs))
        for field_, n, prefix in (("value_names", n_values, "v"), ("node_names", self.n_nodes, "n")):
            names = getattr(self, field_)
            if not isinstance(names, LazyNames):
                names = tuple(names) or tuple(f"{prefix}{i}" for i in range(n))
            set_(self, field_, names)
        producer = [NO_PRODUCER] * n_values
        self._check_shapes(n_values)
        for n, outs in enumerate(self.node_outputs):
            for v in outs:
                if producer[v] != NO_PRODUCER:
                    raise GraphError(f"value {self.value_names[v]} has two producers: "
                                     f"nodes {producer[v]} and {n}")
                producer[v] = n
        set_(self, "producer", tuple(producer))
        if self.external is not None:
            ext = set(int(v) for v in self.external)
            orphans = [v for v in range(n_values) if producer[v] == NO_PRODUCER and v not in ext]
            if orphans:
                raise GraphError(f"value {self.value_names[orphans[0]]} has no producer and is "
                                 f"not an input ({len(orphans)} such value(s))")
            set_(self, "external", frozenset(ext))
        pinned = set(int(v) for v in self.pinned)
        pinned.update(v for v in range(n_values) if producer[v] == NO_PRODUCER)
        set_(self, "pinned", frozenset(pinned))
        self._check_aliases()
        self.topological_order()  # raises on a cycle

    def with_sizes(self, size: Sequence[int], workspace: Sequence[int] | None = None) -> "Graph":
        """The same graph with other sizes (and workspace): the structure is not checked
        again and its derived tables (producers, readers, aliases...) are shared.

        O(V + N), for re-planning one graph at many input shapes.

        Examples
        --------
        >>> g = Graph([[0], [1]], [[1], [2]], size=[0, 4, 4], pinned=[2])
        >>> h = g.with_sizes([0, 40, 4])
        >>> h.size, h.readers is g.readers
        ((0, 40, 4), True)
        """
        size = tuple(int(s) for s in size)
        if len(size) != self.n_values or any(s < 0 for s in size):
            raise GraphError(f"with_sizes needs {self.n_values} sizes >= 0, got {len(size)}")
        ws = self.workspace if workspace is None else tuple(int(w) for w in workspace)
        if len(ws) != self.n_nodes or any(w < 0 for w in ws):
            raise GraphError(f"with_sizes needs {self.n_nodes} workspaces >= 0, got {len(ws)}")
        for name in _STRUCTURAL:         # computed once, shared by every re-sized copy
            getattr(self, name)
        new = object.__new__(Graph)
        state = dict(self.__dict__)      # fields and the cached structural properties
        state.update(size=size, workspace=ws)
        new.__dict__.update(state)
        return new

    # ------------------------------------------------------------------ checks
    def _check_shapes(self, n_values: int) -> None:
        n_nodes = len(self.node_inputs)
        for name, seq in (("node_outputs", self.node_outputs), ("extra_deps", self.extra_deps),
                          ("workspace", self.workspace)):
            if len(seq) != n_nodes:
                raise GraphError(f"{name} has {len(seq)} entries for {n_nodes} nodes")
        if len(self.alias_of) != n_values:
            raise GraphError(f"alias_of has {len(self.alias_of)} entries for {n_values} values")
        for n in range(n_nodes):
            for v in self.node_inputs[n] + self.node_outputs[n]:
                if not 0 <= v < n_values:
                    raise GraphError(f"node {n} refers to value {v}; values are 0..{n_values - 1}")
            for d in self.extra_deps[n]:
                if not 0 <= d < n_nodes or d == n:
                    raise GraphError(f"node {n} has an extra dependency on node {d}")
        for v, s in enumerate(self.size):
            if s < 0:
                raise GraphError(f"value {self.value_names[v]} has negative size {s}")

    def _check_aliases(self) -> None:
        for v, a in enumerate(self.alias_of):
            if a == NO_ALIAS:
                continue
            n = self.producer[v]
            if n == NO_PRODUCER or a not in self.node_inputs[n]:
                raise GraphError(f"value {self.value_names[v]} aliases {a}, which is not an input "
                                 f"of its producer")

    # ------------------------------------------------------------ structure
    @property
    def n_nodes(self) -> int:
        return len(self.node_inputs)

    @property
    def n_values(self) -> int:
        return len(self.size)

    @cached_property
    def readers(self) -> tuple[tuple[int, ...], ...]:
        """``readers[v]``: the nodes that read value ``v``, sorted, without duplicates."""
        rd: list[set[int]] = [set() for _ in range(self.n_values)]
        for n, ins in enumerate(self.node_inputs):
            for v in ins:
                rd[v].add(n)
        return tuple(tuple(sorted(r)) for r in rd)

    @cached_property
    def preds(self) -> tuple[tuple[int, ...], ...]:
        """``preds[n]``: nodes that must run before node ``n`` (data and extra deps), sorted."""
        out = []
        for n, ins in enumerate(self.node_inputs):
            p = {self.producer[v] for v in ins if self.producer[v] != NO_PRODUCER}
            p.update(self.extra_deps[n])
            p.discard(n)
            out.append(tuple(sorted(p)))
        return tuple(out)

    @cached_property
    def succs(self) -> tuple[tuple[int, ...], ...]:
        """``succs[n]``: nodes that need node ``n`` to have run, sorted."""
        s: list[list[int]] = [[] for _ in range(self.n_nodes)]
        for n, ps in enumerate(self.preds):
            for p in ps:
                s[p].append(n)
        return tuple(tuple(x) for x in s)

    def root(self, v: int) -> int:
        """The value that owns the buffer ``v`` lives in (``v`` itself unless an alias)."""
        return self._roots[v]

    @cached_property
    def _roots(self) -> tuple[int, ...]:
        roots = list(range(self.n_values))
        for v in range(self.n_values):
            r, seen = v, 0
            while self.alias_of[r] != NO_ALIAS:
                r = self.alias_of[r]
                seen += 1
                if seen > self.n_values:
                    raise GraphError(f"alias cycle through value {self.value_names[v]}")
            roots[v] = r
        return tuple(roots)

    @cached_property
    def buffers(self) -> tuple[int, ...]:
        """Values that allocate a buffer during the call: produced, not aliases. Sorted."""
        return tuple(v for v in range(self.n_values)
                     if self.producer[v] != NO_PRODUCER and self.alias_of[v] == NO_ALIAS)

    @cached_property
    def group(self) -> dict[int, tuple[int, ...]]:
        """``group[r]``: every value whose buffer is ``r`` (``r`` included), for each root."""
        g: dict[int, list[int]] = {}
        for v in range(self.n_values):
            g.setdefault(self._roots[v], []).append(v)
        return {r: tuple(vs) for r, vs in g.items()}

    @cached_property
    def group_pinned(self) -> frozenset[int]:
        """Roots whose alias group holds a pinned value: those buffers are never freed."""
        return frozenset(self._roots[v] for v in self.pinned)

    def topological_order(self, key: Callable[[int], Any] | None = None) -> list[int]:
        """A deterministic topological order: Kahn's algorithm taking the ready node
        with the smallest ``(key(n), n)`` first (smallest id when ``key`` is None).

        Raises :class:`GraphError` on a cycle.  O((N + E) log N).
        """
        import heapq
        prio = key or (lambda n: 0)
        indeg = [len(p) for p in self.preds]
        heap = [(prio(n), n) for n in range(self.n_nodes) if indeg[n] == 0]
        heapq.heapify(heap)
        order: list[int] = []
        while heap:
            _, n = heapq.heappop(heap)
            order.append(n)
            for s in self.succs[n]:
                indeg[s] -= 1
                if indeg[s] == 0:
                    heapq.heappush(heap, (prio(s), s))
        if len(order) != self.n_nodes:
            stuck = sorted(set(range(self.n_nodes)) - set(order))[:5]
            raise GraphError(f"the graph has a cycle through nodes {stuck}")
        return order

    def check_order(self, order: Sequence[int]) -> None:
        """Raise :class:`GraphError` unless ``order`` runs every node once, after its preds."""
        if sorted(order) != list(range(self.n_nodes)):
            raise GraphError(f"an order must list each of the {self.n_nodes} nodes once; got "
                             f"{len(order)} entries")
        pos = {n: i for i, n in enumerate(order)}
        for n in order:
            for p in self.preds[n]:
                if pos[p] > pos[n]:
                    raise GraphError(f"order is not topological: node {self.node_names[n]} runs "
                                     f"before its predecessor {self.node_names[p]}")

    def subgraph_nodes_reachable(self, start: Iterable[int]) -> set[int]:
        """Nodes reachable from ``start`` through ``succs`` (``start`` included)."""
        seen, stack = set(start), list(start)
        while stack:
            for s in self.succs[stack.pop()]:
                if s not in seen:
                    seen.add(s)
                    stack.append(s)
        return seen
