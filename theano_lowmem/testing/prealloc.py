"""Every op of a FAST_RUN graph, against a garbage-filled C-contiguous array in its output cell.

An arena view (:mod:`theano_lowmem.arena`) is an exact-shape, C-contiguous array
left in an op's output cell before its thunk runs.  That is safe for an op if it
either overwrites every element of the array it finds there or ignores it and
allocates its own; it is unsafe if it reads the old contents (accumulates into
them, leaves some elements unwritten) or writes into an input it does not
destroy.  Theano's DebugMode checks that with ``check_preallocated_output=
c_contiguous`` (debugmode.py:1078-1092: a ``value_zeros`` buffer of the
reference output's shape, filled with ``def_val``), but it compiles its own
graph, and in Theano 1.0.5 it cannot run the conv families (see
tests/test_arena_debugmode.py).  This module does the same check, independently
of theano_lowmem's linkers, on the graph a stock FAST_RUN function really runs:

1. :func:`check_function` calls a function compiled with
   ``theano.Mode(linker='cvm_nogc', optimizer='fast_run')`` once, its computed
   cells emptied first (as before a first call).  The values of
   its graph inputs are read just before the VM runs (the VM is the Function's
   ``fn``, called with no arguments at function_module.py:902-904; the input cells
   are the Function's ``input_storage`` containers, which the call empties
   afterwards for required inputs, function_module.py:932-936, and which updates
   overwrite, :949-954).  After the call the VM's ``storage_map``
   (vm.py:1145, one cell per variable; ``allow_gc=False`` leaves them full) holds
   every value the call computed.
2. Every Apply node, in ``fgraph.toposort()`` order, gets a thunk of its own,
   ``node.op.make_thunk(node, storage_map, compute_map, no_recycling=[])`` over a
   private storage map, exactly as the VM linker builds them (vm.py:1085-1090).
   The thunk runs with copies of its input values (same strides, same
   64-byte alignment: :func:`faithful_copy`):

   * once with ``[None]`` output cells: the *reference* outputs;
   * then once per garbage pattern (:data:`PATTERNS`) with, in every output cell
     of a ``TensorType`` output, a C-contiguous array of the reference's exact
     shape and dtype filled with garbage (pattern 0: an owning ``np.empty``
     array filled with NaN / a large int sentinel; pattern 1: a non-owning,
     64-byte-aligned view of a ``uint8`` buffer, like an arena view, filled with
     ``-finfo.max / 3`` / ``iinfo.min + 7``).

   Each garbage run must give bit-identical outputs (dtype, shape, bytes: NaN
   payloads and signed zeros included), and no run may change an input that is
   not in the op's ``destroy_map``.  Per output it is recorded whether the op
   wrote *into* the array it was given (the cell still holds it, or a view of
   it), returned a *view of an input*, or *allocated* its own array.

   The values fed to a node are the reference outputs of the nodes before it
   (the same thunks on the same inputs), not the stock call's cells: after the
   call, a value an inplace op destroyed (``destroy_map``) holds the destroyer's
   result, and so do its views.  The stock cells are a cross-check: every
   computed value that shares no memory with a destroyed one must equal the
   reference bit for bit (:attr:`CheckReport.stock_compared`).  In a lazy graph
   (``IfElse``) every node runs here, also those of the branch the call skipped.

Ops needing care:

* ``IfElse``: its thunk is lazy (ifelse.py:239-287): it returns the indices of
  inputs it still needs while ``compute_map`` says they are not computed, and
  with all of them computed it runs to the end in one call (returning ``[]``).
  Both branches are checked (the recorded condition, then the flipped one): the
  true branch is returned as a view when ``as_view`` (ifelse.py:259-260), the
  false branch is always copied (ifelse.py:276-281).
* ``Scan``: its thunk is a Python closure over ``self.execute`` here (the
  Cython ``scan_perform`` does not build on Python 3.11; theano_lowmem's start-up
  makes its import fail, scan_op.py:953-954), which reuses a fitting array in an
  output cell (scan_op.py:1186-1199) and calls the inner function's VM, read as
  ``self.fn.fn`` at each run (scan_op.py:1215, called at :1335).  That VM is wrapped for the
  reference run to record the inner function's input values at its first step,
  and the inner graph is then checked the same way (:attr:`CheckReport.inner`).
  ``make_thunk`` does not recompile the inner function once it exists
  (scan_op.py:858-866).
* ``AllocEmpty`` (:data:`UNINITIALIZED_OUTPUT_OPS`): its output values are undefined
  by contract, so only the dtype and shape are compared.
* Outputs that are not ``TensorType`` values (scalars of ``ScalarType``, random
  states, slices...) get no garbage array (the arena gives views only to
  tensors); their nodes still run and their inputs are still checked.
"""
from __future__ import annotations

