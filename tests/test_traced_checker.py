"""Storage sharing checked from a traced real call, without the model or the planner.

:func:`check_call` derives everything from what the thunks of a real call did
(:func:`tests.oracles.tracing` wraps them where ``VM_Linker.make_vm`` receives
them, so the cells are the ones the VM really uses):

* when each value was written (its producer's step) and into which cell (the
  list object, by identity), when it was last read, and which values are views
  of which (an output whose array shares memory with one of its node's inputs:
  ``np.may_share_memory`` on the real arrays, not ``view_map``);
* a value is needed from its write until its last read, or the end of the call
  for function outputs, and as long as any value viewing its memory is needed.

It reports two values that use one cell while both are needed (the later one's
node wrote into a cell whose occupant was still to be read), a write into the
cell of an input, a reader that finds in its input cell another object than
its producer wrote, or different contents than were written, and two values
needed at once whose arrays overlap in memory without one being a view of the
other.  ``test_checker_catches_*`` show it fails on broken plans.
"""
from __future__ import annotations

import time
from collections import defaultdict

import numpy as np
import pytest

import theano
import theano.tensor as T

import theano_lowmem  # noqa: F401  (registers the linkers and fast_run+lowmem)
from theano_lowmem import families
from theano_lowmem import storage_reuse
from theano_lowmem.core.bufplan import BufferPlan

from .oracles import Recorder, tracing

LINKERS = ["cvm_lowmem_nogc", "cvm_lowmem", "vm_lowmem_nogc", "vm_lowmem"]
#: tiny sizes: each family compiles in about a second once the C cache is warm
FAMILY_KW = {
    "mlp": dict(batch=4, sizes=(6, 8, 8, 3)),
    "convnet": dict(batch=2, channels=(1, 2, 3), image=8, n_out=3),
    "resnet": dict(blocks=2, batch=2, channels=3, image=6),
    "inception": dict(blocks=1, batch=2, channels=4, image=6),
    "branches": dict(n_branches=3, n=50),
    "chain": dict(depth=4, width=6, batch=5),
    "views_inplace": dict(n=6),
    "transformer": dict(batch=2, seq=4, d=8, heads=2, ff=16, layers=1),
}


# ------------------------------------------------------------------ the checker


@pytest.fixture(autouse=True)
def _cells_not_arena():
    """The traced checker checks same-Type cell plans (``lowmem_arena=off``); arena
    plans are checked against real addresses in tests/test_arena.py."""
    old = theano.config.lowmem_arena
    theano.config.lowmem_arena = "off"
    yield
    theano.config.lowmem_arena = old

def check_call(steps, outputs=(), same=None) -> tuple[list[str], int]:
    """Problems found in one traced call, and the number of cells that held 2+ values.

    ``steps``: ``Recorder.steps`` of one call; ``outputs``: the function's output
    variables (needed until the end of the call); ``same``: ``Recorder.same`` (whether
    each read found the contents its producer wrote).
    """
    n = len(steps)
    outputs = set(outputs)
    problems: list[str] = []
    start, cell, obj, parent = {}, {}, {}, {}
    last_read: dict = defaultdict(lambda: -1)
    writes_to = defaultdict(list)               # id(cell) -> [(step, var)] in step order
    external = {}                               # id(cell) of a value not produced -> var
    for i, (node, reads, writes) in enumerate(steps):
        for k, (var, c, o) in enumerate(reads):
            last_read[var] = i
            if var not in start:
                external.setdefault(id(c), (var, o))
                continue
            if id(c) != cell[var]:
                problems.append(f"step {i}: {node} reads {var} from another cell than it was "
                                f"written to")
            elif writes_to[id(c)][-1][1] is not var:
                j, w = writes_to[id(c)][-1]
                problems.append(f"step {j}: {w.owner} wrote {w} into the cell of {var}, "
                                f"which {node} still reads at step {i}")
            elif o is not obj[var]:
                problems.append(f"step {i}: the cell of {var} holds another object than its "
                                f"producer wrote")
            elif same is not None and same[i][k] is False:
                problems.append(f"step {i}: {node} reads {var} with other contents than were "
                                f"written at step {start[var]}")
        for var, c, o in writes:
            if var in start:
                problems.append(f"step {i}: {var} written twice in one call")
            start[var], cell[var], obj[var] = i, id(c), o
            writes_to[id(c)].append((i, var))
            if id(c) in external:
                problems.append(f"step {i}: {node} wrote into the cell of input "
                                f"{external[id(c)][0]}")
            if isinstance(o, np.ndarray):
                for v_in, _, o_in in reads:
                    if isinstance(o_in, np.ndarray) and np.may_share_memory(o, o_in):
                        parent[var] = v_in      # a view of (or inplace on) that input
                        break
    # needed until the last read (end of call for outputs), and while any view of it is
    need = {v: n if v in outputs else max(last_read[v], s) for v, s in start.items()}
    for v in sorted(start, key=lambda v: -start[v]):
        if v in parent and parent[v] in need:
            need[parent[v]] = max(need[parent[v]], need[v])
    shared_cells = 0
    by_cell = defaultdict(list)
    for v, c in cell.items():
        by_cell[c].append(v)
    for c, vs in by_cell.items():
        vs.sort(key=lambda v: start[v])
        shared_cells += len(vs) > 1
        held = None                               # the occupant needed the longest so far
        for v in vs:
            if held is not None and need[held] >= start[v]:
                problems.append(f"{held} (needed until step {need[held]}) and {v} (written at "
                                f"step {start[v]}) share a cell")
            if held is None or need[v] > need[held]:
                held = v
    # arrays needed at the same time must not overlap, unless one is a view of the other
    # (two inputs, both at step -1, may: constants share data, and nothing writes them)
    root = {}
    for v in sorted(start, key=lambda v: start[v]):
        root[v] = root.get(parent[v], parent[v]) if v in parent else v
    arrays = [(v, obj[v], start[v], need[v]) for v in start if isinstance(obj[v], np.ndarray)]
    arrays += [(v, o, -1, n) for v, o in external.values() if isinstance(o, np.ndarray)]
    for k, (u, a, su, eu) in enumerate(arrays):
        for v, b, sv, ev in arrays[k + 1:]:
            if su <= ev and sv <= eu and su + sv >= 0 and root.get(u, u) is not root.get(v, v) and \
                    a.size and b.size and np.may_share_memory(a, b):
                problems.append(f"{u} and {v} are needed at once and overlap in memory")
    return problems, shared_cells


