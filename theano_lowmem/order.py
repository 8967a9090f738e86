"""The Feature that makes every Theano VM run a given order.

Why ``orderings()`` and not the linker's ``schedule``: the default C VM ignores
the schedule and walks depth-first from the outputs, honouring only
``fgraph.orderings()`` as prerequisites (``lazylinker_c.c``, ``lazy_rec_eval``;
the prerequisites come from ``VM_Linker.make_vm``, vm.py:961-970).  A full chain
``order[i-1] -> order[i]`` therefore fixes the order of the CVM, of the Python
``Stack`` VM (its ``destroy_dependencies``, vm.py:354) and of ``Loop``
(``toposort()``, link.py:409).

Only the C VM gets fewer prerequisites: ``lazy_rec_eval`` is recursive C, and a
full chain makes it recurse once per node (a 1,200-node graph overflowed a 64 KB
thread stack).  When ``VM_Linker.make_vm`` builds a CVM it calls
``fgraph.orderings()`` itself; :meth:`OrderFeature.orderings` recognises that
caller and returns the minimal prerequisites of
:func:`theano_lowmem.core.prereqs.cvm_prereqs` instead, checked against the
walk's replica for the exact variable numbering ``make_vm`` uses.  Every other
caller (toposort, the ``Stack`` VM, DebugMode, our replicas) gets the chain.

Copies and clones carry the order: each pinned node's ``tag`` records
``(stamp, position, chained)``; ``Apply.clone`` copies tags (graph.py:192-209,
``Apply.clone``), so ``FunctionGraph.clone_get_equiv`` (fg.py:753-782) and
``Function.copy`` (function_module.py:539-712) produce nodes that still say
where they run.  A clone gets its own feature naming its own nodes
(:meth:`OrderFeature.on_attach`); a copy's ``LowMemLinker`` re-pins the
stamped order (:func:`carry_order`).

This module needs neither the memory model nor the pass: the pass
(:mod:`theano_lowmem.opt`) and the linker (:mod:`theano_lowmem.storage_reuse`)
both import it.
"""
from __future__ import annotations

import sys
import warnings
from collections import OrderedDict
from typing import Any, Sequence

import theano
from theano.gof.fg import FunctionGraph
from theano.gof.toolbox import AlreadyThere, Feature
from theano.gof.vm import VM_Linker

from .core import executed as core_executed
from .core.prereqs import cvm_prereqs
from .executed import is_lazy_node

#: Kill switch: ``False`` gives the C VM the full chain too (as before issue 12).
MINIMAL_CVM_PREREQS = True
#: Attribute of ``Apply.tag`` that carries a node's place in a pinned order.
STAMP_ATTR = "lowmem_order"


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


class OrderStamp:
    """Identity of one pinned order, shared by the tags of its nodes (and their clones)."""

    def __init__(self, info: dict):
        self.info = info


def _cvm_schedule_of_caller():
    """The node list ``VM_Linker.make_vm`` is building a C VM for, if the call chain is
    ``make_vm`` -> ``FunctionGraph.orderings`` -> ``OrderFeature.orderings`` -> here
    (vm.py:961: in ``make_vm`` only the CVM branch asks for orderings), else ``None``."""
    try:
        fg_frame = sys._getframe(2)
        vm_frame = fg_frame.f_back
    except ValueError:
        return None
    if vm_frame is None or fg_frame.f_code is not FunctionGraph.orderings.__code__ \
            or vm_frame.f_code is not VM_Linker.make_vm.__code__:
        return None
    return vm_frame.f_locals.get("nodes")


