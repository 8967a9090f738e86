"""Scan steps read the inner signature once per execution (callplan.hold_inner_plans).

Checked against the number of signature reads really made, stock Theano's results
across calls that change the inner shapes, and an inner function whose shape graph
reads an input value (then every step reads).
"""
from __future__ import annotations

import numpy as np
import pytest
import theano
import theano.tensor as T

import theano_lowmem  # noqa: F401  (registers the linkers)
from theano_lowmem import families
from theano_lowmem.callplan import planned_vm

from .test_callplan import same


def _mode(linker):
    return theano.Mode(linker=linker, optimizer="fast_run+lowmem")


def _inner(f):
    from theano.scan_module.scan_op import Scan
    return [planned_vm(n.op.fn) for n in f.maker.fgraph.apply_nodes
            if isinstance(n.op, Scan) and getattr(n.op, "fn", None) is not None]


def _count_reads(pv):
    count = [0]
    planner = pv._planner

    def counting(read=planner.signature):
        count[0] += 1
        return read()
    planner.signature = counting
    pv.__dict__["_sig"] = counting
    return count


@pytest.mark.parametrize("linker", ["cvm_lowmem_nogc", "cvm_lowmem"])
def test_one_signature_read_per_scan_run_and_results_follow_shape_changes(linker):
    case = families.lstm(steps=6, batch=3, n_in=5, n_hid=4)
    f = case.compile(_mode(linker))
    ref = case.compile(theano.Mode(linker=linker.replace("_lowmem", ""), optimizer="fast_run"))
    args = case.make_args()
    case.reset()
    f(*args)                       # builds the inner signature readers
    inner = _inner(f)
    assert inner and all(pv is not None for pv in inner)
    counts = [_count_reads(pv) for pv in inner]
    x0 = args[0]
    calls = [x0, x0[:, :2].copy(), x0[:3].copy(), x0]       # batch, then steps change
    outs = {}
    for name, fn in (("ours", f), ("stock", ref)):
        case.reset()
        outs[name] = [(fn(xs), [v.get_value() for v, _ in case.shared]) for xs in calls]
    for (a, wa), (b, wb) in zip(outs["ours"], outs["stock"]):
        same(a, b)
        same(wa, wb)
    # each inner function ran once per call of f: one read per run, not one per step
    assert all(c[0] == len(calls) for c in counts), [c[0] for c in counts]
    assert all(not pv.__dict__["_hold"] and pv.__dict__["_held"] is None for pv in inner)
    assert all(len(pv.plans) >= 2 for pv in inner)     # the shape changes made new plans


def test_inner_shape_read_by_value_reads_at_every_step():
    """``T.arange(k_t)`` in the step: the inner sizes depend on a sequence's value, which
    changes at each step, so there is no hold."""
    ks = T.ivector("ks")
    w = theano.shared(np.linspace(0, 1, 7), name="w")

    def step(k, acc):
        return acc + (T.arange(k) * w[:k]).sum() + T.exp(w[:k]).sum()
    out, _ = theano.scan(step, sequences=[ks], outputs_info=[T.constant(0.0, dtype="float64")])
    f = theano.function([ks], out[-1], mode=_mode("cvm_lowmem_nogc"))
    ref = theano.function([ks], out[-1], mode=theano.Mode(linker="cvm_nogc", optimizer="fast_run"))
    kv = np.array([3, 5, 1, 7, 2], dtype="int32")
    same(f(kv), ref(kv))
    inner = [pv for pv in _inner(f) if pv is not None]
    assert inner
    pv = inner[0]
    assert pv._planner.value_cells, "the test needs inner shape graphs that read a value"
    counts = _count_reads(pv)
    same(f(kv[::-1].copy()), ref(kv[::-1].copy()))
    assert counts[0] == len(kv)


@pytest.mark.parametrize("linker", ["cvm_lowmem_nogc", "cvm_lowmem"])
def test_traced_copy_of_a_scan_function_traces_the_outer_nodes(linker):
    """``executed.traced_function``: the scan's inner function gets a linker made from the
    tracing one (scans.use_in_scans, ``type(linker)``); it must link untraced, not fail."""
    from theano_lowmem.executed import traced_function
    case = families.lstm(steps=3, batch=2, n_in=3, n_hid=4)
    f = case.compile(_mode(linker))
    g, log = traced_function(f)
    case.reset()
    g(*case.make_args())
    case.reset()
    assert sorted(map(str, log)) == sorted(map(str, f.maker.fgraph.apply_nodes))


def test_inner_arena_views_are_back_in_their_cells_at_every_run():
    """With ``config.allow_gc`` on, Scan empties its inner function's cells after the loop
    (``Function.free``, scan_op.py:961-967): the next run must put the arena views back
    (before: they stayed out and every step allocated).  Checked at the VM, at every
    step, against the cells themselves; and the later steps of a run call the plan's VM
    directly (no per-step bookkeeping)."""
    assert theano.config.allow_gc
    case = families.lstm(steps=5, batch=3, n_in=5, n_hid=4)
    f = case.compile(_mode("cvm_lowmem_nogc"))
    ref = case.compile(theano.Mode(linker="cvm_nogc", optimizer="fast_run"))
    args = case.make_args()
    case.reset()
    f(*args)
    with_arena = [pv for pv in _inner(f) if pv.current.arena is not None]
    assert with_arena, "the test needs an inner function with an arena"
    seen = []
    for pv in with_arena:
        plan = pv.current
        real = plan.vm

        def recording(*a, real=real, arena=plan.arena, **k):
            seen.append(all(c[0] is view for c, view in arena.views))
            return real(*a, **k)
        plan.vm = recording
        pv.__dict__["_vm"] = recording
    fast = []
    for _ in range(3):
        assert all(pv.plans for pv in with_arena)
        out = f(*args)
        fast.extend(pv.current.calls for pv in with_arena)
    case.reset()
    for _ in range(4):
        expect = ref(*args)
    case.reset()
    ours = [f(*args) for _ in range(4)]
    same(ours[-1], expect)
    assert seen and all(seen), seen
    assert len(seen) == 3 * 5 * len(with_arena) + 4 * 5 * len(with_arena)
    n = len(with_arena)
    assert out is not None and fast[-n:] == [c + 5 for c in fast[-2 * n:-n]], fast
