"""FunctionGraph -> memory model (thin Theano glue over :mod:`theano_lowmem.core`).

Sizes come from Theano's ``ShapeFeature`` (``theano/tensor/opt.py``): each
tensor variable's shape is a tuple of int64 scalar graphs over constants,
``Shape_i`` of graph inputs and a few scalar ops.  We evaluate those graphs with
``op.perform`` from what is known at compile time (constants, shared
variables' current values, ``tag.test_value``, shapes the caller gives);
a dimension that stays unknown (an input's shape, a data-dependent size) takes
the ``unknown_dim`` hint (flag ``lowmem_unknown_dim``) and the value's size is
marked inexact.  Sharing keys use *proof*, not numbers: two values get the same
key only if their Types are identical and their shape graphs are structurally
identical (same constants, same ``Shape_i`` of the same variable, same ops) —
a shared variable's shape can change between calls, so its current value never
proves equality.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Hashable, Mapping, Sequence

import numpy as np
import theano
from theano.compile.ops import Shape, Shape_i
from theano.compile.sharedvalue import SharedVariable
from theano.gof import Constant
from theano.gof.graph import NoParams
from theano.scalar import Composite
from theano.tensor.elemwise import Elemwise
from theano.tensor.type import TensorType

from .core.graph import NO_ALIAS, Graph, LazyNames

DEFAULT_UNKNOWN_DIM = 128
_UNKNOWN = object()


@dataclass
class FGModel:
    """A FunctionGraph seen as a :class:`core.Graph`, with the maps back to Theano.

    Attributes
    ----------
    graph : Graph
        Node ``i`` is ``nodes[i]``, value ``j`` is ``variables[j]``.
    variables, nodes : list
        Theano ``Variable`` / ``Apply`` per id.
    value_id, node_id : dict
        Inverse maps.
    shapes : list
        Concrete shape per value (tuple of int; unknown dims replaced by the
        hint), ``None`` for non-tensor values.
    exact : list of bool
        Whether the value's size is known (no hint was used).
    share_key : list
        Hashable per value: equal keys mean identical Type and provably equal
        shape.  ``None``: never share (non-tensor values).
    """

    graph: Graph
    variables: list
    nodes: list
    value_id: dict
    node_id: dict
    shapes: list
    exact: list
    share_key: list
    dims: list = None          # per value: tuple with None for a dimension nothing fixes
    itemsize: list = None      # per value: bytes per element (0 for non-tensors)
    structure: dict = None     # the Graph's arguments except sizes

    def graph_with(self, unknown_dim: int) -> Graph:
        """The same graph with every unknown dimension set to ``unknown_dim``."""
        size = []
        for d, isz in zip(self.dims, self.itemsize):
            n = 1
            for x in d or ():
                n *= unknown_dim if x is None else x
            size.append(n * isz if d is not None else 0)
        return Graph(size=size, **self.structure)

    def ids(self, applies: Sequence[Any]) -> list[int]:
        """Node ids of ``applies`` (e.g. an executed order), skipping unknown nodes."""
        return [self.node_id[a] for a in applies if a in self.node_id]

    def describe(self, v: int) -> str:
        """Short label of value ``v`` for reports: name or producing op, shape."""
        var = self.variables[v]
        label = var.name or (str(var.owner.op) if var.owner is not None else str(var))
        return f"{label[:48]} {self.shapes[v]}"


def _label(var) -> str:
    """A short label (``str(var)`` recurses through the whole graph for unnamed variables)."""
    if var.name:
        return var.name
    if var.owner is None:
        return f"<{type(var).__name__}>"
    return f"{type(var.owner.op).__name__}.{var.owner.outputs.index(var)}"


def other_orderings(fgraph) -> dict:
    """``fgraph.orderings()`` without the contribution of our own OrderFeature.

    These are the constraints any order must respect (the DestroyHandler's:
    readers of a destroyed variable run before its destroyer).
    """
    from .order import OrderFeature
    ords: dict = {}
    for feature in fgraph._features:
        if isinstance(feature, OrderFeature) or not hasattr(feature, "orderings"):
            continue
        for node, prereqs in feature.orderings(fgraph).items():
            ords.setdefault(node, []).extend(prereqs)
    return ords


class _DimKeys:
    """Structural keys of shape scalars, hash-consed to small ints.

    Equal ints prove equal values.  A key is built from the keys of the
    scalar's inputs, which are already ints, so building, hashing and
    comparing a key is O(arity) however deep the shape graph is.  (Nested
    tuples mirroring the graph cost the size of its *tree expansion* to hash:
    exponential in depth on DAG-shaped shape graphs such as DenseNet's
    concatenations of concatenations; issue 12.)
    """

    def __init__(self) -> None:
        self.memo: dict = {}      # shape scalar Variable -> int
        self.table: dict = {}     # shallow structural tuple -> int

    def _intern(self, key: Hashable) -> int:
        return self.table.setdefault(key, len(self.table))

    def __call__(self, var) -> int:
        memo = self.memo
        if var in memo:
            return memo[var]
        stack = [var]                       # iterative: shape graphs can be deep
        while stack:
            v = stack[-1]
            if v in memo:
                stack.pop()
                continue
            if isinstance(v, Constant):
                data = np.asarray(v.data)
                key: Hashable = ("const", data.dtype.str, data.shape, data.tobytes())
            elif v.owner is None:
                key = ("var", v)
            elif isinstance(v.owner.op, Shape_i):
                key = ("shape", v.owner.inputs[0], v.owner.op.i)
            else:
                try:
                    hash(v.owner.op)
                except TypeError:
                    key = ("var", v)
                else:
                    todo = [i for i in v.owner.inputs if i not in memo]
                    if todo:
                        stack.extend(todo)
                        continue
                    key = ("op", v.owner.op, v.owner.outputs.index(v),
                           tuple(memo[i] for i in v.owner.inputs))
            memo[v] = self._intern(key)
            stack.pop()
        return memo[var]


def is_shape_value(var) -> bool:
    """Inputs a shape graph may read by value: integer scalars and vectors (``arange(n)``)."""
    t = var.type
    return isinstance(t, TensorType) and t.ndim <= 1 and t.dtype.startswith(("int", "uint", "bool")) \
        or not isinstance(t, TensorType)


def is_shape_arithmetic(node) -> bool:
    """Ops on integer scalars and short integer vectors only (``Elemwise`` on int64,
    ``MakeVector``, ``Subtensor`` of a shape...): what sizes are computed with."""
    for v in list(node.inputs) + list(node.outputs):
        t = v.type
        if isinstance(t, TensorType) and (t.ndim > 1 or not t.dtype.startswith(
                ("int", "uint", "bool"))):
            if not (t.ndim == 0 and t.dtype.startswith("float")):   # e.g. ceil(x / 2.) in pool
                return False
    return True


def performer(node):
    """``perform(args, store)`` for ``node`` as ``Op.make_py_thunk`` calls it (op.py:887-901):
    with the node's params when the op has them; inputs copied for inplace ops."""
    op = node.op
    if isinstance(op, Elemwise) and not isinstance(op.scalar_op, Composite) \
            and len(node.outputs) == 1 and all(
            getattr(v.type, "ndim", None) == 0 for v in node.inputs + node.outputs):
        # 0-d Elemwise (almost every op of a shape graph): the scalar op's own ``impl`` on
        # numpy scalars, the same arithmetic as ``Elemwise.perform``'s ufunc (elemwise.py:
        # 712-800) at a tenth of the cost; its result is cast to the output dtype as there
        # (Composite is left to ``perform``: its ``impl`` needs state that only Theano's
        # own thunk preparation sets up)
        impl, dtype = op.scalar_op.impl, node.outputs[0].type.dtype

        def perform(args, store):
            store[0][0] = np.asarray(impl(*[np.asarray(a)[()] for a in args]), dtype=dtype)
        return perform
    copy = bool(getattr(op, "destroy_map", None))
    state: list = []            # the node's params, looked up at the first call only

    def perform(args, store):
        if not state:
            params = node.run_params()
            state.append(None if params is NoParams else node.params_type.filter(params))
        args = [np.array(a) for a in args] if copy else args
        if state[0] is None:
            op.perform(node, args, store)
        else:
            op.perform(node, args, store, state[0])
    return perform


