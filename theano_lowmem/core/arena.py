"""Offsets in one arena: buffers with disjoint lifetimes share bytes (pure Python).

Input: one :class:`~theano_lowmem.core.memory.Lifetime` per buffer (from
:func:`~theano_lowmem.core.memory.lifetimes` for the order that runs).  Output:
an offset per buffer such that two buffers overlap in bytes only if their
lifetimes are disjoint (``a.end < b.start`` or ``b.end < a.start``: a node never
writes an output over one of its own inputs).

The heap simulator's placement (in execution order, best-fit free chunks) is
made first; unless it is within 1% of the lower bound, two greedy placements are run
and the smallest arena is kept, as XLA's heap simulator does [1]_
(``GlobalDecreasingSizeBestFitHeap``, sorted by size and by live range); the
greedy ones are skipped when their cost (buffers overlapping each buffer in time,
summed) exceeds ``GREEDY_MAX_WORK``:

* **by size** (TFLite's ``GreedyBySizeOffsetCalculation`` [2]_): largest buffer
  first; each goes into the smallest gap, among the buffers already placed that
  overlap it in time, that fits it (best fit), else above them;
* **by live range**: longest lifetime first, same best fit.

The figure of merit is ``size / lower_bound``, the lower bound being the
largest number of bytes live at one step (no placement can use less).

References
----------
.. [1] XLA, ``xla/service/heap_simulator.cc``, ``GlobalDecreasingSizeBestFitHeap``.
.. [2] Y. Pisarchyk, J. Lee, "Efficient Memory Management for Deep Neural Net
   Inference", arXiv:2001.03288, 2020 (greedy by size, offset calculation).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from .memory import Lifetime

#: Byte alignment of every offset (numpy's default is 16; BLAS kernels like 64).
ALIGN = 64
_BLOCK = 32     # steps per block of the time index of _best_fit
#: The greedy best fits run when the sum over buffers of the buffers overlapping them in
#: time is at most this (their cost); beyond, the heap simulator's placement is kept.
GREEDY_MAX_WORK = 400_000
#: ... and only when the heap simulator's arena is more than this factor above the bound.
GREEDY_IF_ABOVE = 1.01


class ArenaError(ValueError):
    """An arena placement in which two live buffers overlap in bytes."""


@dataclass(frozen=True)
class ArenaPlan:
    """Result of :func:`place`.

    Attributes
    ----------
    offset : dict of int to int
        Buffer -> byte offset in the arena (a multiple of ``align``).
    size : int
        Arena bytes (the end of the highest buffer, rounded up to ``align``).
    lower_bound : int
        Largest number of bytes live at one step (sizes as given, not rounded):
        no placement can be smaller.
    method : str
        The strategy that gave the smallest arena (``"heap simulator"``, ``"size"`` or
        ``"live range"``).
    align : int
    """

    offset: dict = field(repr=False)
    size: int
    lower_bound: int
    method: str
    align: int = ALIGN

    @property
    def fragmentation(self) -> float:
        """``size / lower_bound`` (1.0 = no fragmentation; 1.0 when empty)."""
        return self.size / self.lower_bound if self.lower_bound else 1.0


def _round(n: int, align: int) -> int:
    return -(-n // align) * align


def max_live_bytes(lifetimes: Sequence[Lifetime]) -> int:
    """Largest sum of sizes of buffers live at one step (closed intervals)."""
    events: dict[int, int] = {}
    for lt in lifetimes:
        if lt.size > 0:
            events[lt.start] = events.get(lt.start, 0) + lt.size
            events[lt.end + 1] = events.get(lt.end + 1, 0) - lt.size
    best = live = 0
    for t in sorted(events):
        live += events[t]
        best = max(best, live)
    return best


def _best_gap(busy: Sequence[tuple[int, int]], need: int) -> int:
    """Offset of the smallest gap of at least ``need`` bytes between the byte ranges
    ``busy`` (sorted by offset, possibly overlapping), else the end of the highest one."""
    best = None          # (gap size, offset)
    cursor = 0
    for o, ob in busy:
        gap = o - cursor
        if gap >= need and (best is None or gap < best[0]):
            best = (gap, cursor)
        if ob > cursor:
            cursor = ob
    return best[1] if best is not None else cursor


def _best_fit(items: list[Lifetime], align: int) -> tuple[dict[int, int], int]:
    """Place ``items`` in the given priority order, each into the best-fitting gap.

    Placed buffers are indexed by blocks of ``_BLOCK`` steps, so finding the ones
    that overlap a lifetime in time costs what is placed near it, not everything."""
    lo: list[int] = []               # per placed buffer: offset, end byte, steps
    hi: list[int] = []
    first: list[int] = []
    last: list[int] = []
    blocks: dict[int, list[int]] = {}
    offset: dict[int, int] = {}
    top = 0
    for lt in items:
        need = _round(lt.size, align)
        s, e = lt.start, lt.end
        b0, b1 = s // _BLOCK, e // _BLOCK
        if b0 == b1:
            near = blocks.get(b0, ())
        else:
            near = set()
            for k in range(b0, b1 + 1):
                near.update(blocks.get(k, ()))
        busy = sorted([(lo[i], hi[i]) for i in near if first[i] <= e and s <= last[i]])
        off = _best_gap(busy, need)
        offset[lt.buffer] = off
        n = len(lo)
        for k in range(b0, b1 + 1):
            if k in blocks:
                blocks[k].append(n)
            else:
                blocks[k] = [n]
        lo.append(off)
        hi.append(off + need)
        first.append(s)
        last.append(e)
        if off + need > top:
            top = off + need
    return offset, top


def _heap_sim(items: list[Lifetime], align: int) -> tuple[dict[int, int], int]:
    """XLA's heap simulator: walk the steps, free what died, allocate what starts into the
    smallest free chunk that fits (else at the top).  O(n x free chunks)."""
    starts: dict[int, list[Lifetime]] = {}
    for lt in items:
        starts.setdefault(lt.start, []).append(lt)
    ends: dict[int, list[tuple[int, int]]] = {}
    free: list[list[int]] = []          # [offset, size], sorted by offset, coalesced
    offset: dict[int, int] = {}
    top = 0
    for t in sorted(set(starts) | {lt.end + 1 for lt in items}):
        for off, size in ends.pop(t, ()):          # died at t - 1: free before t allocates
            free.append([off, size])
            free.sort()
            merged: list[list[int]] = []
            for ch in free:
                if merged and merged[-1][0] + merged[-1][1] == ch[0]:
                    merged[-1][1] += ch[1]
                else:
                    merged.append(ch)
            free = merged
        for lt in sorted(starts.get(t, ()), key=lambda x: (-x.size, x.buffer)):
            need = _round(lt.size, align)
            best = None
            for i, (o, sz) in enumerate(free):
                if sz >= need and (best is None or sz < free[best][1]):
                    best = i
            if best is not None:
                off = free[best][0]
                free[best][0] += need
                free[best][1] -= need
                if not free[best][1]:
                    del free[best]
            elif free and free[-1][0] + free[-1][1] == top:    # grow the top chunk
                off = free.pop()[0]
                top = off + need
            else:
                off = top
                top += need
            offset[lt.buffer] = off
            ends.setdefault(lt.end + 1, []).append((off, need))
    return offset, top


def _overlap_work(items: Sequence[Lifetime]) -> int:
    """Sum over buffers of how many buffers overlap it in time (the best-fit cost)."""
    import bisect
    starts = sorted(lt.start for lt in items)
    ends = sorted(lt.end for lt in items)
    return sum(bisect.bisect_right(starts, lt.end) - bisect.bisect_left(ends, lt.start)
               for lt in items)


def place(lifetimes: Sequence[Lifetime], *, align: int = ALIGN, greedy: bool = True) -> ArenaPlan:
    """Offsets for ``lifetimes`` in one arena (the smallest of up to three placements).

    Buffers of size 0 get offset 0 and reserve nothing.

    Parameters
    ----------
    lifetimes : sequence of Lifetime
        Distinct ``buffer`` ids; ``start <= end`` are steps of the executed order.
    align : int
        Every offset is a multiple of ``align`` and every buffer takes its size
        rounded up to ``align``.
    greedy : bool
        Run the greedy best fits when the heap simulator is above ``GREEDY_IF_ABOVE``
        (False: the heap simulator's placement only, for a placement about to be
        redone).

    Examples
    --------
    >>> lts = [Lifetime(0, 0, 1, 100), Lifetime(1, 1, 2, 100), Lifetime(2, 2, 3, 100)]
    >>> p = place(lts)
    >>> p.offset[0] == p.offset[2] != p.offset[1], p.size, p.lower_bound
    (True, 256, 200)
    """
    if align <= 0:
        raise ValueError(f"align must be positive, got {align}")
    items = [lt for lt in lifetimes if lt.size > 0]
    lower = max_live_bytes(items)
    offset, top = _heap_sim(items, align)
    best = (offset, top, "heap simulator")
    if greedy and best[1] > GREEDY_IF_ABOVE * _round(lower, align) and \
            _overlap_work(items) <= GREEDY_MAX_WORK:
        for method, key in (("size", lambda lt: (-lt.size, lt.start, lt.buffer)),
                            ("live range", lambda lt: (lt.start - lt.end, -lt.size, lt.start,
                                                       lt.buffer))):
            offset, top = _best_fit(sorted(items, key=key), align)
            if top < best[1]:
                best = (offset, top, method)
    offset, top, method = best if best is not None else ({}, 0, "size")
    offset.update((lt.buffer, 0) for lt in lifetimes if lt.size <= 0)
    return ArenaPlan(offset, top, lower, method, align)


def check_arena(lifetimes: Sequence[Lifetime], plan: ArenaPlan) -> None:
    """Raise :class:`ArenaError` unless every buffer fits in the arena, is aligned,
    and no two buffers live at a common step overlap in bytes (O(n^2))."""
    lts = [lt for lt in lifetimes if lt.size > 0]
    for lt in lifetimes:
        if lt.buffer not in plan.offset:
            raise ArenaError(f"buffer {lt.buffer} has no offset")
    for lt in lts:
        o = plan.offset[lt.buffer]
        if o % plan.align or o < 0 or o + lt.size > plan.size:
            raise ArenaError(f"buffer {lt.buffer} at [{o}, {o + lt.size}) is misaligned or "
                             f"outside the arena of {plan.size} B")
    for i, a in enumerate(lts):
        oa = plan.offset[a.buffer]
        for b in lts[i + 1:]:
            if a.overlaps(b):
                ob = plan.offset[b.buffer]
                if oa < ob + b.size and ob < oa + a.size:
                    raise ArenaError(f"buffers {a.buffer} (steps {a.start}-{a.end}) and "
                                     f"{b.buffer} (steps {b.start}-{b.end}) are live together "
                                     f"and overlap in bytes")


# --------------------------------------------------------------------------- lazy graphs
#: The second best fit over a conflict graph (by writer order) runs for at most this many
#: buffers (its cost grows with buffers x conflicts; on the stochastic-depth ResNet, 525
#: buffers, the first fit was the smaller one).
CONFLICT_SECOND_MAX = 300

def _bits(x: int):
    """The set bits of ``x``, lowest first."""
    while x:
        low = x & -x
        yield low.bit_length() - 1
        x ^= low


def clique_bound(sizes: Sequence[int], conflicts: Sequence[int], active: Sequence[int],
                 seeds: int = 64) -> int:
    """A lower bound on any placement of ``active``: the bytes of a set of buffers that
    pairwise conflict (they need disjoint bytes), grown greedily, largest first, from
    each of the ``seeds`` largest buffers (among equal sizes, the ones with the most
    conflicts first: on resnet_sd_train the best seed was the 74th of 200 equal-sized
    buffers by index, bound 21.8 -> 22.8 MB for the same cost)."""
    mask = 0
    for k in active:
        mask |= 1 << k
    by_size = sorted(active, key=lambda k: (-sizes[k], -(conflicts[k] & mask).bit_count(), k))
    best = 0
    for seed in by_size[:seeds]:
        cand, total = conflicts[seed] & mask, sizes[seed]
        for k in by_size:
            if cand >> k & 1:
                total += sizes[k]
                cand &= conflicts[k]
        best = max(best, total)
    return best


def bit_lists(conflicts: Sequence[int]) -> list[list[int]]:
    """Each bit set as the sorted list of its set bits (one pass over its binary digits)."""
    out = []
    for x in conflicts:
        digits = bin(x)[:1:-1]
        out.append([i for i, ch in enumerate(digits) if ch == "1"])
    return out


def _best_fit_conflicts(items: Sequence[int], sizes: Sequence[int],
                        lists: Sequence[Sequence[int]], align: int) -> tuple[dict[int, int], int]:
    """Best-fit placement of ``items`` in that priority order, each in the smallest gap among
    the placed buffers it conflicts with (``lists[k]``) that fits it, else above them."""
    offset: dict[int, int] = {}
    span: list = [None] * len(sizes)         # (offset, end) of each placed buffer
    top = 0
    for k in items:
        need = _round(sizes[k], align)
        busy = [span[j] for j in lists[k]]
        busy = sorted(b for b in busy if b is not None)
        off = _best_gap(busy, need)
        offset[k], span[k] = off, (off, off + need)
        top = max(top, off + need)
    return offset, top


def place_conflicts(ids: Sequence[int], sizes: Sequence[int], conflicts: Sequence[int],
                    active: Sequence[int], *, order: Sequence[int] | None = None,
                    lists: Sequence[Sequence[int]] | None = None,
                    align: int = ALIGN, greedy: bool = True) -> ArenaPlan:
    """Offsets for buffers given by a conflict graph instead of lifetimes (lazy graphs).

    Parameters
    ----------
    ids : sequence of int
        Buffer id of each index (the offsets are keyed by id).
    sizes : sequence of int
        Bytes per index.
    conflicts : sequence of int
        Per index, the bit set of indices it may be live with
        (:func:`theano_lowmem.core.conflicts.conflict_sets`).
    active : sequence of int
        The indices to place (the others are ignored).
    order : sequence of int, optional
        A priority by position (e.g. the writers' topological order): a second
        best fit in that order is tried, as the "live range" placement is, when the
        first is more than ``GREEDY_IF_ABOVE`` over the lower bound and there are at
        most ``CONFLICT_SECOND_MAX`` buffers.
    lists : sequence of sequence of int, optional
        ``bit_lists(conflicts)``, if the caller keeps it (it depends only on the graph).
    greedy : bool
        False: the first best fit only (for a placement about to be redone).

    The lower bound is :func:`clique_bound`; the method is ``"size (conflicts)"`` or
    ``"order (conflicts)"``.

    Examples
    --------
    >>> # 0 and 2 may share, 1 conflicts with both
    >>> p = place_conflicts([10, 11, 12], [100, 100, 100], [0b010, 0b101, 0b010], [0, 1, 2])
    >>> p.offset[10] == p.offset[12] != p.offset[11], p.size, p.lower_bound
    (True, 256, 200)
    """
    if align <= 0:
        raise ValueError(f"align must be positive, got {align}")
    items = [k for k in active if sizes[k] > 0]
    mask = 0
    for k in items:
        mask |= 1 << k
    confl = [conflicts[k] & mask if mask >> k & 1 else 0 for k in range(len(sizes))]
    if lists is None:
        lists = bit_lists(confl)
    lower = clique_bound(sizes, confl, items)
    offset, top = _best_fit_conflicts(sorted(items, key=lambda k: (-sizes[k], k)), sizes,
                                      lists, align)
    method = "size (conflicts)"
    if greedy and order is not None and top > GREEDY_IF_ABOVE * _round(lower, align) and \
            len(items) <= CONFLICT_SECOND_MAX:
        pos = {k: i for i, k in enumerate(order)}
        seq = sorted(items, key=lambda k: (pos.get(k, len(pos)), -sizes[k], k))
        o2, t2 = _best_fit_conflicts(seq, sizes, lists, align)
        if t2 < top:
            offset, top, method = o2, t2, "order (conflicts)"
    out = {ids[k]: off for k, off in offset.items()}
    out.update((ids[k], 0) for k in active if sizes[k] <= 0)
    return ArenaPlan(out, top, lower, method, align)


def check_arena_conflicts(ids: Sequence[int], sizes: Sequence[int], conflicts: Sequence[int],
                          active: Sequence[int], plan: ArenaPlan) -> None:
    """Raise :class:`ArenaError` unless every active buffer is placed, aligned, inside the
    arena, and no two conflicting buffers overlap in bytes."""
    act = set(active)
    for k in act:
        if ids[k] not in plan.offset:
            raise ArenaError(f"buffer {ids[k]} has no offset")
        o = plan.offset[ids[k]]
        if sizes[k] > 0 and (o % plan.align or o < 0 or o + sizes[k] > plan.size):
            raise ArenaError(f"buffer {ids[k]} at [{o}, {o + sizes[k]}) is misaligned or "
                             f"outside the arena of {plan.size} B")
    for k in act:
        if sizes[k] <= 0:
            continue
        ok = plan.offset[ids[k]]
        for j in _bits(conflicts[k]):
            if j in act and sizes[j] > 0 and j != k:
                oj = plan.offset[ids[j]]
                if ok < oj + sizes[j] and oj < ok + sizes[k]:
                    raise ArenaError(f"buffers {ids[k]} and {ids[j]} may be live together "
                                     f"and overlap in bytes")
