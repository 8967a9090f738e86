"""Cross-op cell tolerance (issue 12): every op of the families accepts any array of its
output Type in its output cell.

Sharing a storage cell between two same-Type intermediates (``LowMemLinker`` with
``allow_gc=False``, ``share_by='estimate'``) hands an op the array *another* op left in
the cell: same dtype and ndim, but possibly another shape or memory layout.  Stock
Theano already relies on ops checking what is in their cell (the same cell holds last
call's array when input shapes change), and the C ops do: ``Elemwise`` resizes or
reallocates on a dims mismatch (elemwise_cgen.py:153-175), ``Dot22`` and ``Gemm`` check
dims and strides (blas.py:949-973, 1562-1580), ``CorrMM`` checks the output dims
(corr.py, ``c_code_helper``), ``CAReduce`` reallocates on a dims mismatch
(elemwise.py, ``CAReduce.c_code``); Python ``perform`` methods assign a new array.

This test does not trust that reading: it compiles each family with *stock* Theano
(``cvm_nogc``), fills every intermediate cell with a hostile array of the right Type
before every call (a C-contiguous array of another shape, a Fortran-ordered array of
another shape, or a C-contiguous array of the right shape full of NaN), and requires
the outputs and the updated shared variables to equal those of an untouched stock
function.  No theano_lowmem code runs in it, so it tests the premise, for every op
class the families use.

One kind of array is *not* harmless: a Fortran-ordered array of the right shape.  C
``Elemwise`` and ``Dot22`` keep it and write their result in that layout, and later
BLAS calls then round differently (the second test shows it on a real training step).
So values whose array may be Fortran-ordered never share a cell
(:func:`theano_lowmem.storage_reuse.may_be_fortran`), and the third test checks that
on the compiled functions.
"""
from __future__ import annotations

import numpy as np
import pytest

import theano

import theano_lowmem  # noqa: F401  (blas.ldflags, scan fix)
from theano_lowmem import families, families_nets

STOCK = theano.Mode(linker="cvm_nogc", optimizer="fast_run")

CASES = {
    "mlp": lambda: families.mlp(batch=8, sizes=(16, 32, 10)),
    "convnet": lambda: families.convnet(batch=2, image=8),
    "transformer": lambda: families.transformer(batch=2, seq=8, d=16, heads=2, ff=32),
    "inception": lambda: families.inception(blocks=1, batch=2, channels=4, image=8),
    "resnet": lambda: families.resnet(blocks=2, batch=2, channels=4, image=8),
    "views_inplace": lambda: families.views_inplace(n=20),
    "lstm": lambda: families.lstm(steps=3, batch=2, n_in=4, n_hid=5),
}
for _name in families_nets.FAMILIES:
    CASES[_name] = (lambda n=_name: families_nets.FAMILIES[n](
        **families_nets.family_kwargs(n, "tiny")))



@pytest.fixture(autouse=True)
def _cells_not_arena():
    """Same-Type shared cells (the plan with ``lowmem_arena=off``); arena views are
    exact-shape C-contiguous arrays, tested in tests/test_arena.py."""
    old = theano.config.lowmem_arena
    theano.config.lowmem_arena = "off"
    yield
    theano.config.lowmem_arena = old


def hostile(var, kind: int, rng):
    t = var.type
    if not isinstance(t, theano.tensor.TensorType):
        return None
    if t.ndim == 0:
        return np.asarray(np.nan if "float" in t.dtype else 7, dtype=t.dtype)
    shape = tuple(int(rng.integers(1, 5)) for _ in range(t.ndim))
    if kind == 0:
        return np.full(shape, 3, dtype=t.dtype)
    if kind == 1:
        return np.asfortranarray(np.full(shape + (1,) * 0, 5, dtype=t.dtype))
    return None      # kind 2: see _fill (the right shape, NaN), needs the last value


def _fill(f, kind: int, rng, last: dict) -> int:
    fg = f.maker.fgraph
    outs = set(fg.outputs)
    n = 0
    for var, cell in f.fn.storage_map.items():
        if var.owner is None or var in outs:
            continue
        if kind == 2:
            prev = last.get(var)
            if isinstance(prev, np.ndarray) and prev.dtype.kind == "f" and prev.ndim > 0:
                cell[0] = np.full_like(prev, np.nan, order="C")
                n += 1
            continue
        h = hostile(var, kind, rng)
        if h is not None:
            cell[0] = h
            n += 1
    return n