def traced_calls(case, linker: str, calls: int = 2):
    """Compile ``case`` with ``linker`` and fast_run+lowmem, call it ``calls`` times
    (the second call is warm: gc-off cells hold the first call's arrays), and return
    ``(f, [(steps, same) per call])``."""
    with tracing(snapshot=True) as rec:
        f = case.compile(theano.Mode(linker=linker, optimizer="fast_run+lowmem"))
        args = case.make_args()
        out = []
        for _ in range(calls):
            rec.clear()
            f(*args)
            out.append((rec.steps, rec.same))
    case.reset()
    return f, out


def assert_clean(f, traces) -> int:
    """Every node of ``f`` ran once per call, and the checker finds nothing; returns the
    number of shared cells seen."""
    nodes = f.maker.fgraph.apply_nodes
    shared = 0
    for steps, same in traces:
        ran = [node for node, _, _ in steps]
        assert len(ran) == len(nodes) and set(ran) == nodes, \
            "the trace does not cover every node once: a VM ran thunks that were not wrapped"
        problems, cells = check_call(steps, f.maker.fgraph.outputs, same)
        assert not problems, problems[:5]
        shared = max(shared, cells)
    return shared


# ------------------------------------------------------------------ real plans
@pytest.mark.parametrize("family", sorted(FAMILY_KW))
def test_real_plans_pass_the_traced_checker(family):
    """The sharing linkers, gc on and off, C VM and Python VM, two calls each: no overlap,
    and a gc-off linker really shares cells (else the check would be vacuous)."""
    shared = {}
    for linker in LINKERS:
        f, traces = traced_calls(families.FAMILIES[family](**FAMILY_KW[family]), linker)
        t0 = time.perf_counter()
        shared[linker] = assert_clean(f, traces)
        assert time.perf_counter() - t0 < 2.0          # the checker itself is cheap
    # branches: 3 independent branches, no two values of one Type free at once;
    # views_inplace: its 2-d values descend from transposes, so their arrays may be
    # Fortran-ordered and never share (storage_reuse.may_be_fortran)
    if family not in ("branches", "views_inplace"):
        assert max(shared["cvm_lowmem_nogc"], shared["vm_lowmem_nogc"]) > 0, shared


def test_stock_linker_passes_the_traced_checker():
    """Stock Theano's cvm shares no cell between intermediates: clean, zero shared cells."""
    case = families.mlp(**FAMILY_KW["mlp"])
    with tracing(snapshot=True) as rec:
        f = case.compile(theano.Mode(linker="cvm_nogc", optimizer="fast_run"))
        f(*case.make_args())
    case.reset()
    assert assert_clean(f, [(rec.steps, rec.same)]) == 0


