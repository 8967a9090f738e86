"""The ``lowmem`` optimizer pass and the Feature that makes every VM run its order.

Why ``orderings()`` and not the linker's ``schedule``: the default C VM ignores
the schedule and walks depth-first from the outputs, honouring only
``fgraph.orderings()`` as prerequisites (``lazylinker_c.c``, ``lazy_rec_eval``;
the prerequisites come from ``VM_Linker.make_vm``, vm.py).  A full chain
``order[i-1] -> order[i]`` therefore fixes the order of the CVM, of the Python
``Stack`` VM (its ``destroy_dependencies``) and of ``Loop`` (``toposort()``).
"""
from __future__ import annotations

import time
import warnings
from collections import OrderedDict
from typing import Any, Sequence

import theano
from theano.compile import mode as theano_mode
from theano.gof import Optimizer
from theano.gof.toolbox import Feature

from .executed import NotReplicable, cvm_order, is_lazy_node

OPT_NAME = "lowmem"
OPT_POSITION = 100.5
COMBINED_NAME = "fast_run+lowmem"
# Other sizes tried for dimensions nothing fixes at compile time (see LowMemOpt._robust).
ROBUSTNESS_DIMS = (1, 16, 1024)


def _flag(name: str, default):
    return getattr(theano.config, name, default)


def warn(msg: str) -> None:
    """One warning (unless flag ``lowmem_warn`` is false)."""
    if _flag("lowmem_warn", True):
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


def _include_lowmem_in_scans(fgraph) -> None:
    """Scan compiles its inner function with its own mode (scan_op.py:174-186,
    860-866), not the outer one: add the pass there if not compiled yet."""
    from theano.scan_module.scan_op import Scan
    for node in fgraph.apply_nodes:
        op = node.op
        if isinstance(op, Scan) and not getattr(op, "fn", None):
            inner = op.mode_instance
            if isinstance(inner.provided_optimizer, theano.gof.Query) and \
                    OPT_NAME not in inner.provided_optimizer.include:
                op.mode_instance = inner.including(OPT_NAME)


class LowMemOpt(Optimizer):
    """Pick a low-peak-memory order for the graph and pin it (:class:`OrderFeature`).

    The candidates include the order Theano's C VM would run, so by the memory
    model the pinned order is never worse.  Any failure leaves the graph as it
    was, with one warning.  Registered in ``optdb`` as ``lowmem`` (:func:`register`).

    Examples
    --------
    >>> import theano, theano.tensor as T
    >>> x = T.vector('x')
    >>> f = theano.function([x], [T.exp(x).sum(), T.log(x).sum()],
    ...                     mode=theano.Mode(optimizer='fast_run+lowmem'))
    >>> planned_order(f.maker.fgraph) is not None
    True
    """

    def add_requirements(self, fgraph):
        pass   # ShapeFeature is read when present, else built detached (model.py)

    def apply(self, fgraph):
        try:
            self._apply(fgraph)
        except Exception as exc:  # never break compilation: Theano's own order stays
            warn(f"could not schedule this graph ({type(exc).__name__}: {exc}); "
                 f"keeping Theano's order")

    def _apply(self, fgraph):
        from .core.schedule import schedule
        from .model import model_of_fgraph
        t0 = time.perf_counter()
        _include_lowmem_in_scans(fgraph)
        for feature in list(fgraph._features):       # re-optimisation: plan afresh
            if isinstance(feature, OrderFeature):
                fgraph.remove_feature(feature)
        nodes = fgraph.toposort()
        if len(nodes) < 2:
            return
        try:
            baseline = cvm_order(fgraph, nodes)
        except NotReplicable:
            baseline = nodes
        model = model_of_fgraph(fgraph, baseline)
        result = schedule(model.graph, baseline=range(len(baseline)),
                          time_budget=float(_flag("lowmem_time_budget", 0.25)),
                          exact_max_nodes=int(_flag("lowmem_exact_max_nodes", 20)))
        order = list(result.order)
        exact_sizes = all(model.exact[b] for b in model.graph.buffers)
        robust = exact_sizes or self._robust(fgraph, baseline, order, model)
        if not robust:
            order = list(range(len(baseline)))
        info = dict(method=result.method if robust else "baseline (not robust to sizes)",
                    peak=result.peak, baseline_peak=result.baseline_peak,
                    optimal=result.optimal, lower_bound=result.lower_bound,
                    schedule_seconds=result.elapsed, work=result.work, capped=result.capped,
                    pass_seconds=time.perf_counter() - t0,
                    exact_sizes=exact_sizes, robust=robust)
        attach_order(fgraph, [model.nodes[i] for i in order], info)

    @staticmethod
    def _robust(fgraph, baseline, order, model) -> bool:
        """With sizes that depend on the hint for unknown dimensions, keep the new
        order only if it is no worse than Theano's for other plausible sizes too."""
        from .core.memory import peak
        hint = int(_flag("lowmem_unknown_dim", 128))
        for alt in ROBUSTNESS_DIMS:
            if alt == hint:
                continue
            g = model.graph_with(alt)
            if peak(g, order, check=False) > peak(g, range(len(baseline)), check=False):
                return False
        return True

    def print_summary(self, stream=None, level=0, depth=-1):
        print(f"{' ' * level}LowMemOpt (lowmem, position {OPT_POSITION})", file=stream)


def register() -> None:
    """Register the ``lowmem`` pass and the ``fast_run+lowmem`` optimizer (idempotent)."""
    optdb = theano_mode.optdb
    if OPT_NAME not in optdb.__position__:
        # After merge3 (100): every rewrite, inplace and view pass has run, so
        # destroy_map/view_map and the DestroyHandler orderings are final.  No
        # tag: the name is the tag, so only queries that ask for 'lowmem' run it.
        optdb.register(OPT_NAME, LowMemOpt(), OPT_POSITION)
    # register_optimizer refuses known names (mode.py:92-96); assignment is idempotent.
    theano_mode.predefined_optimizers[COMBINED_NAME] = theano.gof.Query(
        include=["fast_run", OPT_NAME])