@pytest.mark.parametrize("name", sorted(CASES))
def test_ops_accept_any_array_of_their_type_in_their_output_cell(name):
    rng = np.random.default_rng(0)
    case = CASES[name]()
    args = case.make_args()
    case.reset()
    ref = case.compile(mode=STOCK)
    want = [[np.array(o) for o in ref(*args)] for _ in range(3)]
    want_shared = [s.get_value().copy() for s, _ in case.shared]
    case.reset()
    f = case.compile(mode=STOCK)
    filled = 0
    for call, kind in enumerate((0, 1, 2)):
        last = {v: c[0] for v, c in f.fn.storage_map.items()}
        filled += _fill(f, kind, rng, last)
        got = [np.array(o) for o in f(*args)]
        for g, w in zip(got, want[call]):
            assert g.dtype == w.dtype and g.shape == w.shape
            assert np.array_equal(g, w, equal_nan=True), (name, call, kind)
    for s, w in zip([s for s, _ in case.shared], want_shared):
        assert np.array_equal(s.get_value(), w, equal_nan=True), name
    assert filled > 0


def test_fortran_arrays_of_the_right_shape_change_the_blas_path():
    """Why Fortran-ordered values never share: a Dot22 that finds a Fortran array of the
    right shape in its cell writes into it (blas.py, Dot22's C code keeps an output whose
    dims fit), so stock Theano itself then runs another BLAS call (other transpose flags)
    and every later op sees a Fortran operand.  Whether that gives other bits depends on
    the BLAS build and CPU (it did with OpenBLAS on the Intel machines of earlier stops, not
    with OpenBLAS 0.3.21 on AMD EPYC): what this checks everywhere is that the layout
    reaches the results' computation."""
    case = CASES["mlp_mnist_train"]()
    args = case.make_args()
    case.reset()
    f = case.compile(mode=STOCK)
    f(*args)
    case.reset()
    placed = []
    for var, cell in f.fn.storage_map.items():
        if var.owner is not None and type(var.owner.op).__name__ == "Dot22" and \
                isinstance(cell[0], np.ndarray) and cell[0].ndim == 2 and min(cell[0].shape) > 1:
            cell[0] = np.asfortranarray(cell[0])
            placed.append((cell, cell[0]))
    f(*args)
    case.reset()
    assert placed
    # the op wrote into the Fortran arrays it found (stock keeps cells with allow_gc=False)
    kept = [c for c, a in placed if c[0] is a and a.flags.f_contiguous and not a.flags.c_contiguous]
    assert kept, "Dot22 replaced every Fortran array: the premise of the rule is gone"
    # the bits that follow differ with OpenBLAS on Intel CPUs, not on AMD EPYC with
    # OpenBLAS 0.3.21: not asserted, it is the BLAS build's rounding, not Theano's


@pytest.mark.parametrize("name", ["mlp_mnist_train", "lenet_train", "resnet", "transformer"])
def test_shared_cells_never_hold_a_value_that_may_be_fortran(name):
    from theano_lowmem.storage_reuse import may_be_fortran
    case = CASES[name]()
    f = case.compile(mode=theano.Mode(linker="cvm_lowmem_nogc", optimizer="fast_run+lowmem"))
    f(*case.make_args())
    fg = f.maker.fgraph
    maybe = may_be_fortran(fg, fg.toposort())
    by_cell: dict = {}
    for var, cell in f.fn.storage_map.items():
        by_cell.setdefault(id(cell), []).append(var)
    groups = [g for g in by_cell.values() if len(g) > 1]
    assert groups, "nothing shared: the check would be empty"
    for g in groups:
        assert not (set(g) & maybe), g
    # and the arrays really are C-contiguous after a call
    for g in groups:
        a = f.fn.storage_map[g[0]][0]
        assert a is None or not isinstance(a, np.ndarray) or a.ndim < 2 or a.flags.c_contiguous
