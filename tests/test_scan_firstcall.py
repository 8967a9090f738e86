"""The first call of a function with a scan (issue 10: first-call planning time).

Two shortcuts of the first plan, each checked against the computation it replaces:

* a scan's workspace (``model._scan_workspace``): :func:`model.keep_all_bytes_of` must
  give ``keep_all_bytes(model_of_fgraph(...).graph)`` on the inner graphs the plans
  really size, with the shapes they really give, some of them missing, other hints;
* the shape tape's fast interpreter runs ``Elemwise{Composite}`` of int8, bool and int64
  inputs, nested composites and bool logic on Python ints (``shapes._composite``): it
  must give what ``op.perform`` gives (:meth:`ShapeProgram.run_reference`), including
  where it gives up (int64 wrap-around, division by zero), and the scan families' tapes
  must not call ``op.perform`` any more.
"""
from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
import theano
import theano.scalar as ts
import theano.tensor as T
from theano.scan_module.scan_op import Scan
from theano.tensor.elemwise import Elemwise

import theano_lowmem  # noqa: F401  (registers the linkers)
from theano_lowmem import families, model
from theano_lowmem import families_nets as nets
from theano_lowmem.callplan import planned_vm
from theano_lowmem.core.memory import keep_all_bytes
from theano_lowmem.shapes import ShapeProgram

NOGC = theano.Mode(linker="cvm_lowmem_nogc", optimizer="fast_run+lowmem")


def _scan_cases():
    return {"lstm": families.lstm(steps=4, batch=3, n_in=5, n_hid=6),
            "lstm_seq_train": nets.FAMILIES["lstm_seq_train"](
                **nets.family_kwargs("lstm_seq_train", "tiny"))}


@pytest.fixture(scope="module")
def first_calls():
    """Per scan family: the compiled function, and every ``keep_all_bytes_of`` call its
    first call made (inner fgraph, inner input shapes, hint)."""
    out = {}
    orig = model.keep_all_bytes_of
    for name, case in _scan_cases().items():
        seen = []

        def spy(fgraph, shapes, unknown_dim, seen=seen):
            seen.append((fgraph, dict(shapes), unknown_dim))
            return orig(fgraph, shapes, unknown_dim)
        model.keep_all_bytes_of = spy
        try:
            f = case.compile(mode=NOGC)
            f(*case.make_args())
        finally:
            model.keep_all_bytes_of = orig
            case.reset()
        out[name] = (f, seen)
    return out


def _old(fgraph, shapes, unknown_dim):
    return keep_all_bytes(model.model_of_fgraph(fgraph, input_shapes=shapes,
                                                unknown_dim=unknown_dim).graph)


@pytest.mark.parametrize("name", ["lstm", "lstm_seq_train"])
def test_keep_all_bytes_of_is_the_models(first_calls, name):
    f, seen = first_calls[name]
    n_scans = sum(isinstance(a.op, Scan) for a in f.maker.fgraph.apply_nodes)
    assert n_scans >= 1 and len(seen) == n_scans
    for fgraph, shapes, hint in seen:
        assert shapes, "the plan gave the inner inputs' shapes"
        variants = [shapes, {}, {k: v for i, (k, v) in enumerate(shapes.items()) if i % 2}]
        for shp, h in itertools.product(variants, (hint, 1, 7)):
            assert model.keep_all_bytes_of(fgraph, shp, h) == _old(fgraph, shp, h)
        bigger = {k: tuple(3 * d for d in v) for k, v in shapes.items()}
        assert model.keep_all_bytes_of(fgraph, bigger, hint) == _old(fgraph, bigger, hint)


def test_keep_all_bytes_of_on_views_and_inplace():
    """Buffers only: views and inplace outputs own none (``Graph.buffers``)."""
    x, v = T.matrix("x"), T.vector("v")
    a = T.exp(x)
    out = [T.set_subtensor(T.log1p(a)[1:3], 0.0).T[::2].sum() + a.flatten().sum(),
           T.inc_subtensor(a.flatten()[:3], v) * 2, x.T]
    f = theano.function([x, v], out, mode=theano.Mode(linker="cvm", optimizer="fast_run"))
    fg = f.maker.fgraph
    assert any(getattr(n.op, "destroy_map", None) for n in fg.apply_nodes)
    assert any(getattr(n.op, "view_map", None) for n in fg.apply_nodes)
    for shapes in ({fg.inputs[0]: (5, 4), fg.inputs[1]: (3,)}, {fg.inputs[0]: (5, 4)}, {}):
        for hint in (128, 3):
            assert model.keep_all_bytes_of(fg, shapes, hint) == _old(fg, shapes, hint)


@pytest.mark.parametrize("name", ["lstm", "lstm_seq_train"])
def test_scan_tapes_need_no_perform(first_calls, name):
    """Every entry of the outer and inner tapes runs on Python values (no ``op.perform``:
    a Composite's first ``perform`` prepares its Python implementation, ~0.4 ms each)."""
    f, _ = first_calls[name]
    pvs = [planned_vm(f)] + [planned_vm(a.op.fn) for a in f.maker.fgraph.apply_nodes
                             if isinstance(a.op, Scan)]
    for pv in pvs:
        prog = pv._planner.program
        assert prog is not None and prog._fast is not None
        generic = [e for e in prog._fast.prog if len(e) == 1 and e[0].__name__ == "generic"]
        assert not generic
        cells = pv._planner.input_cells
        assert prog.run(cells) == prog.run_reference(cells)


