"""Bad input, tested from outside: ops and graphs theano_lowmem cannot fully understand.

Each case compiles stock (``fast_run``) and with the ``lowmem`` pass plus the
sharing linker (GC on and off, C and Python VM), runs several calls with
changing shapes or values, and requires identical results and at most one
theano_lowmem warning per compilation.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import theano
import theano.tensor as T
from theano.gof import Apply, Op

import theano_lowmem  # noqa: F401  (registers the pass and linkers)

LOWMEM = ["cvm_lowmem", "cvm_lowmem_nogc", "vm_lowmem_nogc"]
STOCK = {"cvm_lowmem": "cvm", "cvm_lowmem_nogc": "cvm_nogc", "vm_lowmem_nogc": "cvm_nogc",
         "vm_lowmem": "cvm"}


def ours(caught) -> list[str]:
    return [str(w.message) for w in caught if "theano_lowmem" in str(w.message)]


def compile_both(inputs, outputs, linker):
    """Stock and lowmem functions of the same graph, and the lowmem warnings of the compile."""
    f_stock = theano.function(inputs, outputs, mode=theano.Mode(STOCK[linker], "fast_run"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        f_low = theano.function(inputs, outputs, mode=theano.Mode(linker, "fast_run+lowmem"))
    return f_stock, f_low, ours(caught)


def assert_same_calls(f_stock, f_low, calls) -> None:
    for args in calls:
        keep = [np.array(a, copy=True) for a in args]
        want = [np.array(o, copy=True) for o in f_stock(*args)]
        got = [np.array(o, copy=True) for o in f_low(*args)]
        for a, k in zip(args, keep):
            assert np.array_equal(a, k), "an input was modified"
        assert len(want) == len(got)
        for w, g in zip(want, got):
            assert w.dtype == g.dtype and w.shape == g.shape and np.array_equal(w, g, equal_nan=True)


class ReversedNoViewMap(Op):
    """Returns ``x[::-1]``, a *view* of its input, but declares no ``view_map``: an op
    theano_lowmem (and Theano's DestroyHandler) cannot know aliases its input."""

    __props__ = ()

    def make_node(self, x):
        x = T.as_tensor_variable(x)
        return Apply(self, [x], [x.type()])

    def perform(self, node, inputs, out):
        out[0][0] = inputs[0][::-1]

    def infer_shape(self, node, shapes):
        return shapes


class Logged(Op):
    """``x * 2`` that appends its tag to a log every time it runs (a side effect)."""

    __props__ = ("tag",)
    log: list[str] = []

    def __init__(self, tag: str):
        self.tag = tag

    def make_node(self, x):
        x = T.as_tensor_variable(x)
        return Apply(self, [x], [x.type()])

    def perform(self, node, inputs, out):
        Logged.log.append(self.tag)
        out[0][0] = inputs[0] * 2

    def infer_shape(self, node, shapes):
        return shapes


def rows(*ns, cols=3, seed=0):
    rng = np.random.RandomState(seed)
    return [[rng.uniform(-1, 1, (n, cols))] for n in ns]


@pytest.mark.parametrize("linker", LOWMEM)
def test_unknown_view_op(linker):
    """An undeclared view: many same-shape temporaries live around it, so a sharing plan
    that trusted the missing view_map would overwrite the viewed array.

    Regression test: before f0ffb62 the ``_nogc`` linkers gave wrong results here (the
    input's cell went to a later same-shape temporary whose C Elemwise wrote into the
    array the view still pointed to); now ops outside Theano are never shared around."""
    x = T.matrix("x")
    h = T.tanh(x)
    v = ReversedNoViewMap()(h)        # aliases h's buffer, undeclared
    a = T.exp(x) * 3.0                # same-shape temporaries that could take h's cell
    b = T.sqr(a) + 1.0
    c = T.log1p(abs(b)) - a
    out = [v * 2.0 + c, c.sum(axis=0)]
    f_stock, f_low, warned = compile_both([x], out, linker)
    assert len(warned) <= 1, warned
    assert_same_calls(f_stock, f_low, rows(4, 2, 5, 4))


@pytest.mark.parametrize("linker", LOWMEM)
def test_side_effect_op(linker):
    """Ops with side effects run exactly as often as stock, once per call each."""
    x = T.matrix("x")
    a, b, c = Logged("a")(x), Logged("b")(T.exp(x)), Logged("c")(T.tanh(x))
    out = [a + b, (b * c).sum(), c]
    f_stock, f_low, warned = compile_both([x], out, linker)
    assert len(warned) <= 1, warned
    for args in rows(3, 1, 4):
        Logged.log.clear()
        want = [np.array(o, copy=True) for o in f_stock(*args)]
        log_stock = sorted(Logged.log)
        Logged.log.clear()
        got = [np.array(o, copy=True) for o in f_low(*args)]
        assert sorted(Logged.log) == log_stock == ["a", "b", "c"]
        for w, g in zip(want, got):
            assert w.dtype == g.dtype and np.array_equal(w, g)


@pytest.mark.parametrize("linker", LOWMEM)
def test_data_dependent_sizes(linker):
    """Sizes no compile-time analysis can know: Nonzero and an arange of a data value."""
    x, k = T.matrix("x"), T.lscalar("k")
    nz = T.nonzero(x > 0)                            # shape depends on the values
    picked = x[nz] * 2.0
    r = T.arange(k * x.shape[0]).astype("float64")   # size from an input value
    t = T.tanh(x) + 1.0
    out = [picked.sum() + r.sum(), T.exp(picked), T.sqr(r), t * t]
    f_stock, f_low, warned = compile_both([x, k], out, linker)
    assert len(warned) <= 1, warned
    rng = np.random.RandomState(1)
    calls = [[rng.uniform(-1, 1, (n, 3)), np.int64(m)] for n, m in ((4, 2), (1, 7), (5, 0), (3, 3))]
    assert_same_calls(f_stock, f_low, calls)


@pytest.mark.parametrize("linker", LOWMEM + ["vm_lowmem"])
def test_blown_time_budget(linker):
    """``lowmem_time_budget`` far too small: the scheduler stops at once; same results,
    at most one warning."""
    x, W = T.matrix("x"), T.matrix("W")
    hs, h = [], x
    for i in range(12):          # > lowmem_exact_max_nodes nodes: many branches to order
        h = T.tanh(T.dot(h, W)) if i % 3 == 0 else T.exp(-abs(h)) * (1.0 + h)
        hs.append(h.sum(axis=1))
    out = [T.add(*hs), h]
    assert "lowmem_time_budget" in theano_lowmem.config.FLAG_BY_NAME   # the knob really exists
    old = theano.config.lowmem_time_budget
    theano.config.lowmem_time_budget = 1e-6
    try:
        f_stock, f_low, warned = compile_both([x, W], out, linker)
    finally:
        theano.config.lowmem_time_budget = old
    assert len(warned) <= 1, warned
    rng = np.random.RandomState(2)
    assert_same_calls(f_stock, f_low, [[rng.uniform(-1, 1, (n, 4)), rng.uniform(-1, 1, (4, 4))]
                                       for n in (5, 2, 5)])