class _ShapeEvaluator:
    """Evaluate ShapeFeature's scalar shape graphs to ints with ``op.perform``."""

    def __init__(self, known_shapes: Mapping, known_values: Mapping, shape_of: Mapping):
        self.known_shapes = known_shapes
        self.shape_of = shape_of
        self.memo: dict = dict(known_values)
        self.shape_memo: dict = {}

    def shape(self, var):
        """Concrete shape of ``var`` (tuple of int) or ``None``."""
        if var in self.known_shapes:
            return tuple(self.known_shapes[var])
        if var not in self.shape_memo:
            self.shape_memo[var] = None        # a shape that refers to itself stays unknown
            dims = [self.value(d) for d in self.shape_of.get(var) or ()]
            if self.shape_of.get(var) is not None and all(d is not _UNKNOWN for d in dims):
                self.shape_memo[var] = tuple(int(d) for d in dims)
        return self.shape_memo[var]

    def value(self, var):
        if var in self.memo:
            return self.memo[var]
        self.memo[var] = _UNKNOWN          # guards against cycles through stale entries
        if isinstance(var, Constant):
            val = var.data
        elif var.owner is None:
            val = getattr(var.tag, "test_value", _UNKNOWN)
        elif isinstance(var.owner.op, (Shape_i, Shape)):
            shape = self.shape(var.owner.inputs[0])
            if shape is None:
                val = _UNKNOWN
            elif isinstance(var.owner.op, Shape):
                val = np.asarray(shape, dtype="int64")
            else:
                val = np.asarray(shape[var.owner.op.i], dtype="int64")
        else:
            val = self._perform(var)
        self.memo[var] = val
        return val

    def _perform(self, var):
        node = var.owner
        if type(node.op).__name__ == "IfElse":
            # an ifelse of shape scalars (IfElse.infer_shape, ifelse.py:111-160): the branches'
            # common value, never the condition (data); as callplan.ShapeProgram._ifelse
            i, n = node.outputs.index(var), node.op.n_outs
            a, b = self.value(node.inputs[1 + i]), self.value(node.inputs[1 + n + i])
            return a if a is not _UNKNOWN and b is not _UNKNOWN and np.array_equal(a, b) \
                else _UNKNOWN
        if not is_shape_arithmetic(node):   # never run a data op (conv, dot...) at compile time
            return _UNKNOWN
        args = [self.value(i) for i in node.inputs]
        if any(a is _UNKNOWN for a in args):
            return _UNKNOWN
        # copies: inplace ops (destroy_map) write into their inputs, which are memoised,
        # and the shared variables' own arrays are among them
        args = [np.array(a) if isinstance(a, (np.ndarray, np.generic)) else a for a in args]
        outs = [[None] for _ in node.outputs]
        try:
            performer(node)(args, outs)
        except Exception:  # an op without a usable perform: the dim stays unknown
            return _UNKNOWN
        return outs[node.outputs.index(var)][0]


