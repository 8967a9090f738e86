"""The order Theano really executes: replica (no call needed) and tracer (a real call).

Which VM ``VM_Linker.make_vm`` builds (``theano/gof/vm.py``, ``make_vm``):
``CVM`` when ``use_cloop`` (the default ``cvm`` linker) unless a callback or
memory profiling forces ``Stack``; without ``use_cloop``, ``Stack`` for lazy
graphs and ``Loop``/``LoopGC`` otherwise.  ``Loop`` runs the linker's schedule
(``fgraph.toposort()``); ``CVM`` and ``Stack`` walk back from the outputs and
follow only ``fgraph.orderings()`` (see :mod:`theano_lowmem.core.executed`).
"""
from __future__ import annotations

import copy
import tracemalloc
from typing import Any, Sequence

from theano.gof import vm as theano_vm

from .core import executed as core_executed


class NotReplicable(RuntimeError):
    """The executed order depends on data (lazy nodes such as ``ifelse``)."""


_IFELSE: list = []


def is_lazy_node(node) -> bool:
    """True for ops whose thunk is lazy (evaluates only the inputs it asks for)."""
    if not _IFELSE:          # imported once, on first use (an import statement per node
        from theano.ifelse import IfElse   # was 3 us, on every node of every compile)
        _IFELSE.append(IfElse)
    return isinstance(node.op, _IFELSE[0]) or getattr(node.op, "lazy", False) is True


def vars_index(fgraph, nodes: Sequence[Any]) -> dict:
    """Variable -> index, numbered as ``VM_Linker.make_vm`` numbers them for the CVM
    (vm.py:905-912): the nodes' inputs and outputs in order, then the graph's inputs
    and outputs."""
    vars_idx: dict = {}
    for node in nodes:
        for v in node.inputs + node.outputs:
            vars_idx.setdefault(v, len(vars_idx))
    for v in fgraph.inputs + fgraph.outputs:
        vars_idx.setdefault(v, len(vars_idx))
    return vars_idx


def _encode(fgraph, nodes: Sequence[Any], ordered_prereqs: bool, ords: dict | None = None):
    """The integer encoding ``VM_Linker.make_vm`` builds for the CVM (vm.py, make_vm);
    prerequisites from ``ords`` (default ``fgraph.orderings()``)."""
    vars_idx = vars_index(fgraph, nodes)
    node_idx = {n: i for i, n in enumerate(nodes)}
    var_owner = [-1] * len(vars_idx)
    for v, i in vars_idx.items():
        if v.owner is not None:
            var_owner[i] = node_idx[v.owner]
    ords = fgraph.orderings() if ords is None else ords
    prereqs = []
    for node in nodes:
        idxs = [vars_idx[v] for p in ords.get(node, ()) for v in p.outputs]
        prereqs.append(tuple(idxs if ordered_prereqs else sorted(set(idxs))))
    # tuples of ints: the cyclic collector stops tracking them, and a plan factory keeps
    # one encoding per function (a list per node each, 9,000 tracked lists on 3,000 nodes)
    return ([tuple([vars_idx[v] for v in n.inputs]) for n in nodes],
            [tuple([vars_idx[v] for v in n.outputs]) for n in nodes],
            var_owner, prereqs, [vars_idx[v] for v in fgraph.outputs])


def cvm_order(fgraph, nodes: Sequence[Any] | None = None) -> list:
    """The order the C VM will run ``fgraph``'s nodes (replica of ``lazy_rec_eval``).

    Parameters
    ----------
    fgraph : FunctionGraph
    nodes : sequence of Apply, optional
        The linker's schedule, which numbers the variables (default
        ``fgraph.toposort()``, what ``VM_Linker.make_all`` uses).

    Raises
    ------
    NotReplicable
        If the graph has lazy nodes.

    Examples
    --------
    >>> import theano, theano.tensor as T
    >>> x = T.vector('x'); f = theano.function([x], [T.exp(x), T.log(x)])
    >>> [str(n.op) for n in cvm_order(f.maker.fgraph)][:1]
    ['Elemwise{exp,no_inplace}']
    """
    return cvm_order_and_encoding(fgraph, nodes)[0]


def cvm_order_and_encoding(fgraph, nodes: Sequence[Any] | None = None) -> tuple:
    """``(cvm_order(fgraph, nodes), encoding)``: the encoding is ``make_vm``'s numbering
    of ``nodes`` with the prerequisites of ``fgraph.orderings()`` (:func:`_encode`),
    which the walk was computed from."""
    nodes = list(nodes) if nodes is not None else fgraph.toposort()
    if any(is_lazy_node(n) for n in nodes):
        raise NotReplicable("the graph has lazy nodes (ifelse): the executed order depends on data")
    enc = _encode(fgraph, nodes, ordered_prereqs=False)
    return [nodes[i] for i in core_executed.cvm_order(*enc)], enc


