"""Every tensor value's shape at call time, as a tape over the graph inputs' cells.

ShapeFeature gives each intermediate's shape as a graph of the inputs' shapes
(theano/tensor/opt.py, ``ShapeFeature``); :class:`ShapeProgram` flattens those graphs
once per function into a tape and runs it on the numbers a call puts in the input
cells.  :func:`signature_reader` reads a call's shape signature.  Used by
:mod:`theano_lowmem.callplan` (design record 0005).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from theano.compile.ops import Shape, Shape_i
from theano.gof import Constant
from theano.ifelse import IfElse
from theano.tensor.type import TensorType

from .model import is_shape_arithmetic as _is_shape_arithmetic
from .model import is_shape_value as _is_shape_arithmetic_value
from .model import performer as _performer

_UNKNOWN = object()


class ShapeProgram:
    """Every tensor value's shape as a tape over the graph inputs' cells.

    ShapeFeature (theano/tensor/opt.py) gives each dimension as a scalar graph
    over constants, ``Shape_i`` of graph inputs and a few scalar ops.  The tape
    holds those graphs once, in dependency order, with integer slots; running
    it calls ``op.perform`` on numpy int64 scalars, so the numbers are exactly
    those Theano's own shape code computes.  A dimension that needs a value no
    input gives (``Shape_i`` of an intermediate without ``infer_shape``: a
    data-dependent size such as ``nonzero``) stays unknown.

    Parameters
    ----------
    fgraph : FunctionGraph
    variables : sequence of Variable
        The values to size (the model's value ids).
    shape_of : mapping
        ``ShapeFeature.shape_of``.
    """

    def __init__(self, fgraph, variables: Sequence[Any], shape_of) -> None:
        self.n_inputs = len(fgraph.inputs)
        input_pos = {v: i for i, v in enumerate(fgraph.inputs)}
        self.slot_of: dict = {}
        self.init: list = []                 # slot -> constant value, or None
        self.steps: list = []                # (node, arg slots, out slots, copy args)
        self.dim_leaves: list = []           # (slot, input index, dim)
        self.value_leaves: list = []         # (slot, input index)
        self.shape_inputs: set[int] = set()  # inputs whose shapes the graphs read
        self.value_inputs: set[int] = set()  # inputs whose values the graphs read
        self._input_pos = input_pos
        self._shape_of = shape_of
        self.dims: list = []                 # per value: tuple of slots, or None (non-tensor)
        for var in variables:
            if not isinstance(var.type, TensorType):
                self.dims.append(None)
            elif var in input_pos:
                self.dims.append(tuple(self._dim_leaf(input_pos[var], i)
                                       for i in range(var.type.ndim)))
            elif shape_of.get(var) is None:
                self.dims.append((-1,) * var.type.ndim)
            else:
                self.dims.append(tuple(self._visit(d) for d in shape_of[var]))
        self.n_slots = len(self.init)

    def _new_slot(self, value=None) -> int:
        self.init.append(value)
        return len(self.init) - 1

    def _dim_leaf(self, pos: int, i: int) -> int:
        key = ("dim", pos, i)
        if key not in self.slot_of:
            self.slot_of[key] = s = self._new_slot()
            self.dim_leaves.append((s, pos, i))
            self.shape_inputs.add(pos)
        return self.slot_of[key]

    def _visit(self, root) -> int:
        """Slot of shape scalar ``root`` (-1: unknown), adding its graph to the tape."""
        stack, expanded = [root], set()    # expanded: on the current path, args pushed
        while stack:
            var = stack[-1]
            if var in self.slot_of:
                stack.pop()
                expanded.discard(var)
                continue
            todo = self._leaf_or_args(var)
            if not todo:                   # a leaf, or its args are done
                continue
            for t in todo:
                if t in expanded:          # a cycle through stale ShapeFeature entries
                    self.slot_of[t] = -1
            expanded.add(var)
            stack.extend(t for t in todo if t not in self.slot_of)
        return self.slot_of[root]

    def _leaf_or_args(self, var) -> list:
        """Set ``slot_of[var]`` if it is a leaf or its args are done; else return the args."""
        pos = self._input_pos
        if isinstance(var, Constant):
            self.slot_of[var] = self._new_slot(np.asarray(var.data))
            return []
        owner = var.owner
        if owner is None:
            if var in pos and _is_shape_arithmetic_value(var):
                self.slot_of[var] = s = self._new_slot()
                self.value_leaves.append((s, pos[var]))
                self.value_inputs.add(pos[var])
            else:
                self.slot_of[var] = -1
            return []
        if isinstance(owner.op, Shape_i):
            x, i = owner.inputs[0], owner.op.i
            if x in pos:
                self.slot_of[var] = self._dim_leaf(pos[x], i)
                return []
            sym = self._shape_of.get(x)
            if sym is None or i >= len(sym) or sym[i] is var:
                self.slot_of[var] = -1     # data-dependent (no infer_shape)
                return []
            if sym[i] not in self.slot_of:
                return [sym[i]]
            self.slot_of[var] = self.slot_of[sym[i]]
            return []
        args = list(owner.inputs)
        if isinstance(owner.op, Shape):       # the whole shape vector of x
            x = args[0]
            if x in pos:
                dims = [self._dim_leaf(pos[x], i) for i in range(x.type.ndim)]
            else:
                sym = self._shape_of.get(x)
                if sym is None or any(d is var for d in sym):
                    self.slot_of[var] = -1
                    return []
                todo = [d for d in sym if d not in self.slot_of]
                if todo:
                    return todo
                dims = [self.slot_of[d] for d in sym]
            self.slot_of[var] = s = self._new_slot()
            self.steps.append(("shape", dims, s))
            return []
        if isinstance(owner.op, IfElse):      # ShapeFeature's shape of an ifelse output
            return self._ifelse(owner)
        if not _is_shape_arithmetic(owner):   # a computation on data, not on sizes
            self.slot_of[var] = -1
            return []
        todo = [a for a in args if a not in self.slot_of]
        if todo:
            return todo
        arg_slots = [self.slot_of[a] for a in args]
        outs = [self._new_slot() for _ in owner.outputs]
        for o, s in zip(owner.outputs, outs):
            self.slot_of[o] = s
        self.steps.append((owner, arg_slots, outs, _performer(owner)))
        return []

    def _ifelse(self, owner) -> list:
        """``IfElse(cond, *then, *else)`` over shape scalars (``IfElse.infer_shape``,
        ifelse.py:111-160): an output whose two branches are the same slot is that slot
        (the usual case: both branches keep the shape); else, at run time, the branches'
        common value when they agree, unknown when they differ.  The condition is never
        read: it is data (a gate drawn per call), and reading it would put its value in
        the signature, one plan per gate pattern."""
        n = owner.op.n_outs
        args = list(owner.inputs)
        todo = [a for a in args[1:] if a not in self.slot_of]
        if todo:
            return todo
        ts = [self.slot_of[a] for a in args[1:1 + n]]
        fs = [self.slot_of[a] for a in args[1 + n:1 + 2 * n]]
        if all(t == f for t, f in zip(ts, fs)):
            for o, t in zip(owner.outputs, ts):
                self.slot_of[o] = t
            return []
        outs = [self._new_slot() for _ in owner.outputs]
        for o, sl in zip(owner.outputs, outs):
            self.slot_of[o] = sl
        self.steps.append(("ifelse", ts, fs, outs))
        return []

    def run(self, cells: Sequence[list]) -> list:
        """Every value's dims (tuple with ``None`` for an unknown one; ``None``: not a tensor).

        ``cells[i]`` is the storage cell of ``fgraph.inputs[i]``.
        """
        vals = list(self.init)
        vals.append(_UNKNOWN)               # slot -1
        for s, pos, i in self.dim_leaves:
            shp = getattr(cells[pos][0], "shape", None)
            vals[s] = np.asarray(shp[i], dtype="int64") if shp is not None and i < len(shp) \
                else _UNKNOWN
        for s, pos in self.value_leaves:
            x = cells[pos][0]
            vals[s] = _UNKNOWN if x is None else x
        for step in self.steps:
            if step[0] == "shape":
                _, leaves, s = step
                parts = [vals[x] for x in leaves]
                vals[s] = _UNKNOWN if any(p is _UNKNOWN for p in parts) else \
                    np.asarray([int(p) for p in parts], dtype="int64")
                continue
            if step[0] == "ifelse":
                _, ts, fs, outs = step
                for s, t, f in zip(outs, ts, fs):
                    a, b = vals[t], vals[f]
                    vals[s] = a if a is not _UNKNOWN and b is not _UNKNOWN and \
                        np.array_equal(a, b) else _UNKNOWN
                continue
            node, arg_slots, outs, perform = step
            args = [vals[a] for a in arg_slots]
            if any(a is _UNKNOWN for a in args):
                for s in outs:
                    vals[s] = _UNKNOWN
                continue
            store = [[None] for _ in outs]
            try:
                perform(args, store)
            except Exception:        # an op without a usable perform: unknown
                store = [[_UNKNOWN] for _ in outs]
            for s, cell in zip(outs, store):
                vals[s] = cell[0]
        out = []
        for d in self.dims:
            if d is None:
                out.append(None)
                continue
            out.append(tuple(None if vals[s] is _UNKNOWN or vals[s] is None else int(vals[s])
                             for s in d))
        return out


def signature_reader(shape_cells: Sequence[list], value_cells: Sequence[list]):
    """A function of no argument returning the call's signature from the cells."""
    if not value_cells:
        if len(shape_cells) == 1:
            c0 = shape_cells[0]
            return lambda: c0[0].shape
        return lambda: tuple([c[0].shape for c in shape_cells])

    def read():
        return (tuple([c[0].shape for c in shape_cells]),
                tuple([np.asarray(c[0]).tobytes() for c in value_cells]))
    return read
