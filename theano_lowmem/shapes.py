"""Every tensor value's shape at call time, as a tape over the graph inputs' cells.

ShapeFeature gives each intermediate's shape as a graph of the inputs' shapes
(theano/tensor/opt.py, ``ShapeFeature``); :class:`ShapeProgram` flattens those graphs
once per function into a tape and runs it on the numbers a call puts in the input
cells.  :func:`signature_reader` reads a call's shape signature.  Used by
:mod:`theano_lowmem.callplan` (design record 0005).

Two interpreters run the same tape (issue 10: planning time):

* the *reference* one (:meth:`ShapeProgram.run_reference`) calls ``op.perform`` on
  numpy 0-d arrays for every entry, as Theano's own shape code would;
* the *fast* one (what :meth:`ShapeProgram.run` tries first) runs the entries whose
  op is known integer arithmetic (``Elemwise`` add/sub/mul/int div/max/min/switch/
  comparisons/bool logic, ``Composite`` of those on int and bool inputs, nested ones
  included, ``MakeVector``, ``Subtensor`` of a
  shape vector, ``Shape_i``...) on Python ints and tuples, and ``op.perform`` for every
  other entry.  It gives up, and the
  reference interpreter runs instead, on anything it cannot reproduce exactly: a
  value outside its dtype's range (numpy would wrap), a division by zero, an index
  out of range, an unknown value met at run time (an input cell without a shape, an
  ``IfElse`` whose branches disagree), a ``perform`` that raises or returns another
  dtype.  So both give the same dims on every input.
"""
from __future__ import annotations

import functools
import math
import operator
from operator import itemgetter
from typing import Any, Sequence

import numpy as np
import theano.scalar.basic as _ts
from theano.compile.ops import Shape, Shape_i
from theano.gof import Constant
from theano.gof import Type as _GofType
from theano.ifelse import IfElse
from theano.tensor.basic import ScalarFromTensor, TensorFromScalar
from theano.tensor.elemwise import Elemwise
from theano.tensor.opt import MakeVector
from theano.tensor.subtensor import IncSubtensor, Subtensor
from theano.tensor.type import TensorType

from .model import is_shape_arithmetic as _is_shape_arithmetic
from .model import is_shape_value as _is_shape_arithmetic_value
from .model import performer as _performer

_UNKNOWN = object()

_SIGNED = frozenset(["int8", "int16", "int32", "int64"])
_INTLIKE = _SIGNED | {"bool"}
_RANGE = {d: (int(np.iinfo(d).min), int(np.iinfo(d).max)) for d in _SIGNED}

#: step kinds of the tape (``steps``)
_NODE, _SHAPE, _IFELSE = 0, 1, 2


_OTHER, _SHAPE_I, _SHAPE_OP, _IFELSE_OP = range(4)
_OP_CLASS: dict = {}


def _op_class(op) -> int:
    """Which of the ops the tape builder treats apart ``op`` is (by class, cached)."""
    c = type(op)
    k = _OP_CLASS.get(c)
    if k is None:
        k = _OP_CLASS[c] = _SHAPE_I if issubclass(c, Shape_i) else \
            _SHAPE_OP if issubclass(c, Shape) else _IFELSE_OP if issubclass(c, IfElse) else _OTHER
    return k


class _Probe:
    """A node of one output: ``is_shape_arithmetic``'s verdict on one variable."""

    __slots__ = ("inputs", "outputs")

    def __init__(self, var) -> None:
        self.inputs, self.outputs = [], [var]


class _GiveUp(Exception):
    """The fast interpreter cannot reproduce ``op.perform`` here: run the reference one."""


def _switch(c, a, b):
    return a if c else b


def _pack(*a):
    return a


#: Elemwise scalar ops on integers run as Python int arithmetic: op class -> (function
#: of 2 args, function of n args, may leave the output dtype's range)
_INT_ARITH = {
    _ts.Add: (operator.add, lambda *a: sum(a), True),
    _ts.Mul: (operator.mul, lambda *a: math.prod(a), True),
    _ts.Sub: (operator.sub, None, True),
    _ts.IntDiv: (operator.floordiv, None, True),
    _ts.Mod: (operator.mod, None, False),
    _ts.Maximum: (max, None, False),
    _ts.Minimum: (min, None, False),
}
#: ... and on bools only (``~`` is not among them: on a Python bool it gives an int)
_BOOL_LOGIC = {_ts.AND: operator.and_, _ts.OR: operator.or_, _ts.XOR: operator.xor}
_COMPARE = {_ts.LT: operator.lt, _ts.GT: operator.gt, _ts.LE: operator.le,
            _ts.GE: operator.ge, _ts.EQ: operator.eq, _ts.NEQ: operator.ne}


