"""``LowMemLinker``: a ``VM_Linker`` whose intermediates share storage cells.

Same-Type, provably same-shape intermediates whose lifetimes do not overlap
get one storage cell (a ``[value]`` list), planned by
:func:`theano_lowmem.core.bufplan.plan_buffers`.  The cells must be in
``storage_map`` *before* the thunks are made: ``make_thunk`` captures the list
objects (C ops in the CLinker struct, op.py:830-831; Python ops as closure
defaults, op.py:879-899).  ``link.map_storage`` keeps a pre-filled
``storage_map`` (link.py:597-603), so we fill it and hand it to
``VM_Linker.make_all`` (vm.py:1050-1139).

What sharing buys:

* ``allow_gc=False``: the cells hold one array per colour instead of one per
  intermediate, i.e. about the gc-on peak, and ops that write into the array
  already in their cell (C Elemwise, CAReduce, Dot22 with real BLAS... see
  THEANO_FACTS §6) allocate nothing on warm calls.
* ``allow_gc=True``: the VM empties a cell after its occupant's last reader,
  so the next occupant allocates anyway (no saving, still correct), unless
  ``keep_for_reuse=True``: then an occupant that has a successor in its cell
  is not collected and the successor writes into its array.

The lifetimes are only true for the order the VM really runs, so the order is
pinned with a full chain (:func:`theano_lowmem.opt.attach_order`); all VMs
(CVM, Stack, Loop) follow a full chain.  Graphs with lazy nodes (``ifelse``)
run a data-dependent order: they are linked without sharing.
"""
from __future__ import annotations

import contextlib
import threading
import warnings
from typing import NamedTuple
from typing import Any

import theano
from theano.gof import link
from theano.gof import vm as theano_vm
from theano.gof.vm import VM_Linker
from theano.tensor.type import TensorType

from .core.bufplan import BufferPlan, PlanError, check_plan, plan_buffers
from .core.memory import lifetimes
from .callplan import no_cyclic_gc as _no_cyclic_gc
from .scans import use_in_scans

SHARE_BY = ("estimate", "type", "shape")
ARENA_MODES = ("gc_off", "always", "off")
LINKERS = {  # name -> constructor arguments, registered in theano.compile.mode.predefined_linkers
    "cvm_lowmem": dict(use_cloop=True),
    "cvm_lowmem_nogc": dict(allow_gc=False, use_cloop=True),
    "vm_lowmem": dict(use_cloop=False),
    "vm_lowmem_nogc": dict(allow_gc=False, use_cloop=False),
}


def _flag(name: str, default: Any) -> Any:
    return getattr(theano.config, name, default)


def is_known_op(op) -> bool:
    """Ops whose ``view_map``/``destroy_map`` we trust: Theano's own.

    A user op that returns an undeclared view of an input would keep that
    input's buffer alive past its modelled lifetime, and a later occupant of the
    input's cell would overwrite the view's data.  Stock Theano with
    ``allow_gc=False`` never hands a cell to another variable, so such an op
    works there; we leave its inputs and outputs unshared.
    """
    return type(op).__module__.split(".")[0] == "theano"


#: C ops whose output is a fresh C-contiguous array whatever their inputs' layout
#: (blas.py:964, 1571: PyArray_SimpleNew; nnet.py:174, 497: Softmax*; corr.py:559:
#: PyArray_ZEROS(..., 0); CAReduce allocates C order).
_C_ORDER_OPS = ("Dot22", "Dot22Scalar", "Softmax", "SoftmaxWithBias", "SoftmaxGrad",
                "CorrMM", "CorrMM_gradWeights", "CorrMM_gradInputs", "CAReduce", "Sum",
                "Prod", "CAReduceDtype", "MaxAndArgmax", "Alloc", "AllocEmpty",
                # PyArray_ZEROS(..., 0) (pool.py:756, 1295, 1623, 1937, 2329) and
                # PyArray_SimpleNew (nnet.py:677, 1311): C order
                "Pool", "MaxPoolGrad", "AveragePoolGrad", "DownsampleFactorMaxGradGrad",
                "CrossentropySoftmaxArgmax1HotWithBias", "CrossentropySoftmax1HotWithBiasDx")


def may_be_fortran(fgraph, order) -> set:
    """Values of 2+ dimensions whose array may be Fortran-ordered (not C-contiguous).

    A cell shared between two values hands an op the array the other op left there.
    C ``Elemwise`` keeps that array when its dims fit (``PyArray_Resize`` to the same
    dims, elemwise_cgen.py:158-170) and writes its result in that array's layout, and it
    allocates Fortran order when all its inputs are Fortran (elemwise.py:929-952); a
    layout that differs from the one stock Theano would have produced changes the
    floating-point path of later BLAS calls, so results would no longer be bit-identical
    (tests/test_cell_tolerance.py: the layout stays; the bits differed with OpenBLAS on
    Intel CPUs, not on AMD EPYC with OpenBLAS 0.3.21).  Such values never share a cell: the graph
    inputs (a caller may pass Fortran arrays), transposing views, ``Elemwise`` outputs
    whose every 2+-d input may be Fortran, and outputs of ops that are not known to
    allocate C order (Python ops, ``Gemm{no_inplace}``, which copies its input's layout).
    """
    from theano.tensor.elemwise import DimShuffle, Elemwise
    maybe = {v for v in fgraph.inputs if getattr(v.type, "ndim", 0) >= 2}
    for node in order:
        op = node.op
        for i, out in enumerate(node.outputs):
            if getattr(out.type, "ndim", 0) < 2:
                continue
            if isinstance(op, DimShuffle):
                kept = [d for d in op.new_order if d != "x"]
                f = kept != sorted(kept) or node.inputs[0] in maybe
            elif isinstance(op, Elemwise):
                big = [x for x in node.inputs if getattr(x.type, "ndim", 0) >= 2
                       and not all(x.type.broadcastable)]
                f = bool(big) and all(x in maybe for x in big)
            else:
                table = set(getattr(op, "view_map", None) or {}) | \
                    set(getattr(op, "destroy_map", None) or {})
                if i in table:     # a view or inplace output: its input's layout, or any
                    f = True
                else:
                    f = type(op).__name__ not in _C_ORDER_OPS
            if f:
                maybe.add(out)
    return maybe


