"""Differential fuzzing: random Theano graphs, stock Theano against theano_lowmem.

Every example builds one random program (:mod:`tests.theano_graphs`) twice,
compiles it stock (``Mode('cvm'|'cvm_nogc', 'fast_run')``) and with one
theano_lowmem configuration, calls both three times with call shapes A, B, A
(or A, B, C): the batch/row count ``R`` and the image height and width change
between calls.  It requires bit-identical outputs (dtype, shape, values; NaN
equal to NaN), identical shared-variable values after the calls, inputs never
modified, returned (non-borrowed) arrays left intact by later calls exactly
when stock leaves them intact, and the same exception (type, call) if stock
raises.  Which lowmem configuration is a test parameter, so all 9 are covered
(linkers ``cvm``/``cvm_nogc`` with the pass, ``cvm_lowmem[_nogc]``,
``vm_lowmem[_nogc]``, with and without elemwise fusion: allow_gc on and off).

Tests (``PER_CONFIG`` = examples per configuration, set by the profile):

* ``test_differential[config]``: float64 2-D programs plus mixed dtypes
  (float32/float64/int64/int8/bool, comparisons used by ``switch``, casts and
  masks), ``PER_CONFIG`` examples each;
* ``test_differential_image[config]``: rank-4 float32 programs with
  ``conv2d`` (half/valid, 3x3/1x1), ``pool_2d`` (max/average), ``T.grad``
  through both and backprop of a program's scalar to ``im``/``Wc``, bridged
  to the 2-D world and mixed dtypes, shared-filter updates, ``PER_CONFIG``;
* ``test_differential_copy[copy|copy_shared]``: ``Function.copy()`` of a
  lowmem function (``share_memory=False``: every call on the copy;
  ``True``: calls alternate original, copy, original) against stock's
  *original* (stock's own copy is wrong on inplace graphs, THEANO_FACTS §10),
  ``PER_CONFIG`` each, configuration drawn among the LowMemLinker ones;
* ``test_differential_branchy`` (x4 configs), ``_ifelse``, ``_scan``
  (``PER_CONFIG // 2``), ``test_global_switch`` (``PER_CONFIG // 2``).

Budget: ``dev`` (default) 3 per configuration (90 examples), ``ci``
(``CI=true``) 30 per configuration: **720 examples** (plus 6 fixed tests) in
4 min 08 s warm on the shared 2-core box (docs/referee.md has the command and the
cold time); ``long``: scripts/fuzz_long.py.  ``LOWMEM_FUZZ_EXAMPLES=N`` runs exactly N examples
in every fuzz test.  dev and ci are derandomized: each test and configuration
has its own fixed seed (``@seed(crc32(name))``), so the same programs run every
time and a warm compile cache covers them.  ``LOWMEM_FUZZ_RANDOM=1`` or
``HYPOTHESIS_PROFILE=long`` draw new ones; ``LOWMEM_FUZZ_SEED=S`` fixes them.

The long run (>= 10,000 graphs, split into subprocesses so that Theano's
per-function caches, ~2.4 MB per compiled function, are freed between chunks)::

    nice -n 19 python scripts/fuzz_long.py --total 10000 --out /tmp/fuzz_long

prints ``N passed, M failed`` and exits non-zero on any failure; ``--resume``
continues an interrupted run (docs/referee.md has its last result).
``LOWMEM_FUZZ_LOG=<file>`` appends one line per passed example.
"""
from __future__ import annotations

import os
import warnings
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, seed, settings
from hypothesis import strategies as st

import theano
import theano.tensor as T
from theano.tensor.nnet import conv2d

import theano_lowmem
from theano_lowmem import activate
from tests import theano_graphs as tg

PROFILE = os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI", "").lower() == "true" else "dev")
FIXED_N = int(os.environ.get("LOWMEM_FUZZ_EXAMPLES", "0"))
PER_CONFIG = FIXED_N or {"dev": 3, "ci": 30, "long": 1200}.get(PROFILE, 6)
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
# Configurations whose linker is LowMemLinker: the ones whose Function.copy() must be right
# (with a stock linker, copy() drops the DestroyHandler and is wrong in stock Theano too).
LINKER_CONFIGS = sorted(c for c, (linker, *_) in CONFIGS.items() if "lowmem" in linker)
SLOW = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]

# Fixed examples (so a warm compile cache covers them) except in the long run or on request.
DERANDOMIZE = PROFILE != "long" and os.environ.get("LOWMEM_FUZZ_RANDOM", "0") in ("", "0")
SEED = os.environ.get("LOWMEM_FUZZ_SEED")


