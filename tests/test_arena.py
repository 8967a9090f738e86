"""One arena per call-time plan (issue 11).

Checked against independent things: a per-step byte map written here (not
``core.arena.check_arena``), the addresses of the arrays really left in the cells
after a traced call (which node ran when), stock Theano's results, and tracemalloc.
"""
from __future__ import annotations

import random
import warnings

import numpy as np
import pytest
import theano
import theano.tensor as T

import theano_lowmem  # noqa: F401  (registers the linkers)
from theano_lowmem import families
from theano_lowmem.callplan import planned_vm
from theano_lowmem.core.arena import ArenaError, ArenaPlan, check_arena, place
from theano_lowmem.core.memory import Lifetime
from theano_lowmem.executed import traced_function
from theano_lowmem.measure import _owner, measure_call

from .test_callplan import same as _same

STOCK_NOGC = dict(linker="cvm_nogc", optimizer="fast_run")
STOCK_GC = dict(linker="cvm", optimizer="fast_run")


def ours(linker="cvm_lowmem_nogc"):
    return theano.Mode(linker=linker, optimizer="fast_run+lowmem")


# ------------------------------------------------------------------ placement (pure)
def _byte_map_ok(lts, plan) -> bool:
    """Independent oracle: at every step, mark the bytes of every live buffer; a byte
    marked twice is an overlap.  (Intervals per step, no pairwise lifetime test.)"""
    steps = max((lt.end for lt in lts), default=0) + 1
    for t in range(steps):
        spans = sorted((plan.offset[lt.buffer], plan.offset[lt.buffer] + lt.size)
                       for lt in lts if lt.size and lt.start <= t <= lt.end)
        for (a0, a1), (b0, b1) in zip(spans, spans[1:]):
            if b0 < a1:
                return False
        if spans and spans[-1][1] > plan.size:
            return False
    return all(plan.offset[lt.buffer] % plan.align == 0 for lt in lts)


def _live_max(lts) -> int:
    steps = max((lt.end for lt in lts), default=0) + 1
    return max((sum(lt.size for lt in lts if lt.start <= t <= lt.end) for t in range(steps)),
               default=0)


@pytest.mark.parametrize("seed", range(60))
def test_placement_never_overlaps_live_buffers_and_is_near_the_lower_bound(seed):
    rng = random.Random(seed)
    n = rng.randint(1, 60)
    lts = []
    for b in range(n):
        s = rng.randrange(n)
        e = min(n, s + rng.choice((0, 1, 2, 5, 20)))
        lts.append(Lifetime(b, s, e, rng.choice((0, 1, 8, 100, 800, 1600, 3200))))
    p = place(lts)
    assert _byte_map_ok(lts, p)
    assert p.lower_bound == _live_max(lts)
    assert p.size >= p.lower_bound
    check_arena(lts, p)     # the shipped checker agrees with the oracle on good plans


def test_placement_of_many_long_lived_buffers_stays_fast_and_correct():
    """Hundreds of buffers live to the end (a wide graph): the greedy best fits would cost
    ~n^2 (the sum of time overlaps is over GREEDY_MAX_WORK), so the heap simulator's
    placement is kept; it must still pass the oracle and stay near the bound."""
    from theano_lowmem.core import arena as core_arena
    rng = random.Random(5)
    n = 1200
    lts = [Lifetime(b, s, n if rng.random() < 0.6 else min(n, s + rng.randint(0, 6)),
                    rng.choice((64, 640, 6400)))
           for b, s in enumerate(rng.randrange(n) for _ in range(n))]
    assert core_arena._overlap_work(lts) > core_arena.GREEDY_MAX_WORK
    p = place(lts)
    assert p.method == "heap simulator"
    assert _byte_map_ok(lts, p)
    assert p.size <= 1.10 * p.lower_bound