def _kind(t):
    """``(dtype, ndim)`` of a tensor or scalar type, None for any other type."""
    if isinstance(t, TensorType):
        return (t.dtype, len(t.broadcastable))
    if isinstance(t, _ts.Scalar):
        return (t.dtype, 0)
    return None


def _is_py(kind) -> bool:
    """Values the fast interpreter holds as Python objects: integer (and bool) scalars
    and vectors as ints and tuples, float64 scalars as floats."""
    if kind is None:
        return False
    dtype, ndim = kind
    return (ndim == 0 and (dtype in _INTLIKE or dtype == "float64")) or \
        (ndim == 1 and dtype in _INTLIKE)


_DTYPE_NAME: dict = {}


@functools.lru_cache(maxsize=None)
def _safe_cast(a: str, b: str) -> bool:
    """Every value of dtype ``a`` is one of dtype ``b`` (numpy's "safe" casting)."""
    return bool(np.can_cast(a, b, "safe"))


def _dtype_name(dt) -> str:
    name = _DTYPE_NAME.get(dt)
    if name is None:
        _DTYPE_NAME[dt] = name = dt.name
    return name


def _to_py(x, kind):
    """A numpy value of ``kind`` as the fast interpreter holds it (else give up)."""
    if not isinstance(x, (np.ndarray, np.generic)) or x.dtype != kind[0] or x.ndim != kind[1]:
        raise _GiveUp
    return x.item() if kind[1] == 0 else tuple(x.tolist())


_MISSING = object()
_ELEMWISE: dict = {}     # (scalar op class, input kinds, output kind) -> _elemwise(...)


def _elemwise(cls, ikinds, okind):
    """``(f, may overflow)`` for a 0-d ``Elemwise`` of scalar op ``cls`` on
    values of ``ikinds`` (those ``perform`` gets) giving ``okind``, run on Python numbers
    exactly as ``scalar_op.impl`` on numpy scalars then cast to the output dtype (given
    that no value leaves its dtype's range, which the run checks); ``f`` None: the
    output is the first argument's number; None: not run on Python numbers."""
    if okind[1] != 0 or any(k[1] != 0 for k in ikinds):
        return None
    odt = okind[0]
    idts = [k[0] for k in ikinds]
    n = len(ikinds)
    if cls in _INT_ARITH:
        if odt not in _SIGNED or any(d not in _INTLIKE for d in idts):
            return None
        f2, fn, check = _INT_ARITH[cls]
        if n == 2:
            return f2, check
        if fn is not None and n > 2 and (cls is _ts.Mul or all(d == idts[0] for d in idts)):
            # (Add.impl is sum(): on mixed dtypes it may wrap in a narrower one first)
            return fn, check
        return None
    if cls in _BOOL_LOGIC and n == 2 and odt == "bool" and idts == ["bool", "bool"]:
        return _BOOL_LOGIC[cls], False
    if cls is _ts.Neg and n == 1 and odt in _SIGNED and idts[0] in _INTLIKE:
        return operator.neg, True
    if cls in _COMPARE and n == 2 and odt == "bool" and \
            (all(d in _INTLIKE for d in idts) or all(d == "float64" for d in idts)):
        return _COMPARE[cls], False
    if cls is _ts.Switch and n == 3 and idts[0] in _INTLIKE and (
            (odt in _INTLIKE and idts[1] in _INTLIKE and idts[2] in _INTLIKE) or
            odt == idts[1] == idts[2] == "float64"):
        return _switch, False
    if cls in (_ts.Identity, _ts.Cast) and n == 1 and idts[0] in _INTLIKE and \
            odt in _INTLIKE and _safe_cast(idts[0], odt):
        return None, False                # the same number
    return None