import contextlib
import copy
import ctypes
from collections import ChainMap, Counter
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import theano
from theano.gof import Apply, Constant, Variable
from theano.gof.vm import VM_Linker
from theano.ifelse import IfElse
from theano.scan_module.scan_op import Scan
from theano.tensor import TensorType
from theano.tensor.basic import AllocEmpty

#: alignment of the copies and of pattern 1's arrays (theano_lowmem.core.arena.ALIGN)
ALIGN = 64
#: garbage patterns: 0 = owning np.empty array, 1 = non-owning aligned view (like an arena view)
PATTERNS = (0, 1)

#: ops whose output values are undefined by contract: only the dtype and shape are compared.
#: ``AllocEmpty`` "Implement[s] Alloc on the cpu, but without initializing memory"
#: (tensor/basic.py:6915-6916); its C code keeps an array of the right dims found in
#: its cell (basic.py:6970-6988), contents and all.
UNINITIALIZED_OUTPUT_OPS: tuple = (AllocEmpty,)

WRITES_INTO = "writes into"
WRITES_INTO_VIEW = "writes into (view)"
VIEWS_INPUT = "views input"
ALLOCATES = "allocates"


def stock_mode() -> theano.Mode:
    """The stock mode checked: Theano's own C VM without garbage collection."""
    return theano.Mode(linker="cvm_nogc", optimizer="fast_run")


# ---------------------------------------------------------------- values
def faithful_copy(x: Any) -> Any:
    """A copy of ``x``; an ndarray keeps its shape, strides (views, transposes,
    zero strides) and its address modulo :data:`ALIGN`, so a C op takes the same
    code path on the copy as on the original."""
    if not isinstance(x, np.ndarray):
        return copy.deepcopy(x)
    if x.size == 0 or x.dtype.hasobject:
        return x.copy()
    lo, hi = np.byte_bounds(x)
    raw = np.empty(hi - lo + ALIGN, dtype=np.uint8)
    skip = (lo - raw.ctypes.data) % ALIGN
    ctypes.memmove(raw.ctypes.data + skip, lo, hi - lo)
    return np.ndarray(x.shape, x.dtype, buffer=raw, offset=skip + (x.ctypes.data - lo),
                      strides=x.strides)


def _fill_value(dtype: np.dtype, pattern: int) -> Any:
    """Pattern 0: NaN / ``iinfo.max - 17`` / True; pattern 1: ``-finfo.max / 3`` /
    ``iinfo.min + 7`` (unsigned: ``iinfo.max // 3``) / False."""
    if dtype.kind in "fc":
        return np.nan if pattern == 0 else -np.finfo(dtype).max / 3
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if pattern == 0:
            return info.max - 17
        return info.min + 7 if dtype.kind == "i" else info.max // 3
    if dtype.kind == "b":
        return pattern == 0
    raise TypeError(f"no garbage pattern for dtype {dtype}")


