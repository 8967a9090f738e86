"""LowMemLinker on real Theano: same results as the stock linker, cells really shared, and safe."""
from __future__ import annotations

import copy
import pickle
import warnings

import numpy as np
import pytest

import theano
import theano.tensor as T
from theano.compile.function_module import infer_reuse_pattern

import theano_lowmem  # noqa: F401  (registers the linkers)
from theano_lowmem import executed, model
from theano_lowmem.core.bufplan import BufferPlan, check_plan
from theano_lowmem.core.memory import lifetimes
from theano_lowmem.storage_reuse import LowMemLinker, register

LINKERS = ["cvm_lowmem", "cvm_lowmem_nogc", "vm_lowmem", "vm_lowmem_nogc"]
STOCK = {True: "cvm", False: "cvm_nogc"}     # allow_gc -> stock linker name
RNG = np.random.RandomState(42)


def mode(linker):
    return theano.Mode(linker=linker, optimizer="fast_run")


def gc_of(name):
    return not name.endswith("_nogc")


def assert_same(got, want):
    got, want = (got if isinstance(got, list) else [got]), (want if isinstance(want, list) else [want])
    assert len(got) == len(want)
    for g, w in zip(got, want):
        g, w = np.asarray(g), np.asarray(w)
        assert g.dtype == w.dtype and g.shape == w.shape
        assert np.array_equal(g, w), np.abs(g - w).max()


def cell_groups(f):
    """Variables of ``f`` grouped by the storage cell they really use (groups of 2+)."""
    by_cell = {}
    for var, cell in f.fn.storage_map.items():
        by_cell.setdefault(id(cell), []).append(var)
    return [vs for vs in by_cell.values() if len(vs) > 1]


def n_intermediates(f):
    fg = f.maker.fgraph
    return [v for v in f.fn.storage_map if v.owner is not None and v not in fg.outputs]



@pytest.fixture(autouse=True)
def _cells_not_arena():
    """These tests cover same-Type cell sharing (the storage_map rewrite), which is the
    plan with ``lowmem_arena=off``; the default arena is tested in tests/test_arena.py."""
    old = theano.config.lowmem_arena
    theano.config.lowmem_arena = "off"
    yield
    theano.config.lowmem_arena = old


def assert_sound(f, *args):
    """What the compiled function really does is a valid plan: cells are shared only between
    same-Type buffer roots whose lifetimes, in the order a real call runs, are disjoint, and
    never by inputs, outputs, constants or no_recycling variables."""
    fg = f.maker.fgraph
    order = executed.trace_order(f, *args)
    assert order == executed.executed_order(f)
    m = model.model_of_fgraph(fg, order)
    lts = lifetimes(m.graph, list(range(len(order))))
    roots = {lt.buffer for lt in lts}
    forbidden = set(fg.inputs) | set(fg.outputs) | set(infer_reuse_pattern(fg, fg.outputs))
    cell_of = {}
    for group in cell_groups(f):
        assert not forbidden & set(group), group
        assert len({v.type for v in group}) == 1, group
        ids = sorted(m.value_id[v] for v in group)
        assert set(ids) <= roots, "only buffer roots may share"
        cell_of.update({i: ids[0] for i in ids[1:]})
    check_plan(lts, BufferPlan(cell_of, len(lts), len(lts) - len(cell_of), 0, 0))
    return len(cell_of)


def chain(n=8):
    x, W = T.matrix("x"), T.matrix("W")
    h = x
    for _ in range(n):
        h = T.tanh(T.dot(h, W))
    return [x, W], h


SHAPES = [((4, 6), (6, 6)), ((9, 6), (6, 6)), ((2, 3), (3, 3)), ((4, 6), (6, 6))]


@pytest.mark.parametrize("linker", LINKERS)
def test_chain_same_results_and_shared(linker):
    ins, out = chain()
    f = theano.function(ins, out, mode=mode(linker))
    ref = theano.function(ins, out, mode=mode(STOCK[gc_of(linker)]))
    for xs, ws in SHAPES:            # different input shapes between calls
        args = (RNG.rand(*xs), RNG.rand(*ws) * 0.3)
        assert_same(f(*args), ref(*args))
    inter = n_intermediates(f)
    if gc_of(linker):   # allow_gc=True with call-time plans: a shared cell saves nothing
        assert not cell_groups(f)        # (the VM empties it), so the order stays free
        return
    assert len({id(f.fn.storage_map[v]) for v in inter}) < len(inter)
    assert assert_sound(f, *args) >= 4
    plan = f.maker.linker.buffer_plan
    assert plan.n_cells_after < plan.n_cells_before and plan.bytes_after < plan.bytes_before