def _composite(sop, ikinds, okind):
    """``(f, False)`` for a 0-d ``Elemwise{Composite}`` whose inner graph is integer (and
    bool) arithmetic that :func:`_elemwise` runs, else None.

    ``Elemwise.perform`` runs ``Composite.impl`` through an object ufunc (elemwise.py:
    771-790, ``np.frompyfunc``), which hands each inner ``impl`` the inputs as Python
    ints and bools whatever their dtype (int8, bool, int64), then casts the result to the
    output dtype.  The inner ops' own ``impl`` (scalar/basic.py) are Python operators or
    numpy functions that give int64 on Python ints (``np.maximum``, ``np.less``,
    ``np.product``), and a nested ``Composite`` is its inner graph on the same values
    (``Composite.impl``, no cast).  So the inner graph on Python ints gives the same numbers
    as long as no value leaves int64 (checked at each run: numpy would wrap), every inner
    output is int64 or bool (a narrower one could be a numpy scalar that wraps, e.g. a
    ``Cast``), every constant is int64 or bool (``impl`` reads its ``data``), and the
    output is int64 or bool.  Fewer than 32 inputs: ``Elemwise.perform`` does not run
    the ufunc on more (elemwise.py:714-719).  Shared subexpressions are computed once
    (``Composite`` runs its graph as a tree: the same pure functions on the same values)."""
    if okind not in (("int64", 0), ("bool", 0)) or len(ikinds) >= 32 or \
            any(k[1] != 0 or k[0] not in _INTLIKE for k in ikinds):
        return None
    fg = sop.fgraph
    if len(fg.outputs) != 1 or len(fg.inputs) != len(ikinds):
        return None
    n_in = len(fg.inputs)
    made: list = []          # after the inputs, in the order made: a constant, or (f, ins, check)
    memo: dict = {}          # (f, ins, check) or (nested op id, ins) -> value index
    lo, hi = _RANGE["int64"]

    def emit(fg, where) -> bool:
        """The nodes of ``fg`` (``where``: its inputs' value indices) appended to ``made``."""
        order, seen, stack = [], set(), [(fg.outputs[0].owner, False)]
        while stack:                        # post-order (fg.toposort() costs more)
            node, done = stack.pop()
            if node is None or (not done and node in seen):
                continue
            if done:
                order.append(node)
                continue
            seen.add(node)
            stack.append((node, True))
            stack.extend((v.owner, False) for v in reversed(node.inputs)
                         if v.owner is not None)
        for node in order:
            if len(node.outputs) != 1:
                return False
            for v in node.inputs:
                if v not in where:
                    if not isinstance(v, Constant) or v.type.dtype not in ("int64", "bool"):
                        return False
                    where[v] = n_in + len(made)
                    made.append(np.asarray(v.data).item())
            ik = tuple((v.type.dtype, 0) for v in node.inputs)
            ok = (node.outputs[0].type.dtype, 0)
            if ok[0] not in ("int64", "bool") or any(k[0] not in _INTLIKE for k in ik):
                return False
            if isinstance(node.op, _ts.Composite):      # its graph on the same values
                inner = node.op.fgraph
                if len(inner.outputs) != 1 or len(inner.inputs) != len(node.inputs) or \
                        inner.outputs[0].type.dtype != ok[0]:
                    return False
                key = (id(node.op), tuple(where[v] for v in node.inputs))
                if key not in memo:         # (fusion repeats a nested composite's node)
                    sub = {iv: where[v] for iv, v in zip(inner.inputs, node.inputs)}
                    if not emit(inner, sub) or inner.outputs[0] not in sub:
                        return False
                    memo[key] = sub[inner.outputs[0]]
                where[node.outputs[0]] = memo[key]
                continue
            key = (type(node.op), ik, ok)
            desc = _ELEMWISE.get(key, _MISSING)
            if desc is _MISSING:
                _ELEMWISE[key] = desc = _elemwise(*key)
            if desc is None:
                return False
            f = desc[0]
            ins = tuple(where[v] for v in node.inputs)
            if f is None:                   # the same number
                where[node.outputs[0]] = ins[0]
                continue
            step = (f, ins, ok[0] == "int64")
            if step not in memo:
                memo[step] = n_in + len(made)
                made.append(step)
            where[node.outputs[0]] = memo[step]
        return True

    where = {v: i for i, v in enumerate(fg.inputs)}
    if not emit(fg, where) or fg.outputs[0] not in where:
        return None
    # renumbered: the inputs, the constants, then the results in the order made
    is_const = [not isinstance(m, tuple) for m in made]
    new_of = list(range(n_in)) + [0] * len(made)
    consts = tuple(m for m, c in zip(made, is_const) if c)
    k, r = n_in, n_in + len(consts)
    steps = []
    for j, (m, c) in enumerate(zip(made, is_const)):
        if c:
            new_of[n_in + j], k = k, k + 1
        else:
            new_of[n_in + j], r = r, r + 1
            f, ins, check = m
            steps.append((f, tuple(new_of[i] for i in ins), check))
    out = new_of[where[fg.outputs[0]]]
    to_bool = okind[0] == "bool"

    def composite(*args):
        vals = [*args, *consts]
        for f, ins, check in steps:
            r = f(*[vals[i] for i in ins])
            if check and not lo <= r <= hi:
                raise _GiveUp
            vals.append(r)
        r = vals[out]
        return bool(r) if to_bool else r
    return composite, False