def garbage(shape: Sequence[int], dtype: Any, pattern: int) -> np.ndarray:
    """A C-contiguous array of ``shape`` and ``dtype`` full of garbage (:func:`_fill_value`);
    pattern 0 owns its data, pattern 1 is a 64-byte-aligned view of a ``uint8`` buffer."""
    dtype = np.dtype(dtype)
    if pattern == 0:
        buf = np.empty(shape, dtype=dtype)
    else:
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        raw = np.empty(nbytes + ALIGN, dtype=np.uint8)
        skip = (-raw.ctypes.data) % ALIGN
        buf = raw[skip:skip + nbytes].view(dtype).reshape(shape)
    buf.fill(_fill_value(dtype, pattern))
    assert buf.flags.c_contiguous
    return buf


def difference(a: Any, b: Any) -> str | None:
    """``None`` if ``a`` and ``b`` are the same value bit for bit, else what differs."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)):
            return f"type {type(a).__name__} vs {type(b).__name__}"
        if a.dtype != b.dtype or a.shape != b.shape:
            return f"{a.dtype}{a.shape} vs {b.dtype}{b.shape}"
        if a.dtype.hasobject:
            return None if a.tolist() == b.tolist() else "object arrays differ"
        if a.tobytes() == b.tobytes():
            return None
        ne = np.ascontiguousarray(a).view(np.uint8).reshape(a.size, -1) != \
            np.ascontiguousarray(b).view(np.uint8).reshape(b.size, -1)
        bad = np.flatnonzero(ne.any(axis=1))
        i = np.unravel_index(bad[0], a.shape)
        return (f"{len(bad)} of {a.size} elements differ, first at {tuple(map(int, i))}: "
                f"{a[i]!r} vs {b[i]!r}")
    if isinstance(a, np.random.RandomState) and isinstance(b, np.random.RandomState):
        sa, sb = a.get_state(), b.get_state()
        return None if all(np.array_equal(p, q) for p, q in zip(sa, sb)) else "random states differ"
    try:
        same = type(a) is type(b) and bool(a == b)
    except Exception:   # not comparable: the check cannot tell
        return None
    return None if same else f"{a!r} vs {b!r}"


# ---------------------------------------------------------------- reports
@dataclass
class OpStats:
    """What the nodes of one op class did."""

    nodes: int = 0
    kinds: Counter = field(default_factory=Counter)        # thunk kind -> nodes
    behaviours: Counter = field(default_factory=Counter)   # behaviour -> output x pattern runs


@dataclass
class CheckReport:
    """The result of checking one graph (and, in ``inner``, its scans' inner graphs)."""

    name: str
    ops: dict = field(default_factory=dict)            # op class name -> OpStats
    problems: list = field(default_factory=list)       # str: wrong results, modified inputs, errors
    not_checked: Counter = field(default_factory=Counter)   # why an output got no garbage array
    inner: list = field(default_factory=list)          # CheckReport of each Scan's inner graph
    stock_compared: int = 0
    stock_mismatches: list = field(default_factory=list)
    linker: str = ""
    values: dict = field(default_factory=dict, repr=False)   # variable -> reference value

    def walk(self) -> Iterator["CheckReport"]:
        yield self
        for r in self.inner:
            yield from r.walk()

    def all_problems(self) -> list[str]:
        return [p for r in self.walk() for p in r.problems + r.stock_mismatches]

    def op_behaviours(self, inner: bool = True) -> dict[str, Counter]:
        """Op class -> behaviours (summed over this graph and, if ``inner``, scans' inner graphs)."""
        out: dict[str, Counter] = {}
        for r in (self.walk() if inner else [self]):
            for name, st in r.ops.items():
                out.setdefault(name, Counter()).update(st.behaviours)
        return out

    def allocators(self) -> list[str]:
        """Op classes that allocated (or viewed an input) instead of writing into the array."""
        return sorted(n for n, b in self.op_behaviours().items()
                      if b[ALLOCATES] and not (b[WRITES_INTO] or b[WRITES_INTO_VIEW]))

    def table(self) -> str:
        """One line per op class: nodes, thunk kinds, behaviours."""
        lines = []
        for r in self.walk():
            lines.append(f"== {r.name} ({r.linker}) stock cells compared: {r.stock_compared}")
            for name in sorted(r.ops):
                st = r.ops[name]
                kinds = ",".join(f"{k}:{n}" for k, n in sorted(st.kinds.items()))
                beh = ", ".join(f"{b}:{n}" for b, n in sorted(st.behaviours.items()))
                lines.append(f"  {name:28s} nodes={st.nodes:<4d} [{kinds}] {beh}")
            if r.not_checked:
                lines.append(f"  not checked: {dict(r.not_checked)}")
            lines += [f"  PROBLEM {p}" for p in r.problems + r.stock_mismatches]
        return "\n".join(lines)


# ---------------------------------------------------------------- one node
def thunk_kind(op: Any, thunk: Any) -> str:
    """``c`` (CLinker thunk, op.py:867), ``py`` (``perform``, op.py:908), ``lazy``
    (IfElse, ifelse.py:285), ``scan`` (its own Python thunk, scan_op.py:961-973) or ``other``."""
    if isinstance(op, Scan):
        return "scan"
    if getattr(thunk, "lazy", False):
        return "lazy"
    if hasattr(thunk, "cthunk"):
        return "c"
    if hasattr(thunk, "perform"):
        return "py"
    return "other"


class _FirstCallRecorder:
    """Stands in for a Function's VM (``function.fn``) and records the values of the
    function's graph inputs at the first call, before the VM runs; everything else
    is the VM's (``__getattr__``)."""

    def __init__(self, function: Any) -> None:
        self._function, self._vm = function, function.fn
        self.values: dict | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._vm, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.values is None:
            fn = self._function
            self.values = {v: faithful_copy(c.storage[0])
                           for v, c in zip(fn.maker.fgraph.inputs, fn.input_storage)}
        return self._vm(*args, **kwargs)

    @contextlib.contextmanager
    def installed(self) -> Iterator["_FirstCallRecorder"]:
        self._function.fn = self
        try:
            yield self
        finally:
            self._function.fn = self._vm


def _destroyed_inputs(node: Apply) -> set[int]:
    return {i for ins in getattr(node.op, "destroy_map", {}).values() for i in ins}


def _behaviour(res: Any, buf: np.ndarray, ins: Sequence[Any]) -> str:
    if res is buf:
        return WRITES_INTO
    if isinstance(res, np.ndarray):
        if np.may_share_memory(res, buf):
            return WRITES_INTO_VIEW
        if any(isinstance(x, np.ndarray) and np.may_share_memory(res, x) for x in ins):
            return VIEWS_INPUT
    return ALLOCATES


@dataclass
class NodeRun:
    """A node's thunk over a private storage map (vm.py:1085-1090 builds the VM's the same way)."""

    node: Apply
    values: Mapping

    def __post_init__(self) -> None:
        node = self.node
        self.cells = {v: [None] for v in list(node.inputs) + list(node.outputs)}
        self.computed = {v: [False] for v in self.cells}
        self.thunk = node.op.make_thunk(node, self.cells, self.computed, no_recycling=[])
        self.kind = thunk_kind(node.op, self.thunk)
        self.destroyed = _destroyed_inputs(node)

    def run(self, provided: Sequence[Any]) -> tuple[list, list, list[str]]:
        """Run once with fresh input copies and ``provided`` in the output cells:
        (outputs, input copies, modified-input messages)."""
        node = self.node
        ins = {v: faithful_copy(self.values[v]) for v in dict.fromkeys(node.inputs)}
        for v, x in ins.items():
            self.cells[v][0], self.computed[v][0] = x, True
        for v, p in zip(node.outputs, provided):
            self.cells[v][0], self.computed[v][0] = p, False
        asked = self.thunk()
        if getattr(self.thunk, "lazy", False) and asked:
            raise RuntimeError(f"lazy thunk still asks for inputs {asked}")
        outs = [self.cells[v][0] for v in node.outputs]
        modified = []
        for i, v in enumerate(node.inputs):
            if i in self.destroyed:
                continue
            d = difference(self.cells[v][0], self.values[v])
            if d is not None:
                modified.append(f"input {i} ({v}) modified, not in destroy_map: {d}")
        return outs, list(ins.values()), modified


def check_node(node: Apply, values: Mapping, report: CheckReport, label: str = "",
               reference_context: Any = None) -> list | None:
    """Check one node (see the module docstring); add to ``report``.  Returns faithful
    copies of the reference outputs (``None`` if the node could not run)."""
    where = f"{label}{node}"
    try:
        nr = NodeRun(node, values)
        with (reference_context or contextlib.nullcontext()):
            ref, ins, modified = nr.run([None] * len(node.outputs))
    except Exception as e:     # the node cannot even run on its recorded inputs
        report.problems.append(f"{where}: reference run failed: {type(e).__name__}: {e}")
        return None
    name = type(node.op).__name__
    st = report.ops.setdefault(name, OpStats())
    st.nodes += 1
    st.kinds[nr.kind] += 1
    report.problems += [f"{where} [reference]: {m}" for m in modified]
    ref = [faithful_copy(r) for r in ref]
    tensor_out = []
    for v, r in zip(node.outputs, ref):
        ok = isinstance(v.type, TensorType) and isinstance(r, np.ndarray)
        tensor_out.append(ok)
        if not ok:
            report.not_checked[f"{name}: output of type {type(r).__name__}"] += 1
    if any(tensor_out):
        for pattern in PATTERNS:
            _garbage_run(nr, ref, tensor_out, pattern, st, report, where)
    return ref


def _garbage_run(nr: NodeRun, ref: list, tensor_out: list, pattern: int, st: OpStats,
                 report: CheckReport, where: str) -> None:
    bufs = [garbage(r.shape, r.dtype, pattern) if ok else None for r, ok in zip(ref, tensor_out)]
    try:
        outs, ins, modified = nr.run(bufs)
    except Exception as e:
        report.problems.append(f"{where} [garbage {pattern}]: failed: {type(e).__name__}: {e}")
        return
    report.problems += [f"{where} [garbage {pattern}]: {m}" for m in modified]
    for j, (res, buf, r) in enumerate(zip(outs, bufs, ref)):
        if buf is None:
            continue
        st.behaviours[_behaviour(res, buf, ins)] += 1
        if isinstance(nr.node.op, UNINITIALIZED_OUTPUT_OPS):
            d = difference(getattr(res, "dtype", None), r.dtype) or \
                difference(getattr(res, "shape", None), r.shape)
            if d is None:
                report.not_checked[f"{type(nr.node.op).__name__}: values uninitialized "
                                   "by contract (dtype and shape compared)"] += 1
        else:
            d = difference(res, r)
        if d is not None:
            report.problems.append(
                f"{where} [garbage {pattern}]: output {j} differs from the reference: {d}")


# ---------------------------------------------------------------- graphs
def _node_inputs_ready(node: Apply, values: dict) -> bool:
    for v in node.inputs:
        if v not in values and isinstance(v, Constant):
            values[v] = v.data
    return all(v in values for v in node.inputs)


def _flipped_condition(node: Apply, values: Mapping) -> ChainMap:
    cond = node.inputs[0]
    c = values[cond]
    return ChainMap({cond: np.asarray(0 if c else 1, dtype=cond.dtype)}, values)


def check_fgraph(fgraph: Any, input_values: Mapping, name: str) -> CheckReport:
    """Check every node of ``fgraph`` (toposort order) from its inputs' values;
    ``report.values`` holds the reference value of every variable."""
    report = CheckReport(name)
    values: dict = dict(input_values)
    for node in fgraph.toposort():
        if not _node_inputs_ready(node, values):
            report.problems.append(f"{node}: not run, an input value is missing")
            continue
        recorder = _FirstCallRecorder(node.op.fn) if isinstance(node.op, Scan) else None
        ref = check_node(node, values, report,
                         reference_context=recorder.installed() if recorder else None)
        if ref is None:
            continue
        values.update(zip(node.outputs, ref))
        if isinstance(node.op, IfElse):
            check_node(node, _flipped_condition(node, values), report, label="[flipped] ")
        if recorder is not None:
            report.inner.append(_check_scan_inner(node, recorder, name, len(report.inner)))
    report.values = values
    return report


def _check_scan_inner(node: Apply, recorder: _FirstCallRecorder, name: str,
                      k: int) -> CheckReport:
    inner_fn = node.op.fn
    label = f"{name}/scan{k}:{node.op.name or 'scan'}"
    if recorder.values is None:       # zero steps: the inner function never ran
        r = CheckReport(label, linker=type(inner_fn.maker.linker).__name__)
        r.problems.append(f"{label}: inner function not called (zero steps)")
        return r
    r = check_fgraph(inner_fn.maker.fgraph, recorder.values, label)
    r.linker = type(inner_fn.maker.linker).__name__
    return r


def _destroyed_vars(fgraph: Any) -> list[Variable]:
    return [n.inputs[i] for n in fgraph.apply_nodes for i in _destroyed_inputs(n)]


def _cross_check_stock(report: CheckReport, fgraph: Any, cells: Mapping) -> None:
    """Compare the reference values with the stock call's cells (see the module docstring)."""
    destroyed = [cells[d][0] for d in _destroyed_vars(fgraph) if d in cells]
    destroyed = [d for d in destroyed if isinstance(d, np.ndarray)]
    for v, cell in cells.items():
        val = cell[0]
        if v.owner is None or val is None or v not in report.values:
            continue
        if isinstance(val, np.ndarray) and any(np.may_share_memory(val, d) for d in destroyed):
            continue
        report.stock_compared += 1
        d = difference(val, report.values[v])
        if d is not None:
            report.stock_mismatches.append(f"stock cell of {v} ({v.owner.op}) != reference: {d}")


def _empty_computed_cells(storage_map: Mapping) -> None:
    """Empty the cells of computed variables, as before a first call: a gc-off VM
    leaves the previous call's values there (vm.py:1145 keeps the map), and in a
    lazy graph a branch the call skips would keep a stale value of another shape."""
    for v, cell in storage_map.items():
        if v.owner is not None:
            cell[0] = None


def check_function(f: Any, args: Sequence[Any], name: str = "") -> CheckReport:
    """Call the stock function ``f`` once with ``args`` and check every node of its
    graph (and of its scans' inner graphs).  ``f`` must use Theano's own
    ``VM_Linker`` (not a subclass such as theano_lowmem's) with ``allow_gc=False``."""
    linker = f.maker.linker
    if type(linker) is not VM_Linker or linker.allow_gc:
        raise ValueError(f"not a stock gc-off VM function: {type(linker).__name__}, "
                         f"allow_gc={getattr(linker, 'allow_gc', None)}")
    _empty_computed_cells(f.fn.storage_map)
    recorder = _FirstCallRecorder(f)
    with recorder.installed():
        f(*args)
    fgraph = f.maker.fgraph
    report = check_fgraph(fgraph, recorder.values, name or str(f.name))
    report.linker = f"{type(linker).__name__}(allow_gc={linker.allow_gc}) {type(f.fn).__name__}"
    _cross_check_stock(report, fgraph, f.fn.storage_map)
    return report


def check_case(case: Any, args: Sequence[Any] | None = None) -> CheckReport:
    """Compile ``case`` (a :class:`theano_lowmem.families.Case`) with :func:`stock_mode`,
    check it on ``args`` (default ``case.make_args()``); its shared values are reset."""
    f = case.compile(stock_mode())
    try:
        return check_function(f, case.make_args() if args is None else args, case.name)
    finally:
        case.reset()
