"""One arena per call-time plan: the views handed to the ops (glue over :mod:`core.arena`).

For a plan (exact sizes, the order its VM runs), every *arena value* (an
intermediate buffer root the caller can never see: see
``LowMemLinker._never_shared``) gets an offset in one allocation
(:func:`theano_lowmem.core.arena.place`), and its storage cell gets a
C-contiguous, 64-byte-aligned numpy view ``arena[off:off + nbytes]`` of its
exact shape and dtype before the call runs.  Ops that write into a fitting
array already in their output cell then allocate nothing:

* C ``Elemwise`` calls ``PyArray_Resize`` on the array in its cell
  (elemwise_cgen.py:158-170); with the same number of elements numpy only
  rewrites dims and strides (a view of exact shape keeps both), with another
  size it refuses to resize a view (it does not own its data) and the op
  allocates a new array: never a write outside the view.
* Other C ops (CAReduce, Dot22, Gemv, CorrMM, Pool, Alloc...) reuse the array
  when its dims (and, for BLAS, strides) fit, else allocate.
* Python ``perform`` ops mostly allocate: they replace the view.

With ``allow_gc=False`` the views stay in the cells between calls, so they are
put there once per plan switch.  After the first call of a plan, the values
whose cell no longer holds their view (their op allocated its own array) are
the plan's *allocators*: the arena is placed again without them, so it reserves
no bytes they never use, and their cells are emptied after every call (an
allocator allocates on every call anyway: the array it left would only be held).  With ``allow_gc=True`` (flag ``lowmem_arena=always``)
the VM empties the cells during the call, so the views are put back before
every call and the arena stays allocated between calls.

When a plan stops being the current one, its views are taken out of the cells
and its arena is released: a cached plan holds offsets, not memory.
Design record: docs/design/0006-arena.md.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .core.arena import ALIGN, ArenaPlan, check_arena, place
from .core.memory import Lifetime


def new_arena(nbytes: int, align: int = ALIGN) -> np.ndarray:
    """A uint8 array of ``nbytes`` whose first byte is ``align``-aligned."""
    raw = np.empty(nbytes + align, dtype=np.uint8)
    skip = (-raw.ctypes.data) % align
    return raw[skip:skip + nbytes]


class PlanArena:
    """The arena of one plan: placement, then (while current) the buffer and its views.

    Parameters
    ----------
    lifetimes : dict of int to Lifetime
        Arena candidates in the plan's order (value id -> lifetime).
    cells : dict of int to list
        Value id -> its storage cell.
    group_cells : dict of int to list of list
        Value id -> the cells of every value sharing its buffer (views, inplace
        outputs), itself included.
    shapes : dict of int to tuple
        Value id -> exact shape.
    dtypes : dict of int to numpy dtype
    check : bool
        Check the placement (:func:`~theano_lowmem.core.arena.check_arena`).
    """

    def __init__(self, lifetimes: dict, cells: dict, group_cells: dict, shapes: dict,
                 dtypes: dict, check: bool = False) -> None:
        self.lifetimes = lifetimes
        self.cells, self.group_cells = cells, group_cells
        self.shapes, self.dtypes = shapes, dtypes
        self.check = check
        self.allocators: tuple[int, ...] = ()
        self.allocator_cells: list = []
        self.probed = False
        self.buffer = None
        self.views: list | None = None
        self.installed = False
        self.plan = self._place(lifetimes)

    def _place(self, lifetimes: dict) -> ArenaPlan:
        lts = list(lifetimes.values())
        plan = place(lts)
        if self.check:
            check_arena(lts, plan)
        return plan

    @property
    def ids(self) -> tuple[int, ...]:
        """The values that get arena bytes (allocators excluded)."""
        return tuple(self.lifetimes)

    @property
    def allocator_bytes(self) -> int:
        """Bytes of the allocators' own arrays (held with ``allow_gc=False``)."""
        return sum(int(np.prod(self.shapes[v], dtype=np.int64)) * self.dtypes[v].itemsize
                   for v in self.allocators)

    def _views(self) -> list:
        if self.views is None:
            buf = new_arena(self.plan.size)
            views = []
            for v in self.lifetimes:
                off = self.plan.offset[v]
                views.append((self.cells[v], np.ndarray(self.shapes[v], dtype=self.dtypes[v],
                                                        buffer=buf, offset=off)))
            self.buffer, self.views = buf, views
        return self.views

    def refill(self) -> None:
        """Put the views in their cells (allocating the arena if released)."""
        for c, view in self._views():
            c[0] = view
        self.installed = True

    def release(self) -> None:
        """Forget the buffer and the views (the caller empties the cells)."""
        self.buffer = self.views = None
        self.installed = False

    def probe(self, all_cells: Sequence[list]) -> bool:
        """After a ``allow_gc=False`` call: find the allocators and place again without
        them.  Returns True if the placement changed (the new views are installed)."""
        self.probed = True
        owner = _owner(self.buffer)
        allocators = []
        for v, (c, view) in zip(self.lifetimes, self.views or ()):
            a = c[0]
            if a is not view and (owner is None or _owner(a) is not owner):
                allocators.append(v)
        if not allocators:
            return False
        self.allocators = tuple(allocators)
        self.allocator_cells = [c for v in allocators for c in self.group_cells[v]]
        drop = set(allocators)
        self.lifetimes = {v: lt for v, lt in self.lifetimes.items() if v not in drop}
        self.plan = self._place(self.lifetimes)
        self.release()
        for c in all_cells:
            c[0] = None
        self.refill()
        return True

    def summary(self) -> dict:
        """Figures for reports (all modelled: bytes the plan reserves)."""
        return dict(arena_bytes=self.plan.size, arena_lower_bound=self.plan.lower_bound,
                    arena_method=self.plan.method, arena_values=len(self.lifetimes),
                    allocators=len(self.allocators), allocator_bytes=self.allocator_bytes,
                    probed=self.probed)


def _owner(a):
    """The array that owns ``a``'s data (``a`` itself if it owns it; None if not an array)."""
    if not isinstance(a, np.ndarray):
        return None
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def arena_lifetimes(lts: Sequence[Lifetime], ids: Sequence[int]) -> dict:
    """The lifetimes of ``ids`` (value ids), in the order of ``ids``."""
    by = {lt.buffer: lt for lt in lts}
    return {v: by[v] for v in ids if v in by}