def _known_input_shapes(fgraph, input_shapes: Mapping | None, input_values: Mapping | None):
    shapes, values = {}, {}
    for var in fgraph.inputs:
        if input_values is not None and var in input_values:
            val = input_values[var]
        elif isinstance(var, SharedVariable):
            val = var.get_value(borrow=True)
        else:
            val = getattr(var.tag, "test_value", None)
        if val is not None and hasattr(val, "shape"):
            shapes[var], values[var] = tuple(val.shape), val
        elif val is not None and isinstance(var.type, TensorType):
            values[var] = val
    for var, shp in (input_shapes or {}).items():
        shapes[var] = tuple(int(d) for d in shp)
    for var in fgraph.variables:
        if isinstance(var, Constant) and hasattr(var.data, "shape"):
            shapes[var], values[var] = tuple(var.data.shape), var.data
    return shapes, values


def _scan_workspace(node, ev: "_ShapeEvaluator", unknown_dim: int) -> int:
    """Bytes a Scan's inner function holds while the scan runs.

    The inner function runs with ``allow_gc=False`` (``config.scan.allow_gc``,
    scan_op.py:174-186), so it keeps every intermediate of one step: its
    keep-everything size, from inner shapes derived from the outer ones (a
    sequence or state contributes ``shape[1:]``, other inputs their shape).
    Known only once the inner function is compiled (``op.fn``, scan_op.py:860).
    """
    op = node.op
    fn = getattr(op, "fn", None)
    if fn is None:
        return 0
    inner = fn.maker.fgraph
    outer_idx, inner_idx = list(range(len(node.inputs))), list(range(len(inner.inputs)))
    shapes: dict = {}
    sliced = [(op.outer_seqs, op.inner_seqs, [1] * op.n_seqs)]
    for outer_of, inner_of, taps in (
            (op.outer_mitmot, op.inner_mitmot, [len(t) for t in op.tap_array[:op.n_mit_mot]]),
            (op.outer_mitsot, op.inner_mitsot,
             [len(t) for t in op.tap_array[op.n_mit_mot:op.n_mit_mot + op.n_mit_sot]]),
            (op.outer_sitsot, op.inner_sitsot, [1] * op.n_sit_sot)):
        sliced.append((outer_of, inner_of, taps))
    for outer_of, inner_of, taps in sliced:
        inner_pos = iter(inner_of(inner_idx))
        for o, k in zip(outer_of(outer_idx), taps):
            shp = ev.shape(node.inputs[o])
            for _ in range(k):
                i = next(inner_pos)
                if shp is not None:
                    shapes[inner.inputs[i]] = shp[1:]
    for outer_of, inner_of in ((op.outer_shared, op.inner_shared),
                               (op.outer_non_seqs, op.inner_non_seqs)):
        for o, i in zip(outer_of(outer_idx), inner_of(inner_idx)):
            shp = ev.shape(node.inputs[o])
            if shp is not None:
                shapes[inner.inputs[i]] = shp
    return keep_all_bytes_of(inner, shapes, unknown_dim)


