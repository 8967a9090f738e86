"""Exact min-peak ordering of a window of an order (the whole order is one window).

A *window* is ``order[lo:hi]``: the nodes before it (the prefix) are fixed, so
are those after it.  The live bytes after running the prefix plus a set ``S`` of
window nodes depend on ``S`` only, and so does the bytes a step needs, so the
steps outside the window do not change when the window is reordered: the
window's own peak is the only thing to minimise, and a window that is a
segment between two cut nodes (see :func:`cut_positions`) is an independent
subproblem.

Search: best-first (A*, bottleneck cost ``g`` = highest step so far) over sets
of executed window nodes, memoised on a bitmask int; only orders strictly
below ``ub`` (an upper bound, e.g. the best heuristic's peak) are explored.
Admissible bound ``h(S)`` = bytes that stay live through the window +
max over unrun nodes of (bytes it allocates + workspace + freeable bytes it reads), and the
bytes held when the window ends.  The strong bound (``strong=True``, used by
:func:`~.schedule.exact_schedule`) counts, for an unrun node, every buffer that must be
live while it runs: produced by the prefix, a run node or an ancestor, and read by the
node or a descendant (``_Window._h_strong``).  Dominance rule (sound by an exchange
argument, see ``_Window.search``): a ready node that does not raise the live bytes
and allocates no more than any other ready node (or fits under ``g``) is run
at once, as the only successor.

An anytime variant (``solve_window(depth_first=True)``, :meth:`_Window.search_dfs`)
explores the same states depth first, greedy child first, lowering ``ub`` at every
complete order it reaches, so a search stopped by its work limit still returns
the best order found.

The number of states is at most the number of down-sets of the window
(``2**k`` for ``k`` independent nodes), O(k) work each; a deterministic work
limit (:class:`~.sched_model.Budget`, 2 + 2 per child for each state expanded) bounds it.

:func:`tree_schedule` is Liu's exact algorithm for in-forests (every node's
outputs read by at most one node), used whenever the graph is one.

References
----------
Serenity (Ahn et al., MLSys 2020): DP over executed sets with budget pruning
and divide-and-conquer at cut nodes.  J. W. H. Liu, "An application of
generalized tree pebbling to sparse matrix factorization", SIAM J. Algebraic
Discrete Methods 8(3):375-395, 1987 (hill-valley segments, merged by
decreasing hill - valley).  Kayaaslan et al. (2018) extend it to
series-parallel graphs (not used here).
"""
from __future__ import annotations

import heapq
import time
from dataclasses import dataclass
from typing import Sequence

from .graph import Graph
from .sched_model import CLOCK_EVERY, Budget, MemTables


#: The strong bound's inner steps (a node tried, a term read: a few tens of ns each) per
#: work unit (about a microsecond, see :data:`.sched_model.WORK_PER_SECOND`).
BOUND_OPS_PER_UNIT = 10
#: The strong bound tries the unrun nodes of largest static ``need`` first and stops after
#: this many (a max over fewer nodes is still a lower bound): the dynamic part rarely
#: lifts a node far down the list above the first ones, and each try reads every term.
STRONG_TRIES = 3


@dataclass(frozen=True)
class WindowResult:
    """``order``: the improved full order (None if none strictly below ``ub`` was found);
    ``peak``: its window peak; ``proved``: the search finished, so the window optimum is
    ``peak`` (or >= ``ub`` when ``order`` is None); ``lower``: a proven lower bound on
    the window optimum."""

    order: list[int] | None
    peak: int | None
    proved: bool
    lower: int
    during: tuple[int, ...] = ()    # the window's new ``during`` / ``after`` bytes, step by step
    after: tuple[int, ...] = ()
    work: int = 0                   # work units spent (2 + 2 per child, per state expanded)


def cut_positions(graph: Graph, order: Sequence[int]) -> list[int]:
    """Positions ``i`` whose node runs at ``i`` in *every* order (a cut: all nodes before
    it are its ancestors, all after it its descendants).  O(N + E).

    Examples
    --------
    >>> g = Graph([[0], [1], [1], [2, 3]], [[1], [2], [3], [4]], size=[0, 1, 1, 1, 1])
    >>> cut_positions(g, [0, 1, 2, 3])
    [0, 3]
    """
    n = len(order)
    pos = [0] * graph.n_nodes
    for i, v in enumerate(order):
        pos[v] = i
    at, succs, preds = pos.__getitem__, graph.succs, graph.preds
    ok_before = [True] * n      # every node before i has a successor at or before i
    reach = -1
    for i, v in enumerate(order):
        ok_before[i] = reach <= i
        sv = succs[v]
        f = min(map(at, sv)) if sv else n      # cheaper than ``default=``
        if f > reach:
            reach = f
    cuts, low = [], n
    for i in range(n - 1, -1, -1):      # every node after i has a predecessor at or after i
        if ok_before[i] and low >= i:
            cuts.append(i)
        pv = preds[order[i]]
        q = max(map(at, pv)) if pv else -1
        if q < low:
            low = q
    return cuts[::-1]