class OrderFeature(Feature):
    """Pins an execution order through ``orderings()``.

    Nodes the order does not know (``DeepCopyOp`` added by ``FunctionMaker``
    after the optimizer, nodes rewritten later) are left free; links to nodes
    no longer in the graph are skipped.  When the graph changes, the order is
    checked again before it is next used and dropped (with a warning) if it
    contradicts a data dependency, so a later rewrite can never make the graph
    cyclic.

    ``orderings()`` returns a full chain over the chained nodes, except to
    ``VM_Linker.make_vm`` building a C VM: it gets only the prerequisites that
    VM's walk needs (:func:`theano_lowmem.core.prereqs.cvm_prereqs`).  Both are
    cached until the order or the graph changes.  Do not mutate what it returns.

    Parameters
    ----------
    order : sequence of Apply
        The execution order, a topological order of the graph.
    chained : collection of Apply, optional
        The nodes to pin (default: all of ``order``).  Lazy graphs pin only
        unconditional nodes.
    info : dict, optional
        What the scheduler reported (peaks, method, time), for reports.

    Attributes
    ----------
    order, chained, info, valid
        As above; ``valid`` turns False when the order contradicts the graph.
        Assigning ``order`` or ``chained`` drops the cached prerequisites.
    cvm_stats : dict or None
        The last C VM prerequisites: ``prereqs`` (edges given), ``chain``
        (edges a chain would give), ``depth`` (recursion depth of its walk),
        or ``fallback`` (why the chain was given instead).

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
        self.info = dict(info or {})
        self.valid = True
        self.fgraph = None
        self._order = list(order)
        self._chain_all = chained is None
        self._chained = set(self._order if chained is None else chained)
        self._stamp = OrderStamp(self.info)
        self._invalidate()
        self.cvm_stats: dict | None = None

    # ------------------------------------------------------------ the order
    @property
    def order(self) -> list:
        return self._order

    @order.setter
    def order(self, order: Sequence[Any]) -> None:
        self._order = list(order)
        if self._chain_all:
            self._chained = set(self._order)
        self._invalidate()
        self._restamp()

    @property
    def chained(self) -> set:
        return self._chained

    @chained.setter
    def chained(self, chained) -> None:
        self._chained = set(chained)
        self._chain_all = self._chained >= set(self._order)
        self._invalidate()
        self._restamp()

    def set_order(self, order: Sequence[Any]) -> None:
        """Pin ``order`` instead, in place (same chained set for lazy graphs).

        The new order is validated against the graph before it is next used
        (``valid`` is reset); cached prerequisites are recomputed.
        """
        self.valid = True
        self.order = order

    def _invalidate(self) -> None:
        self._dirty = True          # re-validate before the next use
        self._cache = None          # {'chain': [...], 'ords': OrderedDict, 'cvm': (key, ords)}

    # ------------------------------------------- Feature callbacks (toolbox.py)
    def on_attach(self, fgraph):
        if self.fgraph is not None and self.fgraph is not fgraph:
            # FunctionGraph.clone_get_equiv(attach_feature=True) attaches every feature
            # instance of the original to the clone (fg.py:779-781): give the clone its
            # own feature over its own nodes, found through the stamps their tags carry.
            carried = _from_stamps(fgraph, self._stamp)
            if carried is not None:
                fgraph.attach_feature(carried)
            raise AlreadyThere("this OrderFeature serves another graph")
        if any(isinstance(f, OrderFeature) for f in fgraph._features if f is not self):
            raise AlreadyThere("an OrderFeature is already attached")
        self.fgraph = fgraph
        self._invalidate()
        self._restamp()

    def on_detach(self, fgraph):
        if fgraph is self.fgraph:
            _clear_stamps(fgraph.apply_nodes, self._stamp)
            self.fgraph = None

    def on_import(self, fgraph, node, reason):
        self._invalidate()

    def on_change_input(self, fgraph, node, i, r, new_r, reason=None):
        self._invalidate()

    def on_prune(self, fgraph, node, reason):
        self._invalidate()

    def clone(self):
        return OrderFeature(self.order, None if self._chain_all else self.chained, self.info)

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_cache"] = None
        return d

    def __setstate__(self, d):
        if "order" in d:                         # pickled before issue 12
            d["_order"] = d.pop("order")
            d["_chained"] = set(d.pop("chained"))
            d["_chain_all"] = d["_chained"] >= set(d["_order"])
        self.__dict__.update(d)
        self.__dict__.setdefault("fgraph", None)
        self.__dict__.setdefault("_stamp", OrderStamp(self.info))
        self.__dict__.setdefault("cvm_stats", None)
        self._invalidate()

    def _restamp(self) -> None:
        fgraph = self.fgraph
        if fgraph is None:
            return
        _clear_stamps(fgraph.apply_nodes, self._stamp)
        self._stamp = OrderStamp(self.info)
        live = fgraph.apply_nodes
        for i, node in enumerate(self._order):
            if node in live:
                node.tag.__dict__[STAMP_ATTR] = (self._stamp, i, node in self._chained)

    # --------------------------------------------------------- orderings
    def chain(self, fgraph) -> list:
        """The chained nodes still in the graph, in order."""
        cache = self._cache_for()
        if "chain" not in cache:
            live = fgraph.apply_nodes
            cache["chain"] = [n for n in self._order if n in self._chained and n in live]
        return cache["chain"]

    def _cache_for(self) -> dict:
        if self._cache is None:
            self._cache = {}
        return self._cache

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
        if self._dirty:
            self._revalidate(fgraph)
        if not self.valid:
            return OrderedDict()
        cache = self._cache_for()
        nodes = _cvm_schedule_of_caller() if MINIMAL_CVM_PREREQS else None
        if nodes is not None:
            key = tuple(map(id, nodes))
            if "cvm" not in cache or cache["cvm"][0] != key:
                cache["cvm"] = (key, self._cvm_orderings(fgraph, list(nodes)))
            if cache["cvm"][1] is not None:
                return cache["cvm"][1]
        if "ords" not in cache:
            ords, prev = OrderedDict(), None
            for node in self.chain(fgraph):
                if prev is not None:
                    ords[node] = [prev]
                prev = node
            cache["ords"] = ords
        return cache["ords"]

    def _cvm_orderings(self, fgraph, nodes: list):
        """The fewest prerequisites that make the C VM built over ``nodes`` run our
        order (None: give it the chain).  ``nodes`` numbers the variables exactly as
        ``make_vm`` does (vm.py:905-960), which decides the order in which a node's
        prerequisites are visited."""
        chain = self.chain(fgraph)
        fallback = None
        if len(chain) < 2:
            fallback = "nothing to pin"
        elif len(nodes) != len(fgraph.apply_nodes) or set(nodes) != fgraph.apply_nodes:
            fallback = "the VM's node list is not the graph's"
        elif any(is_lazy_node(n) for n in nodes):
            fallback = "lazy nodes: the walk depends on data"
        if fallback:
            self.cvm_stats = dict(fallback=fallback)
            return None
        node_idx = {n: i for i, n in enumerate(nodes)}
        enc = _cvm_encoding(fgraph, nodes, self)
        if len(chain) == len(nodes):
            target = [node_idx[n] for n in chain]
        else:   # free nodes (DeepCopyOp...) go where the chain's walk puts them today
            full = [list(p) for p in enc[3]]
            for a, b in zip(chain, chain[1:]):
                full[node_idx[b]] = sorted(set(full[node_idx[b]]).union(enc[1][node_idx[a]]))
            target = core_executed.cvm_order(enc[0], enc[1], enc[2], full, enc[4])
        pred, walked, depth = cvm_prereqs(target, *enc)
        if walked != target:
            self.cvm_stats = dict(fallback="the replica walk does not reproduce the order")
            return None
        ords = OrderedDict((nodes[i], [nodes[pred[i]]]) for i in target if pred[i] >= 0)
        self.cvm_stats = dict(prereqs=len(ords), chain=len(chain) - 1, depth=depth)
        return ords


def _cvm_encoding(fgraph, nodes: list, ours: OrderFeature):
    """``make_vm``'s integer encoding of ``fgraph`` (vm.py:905-970), with the
    prerequisites of every feature but ``ours``."""
    from .executed import _encode
    ords: dict = {}
    for feature in fgraph._features:
        if feature is ours or not hasattr(feature, "orderings"):
            continue
        for node, before in feature.orderings(fgraph).items():
            ords.setdefault(node, []).extend(before)
    return _encode(fgraph, nodes, ordered_prereqs=False, ords=ords)


# ------------------------------------------------------------------ stamps
def _clear_stamps(nodes, stamp: OrderStamp) -> None:
    for node in nodes:
        s = node.tag.__dict__.get(STAMP_ATTR)
        if s is not None and s[0] is stamp:
            del node.tag.__dict__[STAMP_ATTR]


def _from_stamps(fgraph, stamp: OrderStamp | None) -> OrderFeature | None:
    """A feature over ``fgraph``'s nodes that carry ``stamp`` (``None``: the one stamp
    they all carry), in the stamped positions; None if there is nothing (or more
    than one order) to carry."""
    found = []
    stamps = set()
    for node in fgraph.apply_nodes:
        s = node.tag.__dict__.get(STAMP_ATTR)
        if s is None or (stamp is not None and s[0] is not stamp):
            continue
        stamps.add(id(s[0]))
        found.append((s[1], node, s[2], s[0]))
    if len(found) < 2 or len(stamps) != 1:
        return None
    found.sort(key=lambda t: t[0])
    order = [node for _, node, _, _ in found]
    chained = [node for _, node, flag, _ in found if flag]
    info = dict(found[0][3].info, carried=True)
    return OrderFeature(order, None if len(chained) == len(order) else chained, info)


def carry_order(fgraph) -> OrderFeature | None:
    """Pin again the order that the nodes of a copied graph carry, if none is pinned.

    ``Function.copy`` builds a bare FunctionGraph over clones of the original's
    nodes and does not optimise it again (function_module.py:609-612, 1489-1491),
    so without this the copy runs Theano's order.  The stamped order is kept
    only if it covers every node but ``DeepCopyOp``s and Theano can still sort
    the graph with it (the DestroyHandler's orderings included).  Returns the
    attached feature, or None.
    """
    from theano.compile.ops import DeepCopyOp
    if any(isinstance(f, OrderFeature) for f in fgraph._features):
        return None
    feature = _from_stamps(fgraph, None)
    if feature is None:
        return None
    # A copy is a clone: every node carries the stamp, but for DeepCopyOps FunctionMaker
    # added after the pass.  Anything else means the graph was rewritten since.
    if any(not isinstance(n.op, DeepCopyOp) for n in fgraph.apply_nodes - set(feature.order)):
        return None
    fgraph.attach_feature(feature)
    try:
        fgraph.toposort()
    except ValueError:          # "graph contains cycles": keep Theano's order
        fgraph.remove_feature(feature)
        return None
    return feature


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