class ShapeProgram:
    """Every tensor value's shape as a tape over the graph inputs' cells.

    ShapeFeature (theano/tensor/opt.py) gives each dimension as a scalar graph
    over constants, ``Shape_i`` of graph inputs and a few scalar ops.  The tape
    holds those graphs once, in dependency order, with integer slots; the
    reference run calls ``op.perform`` on numpy int64 scalars, so the numbers are
    exactly those Theano's own shape code computes, and :meth:`run` gives the same
    numbers faster (module docstring).  A dimension that needs a value no input
    gives (``Shape_i`` of an intermediate without ``infer_shape``: a data-dependent
    size such as ``nonzero``) stays unknown.

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
        self.kinds: list = []                # slot -> (dtype, ndim), or None
        self.steps: list = []                # (kind, ...): _NODE, _SHAPE or _IFELSE entries
        self.dim_leaves: list = []           # (slot, input index, dim)
        self.value_leaves: list = []         # (slot, input index)
        self.shape_inputs: set[int] = set()  # inputs whose shapes the graphs read
        self.value_inputs: set[int] = set()  # inputs whose values the graphs read
        self._input_pos = input_pos
        self._shape_of = shape_of
        self._type_info: dict = {}           # type key -> (kind, shape-arithmetic type?)
        self._arith_of: dict = {}            # node -> is_shape_arithmetic(node)
        self._performers: dict = {}          # node -> performer (made at first use)
        self.dims: list = []                 # per value: tuple of slots, or None (non-tensor)
        slot_of = self.slot_of
        visit = self._visit
        for var in variables:
            t = var.type
            if not isinstance(t, TensorType):
                self.dims.append(None)
            elif var in input_pos:
                pos = input_pos[var]
                self.dims.append(tuple([self._dim_leaf(pos, i)
                                        for i in range(len(t.broadcastable))]))
            else:
                sym = shape_of.get(var)
                if sym is None:
                    self.dims.append((-1,) * len(t.broadcastable))
                else:
                    self.dims.append(tuple([slot_of[d] if d in slot_of else visit(d)
                                            for d in sym]))
        self.n_slots = len(self.init)
        del self._type_info, self._arith_of
        try:
            self._fast = _FastTape(self)
        except Exception:           # never expected; the reference interpreter still runs
            self._fast = None

    # -- building the tape -------------------------------------------------------

    def _info(self, var):
        """``(kind, ok)`` of ``var``'s type: ``ok`` if ``is_shape_arithmetic`` accepts a
        variable of that type (it looks at each variable's type alone; tensor types
        that Theano deems equal get the same verdict)."""
        t = var.type
        cache = self._type_info
        info = cache.get(id(t))              # (the types live as long as the graph)
        if info is None:
            key = (t.dtype, t.broadcastable) if type(t) is TensorType else id(t)
            info = cache.get(key)
            if info is None:
                cache[key] = info = (_kind(t), _is_shape_arithmetic(_Probe(var)))
            cache[id(t)] = info
        return info

    def _arith(self, node) -> bool:
        """``model.is_shape_arithmetic(node)``, from the verdicts on its variables' types."""
        ok = self._arith_of.get(node)
        if ok is None:
            cache, info = self._type_info, self._info
            ok = True
            for v in node.inputs + node.outputs:
                i = cache.get(id(v.type))
                if not (i or info(v))[1]:
                    ok = False
                    break
            self._arith_of[node] = ok
        return ok

    def _new_slot(self, value=None, kind=None) -> int:
        self.init.append(value)
        self.kinds.append(kind)
        return len(self.init) - 1

    def _dim_leaf(self, pos: int, i: int) -> int:
        key = ("dim", pos, i)
        s = self.slot_of.get(key)
        if s is None:
            self.slot_of[key] = s = self._new_slot(None, ("int64", 0))
            self.dim_leaves.append((s, pos, i))
            self.shape_inputs.add(pos)
        return s

    def _visit(self, root) -> int:
        """Slot of shape scalar ``root`` (-1: unknown), adding its graph to the tape."""
        slot_of = self.slot_of
        leaf_or_args = self._leaf_or_args
        arith_of, arith = self._arith_of, self._arith
        type_info, info = self._type_info, self._info
        init, kinds, steps = self.init, self.kinds, self.steps
        op_class = _OP_CLASS
        stack, expanded = [root], set()    # expanded: on the current path, args pushed
        while stack:
            var = stack[-1]
            if var in slot_of:
                stack.pop()
                expanded.discard(var)
                continue
            owner = var.owner
            if owner is not None and op_class.get(type(owner.op)) == _OTHER:
                # (the usual entry, as _leaf_or_args does it, inline)
                ok = arith_of.get(owner)
                if ok is None:
                    ok = arith(owner)
                if not ok:                 # a computation on data, not on sizes
                    slot_of[var] = -1
                    continue
                args = owner.inputs
                arg_slots = []
                for a in args:
                    sa = slot_of.get(a)
                    if sa is None:
                        break
                    arg_slots.append(sa)
                else:                      # the args are done
                    outs = []
                    for o in owner.outputs:
                        inf = type_info.get(id(o.type))
                        init.append(None)
                        kinds.append(inf[0] if inf is not None else info(o)[0])
                        slot_of[o] = len(init) - 1
                        outs.append(len(init) - 1)
                    steps.append((_NODE, owner, arg_slots, outs))
                    continue
                todo = [a for a in args if a not in slot_of]
            else:
                todo = leaf_or_args(var)
                if not todo:               # a leaf, or its args are done
                    continue
            for t in todo:
                if t in expanded:          # a cycle through stale ShapeFeature entries
                    slot_of[t] = -1
            expanded.add(var)
            stack.extend([t for t in todo if t not in slot_of])
        return slot_of[root]

    def _leaf_or_args(self, var) -> list:
        """Set ``slot_of[var]`` if it is a leaf or its args are done; else return the args."""
        slot_of = self.slot_of
        owner = var.owner
        if owner is None:
            if isinstance(var, Constant):
                slot_of[var] = self._new_slot(np.asarray(var.data), self._info(var)[0])
                return []
            pos = self._input_pos
            if var in pos and _is_shape_arithmetic_value(var):
                slot_of[var] = s = self._new_slot(None, self._info(var)[0])
                self.value_leaves.append((s, pos[var]))
                self.value_inputs.add(pos[var])
            else:
                slot_of[var] = -1
            return []
        op = owner.op
        cls = _op_class(op)
        if cls == _OTHER:
            if not self._arith(owner):       # a computation on data, not on sizes
                slot_of[var] = -1
                return []
            args = owner.inputs
            todo = [a for a in args if a not in slot_of]
            if todo:
                return todo
            arg_slots = [slot_of[a] for a in args]
            outs = []
            for o in owner.outputs:
                slot_of[o] = s = self._new_slot(None, self._info(o)[0])
                outs.append(s)
            self.steps.append((_NODE, owner, arg_slots, outs))
            return []
        if cls == _SHAPE_I:
            x, i = owner.inputs[0], op.i
            pos = self._input_pos
            if x in pos:
                slot_of[var] = self._dim_leaf(pos[x], i)
                return []
            sym = self._shape_of.get(x)
            if sym is None or i >= len(sym) or sym[i] is var:
                slot_of[var] = -1          # data-dependent (no infer_shape)
                return []
            d = sym[i]
            if d not in slot_of:
                return [d]
            slot_of[var] = slot_of[d]
            return []
        if cls == _SHAPE_OP:                 # the whole shape vector of x
            x = owner.inputs[0]
            pos = self._input_pos
            if x in pos:
                dims = [self._dim_leaf(pos[x], i) for i in range(x.type.ndim)]
            else:
                sym = self._shape_of.get(x)
                if sym is None or any(d is var for d in sym):
                    slot_of[var] = -1
                    return []
                todo = [d for d in sym if d not in slot_of]
                if todo:
                    return todo
                dims = [slot_of[d] for d in sym]
            slot_of[var] = s = self._new_slot(None, ("int64", 1))
            self.steps.append((_SHAPE, dims, s))
            return []
        return self._ifelse(owner)           # ShapeFeature's shape of an ifelse output

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
        outs = [self._new_slot(None, _kind(o.type)) for o in owner.outputs]
        for o, sl in zip(owner.outputs, outs):
            self.slot_of[o] = sl
        self.steps.append((_IFELSE, ts, fs, outs))
        return []

    # -- running it ----------------------------------------------------------------

    def run(self, cells: Sequence[list]) -> list:
        """Every value's dims (tuple with ``None`` for an unknown one; ``None``: not a tensor).

        ``cells[i]`` is the storage cell of ``fgraph.inputs[i]``.  The fast interpreter
        when it can reproduce the reference exactly, else :meth:`run_reference`.
        """
        if self._fast is not None:
            try:
                return self._fast.run(cells)
            except Exception:      # _GiveUp, or anything numpy would do differently
                pass
        return self.run_reference(cells)

    def _perform(self, node):
        p = self._performers.get(node)
        if p is None:
            self._performers[node] = p = _performer(node)
        return p

    def run_reference(self, cells: Sequence[list]) -> list:
        """:meth:`run` with ``op.perform`` on numpy values for every entry of the tape."""
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
            if step[0] == _SHAPE:
                _, leaves, s = step
                parts = [vals[x] for x in leaves]
                vals[s] = _UNKNOWN if any(p is _UNKNOWN for p in parts) else \
                    np.asarray([int(p) for p in parts], dtype="int64")
                continue
            if step[0] == _IFELSE:
                _, ts, fs, outs = step
                for s, t, f in zip(outs, ts, fs):
                    a, b = vals[t], vals[f]
                    vals[s] = a if a is not _UNKNOWN and b is not _UNKNOWN and \
                        np.array_equal(a, b) else _UNKNOWN
                continue
            _, node, arg_slots, outs = step
            args = [vals[a] for a in arg_slots]
            if any(a is _UNKNOWN for a in args):
                for s in outs:
                    vals[s] = _UNKNOWN
                continue
            store = [[None] for _ in outs]
            try:
                self._perform(node)(args, store)
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