def test_placement_reaches_the_bound_where_a_perfect_packing_exists():
    # three generations of two buffers each, every buffer dies before the next generation
    lts = [Lifetime(0, 0, 1, 640), Lifetime(1, 0, 1, 640), Lifetime(2, 2, 3, 1280),
           Lifetime(3, 4, 5, 320), Lifetime(4, 4, 5, 960)]
    p = place(lts)
    assert p.size == p.lower_bound == 1280


def test_checker_rejects_overlapping_live_buffers():
    lts = [Lifetime(0, 0, 2, 100), Lifetime(1, 1, 3, 100)]
    bad = ArenaPlan({0: 0, 1: 64}, 256, 200, "hand-made")
    assert not _byte_map_ok(lts, bad)
    with pytest.raises(ArenaError):
        check_arena(lts, bad)


# ------------------------------------------------------------------ Theano
def _alias_root(var, ran=None):
    """The variable whose buffer ``var`` lives in (view_map / destroy_map); with ``ran``
    (the nodes a lazy call ran), an alias of an input whose producer did not run is its
    own root (an ``ifelse`` output copied from the other branch)."""
    while var.owner is not None:
        i = var.owner.outputs.index(var)
        op = var.owner.op
        table = {**(getattr(op, "view_map", None) or {}), **(getattr(op, "destroy_map", None) or {})}
        if i not in table:
            break
        up = var.owner.inputs[table[i][0]]
        if ran is not None and up.owner is not None and up.owner not in ran:
            break
        var = up
    return var


def _addresses(a):
    lo = a.__array_interface__["data"][0]
    return lo, lo + a.nbytes


def assert_no_live_overlap(g, log):
    """The arrays in ``g``'s cells after a traced call: two intermediates whose bytes
    overlap must have disjoint lifetimes in the order the call really ran (``log``; in
    a lazy graph only the nodes that ran and the readers that ran count)."""
    fg = g.maker.fgraph
    step = {}
    for i, node in enumerate(log):      # a lazy node is logged at each of its thunk calls
        step[node] = i
    outs = set(fg.outputs)
    life = {}
    for var in g.fn.storage_map:
        if var.owner is None or var in outs or var.owner not in step:
            continue
        root = _alias_root(var, step)
        if root.owner is None:
            continue
        s, e = life.get(root, (step[root.owner], step[root.owner]))
        last = max([step[c] for c, _ in var.clients if c != "output" and c in step] +
                   [step[var.owner]])
        life[root] = (s, max(e, last))
    arrays = [(root, g.fn.storage_map[root][0]) for root in life
              if isinstance(g.fn.storage_map[root][0], np.ndarray) and
              g.fn.storage_map[root][0].nbytes]
    n_pairs = 0
    for i, (r1, a1) in enumerate(arrays):
        for r2, a2 in arrays[i + 1:]:
            (lo1, hi1), (lo2, hi2) = _addresses(a1), _addresses(a2)
            if lo1 < hi2 and lo2 < hi1:
                n_pairs += 1
                (s1, e1), (s2, e2) = life[r1], life[r2]
                assert e1 < s2 or e2 < s1, (r1, life[r1], r2, life[r2])
    return n_pairs


@pytest.fixture(scope="module")
def dag():
    return families.mixed_dag(n=40, seed=7, length=2000)


@pytest.mark.parametrize("linker", ["cvm_lowmem_nogc", "vm_lowmem_nogc"])
def test_arena_results_bit_identical_across_shapes_and_bytes_really_shared(dag, linker):
    f = dag.compile(ours(linker))
    ref = dag.compile(theano.Mode(**STOCK_NOGC))
    lengths = [2000, 700, 2000, 31, 700]
    for n in lengths:
        args = dag.make_args(length=n)
        _same(f(*args), ref(*args))
    pv = planned_vm(f)
    assert pv.current.arena is not None and pv.current.arena.ids
    # a traced copy: the bytes it really shares are between values dead at different steps
    g, log = traced_function(f)
    args = dag.make_args(length=2000)
    for _ in range(2):
        del log[:]
        _same(g(*args), ref(*args))
    assert assert_no_live_overlap(g, log) > 0, "nothing shares bytes: the check is empty"