# ------------------------------------------------------------------ it can fail
def _merge_overlapping(real):
    """``plan_buffers`` that also moves one value into the cell of another of the same key
    whose lifetime overlaps it (the first such pair by start step)."""
    merged = []

    def broken(lifetimes, key, *, excluded=(), prefer=None):
        plan = real(lifetimes, key, excluded=excluded, prefer=prefer)
        reps = set(plan.cell_of.values())
        free = [lt for lt in sorted(lifetimes, key=lambda lt: (lt.start, lt.buffer))
                if lt.buffer not in excluded and key.get(lt.buffer) is not None
                and lt.buffer not in plan.cell_of and lt.buffer not in reps]
        for a in free:
            for b in free:
                if a.buffer != b.buffer and key[a.buffer] == key[b.buffer] and \
                        a.start < b.start <= a.end:
                    cell_of = {**plan.cell_of, b.buffer: a.buffer}
                    merged.append((a, b))
                    return BufferPlan(cell_of, plan.n_cells_before, plan.n_cells_before - len(cell_of),
                                      plan.bytes_before, plan.bytes_after)
        return plan
    return broken, merged


@pytest.mark.parametrize("linker", ["cvm_lowmem_nogc", "vm_lowmem_nogc"])
def test_checker_catches_a_plan_that_merges_overlapping_values(monkeypatch, linker):
    broken, merged = _merge_overlapping(storage_reuse.plan_buffers)
    monkeypatch.setattr(storage_reuse, "plan_buffers", broken)
    f, traces = traced_calls(families.mlp(**FAMILY_KW["mlp"]), linker, calls=1)
    assert merged, "no overlapping pair of one Type to merge"
    problems, _ = check_call(traces[0][0], f.maker.fgraph.outputs, traces[0][1])
    assert any("share a cell" in p for p in problems), problems


def _fake_step(node_name, reads, writes):
    """A step of a hand-made trace: variables are plain objects with an ``owner``."""
    class Node:
        def __str__(self):
            return node_name
    node = Node()
    for var, _, _ in writes:
        var.owner = node
        node.outputs = [v for v, _, _ in writes]
    return node, reads, writes


class Var:
    def __init__(self, name):
        self.name, self.owner = name, None

    def __repr__(self):
        return self.name


def test_checker_catches_a_cell_reused_while_a_view_of_its_value_is_live():
    """Hand-built storage: ``a`` and ``c`` share a cell; ``a``'s own last reader ran, but
    ``b``, a view of ``a`` in another cell, is read after ``c`` is written.  The checker
    sees the view from the arrays alone and reports the cell (and the overlap)."""
    x, a, b, c, d, e = (Var(s) for s in "xabcde")
    cx, cell_ac, cb, cd, ce = [np.ones(8)], [None], [None], [None], [None]
    arr_a = np.arange(8.0)
    view = arr_a[::2]
    steps = [_fake_step("A", [(x, cx, cx[0])], [(a, cell_ac, arr_a)]),
             _fake_step("B", [(a, cell_ac, arr_a)], [(b, cb, view)]),
             _fake_step("C", [(x, cx, cx[0])], [(c, cell_ac, arr_a)]),     # writes into a's array
             _fake_step("D", [(b, cb, view), (c, cell_ac, arr_a)], [(d, cd, np.zeros(1))])]
    problems, cells = check_call(steps, outputs=[d])
    assert cells == 1 and any("a (needed until step 3) and c" in p for p in problems), problems
    # the same without the view: a is not needed after step 1, c may take its cell
    steps[3] = _fake_step("D", [(c, cell_ac, arr_a)], [(d, cd, np.zeros(1))])
    steps[1] = _fake_step("B", [(a, cell_ac, arr_a)], [(b, cb, np.zeros(4))])
    steps.append(_fake_step("E", [(b, cb, steps[1][2][0][2])], [(e, ce, np.zeros(1))]))
    assert check_call(steps, outputs=[d, e]) == ([], 1)


def test_checker_catches_corrupted_contents_and_writes_into_inputs():
    x, a, b = Var("x"), Var("a"), Var("b")
    cx, ca, cb = [np.ones(3)], [None], [None]
    arr = np.zeros(3)
    steps = [_fake_step("A", [(x, cx, cx[0])], [(a, ca, arr)]),
             _fake_step("B", [(a, ca, arr)], [(b, cx, np.ones(3))])]       # b into x's cell
    same = [[None], [False]]          # what Recorder saw: a changed between A and B
    problems, _ = check_call(steps, outputs=[b], same=same)
    assert any("other contents" in p for p in problems), problems
    assert any("cell of input x" in p for p in problems), problems