def test_zero_d_and_n_d_reductions():
    x = T.vector("x")
    s = x.sum()
    outs = []
    for i in range(6):
        s = (T.exp(x * s) / (1 + i)).sum()
        outs.append(s)
    f = theano.function([x], outs[-1], mode=mode("cvm_lowmem_nogc"))
    ref = theano.function([x], outs[-1], mode=mode("cvm_nogc"))
    for n in (5, 11, 5):
        v = RNG.rand(n) * 0.1
        assert_same(f(v), ref(v))
    groups = cell_groups(f)
    assert any(g[0].ndim == 0 for g in groups) and any(g[0].ndim == 1 for g in groups)
    assert_sound(f, v)


@pytest.mark.parametrize("gc", [False, True])
def test_python_stack_vm_with_callback(gc):
    ins, out = chain(5)
    seen = []
    lk = LowMemLinker(allow_gc=gc, use_cloop=True, callback=lambda node, **kw: seen.append(node))
    f = theano.function(ins, out, mode=theano.Mode(lk, "fast_run"))
    assert type(f.fn).__name__ == "Stack"
    ref = theano.function(ins, out, mode=mode(STOCK[gc]))
    for xs, ws in SHAPES:
        args = (RNG.rand(*xs), RNG.rand(*ws))
        del seen[:]
        assert_same(f(*args), ref(*args))
    assert seen == executed.executed_order(f)   # the Stack VM ran the pinned order
    assert cell_groups(f)
    assert_sound(f, *args)


@pytest.mark.parametrize("linker", ["cvm_lowmem_nogc", "vm_lowmem"])
def test_borrow_aliased_outputs_and_updates(linker):
    x = T.matrix("x")
    w0 = RNG.rand(4, 4) * 0.5
    wa, wb = theano.shared(w0.copy(), "w"), theano.shared(w0.copy(), "w")

    def build(w, m):
        h = x
        for _ in range(4):
            h = T.tanh(T.dot(h, w))
        loss = ((h - 1) ** 2).sum()
        return theano.function([x], [x, x + 1, theano.Out(h, borrow=True), loss],
                               updates={w: w - 0.01 * T.grad(loss, w)}, mode=mode(m))

    f, ref = build(wa, linker), build(wb, STOCK[gc_of(linker)])
    for rows in (3, 7, 3):
        v = RNG.rand(rows, 4)
        got, want = f(v), ref(v)
        assert got[0] is not v
        assert_same([np.array(g) for g in got], [np.array(w) for w in want])
        assert_same(wa.get_value(), wb.get_value())
    assert bool(cell_groups(f)) == (not gc_of(linker))   # gc on: nothing shared (call-time plans)
    assert_sound(f, v)
    ins, out = chain(6)       # borrowed output only: no_recycling is empty
    g = theano.function(ins, theano.Out(out, borrow=True), mode=mode(linker))
    assert not g.maker.linker.no_recycling
    args = (RNG.rand(3, 4), RNG.rand(4, 4))
    assert_same(g(*args).copy(), ref_chain6(*args))
    assert_sound(g, *args)


def ref_chain6(*args):
    ins, out = chain(6)
    return theano.function(ins, out, mode=mode("cvm"))(*args)


def test_function_copy_inplace():
    ins, out = chain(4)
    x, W = ins
    a = T.exp(x) + W
    outs = [T.tanh(a), T.dot(a, W), out]    # tanh works inplace on `a`: must run after the dot
    f = theano.function(ins, outs, mode=mode("cvm_lowmem_nogc"))
    ref = theano.function(ins, outs, mode=mode("cvm_nogc"))
    assert any(getattr(n.op, "destroy_map", None) for n in f.maker.fgraph.apply_nodes)
    g, gs = f.copy(), f.copy(share_memory=True)
    assert hasattr(g.maker.fgraph, "destroy_handler")
    for xs, ws in [((6, 6), (6, 6)), ((3, 3), (3, 3)), ((6, 6), (6, 6))]:
        args = (RNG.rand(*xs), RNG.rand(*ws))
        want = ref(*args)
        for fn in (f, g, gs, f):
            assert_same(fn(*args), want)
    for fn in (g, gs):
        assert_sound(fn, *args)
    assert cell_groups(g)


