"""Issue 12 risks not covered elsewhere: the reallocation switch is local to the linking
thread, values the model cannot size are said once, and shape graphs evaluated for the
model never mutate a shared value nor run a data op."""
from __future__ import annotations

import threading
import warnings

import numpy as np

import theano
import theano.tensor as T

import theano_lowmem  # noqa: F401
from theano_lowmem import model
from theano_lowmem.storage_reuse import LowMemLinker


def _realloc_graph():
    # gof/tests/test_vm.py::test_reallocation: 0-d values Theano's own reallocation pairs up
    x, y = T.scalar("x"), T.scalar("y")
    return [x, y], T.tanh(3 * x + y) + T.cosh(x + 5 * y)


def _shared_cells(f) -> int:
    cells = [id(c) for v, c in f.fn.storage_map.items() if v.owner is not None]
    return len(cells) - len(set(cells))


def _stock_mode():
    return theano.compile.get_mode(theano.Mode(linker="vm_nogc")).excluding("fusion", "inplace")


def test_reallocation_switch_is_local_to_the_linking_thread():
    """While a lowmem link (which switches Theano's reallocation off) is paused in one thread,
    a stock link in another thread gets Theano's reallocation exactly as without us.  (The
    old code swapped the module function for everyone: the stock function got none.)"""
    ins, out = _realloc_graph()
    expected = _shared_cells(theano.function(ins, out, mode=_stock_mode()))
    assert expected > 0                          # Theano pairs cells on this graph
    inside, go = threading.Event(), threading.Event()

    class Paused(LowMemLinker):
        def make_vm(self, *a, **k):
            inside.set()                         # inside _without_theano_reallocation()
            assert go.wait(120)
            return super().make_vm(*a, **k)

    done = {}

    def lowmem():
        mode = theano.Mode(Paused(allow_gc=False, use_cloop=False, arena="off"), "fast_run").excluding(
            "fusion", "inplace")
        done["lowmem"] = theano.function(ins, out * 2, mode=mode)

    t = threading.Thread(target=lowmem)
    t.start()
    try:
        assert inside.wait(300)
        stock = theano.function(ins, out, mode=_stock_mode())
    finally:
        go.set()
        t.join(300)
    assert _shared_cells(stock) == expected
    assert float(stock(1.0, 2.0)) == float(theano.function(ins, out)(1.0, 2.0))
    assert float(done["lowmem"](1.0, 2.0)) == 2 * float(stock(1.0, 2.0))
    assert done["lowmem"].maker.linker.buffer_plan is not None   # our plan really linked


def test_values_the_model_cannot_size_are_said_once():
    import theano.sparse as S
    s = S.csr_matrix("s")
    x = T.matrix("x")
    out = (S.dense_from_sparse(s) * x).sum() + T.exp(x).sum()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        f = theano.function([s, x], out, mode=theano.Mode("cvm_lowmem", "fast_run+lowmem"))
    msgs = [str(m.message) for m in w if "cannot size" in str(m.message)]
    assert len(msgs) == 1 and "SparseType" in msgs[0]
    import scipy.sparse as sp
    sv = sp.csr_matrix(np.eye(3))
    ref = theano.function([s, x], out)
    assert float(f(sv, np.ones((3, 3)))) == float(ref(sv, np.ones((3, 3))))
    with warnings.catch_warnings(record=True) as w:       # tensors only: nothing said
        warnings.simplefilter("always")
        theano.function([x], T.exp(x).sum(), mode=theano.Mode("cvm_lowmem", "fast_run+lowmem"))
    assert not [m for m in w if "cannot size" in str(m.message)]


def test_shape_evaluation_never_mutates_a_shared_value():
    """An inplace op in a shape graph works on a copy: the shared variable's own array is
    handed to ``perform`` only through ``performer``, which copies for destroy_map ops."""
    from theano.tensor import inplace
    n = theano.shared(np.asarray(5, dtype="int64"), name="n")
    node = inplace.add_inplace(n, np.int64(1)).owner
    assert node.op.destroy_map
    val = n.get_value(borrow=True)
    store = [[None]]
    model.performer(node)([val, np.asarray(1, dtype="int64")], store)
    assert int(store[0][0]) == 6 and int(n.get_value(borrow=True)) == 5 and int(val) == 5


def test_shape_evaluation_never_runs_a_data_op():
    """Shape graphs can reach data ops (the shape of a Reshape target computed from a conv
    output); the evaluator leaves such a size unknown instead of running the op on the
    shared values (no conv or dot at compile time, bounded cost)."""
    W = theano.shared(np.ones((4, 4)), name="W")
    d = T.dot(W, W)
    assert not model.is_shape_arithmetic(d.owner)
    k = T.cast(d.sum(), "int64")          # a size that depends on data
    assert not model.is_shape_arithmetic(k.owner.inputs[0].owner)
    i = T.lscalar("i")
    assert model.is_shape_arithmetic((i * 2 + 1).owner)
    calls = []
    real = type(d.owner.op).perform

    def spy(self, *a, **kw):
        calls.append(1)
        return real(self, *a, **kw)
    type(d.owner.op).perform = spy
    try:
        ev = model._ShapeEvaluator({}, {W: W.get_value(borrow=True)}, {})
        assert ev.value(k) is model._UNKNOWN
    finally:
        type(d.owner.op).perform = real
    assert not calls


def test_no_import_cycle_between_our_modules():
    """Data flows one way (FunctionGraph -> model -> order -> plan -> VM): no module of
    theano_lowmem imports, at module level or inside a function, one that imports it back
    (issue 10 asked to remove model <-> opt and activate <-> storage_reuse)."""
    import ast
    import os
    root = os.path.dirname(theano_lowmem.__file__)
    graph: dict = {}
    for name in os.listdir(root):
        if name.endswith(".py") and name not in ("__init__.py", "__main__.py"):
            tree = ast.parse(open(os.path.join(root, name)).read())
            graph[name[:-3]] = {n.module.split(".")[0] for n in ast.walk(tree)
                                if isinstance(n, ast.ImportFrom) and n.level == 1 and n.module}
    state: dict = {}
    cycles = []

    def visit(u, path):
        state[u] = 1
        for v in sorted(graph.get(u, ())):
            if v == u or v not in graph:
                continue
            if state.get(v) == 1:
                cycles.append(path + [v])
            elif not state.get(v):
                visit(v, path + [v])
        state[u] = 2
    for u in sorted(graph):
        if not state.get(u):
            visit(u, [u])
    assert not cycles, cycles
    assert {"model", "opt"} <= set(graph) and "opt" not in graph["model"]
