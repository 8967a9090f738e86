"""ShapeProgram (theano_lowmem/shapes.py): every value's shape from the input cells.

The reference is independent of the program and of lowmem: a stock Theano call with
garbage collection off (``cvm_nogc``, ``fast_run``) keeps every intermediate in
``f.fn.storage_map``; the program is built on that function's own fgraph and
ShapeFeature, run on its input cells, and must give the shape of every value the call
computed, for two different input shapes per graph.  The fast interpreter
(:meth:`ShapeProgram.run`) must also give exactly what the ``op.perform`` interpreter
(:meth:`ShapeProgram.run_reference`) gives, including where it has to give up (int64
wrap-around, division by zero, an ``IfElse`` whose branches disagree).
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import theano
import theano.tensor as T
from theano.ifelse import ifelse

import theano_lowmem  # noqa: F401  registers the modes
from theano_lowmem import families
from theano_lowmem import families_nets as nets
from theano_lowmem import shapes
from theano_lowmem.shapes import ShapeProgram

STOCK_NOGC = theano.Mode(linker="cvm_nogc", optimizer="fast_run")


def _compile(inputs, outputs, updates=()):
    return theano.function(inputs, outputs, updates=list(updates), mode=STOCK_NOGC)


def _program(f):
    fg = f.maker.fgraph
    variables = list(fg.variables)
    return fg, variables, ShapeProgram(fg, variables, fg.shape_feature.shape_of)


def _traced(f, args):
    """The function's input cells and every value it computed, after a call with ``args``."""
    fg = f.maker.fgraph
    smap = f.fn.storage_map
    for var, cell in smap.items():          # no value left from an earlier call
        if var.owner is not None:
            cell[0] = None
    f(*args)
    cells = []
    for i, var in enumerate(fg.inputs):
        val = args[i] if i < len(args) else f.input_storage[i].data
        cells.append([f.maker.inputs[i].variable.type.filter(val) if i < len(args) else val])
    return cells, {v: c[0] for v, c in smap.items()}


def check(f, arg_sets, *, unknown=(), min_shapes=2):
    """The program's dims of every tensor value equal the traced call's shapes (at least
    two input shapes); ``unknown``: values whose shape the program may not know."""
    fg, variables, prog = _program(f)
    assert len(arg_sets) >= min_shapes
    seen_shapes, compared = set(), 0
    for args in arg_sets:
        cells, values = _traced(f, args)
        got = prog.run(cells)
        assert got == prog.run_reference(cells)
        seen_shapes.add(tuple(np.shape(c[0]) for c in cells))
        for var, dims in zip(variables, got):
            val = values.get(var)
            if not isinstance(var.type, T.TensorType):
                assert dims is None
                continue
            assert dims is not None and len(dims) == var.type.ndim
            if val is None or not hasattr(val, "shape"):
                continue                      # not computed (a branch not taken)
            if var in unknown and None in dims:
                continue
            assert dims == tuple(val.shape), (var, var.owner, dims, val.shape)
            compared += 1
    assert len(seen_shapes) == len(arg_sets), "the input shapes must differ"
    assert compared > 0
    return prog


# -- the graph families ---------------------------------------------------------------

NET_NAMES = sorted(nets.FAMILIES)


@pytest.mark.parametrize("name", NET_NAMES)
def test_families_nets(name):
    case = nets.FAMILIES[name](**nets.family_kwargs(name, "tiny"))
    f = case.compile(STOCK_NOGC)
    if name.startswith("lstm"):
        arg_sets = [case.make_args(batch=3, steps=4), case.make_args(batch=5, steps=7)]
    else:
        arg_sets = [case.make_args(batch=3), case.make_args(batch=6)]
    prog = check(f, arg_sets)
    case.reset()
    assert prog._fast is not None