#: View ops whose output is C-contiguous when their input is (basic slicing keeps the
#: stride order; Reshape's C code reshapes in C order, basic.py Reshape.c_code).
_LAYOUT_KEEPING_VIEWS = ("Subtensor", "Reshape", "Rebroadcast", "SpecifyShape")


def fortran_masks(fgraph, order) -> dict:
    """For each value, when its array may be Fortran-ordered, as a bit mask.

    Bit 0: always possible (a transposing view, an op not known to allocate C order,
    an unknown view), as :func:`may_be_fortran`.  Bit ``i + 1``: possible if graph
    input ``i`` (2+ dims) is Fortran-ordered at the call (``PyArray_ISFORTRAN``, which
    C ``Elemwise`` tests, elemwise.py:929-938).  The arena reads the inputs' layout at
    call time and excludes only the values whose bits the call's Fortran inputs set.
    Unlike :func:`may_be_fortran`, views that keep their input's layout inherit its
    mask instead of counting as "any layout".  An Elemwise output gets the union of
    its big inputs' masks (bit 0 only if all of them have it; 0 if one has none): an
    over-approximation of "all its inputs may be Fortran", so never too few exclusions.
    """
    from theano.tensor.elemwise import DimShuffle, Elemwise
    mask = {}
    for i, v in enumerate(fgraph.inputs):
        if getattr(v.type, "ndim", 0) >= 2:
            mask[v] = 1 << (i + 1)
    for node in order:
        op = node.op
        vmap = getattr(op, "view_map", None) or {}
        dmap = getattr(op, "destroy_map", None) or {}
        for i, out in enumerate(node.outputs):
            if getattr(out.type, "ndim", 0) < 2:
                continue
            src = (vmap.get(i) or dmap.get(i) or [None])[0]
            if isinstance(op, DimShuffle):
                kept = [d for d in op.new_order if d != "x"]
                m = 1 if kept != sorted(kept) else mask.get(node.inputs[0], 0)
            elif i in dmap:            # inplace: the very array of its input
                m = mask.get(node.inputs[dmap[i][0]], 0)
            elif type(op).__name__ == "IfElse":
                # either branch's array (as_view) or its C-order copy (ifelse.py:259-282)
                n = op.n_outs
                m = mask.get(node.inputs[1 + i], 0) | mask.get(node.inputs[1 + n + i], 0)
            elif isinstance(op, Elemwise) or type(op).__name__ in ("Join", "Split"):
                # Join: PyArray_Concatenate (basic.py:4382) keeps the inputs' stride order,
                # so Fortran only when every input is; Split: Fortran when its input is
                # (PyArray_IS_F_CONTIGUOUS, basic.py Split.c_code)
                if src is not None:
                    m = mask.get(node.inputs[src], 0)
                else:
                    big = [mask.get(x, 0) for x in node.inputs
                           if getattr(x.type, "ndim", 0) >= 2 and not all(x.type.broadcastable)]
                    m = 0
                    if big and all(big):         # an input never Fortran: C output
                        for b in big:
                            m |= b
                        if not all(b & 1 for b in big):
                            m &= ~1
            elif src is not None:
                m = mask.get(node.inputs[src], 0) if type(op).__name__ in \
                    _LAYOUT_KEEPING_VIEWS else 1
            else:
                m = 0 if type(op).__name__ in _C_ORDER_OPS else 1
            if m:
                mask[out] = m
    return mask


def ensure_destroy_handler(fgraph) -> bool:
    """Attach a ``DestroyHandler`` if ``fgraph`` has destroyers but none is attached.

    ``Function.copy`` builds a bare FunctionGraph (function_module.py:601-604);
    without the handler's orderings an inplace op may run before a reader of
    the value it destroys, and stock Theano returns wrong results.  Returns
    True if one was attached.
    """
    if hasattr(fgraph, "destroy_handler"):
        return False
    if not any(getattr(n.op, "destroy_map", None) for n in fgraph.apply_nodes):
        return False
    fgraph.attach_feature(theano.gof.DestroyHandler())
    return True


_realloc = threading.local()     # .off > 0 while this thread links one of our plans


def _calculate_reallocate_info(*args, **kwargs):
    """Theano's ``calculate_reallocate_info``, except inside our own ``make_all`` (this thread)."""
    if getattr(_realloc, "off", 0):
        return {}
    return _STOCK_REALLOCATE(*args, **kwargs)


