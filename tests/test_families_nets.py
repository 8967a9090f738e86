"""Lasagne-style net families (every input dimension unknown at compile time).

* Every family compiles at tiny size, stock and with lowmem, and gives bit-identical
  outputs and shared-variable updates over two calls at different batch sizes (the
  LSTM: also different sequence lengths).
* Issue 12: compiling the DenseNet-style family with lowmem stays within a bound of
  stock's compile time, measured in a subprocess with a deadline, so a hang (the
  exponential hashing of nested shape keys) fails the test instead of stalling it.
"""
from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
import warnings

import numpy as np
import pytest
import theano

import theano_lowmem  # noqa: F401  registers the modes
from theano_lowmem import bench
from theano_lowmem import families_nets as nets

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STOCK = dict(linker="cvm", optimizer="fast_run")
LOWMEM = dict(linker="cvm_lowmem_nogc", optimizer="fast_run+lowmem")
#: two calls with different input shapes (batch, and sequence length for the LSTM)
SHAPES = [dict(batch=3), dict(batch=6)]
LSTM_SHAPES = [dict(batch=3, steps=4), dict(batch=5, steps=7)]

#: Issue 12 targets lowmem compile <= 1.10x stock (the bench reports that).  The test bound
#: is looser because a single test run on this shared, loaded 2-core machine is noisy:
#: measured ratios (best of 2 each) were 0.83-0.93x (densenet_train tiny) and 0.57-0.70x
#: (densenet_eval tiny) in this test, 1.07x / 0.98x at small size in the bench, where
#: resnet_bneck_train once read 1.27x and 1.06x on a rerun.  A hang or a super-linear blow-up
#: exceeds it by far: with the nested-tuple keys of c83582f^ (and the Constant fix) this
#: test failed with "lowmem compile of densenet_train still running after 244 s".
COMPILE_RATIO_BOUND = 1.35
#: seconds the child may spend on one stock compile (a cold C cache pays g++ here)
STOCK_DEADLINE = 600.0
#: a lowmem compile gets max(floor, factor x the slower stock compile) before it counts as hung
HANG_FLOOR, HANG_FACTOR = 60.0, 5.0


def _case(name: str):
    return nets.FAMILIES[name](**nets.family_kwargs(name, "tiny"))


def _run_calls(f, case, shapes) -> tuple[list, bool]:
    """Outputs and every shared value after each call, from the initial shared values;
    and whether any shared value moved (the shared values are reset afterwards)."""
    case.reset()
    vals = []
    for kw in shapes:
        outs = f(*case.make_args(**kw))
        vals += [np.array(o, copy=True) for o in outs]
        vals += [np.array(v.get_value(borrow=False), copy=True) for v, _ in case.shared]
    moved = not all(np.array_equal(v.get_value(borrow=True), v0) for v, v0 in case.shared)
    case.reset()
    return vals, moved


# lenet_train, inception_net_train and densenet_train fell back to stock (the last assert
# below) until model._DimKeys stopped calling int() on every Constant met while keying shape
# graphs: the shape of an Elemwise that broadcasts against a (1, 1) constant is
# Shape(var)[i] of an intermediate, so the walk enters the computation graph and meets
# TensorConstant{(1,1) of 0.5}: TypeError, "could not schedule", "storage sharing and
# call-time planning disabled".  Until then the DenseNet compile-time test below never
# reached the shape-key hashing it guards.
@pytest.mark.parametrize("name", sorted(nets.FAMILIES))
def test_family_matches_stock_across_input_shapes(name):
    """Bit-identical to stock over two calls of different shapes, and lowmem did its job:
    no 'theano_lowmem: ...' fallback warning at compile time or at the calls."""
    case = _case(name)
    x = case.inputs[0]
    assert x.dtype == "float32" and not any(x.broadcastable)   # nothing known at compile time
    assert not hasattr(x.tag, "test_value")
    shapes = LSTM_SHAPES if name.startswith("lstm") else SHAPES
    f_stock = case.compile(theano.Mode(**STOCK))
    ref, moved = _run_calls(f_stock, case, shapes)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        f_ours = case.compile(theano.Mode(**LOWMEM))
        got, _ = _run_calls(f_ours, case, shapes)
    bench.check_identical(name, ref, got, "lowmem over two input shapes")
    assert (len(case.updates) > 0) == moved == name.endswith("_train")   # training trains
    fallbacks = [str(w.message) for w in caught if str(w.message).startswith("theano_lowmem")]
    assert not fallbacks, fallbacks


def test_sizes_and_variants_are_consistent():
    names = set(nets.FAMILIES)
    assert names == {f"{b}_{v}" for b in nets.BUILDERS for v in ("train", "eval")}
    for size in ("tiny", "small", "medium", "large"):
        assert set(nets.SIZES[size]) == set(nets.BUILDERS)
    assert nets.SIZES["large"]["densenet"]["layers"] * 3 + 4 == 40      # DenseNet-40
    for name in names:
        assert name in bench.ALL_FAMILIES and name in bench.SIZES["small"]
    args = _case("lstm_seq_train").make_args(batch=2, steps=9)
    assert [a.shape for a in args] == [(9, 2, 6), (2,)]
    a1, a2 = _case("lenet_eval").make_args(), _case("lenet_eval").make_args()
    assert all(np.array_equal(p, q) for p, q in zip(a1, a2))      # seeded