#: families.py builders: (kwargs of the compiled case, kwargs of a case with other input shapes)
FAMILIES = {
    "mlp": (dict(batch=4, sizes=(8, 16, 4)), dict(batch=7, sizes=(8, 16, 4))),
    "convnet": (dict(batch=2), dict(batch=3)),
    "lstm": (dict(steps=3, batch=2, n_in=4, n_hid=5), dict(steps=5, batch=3, n_in=4, n_hid=5)),
    "views_inplace": (dict(n=10), dict(n=13)),                        # (sizes in reshapes)
    "chain": (dict(depth=3, width=8, batch=4), dict(depth=3, width=8, batch=6)),
    "branches": (dict(n=100), dict(n=37)),
    "randwire": (dict(n=8, width=8, batch=4), dict(n=8, width=8, batch=9)),
    "inception": (dict(blocks=1, batch=2), dict(blocks=1, batch=3)),
    "resnet": (dict(blocks=1, batch=2), dict(blocks=1, batch=5)),
    "transformer": (dict(batch=2, seq=4, d=8, heads=2, ff=16),     # (sizes in reshapes)
                    dict(batch=3, seq=5, d=8, heads=2, ff=16)),
    "wide": (dict(n_branches=5, n=8), dict(n_branches=5, n=11)),
    "mixed_dag": (dict(n=10, length=100), dict(n=10, length=57)),
}


#: builders whose graphs hold their sizes (reshape to constant shapes): one function per size
FIXED_SIZES = {"transformer", "views_inplace"}


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_families(name):
    kw_a, kw_b = FAMILIES[name]
    build = getattr(families, name)
    case, other = build(**kw_a), build(**kw_b)
    if name in FIXED_SIZES:
        for c in (case, other):
            check(c.compile(STOCK_NOGC), [c.make_args()], min_shapes=1)
            c.reset()
        return
    f = case.compile(STOCK_NOGC)
    check(f, [case.make_args(), other.make_args()])
    case.reset()


# -- hand-made graphs -----------------------------------------------------------------

def test_arange_by_value():
    n = T.iscalar("n")
    x = T.vector("x")
    y = T.arange(n) * 2.0 + x[:n]
    z = T.concatenate([y, T.arange(n + 3).astype("float64")])
    f = _compile([n, x], [z, y.sum()])
    prog = check(f, [[np.int32(3), np.ones(10)], [np.int32(7), np.ones(12)]])
    assert prog.value_inputs          # the shapes read n's value


def test_reshape_with_minus_one():
    x = T.matrix("x")
    k = T.lscalar("k")
    a = x.reshape((-1, 4))
    b = x.reshape((k, -1))
    c = T.concatenate([a.flatten(), b.flatten()]).reshape((2, -1, 2))
    f = _compile([x, k], [a * 2, b + 1, c.sum(axis=1)])
    check(f, [[np.ones((6, 8)), np.int64(3)], [np.ones((4, 2)), np.int64(2)]])


def test_concatenations():
    x, y = T.matrix("x"), T.matrix("y")
    j0 = T.concatenate([x, y, x], axis=0)
    j1 = T.concatenate([x, x * 2], axis=1)
    s = T.stack([x.sum(axis=0), y.sum(axis=0)])
    out = T.concatenate([j0, j1[:, : x.shape[1]]], axis=0)
    f = _compile([x, y], [j0.sum(), j1 + 1, s, out * out])
    check(f, [[np.ones((2, 3)), np.ones((4, 3))], [np.ones((5, 2)), np.ones((1, 2))]])


def _ifelse_outputs(f):
    """The fgraph's IfElse outputs by their else branch's op: 'Join', 'Subtensor', other."""
    from theano.ifelse import IfElse
    out = {}
    for node in f.maker.fgraph.apply_nodes:
        if isinstance(node.op, IfElse):
            n = node.op.n_outs
            for k, o in enumerate(node.outputs):
                other = node.inputs[1 + n + k].owner
                out.setdefault(type(other.op).__name__ if other else "input", []).append(o)
    return out


def _downstream(fg, roots):
    out, todo = set(), list(roots)
    while todo:
        v = todo.pop()
        if v not in out:
            out.add(v)
            todo += [o for node, _ in getattr(v, "clients", ()) if node != "output"
                     for o in node.outputs]
    return out


