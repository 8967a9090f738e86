"""The Feature that makes every Theano VM run a given order.

Why ``orderings()`` and not the linker's ``schedule``: the default C VM ignores
the schedule and walks depth-first from the outputs, honouring only
``fgraph.orderings()`` as prerequisites (``lazylinker_c.c``, ``lazy_rec_eval``;
the prerequisites come from ``VM_Linker.make_vm``, vm.py).  A full chain
``order[i-1] -> order[i]`` therefore fixes the order of the CVM, of the Python
``Stack`` VM (its ``destroy_dependencies``) and of ``Loop`` (``toposort()``).

This module needs neither the memory model nor the pass: the pass
(:mod:`theano_lowmem.opt`) and the linker (:mod:`theano_lowmem.storage_reuse`)
both import it.
"""
from __future__ import annotations

import warnings
from collections import OrderedDict
from typing import Any, Sequence

import theano
from theano.gof.toolbox import Feature

from .executed import is_lazy_node


def warn(msg: str) -> None:
    """One warning (unless flag ``lowmem_warn`` is false)."""
    if getattr(theano.config, "lowmem_warn", True):
        warnings.warn("theano_lowmem: " + msg, stacklevel=3)


def unconditional_nodes(fgraph) -> set:
    """Nodes every call runs: reachable from the outputs without entering a lazy
    op's branch inputs (for ``IfElse``, every input but the condition).

    Chaining a node outside this set would make the C VM compute an untaken
    ``ifelse`` branch, since it evaluates prerequisites unconditionally
    (lazylinker_c.c:571-580).
    """
    seen: set = set()
    stack = [o.owner for o in fgraph.outputs if o.owner is not None]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        inputs = node.inputs[:1] if is_lazy_node(node) else node.inputs
        stack.extend(i.owner for i in inputs if i.owner is not None and i.owner not in seen)
    return seen


class OrderFeature(Feature):
    """Pins an execution order through ``orderings()`` (a chain over ``order``).

    Nodes the order does not know (``DeepCopyOp`` added by ``FunctionMaker``
    after the optimizer, nodes rewritten later) are left free; chain links to
    nodes no longer in the graph are skipped.  When the graph changes, the
    chain is checked again before it is next used and dropped (with a warning)
    if it contradicts a data dependency, so a later rewrite can never make the
    graph cyclic.

    Parameters
    ----------
    order : sequence of Apply
        The execution order, a topological order of the graph.
    chained : collection of Apply, optional
        The nodes to chain (default: all of ``order``).  Lazy graphs chain only
        unconditional nodes.
    info : dict, optional
        What the scheduler reported (peaks, method, time), for reports.

    Examples
    --------
    >>> import theano, theano.tensor as T
    >>> x = T.vector('x'); a, b = T.exp(x), T.log(x)
    >>> fg = theano.gof.FunctionGraph([x], [a, b], clone=False)
    >>> fg.attach_feature(OrderFeature([b.owner, a.owner]))
    >>> [str(n.op) for n in fg.toposort()]
    ['Elemwise{log,no_inplace}', 'Elemwise{exp,no_inplace}']
    """

    def __init__(self, order: Sequence[Any], chained=None, info: dict | None = None):
        self.order = list(order)
        self.chained = set(self.order if chained is None else chained)
        self.info = dict(info or {})
        self.valid = True
        self._dirty = True

    # Feature callbacks (theano/gof/toolbox.py, Feature)
    def on_attach(self, fgraph):
        if any(isinstance(f, OrderFeature) for f in fgraph._features if f is not self):
            raise theano.gof.toolbox.AlreadyThere("an OrderFeature is already attached")

    def on_import(self, fgraph, node, reason):
        self._dirty = True

    def on_change_input(self, fgraph, node, i, r, new_r, reason=None):
        self._dirty = True

    def on_prune(self, fgraph, node, reason):
        self._dirty = True

    def clone(self):
        return OrderFeature(self.order, self.chained, self.info)

    def chain(self, fgraph) -> list:
        """The chained nodes still in the graph, in order."""
        live = fgraph.apply_nodes
        return [n for n in self.order if n in self.chained and n in live]

    def _revalidate(self, fgraph) -> None:
        self._dirty = False
        if not self.valid:
            return
        pos = {n: i for i, n in enumerate(self.chain(fgraph))}
        # every chained ancestor of a chained node must come earlier in the chain
        for node, i in pos.items():
            stack, seen = [i_.owner for i_ in node.inputs if i_.owner is not None], set()
            while stack:
                a = stack.pop()
                if a in seen:
                    continue
                seen.add(a)
                if a in pos:
                    if pos[a] > i:
                        self.valid = False
                        warn(f"the pinned order no longer fits the graph ({a} must run before "
                             f"{node}); falling back to Theano's order")
                        return
                    continue      # its own ancestors were checked when it was visited
                stack.extend(x.owner for x in a.inputs if x.owner is not None)

    def orderings(self, fgraph):
        ords = OrderedDict()
        if self._dirty:
            self._revalidate(fgraph)
        if not self.valid:
            return ords
        prev = None
        for node in self.chain(fgraph):
            if prev is not None:
                ords[node] = [prev]
            prev = node
        return ords


def planned_order(fgraph) -> list | None:
    """The order pinned by an attached, valid :class:`OrderFeature`, else ``None``."""
    for feature in fgraph._features:
        if isinstance(feature, OrderFeature):
            if feature._dirty:
                feature._revalidate(fgraph)
            return feature.chain(fgraph) if feature.valid else None
    return None


def attach_order(fgraph, order: Sequence[Any], info: dict | None = None) -> OrderFeature:
    """Pin ``order`` on ``fgraph`` (replacing an OrderFeature already there).

    Lazy graphs get a partial chain over :func:`unconditional_nodes`.
    """
    for feature in list(fgraph._features):
        if isinstance(feature, OrderFeature):
            if info is None:           # re-pinned by the linker: keep what the pass reported
                info = dict(feature.info, repinned=True)
            fgraph.remove_feature(feature)
    chained = None
    if any(is_lazy_node(n) for n in fgraph.apply_nodes):
        chained = unconditional_nodes(fgraph)
    feature = OrderFeature(order, chained, info)
    fgraph.attach_feature(feature)
    return feature
