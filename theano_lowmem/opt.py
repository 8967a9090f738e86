"""The ``lowmem`` optimizer pass: a compile-time order, pinned by
:class:`theano_lowmem.order.OrderFeature` (re-exported here: pickles name
``theano_lowmem.opt.OrderFeature``)."""
from __future__ import annotations

import time

import theano
from theano.compile import mode as theano_mode
from theano.gof import Optimizer

from .executed import NotReplicable, cvm_order
from .order import OrderFeature, attach_order, planned_order, unconditional_nodes, warn  # noqa: F401
from .scans import _include_lowmem_in_scans

__all__ = ["LowMemOpt", "OrderFeature", "attach_order", "planned_order", "register",
           "unconditional_nodes"]

OPT_NAME = "lowmem"
OPT_POSITION = 100.5
COMBINED_NAME = "fast_run+lowmem"
_deferred_noted = False


def _flag(name: str, default):
    return getattr(theano.config, name, default)


def _unknown_inputs(fgraph) -> list[str]:
    """Explicit tensor inputs whose shape nothing gives at compile time (no test value)."""
    from theano.compile.sharedvalue import SharedVariable
    from theano.gof import Constant
    from theano.tensor.type import TensorType
    return [str(v) for v in fgraph.inputs
            if isinstance(v.type, TensorType) and v.type.ndim > 0
            and not isinstance(v, (SharedVariable, Constant))
            and getattr(v.tag, "test_value", None) is None]


def _note_deferred() -> None:
    """Say once per process what happens to graphs whose sizes are only known at call time."""
    global _deferred_noted
    if _deferred_noted:
        return
    _deferred_noted = True
    if not _flag("lowmem_call_plan", True):
        warn("call-time planning is off (lowmem_call_plan=False) and input shapes are "
             "unknown at compile time: such functions keep Theano's order")


class LowMemOpt(Optimizer):
    """Pick a low-peak-memory order for the graph and pin it (:class:`OrderFeature`),
    when every size is known at compile time (shared variables, constants, test
    values) and the graph is not lazy.  Otherwise Theano's order stays: the sharing
    linker plans at each call from the real shapes (:mod:`theano_lowmem.callplan`),
    and an order chosen on guessed sizes is never pinned.

    The candidates include the order Theano's C VM would run, so by the memory
    model the pinned order is never worse.  Any failure leaves the graph as it
    was, with one warning.  Registered in ``optdb`` as ``lowmem`` (:func:`register`).

    Examples
    --------
    >>> import theano, theano.tensor as T
    >>> import numpy as np
    >>> x = T.vector('x'); x.tag.test_value = np.ones(1000)     # sizes known at compile time
    >>> f = theano.function([x], [T.exp(x).sum(), T.log(x).sum()],
    ...                     mode=theano.Mode(optimizer='fast_run+lowmem'))
    >>> planned_order(f.maker.fgraph) is not None
    True
    >>> y = T.vector('y')                                       # unknown until the call
    >>> g = theano.function([y], [T.exp(y).sum(), T.log(y).sum()],
    ...                     mode=theano.Mode(optimizer='fast_run+lowmem'))
    >>> planned_order(g.maker.fgraph) is None, g.maker.fgraph.lowmem_info['method']
    (True, "Theano's order (sizes known at call time)")
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
        from .executed import is_lazy_node
        from .model import model_of_fgraph
        t0 = time.perf_counter()
        _include_lowmem_in_scans(fgraph)
        for feature in list(fgraph._features):       # re-optimisation: plan afresh
            if isinstance(feature, OrderFeature):
                fgraph.remove_feature(feature)
        fgraph.lowmem_info = info = {}
        nodes = fgraph.apply_nodes        # (toposort() only when we schedule: it costs a walk
        if len(nodes) < 2:                # of the graph and every feature's orderings())
            return
        # A compile-time order is pinned only when it is chosen on exact sizes and compared
        # with the order Theano really runs.  Lazy graphs (ifelse) run a data-dependent
        # order the replica cannot give (the old code compared with toposort(), which is
        # not what the C VM runs: issue 10, the stochastic-depth voxel net).
        if any(is_lazy_node(n) for n in nodes):
            info.update(method="Theano's order (lazy graph)", exact_sizes=False)
            return
        unknown = _unknown_inputs(fgraph)
        if unknown:
            info.update(method="Theano's order (sizes known at call time)", exact_sizes=False,
                        unknown_inputs=unknown)
            _note_deferred()
            return
        try:
            baseline = cvm_order(fgraph, fgraph.toposort())
        except NotReplicable:
            return
        model = model_of_fgraph(fgraph, baseline)
        if not all(model.exact[b] for b in model.graph.buffers):   # data-dependent sizes
            info.update(method="Theano's order (data-dependent sizes)", exact_sizes=False)
            return
        result = schedule(model.graph, baseline=range(len(baseline)),
                          time_budget=float(_flag("lowmem_time_budget", 0.25)),
                          exact_max_nodes=int(_flag("lowmem_exact_max_nodes", 20)))
        info.update(method=result.method, peak=result.peak, baseline_peak=result.baseline_peak,
                    optimal=result.optimal, lower_bound=result.lower_bound,
                    schedule_seconds=result.elapsed, work=result.work, capped=result.capped,
                    pass_seconds=time.perf_counter() - t0, exact_sizes=True, robust=True)
        attach_order(fgraph, [model.nodes[i] for i in result.order], dict(info))

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
