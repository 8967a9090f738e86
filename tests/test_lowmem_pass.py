"""The ``lowmem`` optimizer pass: registration, enforcement of the order on every
linker, laziness of ifelse, fallbacks, and bit-identical results."""
from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import theano
import theano.tensor as T
from theano.ifelse import ifelse

import theano_lowmem
from theano_lowmem import families, opt
from theano_lowmem.core import schedule as core_schedule
from theano_lowmem.executed import trace_order
from theano_lowmem.opt import OrderFeature, planned_order

LOWMEM = "fast_run+lowmem"
LOG: list = []


class LogOp(theano.Op):
    """Copies its input and records its tag when it runs (a trace no linker can fake)."""

    __props__ = ("tag",)

    def __init__(self, tag):
        self.tag = tag

    def make_node(self, x):
        x = T.as_tensor_variable(x)
        return theano.Apply(self, [x], [x.type()])

    def perform(self, node, inputs, out):
        LOG.append(self.tag)
        out[0][0] = inputs[0] * 1.0

    def infer_shape(self, node, shapes):
        return shapes


def known(case):
    """Give the case's inputs test values: the pass pins a compile-time order only on
    exact sizes (otherwise the order is planned at call time, tests/test_callplan.py)."""
    for var, val in zip(case.inputs, case.make_args()):
        var.tag.test_value = val
    return case


def log_branches():
    x = T.vector("x")
    x.tag.test_value = np.arange(4.0)       # exact sizes at compile time
    outs = [LogOp(t)(LogOp(t + "0")(x) * (i + 2.0)).sum() for i, t in enumerate("abc")]
    return x, outs[0] + outs[1] + outs[2]


def level_schedule(graph, *, baseline=None, **kw):
    """A valid order unlike any VM's own (they all finish a branch before the next):
    nodes by depth (longest path from the inputs), then id."""
    depth = [0] * graph.n_nodes
    for n in graph.topological_order():
        depth[n] = max((depth[p] + 1 for p in graph.preds[n]), default=0)
    order = sorted(range(graph.n_nodes), key=lambda n: (depth[n], n))
    from theano_lowmem.core.memory import peak
    return core_schedule.Schedule(order=tuple(order), peak=peak(graph, order), method="levels",
                                  optimal=False, lower_bound=0,
                                  baseline_peak=None, elapsed=0.0)


def test_registration_is_idempotent():
    opt.register()
    opt.register()
    theano_lowmem.storage_reuse.register()
    assert "lowmem" in theano.compile.optdb.__position__
    assert theano.compile.optdb.__position__["lowmem"] > theano.compile.optdb.__position__["merge3"]