def keep_all_bytes_of(fgraph, input_shapes: Mapping, unknown_dim: int) -> int:
    """``keep_all_bytes(model_of_fgraph(fgraph, input_shapes=..., unknown_dim=...).graph)``
    without the rest of the model: the sizes of the values that own a buffer (a node's
    outputs that are neither views nor inplace, ``Graph.buffers``), each shape evaluated
    as :func:`model_of_fgraph` does it, every tensor value in the same order (the
    evaluator's memo and its guard against cycles see the same sequence).  No sharing
    keys, labels, orderings, workspace or checks: a scan's workspace rule runs at every
    call-time plan of the outer function (issue 10: first-call planning time)."""
    nodes = fgraph.toposort()
    seen: set = set()
    variables: list = []
    for var in fgraph.inputs:
        if var not in seen:
            seen.add(var)
            variables.append(var)
    buffers: set = set()
    for a in nodes:
        for var in a.inputs:
            if var not in seen:
                seen.add(var)
                variables.append(var)
        aliased = {o for table in (getattr(a.op, "destroy_map", None) or {},
                                   getattr(a.op, "view_map", None) or {})
                   for o, ins in table.items() if ins}
        for j, var in enumerate(a.outputs):
            if var not in seen:
                seen.add(var)
                variables.append(var)
            if j not in aliased:
                buffers.add(var)
    for var in fgraph.outputs:
        if var not in seen:
            seen.add(var)
            variables.append(var)
    sf = _shape_feature(fgraph)
    known_shapes, known_values = _known_input_shapes(fgraph, input_shapes, None)
    ev = _ShapeEvaluator(known_shapes, known_values, sf.shape_of)
    total = 0
    for var in variables:
        if not isinstance(var.type, TensorType):
            continue
        sym = sf.shape_of.get(var)
        if var in known_shapes:
            d = tuple(int(x) for x in known_shapes[var])
        elif sym is None:
            d = (None,) * var.type.ndim
        else:
            d = tuple(None if v is _UNKNOWN else int(v) for v in [ev.value(x) for x in sym])
        if var in buffers:
            n = 1
            for x in d:
                n *= unknown_dim if x is None else x
            total += n * np.dtype(var.type.dtype).itemsize
    return total


def _corr_workspace(node, ev: "_ShapeEvaluator", unknown_dim: int) -> int:
    """Bytes ``CorrMM`` and its gradients allocate while they run (corr_gemm.c:239-262,
    370-381): the im2col buffer, ``threads x (channels * kH * kW) x (topH * topW)``, and
    for the weight gradient a per-thread copy of the weights.  ``threads`` is 1 unless the
    op was built with OpenMP (corr.py:221-237), then ``omp_get_max_threads()`` capped at
    the batch size."""
    import os
    from theano.tensor.nnet.corr import CorrMM_gradInputs, CorrMM_gradWeights
    op, ins, out = node.op, node.inputs, node.outputs[0]

    def shp(var):
        s = ev.shape(var)
        return tuple(unknown_dim if d is None else d for d in s) if s is not None \
            else (unknown_dim,) * var.type.ndim
    if isinstance(op, CorrMM_gradWeights):      # (bottom, top) -> weights
        bottom, top, weights = shp(ins[0]), shp(ins[1]), shp(out)
    elif isinstance(op, CorrMM_gradInputs):     # (weights, top) -> bottom
        weights, top, bottom = shp(ins[0]), shp(ins[1]), shp(out)
    else:                                       # CorrMM: (bottom, weights) -> top
        bottom, weights, top = shp(ins[0]), shp(ins[1]), shp(out)
    threads = 1
    if getattr(op, "openmp", False):
        threads = max(1, min(int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1),
                             bottom[0]))
    isz = np.dtype(out.type.dtype).itemsize
    col = threads * bottom[1] * weights[-2] * weights[-1] * top[-2] * top[-1] * isz
    if isinstance(op, CorrMM_gradWeights):
        col += threads * int(np.prod(weights)) * isz
    return int(col)


