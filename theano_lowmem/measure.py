"""Measured memory of real calls (as opposed to the modelled peak of :mod:`core.memory`).

numpy (>= 1.13) reports every data buffer it allocates to ``tracemalloc``
(domain ``np.lib.tracemalloc_domain``), and Theano's C code allocates through
numpy's C API, so a ``tracemalloc`` peak taken around one call sees every array
the call creates.  It also sees Python objects (a few KB) and misses arrays
created before tracing started (the inputs) and OpenBLAS's private buffers.
"""
from __future__ import annotations

import gc
import tracemalloc
from dataclasses import dataclass

import numpy as np

NUMPY_DOMAIN = int(getattr(np.lib, "tracemalloc_domain", 389047))


@dataclass(frozen=True)
class Measured:
    """One real call.

    Attributes
    ----------
    peak : int
        Measured: bytes above the pre-call level at the call's high-water mark
        (tracemalloc, all allocations: numpy buffers plus a few KB of Python objects).
    retained : int
        Measured: numpy bytes still allocated after the call that were not
        before it (outputs plus what ``allow_gc=False`` keeps in cells).
    held : int
        Bytes of distinct arrays left in the function's intermediate storage
        cells after the call (inputs and outputs excluded).
    held_before : int
        The same, before the call (with ``allow_gc=False``, last call's arrays).
    """

    peak: int
    retained: int
    held: int
    held_before: int = 0

    @property
    def in_use(self) -> int:
        """Intermediate bytes in use at the call's high-water mark: what the
        function held before the call plus what the call allocated at its peak."""
        return self.held_before + self.peak


def _numpy_bytes() -> int:
    snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.DomainFilter(True, NUMPY_DOMAIN)])
    return sum(t.size for t in snap.traces)


def _owner(a):
    while isinstance(getattr(a, "base", None), np.ndarray):
        a = a.base
    return a


def _alias_root(var):
    """Follow ``view_map``/``destroy_map`` from ``var`` to the variable owning its data."""
    while var.owner is not None:
        idx = var.owner.outputs.index(var)
        table = {**(getattr(var.owner.op, "view_map", None) or {}),
                 **(getattr(var.owner.op, "destroy_map", None) or {})}
        if not table.get(idx):
            break
        var = var.owner.inputs[table[idx][0]]
    return var


def held_bytes(f) -> int:
    """Distinct array bytes held in ``f``'s intermediate cells (not inputs or outputs).

    Views count the array that owns their data once; data owned by an input,
    a constant or a returned output (e.g. ``W.T`` of a shared ``W``, or ``x.T``
    of an input whose cell ``Function.__call__`` empties after the call,
    function_module.py:932-936) is not counted.
    """
    fgraph = f.maker.fgraph
    skip = set(fgraph.inputs) | set(fgraph.outputs)
    skip |= {v for v in f.fn.storage_map if v.owner is not None and _alias_root(v) in skip}
    foreign = {id(_owner(cell[0])) for var, cell in f.fn.storage_map.items()
               if (var in skip or var.owner is None) and isinstance(cell[0], np.ndarray)}
    owners: dict[int, int] = {}
    for var, cell in f.fn.storage_map.items():
        if var in skip or var.owner is None:
            continue
        val = cell[0]
        if isinstance(val, np.ndarray):
            own = _owner(val)
            if id(own) not in foreign:
                owners[id(own)] = own.nbytes
    return sum(owners.values())


def measure_call(f, *args, **kwargs) -> Measured:
    """Call ``f(*args, **kwargs)`` once under tracemalloc and return what it cost.

    Inputs should be created before this call (they are not counted).  The
    result of the call is dropped after measuring ``retained``.

    Examples
    --------
    >>> import numpy as np, theano, theano.tensor as T
    >>> x = T.vector('x'); f = theano.function([x], (T.exp(x) * 2).sum())
    >>> m = measure_call(f, np.ones(100000))
    >>> 800000 <= m.peak < 900000      # exp's output and the mul's, fused: one temporary
    True
    """
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    try:
        gc.collect()
        held_before = held_bytes(f)
        before_np = _numpy_bytes()
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        out = f(*args, **kwargs)
        peak = tracemalloc.get_traced_memory()[1] - base
        retained = _numpy_bytes() - before_np
        del out
        return Measured(peak=max(peak, 0), retained=retained, held=held_bytes(f),
                        held_before=held_before)
    finally:
        if started:
            tracemalloc.stop()