def solve_window(graph: Graph, t: MemTables, order: Sequence[int], lo: int, hi: int, *,
                 base: int, ub: int, deadline: float | None = None, budget: Budget | None = None,
                 max_work: int | None = None, pos: Sequence[int] | None = None,
                 depth_first: bool = False, strong: bool = False, floor: int = 0) -> WindowResult:
    """Reorder ``order[lo:hi]`` to minimise the peak of its steps, looking only below ``ub``.

    Parameters
    ----------
    graph, t : Graph and its MemTables
    order : sequence of int
        A valid order; only positions ``lo..hi-1`` change.
    base : int
        Live bytes once ``order[:lo]`` ran (``simulate(...).after[lo - 1]``, 0 if ``lo == 0``).
    ub : int
        Only window orders whose peak is strictly below ``ub`` are searched for.
    deadline : float or None
        ``time.perf_counter()`` value at which to stop: a wall-clock limit, hence
        not deterministic; :func:`~.schedule.schedule` uses ``budget`` instead.
    budget : Budget, optional
        Charged with the work done; the search stops when it is used up.
    max_work : int, optional
        Stop after this many work units (deterministic).
    pos : sequence of int, optional
        ``pos[n]``: position of node ``n`` in ``order`` (computed when not given).
    depth_first : bool
        Anytime depth-first branch and bound (:meth:`_Window.search_dfs`) instead of
        best-first: when the work runs out it returns the best window order found so
        far (below ``ub``), where best-first returns nothing.  Same result when it
        finishes (``proved``).
    strong : bool
        Prune with the stronger bound of :meth:`_Window._h_strong` (bytes that must be
        live while some unrun node runs, given its ancestors and descendants): fewer
        states, each dearer; worth it on whole graphs, not on narrow windows.
    floor : int
        A proven lower bound on the window optimum (e.g. :func:`.sched_cuts.cut_lower_bound`):
        the best-first search starts its bound there, so it stops at the first order
        reaching it (ignored by the depth-first search).

    Examples
    --------
    >>> g = Graph([[0], [0], [1], [2]], [[1], [2], [3], [4]], size=[0, 8, 8, 1, 1], pinned=[3, 4])
    >>> from theano_lowmem.core.sched_model import mem_tables
    >>> r = solve_window(g, mem_tables(g), [0, 1, 2, 3], 0, 4, base=0, ub=100, deadline=None)
    >>> r.order, r.peak, r.proved
    ([0, 2, 1, 3], 10, True)
    """
    if pos is None:
        pos = [0] * graph.n_nodes
        for i, n in enumerate(order):
            pos[n] = i
    w = _Window(graph, t, order, lo, hi, base, pos, strong)
    limit = budget.left() if budget is not None else 1 << 62
    if max_work is not None:
        limit = min(limit, max_work)
    if depth_first:
        local, peak, proved, lower, work = w.search_dfs(ub, limit, budget, deadline)
    else:
        local, peak, proved, lower, work = w.search(ub, limit, budget, deadline, floor)
    if local is None:
        return WindowResult(None, None, proved, lower, work=work)
    new = list(order)
    new[lo:hi] = [w.nodes[i] for i in local]
    return WindowResult(new, peak, proved, lower, *w.replay(local), work=work)