_STOCK_REALLOCATE = getattr(theano_vm.calculate_reallocate_info, "__wrapped_stock__",
                            theano_vm.calculate_reallocate_info)
_calculate_reallocate_info.__wrapped_stock__ = _STOCK_REALLOCATE


@contextlib.contextmanager
def _without_theano_reallocation():
    """Switch off Theano's own 0-d "reallocation" while *this thread* links our plan.

    ``VM_Linker.make_all`` (vm.py:1074, 1117-1120; Loop/LoopGC only) rebinds
    ``storage_map`` entries after the thunks captured their cells, then builds
    the LoopGC ``post_thunk_clear`` lists from the rebound map (vm.py:1122-1134):
    a cell we shared with a live value would be emptied before its reader ran.
    The reallocation never saves memory (design record 0003) and our plan
    subsumes it.  ``make_all`` looks the function up as a module global at call
    time (vm.py:1074), so a wrapper is installed there once; it calls Theano's
    own function unless the *calling thread* is inside this context, so a stock
    function linked at the same time in another thread is linked exactly as
    without theano_lowmem (tests/test_storage_reuse.py, threaded test).
    """
    if theano_vm.calculate_reallocate_info is not _calculate_reallocate_info:
        theano_vm.calculate_reallocate_info = _calculate_reallocate_info
    _realloc.off = getattr(_realloc, "off", 0) + 1
    try:
        yield
    finally:
        _realloc.off -= 1


class _NoSharing(Exception):
    """Planning declined (not an error): link as stock Theano does."""


