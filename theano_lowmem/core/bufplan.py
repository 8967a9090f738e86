"""Which buffers share a storage cell: interval colouring of lifetimes (pure Python).

Input: one :class:`~theano_lowmem.core.memory.Lifetime` per buffer root (from
:func:`~theano_lowmem.core.memory.lifetimes`) and a sharing key per value
(dtype + provably equal shape, computed by the glue; ``None`` = never share).
A value may take over a cell only if the previous occupant's lifetime ended
*strictly* before the new value's producer step (``prev.end < new.start``), so
a node never writes into one of its own inputs.  Values with equal keys form a
class; within a class, lifetimes are intervals and a greedy colouring in order
of start step uses exactly as many cells as the class has values live at once
(optimal for interval graphs).  This is TFLite's ``EqualityAssignment`` [1]_.

References
----------
.. [1] Y. Pisarchyk, J. Lee, "Efficient Memory Management for Deep Neural Net
   Inference", arXiv:2001.03288, 2020.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Collection, Hashable, Mapping, Sequence

from .memory import Lifetime


class PlanError(ValueError):
    """A buffer plan that would let two live values (or an excluded one) share a cell."""


@dataclass(frozen=True)
class BufferPlan:
    """Result of :func:`plan_buffers`.

    Attributes
    ----------
    cell_of : dict of int to int
        Value -> the representative value whose cell it uses, for values that
        moved only (a representative never moves itself).
    n_cells_before, n_cells_after : int
        Cells (buffer roots) without and with sharing.
    bytes_before, bytes_after : int
        Bytes held when nothing is freed (``allow_gc=False``) without and with
        sharing; a cell holds its largest occupant.
    """

    cell_of: dict[int, int]
    n_cells_before: int
    n_cells_after: int
    bytes_before: int
    bytes_after: int

    def cells(self) -> dict[int, list[int]]:
        """``cells()[rep]``: the values that moved into ``rep``'s cell, sorted (``rep`` excluded)."""
        out: dict[int, list[int]] = {}
        for v, rep in sorted(self.cell_of.items()):
            out.setdefault(rep, []).append(v)
        return out


def plan_buffers(lifetimes: Sequence[Lifetime], key: Mapping[int, Hashable | None], *,
                 excluded: Collection[int] = (),
                 prefer: Mapping[int, Hashable | None] | None = None) -> BufferPlan:
    """Assign buffers with disjoint lifetimes and equal keys to shared cells.

    Parameters
    ----------
    lifetimes : sequence of Lifetime
        One per buffer root (``Lifetime.buffer`` is the value id).
    key : mapping int -> hashable or None
        Sharing class of each value; only equal non-``None`` keys share.  A
        value missing from ``key`` never shares.
    excluded : collection of int
        Values that keep their own cell (inputs, outputs, borrowed storage...).
    prefer : mapping int -> hashable or None, optional
        Secondary key: among the free cells of a class, take one whose last
        occupant has the same non-``None`` ``prefer`` key if there is one (e.g.
        the same provable shape, so that the array left in the cell fits).
        Does not change the number of cells.

    Returns
    -------
    BufferPlan

    Notes
    -----
    Per class, values are taken by ``(start, buffer)``; a value reuses the free
    cell whose last occupant ended most recently (ties: lowest representative
    id; cells whose last occupant has the same ``prefer`` key first), else
    opens a cell.  Cells per class = the maximum number of values of
    the class live at one step.  O(B log B) for B buffers.

    Examples
    --------
    >>> lts = [Lifetime(1, 0, 1, 8), Lifetime(2, 1, 2, 8), Lifetime(3, 2, 3, 8)]
    >>> p = plan_buffers(lts, {1: "f8", 2: "f8", 3: "f8"})
    >>> p.cell_of, p.n_cells_after, p.bytes_after
    ({3: 1}, 2, 16)
    """
    excluded = frozenset(excluded)
    classes: dict[Hashable, list[Lifetime]] = {}
    for lt in lifetimes:
        k = key.get(lt.buffer)
        if k is not None and lt.buffer not in excluded:
            classes.setdefault(k, []).append(lt)
    prefer = prefer or {}
    cell_of: dict[int, int] = {}
    size_of_cell: dict[int, int] = {lt.buffer: lt.size for lt in lifetimes}
    for members in classes.values():
        busy: list[tuple[int, int, int]] = []   # heap of (end of occupant, rep, occupant)
        free: list[tuple[int, int]] = []        # heap of (-end of last occupant, rep)
        free_pref: dict[Hashable, list[tuple[int, int]]] = {}   # same, per prefer key
        free_end: dict[int, int] = {}           # free cell -> end of its last occupant
        for lt in sorted(members, key=lambda m: (m.start, m.buffer)):
            while busy and busy[0][0] < lt.start:
                end, rep, occ = heapq.heappop(busy)
                heapq.heappush(free, (-end, rep))
                free_end[rep] = end
                if prefer.get(occ) is not None:
                    heapq.heappush(free_pref.setdefault(prefer[occ], []), (-end, rep))
            rep = _pop_free(free_pref.get(prefer.get(lt.buffer)), free_end) \
                if prefer.get(lt.buffer) is not None else None
            if rep is None:
                rep = _pop_free(free, free_end)
            if rep is not None:
                cell_of[lt.buffer] = rep
                size_of_cell[rep] = max(size_of_cell[rep], lt.size)
                del size_of_cell[lt.buffer]
            else:
                rep = lt.buffer
            heapq.heappush(busy, (lt.end, rep, lt.buffer))
    return BufferPlan(cell_of=dict(sorted(cell_of.items())), n_cells_before=len(lifetimes),
                      n_cells_after=len(size_of_cell),
                      bytes_before=sum(lt.size for lt in lifetimes),
                      bytes_after=sum(size_of_cell.values()))


