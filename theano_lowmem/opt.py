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
# Other sizes tried for dimensions nothing fixes at compile time (see LowMemOpt._robust).
ROBUSTNESS_DIMS = (1, 16, 1024)


def _flag(name: str, default):
    return getattr(theano.config, name, default)


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
