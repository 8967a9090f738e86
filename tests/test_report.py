"""report(), its plot and the ``report`` command line, on small graphs (no timing asserts)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import theano
import theano.tensor as T

import theano_lowmem  # noqa: F401
from theano_lowmem import families
from theano_lowmem.core.memory import lifetimes, simulate
from theano_lowmem.model import model_for
from theano_lowmem.report import Report, report

from .oracles import downset_optimum, sim_peak, tracing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STOCK = dict(linker="cvm", optimizer="fast_run")
OURS = dict(linker="cvm_lowmem_nogc", optimizer="fast_run+lowmem")


@pytest.fixture(scope="module")
def mlp_case():
    case = families.mlp(batch=8, sizes=(16, 32, 4))
    return case, case.compile(theano.Mode(**STOCK))


def check_optimum(m: dict, g) -> int:
    """The report's optimum against the DP oracle of ``tests.oracles`` (exact, and
    independent of the schedulers the report uses): equal when the report says it is
    proven, else bracketed by the report's bounds; never above ours."""
    best, order, _ = downset_optimum(g)
    assert simulate(g, order).peak == best
    if m["optimal"]:
        assert m["optimum"] == best
    assert m["lower_bound"] <= best <= m["optimum"] <= m["ours"]
    return best


def traced_peak(f, args, rec) -> tuple[int, list]:
    """Modelled peak of the order a real call of ``f`` runs (``f`` linked inside
    ``tracing()``, whose Recorder is ``rec``), by ``core.memory`` and by the independent
    simulator, and that order (Apply nodes)."""
    rec.clear()
    f(*args)
    ran = rec.order()
    assert len(ran) == len(f.maker.fgraph.apply_nodes)
    g = model_for(f, *args, order=ran).graph           # node i is the i-th node that ran
    peak = simulate(g, list(range(g.n_nodes))).peak
    assert sim_peak(g, list(range(g.n_nodes))) == peak
    return peak, ran


@pytest.fixture(scope="module")
def mlp_report(mlp_case):
    case, f = mlp_case
    before = [v.get_value().copy() for v, _ in case.shared]
    r = report(f, *case.make_args(), time_budget=0.5, name="mlp")
    return r, before


def _check_consistent(r: Report, f, args) -> None:
    m = r.modelled
    # node ids of the report's model follow Theano's order; f is stock, so that is executed_order(f)
    model = model_for(f, *args)
    g = model.graph
    assert r.n_nodes == g.n_nodes and r.orders["theano"] == list(range(g.n_nodes))
    for key in ("theano", "ours"):
        trace = simulate(g, r.orders[key])                 # also checks the order is valid
        assert m[key] == trace.peak and list(trace.during) == r.series[f"{key}_during"]
        assert m[f"{key}_peak_step"] == trace.peak_step
    check_optimum(m, g)
    assert m["ours"] <= m["theano"] <= m["keep_all"]
    assert not m["optimal"] or m["lower_bound"] == m["optimum"]
    # the biggest value listed at our peak is really live at that step, and nothing bigger is
    step, top = m["ours_peak_step"], r.top_live["ours"]
    lts = {lt.buffer: lt for lt in lifetimes(g, r.orders["ours"])}
    live = [lt for lt in lts.values() if lt.start <= step <= lt.end]
    assert top and top[0]["value"] in lts
    lt = lts[top[0]["value"]]
    assert lt.start <= step <= lt.end and top[0]["bytes"] == lt.size == max(x.size for x in live)
    assert sum(x.size for x in live) + g.workspace[r.orders["ours"][step]] == m["ours"]


def test_report_fields_consistent_with_model(mlp_case, mlp_report):
    (case, f), (r, _) = mlp_case, mlp_report
    _check_consistent(r, f, case.make_args())
    with tracing() as rec:                 # the same graph, stock linker, traced real call
        g = case.compile(theano.Mode(**STOCK))
        assert traced_peak(g, case.make_args(), rec)[0] == r.modelled["theano"]
    case.reset()
    me = r.measured
    for key in ("stock", "ours", "stock_nogc", "ours_nogc"):
        assert me[key]["peak"] > 0 and me[key]["cells"] > 0
    assert me["stock_nogc"]["held"] > 0 and me["ours_nogc"]["held"] > 0
    assert me["ours_nogc"]["cells"] <= me["stock_nogc"]["cells"]
    assert len(r.series["measured_stock"]) == len(r.series["measured_ours"]) == r.n_nodes
    text = str(r)
    assert "MODELLED" in text and "MEASURED" in text and "mlp" in text


def test_report_does_not_change_shared_values(mlp_case, mlp_report):
    (case, _), (_, before) = mlp_case, mlp_report
    for (var, _), old in zip(case.shared, before):
        assert np.array_equal(var.get_value(), old), var.name


def test_to_dict_is_json(mlp_report):
    r, _ = mlp_report
    d = r.to_dict()
    assert json.loads(json.dumps(d)) == d == json.loads(r.to_json())
    assert d["modelled"]["ours"] == r.modelled["ours"]


def test_plot_writes_png(mlp_report, tmp_path):
    pytest.importorskip("matplotlib")
    r, _ = mlp_report
    path = r.plot(str(tmp_path / "r.png"))
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_report_of_lowmem_function_with_stock(mlp_case):
    """"ours" is the modelled peak of the order a real call of the lowmem function runs;
    the optimum matches the DP oracle on the report's model."""
    case, f_stock = mlp_case
    with tracing() as rec:
        f = case.compile(theano.Mode(**OURS))
        real, ran = traced_peak(f, case.make_args(), rec)
    case.reset()
    r = report(f, *case.make_args(), time_budget=0.3, stock=f_stock, trace_steps=False)
    assert r.modelled["ours_source"].startswith(("pinned", "call-time plan"))
    assert r.modelled["ours"] == real <= r.modelled["theano"]
    check_optimum(r.modelled, model_for(f, *case.make_args(), order=ran).graph)
    assert r.measured["stock"]["peak"] > 0 and "measured_ours" not in r.series


