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


def test_scan_inner_functions_freed_after_each_run_get_no_arena():
    """With ``config.allow_gc`` on, Scan empties its inner function's cells after every
    run (``Function.free``, scan_op.py:958-967): such inner functions get no arena
    (design 0006, point 10); results stay stock's, and the later steps of a run call the
    plan's VM directly."""
    assert theano.config.allow_gc
    case = families.lstm(steps=5, batch=3, n_in=5, n_hid=4)
    f = case.compile(_mode("cvm_lowmem_nogc"))
    ref = case.compile(theano.Mode(linker="cvm_nogc", optimizer="fast_run"))
    args = case.make_args()
    case.reset()
    f(*args)
    inner = _inner(f)
    assert inner and all(pv.current.arena is None for pv in inner)
    assert all(pv._planner.arena_ids == () for pv in inner)
    before = [pv.current.calls for pv in inner]
    f(*args)
    assert [pv.current.calls for pv in inner] == [b + 5 for b in before]
    case.reset()
    expect = [ref(*args) for _ in range(3)][-1]
    case.reset()
    same([f(*args) for _ in range(3)][-1], expect)


def test_arena_views_are_back_in_their_cells_after_function_free():
    """``Function.free()`` (public; Scan calls it on inner functions) empties every cell of
    a gc-off function: the next call puts the arena views back (before stop 17 they stayed
    out: every op allocated while the arena stayed held).  Checked at the VM, against
    the cells themselves."""
    case = families.mixed_dag(n=20, seed=3, length=3000)
    f = case.compile(_mode("cvm_lowmem_nogc"))
    ref = case.compile(theano.Mode(linker="cvm_nogc", optimizer="fast_run"))
    args = case.make_args()
    f(*args)
    plan = planned_vm(f).current
    assert plan.arena is not None and plan.arena.views
    real, seen = plan.vm, []

    def recording(*a, **k):
        seen.append(all(c[0] is view for c, view in plan.arena.views))
        return real(*a, **k)
    plan.vm = recording
    planned_vm(f).__dict__["_vm"] = recording
    for _ in range(3):
        f.free()
        assert not any(c[0] is view for c, view in plan.arena.views)
        same(f(*args), ref(*args))
    assert seen == [True] * 3