class LowMemLinker(VM_Linker):
    """``VM_Linker`` that lets intermediates with disjoint lifetimes share storage cells.

    Parameters
    ----------
    allow_gc, use_cloop, callback, callback_input, lazy, schedule, c_thunks, allow_partial_eval
        As ``theano.gof.vm.VM_Linker``.
    share : bool, optional
        Plan shared cells (default: flag ``lowmem_share``, else True).  False
        links as ``VM_Linker`` does (plus the DestroyHandler fix).
    check_plan : bool, optional
        Check the plan (:func:`~theano_lowmem.core.bufplan.check_plan`) and the
        pinned order at link time and raise on a bad plan (default: flag
        ``lowmem_check_plan``, else False).
    keep_for_reuse : bool
        With ``allow_gc=True``: do not collect a value whose cell has a later
        occupant, so that occupant reuses its array.
    share_by : {'estimate', 'type', 'shape'}
        Sharing classes; all require an identical ``TensorType`` (dtype, ndim,
        broadcastable), which is all correctness needs: every op must accept
        any array of its output Type in its output cell, since input shapes
        change between calls.  The rest decides whether the array an op finds
        in its cell *fits* (else it allocates a new one):
        ``'shape'``: provably equal shapes only (ShapeFeature); ``'estimate'``
        (default): equal compile-time shape estimates (:mod:`theano_lowmem.model`:
        known dims exact, unknown dims at the ``lowmem_unknown_dim`` hint), so
        ``dot(h, W1)`` and ``dot(h, W2)`` share although nothing proves their
        shapes equal; ``'type'``: any shapes.  Among free cells, one whose last
        occupant has a provably equal shape is taken first.
    arena : {'gc_off', 'always', 'off'}, optional
        Place the intermediates of each call-time plan in one arena (default:
        flag ``lowmem_arena``, else ``'gc_off'``: with ``allow_gc=False``).
        The arena supersedes shared cells; see design 0006.

    Attributes
    ----------
    buffer_plan : BufferPlan or None
        The plan of the last ``make_all`` (None: no sharing).

    Examples
    --------
    >>> import numpy as np, theano, theano.tensor as T
    >>> x = T.vector('x'); h = x
    >>> for _ in range(4): h = T.tanh(h * 2)
    >>> f = theano.function([x], h.sum(), mode=theano.Mode(LowMemLinker(allow_gc=False,
    ...                     use_cloop=True, arena='off'), 'fast_compile'))
    >>> float(f(np.zeros(3)))
    0.0
    >>> f.maker.linker.buffer_plan.n_cells_after < f.maker.linker.buffer_plan.n_cells_before
    True
    """

    def __init__(self, allow_gc=None, use_cloop=False, callback=None, callback_input=None,
                 lazy=None, schedule=None, c_thunks=None, allow_partial_eval=None,
                 share: bool | None = None, check_plan: bool | None = None,
                 keep_for_reuse: bool = False, share_by: str = "estimate",
                 call_plan: bool | None = None, arena: str | None = None):
        if share_by not in SHARE_BY:
            raise ValueError(f"share_by must be one of {SHARE_BY}, got {share_by!r}")
        super().__init__(allow_gc=allow_gc, use_cloop=use_cloop, callback=callback,
                         callback_input=callback_input, lazy=lazy, schedule=schedule,
                         c_thunks=c_thunks, allow_partial_eval=allow_partial_eval)
        self.share = share
        self.check_plan = check_plan
        self.keep_for_reuse = keep_for_reuse
        self.share_by = share_by
        self.call_plan = call_plan
        if arena is not None and arena not in ARENA_MODES:
            raise ValueError(f"arena must be one of {ARENA_MODES} or None, got {arena!r}")
        self.arena = arena
        self.buffer_plan: BufferPlan | None = None
        self.call_planner = None        # the CallPlanner of the last make_all (call-time plans)
        self.declined = None
        self._vm_args: dict | None = None
        self._capture = False
        self._successor: dict = {}      # only during make_all: value -> next occupant of its cell

    def __getstate__(self):
        d = dict(self.__dict__)       # the call planner holds thunks: made again on unpickling
        d.update(call_planner=None, _vm_args=None, _capture=False)
        return d

    def __setstate__(self, d):
        super().__setstate__(d)
        for k, v in (("share", None), ("check_plan", None), ("keep_for_reuse", False),
                     ("share_by", "estimate"), ("buffer_plan", None), ("_successor", {}),
                     ("call_plan", None), ("call_planner", None), ("_vm_args", None),
                     ("_capture", False), ("arena", None), ("declined", None)):
            self.__dict__.setdefault(k, v)

    def accept(self, fgraph, no_recycling=None, profile=None):
        """As ``VM_Linker.accept``, forwarding our own arguments to the new linker (vm.py:797-808)."""
        if self.fgraph is not None and self.fgraph is not fgraph:
            new = type(self)(allow_gc=self.allow_gc, use_cloop=self.use_cloop,
                             callback=self.callback, callback_input=self.callback_input,
                             lazy=self.lazy, schedule=self.schedule, c_thunks=self.c_thunks,
                             allow_partial_eval=self.allow_partial_eval, share=self.share,
                             check_plan=self.check_plan, keep_for_reuse=self.keep_for_reuse,
                             share_by=self.share_by, call_plan=self.call_plan,
                             arena=self.arena)
            return new.accept(fgraph, no_recycling, profile)
        return super().accept(fgraph, no_recycling, profile)

    # ------------------------------------------------------------------ linking
    def make_all(self, profiler=None, input_storage=None, output_storage=None, storage_map=None):
        fgraph = self.fgraph
        warn = bool(_flag("lowmem_warn", True))
        use_in_scans(fgraph, self)
        try:
            ensure_destroy_handler(fgraph)
        except Exception as exc:   # an invalid inplace graph: Theano's own checks will report it
            if warn:
                warnings.warn(f"theano_lowmem: could not attach a DestroyHandler "
                              f"({type(exc).__name__}: {exc})", stacklevel=2)
        from .order import carry_order
        carry_order(fgraph)     # a Function.copy() graph: pin the order its nodes carry
        _warn_unsized_types(fgraph)
        share = self.share if self.share is not None else bool(_flag("lowmem_share", True))
        call_plan = self.call_plan if self.call_plan is not None else \
            bool(_flag("lowmem_call_plan", True))
        check = self.check_plan if self.check_plan is not None else \
            bool(_flag("lowmem_check_plan", False))
        self.buffer_plan, self._successor, self._vm_args = None, {}, None
        self.declined = None            # why this function links as Theano does, if it does
        supplied = dict(storage_map) if storage_map else {}
        if supplied:        # Function.copy(share_memory=True): the original's cells
            from .callplan import release_shared_cells
            release_shared_cells(supplied.values())
        linked = None
        if share or call_plan:
            try:
                with _no_cyclic_gc():
                    linked = self._plan(fgraph, supplied, check, share, call_plan)
                self.buffer_plan = linked.plan
            except _NoSharing as why:
                self.declined = str(why) or None
                if self.declined and warn:     # not silent: once per function
                    warnings.warn(f"theano_lowmem: no call-time plan, arena or shared cells for "
                                  f"this function: {why}; it runs Theano's order and cells",
                                  stacklevel=2)
            except Exception as exc:
                if check and isinstance(exc, PlanError):
                    raise
                linked, self._successor = None, {}
                if warn:
                    warnings.warn(f"theano_lowmem: storage sharing and call-time planning "
                                  f"disabled for this function ({type(exc).__name__}: {exc}); "
                                  f"linking as Theano does", stacklevel=2)
        if linked is None:
            return super().make_all(profiler, input_storage, output_storage, storage_map)
        if linked.moves or linked.fresh:
            input_storage, output_storage, storage_map = link.map_storage(
                fgraph, linked.order, input_storage, output_storage, storage_map)
            for var in linked.fresh:     # supplied cells whose sharing our order breaks
                storage_map[var] = [None]
            for var, rep in linked.moves.items():
                storage_map[var] = storage_map[rep]
        try:
            self._capture = linked.planner_args is not None
            with _without_theano_reallocation():
                out = super().make_all(profiler, input_storage, output_storage, storage_map)
            if linked.planner_args is not None and self._vm_args is not None:
                out = self._with_call_plans(out, linked)
            return out
        finally:
            self._successor, self._vm_args, self._capture = {}, None, False

    def _with_call_plans(self, out, linked):
        """Wrap the VM in a :class:`~theano_lowmem.callplan.PlannedVM` (one warning on failure)."""
        from .callplan import CallPlanner, PlannedVM
        vm = out[0]
        try:
            with _no_cyclic_gc():
                planner = CallPlanner(self, self.fgraph, base_vm=vm, vm_args=self._vm_args,
                                      make_vm=LowMemLinker.make_vm, **linked.planner_args)
        except Exception as exc:
            if _flag("lowmem_warn", True):
                warnings.warn(f"theano_lowmem: call-time planning disabled for this function "
                              f"({type(exc).__name__}: {exc}); it runs Theano's order",
                              stacklevel=3)
            return out
        self.call_planner = planner
        return (PlannedVM(planner, name=getattr(self.fgraph, "name", "") or ""),) + tuple(out[1:])

    def _arena_on(self) -> bool:
        """Whether call-time plans place intermediates in an arena (flag ``lowmem_arena``)."""
        mode = self.arena if self.arena is not None else str(_flag("lowmem_arena", "gc_off"))
        return mode == "always" or (mode == "gc_off" and not self.allow_gc)

    def _vm_kind(self) -> str:
        """The VM ``make_vm`` will build (vm.py, VM_Linker.make_vm): Stack with callbacks,
        memory profiling or partial evaluation without the C loop; else CVM with
        use_cloop; else Stack when lazy is asked for, else Loop/LoopGC."""
        lazy = self.lazy if self.lazy is not None else theano.config.vm.lazy
        stack = bool(self.callback or self.callback_input
                     or ((theano.config.profile or theano.config.print_global_stats)
                         and theano.config.profile_memory)
                     or (self.allow_partial_eval and not self.use_cloop)
                     or (lazy and not self.use_cloop))
        return "Stack" if stack else "CVM" if self.use_cloop else "Loop"

    def _plan(self, fgraph, supplied: dict, check: bool, share: bool, call_plan: bool):
        """The link-time plan: order, shared cells, and what call-time planning needs."""
        from . import order as opt
        from .executed import cvm_order, cvm_order_and_encoding, is_lazy_node, stack_order
        from .model import model_of_fgraph
        nodes = fgraph.apply_nodes
        lazy = sorted({type(n.op).__name__ for n in nodes if is_lazy_node(n)})
        if len(nodes) < 2:
            raise _NoSharing()
        kind = self._vm_kind()
        call_plan = call_plan and kind != "Stack"
        if lazy:                 # the executed order depends on the data
            if call_plan and kind == "CVM" and self._arena_on() and not supplied:
                return self._plan_lazy(fgraph, lazy)
            why = ("a Function.copy(share_memory=True) shares the original's cells" if supplied
                   else "only the C VM's walk is modelled" if not (call_plan and kind == "CVM")
                   else "with allow_gc=True and lowmem_arena=gc_off nothing is placed")
            raise _NoSharing(f"it has lazy op(s) {', '.join(lazy)}, whose executed order "
                             f"depends on the data, and its intermediates get an arena only "
                             f"with the C VM, call-time plans and allow_gc=False or "
                             f"lowmem_arena=always ({why})")
        walk = None
        if call_plan and kind == "CVM" and \
                not any(isinstance(f, opt.OrderFeature) for f in fgraph._features):
            # Call-time plans choose the order from exact sizes; the base VM runs Theano's
            # own walk (the baseline every plan compares with).  Nothing is pinned (the pass
            # pinned nothing either): make_all builds the base CVM over the nodes its
            # schedule gives (vm.py:1054) with fgraph.orderings() (vm.py:951), and with no
            # OrderFeature that is exactly what this replica walks.  The walk's encoding is
            # kept for the plans' C VMs (callplan._CVMFactory), which check the nodes.
            sched_nodes = list(self.schedule(fgraph))
            order, enc = cvm_order_and_encoding(fgraph, sched_nodes)
            walk = (sched_nodes, enc)
        elif call_plan:
            # An order the pass pinned (sizes known at compile time) or another VM: link in
            # Theano's own order, pinned so that every VM runs it.
            order = _theano_order(fgraph, kind)
            _pin(fgraph, order)
        else:
            order = opt.planned_order(fgraph)
            if order is None or len(order) != len(nodes) or set(order) != nodes:
                order = cvm_order(fgraph)          # what the C VM runs now (honours partial chains)
                opt.attach_order(fgraph, order)    # full chain: every VM runs exactly this
        # The lifetimes are only true if the VM runs `order` (core/executed.py replicas).
        replica = {"Stack": stack_order, "CVM": cvm_order, "Loop": self.schedule}[kind]
        if walk is None and list(replica(fgraph)) != list(order):
            raise RuntimeError(f"the {kind} order differs from the pinned order")
        # With allow_gc=True the VM empties a cell after its last reader, so a shared cell
        # saves nothing (unless keep_for_reuse); under call-time plans it would only
        # constrain the order.
        share = share and not (call_plan and self.allow_gc and not self.keep_for_reuse)
        # One arena per call-time plan supersedes same-Type cells (design 0006): every
        # intermediate, whatever its shape, gets bytes at a planned offset.
        arena = call_plan and self._arena_on()
        share = share and not arena
        # link-time sizes are guesses: needed only for the sharing keys and the supplied
        # cells' check; call-time plans size everything from the real shapes
        model = model_of_fgraph(fgraph, order, sizes=share or bool(supplied) or not call_plan)
        plan, moves, fresh = None, {}, []
        # Function.copy(share_memory=True) supplies the original's cells, some shared by the
        # original's plan: members whose sharing our order breaks get fresh cells, the rest
        # stay shared and every call-time order must keep them apart (like our own cells).
        supplied_groups: list[list[int]] = []
        if supplied:
            lts = lifetimes(model.graph, [model.node_id[a] for a in order])
            fresh = _broken_supplied_sharing(supplied, fgraph, model, lts)
            supplied_groups = _supplied_groups(supplied, model, set(fresh))
        if share:
            plan, moves = self._share_cells(fgraph, model, order, supplied, check)
        planner_args = None
        if call_plan:
            from .model import _shape_feature
            groups: dict[int, list[int]] = {}
            for v, rep in (plan.cell_of.items() if plan is not None else ()):
                groups.setdefault(rep, [rep]).append(v)
            cell_groups = list(groups.values()) + supplied_groups
            arena_ids, arena_fortran, input_views = (), {}, ()
            if arena:
                never = self._never_shared(fgraph, model, order, supplied, fortran=False)
                arena_ids, arena_fortran, input_views = _arena_candidates(
                    fgraph, model, order, never, supplied)
            planner_args = dict(
                model=model, link_ids=range(len(order)),
                extra_deps=_cell_constraints(model, cell_groups),
                cell_groups=cell_groups, shape_feature=_shape_feature(fgraph), cvm_walk=walk,
                arena_ids=arena_ids, arena_fortran=arena_fortran, input_views=input_views)
        return _Linked(order, moves, fresh, plan, planner_args)

    def _plan_lazy(self, fgraph, lazy_ops) -> "_Linked":
        """The plan of a graph with lazy nodes: Theano's order (the C VM's walk, which
        depends on the data, is left alone) and an arena per call-time plan whose
        placement holds for every branch the walk may take (:func:`~theano_lowmem.arena.
        lazy_conflicts`).  The inputs and outputs of lazy ops other than ``IfElse`` stay
        out of the arena."""
        from .arena import lazy_conflicts
        from .core import executed as core_executed
        from .executed import _encode
        from .model import _shape_feature, model_of_fgraph
        # Pin the nodes every call runs (order.unconditional_nodes: never a node inside a
        # branch, lazylinker_c.c:571-580 evaluates prerequisites unconditionally) in the
        # order of the C VM's walk with every branch taken.  Without this chain a node
        # needed by an output (a weight's gradient) but skipped by an untaken branch runs
        # whenever that output is asked for, so almost every pair of values may be live
        # together; with it, two such nodes always run in this order.
        nodes = fgraph.toposort()
        walk = core_executed.cvm_order(*_encode(fgraph, nodes, ordered_prereqs=False))
        order = [nodes[i] for i in walk] if len(walk) == len(nodes) else nodes
        _pin(fgraph, order)
        model = model_of_fgraph(fgraph, order, sizes=False)
        g = model.graph
        vid = model.value_id
        from theano.ifelse import IfElse
        from .executed import is_lazy_node
        never = self._never_shared(fgraph, model, order, {}, fortran=False)
        for a in order:      # a lazy op other than IfElse: we do not know what it reads
            if is_lazy_node(a) and not isinstance(a.op, IfElse):
                for v in a.inputs + a.outputs:
                    if v in vid:
                        never.add(g.root(vid[v]))
                        never.add(vid[v])
            elif isinstance(a.op, IfElse):  # its own (non-view) outputs are always fresh
                for v in a.outputs:         # copies (val.copy(), ifelse.py:262-265, 276-281)
                    if v in vid and g.root(vid[v]) == vid[v]:
                        never.add(vid[v])
        arena_ids, arena_fortran, input_views = _arena_candidates(fgraph, model, order, never, {})
        if not arena_ids:       # nothing to place: unpin (an invalid feature pins nothing)
            from .order import OrderFeature
            for f in fgraph._features:
                if isinstance(f, OrderFeature):
                    f.valid = False
            raise _NoSharing(f"it has lazy op(s) {', '.join(lazy_ops)} and no intermediate "
                             f"that can be placed in an arena")
        conflicts = lazy_conflicts(fgraph, model, arena_ids)
        planner_args = dict(
            model=model, link_ids=range(len(order)),
            extra_deps=_cell_constraints(model, []), cell_groups=[],
            shape_feature=_shape_feature(fgraph), arena_ids=arena_ids,
            arena_fortran=arena_fortran, input_views=input_views, lazy=conflicts,
            lazy_ops=tuple(lazy_ops))
        return _Linked(order, {}, [], None, planner_args)

    def _never_shared(self, fgraph, model, order, supplied: dict, fortran: bool = True) -> set:
        """Buffer roots that keep their own cell and never get arena bytes: what the
        caller sees or supplies (inputs, outputs and what they view, ``no_recycling``,
        cells a ``Function.copy(share_memory=True)`` shares), constants, values that
        may be Fortran-ordered (``fortran=False``: left to the caller), and the inputs
        and outputs of ops we do not know."""
        g = model.graph
        vid = model.value_id

        def roots_of(variables) -> set[int]:
            ids = [vid[v] for v in variables if v in vid]
            return {g.root(v) for v in ids} | set(ids)

        excluded = roots_of(list(fgraph.inputs) + list(fgraph.outputs))
        excluded |= roots_of(self.no_recycling or ())
        excluded |= roots_of(supplied)
        excluded |= {v for v, var in enumerate(model.variables)
                     if isinstance(var, theano.gof.Constant)}
        if fortran:
            excluded |= {vid[v] for v in may_be_fortran(fgraph, order) if v in vid}
        unknown = [a for a in order if not is_known_op(a.op)]
        excluded |= roots_of([v for a in unknown for v in a.inputs + a.outputs])
        if unknown and bool(_flag("lowmem_warn", True)):
            names = sorted({type(a.op).__name__ for a in unknown})
            warnings.warn(f"theano_lowmem: the inputs and outputs of op(s) {', '.join(names)} "
                          f"are not shared: only Theano's own ops are trusted to declare every "
                          f"view (view_map) and inplace write (destroy_map)", stacklevel=5)
        return excluded

    def _share_cells(self, fgraph, model, order, supplied: dict, check: bool):
        """Plan shared cells for ``order``: the BufferPlan and ``{var: representative}``."""
        g = model.graph
        lts = lifetimes(g, [model.node_id[a] for a in order])   # checks the order too
        excluded = self._never_shared(fgraph, model, order, supplied)
        shape_key = {lt.buffer: model.share_key[lt.buffer] for lt in lts}
        key = shape_key
        if self.share_by != "shape":   # same Type: ops accept any array of their output Type
            key = {b: (model.variables[b].type if isinstance(model.variables[b].type, TensorType)
                       else None) for b in shape_key}
            if self.share_by == "estimate":
                key = {b: None if k is None else (k, model.shapes[b]) for b, k in key.items()}
        plan = plan_buffers(lts, key, excluded=excluded, prefer=shape_key)
        if check:
            check_plan(lts, plan, excluded=excluded, key=key)
        moves = {model.variables[v]: model.variables[rep] for v, rep in plan.cell_of.items()}
        if self.keep_for_reuse and self.allow_gc:
            by_cell: dict[int, list] = {}
            reps = plan.cells()
            for lt in lts:
                if lt.buffer in plan.cell_of or lt.buffer in reps:
                    by_cell.setdefault(plan.cell_of.get(lt.buffer, lt.buffer), []).append(lt)
            for members in by_cell.values():
                members.sort(key=lambda m: (m.start, m.buffer))
                for a, b in zip(members, members[1:]):
                    self._successor[model.variables[a.buffer]] = model.variables[b.buffer]
        return plan, moves

    # ------------------------------------------------------------------- gc
    def compute_gc_dependencies(self, variables):
        """As ``VM_Linker.compute_gc_dependencies`` (vm.py:825-866); with ``keep_for_reuse``
        a value also waits for the next occupant of its cell, so the CVM and the Stack VM
        leave its array in the cell for that occupant to write into (the end-of-call
        sweep, lazylinker_c.c:920-940, still empties every cell)."""
        deps = super().compute_gc_dependencies(variables)
        for var, nxt in self._successor.items():
            if var in deps:
                deps[var] = list(deps[var]) + [nxt]
        return deps

    def make_vm(self, nodes, thunks, input_storage, output_storage, storage_map,
                post_thunk_clear, computed, compute_map, updated_vars):
        from .callplan import hold_inner_plans
        thunks = hold_inner_plans(nodes, thunks)   # scan steps: one signature read per run
        if self._capture:   # the base VM: call-time plans build theirs from the same arguments
            self._capture = False
            self._vm_args = dict(nodes=nodes, thunks=thunks, input_storage=input_storage,
                                 output_storage=output_storage, storage_map=storage_map,
                                 post_thunk_clear=post_thunk_clear, computed=computed,
                                 compute_map=compute_map, updated_vars=updated_vars)
        if post_thunk_clear is not None and self._successor:   # LoopGC: same rule as above
            ptc = []
            for node, clears in zip(nodes, post_thunk_clear):
                keep = {id(storage_map[v]) for v in node.inputs if v in self._successor}
                ptc.append([c for c in clears if id(c) not in keep])
            post_thunk_clear = ptc
        return super().make_vm(nodes, thunks, input_storage, output_storage, storage_map,
                               post_thunk_clear, computed, compute_map, updated_vars)