def stack_order(fgraph, nodes: Sequence[Any] | None = None) -> list:
    """The order the Python ``Stack`` VM will run ``fgraph``'s nodes."""
    nodes = list(nodes) if nodes is not None else fgraph.toposort()
    if any(is_lazy_node(n) for n in nodes):
        raise NotReplicable("the graph has lazy nodes (ifelse): the executed order depends on data")
    order = core_executed.stack_order(*_encode(fgraph, nodes, ordered_prereqs=True))
    return [nodes[i] for i in order]


def executed_order(f) -> list:
    """The order compiled function ``f`` runs its nodes in, without calling it.

    Dispatches on the VM ``f`` was linked with (``f.fn``): CVM and Stack
    replicas, or the schedule itself for Loop/LoopGC.

    Examples
    --------
    >>> import numpy as np, theano, theano.tensor as T
    >>> x = T.vector('x'); f = theano.function([x], [T.exp(x), T.log(x)])
    >>> executed_order(f) == trace_order(f, np.ones(3))
    True
    """
    vm = f.fn
    if hasattr(type(vm), "executed_nodes"):   # a callplan.PlannedVM: the current plan's order
        return vm.executed_nodes()
    fgraph = f.maker.fgraph
    nodes = list(getattr(vm, "nodes", None) or fgraph.toposort())
    if isinstance(vm, theano_vm.Stack):
        return stack_order(fgraph, nodes)
    if isinstance(vm, (theano_vm.Loop, theano_vm.LoopGC)):
        return nodes
    return cvm_order(fgraph, nodes)


class _TracingMixin:
    """Linker mixin: thunks record their node in ``self.trace_log`` when they run.

    The wrapper has no ``cthunk`` attribute, so the C VM calls it through its
    Python path (``pycall``); the walk that decides the order is the same code.
    """

    trace_log = None
    trace_memory = False

    def make_vm(self, nodes, thunks, *args, **kwargs):
        log = self.trace_log
        if log is None:       # a linker made from this one (a scan's inner function): not traced
            return super().make_vm(nodes, thunks, *args, **kwargs)
        wrapped = []
        for node, th in zip(nodes, thunks):
            def run(th=th, node=node):
                if self.trace_memory:     # (node, traced bytes before, high-water mark during)
                    before = tracemalloc.get_traced_memory()[0]
                    tracemalloc.reset_peak()
                    try:
                        return th()
                    finally:
                        log.append((node, before, tracemalloc.get_traced_memory()[1]))
                log.append(node)
                return th()
            run.lazy, run.inputs, run.outputs = th.lazy, th.inputs, th.outputs
            wrapped.append(run)
        return super().make_vm(nodes, wrapped, *args, **kwargs)


def traced_function(f, memory: bool = False):
    """A copy of ``f`` (same graph, same linker settings, same shared storage) that logs.

    Returns ``(g, log)``: each call of ``g`` appends the Apply nodes it runs to
    ``log`` (clear it between calls); with ``memory=True`` it appends
    ``(node, bytes traced before it ran, high-water mark while it ran)`` instead
    (start ``tracemalloc`` first).  Shared-variable updates of ``g`` act on the
    same shared variables as ``f``.
    """
    maker = copy.copy(f.maker)
    linker = copy.copy(f.maker.linker)
    linker.__class__ = type("Tracing" + type(linker).__name__, (_TracingMixin, type(linker)), {})
    linker.trace_log = []
    linker.trace_memory = memory
    maker.linker = linker
    # FunctionMaker.create takes f's Containers as input storage (function_module.py:1634-1690):
    # shared variables stay shared with f.
    g = maker.create(list(f.input_storage), trustme=True)
    return g, linker.trace_log


def trace_order(f, *args, **kwargs) -> list:
    """Call ``f(*args)`` through a traced copy and return the Apply nodes in executed order.

    Note that a function with updates updates its shared variables, as ``f`` would.

    Examples
    --------
    >>> import numpy as np, theano, theano.tensor as T
    >>> x = T.vector('x'); f = theano.function([x], [T.exp(x), T.log(x)])
    >>> [str(n.op) for n in trace_order(f, np.ones(3))]
    ['Elemwise{exp,no_inplace}', 'Elemwise{log,no_inplace}']
    """
    g, log = traced_function(f)
    del log[:]
    g(*args, **kwargs)
    return list(log)