def test_memory_bound_dag_bit_identical_across_shapes():
    """The allocation-heavy variant of the benchmark's DAGs (``cheap=True``: no tanh, so
    every cell is a multiply-add straight into its arena view)."""
    case = families.mixed_dag(n=30, seed=5, length=1500, cheap=True)
    f, ref = case.compile(ours()), case.compile(theano.Mode(**STOCK_NOGC))
    for n in (1500, 400, 1500):
        args = case.make_args(length=n)
        _same(f(*args), ref(*args))
    assert planned_vm(f).current.arena.ids


def test_arena_holds_about_the_gc_on_peak_and_allocates_nothing(dag):
    """Measured: gc-off with the arena holds <= 1.10x the gc-on peak of our order, where
    stock gc-off holds much more, and a warm call allocates only its output."""
    args = dag.make_args(length=20000)
    f = dag.compile(ours())
    on = dag.compile(ours("cvm_lowmem"))
    stock = dag.compile(theano.Mode(**STOCK_NOGC))
    for fn in (f, on, stock):
        fn(*args)
    peak_on = measure_call(on, *args).peak
    m, ms = measure_call(f, *args), measure_call(stock, *args)
    assert m.held <= 1.10 * peak_on, (m.held, peak_on)
    assert ms.held > 1.5 * m.held, (ms.held, m.held)
    assert m.peak < 16384, m.peak   # Python objects only: one row of a value is 160 KB
    owners = {id(_owner(c[0])) for v, c in f.fn.storage_map.items()
              if _alias_root(v).owner is not None and isinstance(c[0], np.ndarray) and
              c[0].ndim == 2}
    assert len(owners) == 1               # every 2-d intermediate lives in the one arena


def test_a_new_signature_empties_the_old_views(dag):
    f = dag.compile(ours())
    pv = planned_vm(f)
    owners = []
    for n in (3000, 1000, 3000):
        f(*dag.make_args(length=n))
        arena_owner = _owner(pv.current.arena.buffer)
        cells = [c[0] for v, c in f.fn.storage_map.items() if _alias_root(v).owner is not None]
        got = {id(_owner(a)) for a in cells if isinstance(a, np.ndarray) and a.base is not None}
        assert got <= {id(arena_owner)}, "a cell still holds a view of another plan's arena"
        owners.append(arena_owner)
    assert owners[0] is not owners[2]      # released when left, allocated again
    assert len(pv.plans) == 2 and pv.misses == 2


def test_ops_that_allocate_are_found_emptied_and_reserve_no_arena_bytes():
    x = T.matrix("x")
    a = T.exp(x)
    j = T.concatenate([a, a], axis=0)     # Join: PyArray_Concatenate always allocates
    out = (T.tanh(j) * 2).sum() + (a * 3).sum()
    f = theano.function([x], out, mode=ours())
    ref = theano.function([x], out, mode=theano.Mode(**STOCK_NOGC))
    v = np.random.RandomState(0).rand(50, 40)
    for _ in range(3):
        _same(f(v), ref(v))
    arena = planned_vm(f).current.arena
    model = planned_vm(f)._planner.model
    names = {type(model.variables[b].owner.op).__name__ for b in arena.allocators}
    assert names == {"Join"}
    assert not set(arena.allocators) & set(arena.lifetimes)
    for b in arena.allocators:                       # not held between calls
        assert f.fn.storage_map[model.variables[b]][0] is None