def test_pickle_roundtrip():
    ins, out = chain(4)
    f = theano.function(ins, out, mode=mode("cvm_lowmem_nogc"))
    args = (RNG.rand(3, 5), RNG.rand(5, 5))
    g = pickle.loads(pickle.dumps(f))
    assert type(g.maker.linker) is LowMemLinker
    assert_same(g(*args), f(*args))
    assert cell_groups(g)
    assert_sound(g, *args)


def test_linker_survives_clone_and_accept():
    lk = LowMemLinker(allow_gc=False, use_cloop=True, share=True, check_plan=True,
                      keep_for_reuse=True)
    c = lk.clone(allow_gc=True)
    assert type(c) is LowMemLinker and c.allow_gc and c.check_plan and c.keep_for_reuse
    ins, out = chain(2)
    f1 = theano.function(ins, out, mode=theano.Mode(lk, "fast_run"))
    f2 = theano.function(ins, out * 2, mode=theano.Mode(lk, "fast_run"))  # accept() makes a new one
    assert f2.maker.linker is not f1.maker.linker
    assert f2.maker.linker.check_plan and not f2.maker.linker.allow_gc
    register()
    register()
    assert isinstance(theano.compile.mode.predefined_linkers["vm_lowmem_nogc"], LowMemLinker)


@pytest.mark.parametrize("vm", ["CVM", "LoopGC", "Stack"])
def test_keep_for_reuse_gc_on(vm):
    ins, out = chain(6)
    lk = LowMemLinker(allow_gc=True, use_cloop=vm != "LoopGC", keep_for_reuse=True,
                      check_plan=True, callback=(lambda **kw: None) if vm == "Stack" else None)
    f = theano.function(ins, out, mode=theano.Mode(lk, "fast_run"))
    assert type(getattr(f.fn, "vm", f.fn)).__name__ == vm
    ref = theano.function(ins, out, mode=mode("cvm"))
    for xs, ws in SHAPES:
        args = (RNG.rand(*xs), RNG.rand(*ws))
        assert_same(f(*args), ref(*args))
    assert_sound(f, *args)
    # with gc on, every intermediate cell is empty after the call
    assert all(f.fn.storage_map[v][0] is None for v in n_intermediates(f))


def test_share_false_and_lazy_graph_do_not_share():
    from theano.ifelse import ifelse
    ins, out = chain(3)
    f = theano.function(ins, out, mode=theano.Mode(LowMemLinker(allow_gc=False, share=False,
                                                                use_cloop=True), "fast_run"))
    assert not cell_groups(f) and f.maker.linker.buffer_plan is None
    x, W = ins
    c = T.scalar("c")
    y = ifelse(T.gt(c, 0), T.tanh(T.dot(x, W)).sum(), T.exp(T.dot(x, W)).sum())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")     # lazy graphs are declined, with one warning
        g = theano.function([x, W, c], y, mode=mode("cvm_lowmem_nogc"))
    ours = [str(w.message) for w in caught if "theano_lowmem" in str(w.message)]
    assert len(ours) == 1 and "IfElse" in ours[0], ours
    assert "IfElse" in g.maker.linker.declined
    ref = theano.function([x, W, c], y, mode=mode("cvm_nogc"))
    assert g.maker.linker.buffer_plan is None and not cell_groups(g)
    args = (RNG.rand(3, 3), RNG.rand(3, 3))
    for cv in (1.0, -1.0):
        assert_same(g(*args, cv), ref(*args, cv))