def examples(factor: float = 1.0) -> int:
    """Examples for one fuzz test: ``LOWMEM_FUZZ_EXAMPLES`` exactly, else ``factor`` x the profile's."""
    return FIXED_N or max(2, round(PER_CONFIG * factor))


def fuzz(key: str, n: int, **strategies):
    """Decorator: the function becomes a hypothesis test of ``n`` examples of ``strategies``.

    Derandomized runs seed it with ``crc32(key)``, so every test *and configuration* draws
    its own fixed programs; ``LOWMEM_FUZZ_SEED`` adds a run seed (the long run's chunks)."""
    def deco(body):
        test = settings(max_examples=max(1, n), deadline=None, suppress_health_check=SLOW,
                        database=None, derandomize=False)(given(**strategies)(body))
        if DERANDOMIZE or SEED:
            test = seed(zlib.crc32(key.encode()) + (int(SEED) if SEED else 0))(test)
        return test
    return deco


def compile_program(program: tg.Program, linker: str, optimizer: str, seed: int, fusion: bool = True):
    """``(function, Built)`` for ``program`` compiled with ``Mode(linker, optimizer)``
    (minus elemwise fusion if not ``fusion``)."""
    b = tg.build(program, seed)
    mode = theano.Mode(linker, optimizer)
    if not fusion:
        mode = mode.excluding("fusion")
    f = theano.function(b.inputs, b.outputs, updates=b.updates, mode=mode, on_unused_input="ignore")
    return f, b


def run_calls(fns: list, built: tg.Built, program: tg.Program, calls: list, seed: int) -> list:
    """Outputs (copied), errors, whether returned arrays stayed intact, and shared values of
    successive calls; call ``i`` goes to ``fns[i % len(fns)]``.  Asserts inputs are untouched."""
    record: list = []
    held: list = []
    for i, shape in enumerate(calls):
        args = tg.input_values(program, shape, seed + 1 + i)
        before = [a.copy() for a in args]
        try:
            outs = fns[i % len(fns)](*args)
        except Exception as exc:   # stock may legitimately raise: the other side must match
            record.append(("error", type(exc).__name__, str(exc).splitlines()[0][:300] if str(exc) else ""))
            break
        record.append(("outputs", [np.array(o, copy=True) for o in outs]))
        held += [(o, c) for j, (o, c) in enumerate(zip(outs, record[-1][1])) if j not in built.borrowed]
        for a, c in zip(args, before):
            assert a.dtype == c.dtype and a.shape == c.shape and np.array_equal(a, c, equal_nan=True), \
                "an input was modified"
    record.append(("held", [o.shape == c.shape and np.array_equal(o, c, equal_nan=c.dtype.kind in "fc")
                            for o, c in held]))
    record.append(("shared", {k: np.array(s.get_value(borrow=False)) for k, s in sorted(built.shared.items())}))
    return record


def assert_identical(a, b, where: str) -> None:
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype, f"{where}: dtype {a.dtype} != {b.dtype}"
    assert a.shape == b.shape, f"{where}: shape {a.shape} != {b.shape}"
    eq = np.array_equal(a, b, equal_nan=True) if a.dtype.kind in "fc" else np.array_equal(a, b)
    if not eq:
        diff = np.abs(a.astype("float64") - b.astype("float64")) if a.size else np.zeros(1)
        raise AssertionError(f"{where}: values differ, max |diff| {np.nanmax(diff)}")


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
        elif kind == "held":
            assert s == l, f"returned arrays left intact by later calls: stock {s}, lowmem {l}"
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


def shares_cells(f) -> bool:
    """Whether two variables of compiled ``f`` share memory: one storage cell, or (with
    the arena, after a call) arrays of two values that are not views of one another
    whose bytes lie in one allocation.  Read from the function's ``storage_map`` and the
    arrays in it, not from the linker's plan objects."""
    cells = [id(c) for c in f.fn.storage_map.values()]
    if len(set(cells)) < len(cells):
        return True
    by_owner: dict = {}
    for var, c in f.fn.storage_map.items():
        a = c[0]
        if var.owner is None or not isinstance(a, np.ndarray) or a.base is None:
            continue
        owner = a
        while isinstance(owner.base, np.ndarray):
            owner = owner.base
        lo = a.__array_interface__["data"][0]
        by_owner.setdefault(id(owner), set()).add((lo, a.nbytes))
    # two different byte ranges of one owner: two values placed in one arena
    return any(len(spans) >= 2 for spans in by_owner.values())