class _FastTape:
    """The tape of a :class:`ShapeProgram` for the fast interpreter.

    Slots are those of the program; a slot that holds another one's number (a cast
    that keeps the value, ``ScalarFromTensor``, an ``IfElse`` whose branches are one
    slot) is read from that one (``alias``), and a slot that is unknown whatever the
    inputs (-1, or an entry with such an argument) is never computed.  ``prog`` holds the entries, each
    ``(f, out, *args)`` for ``v[out] = f(*v[args])``, or ``(g,)`` for ``g(v)``."""

    def __init__(self, p: ShapeProgram) -> None:
        n = p.n_slots
        kinds = p.kinds
        py_kind = {k: _is_py(k) for k in set(kinds)}
        py = [*map(py_kind.__getitem__, kinds)]
        alias = list(range(n)) + [-1]     # slot -> the slot holding its value (-1 unknown)
        init: list = [None] * n + [None]
        for s, val in enumerate(p.init):
            if val is None:
                continue
            if py[s]:
                kind = kinds[s]
                if _dtype_name(val.dtype) != kind[0] or val.ndim != kind[1]:
                    py[s] = False
                    init[s] = val
                    continue
                init[s] = val.item() if kind[1] == 0 else tuple(val.tolist())
            else:
                init[s] = val
        self.py = py
        dim_groups: dict = {}
        for s, pos, i in p.dim_leaves:
            dim_groups.setdefault(pos, []).append((s, i))
        self.dim_groups = [(pos, tuple(sl)) for pos, sl in dim_groups.items()]
        self.value_leaves = [(s, pos, kinds[s] if py[s] else None) for s, pos in p.value_leaves]
        prog: list = []
        checks: dict = {}                 # dtype -> slots whose value may leave its range
        for step in p.steps:
            if step[0] == _SHAPE:
                _, leaves, s = step
                args = [alias[x] for x in leaves]
                if -1 in args:
                    alias[s] = -1
                    continue
                prog.append((_pack, s, *args))
                continue
            if step[0] == _IFELSE:
                _, ts, fs, outs = step
                pairs = []
                for s, t, f in zip(outs, ts, fs):
                    t, f = alias[t], alias[f]
                    if t == -1 or f == -1:
                        alias[s] = -1
                    elif t == f:
                        alias[s] = t
                    else:
                        pairs.append((s, t, f, py[t] and py[f]))
                if pairs:
                    prog.append((self._ifelse(pairs),))
                continue
            _, node, arg_slots, outs = step
            args = [*map(alias.__getitem__, arg_slots)]
            if -1 in args:
                for s in outs:
                    alias[s] = -1
                continue
            entry = self._entry(node, arg_slots, args, outs, kinds, py, alias, checks, p)
            if entry is not None:
                prog.append(entry)
        self.prog = prog
        self.init = init
        self.checks = [(lo, hi, tuple(sl)) for d, sl in checks.items()
                       for lo, hi in [_RANGE[d]] if sl]
        # the dims: int() of every slot a dim reads, then one tuple per distinct dims
        tpl_of: dict = {}                 # dims (slots) -> template number
        value_tpl = []
        for d in p.dims:
            if d is None:
                value_tpl.append(-1)
                continue
            k = tpl_of.get(d)
            if k is None:
                tpl_of[d] = k = len(tpl_of)
            value_tpl.append(k)
        self.value_tpl = value_tpl
        dims_slots = sorted({alias[s] for d in tpl_of for s in d} - {-1})
        where = {s: j for j, s in enumerate(dims_slots)}
        where[-1] = len(dims_slots)       # None (unknown)
        self.dims_slots = dims_slots
        self.dims_get = itemgetter(*dims_slots) if len(dims_slots) >= 2 else None
        self.tpl = []
        for d in tpl_of:
            idx = [where[alias[s]] for s in d]
            if len(idx) == 0:
                self.tpl.append(lambda c: ())
            elif len(idx) == 1:
                self.tpl.append(lambda c, j=idx[0]: (c[j],))
            else:
                self.tpl.append(itemgetter(*idx))

    @staticmethod
    def _ifelse(pairs):
        def ifelse(v):
            for s, t, f, both_py in pairs:
                a, b = v[t], v[f]
                if not (a == b if both_py else np.array_equal(a, b)):
                    raise _GiveUp         # unknown at run time: the reference says so
                v[s] = a
        return ifelse

    def _entry(self, node, arg_slots, args, outs, kinds, py, alias, checks, p):
        """The fast entry of ``node`` (None when its output is another slot's value).
        ``arg_slots``: the slots of its inputs, whose kinds are those of the values
        ``perform`` gets in the reference run; ``args``: the same after ``alias`` (the
        slots the fast run reads; a cast may have made one hold a narrower dtype)."""
        op = node.op
        fast = None
        if len(outs) == 1 and py[outs[0]] and all(map(py.__getitem__, arg_slots)):
            okind = kinds[outs[0]]
            ikinds = tuple(map(kinds.__getitem__, arg_slots))
            if isinstance(op, Elemwise):
                key = (type(op.scalar_op), ikinds, okind)
                if key[0] is _ts.Composite:
                    fast = _composite(op.scalar_op, ikinds, okind)
                else:
                    fast = _ELEMWISE.get(key, _MISSING)
                    if fast is _MISSING:
                        _ELEMWISE[key] = fast = _elemwise(*key)
            else:
                fast = self._fast_op(op, node, args, ikinds, okind)
        if fast is None:
            return (self._generic(p._perform(node), args, outs,
                                  [kinds[a] if py[a] else None for a in arg_slots],
                                  [kinds[s] if py[s] else None for s in outs]),)
        f, check = fast
        o = outs[0]
        if f is None:                     # the same value: read the argument's slot
            alias[o] = args[0]
            return None
        if check:
            checks.setdefault(kinds[o][0], []).append(o)
        return (f, o, *args)

    @staticmethod
    def _generic(perform, args, outs, ikinds, okinds):
        conv = [(a, np.dtype(k[0]) if k else None) for a, k in zip(args, ikinds)]
        n_out = len(outs)

        def generic(v):
            vals = [v[a] if dt is None else np.asarray(v[a], dtype=dt) for a, dt in conv]
            store = [[None] for _ in range(n_out)]
            perform(vals, store)
            for s, k, cell in zip(outs, okinds, store):
                r = cell[0]
                if r is None:
                    raise _GiveUp
                v[s] = r if k is None else _to_py(r, k)
        return generic

    @staticmethod
    def _fast_op(op, node, args, ikinds, okind):
        """``(f, may overflow)`` for an op the fast interpreter runs on Python
        values (``f`` None: the output is the first argument; ``(g,)``: a closure over
        v), or None."""
        odt = okind[0]
        idts = [k[0] for k in ikinds]
        if isinstance(op, MakeVector):
            if okind[1] == 1 and all(k[1] == 0 and _safe_cast(k[0], odt) for k in ikinds):
                return _pack, False
            return None
        if isinstance(op, (ScalarFromTensor, TensorFromScalar)):
            if len(args) == 1 and idts[0] == odt and ikinds[0][1] == okind[1] == 0:
                return None, False
            return None
        if isinstance(op, Subtensor):
            return _FastTape._subtensor(op, args, ikinds, okind)
        if isinstance(op, IncSubtensor):
            return _FastTape._set_subtensor(op, node, args, ikinds, okind)
        return None

    @staticmethod
    def _subtensor(op, args, ikinds, okind):
        """``x[i]`` or ``x[a:b:c]`` of a vector."""
        if ikinds[0][1] != 1 or okind[0] != ikinds[0][0] or len(op.idx_list) != 1:
            return None
        idx = op.idx_list[0]
        rest = list(args[1:])
        if any(k[1] != 0 or k[0] not in _SIGNED for k in ikinds[1:]):
            return None
        if isinstance(idx, _GofType):
            if okind[1] != 0 or len(rest) != 1:
                return None
            return operator.getitem, False
        if isinstance(idx, slice):
            if okind[1] != 1:
                return None
            parts = []
            for e in (idx.start, idx.stop, idx.step):
                if isinstance(e, _GofType):
                    parts.append(("s", rest.pop(0)))
                elif e is None or isinstance(e, (int, np.integer)):
                    parts.append(("c", None if e is None else int(e)))
                else:
                    return None
            if rest:
                return None
            (ka, a), (kb, b), (kc, c) = parts
            if ka == "c" and kb == "c" and kc == "c":
                sl = slice(a, b, c)
                return (lambda vec: vec[sl]), False
            if kb == "c" and kc == "c" and b is None and c is None and ka == "s":
                return (lambda vec, i: vec[i:]), False

            def sub(*vals):
                vec, it = vals[0], iter(vals[1:])
                return vec[slice(*[next(it) if k == "s" else e for k, e in parts])]
            return sub, False
        if isinstance(idx, (int, np.integer)) and not rest:
            if okind[1] != 0:
                return None
            return itemgetter(int(idx)), False
        return None

    @staticmethod
    def _set_subtensor(op, node, args, ikinds, okind):
        """``set_subtensor(x[i], y)`` of a vector (y cast safely to x's dtype)."""
        if not op.set_instead_of_inc or len(op.idx_list) != 1 or ikinds[0][1] != 1 or \
                okind != ikinds[0] or ikinds[1][1] != 0 or \
                not _safe_cast(ikinds[1][0], ikinds[0][0]):
            return None
        idx = op.idx_list[0]
        if isinstance(idx, _GofType) and len(args) == 3 and ikinds[2][0] in _SIGNED and \
                ikinds[2][1] == 0:
            def setitem(vec, y, i):
                lst = list(vec)
                lst[i] = y
                return tuple(lst)
            return setitem, False
        if isinstance(idx, (int, np.integer)) and len(args) == 2:
            k = int(idx)

            def setconst(vec, y):
                lst = list(vec)
                lst[k] = y
                return tuple(lst)
            return setconst, False
        return None

    def run(self, cells: Sequence[list]) -> list:
        v = self.init.copy()
        for pos, sl in self.dim_groups:
            shp = cells[pos][0].shape
            for s, i in sl:
                v[s] = shp[i]
        for s, pos, k in self.value_leaves:
            x = cells[pos][0]
            if k is not None:
                x = _to_py(x, k)
            elif x is None:
                raise _GiveUp
            v[s] = x
        for e in self.prog:
            n = len(e)
            if n == 4:
                f, o, a, b = e
                v[o] = f(v[a], v[b])
            elif n == 3:
                f, o, a = e
                v[o] = f(v[a])
            elif n == 5:
                f, o, a, b, c = e
                v[o] = f(v[a], v[b], v[c])
            elif n == 1:
                e[0](v)
            else:
                v[e[1]] = e[0](*[v[a] for a in e[2:]])
        for lo, hi, sl in self.checks:
            t = [v[s] for s in sl]
            if max(t) > hi or min(t) < lo:
                raise _GiveUp             # numpy would have wrapped around
        ds = self.dims_slots
        if self.dims_get is not None:
            conv = [int(x) for x in self.dims_get(v)]
        else:
            conv = [int(v[s]) for s in ds]
        conv.append(None)
        tups = [g(conv) for g in self.tpl]
        tups.append(None)
        return [tups[k] for k in self.value_tpl]


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
