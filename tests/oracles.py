"""Independent oracles for the tests: nothing here calls a scheduler or the planner.

* :func:`random_dag`: seeded random core graphs (5-9 nodes by default), written
  here so that the graphs do not come from the code under test either.
* :func:`preds_of`, :func:`topological_orders`: the dependency relation and every
  linear extension, computed from ``node_inputs``/``node_outputs``/``extra_deps``
  alone (not ``Graph.preds``).
* :func:`sim_peak`: a tiny simulator of the peak rule stated in
  ``core/memory.py``'s docstring, written from that text (sets, no interval
  arithmetic), used to cross-check ``core.memory.peak`` itself.
* :func:`brute_force_optimum`: the least ``core.memory.peak`` over every
  topological order (the one definition of peak, nothing else from the core).
* :func:`downset_optimum`: exact minimum peak by dynamic programming over the
  executed sets (the live bytes after running a set of nodes depend only on the
  set), with the independent simulator's rules; for the Theano graphs of the
  report and benchmark tests (tens of nodes), which are too big to enumerate.
  Checked against :func:`brute_force_optimum` in ``test_schedule.py``.
"""
from __future__ import annotations

import random
from typing import Iterator, Sequence

from theano_lowmem.core import Graph, memory


# ------------------------------------------------------------------ graphs
def random_dag(seed: int, n_min: int = 5, n_max: int = 9) -> Graph:
    """A random DAG of ``n_min..n_max`` nodes: each node reads 1-3 earlier values, writes
    1-2 values of random size; some outputs alias an input (views / inplace), some values
    are pinned, some nodes have workspace or an extra (non-data) dependency."""
    rng = random.Random(seed)
    n = rng.randint(n_min, n_max)
    n_ext = rng.randint(1, 2)
    size, alias = [rng.choice([0, 8, 64]) for _ in range(n_ext)], [-1] * n_ext
    ins, outs, extra, ws = [], [], [], []
    for i in range(n):
        ins.append([rng.randrange(len(size)) for _ in range(rng.randint(1, 3))])
        outs.append([])
        for _ in range(1 + (rng.random() < 0.3)):
            outs[i].append(len(size))
            size.append(rng.choice([0, 1, 3, 8, 16, 40, 64, 100, 256]))
            alias.append(rng.choice(ins[i]) if rng.random() < 0.2 else -1)
        extra.append([d for d in range(i) if rng.random() < 0.08])
        ws.append(rng.choice([0, 0, 0, 0, 24, 70]))
    pinned = [v for v in range(n_ext, len(size)) if rng.random() < 0.12]
    perm = list(range(n))
    rng.shuffle(perm)                      # ids are not a topological order
    inv = [0] * n
    for i, p in enumerate(perm):
        inv[p] = i
    return Graph([ins[inv[k]] for k in range(n)], [outs[inv[k]] for k in range(n)], size, alias,
                 pinned, [[perm[d] for d in extra[inv[k]]] for k in range(n)],
                 workspace=[ws[inv[k]] for k in range(n)])


# ------------------------------------------------------------------ orders
def preds_of(g: Graph) -> list[set[int]]:
    """``preds[n]``: nodes that must run before ``n`` (producers of its inputs, extra deps)."""
    producer = {}
    for n, outs in enumerate(g.node_outputs):
        for v in outs:
            producer[v] = n
    return [({producer[v] for v in g.node_inputs[n] if v in producer} | set(g.extra_deps[n])) - {n}
            for n in range(len(g.node_inputs))]


def topological_orders(g: Graph) -> Iterator[list[int]]:
    """Every linear extension of the dependency relation (each list is reused: copy it)."""
    preds = preds_of(g)
    n = len(preds)
    order: list[int] = []
    done = [False] * n

    def rec() -> Iterator[list[int]]:
        if len(order) == n:
            yield order
            return
        for m in range(n):
            if not done[m] and all(done[p] for p in preds[m]):
                done[m] = True
                order.append(m)
                yield from rec()
                order.pop()
                done[m] = False

    yield from rec()


# ------------------------------------------------------------------ the peak rule
class _Rules:
    """The peak rule of ``core/memory.py``'s docstring, precomputed per graph."""

    def __init__(self, g: Graph) -> None:
        n_values = len(g.size)
        self.g = g
        producer = [-1] * n_values
        for n, outs in enumerate(g.node_outputs):
            for v in outs:
                producer[v] = n
        root = []
        for v in range(n_values):
            r = v
            while g.alias_of[r] != -1:
                r = g.alias_of[r]
            root.append(r)
        # a buffer: produced during the call and owning its memory (not an alias)
        self.buffers = [v for v in range(n_values) if producer[v] != -1 and g.alias_of[v] == -1]
        self.producer = producer
        readers: dict[int, set[int]] = {b: set() for b in self.buffers}
        held: set[int] = set()
        for v in range(n_values):
            if root[v] in readers:
                for n, ins in enumerate(g.node_inputs):
                    if v in ins:
                        readers[root[v]].add(n)
                if v in g.pinned:                # an output (or aliased by one): never freed
                    held.add(root[v])
        self.readers = readers
        self.never_freed = held | {b for b in self.buffers if not readers[b]}
        self.new_bytes = [sum(g.size[v] for v in outs if v in readers) for outs in g.node_outputs]

    def live_bytes(self, done: set[int]) -> int:
        """Bytes live once exactly the nodes ``done`` have run."""
        return sum(self.g.size[b] for b in self.buffers if self.producer[b] in done and
                   (b in self.never_freed or not self.readers[b] <= done))