def _arena_candidates(fgraph, model, order, never: set, supplied: dict):
    """``(arena_ids, arena_fortran, input_views)`` of a linked function: the buffer roots
    that may get arena bytes (tensors not in ``never`` and never Fortran-ordered
    structurally), those whose layout follows Fortran-ordered inputs (value -> input bits,
    :func:`fortran_masks`), and the views of inputs and shared variables that are not
    outputs (emptied after each gc-off call, so they do not keep last call's parameter
    arrays alive once updates replaced them: a view op makes a new view every call; C
    thunks even empty no_recycling cells before they run, cc.py:556-557)."""
    g = model.graph
    masks = fortran_masks(fgraph, order)
    arena_ids = tuple(b for b in g.buffers if b not in never and
                      isinstance(model.variables[b].type, TensorType) and
                      not masks.get(model.variables[b], 0) & 1)
    arena_fortran = {b: masks[model.variables[b]] >> 1 for b in arena_ids
                     if masks.get(model.variables[b], 0)}
    visible = set(fgraph.outputs) | set(supplied)
    input_views = tuple(v for v in range(g.n_values)
                        if g.alias_of[v] >= 0 and g.producer[v] >= 0 and
                        g.producer[g.root(v)] < 0 and model.variables[v] not in visible)
    return arena_ids, arena_fortran, input_views