def test_branches_order_matters():
    """x -> 4 independent big branches: the modelled peaks match what tracemalloc sees."""
    case = families.branches(n_branches=3, n=20000)
    f = case.compile(theano.Mode(**STOCK))
    args = case.make_args()
    r = report(f, *args, time_budget=0.3)
    _check_consistent(r, f, args)
    with tracing() as rec:
        g = case.compile(theano.Mode(**STOCK))
        assert traced_peak(g, args, rec)[0] == r.modelled["theano"]
    # measured gc-on peak per call is within 10% (+ a few KB of Python objects) of the model
    assert abs(r.measured["stock"]["peak"] - r.modelled["theano"]) < 0.1 * r.modelled["theano"] + 8192


SCRIPT = """
import numpy as np, theano, theano.tensor as T
x = T.vector('x')
g = theano.shared(np.ones(3), name='g')
def lowmem_report_targets():
    f1 = theano.function([x], [T.exp(x).sum(), T.log1p(x * x).sum()], name='two')
    f2 = theano.function([x], (x * g.sum()).sum(), updates=[(g, g * 2)], name='upd')
    return [('two', f1, [np.ones(5000)]), ('upd', f2, [np.ones(10)])]
"""


def test_cli_report_script_subprocess(tmp_path):
    pytest.importorskip("matplotlib")
    script = tmp_path / "s.py"
    script.write_text(SCRIPT)
    png, js = tmp_path / "out.png", tmp_path / "out.json"
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, "-m", "theano_lowmem", "report", str(script),
                        "--function", "two", "--out", str(png), "--json", str(js),
                        "--time-budget", "0.3"], capture_output=True, text=True, env=env,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "MODELLED" in p.stdout and "two" in p.stdout
    d = json.loads(js.read_text())
    assert d["name"] == "two" and d["modelled"]["ours"] <= d["modelled"]["theano"]
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_cli_report_pickle(tmp_path, capsys):
    from theano_lowmem.__main__ import main
    x = T.vector("x")
    f = theano.function([x], (T.exp(x) * 2).sum(), mode=theano.Mode(**OURS))
    pkl, npz = tmp_path / "f.pkl", tmp_path / "in.npz"
    import pickle
    pkl.write_bytes(pickle.dumps(f))
    np.savez(npz, np.arange(1000.0))
    assert main(["report", str(pkl), "--inputs", str(npz), "--json", str(tmp_path / "r.json"),
                 "--time-budget", "0.2"]) == 0
    d = json.loads((tmp_path / "r.json").read_text())
    assert d["n_nodes"] >= 1 and d["measured"]["stock"]["peak"] > 0
    assert "MEASURED" in capsys.readouterr().out


def test_relink_without_order_runs_theanos_walk_on_a_lazy_graph():
    """``relink(f, linker)`` with no order pins nothing, even with our linker, whose
    ``carry_order`` (for ``Function.copy``) would pin the order stamp the cloned nodes
    carry (``Apply.clone`` copies tags).  On a lazy graph compiled gc-off (our linker pins
    its order there), the report's gc-on "ours" then measured that pinned order, not the
    walk ``cvm_lowmem`` runs (resnet_sd_train: 21.0 MB against 20.8 MB for the real
    function and for stock).  Checked against the executed order of Theano's own linker,
    traced, and against the real ``cvm_lowmem`` function's measured peak."""
    from theano.gof.vm import VM_Linker
    from theano.ifelse import ifelse

    from theano_lowmem.executed import trace_order
    from theano_lowmem.measure import measure_call
    from theano_lowmem.report import relink
    from theano_lowmem.storage_reuse import LowMemLinker
    x, c = T.vector("x"), T.scalar("c")
    a, b, d = T.exp(x) * 2, T.sin(x) + 1, T.tanh(x) * 3
    outs = [ifelse(T.gt(c, 0), a * d, b * d) + T.cos(x).sum(), (d + a).sum()]
    args = [np.arange(1000.0), np.float64(1.0)]
    with pytest.warns(UserWarning):         # lazy ops: gc-on cvm_lowmem runs as Theano does
        gc_on = theano.function([x, c], outs, mode=theano.Mode(linker="cvm_lowmem",
                                                                 optimizer="fast_run+lowmem"))
    f = theano.function([x, c], outs, mode=theano.Mode(**OURS))
    g = relink(f, LowMemLinker(use_cloop=True, allow_gc=True, call_plan=False))[0]
    s = relink(f, VM_Linker(use_cloop=True, allow_gc=True))[0]
    assert not [ft for ft in g.maker.fgraph._features if type(ft).__name__ == "OrderFeature"]
    walk = [str(n) for n in trace_order(s, *args)]
    assert [str(n) for n in trace_order(g, *args)] == walk
    assert [str(n) for n in trace_order(gc_on, *args)] == walk
    gc_on(*args)
    real = measure_call(gc_on, *args).peak
    for fn in (f, gc_on):        # planned gc-off, and gc-on (declined: no planned VM)
        assert report(fn, *args, time_budget=0.2).measured["ours"]["peak"] == real