def test_planning_failure_falls_back_with_one_warning(monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("planner exploded")
    monkeypatch.setattr(model, "model_of_fgraph", boom)
    ins, out = chain(3)
    with pytest.warns(UserWarning, match="planner exploded") as rec:
        f = theano.function(ins, out, mode=mode("cvm_lowmem_nogc"))
    assert len([w for w in rec if "theano_lowmem" in str(w.message)]) == 1
    assert not cell_groups(f) and f.maker.linker.buffer_plan is None
    monkeypatch.undo()
    ref = theano.function(ins, out, mode=mode("cvm_nogc"))
    args = (RNG.rand(3, 4), RNG.rand(4, 4))
    assert_same(f(*args), ref(*args))


def test_mode_with_lowmem_optimizer():
    ins, out = chain(4)
    f = theano.function(ins, out, mode=theano.Mode("cvm_lowmem_nogc", "fast_run+lowmem"))
    ref = theano.function(ins, out, mode=mode("cvm_nogc"))
    args = (RNG.rand(3, 4), RNG.rand(4, 4))
    assert_same(f(*args), ref(*args))
    assert cell_groups(f)
    assert_sound(f, *args)
    assert copy.copy(f.maker.linker).share is None


def test_copy_share_memory_with_conflicting_supplied_cells():
    # Function.copy(share_memory=True) hands the original's cells to the copy.  Make two
    # intermediates that are live at once share one of them (as if planned for another
    # order): the copy must give one of them a fresh cell instead of writing a Dot22
    # output over its own input.
    ins, out = chain(4)
    f = theano.function(ins, out, mode=mode("cvm_lowmem_nogc"))
    ref = theano.function(ins, out, mode=mode("cvm_nogc"))
    dots = [n.outputs[0] for n in executed.executed_order(f) if str(n.op) == "Dot22"]
    f.fn.storage_map[dots[2]] = f.fn.storage_map[dots[1]]   # dots[1] (via tanh) feeds dots[2]
    g = f.copy(share_memory=True)
    for xs, ws in SHAPES:
        args = (RNG.rand(*xs), RNG.rand(*ws))
        assert_same(g(*args), ref(*args))
    assert_sound(g, *args)


def _scan_step(h, W):
    for _ in range(3):
        h = T.tanh(T.dot(h, W))
    return h


def test_scan_inner_function_uses_the_linker():
    from theano.scan_module.scan_op import Scan
    x, W = T.matrix("x"), T.matrix("W")
    results = []
    for m in (mode("cvm_lowmem"), mode("cvm")):
        seq, _ = theano.scan(_scan_step, outputs_info=[x], non_sequences=[W], n_steps=3, mode=m)
        results.append(theano.function([x, W], [seq[-1], seq.sum()], mode=m))
    f, ref = results
    inner = [n.op for n in f.maker.fgraph.apply_nodes if isinstance(n.op, Scan)][0].fn
    assert type(inner.maker.linker) is LowMemLinker and not inner.maker.linker.allow_gc
    assert inner.maker.linker.buffer_plan.cell_of
    for xs, ws in SHAPES[:3]:
        args = (RNG.rand(*xs), RNG.rand(*ws))
        assert_same(f(*args), ref(*args))


def test_scan_inner_function_gets_the_linker_from_the_outer_function():
    """``theano.scan`` without ``mode=``: the inner mode is the default one; the outer
    LowMemLinker swaps the inner linker class (keeping allow_gc=False) before make_thunk."""
    from theano.scan_module.scan_op import Scan
    x, W = T.matrix("x"), T.matrix("W")
    results = []
    for m in (mode("cvm_lowmem_nogc"), mode("cvm_nogc")):
        seq, _ = theano.scan(_scan_step, outputs_info=[x], non_sequences=[W], n_steps=3)
        results.append(theano.function([x, W], [seq[-1], seq.sum()], mode=m))
    f, ref = results
    op = [n.op for n in f.maker.fgraph.apply_nodes if isinstance(n.op, Scan)][0]
    assert type(op.fn.maker.linker) is LowMemLinker and not op.fn.maker.linker.allow_gc
    op_ref = [n.op for n in ref.maker.fgraph.apply_nodes if isinstance(n.op, Scan)][0]
    assert type(op_ref.fn.maker.linker) is not LowMemLinker
    for xs, ws in SHAPES[:3]:
        args = (RNG.rand(*xs), RNG.rand(*ws))
        assert_same(f(*args), ref(*args))


@pytest.mark.parametrize("gc", [True, False])
def test_stack_vm_asked_for_with_lazy_true(gc):
    """``use_cloop=False, lazy=True`` makes ``make_vm`` build the Stack VM even for a
    graph without lazy nodes: the linker must check (and plan for) the Stack order."""
    ins, out = chain()
    lk = LowMemLinker(allow_gc=gc, use_cloop=False, lazy=True, check_plan=True)
    f = theano.function(ins, out, mode=theano.Mode(lk, "fast_run"))
    assert type(f.fn).__name__ == "Stack"
    ref = theano.function(ins, out, mode=mode(STOCK[gc]))
    for xs, ws in SHAPES:
        args = (RNG.rand(*xs), RNG.rand(*ws) * 0.3)
        assert_same(f(*args), ref(*args))
    if not gc:
        assert assert_sound(f, *args) >= 4