def _supplied_groups(supplied: dict, model, fresh: set) -> list[list[int]]:
    """Value ids that share one supplied cell (those left shared), groups of two or more."""
    by_cell: dict[int, list[int]] = {}
    for var, cell in supplied.items():
        if var in model.value_id and var.owner is not None and var not in fresh:
            by_cell.setdefault(id(cell), []).append(model.value_id[var])
    return [sorted(g) for g in by_cell.values() if len(g) > 1]


def _broken_supplied_sharing(supplied: dict, fgraph, model, lts) -> list:
    """Supplied variables that must get a fresh cell.

    ``Function.copy(share_memory=True)`` hands in the original's cells, which
    may already be shared between several variables under the *original's*
    order.  If ours makes two of them live at once (or they are not both
    buffer roots of one Type), every member but the first gets its own cell.
    """
    by_cell: dict[int, list] = {}
    for var, cell in supplied.items():
        if var in model.value_id and var.owner is not None:
            by_cell.setdefault(id(cell), []).append(var)
    lt_of = {lt.buffer: lt for lt in lts}
    fresh = []
    for members in by_cell.values():
        if len(members) < 2:
            continue
        ids = [model.value_id[v] for v in members]
        ok = all(i in lt_of for i in ids) and len({model.variables[i].type for i in ids}) == 1
        if ok:
            spans = sorted((lt_of[i].start, lt_of[i].end) for i in ids)
            ok = all(a[1] < b[0] for a, b in zip(spans, spans[1:]))
        if not ok:
            ids.sort(key=lambda i: (lt_of[i].start if i in lt_of else -1, i))
            fresh.extend(model.variables[i] for i in ids[1:])
    return fresh