def _workspace_rules() -> dict:
    """Per-op rules for the extra bytes a node needs while it runs (default 0)."""
    from theano.scan_module.scan_op import Scan
    from theano.tensor.nnet.corr import CorrMM, CorrMM_gradInputs, CorrMM_gradWeights
    return {Scan: _scan_workspace, CorrMM: _corr_workspace,
            CorrMM_gradWeights: _corr_workspace, CorrMM_gradInputs: _corr_workspace}


def _shape_feature(fgraph):
    """The graph's ShapeFeature, or a detached one built for this call."""
    sf = getattr(fgraph, "shape_feature", None)
    if sf is not None:
        return sf
    sf = theano.tensor.opt.ShapeFeature()
    sf.on_attach(fgraph)        # walks the graph; sets fgraph.shape_feature (opt.py:1287-1305)
    del fgraph.shape_feature    # not left attached: this call only reads it
    return sf


def model_of_fgraph(fgraph, order: Sequence[Any] | None = None, *,
                    input_shapes: Mapping | None = None, input_values: Mapping | None = None,
                    unknown_dim: int | None = None, sizes: bool = True) -> FGModel:
    """Build the memory model of ``fgraph``.

    Parameters
    ----------
    fgraph : theano.gof.FunctionGraph
    order : sequence of Apply, optional
        Node ids follow this order (default ``fgraph.toposort()``), so that a
        baseline order is ``range(n_nodes)``.
    input_shapes : mapping Variable -> tuple of int, optional
        Concrete shapes of graph inputs.
    input_values : mapping Variable -> value, optional
        Concrete values of graph inputs (for shapes that depend on values).
    unknown_dim : int, optional
        Size assumed for a dimension nothing determines (default: flag
        ``lowmem_unknown_dim``, else 128).
    sizes : bool
        False: the structure only (every tensor dimension unknown, no sharing keys, no
        workspace), for call-time plans, which size the values at each signature.

    Returns
    -------
    FGModel

    Examples
    --------
    >>> import theano, theano.tensor as T
    >>> x = T.matrix('x'); f = theano.function([x], T.exp(x).sum())
    >>> m = model_of_fgraph(f.maker.fgraph, input_shapes={f.maker.fgraph.inputs[0]: (10, 10)})
    >>> m.graph.n_nodes >= 1
    True
    """
    if unknown_dim is None:
        unknown_dim = int(getattr(theano.config, "lowmem_unknown_dim", DEFAULT_UNKNOWN_DIM))
    nodes = list(order) if order is not None else fgraph.toposort()
    missing = set(fgraph.apply_nodes) - set(nodes)
    if missing:
        raise ValueError(f"order lacks {len(missing)} node(s) of the graph, e.g. {next(iter(missing))}")
    node_id = {a: i for i, a in enumerate(nodes)}
    variables: list = []
    value_id: dict = {}

    def vid(var) -> int:
        if var not in value_id:
            value_id[var] = len(variables)
            variables.append(var)
        return value_id[var]

    for var in fgraph.inputs:
        vid(var)
    node_inputs, node_outputs = [], []
    alias = {}
    for a in nodes:
        node_inputs.append([vid(i) for i in a.inputs])
        node_outputs.append([vid(o) for o in a.outputs])
        for table in (getattr(a.op, "destroy_map", None) or {}, getattr(a.op, "view_map", None) or {}):
            for out_idx, in_idxs in sorted(table.items()):
                if in_idxs:
                    alias.setdefault(value_id[a.outputs[out_idx]], value_id[a.inputs[in_idxs[0]]])
    for var in fgraph.outputs:
        vid(var)
    ords = other_orderings(fgraph)
    extra = [sorted(node_id[p] for p in ords.get(a, []) if p in node_id) for a in nodes]

    sf = _shape_feature(fgraph)
    known_shapes, known_values = _known_input_shapes(fgraph, input_shapes, input_values)
    ev = _ShapeEvaluator(known_shapes, known_values, sf.shape_of)
    dim_key = _DimKeys()
    dims, itemsize, share_key = [], [], []
    for var in variables:
        d, key, isz = None, None, 0
        if isinstance(var.type, TensorType):
            sym = sf.shape_of.get(var)
            isz = np.dtype(var.type.dtype).itemsize
            if not sizes:
                d = (None,) * var.type.ndim
                sym = None
            elif var in known_shapes:
                d = tuple(int(x) for x in known_shapes[var])
            elif sym is None:
                d = (None,) * var.type.ndim
            else:
                vals = [ev.value(x) for x in sym]
                d = tuple(None if v is _UNKNOWN else int(v) for v in vals)
            if sym is not None:
                key = (var.type, tuple(dim_key(x) for x in sym))
        # non-tensor values (Python scalars, random states, lists) count 0 bytes
        dims.append(d)
        itemsize.append(isz)
        share_key.append(key)

    rules = _workspace_rules()
    workspace = []
    for a in nodes:
        rule = rules.get(type(a.op)) if sizes else None
        workspace.append(rule(a, ev, unknown_dim) if rule is not None else 0)
    structure = dict(node_inputs=node_inputs, node_outputs=node_outputs, workspace=workspace,
                     alias_of=[alias.get(v, NO_ALIAS) for v in range(len(variables))],
                     pinned=[value_id[o] for o in fgraph.outputs], extra_deps=extra,
                     value_names=[_label(v) for v in variables],
                     # str(op) of an Elemwise{Composite} builds its scalar graph's name
                     # (scalar/basic.py:3775-3911): 3.6 ms of a 155-node compile, for
                     # labels only error messages read
                     node_names=LazyNames(len(nodes), lambda i: str(nodes[i].op)))
    model = FGModel(None, variables, nodes, value_id, node_id, [], [], share_key,
                    dims, itemsize, structure)
    model.graph = model.graph_with(unknown_dim)
    model.shapes = [None if d is None else tuple(unknown_dim if x is None else x for x in d)
                    for d in dims]
    model.exact = [d is None or None not in d for d in dims]
    return model