def test_gc_off_first_placement_is_provisional_and_the_probe_places_with_every_method(dag):
    """With allow_gc=False the plan places with the heap simulator alone (the probe after
    the first call places again anyway); after the first call the arena is what the full
    placement (heap simulator and greedy best fits, core.arena.place) gives for the same
    lifetimes, and the results stay stock's."""
    from theano_lowmem.core.arena import place
    f = dag.compile(ours())
    ref = dag.compile(theano.Mode(**STOCK_NOGC))
    args = dag.make_args()
    pv = planned_vm(f)
    seen = {}
    orig = pv._planner._arena

    def spy(*a, **k):
        arena, note = orig(*a, **k)
        seen["provisional"], seen["method"] = arena.provisional, arena.plan.method
        return arena, note
    pv._planner._arena = spy
    try:
        dag.reset()
        want = ref(*args)
        dag.reset()
        _same(f(*args), want)
    finally:
        del pv._planner._arena
    assert seen == {"provisional": True, "method": "heap simulator"}
    arena = pv.current.arena
    assert not arena.provisional and arena.probed
    full = place(list(arena.lifetimes.values()))
    assert arena.plan.size == full.size and arena.plan.method == full.method
    assert "arena" in pv.current.seconds
    dag.reset()
    _same(f(*args), want)


def test_fortran_inputs_keep_stock_layouts_and_results():
    """A Fortran-ordered input makes C Elemwise allocate Fortran outputs (elemwise.py:
    929-938); the arena must then leave those values alone, or the BLAS call after it
    sees another layout."""
    x, W = T.matrix("x"), T.matrix("W")
    h = T.tanh(x * 1.5) + 1
    out = T.dot(h, W).sum() + T.dot(h.T, h).sum()
    f = theano.function([x, W], out, mode=ours())
    ref = theano.function([x, W], out, mode=theano.Mode(**STOCK_NOGC))
    rng = np.random.RandomState(1)
    xc = rng.rand(64, 48)
    w = rng.rand(48, 32)
    for xv in (xc, np.asfortranarray(xc), xc, np.asfortranarray(xc)):
        _same(f(xv, w), ref(xv, w))
    sigs = list(planned_vm(f).plans)
    assert len(sigs) == 2 and {s[1] for s in sigs} == {0, 1}


def test_always_mode_with_gc_on_is_identical_and_stops_allocating(dag):
    args = dag.make_args(length=20000)
    old = theano.config.lowmem_arena
    theano.config.lowmem_arena = "always"
    try:
        f = dag.compile(ours("cvm_lowmem"))
    finally:
        theano.config.lowmem_arena = old
    ref = dag.compile(theano.Mode(**STOCK_GC))
    base = dag.compile(ours("cvm_lowmem"))
    for n in (20000, 5000, 20000):
        a = dag.make_args(length=n)
        _same(f(*a), ref(*a))
    f(*args)
    base(*args)
    m, mb = measure_call(f, *args), measure_call(base, *args)
    assert m.peak < 16384 < mb.peak, (m.peak, mb.peak)


def test_copy_sharing_memory_switches_the_arena_off_and_stays_right(dag):
    f = dag.compile(ours())
    ref = dag.compile(theano.Mode(**STOCK_NOGC))
    a1, a2 = dag.make_args(length=1500), dag.make_args(length=900)
    f(*a1)
    assert planned_vm(f).current.arena is not None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        g = f.copy(share_memory=True)
    said = [str(w.message) for w in caught if "no longer places" in str(w.message)]
    assert len(said) == 1 and "share_memory" in said[0], said     # not silent
    for args in (a1, a2, a1):
        _same(f(*args), ref(*args))
        _same(g(*args), ref(*args))
    assert planned_vm(f)._planner.arena_off and planned_vm(f).current.arena is None


def test_arena_off_flag_keeps_shared_cells():
    x = T.vector("x")
    h = x
    for _ in range(6):
        h = T.tanh(h * 2)
    old = theano.config.lowmem_arena
    theano.config.lowmem_arena = "off"
    try:
        f = theano.function([x], h.sum(), mode=ours())
    finally:
        theano.config.lowmem_arena = old
    f(np.ones(100))
    assert planned_vm(f).current.arena is None
    assert f.maker.linker.buffer_plan is not None


def test_bad_arena_value_names_the_flag():
    with pytest.raises(ValueError, match="lowmem_arena"):
        theano.config.lowmem_arena = "sometimes"
    from theano_lowmem.storage_reuse import LowMemLinker
    with pytest.raises(ValueError, match="arena"):
        LowMemLinker(arena="sometimes")
