"""Differential fuzzing: random Theano graphs, stock Theano against theano_lowmem.

Every example builds one random program (:mod:`tests.theano_graphs`) twice,
compiles it stock (``Mode('cvm'|'cvm_nogc', 'fast_run')``) and with one
theano_lowmem configuration, calls both three times with inputs whose free
dimension changes between calls, and requires bit-identical outputs (dtype,
shape, values; NaN equal to NaN), identical shared-variable values after the
calls, inputs never modified, and the same exception (type, call) if stock
raises.  Which lowmem configuration is a test parameter, so all are covered.

Budget (examples per configuration) follows the hypothesis profile
(``tests/conftest.py``): ``dev`` (default) 4, ``ci`` 25, ``long`` 1200 (x 9 configurations);
``LOWMEM_FUZZ_EXAMPLES`` overrides.  Examples are derandomized (the same every run, so a
warm compile cache covers them) except with the ``long`` profile or ``LOWMEM_FUZZ_RANDOM=1``.
The long run (``LOWMEM_FUZZ_LOG=<file>`` appends one line per passed example)::

    HYPOTHESIS_PROFILE=long python -m pytest tests/test_fuzz_differential.py
"""
from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import theano
import theano.tensor as T

import theano_lowmem
from theano_lowmem import activate
from tests import theano_graphs as tg

PROFILE = os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI", "").lower() == "true" else "dev")
PER_CONFIG = int(os.environ.get("LOWMEM_FUZZ_EXAMPLES", "0")) or {"dev": 4, "ci": 25, "long": 1200}.get(PROFILE, 6)
# lowmem configuration -> (linker, optimizer, the stock linker it is compared with, fusion).
# Without elemwise fusion (both sides) graphs keep more nodes, hence more cells to share,
# and the C code vocabulary stays finite (one Elemwise per scalar op and broadcast pattern).
CONFIGS = {
    "order_gc": ("cvm", "fast_run+lowmem", "cvm", True),
    "order_nogc": ("cvm_nogc", "fast_run+lowmem", "cvm_nogc", True),
    "share_gc": ("cvm_lowmem", "fast_run+lowmem", "cvm", True),
    "share_nogc": ("cvm_lowmem_nogc", "fast_run+lowmem", "cvm_nogc", True),
    "pyvm_gc": ("vm_lowmem", "fast_run+lowmem", "cvm", True),
    "pyvm_nogc": ("vm_lowmem_nogc", "fast_run+lowmem", "cvm_nogc", True),
    "share_gc_nofuse": ("cvm_lowmem", "fast_run+lowmem", "cvm", False),
    "share_nogc_nofuse": ("cvm_lowmem_nogc", "fast_run+lowmem", "cvm_nogc", False),
    "pyvm_nogc_nofuse": ("vm_lowmem_nogc", "fast_run+lowmem", "cvm_nogc", False),
}
SLOW = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]


# Fixed examples (so a warm compile cache covers them) except in the long run or on request.
DERANDOMIZE = PROFILE != "long" and os.environ.get("LOWMEM_FUZZ_RANDOM", "0") in ("", "0")


def fuzz_settings(n: int):
    return settings(max_examples=max(1, n), deadline=None, suppress_health_check=SLOW,
                    derandomize=DERANDOMIZE)


def compile_program(program: tg.Program, linker: str, optimizer: str, seed: int, fusion: bool = True):
    """``(function, Built)`` for ``program`` compiled with ``Mode(linker, optimizer)``
    (minus elemwise fusion if not ``fusion``)."""
    b = tg.build(program, seed)
    mode = theano.Mode(linker, optimizer)
    if not fusion:
        mode = mode.excluding("fusion")
    f = theano.function(b.inputs, b.outputs, updates=b.updates, mode=mode, on_unused_input="ignore")
    return f, b


def run_calls(f, built: tg.Built, program: tg.Program, rows: list[int], seed: int) -> list:
    """Outputs (copied), shared values and errors of successive calls; asserts inputs are untouched."""
    record: list = []
    for i, R in enumerate(rows):
        args = tg.input_values(program, R, seed + 1 + i)
        before = [a.copy() for a in args]
        try:
            outs = f(*args)
        except Exception as exc:   # stock may legitimately raise: the other side must match
            record.append(("error", type(exc).__name__, str(exc).splitlines()[0][:300] if str(exc) else ""))
            break
        record.append(("outputs", [np.array(o, copy=True) for o in outs]))
        for a, c in zip(args, before):
            assert a.dtype == c.dtype and a.shape == c.shape and np.array_equal(a, c, equal_nan=True), \
                "an input was modified"
    record.append(("shared", {k: np.array(s.get_value(borrow=False)) for k, s in sorted(built.shared.items())}))
    return record