def sim_peak(g: Graph, order: Sequence[int]) -> int:
    """Peak of ``order``: while a node runs, everything live before it plus its new buffers
    plus its workspace; after it runs, a buffer is freed once every reader of its alias
    group ran, unless the group is pinned or has no reader at all."""
    rules, done, peak = _Rules(g), set(), 0
    for n in order:
        peak = max(peak, rules.live_bytes(done) + rules.new_bytes[n] + g.workspace[n])
        done.add(n)
    return peak


# ------------------------------------------------------------------ optima
def brute_force_optimum(g: Graph) -> tuple[int, int]:
    """``(least core.memory.peak over every topological order, number of orders)``."""
    best, count = None, 0
    for order in topological_orders(g):
        p = memory.peak(g, order, check=False)
        best = p if best is None else min(best, p)
        count += 1
    return best, count


class TooManyStates(RuntimeError):
    """The down-set DP would visit more states than allowed."""


def downset_optimum(g: Graph, max_states: int = 300_000) -> tuple[int, list[int], int]:
    """Exact least peak by DP over executed sets, ``(peak, an optimal order, states)``.

    The live bytes after running a set of nodes depend only on the set, so the least
    peak over orders reaching a set is ``min over its last node m of max(best[set - m],
    live(set - m) + new(m) + workspace(m))``.  Sets are bitmasks, visited layer by layer.
    """
    rules = _Rules(g)
    n = len(g.node_inputs)
    pred_mask = [sum(1 << p for p in ps) for ps in preds_of(g)]
    bit = [1 << m for m in range(n)]
    bufs = [(g.size[b], 1 << rules.producer[b],
             None if b in rules.never_freed else sum(1 << r for r in rules.readers[b]))
            for b in rules.buffers if g.size[b]]

    def live(mask: int) -> int:
        return sum(s for s, p, rd in bufs if mask & p and (rd is None or mask & rd != rd))

    layer = {0: (0, None, None)}        # mask -> (best peak, previous mask, last node)
    back: dict[int, tuple[int | None, int | None]] = {0: (None, None)}
    states = 1
    for _ in range(n):
        nxt: dict[int, tuple[int, int, int]] = {}
        for mask, (best, _, _) in layer.items():
            base = live(mask)
            for m in range(n):
                if not mask & bit[m] and mask & pred_mask[m] == pred_mask[m]:
                    cand = max(best, base + rules.new_bytes[m] + g.workspace[m])
                    new = mask | bit[m]
                    if new not in nxt or cand < nxt[new][0]:
                        nxt[new] = (cand, mask, m)
        states += len(nxt)
        if states > max_states:
            raise TooManyStates(f"more than {max_states} executed sets")
        for new, (_, prev, m) in nxt.items():
            back[new] = (prev, m)
        layer = nxt
    full = (1 << n) - 1
    order, mask = [], full
    while mask:
        prev, m = back[mask]
        order.append(m)
        mask = prev
    return layer[full][0] if n else 0, order[::-1], states


# ------------------------------------------------------------------ traced real calls
class Recorder:
    """What the thunks of the functions linked inside :func:`tracing` did.

    ``steps``: one ``(node, reads, writes)`` per node run since the last :meth:`clear`,
    in execution order; ``reads`` is ``[(var, cell, obj)]`` for each input (``cell`` the
    list object the thunk really reads, ``obj`` what it held just before the node ran),
    ``writes`` the same for the outputs just after.  With ``snapshot=True`` every
    array written is also copied, and each read compares the cell's contents with that
    copy when the reader runs: ``same[step][k]`` is False when input ``k`` of that step
    was changed since it was written (None: not compared).
    """

    def __init__(self, snapshot: bool) -> None:
        self.snapshot = snapshot
        self.steps: list = []
        self.same: list = []
        self._copy: dict = {}

    def clear(self) -> None:
        self.steps, self.same, self._copy = [], [], {}

    def order(self) -> list:
        return [node for node, _, _ in self.steps]

    def wrap(self, node, thunk):
        import numpy as np
        if getattr(thunk, "recorder", None) is self:
            return thunk

        def run():
            reads = [(v, c, c[0]) for v, c in zip(node.inputs, thunk.inputs)]
            if self.snapshot:
                self.same.append([np.array_equal(o, self._copy[v], equal_nan=True)
                                  if v in self._copy and isinstance(o, np.ndarray) else None
                                  for v, _, o in reads])
            rval = thunk()
            writes = [(v, c, c[0]) for v, c in zip(node.outputs, thunk.outputs)]
            self.steps.append((node, reads, writes))
            if self.snapshot:
                self._copy.update((v, np.array(o, copy=True)) for v, _, o in writes
                                  if isinstance(o, np.ndarray))
            return rval
        # no ``cthunk`` attribute: the C VM calls it through Python, with the same walk
        run.lazy, run.inputs, run.outputs, run.recorder = thunk.lazy, thunk.inputs, thunk.outputs, self
        return run


@__import__("contextlib").contextmanager
def tracing(snapshot: bool = False):
    """Every VM built inside this context records its real calls into the :class:`Recorder`
    it yields (call the functions inside the context too: a VM built at call time is
    wrapped only while the context is active).

    ``VM_Linker.make_vm`` (theano/gof/vm.py) receives the thunks after ``make_thunk``
    captured their storage cells; each is wrapped there, so the recorded cells are the
    ones the VM really uses, whatever linker subclass planned them.
    """
    from theano.gof import vm as theano_vm
    stock = theano_vm.VM_Linker.make_vm
    rec = Recorder(snapshot)

    def make_vm(self, nodes, thunks, *args, **kwargs):
        return stock(self, nodes, [rec.wrap(n, t) for n, t in zip(nodes, thunks)], *args, **kwargs)

    theano_vm.VM_Linker.make_vm = make_vm
    try:
        yield rec
    finally:
        theano_vm.VM_Linker.make_vm = stock