def test_reimport_registers_nothing_twice():
    """``importlib.reload`` re-runs every registration; in a subprocess (reloading
    here would leave two generations of our classes in this test session)."""
    import subprocess
    import sys
    code = ("import importlib, theano, theano_lowmem\n"
            "importlib.reload(theano_lowmem.opt); importlib.reload(theano_lowmem)\n"
            "m = theano.Mode(optimizer='fast_run+lowmem')\n"
            "print(sorted(n for n in theano.compile.optdb.__position__ if 'lowmem' in n))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['lowmem']"


@pytest.mark.parametrize("mode", [theano.Mode(optimizer=LOWMEM),
                                  theano.compile.mode.get_default_mode().including("lowmem"),
                                  theano.Mode(linker="vm", optimizer="fast_run").including("lowmem")])
def test_modes_run_the_pass(mode):
    x, out = log_branches()
    f = theano.function([x], out, mode=mode)
    assert any(isinstance(ft, OrderFeature) for ft in f.maker.fgraph._features)
    assert planned_order(f.maker.fgraph) is not None


def test_stock_modes_do_not_run_the_pass():
    x, out = log_branches()
    f = theano.function([x], out, mode=theano.Mode(optimizer="fast_run"))
    assert not any(isinstance(ft, OrderFeature) for ft in f.maker.fgraph._features)


@pytest.mark.parametrize("linker", ["cvm", "cvm_nogc", "vm", "vm_nogc", "c|py", "py"])
def test_every_linker_runs_the_plan(linker, monkeypatch):
    monkeypatch.setattr(core_schedule, "schedule", level_schedule)
    x, out = log_branches()
    f_stock = theano.function([x], out, mode=theano.Mode(linker=linker, optimizer="fast_run"))
    f = theano.function([x], out, mode=theano.Mode(linker=linker, optimizer=LOWMEM))
    plan = [n.op.tag for n in planned_order(f.maker.fgraph) if isinstance(n.op, LogOp)]
    xv = np.arange(4.0)
    del LOG[:]
    r_stock = f_stock(xv)
    stock_log = list(LOG)
    del LOG[:]
    r = f(xv)
    assert LOG == plan
    assert stock_log != plan          # the plan really changed something
    assert np.array_equal(r, r_stock)


def test_traced_order_equals_plan_on_training_graph():
    case = known(families.mlp(batch=16, sizes=(32, 64, 10)))
    f = case.compile(mode=theano.Mode(optimizer=LOWMEM))
    plan = planned_order(f.maker.fgraph)
    planned = set(plan)
    traced = trace_order(f, *case.make_args())
    assert [n for n in traced if n in planned] == plan


def test_untaken_ifelse_branch_does_not_run():
    x, c = T.vector("x"), T.iscalar("c")
    then = LogOp("then")(T.exp(x)).sum()
    other = LogOp("else")(T.log1p(x ** 2)).sum()
    out = ifelse(c, then, other) + LogOp("after")(x).sum()
    for linker in ("cvm", "vm"):
        f = theano.function([x, c], out, mode=theano.Mode(linker=linker, optimizer=LOWMEM))
        assert planned_order(f.maker.fgraph) is None     # lazy graphs keep Theano's order
        del LOG[:]
        f(np.ones(3), 1)
        assert "else" not in LOG and "then" in LOG, (linker, LOG)
        del LOG[:]
        f(np.ones(3), 0)
        assert "then" not in LOG and "else" in LOG, (linker, LOG)


@pytest.mark.parametrize("name", ["mlp", "convnet", "lstm", "views_inplace", "branches"])
def test_bit_identical_to_fast_run(name):
    small = dict(mlp=dict(batch=16, sizes=(32, 64, 10)), convnet=dict(batch=2, image=8),
                 lstm=dict(steps=4, batch=4, n_in=8, n_hid=8), views_inplace=dict(n=40),
                 branches=dict(n=1000))[name]
    case = families.FAMILIES[name](**small)
    args = case.make_args()
    results = []
    for mode in (theano.Mode(optimizer="fast_run"), theano.Mode(optimizer=LOWMEM)):
        f = case.compile(mode=mode)
        calls = [f(*args) for _ in range(3)]          # updates make calls differ
        results.append((calls, [s.get_value() for s, _ in case.shared]))
    (calls0, sh0), (calls1, sh1) = results
    for a, b in zip(calls0, calls1):
        for u, v in zip(a, b):
            assert u.dtype == v.dtype and np.array_equal(u, v)
    for u, v in zip(sh0, sh1):
        assert np.array_equal(u, v)


def test_scan_inner_function_gets_the_pass():
    case = families.lstm(steps=3, batch=2, n_in=4, n_hid=4)
    f = case.compile(mode=theano.Mode(optimizer=LOWMEM))
    f(*case.make_args())
    from theano.scan_module.scan_op import Scan
    scans = [n.op for n in f.maker.fgraph.apply_nodes if isinstance(n.op, Scan)]
    assert scans
    for op in scans:     # the pass ran on the inner graph (its sizes are known at call time)
        assert op.fn.maker.fgraph.lowmem_info["method"].startswith("Theano's order")


def test_failure_falls_back_with_one_warning(monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("boom")
    monkeypatch.setattr(core_schedule, "schedule", broken)
    x, out = log_branches()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        f = theano.function([x], out, mode=theano.Mode(optimizer=LOWMEM))
    msgs = [str(m.message) for m in w if "theano_lowmem" in str(m.message)]
    assert len(msgs) == 1 and "boom" in msgs[0]
    assert planned_order(f.maker.fgraph) is None
    ref = theano.function([x], out, mode=theano.Mode(optimizer="fast_run"))
    assert np.array_equal(f(np.arange(3.0)), ref(np.arange(3.0)))


def test_deterministic_plan():
    plans = []
    for _ in range(2):
        case = known(families.mlp(batch=8, sizes=(16, 32, 10)))
        f = case.compile(mode=theano.Mode(optimizer=LOWMEM))
        plans.append([str(n) for n in planned_order(f.maker.fgraph)])
    assert plans[0] == plans[1]


def test_order_feature_drops_a_chain_that_contradicts_the_graph():
    x = T.vector("x")
    a = T.exp(x)
    b = T.log(a)
    fg = theano.gof.FunctionGraph([x], [b], clone=False)
    na, nb = a.owner, b.owner
    ok = OrderFeature([na, nb])
    fg.attach_feature(ok)
    assert ok.orderings(fg) == {nb: [na]}
    fg.remove_feature(ok)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        feature = OrderFeature([nb, na])        # contradicts the data dependency
        fg.attach_feature(feature)
        assert feature.orderings(fg) == {}
    assert not feature.valid
    assert any("no longer fits" in str(m.message) for m in w)
    assert len(fg.toposort()) == 2              # no cycle: Theano's order is used


def test_copy_and_pickle_of_a_lowmem_function():
    case = families.mlp(batch=8, sizes=(16, 32, 10))
    args = case.make_args()
    f = case.compile(mode=theano.Mode(optimizer=LOWMEM))
    ref = case.compile(mode=theano.Mode(optimizer="fast_run"))
    g = f.copy()
    case.reset()
    r_ref = ref(*args)
    case.reset()
    assert np.array_equal(g(*args)[0], r_ref[0])
    case.reset()
    h = pickle.loads(pickle.dumps(f))
    assert np.array_equal(h(*args)[0], r_ref[0])


def test_sharing_linker_keeps_the_plan_when_deepcopy_nodes_are_added(monkeypatch):
    """FunctionMaker adds DeepCopyOps after the pass (an output aliasing an input);
    the linker re-pins a full order that keeps ours as a subsequence, and the
    scheduler info survives."""
    monkeypatch.setattr(core_schedule, "schedule", level_schedule)
    monkeypatch.setattr(theano.config, "lowmem_call_plan", False)   # the compile-time plan
    x, out = log_branches()
    f = theano.function([x], [out, x], mode=theano.Mode(linker="cvm_lowmem_nogc",
                                                        optimizer=LOWMEM))
    feature = [ft for ft in f.maker.fgraph._features if isinstance(ft, OrderFeature)][0]
    assert feature.info.get("method") == "levels"
    plan = [n.op.tag for n in planned_order(f.maker.fgraph) if isinstance(n.op, LogOp)]
    assert plan[:3] == ["a0", "b0", "c0"]
    del LOG[:]
    f(np.arange(3.0))
    assert LOG == plan