class _Linked(NamedTuple):
    order: list
    moves: dict
    fresh: list
    plan: BufferPlan | None
    planner_args: dict | None


def _theano_order(fgraph, kind: str) -> list:
    """The order Theano's own VM of ``kind`` runs, ignoring any order we pinned."""
    from .executed import cvm_order
    from .order import OrderFeature
    ours = [f for f in fgraph._features if isinstance(f, OrderFeature) and f.valid]
    for f in ours:          # an invalid OrderFeature contributes no orderings (order.py)
        f.valid = False     # (not remove_feature: an unpickled FunctionGraph cannot run callbacks)
    try:
        return cvm_order(fgraph) if kind == "CVM" else fgraph.toposort()
    finally:
        for f in ours:
            f.valid = True


def _pin(fgraph, order) -> None:
    """Pin ``order`` (re-using an attached OrderFeature: an unpickled FunctionGraph cannot
    run the callbacks of ``remove_feature``/``attach_feature``)."""
    from .callplan import _set_order
    from .order import OrderFeature, attach_order, unconditional_nodes
    from .executed import is_lazy_node
    ours = [f for f in fgraph._features if isinstance(f, OrderFeature)]
    if not ours:
        attach_order(fgraph, order)
        return
    chained = unconditional_nodes(fgraph) if any(is_lazy_node(n) for n in fgraph.apply_nodes) \
        else set(order)
    _set_order(ours[0], order, chained, True)