# ------------------------------------------------------------------ compile time (issue 12)
CHILD = r"""
import gc, json, sys, time, warnings
warnings.simplefilter("ignore")
import theano, theano_lowmem
from theano_lowmem import families_nets as nets
modes = {"stock": dict(linker="cvm", optimizer="fast_run"),
         "lowmem": dict(linker="cvm_lowmem_nogc", optimizer="fast_run+lowmem")}
for name in sys.argv[1:]:
    case = nets.FAMILIES[name](**nets.family_kwargs(name, "tiny"))
    for rnd in (1, 2):
        for mode in ("stock", "lowmem"):
            print(json.dumps(dict(start=mode, name=name, round=rnd)), flush=True)
            gc.collect()
            gc.freeze()     # as theano_lowmem.bench: a compile pays only for what it creates
            t0 = time.perf_counter()
            f = case.compile(theano.Mode(**modes[mode]))
            t = time.perf_counter() - t0
            gc.unfreeze()
            print(json.dumps(dict(done=mode, name=name, round=rnd, seconds=t,
                                  nodes=len(f.maker.fgraph.apply_nodes))), flush=True)
"""


def compile_times(names, child=CHILD) -> dict:
    """Compile each family stock, lowmem, stock, lowmem in one child process (same C cache,
    same process for both modes); ``{name: {"stock": [s, s], "lowmem": [s, s], "nodes": n}}``.

    Each compile has a deadline (stock: ``STOCK_DEADLINE``; lowmem: ``HANG_FACTOR`` times
    the slower stock compile, at least ``HANG_FLOOR``); past it the child is killed and
    the test fails naming the family and mode."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-c", child, *names], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, cwd=ROOT, env=env)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(ln) for ln in proc.stdout] + [lines.put(None)],
                     daemon=True).start()
    times: dict = {n: {"stock": [], "lowmem": []} for n in names}
    started = None
    try:
        while True:
            if started is None:
                deadline = STOCK_DEADLINE
            elif started["start"] == "stock":
                deadline = STOCK_DEADLINE
            else:
                deadline = max(HANG_FLOOR, HANG_FACTOR * max(times[started["name"]]["stock"]))
            try:
                line = lines.get(timeout=deadline)
            except queue.Empty:
                what = started or {"start": "import", "name": "-"}
                pytest.fail(f"{what['start']} compile of {what['name']} still running after "
                            f"{deadline:.0f} s (stock compiles took {times.get(what['name'])}): "
                            "lowmem compile hung")
            if line is None:
                break
            msg = json.loads(line)
            if "start" in msg:
                started = msg
            else:
                times[msg["name"]][msg["done"]].append(msg["seconds"])
                times[msg["name"]]["nodes"] = msg["nodes"]
                started = None
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode in (0, -9), f"child failed with {proc.returncode}"
    for n in names:
        assert len(times[n]["stock"]) == len(times[n]["lowmem"]) == 2, times
    return times


def test_densenet_compile_time_ratio_to_stock():
    names = ["densenet_train"]     # the family of the hang (densenet_eval: benchmark table)
    t0 = time.perf_counter()
    times = compile_times(names)
    report = {n: (min(t["lowmem"]) / min(t["stock"]), t) for n, t in times.items()}
    print(f"compile times ({time.perf_counter() - t0:.0f} s): {report}")
    for name, (ratio, t) in report.items():
        assert ratio <= COMPILE_RATIO_BOUND, (
            f"{name} ({t['nodes']} Apply nodes): lowmem compile {min(t['lowmem']):.2f} s is "
            f"{ratio:.2f}x stock's {min(t['stock']):.2f} s (bound {COMPILE_RATIO_BOUND})")


def test_hang_is_caught(monkeypatch):
    """The deadline works: a child whose lowmem compile never returns fails the test fast."""
    monkeypatch.setattr(sys.modules[__name__], "HANG_FLOOR", 2.0)
    monkeypatch.setattr(sys.modules[__name__], "HANG_FACTOR", 1.0)
    child = ("import json, time\n"
             "print(json.dumps(dict(start='stock', name='x', round=1)), flush=True)\n"
             "print(json.dumps(dict(done='stock', name='x', round=1, seconds=0.1, nodes=1)),"
             " flush=True)\n"
             "print(json.dumps(dict(start='lowmem', name='x', round=1)), flush=True)\n"
             "time.sleep(60)\n")
    t0 = time.perf_counter()
    with pytest.raises(pytest.fail.Exception, match="lowmem compile of x still running"):
        compile_times(["x"], child=child)
    assert time.perf_counter() - t0 < 20
