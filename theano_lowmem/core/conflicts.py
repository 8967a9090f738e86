r"""Which buffers may share bytes when the executed order depends on data (pure Python).

A graph with lazy nodes (``ifelse``) has no single executed order: the C VM
(``lazy_rec_eval``, lazylinker_c.c:556-700) walks back from the outputs, and a
lazy node asks for the inputs of the branch it takes only.  So lifetimes cannot
be intervals of one order.  This module says, for every pair of buffers,
whether they are *safe* to share bytes whatever the data decides, from two
facts about that walk:

* **Unconditional dependencies.**  Before a node runs, the walk has computed its
  ``orderings()`` prerequisites (always evaluated, lazylinker_c.c:571-580) and,
  for a non-lazy node, all its inputs (lines 683-700); for ``ifelse``, its
  condition (its thunk asks for input 0 first, ifelse.py:246).  Transitively:
  ``n`` *always waits for* ``p``.
* **Request post-dominators.**  A node runs only when some node asks for it
  (a data consumer, an ``orderings()`` successor) or it produces an output; so
  if every path of requests from ``r`` to the outputs passes through ``G``,
  ``r`` can only run while the walk is evaluating ``G`` (the evaluation is one
  nest of recursive calls).  Once ``G`` is computed it is never evaluated again,
  so ``r`` never runs after ``G`` completes.

A buffer ``a`` (written by its producer and inplace writers, read by its
readers: together its *touching* nodes) is **done before** node ``w`` runs if
some common post-dominator ``G`` of all of ``a``'s touching nodes is a strict
unconditional predecessor of ``w``: then each of them has run, or never will.
Two buffers ``a`` and ``b`` may share bytes if ``a`` is done before ``b``'s
writers run, or ``b`` before ``a``'s.  Without lazy nodes the graph's full
chain of prerequisites makes this exactly "lifetimes disjoint in the order".

* **Requested after a chain prefix.**  With a *chain* (nodes each of which has
  the previous one among its prerequisites), chain node ``i`` evaluates its
  prerequisites before it asks for any input (STEP 1 of ``lazy_rec_eval``), so
  when it asks, chain nodes ``0..i-1`` have run.  A node outside the chain runs
  at its first request, so every chain node before the earliest of its
  requesters has run before it: an ``Alloc`` of zeros asked for only by the
  gradient ``ifelse``\ s at chain positions 40 and 42 runs after chain nodes
  0..39, whichever branch asks.  Without this rule such a node "may run at any
  time" and conflicts with nearly everything (resnet_sd: 4 MB of arena).

Every set here is a Python ``int`` used as a bit set; :func:`conflict_sets` is
O(edges) big-integer operations (dynamic programs over the post-dominator tree
and the unconditional dependencies), not O(buffers^2) pair tests.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Sequence

EXIT = -1


@dataclass(frozen=True)
class LazyStructure:
    """The walk's structure, in node indices ``0..n_nodes-1``.

    Attributes
    ----------
    topo : sequence of int
        Every node once, each after everything it may request (a topological
        order of data edges and ``orderings()`` edges).
    always : sequence of sequence of int
        Per node: the nodes it always waits for directly (prerequisites; all
        producers of its inputs if it is not lazy; its condition's producer if
        it is an ``ifelse``).
    requesters : sequence of sequence of int
        Per node: the nodes that may ask for it (consumers of its outputs,
        its ``orderings()`` successors).
    roots : frozenset of int
        Nodes producing a function output (asked for by the VM itself).
    prereqs : sequence of sequence of int, optional
        Per node: its ``orderings()`` prerequisites (evaluated before it asks for
        any input).  Needed with ``chain`` only.
    chain : sequence of int, optional
        Nodes pinned in this order, each with the previous one among its
        ``prereqs`` (checked: the chain is cut where that does not hold).
    """

    topo: Sequence[int]
    always: Sequence[Sequence[int]]
    requesters: Sequence[Sequence[int]]
    roots: frozenset
    prereqs: Sequence[Sequence[int]] = ()
    chain: Sequence[int] = ()

    @property
    def n_nodes(self) -> int:
        return len(self.topo)


def post_dominators(s: LazyStructure) -> tuple[list[int], list[int]]:
    """Immediate request post-dominator of every node (``EXIT`` above the roots).

    Returns ``(ipdom, rank)``: ``rank`` is a node's position in ``s.topo``
    (``EXIT``'s is ``n_nodes``); a node's ipdom always has a higher rank.
    (Cooper, Harvey and Kennedy's intersection, one pass in reverse topological
    order, which suffices on a DAG.)
    """
    n = s.n_nodes
    rank = [0] * n
    for i, x in enumerate(s.topo):
        rank[x] = i
    ipdom = [EXIT] * n

    def r(x: int) -> int:
        return n if x == EXIT else rank[x]

    def meet(a: int, b: int) -> int:
        while a != b:
            if r(a) < r(b):
                a = ipdom[a]
            else:
                b = ipdom[b]
        return a

    for x in reversed(s.topo):
        succ = list(s.requesters[x]) + ([EXIT] if x in s.roots else [])
        if not succ:                 # never asked for: never runs
            ipdom[x] = EXIT
            continue
        d = succ[0]
        for c in succ[1:]:
            d = meet(d, c)
        ipdom[x] = d
    return ipdom, [r(x) for x in range(n)] + [n]


def _always_successors(s: LazyStructure) -> list[list[int]]:
    """Per node: the nodes that always wait for it directly."""
    out: list[list[int]] = [[] for _ in range(s.n_nodes)]
    for x in range(s.n_nodes):
        for p in set(s.always[x]):
            out[p].append(x)
    return out


def chain_prefixes(s: LazyStructure, always_succ: list[list[int]] | None = None
                   ) -> tuple[list[int], list[float]]:
    """How much of the chain has surely run when a node runs, and when a node is
    finished for good.

    Returns ``(ran, ends)``: ``ran[x]`` = ``i`` means chain nodes ``0..i-1`` have run
    whenever ``x`` runs; once chain node ``ends[x]`` has run, ``x`` has run or never
    will (``inf``: no such chain node).  So ``x`` is done before ``w`` runs if
    ``ends[x] < ran[w]``.

    * ``ran``: a node runs at its first request; chain node ``i`` asks for its data
      inputs after its prerequisites, so after chain nodes ``0..i-1``; any other
      requester asks while being evaluated, so after what had run when it started.
    * ``ends``: ``x`` has run once a node that always waits for it has run; and it
      never runs again once every node that may ask for it is done (the VM itself
      asks for outputs, at any time: ``inf``).
    """
    n = s.n_nodes
    chain = list(s.chain[:1])
    for a, b in zip(s.chain, s.chain[1:]):
        if a not in s.prereqs[b]:
            break
        chain.append(b)
    pos = {x: i for i, x in enumerate(chain)}
    prereq_sets = [set(p) for p in s.prereqs] if s.prereqs else [set()] * n
    inf = float("inf")
    if always_succ is None:
        always_succ = _always_successors(s)
    start = [0] * n         # chain prefix that has run when x's evaluation starts
    ran = [0] * n
    ran_by: list[float] = [inf] * n     # a chain position whose run implies x ran
    ends: list[float] = [inf] * n
    for x in reversed(s.topo):      # requesters and waiters come later in the topo order
        req = s.requesters[x]
        if x in s.roots or not req:
            start[x] = 0
        else:
            start[x] = min(max(start[r], pos[r]) if r in pos and x not in prereq_sets[r]
                           else start[r] for r in req)
        ran[x] = max(start[x], pos[x]) if x in pos else start[x]
        ran_by[x] = min([pos.get(x, inf)] + [ran_by[c] for c in always_succ[x]])
        asked = inf if x in s.roots else max((ends[r] for r in req), default=-1)
        ends[x] = min(ran_by[x], asked)
    return ran, ends


def conflict_sets(s: LazyStructure, writer: Sequence[int], writers: Sequence[Sequence[int]],
                  touching: Sequence[Sequence[int]]) -> list[int]:
    """Per buffer ``k``: the bit set of buffers that may not share bytes with it.

    Buffer ``a`` is done before node ``w`` runs if each node ``t`` touching ``a`` has a
    node of its post-dominator chain (``t`` itself, its ipdom, ...) among the strict
    always-predecessors of ``w``: ``w`` is then in ``U(t)``, the nodes that strictly
    always wait for some node of ``t``'s chain, and ``AFTER(a)`` is the intersection of
    ``U(t)`` over ``a``'s touching nodes.  ``a`` and ``b`` may share bytes iff ``b``'s
    first writer is in ``AFTER(a)`` or ``a``'s in ``AFTER(b)``.

    Parameters
    ----------
    s : LazyStructure
    writer : sequence of int
        Per buffer: the node that first writes it (the producer of its root).
    writers : sequence of sequence of int
        Per buffer: every node writing its bytes (producer and inplace writers).
        A buffer with a writer that does not always wait for ``writer[k]`` conflicts
        with every other buffer.
    touching : sequence of sequence of int
        Per buffer: every node writing or reading its bytes (through any view).

    Returns
    -------
    list of int
        ``conflicts[k]`` has bit ``j`` set iff buffers ``k`` and ``j`` may be
        live together in some execution (bit ``k`` is not set).  Symmetric.

    Examples
    --------
    >>> # a chain 0 -> 1 -> 2: buffer 0 written by 0, read by 1; buffer 1 by 1, read by 2;
    >>> # buffer 2 by 2 (an output)
    >>> s = LazyStructure([0, 1, 2], [[], [0], [1]], [[1], [2], []], frozenset({2}))
    >>> conflict_sets(s, [0, 1, 2], [[0], [1], [2]], [[0, 1], [1, 2], [2]])
    [2, 5, 2]
    """
    n, m = s.n_nodes, len(writer)
    ipdom, _ = post_dominators(s)
    always_succ = _always_successors(s)
    vb = [0] * n                    # buffers first written by node x
    for k, w in enumerate(writer):
        vb[w] |= 1 << k
    # buffers whose writer strictly always waits for x; nodes likewise (inplace check)
    after_x = [0] * n
    desc = [0] * n
    for x in reversed(s.topo):
        acc = dacc = 0
        for c in always_succ[x]:
            acc |= vb[c] | after_x[c]
            dacc |= (1 << c) | desc[c]
        after_x[x], desc[x] = acc, dacc
    # U(t) in buffer space: writers strictly always waiting for a node of t's chain
    up = [0] * n
    for x in reversed(s.topo):      # ipdom has a higher rank: already done
        d = ipdom[x]
        up[x] = after_x[x] | (up[d] if d != EXIT else 0)
    if s.chain:                     # and writers that run after t's chain node ran
        ran, ends = chain_prefixes(s, always_succ)
        by_ran: dict[int, int] = {}
        for k, w in enumerate(writer):
            by_ran[ran[w]] = by_ran.get(ran[w], 0) | 1 << k
        levels = sorted(by_ran)
        at_least, acc = {}, 0       # buffers whose writer has ran >= level
        for lv in reversed(levels):
            acc |= by_ran[lv]
            at_least[lv] = acc
        for x in range(n):
            if ends[x] != float("inf"):
                i = bisect.bisect_right(levels, ends[x])     # first level > ends[x]
                if i < len(levels):
                    up[x] |= at_least[levels[i]]
    everyone = (1 << m) - 1
    s1 = []
    for k in range(m):
        acc = everyone
        for t in touching[k]:
            acc &= up[t]
            if not acc:
                break
        s1.append(acc & ~(1 << k))
    # transpose: t1[j] has bit k iff j is done before k's writer... i.e. k in s1[j]
    t1 = [0] * m
    for j in range(m):
        x = s1[j]
        while x:
            low = x & -x
            t1[low.bit_length() - 1] |= 1 << j
            x ^= low
    out = [everyone & ~(s1[k] | t1[k]) & ~(1 << k) for k in range(m)]
    alone = [k for k in range(m)
             if any(w != writer[k] and not desc[writer[k]] >> w & 1 for w in writers[k])]
    for k in alone:
        out[k] = everyone & ~(1 << k)
        for j in range(m):
            if j != k:
                out[j] |= 1 << k
    return out