def assert_identical(a, b, where: str) -> None:
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype, f"{where}: dtype {a.dtype} != {b.dtype}"
    assert a.shape == b.shape, f"{where}: shape {a.shape} != {b.shape}"
    eq = np.array_equal(a, b, equal_nan=True) if a.dtype.kind in "fc" else np.array_equal(a, b)
    assert eq, f"{where}: values differ, max |diff| {np.nanmax(np.abs(a - b)) if a.size else 0}"


def assert_same_records(stock: list, low: list) -> None:
    errs = [(r[1], r[2]) for r in stock + low if r[0] == "error"]
    assert [r[0] for r in stock] == [r[0] for r in low], \
        f"stock {[r[0] for r in stock]} lowmem {[r[0] for r in low]}; errors: {errs}"
    for i, (rs, rl) in enumerate(zip(stock, low)):
        kind, s, l = rs[0], rs[1], rl[1]
        if kind == "error":
            assert s == l, f"call {i}: stock raised {s} ({rs[2]}), lowmem raised {l} ({rl[2]})"
        elif kind == "outputs":
            assert len(s) == len(l)
            for j, (a, b) in enumerate(zip(s, l)):
                assert_identical(a, b, f"call {i} output {j}")
        else:
            assert sorted(s) == sorted(l)
            for k in s:
                assert_identical(s[k], l[k], f"shared {k}")


def note_event(msg: str) -> None:
    """``hypothesis.event`` inside a hypothesis test, nothing outside."""
    try:
        event(msg)
    except Exception:
        pass