def model_for(f, *example_inputs, input_shapes: Sequence | None = None,
              order: Sequence[Any] | None = None, unknown_dim: int | None = None) -> FGModel:
    """The memory model of a compiled function ``f``.

    Node ids follow the order ``f`` really executes (see
    :func:`theano_lowmem.executed.executed_order`) unless ``order`` is given.

    Parameters
    ----------
    f : theano.compile.function_module.Function
    *example_inputs
        Values for ``f``'s explicit inputs, as in ``f(*example_inputs)``:
        they fix every shape (and shapes that depend on values).
    input_shapes : sequence of tuple, optional
        Shapes of the explicit inputs, when values are not at hand.

    Examples
    --------
    >>> import numpy as np, theano, theano.tensor as T
    >>> x = T.vector('x'); f = theano.function([x], T.exp(x) * 2)
    >>> m = model_for(f, np.zeros(1000))
    >>> max(m.graph.size) >= 8000
    True
    """
    from .executed import executed_order
    fgraph = f.maker.fgraph
    explicit = [fgraph.inputs[i] for i, inp in enumerate(f.maker.inputs) if not inp.implicit]
    values, shapes = {}, {}
    for i, inp in enumerate(f.maker.inputs):
        if inp.implicit:                     # shared variables: their current value
            values[fgraph.inputs[i]] = f.input_storage[i].data
    for var, val in zip(explicit, example_inputs):
        values[var] = np.asarray(val) if not hasattr(val, "shape") else val
    for var, shp in zip(explicit, input_shapes or ()):
        shapes[var] = tuple(shp)
    for var, val in values.items():
        if hasattr(val, "shape"):
            shapes.setdefault(var, tuple(val.shape))
    if order is None:
        order = executed_order(f)
    return model_of_fgraph(fgraph, order, input_shapes=shapes, input_values=values,
                           unknown_dim=unknown_dim)