def test_ifelse_same_and_different_branch_shapes():
    c = T.iscalar("c")
    x = T.vector("x")
    same = ifelse(c, x * 2, x + 1)                      # one shape whatever c
    diff = ifelse(c, x, T.concatenate([x, x]))          # shape depends on c: unknown
    n, m = T.iscalar("n"), T.iscalar("m")
    agree = ifelse(c, x[:n], x[:m])                     # known when n == m at run time
    f = _compile([c, x, n, m], [same * 3, diff.sum(), agree + 1])
    outs = _ifelse_outputs(f)
    (diff_v,), (agree_v,) = outs["Join"], outs["Subtensor"]
    assert len(sum(outs.values(), [])) == 3
    args = [[np.int32(1), np.ones(5), np.int32(2), np.int32(2)],
            [np.int32(0), np.ones(8), np.int32(3), np.int32(3)],
            [np.int32(0), np.ones(9), np.int32(3), np.int32(4)]]
    fg, variables, _ = _program(f)
    prog = check(f, args, unknown=_downstream(fg, [diff_v, agree_v]))
    i, k = variables.index(diff_v), variables.index(agree_v)
    got = []
    for a in args:
        cells, _ = _traced(f, a)
        dims = prog.run(cells)
        got.append((dims[i], dims[k]))
    assert got == [((None,), (2,)), ((None,), (3,)), ((None,), (None,))]


def test_scan_and_data_dependent_shapes():
    x = T.vector("x")
    nz = T.arange(x.shape[0])[T.gt(x, 0).nonzero()]     # size depends on x's values
    out, _ = theano.scan(lambda a, acc: acc + a, sequences=x, outputs_info=T.zeros_like(x[0]))
    f = _compile([x], [nz * 2, out])
    _, variables, prog = _program(f)
    check(f, [[np.array([1.0, -1.0, 2.0])], [np.array([-1.0, 3.0, 2.0, 5.0, -4.0])]],
          unknown=set(variables))


# -- the fast interpreter gives up exactly where numpy differs from Python ints -------

def _hand_program(expr_of, inputs):
    """A program over ``inputs`` (int64 scalars read by value) whose values are
    vectors of length ``expr_of[i]`` (a shape_of mapping made by hand)."""
    outs = [T.vector(f"v{i}") for i in range(len(expr_of))]
    shape_of = {v: (e,) for v, e in zip(outs, expr_of)}

    class FG:
        pass
    fg = FG()
    fg.inputs = list(inputs)
    return outs, ShapeProgram(fg, outs, shape_of)


def test_overflow_and_zero_division_match_perform():
    a, b = T.lscalar("a"), T.lscalar("b")
    exprs = [a * b, a + b, a - b, a // b, a % b, -a, T.maximum(a, b) * 3,
             T.switch(T.lt(a, b), a, b), (a * b) // (b + 1)]
    _, prog = _hand_program(exprs, [a, b])
    assert prog._fast is not None
    cases = [(3, 4), (-7, 2), (2**40, 2**40), (2**62, 2**62), (-2**63, -1), (5, 0),
             (0, 0), (2**63 - 1, 1)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for x, y in cases:
            cells = [[np.asarray(x, dtype="int64")], [np.asarray(y, dtype="int64")]]
            ref = prog.run_reference(cells)
            assert prog.run(cells) == ref, (x, y)
    # the reference wraps around as numpy does: the fast one must not give 2**80
    cells = [[np.asarray(2**40, dtype="int64")], [np.asarray(2**40, dtype="int64")]]
    assert prog.run(cells)[0] == (0,)


def test_fast_path_is_taken_on_ordinary_inputs(monkeypatch):
    """run() does not silently fall back to the reference on ordinary graphs."""
    case = nets.FAMILIES["lenet_train"](**nets.family_kwargs("lenet_train", "tiny"))
    f = case.compile(STOCK_NOGC)
    _, _, prog = _program(f)
    cells, _ = _traced(f, case.make_args(batch=3))
    case.reset()
    expected = prog.run_reference(cells)
    monkeypatch.setattr(ShapeProgram, "run_reference",
                        lambda self, cells: pytest.fail("fell back to run_reference"))
    assert prog.run(cells) == expected
    assert len(prog._fast.prog) <= len(prog.steps)


def test_unknown_input_cell_gives_none():
    x = T.matrix("x")
    f = _compile([x], [x.sum(axis=0) * 2])
    fg, variables, prog = _program(f)
    got = prog.run([[None]])
    assert got == prog.run_reference([[None]])
    assert got[variables.index(fg.inputs[0])] == (None, None)


def test_signature_reader():
    c1, c2 = [np.ones((2, 3))], [np.ones(4)]
    v = [np.asarray(5, dtype="int32")]
    assert shapes.signature_reader([c1], [])() == (2, 3)
    assert shapes.signature_reader([c1, c2], [])() == ((2, 3), (4,))
    assert shapes.signature_reader([c1], [v])() == (((2, 3),), (v[0].tobytes(),))