def differential(program: tg.Program, config: str, rows: list[int], seed: int = 0) -> None:
    """Compile ``program`` stock and with ``config``; run ``rows``; assert identical behaviour."""
    linker, optimizer, stock_linker, fusion = CONFIGS[config]
    f_stock, b_stock = compile_program(program, stock_linker, "fast_run", seed, fusion)
    stock = run_calls(f_stock, b_stock, program, rows, seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        f_low, b_low = compile_program(program, linker, optimizer, seed, fusion)
        low = run_calls(f_low, b_low, program, rows, seed)
    ours = [str(w.message) for w in caught if "theano_lowmem" in str(w.message)]
    for msg in ours:
        note_event(f"lowmem warning: {msg[:60]}")
    plan = getattr(f_low.maker.linker, "buffer_plan", None)
    note_event(f"{config}: cells shared" if plan is not None and plan.n_cells_after < plan.n_cells_before
          else f"{config}: no sharing")
    note_event("stock raised" if stock[0][0] == "error" else "stock ran")
    assert_same_records(stock, low)
    if os.environ.get("LOWMEM_FUZZ_LOG"):   # progress of long runs: one line per passed example
        with open(os.environ["LOWMEM_FUZZ_LOG"], "a") as fh:
            fh.write(f"{config} {len(program.steps)} {'shared' if plan is not None and plan.cell_of else '-'}\n")


rows_st = st.lists(st.integers(1, 5), min_size=3, max_size=3)


@pytest.mark.parametrize("config", sorted(CONFIGS))
@fuzz_settings(PER_CONFIG)
@given(program=tg.programs(), rows=rows_st)
def test_differential(config, program, rows):
    differential(program, config, rows)


@pytest.mark.parametrize("config", ["share_gc", "share_nogc", "pyvm_nogc", "share_nogc_nofuse"])
@fuzz_settings(max(2, PER_CONFIG // 2))
@given(program=tg.branchy_programs(), rows=rows_st)
def test_differential_branchy(config, program, rows):
    """Branch-and-reduce programs: many same-shape temporaries with disjoint lifetimes."""
    differential(program, config, rows)


@fuzz_settings(max(2, PER_CONFIG))
@given(program=tg.programs(max_ops=10, lazy=True), rows=rows_st,
       config=st.sampled_from(sorted(CONFIGS)))
def test_differential_ifelse(program, rows, config):
    differential(program, config, rows)


@fuzz_settings(max(2, PER_CONFIG // 2))
@given(program=tg.programs(min_ops=2, max_ops=6, scan=True), rows=rows_st,
       config=st.sampled_from(sorted(CONFIGS)))
def test_differential_scan(program, rows, config):
    differential(program, config, rows)


@fuzz_settings(max(2, PER_CONFIG // 2))
@given(program=tg.programs(max_ops=8, scan=True), rows=rows_st, gc=st.booleans())
def test_global_switch(program, rows, gc):
    """``activate.enable()``: the *default* mode (and scan's inner graphs) go through theano_lowmem."""
    linker = "cvm" if gc else "cvm_nogc"
    was = activate.enabled()
    activate.disable()
    try:
        f_stock, b_stock = compile_program(program, linker, "fast_run", 0)
        stock = run_calls(f_stock, b_stock, program, rows, 0)
        activate.enable()
        f_low, b_low = compile_program(program, linker, "fast_run", 0)
        assert isinstance(f_low.maker.linker, theano_lowmem.LowMemLinker)
        low = run_calls(f_low, b_low, program, rows, 0)
    finally:
        activate.disable()
        if was:
            activate.enable()
    assert_same_records(stock, low)


# ---------------------------------------------------------------- bugs found
def test_loopgc_realloc_clears_shared_cell():
    """Regression test (fixed in f0ffb62), shrunk from a fuzz failure of ``pyvm_gc``.

    ``VM_Linker.make_all`` applies Theano's own 0-d "reallocation" to ``storage_map``
    (vm.py:1117-1120, Loop/LoopGC only) *before* it builds ``post_thunk_clear`` from that
    rewritten map (vm.py:1122-1134).  The clear list of a reallocated 0-d variable then
    held the cell of its partner, which LowMemLinker had shared with a live 0-d index
    scalar: that scalar was emptied before its reader ran ("expected an ndarray, not
    None").  Stock ``vm`` and the other lowmem linkers were right.  The fix: no Theano
    reallocation while LowMemLinker links its plan.  Also checks that cells are shared.
    """
    y = T.matrix("y")
    c = T.concatenate([y, y], axis=1)[:, 1::2]
    a = T.inc_subtensor(y[1:], c[:-1])
    out = T.set_subtensor(a[:1], c[-1:])
    Y = np.arange(6.).reshape(3, 2)
    want = theano.function([y], [a, out], mode=theano.Mode("vm", "fast_run"))(Y)
    f = theano.function([y], [a, out], mode=theano.Mode("vm_lowmem", "fast_run"))
    got = f(Y)
    assert f.maker.linker.buffer_plan is not None and f.maker.linker.buffer_plan.cell_of
    for w, g in zip(want, got):
        assert np.array_equal(w, g)


# ---------------------------------------------------------------- not vacuous
def chain_program() -> tg.Program:
    """x -> 6 unary elemwise steps interleaved with reductions: plenty of same-shape temporaries."""
    steps = (("exp", (0,)), ("sum0", (6,)), ("tanh", (0,)), ("add_row", (8, 7)), ("sqr", (9,)),
             ("dot_MQ", (10, 3)), ("sum1", (11,)), ("mul_col", (11, 12)))
    return tg.Program(steps, outputs=(13,), C=4)


def test_fuzz_setup_exercises_sharing():
    """The sharing configurations really share cells on a chain (so the fuzzing is not vacuous),
    and a wrong cell plan would be visible: the outputs match stock on changing shapes."""
    f, _ = compile_program(chain_program(), "cvm_lowmem_nogc", "fast_run+lowmem", 0)
    plan = f.maker.linker.buffer_plan
    assert plan is not None and plan.n_cells_after < plan.n_cells_before
    for config in ("share_nogc", "pyvm_nogc", "share_nogc_nofuse"):
        differential(chain_program(), config, [5, 2, 4])


def test_program_strategy_covers_vocabulary():
    """Drawn programs use every op of the vocabulary (checked on a fixed sample)."""
    seen: set[str] = set()

    @settings(max_examples=300, derandomize=True, database=None, deadline=None)
    @given(tg.programs(lazy=True, scan=True))
    def collect(p):
        seen.update(p.op_names())
        assert len(p.steps) >= 3 and all(0 <= o < len(p.kinds) for o in p.outputs)
    collect()
    vocab = set(tg.OPS) | set(tg.LAZY_OPS) | set(tg.SCAN_OPS)
    assert seen == vocab, sorted(vocab - seen)