class _Window:
    """The window as bitmask tables over local indices ``0..k-1`` (``order[lo + i]``)."""

    def __init__(self, graph: Graph, t: MemTables, order: Sequence[int], lo: int, hi: int,
                 base: int, pos: Sequence[int], strong: bool = False) -> None:
        self.nodes = nodes = list(order[lo:hi])
        k = len(nodes)
        g_preds, g_succs, reads, readers = graph.preds, graph.succs, t.reads, t.readers
        size, producer = graph.size, graph.producer
        pred, frees, inb = [0] * k, [], [0] * k
        base_freed = 0                  # bytes of the prefix's buffers freed in the window
        bufs: dict[int, tuple[int, int, int]] = {}    # freed here: b -> (readers mask, size, producer)
        seen: dict[int, tuple[int, int]] = {}         # b -> (last reader's position, readers mask)
        for i, n in enumerate(nodes):
            m = 0
            for p in g_preds[n]:
                q = pos[p] - lo
                if q >= 0:
                    m |= 1 << q
            pred[i] = m
            fr = []
            for b in reads[n]:
                x = seen.get(b)
                if x is None:
                    j, m = -1, 0
                    for r in readers[b]:
                        q = pos[r]
                        if q > j:
                            j = q
                        if q >= lo:
                            m |= 1 << (q - lo)
                    seen[b] = x = (j, m)
                    if j < hi:
                        q = pos[producer[b]] - lo
                        bufs[b] = (m, size[b], q if q >= 0 else -1)
                        if q < 0:
                            base_freed += size[b]
                if x[0] >= hi:
                    continue            # still needed after the window: never freed here
                fr.append((x[1], size[b]))
                inb[i] += size[b]
            frees.append(tuple(fr))
        alloc, spike = t.alloc, t.spike
        keep = [alloc[n] for n in nodes]
        for i, n in enumerate(nodes):
            for b, sz in t.outs[n]:     # freeable own buffers: freed here if read here only
                x = seen.get(b)
                if x is not None:
                    j = x[0]
                else:
                    j = -1
                    for r in readers[b]:
                        if pos[r] > j:
                            j = pos[r]
                if j < hi:
                    keep[i] -= sz
        self.k, self.pred, self.frees, self.keep = k, pred, frees, keep
        succ = []
        for n in nodes:
            sl = []
            for m in g_succs[n]:
                q = pos[m]
                if lo <= q < hi:
                    sl.append(q - lo)
            succ.append(sl)
        self.succ = succ
        self.alloc = [alloc[n] for n in nodes]
        self.spike = [spike[n] for n in nodes]
        self.base, self.base_keep = base, base - base_freed
        self.keep_total = self.base_keep + sum(keep)
        self.strong = strong
        if strong:
            self._bound_tables(bufs)
        else:
            bk = self.base_keep
            self.need = need = [bk + sp + x for sp, x in zip(self.spike, inb)]
            self.by_need = sorted(range(k), key=lambda i: (-need[i], i))

    def replay(self, local: list[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """``during`` and ``after`` bytes of each step of the window order ``local``."""
        s, live, during, after = 0, self.base, [], []
        for i in local:
            s |= 1 << i
            during.append(live + self.spike[i])
            live += self.alloc[i] - sum(sz for m, sz in self.frees[i] if not m & ~s)
            after.append(live)
        return tuple(during), tuple(after)

    def _bound_tables(self, bufs: dict[int, tuple[int, int, int]]) -> None:
        """Tables of the bound :meth:`_h`: window ancestors and descendants of each node,
        ``need[i]`` (bytes live during ``i``'s step in every order, from the prefix and
        ``i``'s ancestors) and the terms a node adds once it ran (``terms[j]``)."""
        k, pred, succ, keep = self.k, self.pred, self.succ, self.keep
        anc, desc = [0] * k, [0] * k
        for i in range(k):                 # local indices are in a valid order
            m, a = pred[i], 0
            while m:
                low = m & -m
                m ^= low
                a |= anc[low.bit_length() - 1] | low
            anc[i] = a
        for i in range(k - 1, -1, -1):
            d = 0
            for j in succ[i]:
                d |= desc[j] | 1 << j
            desc[i] = d
        full = (1 << k) - 1
        need = [self.spike[i] + self.base_keep for i in range(k)]
        terms: list[list[tuple[int, int]]] = [[] for _ in range(k)]
        for j in range(k):
            if keep[j]:
                for i in _bits(desc[j]):
                    need[i] += keep[j]
                if full & ~desc[j] & ~(1 << j):
                    terms[j].append((full & ~desc[j] & ~(1 << j), keep[j]))
        for m, size, p in bufs.values():
            upto = 0                       # nodes at or before a reader: b is live while they run
            for r in _bits(m):
                upto |= anc[r] | 1 << r
            after = full if p < 0 else desc[p]
            for i in _bits(upto & after):
                need[i] += size
            if p >= 0 and upto & ~after & ~(1 << p):
                terms[p].append((upto & ~after & ~(1 << p), size))
        self.need, self.terms = need, [tuple(x) for x in terms]
        self.by_need = sorted(range(k), key=lambda i: (-need[i], i))

    def _h_weak(self, s: int, keep: int) -> tuple[int, int]:
        """The default bound (and its work): ``keep`` (bytes of the prefix and of the run
        nodes that outlive the window) + the largest ``spike + inputs freed here`` of an
        unrun node."""
        for i in self.by_need:
            if not s >> i & 1:
                return keep + self.need[i] - self.base_keep, 0
        return 0, 0

    def _next_weak(self, keep: int, i: int, s2: int) -> int:
        return keep + self.keep[i]

    def _h_strong(self, s: int, act: tuple[tuple[int, int], ...]) -> tuple[int, int]:
        """Lower bound on the peak of any completion of down-set ``s``: the most bytes
        that must be live while some unrun node ``i`` runs.  ``need[i]`` counts its
        step (outputs, workspace), every buffer of the prefix or of an ancestor of ``i``
        that one of ``i`` and its descendants reads, and the outputs of ancestors that
        outlive the window; ``act`` (the live terms of the run nodes that are not
        ancestors of ``i``) adds each output of a run node that ``i`` or a descendant
        reads, or that outlives the window.  Each byte counted is live during ``i``'s
        step in every order, so the bound is admissible, and so is its max over only
        the first ``STRONG_TRIES`` unrun nodes by ``need``.  Work: 1 + 1 per
        ``BOUND_OPS_PER_UNIT`` nodes tried and terms read."""
        top = sum(sz for _, sz in act)
        best, work = 0, len(act) + BOUND_OPS_PER_UNIT
        need = self.need
        tries = STRONG_TRIES
        for i in self.by_need:
            if s >> i & 1:
                continue
            v = need[i]
            if v + top <= best or not tries:
                break
            tries -= 1
            work += 1 + len(act)
            for m, sz in act:
                if m >> i & 1:
                    v += sz
            if v > best:
                best = v
        return best, work // BOUND_OPS_PER_UNIT

    def _next_strong(self, act: tuple[tuple[int, int], ...], i: int, s2: int
                     ) -> tuple[tuple[int, int], ...]:
        """The live terms once node ``i`` ran (state ``s2``): terms still covering an unrun node."""
        return tuple(x for x in act + self.terms[i] if x[0] & ~s2)

    def _children(self, s: int, live: int, ready: int, g: int) -> tuple[list, int]:
        """The states one step after down-set ``s`` (``live`` bytes, ``ready`` mask), as
        ``(node, state, bytes while it runs, bytes after)``, and how many there were.  A
        child that frees at least what it allocates and has the smallest spike (or stays
        under ``g``) dominates its siblings: it is the only one returned."""
        spike, alloc, frees = self.spike, self.alloc, self.frees
        kids, min_spike, r = [], None, ready
        while r:
            low = r & -r
            r ^= low
            i = low.bit_length() - 1
            s2 = s | low
            after = live + alloc[i]
            for m, sz in frees[i]:
                if not m & ~s2:
                    after -= sz
            kids.append((i, s2, live + spike[i], after))
            if min_spike is None or spike[i] < min_spike:
                min_spike = spike[i]
        n = len(kids)
        for kid in kids:
            if kid[3] <= live and (spike[kid[0]] == min_spike or kid[2] <= g):
                return [kid], n
        return kids, n

    def search_dfs(self, ub: int, limit: int, budget: Budget | None, deadline: float | None
                   ) -> tuple[list[int] | None, int | None, bool, int, int]:
        """Depth-first branch and bound for a window order with peak < ``ub``, anytime:
        (best order found or None, its peak, proved, lower, work).

        Children are tried by increasing (step peak so far, bytes the step adds), so the
        first leaf is a greedy order; each leaf found lowers ``ub`` to its peak, and the
        search goes on below it.  A state reached again with no lower peak so far is
        skipped (its subtree was searched under a higher ``ub``, which covers the lower
        one).  Pruning: the bound of :meth:`search` (``h``), the single-child rule of
        :meth:`search`, and one step of look-ahead: a state left with ``after`` live bytes
        still has to run one of its ready nodes, so any completion peaks at least at
        ``after`` + the least ``spike`` among them.  ``proved``: the search finished, so
        the order found (or, with none, ``ub``) is optimal for the window.  Work: as
        :meth:`search`, plus 1 per ready node of the look-ahead.
        """
        if not self.strong:
            return self._dfs_weak(ub, limit, budget, deadline)
        k, pred, succ, spike = self.k, self.pred, self.succ, self.spike
        full = (1 << k) - 1
        h, next_hs = (self._h_strong, self._next_strong) if self.strong else (self._h_weak, self._next_weak)
        hs0 = () if self.strong else self.base_keep
        start_f = max(self.keep_total, h(0, hs0)[0])
        if start_f >= ub:
            return None, None, True, ub, 1
        lower = start_f
        work, charged = 1, 0
        ready0 = sum(1 << i for i in range(k) if not pred[i])
        best = {0: 0}
        info = {0: (self.base, hs0, ready0)}
        parent: dict[int, tuple[int, int]] = {}
        stack = [(0, 0)]                                    # (state, g)
        found: list[int] | None = None
        stopped = False
        while stack:
            s, g = stack.pop()
            if g >= ub or g > best[s]:
                continue
            if s == full:
                path = []
                while s:
                    s, i = parent[s]
                    path.append(i)
                found, ub = path[::-1], g
                continue
            if work >= limit or (deadline is not None and time.perf_counter() > deadline):
                stopped = True
                break
            if budget is not None and work - charged >= CLOCK_EVERY:     # reads the clock
                budget.spend(work - charged)
                charged = work
                if budget.capped:
                    stopped = True
                    break
            live, hs, ready = info[s]
            kids, n = self._children(s, live, ready, g)
            work += 2 + 2 * n
            pushed = []
            for i, s2, out, after in kids:
                g2 = g if out <= g else out
                if g2 >= ub or g2 >= best.get(s2, ub):
                    continue
                hs2 = next_hs(hs, i, s2)
                h2, hw = h(s2, hs2)
                work += hw
                if h2 >= ub:
                    continue
                ready2 = ready ^ (1 << i)
                for j in succ[i]:
                    if not pred[j] & ~s2:
                        ready2 |= 1 << j
                if s2 != full:
                    r2, least = ready2, None
                    while r2:
                        low = r2 & -r2
                        r2 ^= low
                        sp = spike[low.bit_length() - 1]
                        if least is None or sp < least:
                            least = sp
                        work += 1
                    if after + least >= ub:
                        continue
                best[s2], info[s2], parent[s2] = g2, (after, hs2, ready2), (s, i)
                pushed.append((g2, after - live, i, s2))
            pushed.sort(reverse=True)
            for g2, _, _, s2 in pushed:
                stack.append((s2, g2))
        if budget is not None:
            budget.spend(work - charged)
        done = not stopped
        if found is None:
            return None, None, done, ub if done else lower, work
        return found, ub, done, ub if done else lower, work

    def _dfs_weak(self, ub: int, limit: int, budget: Budget | None, deadline: float | None
                  ) -> tuple[list[int] | None, int | None, bool, int, int]:
        """:meth:`search_dfs` with the default bound and :meth:`_children` inlined and one
        table per state: the same states, work units and result, faster."""
        k, pred, succ, spike, alloc, frees, kp = (self.k, self.pred, self.succ, self.spike,
                                                 self.alloc, self.frees, self.keep)
        bk = self.base_keep
        need = [x - bk for x in self.need]
        by_need = self.by_need
        full = (1 << k) - 1
        start_f = max(self.keep_total, bk + need[by_need[0]] if k else 0)
        if start_f >= ub:
            return None, None, True, ub, 1
        lower = start_f
        work, charged = 1, 0
        ready0 = sum(1 << i for i in range(k) if not pred[i])
        # state -> (lowest g reaching it, live, bytes kept, ready mask, parent state, node)
        info = {0: (0, self.base, bk, ready0, 0, -1)}
        stack = [(0, 0)]                                    # (state, g)
        found: list[int] | None = None
        stopped = False
        while stack:
            s, g = stack.pop()
            if g >= ub:
                continue
            g0, live, hs, ready, _, _ = info[s]
            if g > g0:
                continue
            if s == full:
                path = []
                while s:
                    x = info[s]
                    s = x[4]
                    path.append(x[5])
                found, ub = path[::-1], g
                continue
            if work >= limit or (deadline is not None and time.perf_counter() > deadline):
                stopped = True
                break
            if budget is not None and work - charged >= CLOCK_EVERY:     # reads the clock
                budget.spend(work - charged)
                charged = work
                if budget.capped:
                    stopped = True
                    break
            kids, min_spike, r = [], None, ready
            while r:
                low = r & -r
                r ^= low
                i = low.bit_length() - 1
                s2 = s | low
                after = live + alloc[i]
                for m, sz in frees[i]:
                    if not m & ~s2:
                        after -= sz
                sp = spike[i]
                kids.append((i, s2, live + sp, after))
                if min_spike is None or sp < min_spike:
                    min_spike = sp
            work += 2 + 2 * len(kids)
            for kid in kids:
                if kid[3] <= live and (spike[kid[0]] == min_spike or kid[2] <= g):
                    kids = (kid,)
                    break
            pushed = []
            for i, s2, out, after in kids:
                g2 = g if out <= g else out
                if g2 >= ub:
                    continue
                x = info.get(s2)
                if x is not None and g2 >= x[0]:
                    continue
                hs2 = hs + kp[i]
                h2 = 0
                for j in by_need:
                    if not s2 >> j & 1:
                        h2 = hs2 + need[j]
                        break
                if h2 >= ub:
                    continue
                ready2 = ready ^ (1 << i)
                for j in succ[i]:
                    if not pred[j] & ~s2:
                        ready2 |= 1 << j
                if s2 != full:
                    r2, least = ready2, None
                    while r2:
                        low = r2 & -r2
                        r2 ^= low
                        sp = spike[low.bit_length() - 1]
                        if least is None or sp < least:
                            least = sp
                        work += 1
                    if after + least >= ub:
                        continue
                info[s2] = (g2, after, hs2, ready2, s, i)
                pushed.append((g2, after - live, i, s2))
            pushed.sort(reverse=True)
            for g2, _, _, s2 in pushed:
                stack.append((s2, g2))
        if budget is not None:
            budget.spend(work - charged)
        done = not stopped
        if found is None:
            return None, None, done, ub if done else lower, work
        return found, ub, done, ub if done else lower, work


    def search(self, ub: int, limit: int, budget: Budget | None, deadline: float | None,
               floor: int = 0) -> tuple[list[int] | None, int | None, bool, int, int]:
        """Best-first search for a window order with peak < ``ub``:
        (order, peak, proved, lower, work).  Stops unproved after ``limit`` work units,
        when ``budget`` is capped, or at ``deadline``.  ``floor``: a proven lower bound
        on the window optimum, where the search's bound starts (it then ends at the first
        order reaching it: ties go to the deepest state).

        Single-child rule (exchange argument): if ready ``n`` has ``live_after <= live``
        then in every superset ``T`` of the state running ``n`` also does not raise the
        live bytes (it frees at least as much), so moving ``n`` to the front of any
        completion only lowers the later steps; its own step costs ``live + spike[n]``,
        no more than the first step of any completion when ``spike[n]`` is minimal among
        the ready nodes, and free when ``<= g``.  So ``n`` alone is expanded.
        """
        if not self.strong:
            return self._search_weak(ub, limit, budget, deadline, floor)
        k, pred, succ = self.k, self.pred, self.succ
        full = (1 << k) - 1
        h, next_hs = (self._h_strong, self._next_strong) if self.strong else (self._h_weak, self._next_weak)
        hs0 = () if self.strong else self.base_keep
        start_f = max(self.keep_total, h(0, hs0)[0], floor)
        if start_f >= ub:
            return None, None, True, ub, 1
        work, charged = 1, 0
        ready0 = sum(1 << i for i in range(k) if not pred[i])
        # g starts at ``floor``: steps below it cost nothing, since every order reaches it
        best = {0: floor}                                   # state -> lowest g reaching it
        info = {0: (self.base, hs0, ready0)}    # state -> (live, state of the bound, ready mask)
        parent: dict[int, tuple[int, int]] = {}
        heap = [(start_f, 0, 0, floor)]                     # (f, -depth, state, g)
        f = start_f
        while heap:
            f, negd, s, g = heapq.heappop(heap)
            if g > best[s]:
                continue
            if s == full:
                path = []
                while s:
                    s, i = parent[s]
                    path.append(i)
                if budget is not None:
                    budget.spend(work - charged)
                return path[::-1], g, True, g, work
            if work >= limit or (deadline is not None and time.perf_counter() > deadline):
                if budget is not None:
                    budget.spend(work - charged)
                return None, None, False, min(f, ub), work
            if budget is not None and work - charged >= CLOCK_EVERY:     # reads the clock
                budget.spend(work - charged)
                charged = work
                if budget.capped:
                    return None, None, False, min(f, ub), work
            live, hs, ready = info[s]
            kids, n = self._children(s, live, ready, g)
            work += 2 + 2 * n
            for i, s2, out, after in kids:
                g2 = g if out <= g else out
                if g2 >= ub or g2 >= best.get(s2, ub):
                    continue
                hs2 = next_hs(hs, i, s2)
                h2, hw = h(s2, hs2)
                work += hw
                f2 = max(f, g2, h2)
                if f2 >= ub:
                    continue
                ready2 = ready ^ (1 << i)
                for j in succ[i]:
                    if not pred[j] & ~s2:
                        ready2 |= 1 << j
                best[s2], info[s2], parent[s2] = g2, (after, hs2, ready2), (s, i)
                heapq.heappush(heap, (f2, negd - 1, s2, g2))
        if budget is not None:
            budget.spend(work - charged)
        return None, None, True, ub, work


    def _search_weak(self, ub: int, limit: int, budget: Budget | None, deadline: float | None,
                     floor: int) -> tuple[list[int] | None, int | None, bool, int, int]:
        """:meth:`search` with the default bound (:meth:`_h_weak`), :meth:`_children` and
        the bound inlined, and one table per state: the same states, in the same order,
        the same work units and result, in about two thirds of the time."""
        k, pred, succ, spike, alloc, frees, kp = (self.k, self.pred, self.succ, self.spike,
                                                 self.alloc, self.frees, self.keep)
        bk = self.base_keep
        need = [x - bk for x in self.need]
        by_need = self.by_need
        full = (1 << k) - 1
        start_f = max(self.keep_total, bk + need[by_need[0]] if k else 0, floor)
        if start_f >= ub:
            return None, None, True, ub, 1
        work, charged = 1, 0
        ready0 = sum(1 << i for i in range(k) if not pred[i])
        # state -> (lowest g reaching it, live, bytes kept, ready mask, parent state, node)
        info = {0: (floor, self.base, bk, ready0, 0, -1)}
        heap = [(start_f, 0, 0, floor)]                     # (f, -depth, state, g)
        pop, push = heapq.heappop, heapq.heappush
        while heap:
            f, negd, s, g = pop(heap)
            g0, live, hs, ready, _, _ = info[s]
            if g > g0:
                continue
            while True:
                if s == full:
                    path = []
                    while s:
                        x = info[s]
                        s = x[4]
                        path.append(x[5])
                    if budget is not None:
                        budget.spend(work - charged)
                    return path[::-1], g, True, g, work
                if work >= limit or (deadline is not None and time.perf_counter() > deadline):
                    if budget is not None:
                        budget.spend(work - charged)
                    return None, None, False, min(f, ub), work
                if budget is not None and work - charged >= CLOCK_EVERY:     # reads the clock
                    budget.spend(work - charged)
                    charged = work
                    if budget.capped:
                        return None, None, False, min(f, ub), work
                kids, min_spike, r = [], None, ready
                while r:
                    low = r & -r
                    r ^= low
                    i = low.bit_length() - 1
                    s2 = s | low
                    after = live + alloc[i]
                    for m, sz in frees[i]:
                        if not m & ~s2:
                            after -= sz
                    sp = spike[i]
                    kids.append((i, s2, live + sp, after))
                    if min_spike is None or sp < min_spike:
                        min_spike = sp
                work += 2 + 2 * len(kids)
                for kid in kids:
                    if kid[3] <= live and (spike[kid[0]] == min_spike or kid[2] <= g):
                        kids = (kid,)
                        break
                negd -= 1
                if len(kids) == 1:
                    # one child: when its f is the popped state's, it is the heap's least
                    # entry (every entry is at least (f, negd) of the popped state, and it
                    # is one deeper), so it is expanded at once, without the push and pop:
                    # the same states in the same order
                    i, s2, out, after = kids[0]
                    g2 = g if out <= g else out
                    if g2 >= ub:
                        break
                    x = info.get(s2)
                    if x is not None and g2 >= x[0]:
                        break
                    hs2 = hs + kp[i]
                    h2 = 0
                    for j in by_need:
                        if not s2 >> j & 1:
                            h2 = hs2 + need[j]
                            break
                    f2 = f if f >= g2 else g2
                    if h2 > f2:
                        f2 = h2
                    if f2 >= ub:
                        break
                    ready2 = ready ^ (1 << i)
                    for j in succ[i]:
                        if not pred[j] & ~s2:
                            ready2 |= 1 << j
                    info[s2] = (g2, after, hs2, ready2, s, i)
                    if f2 == f:
                        s, g, live, hs, ready = s2, g2, after, hs2, ready2
                        continue
                    push(heap, (f2, negd, s2, g2))
                    break
                for i, s2, out, after in kids:
                    g2 = g if out <= g else out
                    if g2 >= ub:
                        continue
                    x = info.get(s2)
                    if x is not None and g2 >= x[0]:
                        continue
                    hs2 = hs + kp[i]
                    h2 = 0
                    for j in by_need:
                        if not s2 >> j & 1:
                            h2 = hs2 + need[j]
                            break
                    f2 = f if f >= g2 else g2
                    if h2 > f2:
                        f2 = h2
                    if f2 >= ub:
                        continue
                    ready2 = ready ^ (1 << i)
                    for j in succ[i]:
                        if not pred[j] & ~s2:
                            ready2 |= 1 << j
                    info[s2] = (g2, after, hs2, ready2, s, i)
                    push(heap, (f2, negd, s2, g2))
                break
        if budget is not None:
            budget.spend(work - charged)
        return None, None, True, ub, work


def _bits(m: int):
    """Indices of the set bits of ``m``, ascending."""
    while m:
        low = m & -m
        m ^= low
        yield low.bit_length() - 1


def tree_parents(graph: Graph, *, extra_deps: bool = True) -> list[int] | None:
    """``parent[n]``: the one node reading ``n``'s outputs (-1 if none), when the graph is
    an in-forest; else None.  Extra dependencies are allowed only when the forest
    already implies them (``d`` inside the subtree of ``n``), or ignored when
    ``extra_deps`` is False.  O(N + E).

    Examples
    --------
    >>> g = Graph([[0], [0], [1, 2]], [[1], [2], [3]], size=[0, 4, 4, 1], pinned=[3])
    >>> tree_parents(g)
    [2, 2, -1]
    """
    n_nodes = graph.n_nodes
    parent = [-1] * n_nodes
    for m, outs in enumerate(graph.node_outputs):
        for v in outs:
            for r in graph.readers[v]:
                if parent[m] == -1:
                    parent[m] = r
                elif parent[m] != r:
                    return None
    if extra_deps and any(graph.extra_deps):
        post = [0] * n_nodes        # post[m]: postorder number; subtree(m) = [low[m], post[m]]
        low = [0] * n_nodes
        kids: list[list[int]] = [[] for _ in range(n_nodes)]
        for m in range(n_nodes):
            if parent[m] >= 0:
                kids[parent[m]].append(m)
        count = 0
        for r in range(n_nodes):
            if parent[r] != -1:
                continue
            stack = [(r, 0, count)]
            while stack:
                m, k, first = stack.pop()
                if k < len(kids[m]):
                    stack.append((m, k + 1, first))
                    stack.append((kids[m][k], 0, count))
                else:
                    low[m], post[m] = first, count
                    count += 1
        for m, deps in enumerate(graph.extra_deps):
            if any(not low[m] <= post[d] < post[m] for d in deps):
                return None
    return parent


def tree_schedule(graph: Graph, t: MemTables, budget: Budget | None = None, *,
                  extra_deps: bool = True) -> tuple[list[int], int] | None:
    """Liu's min-peak order of an in-forest, with its peak; None if ``graph`` is not one
    (see :func:`tree_parents`) or ``budget`` runs out.  With ``extra_deps=False`` the
    extra dependencies are ignored: the order may then break them (see
    :func:`repair_order`) and the peak is that of the forest alone.

    Every buffer then belongs to one subtree until that subtree's parent runs, so the
    live bytes are the sum of each subtree's own profile.  A subtree's optimal
    profile is kept as its *hill-valley segments* ``(H1, V1), (H2, V2), ...`` (H1 the
    highest step, V1 the lowest level after it, and so on; H decreasing, V
    increasing).  A node's order interleaves its children's segments by decreasing
    ``H - V`` (Liu 1987) and then runs the node.  The memory model's
    aliases (a view keeps its input's buffer until the view's last reader: the
    buffer stays in the subtree's residual), pinned and unread outputs (in the
    residual forever) and workspace (in the node's own hill) keep this additive,
    so the result is optimal for :func:`~.memory.peak`
    (``tests/test_schedule.py`` checks it against brute force).

    Complexity O(N log N) on typical trees, O(N^2 log N) worst case; one work unit
    per segment handled.

    Examples
    --------
    >>> from theano_lowmem.core.sched_model import mem_tables
    >>> g = Graph([[0], [0], [1], [2], [3, 4]], [[1], [2], [3], [4], [5]],
    ...           size=[0, 8, 8, 1, 1, 1], pinned=[5])
    >>> tree_schedule(g, mem_tables(g))
    ([0, 2, 1, 3, 4], 10)
    """
    parent = tree_parents(graph, extra_deps=extra_deps)
    if parent is None:
        return None
    n_nodes = graph.n_nodes
    limit = budget.left() if budget is not None else 1 << 62
    work = n_nodes
    kids: list[list[int]] = [[] for _ in range(n_nodes)]
    for m in range(n_nodes):
        if parent[m] >= 0:
            kids[parent[m]].append(m)
    # the topmost reader of a buffer (readers form a chain of ancestors) frees it
    topo = graph.topological_order() if extra_deps else _data_topo(parent, kids)
    tpos = [0] * n_nodes
    for i, m in enumerate(topo):
        tpos[m] = i
    freed = [0] * n_nodes
    for b, rd in t.readers.items():
        freed[max(rd, key=tpos.__getitem__)] += t.size[b]
    segs: list[list[tuple[int, int, object]] | None] = [None] * n_nodes

    def merge(children: list[int], stack: list[tuple[int, int, object]]) -> int:
        """Interleave the children's segments by decreasing H - V onto ``stack``; return the level."""
        cands = []
        for j, c in enumerate(children):
            for k, (h, v, rope) in enumerate(segs[c]):
                cands.append((v - h, j, k, h, v, rope))
            segs[c] = None
        cands.sort()
        cur = [0] * len(children)
        total = 0
        for _, j, _, h, v, rope in cands:
            push(stack, total - cur[j] + h, total + v - cur[j], rope)
            total += v - cur[j]
            cur[j] = v
        return total

    def push(stack: list[tuple[int, int, object]], h: int, v: int, rope: object) -> None:
        stack.append((h, v, rope))
        while len(stack) > 1 and (stack[-2][0] <= stack[-1][0] or stack[-2][1] >= stack[-1][1]):
            h2, v2, r2 = stack.pop()
            h1, _, r1 = stack.pop()
            stack.append((max(h1, h2), v2, (r1, r2)))

    for m in topo:
        work += 1 + sum(len(segs[c]) for c in kids[m])
        if work > limit:
            if budget is not None:
                budget.spend(work)
            return None
        stack: list[tuple[int, int, object]] = []
        total = merge(kids[m], stack)
        push(stack, total + t.spike[m], total + t.alloc[m] - freed[m], m)
        segs[m] = stack
    roots = [m for m in range(n_nodes) if parent[m] == -1]
    work += sum(len(segs[r]) for r in roots)
    top: list[tuple[int, int, object]] = []
    merge(roots, top)
    order: list[int] = []
    todo = [r for _, _, r in reversed(top)]
    while todo:
        x = todo.pop()
        if isinstance(x, int):
            order.append(x)
        else:
            todo.append(x[1])
            todo.append(x[0])
    if budget is not None:
        budget.spend(work + n_nodes)
    return order, max((h for h, _, _ in top), default=0)


def _data_topo(parent: list[int], kids: list[list[int]]) -> list[int]:
    """A postorder of the forest ``parent`` (children before parents)."""
    order: list[int] = []
    for r in range(len(parent)):
        if parent[r] != -1:
            continue
        stack = [(r, 0)]
        while stack:
            m, k = stack.pop()
            if k < len(kids[m]):
                stack.append((m, k + 1))
                stack.append((kids[m][k], 0))
            else:
                order.append(m)
    return order


def repair_order(graph: Graph, order: Sequence[int]) -> list[int]:
    """The valid order closest to ``order``: Kahn's algorithm, earliest position in
    ``order`` first.  Returns ``order`` itself when it is already valid.  O((N + E) log N).

    Examples
    --------
    >>> g = Graph([[0], [0]], [[1], [2]], size=[0, 1, 1], extra_deps=[[1], []])
    >>> repair_order(g, [0, 1])
    [1, 0]
    """
    rank = [0] * graph.n_nodes
    for i, n in enumerate(order):
        rank[n] = i
    return graph.topological_order(key=rank.__getitem__)