def _cell_constraints(model, groups) -> list:
    """``extra_deps`` that keep link-time shared cells valid under any call-time order.

    Occupants of one cell, in the link order, must stay in that sequence with
    disjoint lifetimes: the producer of each occupant runs after the producer
    and every reader (of any alias) of the previous one.
    """
    g = model.graph
    deps = [list(d) for d in model.structure["extra_deps"]]
    for grp in groups:
        members = sorted(grp, key=lambda v: g.producer[v])
        for a, b in zip(members, members[1:]):
            pb = g.producer[b]
            before = {g.producer[a]} | {n for v in g.group[a] for n in g.readers[v]}
            deps[pb] = sorted(set(deps[pb]) | (before - {pb}))
    return deps


#: Types the memory model sizes (anything else counts 0 bytes: GPU arrays, sparse, lists...).
_SIZED: list = []


def _sized(t) -> bool:
    if not _SIZED:          # imported once (five import statements per variable cost 0.1 ms
        from theano.gof.type import CDataType, Generic          # per compile of 30 values)
        from theano.gof.null_type import NullType
        from theano.scalar import Scalar
        from theano.tensor.type_other import NoneTypeT, SliceType
        _SIZED.append((TensorType, Scalar, NoneTypeT, SliceType, NullType, CDataType, Generic))
    return isinstance(t, _SIZED[0])


def _warn_unsized_types(fgraph) -> None:
    """One warning per function whose graph holds values the model cannot size."""
    if not _flag("lowmem_warn", True):
        return
    kinds = sorted({type(v.type).__name__ for v in fgraph.variables if not _sized(v.type)})
    if kinds:
        warnings.warn(f"theano_lowmem: this function holds values of type(s) "
                      f"{', '.join(kinds)}, which the memory model cannot size (it counts them "
                      f"as 0 bytes): its order and plans see only the TensorType values "
                      f"(docs/guide.md, 'What is covered')", stacklevel=3)


def register() -> None:
    """Add ``cvm_lowmem``, ``cvm_lowmem_nogc``, ``vm_lowmem``, ``vm_lowmem_nogc`` to
    ``theano.compile.mode.predefined_linkers``.  Idempotent.

    Examples
    --------
    >>> register(); import theano
    >>> type(theano.compile.mode.predefined_linkers['cvm_lowmem_nogc']).__name__
    'LowMemLinker'
    """
    linkers = theano.compile.mode.predefined_linkers
    for name, kwargs in LINKERS.items():
        if not isinstance(linkers.get(name), LowMemLinker):
            linkers[name] = LowMemLinker(**kwargs)


register()   # unpickling a Mode that names one of our linkers needs them registered