def differential(program: tg.Program, config: str, calls: list, seed: int = 0, copy: str | None = None,
                 label: str = "") -> None:
    """Compile ``program`` stock and with ``config``; run ``calls``; assert identical behaviour.

    ``copy="copy"`` runs every lowmem call on ``f.copy()``; ``"copy_shared"`` alternates
    ``f`` and ``f.copy(share_memory=True)`` (they share intermediate cells)."""
    linker, optimizer, stock_linker, fusion = CONFIGS[config]
    f_stock, b_stock = compile_program(program, stock_linker, "fast_run", seed, fusion)
    stock = run_calls([f_stock], b_stock, program, calls, seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        f_low, b_low = compile_program(program, linker, optimizer, seed, fusion)
        fns = [f_low]
        if copy == "copy":
            fns = [f_low.copy()]
        elif copy == "copy_shared":
            fns = [f_low, f_low.copy(share_memory=True)]
        low = run_calls(fns, b_low, program, calls, seed)
    ours = [str(w.message) for w in caught if "theano_lowmem" in str(w.message)]
    for msg in ours:
        note_event(f"lowmem warning: {msg[:60]}")
    shared = any(shares_cells(f) for f in fns)
    note_event(f"{config}: cells shared" if shared else f"{config}: no sharing")
    note_event("stock raised" if stock[0][0] == "error" else "stock ran")
    assert_same_records(stock, low)
    if os.environ.get("LOWMEM_FUZZ_LOG"):   # progress of long runs: one line per passed example
        with open(os.environ["LOWMEM_FUZZ_LOG"], "a") as fh:
            fh.write(f"{label or '-'} {config} {len(program.steps)} {'shared' if shared else '-'} "
                     f"{'warned' if ours else '-'}\n")


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_differential(config):
    """2-D float64 programs with mixed dtypes (float32, int64, int8, bool from comparisons)."""
    @fuzz(f"general {config}", examples(), program=tg.programs(mixed=True), calls=tg.calls())
    def check(program, calls):
        differential(program, config, calls, label="general")
    check()


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_differential_image(config):
    """Rank-4 float32 programs: conv2d, pool_2d, their gradients; batch and spatial sizes change."""
    @fuzz(f"image {config}", examples(), calls=tg.calls(),
          program=tg.programs(max_ops=12, mixed=True, image=True, focus=True))
    def check(program, calls):
        differential(program, config, calls, label="image")
    check()


@pytest.mark.parametrize("copy", ["copy", "copy_shared"])
def test_differential_copy(copy):
    """``Function.copy()`` of a lowmem function gives stock's results (stock's original)."""
    @fuzz(f"copy {copy}", examples(), calls=tg.calls(), config=st.sampled_from(LINKER_CONFIGS),
          program=tg.programs(max_ops=12, mixed=True, image=True))
    def check(program, calls, config):
        differential(program, config, calls, copy=copy, label=copy)
    check()


@pytest.mark.parametrize("config", ["share_gc", "share_nogc", "pyvm_nogc", "share_nogc_nofuse"])
def test_differential_branchy(config):
    """Branch-and-reduce programs: many same-shape temporaries with disjoint lifetimes."""
    @fuzz(f"branchy {config}", examples(0.5), program=tg.branchy_programs(), calls=tg.calls())
    def check(program, calls):
        differential(program, config, calls, label="branchy")
    check()


def test_differential_ifelse():
    @fuzz("ifelse", examples(), program=tg.programs(max_ops=10, lazy=True, mixed=True), calls=tg.calls(),
          config=st.sampled_from(sorted(CONFIGS)))
    def check(program, calls, config):
        differential(program, config, calls, label="ifelse")
    check()


def test_differential_ifelse_arena():
    """Lazy graphs with ``allow_gc=False`` and the C VM: the arena placed for every branch
    (design 0007) is only built by these two configurations."""
    @fuzz("ifelse_arena", examples(0.5), program=tg.programs(max_ops=10, lazy=True, mixed=True),
          calls=tg.calls(), config=st.sampled_from(["share_nogc", "share_nogc_nofuse"]))
    def check(program, calls, config):
        differential(program, config, calls, label="ifelse_arena")
    check()


def test_differential_scan():
    @fuzz("scan", examples(0.5), program=tg.programs(min_ops=2, max_ops=6, scan=True), calls=tg.calls(),
          config=st.sampled_from(sorted(CONFIGS)))
    def check(program, calls, config):
        differential(program, config, calls, label="scan")
    check()


def test_global_switch():
    """``activate.enable()``: the *default* mode (and scan's inner graphs) go through theano_lowmem."""
    @fuzz("switch", examples(0.5), program=tg.programs(max_ops=8, scan=True, mixed=True), calls=tg.calls(),
          gc=st.booleans())
    def check(program, calls, gc):
        linker = "cvm" if gc else "cvm_nogc"
        was = activate.enabled()
        activate.disable()
        try:
            f_stock, b_stock = compile_program(program, linker, "fast_run", 0)
            stock = run_calls([f_stock], b_stock, program, calls, 0)
            activate.enable()
            f_low, b_low = compile_program(program, linker, "fast_run", 0)
            assert isinstance(f_low.maker.linker, theano_lowmem.LowMemLinker)
            low = run_calls([f_low], b_low, program, calls, 0)
        finally:
            activate.disable()
            if was:
                activate.enable()
        assert_same_records(stock, low)
        if os.environ.get("LOWMEM_FUZZ_LOG"):
            with open(os.environ["LOWMEM_FUZZ_LOG"], "a") as fh:
                fh.write(f"switch {linker} {len(program.steps)} - -\n")
    check()


# ---------------------------------------------------------------- bugs found
def test_loopgc_realloc_clears_shared_cell():
    """Regression test (fixed in f0ffb62), shrunk from a fuzz failure of ``pyvm_gc``.

    ``VM_Linker.make_all`` applies Theano's own 0-d "reallocation" to ``storage_map``
    (vm.py:1117-1120, Loop/LoopGC only) *before* it builds ``post_thunk_clear`` from that
    rewritten map (vm.py:1122-1134).  The clear list of a reallocated 0-d variable then
    held the cell of its partner, which LowMemLinker had shared with a live 0-d index
    scalar: that scalar was emptied before its reader ran ("expected an ndarray, not
    None").  Stock ``vm`` and the other lowmem linkers were right.  The fix: no Theano
    reallocation while LowMemLinker links its plan.  (Since the call-time plans of
    e76a673 the Loop VMs share no cell on this graph at link time, so only the results
    are checked, for both gc settings.)
    """
    y = T.matrix("y")
    c = T.concatenate([y, y], axis=1)[:, 1::2]
    a = T.inc_subtensor(y[1:], c[:-1])
    out = T.set_subtensor(a[:1], c[-1:])
    Y = np.arange(6.).reshape(3, 2)
    for stock, low in (("vm", "vm_lowmem"), ("vm_nogc", "vm_lowmem_nogc")):
        want = theano.function([y], [a, out], mode=theano.Mode(stock, "fast_run"))(Y)
        f = theano.function([y], [a, out], mode=theano.Mode(low, "fast_run"))
        for _ in range(2):
            for w, g in zip(want, f(Y)):
                assert np.array_equal(w, g)


def test_copy_shared_conv_update():
    """Shrunk from ``test_image_program_matches_stock`` (config ``share_nogc``, ``copy_shared``).

    The copy gets the original's cells (``share_memory=True``); the original's link-time plan
    shares cells between its intermediates, and the copy, which runs its own call-time order
    over the same cells, read a cell another value had overwritten (a CorrMM shape input:
    "CorrMM shape inconsistency", found by the fuzzer at 59b8094/1acbd7d).  Fixed: cells the
    copy is given shared stay constraints of every call-time order
    (storage_reuse._supplied_groups)."""
    im = T.tensor4("im", dtype="float32")
    Wc = theano.shared(np.random.RandomState(0).uniform(-.5, .5, (3, 3, 3, 3)).astype("float32"), name="Wc")
    h1 = conv2d(im, Wc, border_mode="half")
    h2 = conv2d(h1, Wc, border_mode="half")
    gw = T.grad(T.sqr(conv2d(h2, Wc, border_mode="half")).sum(), Wc)
    x = np.random.RandomState(1).uniform(-2, 2, (2, 3, 6, 5)).astype("float32")
    results = {}
    for linker, opt in (("cvm_nogc", "fast_run"), ("cvm_lowmem_nogc", "fast_run+lowmem")):
        Wc.set_value(np.random.RandomState(0).uniform(-.5, .5, (3, 3, 3, 3)).astype("float32"))
        f = theano.function([im], h2, updates=[(Wc, Wc - gw)], mode=theano.Mode(linker, opt))
        first = f(x).copy()
        second = f.copy(share_memory=True)(x)   # lowmem: ValueError: CorrMM shape inconsistency
        results[linker] = (first, second.copy(), Wc.get_value())
    for a, b in zip(results["cvm_nogc"], results["cvm_lowmem_nogc"]):
        assert_identical(a, b, "copy_shared")


# ---------------------------------------------------------------- not vacuous
B = tg.BASE
W_IDX = [n for n, _, _ in tg.INPUTS + tg.SHARED].index("W")
WC_IDX = [n for n, _, _ in tg.INPUTS + tg.SHARED].index("Wc")
IM_IDX = [n for n, _, _ in tg.INPUTS].index("im")


def chain_program() -> tg.Program:
    """x -> 6 unary elemwise steps interleaved with reductions: plenty of same-shape temporaries."""
    steps = (("exp", (0,)), ("sum0", (B,)), ("tanh", (0,)), ("add_row", (B + 2, B + 1)), ("sqr", (B + 3,)),
             ("dot_MQ", (B + 4, W_IDX)), ("sum1", (B + 5,)), ("mul_col", (B + 5, B + 6)))
    return tg.Program(steps, outputs=(B + 7,), C=4)


def image_program() -> tg.Program:
    """im -> conv -> relu -> conv -> pool -> its gradient, conv filter gradient, an SGD update."""
    steps = (("conv3", (IM_IDX, WC_IDX)), ("relu", (B,)), ("conv3", (B + 1, WC_IDX)), ("tanh", (B + 2,)),
             ("pool_max_grad", (B + 3,)), ("conv3_grad_w", (B + 4, WC_IDX)), ("scale", (B + 5,)),
             ("sub", (WC_IDX, B + 6)), ("gap", (B + 4,)))
    return tg.Program(steps, outputs=(B + 8, B + 4), updates=(("Wc", B + 7),), C=3)


def test_fuzz_setup_exercises_sharing():
    """The sharing configurations really share cells on a chain (so the fuzzing is not vacuous),
    and a wrong cell plan would be visible: the outputs match stock on changing shapes."""
    f, b = compile_program(chain_program(), "cvm_lowmem_nogc", "fast_run+lowmem", 0)
    run_calls([f], b, chain_program(), [(5, 4, 4)], 0)
    assert shares_cells(f)
    for config in ("share_nogc", "pyvm_nogc", "share_nogc_nofuse"):
        differential(chain_program(), config, [(5, 4, 4), (2, 6, 5), (5, 4, 4)])


def test_image_program_matches_stock():
    """The hand-written conv/pool/grad program matches stock in every configuration,
    also through ``Function.copy()``, with batch and spatial sizes changing."""
    for config in sorted(CONFIGS):
        differential(image_program(), config, [(2, 6, 5), (1, 4, 7), (2, 6, 5)])
    for config in ("share_nogc", "pyvm_gc"):
        differential(image_program(), config, [(2, 6, 5), (3, 5, 4), (2, 6, 5)], copy="copy")
    for config in ("share_gc", "pyvm_nogc", "share_nogc"):
        differential(image_program(), config, [(2, 6, 5), (3, 5, 4), (2, 6, 5)], copy="copy_shared")


def test_pool_graphs_are_planned():
    """A graph with pool_2d is scheduled and shares cells, with no theano_lowmem warning.

    Found while extending the fuzzer (db06c08): ``model.py`` ``dim_key`` called ``int()`` on
    pool_2d's ``ws`` constant (a length-2 vector in the Pool shape graph), so every graph with
    pool_2d fell back to Theano's order and cells with two warnings; fixed upstream by 59b8094."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        f, b = compile_program(image_program(), "cvm_lowmem_nogc", "fast_run+lowmem", 0)
        run_calls([f], b, image_program(), [(2, 6, 5)], 0)
    ours = [str(w.message) for w in caught if "theano_lowmem" in str(w.message)]
    assert not ours, ours
    assert shares_cells(f)


def test_program_strategy_covers_vocabulary():
    """Drawn programs use every op of the vocabulary (checked on a fixed sample), and every
    value :func:`tg.build` makes has the dtype and rank the strategy predicted."""
    seen: set[str] = set()
    drawn = [0]

    @settings(max_examples=900, derandomize=True, database=None, deadline=None, suppress_health_check=SLOW)
    @given(st.one_of(tg.programs(mixed=True), tg.programs(max_ops=12, mixed=True, image=True, focus=True),
                     tg.programs(lazy=True, scan=True, mixed=True, image=True)))
    def collect(p):
        seen.update(p.op_names())
        assert len(p.steps) >= 3 and all(0 <= o < len(p.kinds) for o in p.outputs)
        drawn[0] += 1
        if drawn[0] % 5 == 0:
            tg.build(p)   # asserts predicted dtypes and ranks
    collect()
    vocab = set(tg.ALL_OPS)
    assert seen == vocab, sorted(vocab - seen)