def _pop_free(heap: list[tuple[int, int]] | None, free_end: dict[int, int]) -> int | None:
    """Pop the best still-free cell of ``heap`` and mark it busy.

    Entries are ``(-end, rep)``; one is stale (lazy deletion) unless ``rep`` is
    free since that very ``end`` (a cell's successive occupants end strictly later).
    """
    while heap:
        neg_end, rep = heapq.heappop(heap)
        if free_end.get(rep) == -neg_end:
            del free_end[rep]
            return rep
    return None


def check_plan(lifetimes: Sequence[Lifetime], plan: BufferPlan, *, excluded: Collection[int] = (),
               key: Mapping[int, Hashable | None] | None = None) -> None:
    """Raise :class:`PlanError` unless ``plan`` is safe for ``lifetimes``.

    Checked: every moved value and representative is a planned buffer, a
    representative does not move itself, no excluded value takes part, values
    of one cell have pairwise disjoint lifetimes with strict inequality
    (``a.end < b.start``), and, when ``key`` is given, equal non-``None`` keys.

    Examples
    --------
    >>> lts = [Lifetime(1, 0, 1, 8), Lifetime(2, 1, 2, 8)]
    >>> check_plan(lts, BufferPlan({2: 1}, 2, 1, 16, 8))
    Traceback (most recent call last):
    ...
    theano_lowmem.core.bufplan.PlanError: values 1 (steps 0-1) and 2 (steps 1-2) share a cell but are both live at step 1
    """
    by_value = {lt.buffer: lt for lt in lifetimes}
    excluded = frozenset(excluded)
    cells: dict[int, list[Lifetime]] = {}
    for v, rep in plan.cell_of.items():
        for x in (v, rep):
            if x not in by_value:
                raise PlanError(f"value {x} is in the plan but has no lifetime (not a buffer root)")
            if x in excluded:
                raise PlanError(f"excluded value {x} shares a cell (with {rep if x == v else v})")
        if rep in plan.cell_of:
            raise PlanError(f"representative {rep} of value {v} itself moved to {plan.cell_of[rep]}")
        if key is not None and (key.get(v) is None or key.get(v) != key.get(rep)):
            raise PlanError(f"values {rep} and {v} share a cell but have keys "
                            f"{key.get(rep)!r} and {key.get(v)!r}")
        cells.setdefault(rep, [by_value[rep]]).append(by_value[v])
    for members in cells.values():
        members.sort(key=lambda m: (m.start, m.buffer))
        for a, b in zip(members, members[1:]):
            if not a.end < b.start:
                raise PlanError(f"values {a.buffer} (steps {a.start}-{a.end}) and {b.buffer} "
                                f"(steps {b.start}-{b.end}) share a cell but are both live at "
                                f"step {b.start}")
    if plan.n_cells_after != plan.n_cells_before - len(plan.cell_of):
        raise PlanError(f"plan counts {plan.n_cells_after} cells, but {plan.n_cells_before} buffers "
                        f"minus {len(plan.cell_of)} moved leaves "
                        f"{plan.n_cells_before - len(plan.cell_of)}")