# -- Composite on Python ints: what Elemwise.perform gives, or give up ---------------

def _hand_program(exprs, inputs):
    """A program over ``inputs`` (scalars read by value) whose values are vectors of
    length ``exprs[i]``."""
    outs = [T.vector(f"v{i}") for i in range(len(exprs))]

    class FG:
        pass
    fg = FG()
    fg.inputs = list(inputs)
    return ShapeProgram(fg, outs, {v: (e,) for v, e in zip(outs, exprs)})


def _composites():
    """Elemwise{Composite} expressions over (int64 a, int8 b, bool c), as fusion makes them:
    int8 and bool inputs, nested composites, AND/OR, a bool output, a 0-d Switch, //, %."""
    i0, i1, i2 = ts.int64("i0"), ts.int8("i1"), ts.bool("i2")
    clip = ts.Composite([i0, i1], [ts.switch(ts.lt(i0, i1), i1, i0 - i1)])
    gate = ts.Composite([i0, i1, i2], [ts.and_(ts.lt(i0, i1), i2) | ts.ge(i0, i1)])
    k0, k3, k7 = (ts.constant(np.int64(k)) for k in (0, 3, 7))
    nested = ts.Composite([i0, i1, i2], [ts.switch(
        i2, clip(i0, i1) * k3, ts.maximum(clip(i0, i1), i0 // (i1 + k0)) + i0 % k7)])
    deep = ts.Composite([i0, i1, i2], [nested(nested(i0, i1, i2), i1, gate(i0, i1, i2))])
    a, b, c = T.lscalar("a"), T.bscalar("b"), T.scalar("c", dtype="bool")
    exprs = [Elemwise(clip)(a, b), Elemwise(nested)(a, b, c), Elemwise(deep)(a, b, c),
             T.switch(Elemwise(gate)(a, b, c), a, 2) + 0, Elemwise(gate)(a, b, c)]
    return exprs, [a, b, c]


def test_composite_of_narrow_and_bool_inputs_matches_perform():
    exprs, inputs = _composites()
    prog = _hand_program(exprs, inputs)
    assert prog._fast is not None
    assert not [e for e in prog._fast.prog if len(e) == 1], "every entry on Python values"
    values = [0, 1, 5, -3, 100, 2**40, 2**62, 2**63 - 1, -2**63]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for x, y, z in itertools.product(values, (-128, -1, 0, 1, 7, 127), (False, True)):
            cells = [[np.asarray(x, dtype="int64")], [np.asarray(y, dtype="int8")],
                     [np.asarray(z, dtype="bool")]]
            assert prog.run(cells) == prog.run_reference(cells), (x, y, z)


def test_composite_fast_path_is_taken(monkeypatch):
    exprs, inputs = _composites()
    prog = _hand_program(exprs, inputs)
    cells = [[np.asarray(9, dtype="int64")], [np.asarray(4, dtype="int8")],
             [np.asarray(True)]]
    expected = prog.run_reference(cells)
    assert None not in [d[0] for d in expected]
    monkeypatch.setattr(ShapeProgram, "run_reference",
                        lambda self, cells: pytest.fail("fell back to run_reference"))
    assert prog.run(cells) == expected


def test_composites_left_to_perform():
    """What the Python ints could get wrong stays with ``op.perform``: an int8 constant
    (``impl`` reads a numpy int8, which wraps), a narrow inner result (a ``Cast`` gives a
    numpy scalar), 32 inputs (``Elemwise.perform`` does not run its ufunc then)."""
    i0, i1 = ts.int64("i0"), ts.int8("i1")
    a, b = T.lscalar("a"), T.bscalar("b")
    const8 = ts.Composite([i0, i1], [(i0 + ts.constant(np.int8(100))) * i1])
    cast8 = ts.Composite([i0, i1], [i0 + ts.cast(i1 + i1, "int8")])
    many = [ts.int64(f"x{k}") for k in range(32)]
    wide = ts.Composite(many, [ts.add(*many)])
    xs = [T.lscalar(f"x{k}") for k in range(32)]
    progs = [_hand_program([Elemwise(const8)(a, b)], [a, b]),
             _hand_program([Elemwise(cast8)(a, b)], [a, b]),
             _hand_program([Elemwise(wide)(*xs)], xs)]
    for prog in progs[:2]:
        assert [e for e in prog._fast.prog if len(e) == 1], "left to op.perform"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for x, y in itertools.product((5, 27, 100), (1, 27, 100, 127)):
                cells = [[np.asarray(x, dtype="int64")], [np.asarray(y, dtype="int8")]]
                assert prog.run(cells) == prog.run_reference(cells)
    cells = [[np.asarray(k, dtype="int64")] for k in range(32)]
    assert progs[2].run(cells) == progs[2].run_reference(cells)
