"""Every op of every family, against garbage-filled C-contiguous arrays in its output cells (issue 11).

An arena view is an exact-shape, C-contiguous array left in an op's output cell.
:mod:`theano_lowmem.testing.prealloc` checks, on the graph a stock FAST_RUN
function (``cvm_nogc``, none of theano_lowmem's code) really runs, that every
node gives bit-identical outputs with such an array full of garbage (two
patterns) in its cells as with empty cells, and changes no input outside its
``destroy_map``; scans' inner graphs and both branches of every ``ifelse``
included.  It covers the conv and pool families DebugMode cannot run here
(tests/test_arena_debugmode.py).

* every net family of ``families_nets`` at tiny size, at its tiny batch (4 for the
  conv nets) and at batch 3: Theano's ``Pool``/``MaxPoolGrad``/``AveragePoolGrad`` reuse the array in
  their cell only when its first dimension equals their number of dimensions
  (pool.py:717, :1277, :1605), so a batch of 4 takes their reuse path and 3 does not;
* the elementwise families of ``families`` (``mixed_dag`` with the benchmark's DAG
  seeds, ``views_inplace``, ``branches``, ``wide``) and, slow, its other families at
  small sizes;
* the checker fails on toy ops (Python and C) that read their output cell's old
  contents or write into an input they do not destroy, and refuses a non-stock linker.

``python -m pytest tests/test_prealloc_outputs.py`` (``--runslow`` adds the slow ones).
"""
from __future__ import annotations

import numpy as np
import pytest
import theano
import theano.tensor as T

import theano_lowmem  # noqa: F401  (blas.ldflags, the scan fix)
from theano_lowmem import families as fam
from theano_lowmem import families_nets as nets
from theano_lowmem.testing import prealloc as pa

#: families_nets families in the default run: conv, pool and their gradients (lenet_train),
#: IfElse and Alloc (resnet_sd_train), Scan and its inner graphs (lstm_seq_train).  The
#: others (densenet_train: AveragePoolGrad, Join, Split; the _eval ones: Argmax; ...) run
#: with --runslow: each stock compile costs 5-30 s (suite time)
DEFAULT_NETS = {"lenet_train", "resnet_sd_train", "lstm_seq_train"}
SLOW_NETS = set(nets.FAMILIES) - DEFAULT_NETS
#: families.py families checked: name -> (builder, slow); the DAGs have the seeds of
#: benchmarks/bench_arena.py (dag_D, the smallest, has every op class of the others)
FAMILIES = {
    "dag_A": (lambda: fam.mixed_dag(n=60, seed=1, length=1000), True),
    "dag_B": (lambda: fam.mixed_dag(n=100, seed=2, length=1000), True),
    "dag_C": (lambda: fam.mixed_dag(n=100, seed=3, max_in=2, length=1000), True),
    "dag_D": (lambda: fam.mixed_dag(n=12, seed=4, length=1000), False),
    "views_inplace": (lambda: fam.views_inplace(n=20), False),
    "branches": (lambda: fam.branches(n=1000), False),
    "wide": (lambda: fam.wide(n_branches=50, n=64), False),
    "mlp": (lambda: fam.mlp(batch=8, sizes=(16, 32, 32, 10)), True),
    "convnet": (lambda: fam.convnet(batch=4, image=8), True),
    "lstm": (lambda: fam.lstm(steps=4, batch=4, n_in=6, n_hid=8), True),
    "chain": (lambda: fam.chain(depth=4, width=16, batch=8), True),
    "randwire_ws": (lambda: fam.randwire(n=12, width=8, batch=4), True),
    "randwire_er": (lambda: fam.randwire(n=12, width=8, batch=4, kind="er"), True),
    "inception": (lambda: fam.inception(blocks=1, batch=2, channels=4, image=8), True),
    "resnet": (lambda: fam.resnet(blocks=2, batch=2, channels=4, image=8), True),
    "transformer": (lambda: fam.transformer(batch=2, seq=4, d=8, heads=2, ff=16), True),
}
POOL_OPS = {"Pool", "MaxPoolGrad", "AveragePoolGrad"}


def _param(name: str, slow: bool):
    return pytest.param(name, marks=pytest.mark.slow) if slow else name


def _assert_clean(report: pa.CheckReport) -> None:
    """No wrong result, no modified input, every node ran, every op class with a
    tensor output got garbage arrays, and the stock call's cells were compared."""
    problems = report.all_problems()
    assert not problems, f"{len(problems)} problem(s):\n" + "\n".join(problems[:20]) + \
        "\n" + report.table()
    assert report.stock_compared > 0
    for r in report.walk():
        assert "VM_Linker" in r.linker, r.linker
        for name, st in r.ops.items():
            if name not in {"ScalarFromTensor"}:     # scalar outputs: no garbage array
                assert sum(st.behaviours.values()) > 0, (r.name, name)


def _behaviours(report: pa.CheckReport, op: str) -> set[str]:
    return {b for b, n in report.op_behaviours().get(op, {}).items() if n}


@pytest.mark.parametrize("name", [_param(n, n in SLOW_NETS) for n in sorted(nets.FAMILIES)])
def test_net_family_ops_give_the_same_results_into_garbage_outputs(name):
    case = nets.FAMILIES[name](**nets.family_kwargs(name, "tiny"))
    f = case.compile(pa.stock_mode())
    tiny = case.make_args()
    reports = {}
    for key, args in (("tiny", tiny), ("batch3", case.make_args(batch=3))):
        case.reset()
        reports[key] = pa.check_function(f, args, f"{case.name}@{key}")
        _assert_clean(reports[key])
    case.reset()
    print(reports["tiny"].table())
    # the pool ops reuse their cell's array exactly when batch == ndim (pool.py:717, :1277, :1605)
    pool_ops = POOL_OPS & set(reports["tiny"].op_behaviours())
    if pool_ops:
        assert len(tiny[-1]) == 4
    for op in pool_ops:
        assert _behaviours(reports["tiny"], op) == {pa.WRITES_INTO}, op
        assert _behaviours(reports["batch3"], op) == {pa.ALLOCATES}, op
    if name == "resnet_sd_train":   # ifelse: true branch viewed (as_view), false branch copied
        assert _behaviours(reports["tiny"], "IfElse") == {pa.VIEWS_INPUT, pa.ALLOCATES}
    if name.startswith("lstm_seq"):   # the scans' inner graphs were checked too
        assert reports["tiny"].inner and all(r.ops for r in reports["tiny"].inner)


@pytest.mark.parametrize("name", [_param(n, slow) for n, (_, slow) in FAMILIES.items()])
def test_elementwise_family_ops_give_the_same_results_into_garbage_outputs(name):
    report = pa.check_case(FAMILIES[name][0]())
    _assert_clean(report)
    print(report.table())
    if name.startswith("dag_"):   # issue 11's DAGs: every op writes into its cell or views
        assert not report.allocators()


# ---------------------------------------------------------------- the checker can fail
class _UnaryToyOp(theano.Op):
    """One tensor in, one tensor of the same type out."""

    __props__ = ()

    def make_node(self, x):
        x = T.as_tensor_variable(x)
        return theano.Apply(self, [x], [x.type()])


class AccumulateIntoOutput(_UnaryToyOp):
    """Python op, ``out = x``, wrong: adds ``x`` to a fitting array already in its cell."""

    def perform(self, node, inputs, out):
        x, = inputs
        z = out[0][0]
        if z is not None and z.shape == x.shape and z.dtype == x.dtype:
            z += x                       # reads the old contents
        else:
            out[0][0] = x.copy()


class ScaleInputInPlace(_UnaryToyOp):
    """Python op, ``out = 2 * x``, wrong: doubles ``x`` in place without a destroy_map."""

    def perform(self, node, inputs, out):
        x, = inputs
        x *= 2
        out[0][0] = x.copy()


class CAccumulateIntoOutput(theano.Op):
    """C op on float64 vectors, ``out = x``, wrong: reuses a fitting array in its cell
    and adds ``x`` to what it holds (a fresh array is zero-filled)."""

    __props__ = ()

    def make_node(self, x):
        x = T.as_tensor_variable(x)
        assert x.ndim == 1 and x.dtype == "float64"
        return theano.Apply(self, [x], [x.type()])

    def c_code_cache_version(self):
        return (1,)

    def c_code(self, node, name, inputs, outputs, sub):
        x, = inputs
        z, = outputs
        fail = sub["fail"]
        return f"""
        npy_intp n = PyArray_DIMS({x})[0];
        if (!{z} || PyArray_NDIM({z}) != 1 || PyArray_DIMS({z})[0] != n) {{
            Py_XDECREF({z});
            {z} = (PyArrayObject*)PyArray_ZEROS(1, &n, NPY_FLOAT64, 0);
            if (!{z}) {fail}
        }}
        for (npy_intp i = 0; i < n; i++)
            *(double*)PyArray_GETPTR1({z}, i) += *(double*)PyArray_GETPTR1({x}, i);
        """


def _toy_report(op: theano.Op) -> pa.CheckReport:
    x = T.dvector("x")
    y = T.exp(x)
    f = theano.function([x], [op(y).sum(), y * 3], mode=pa.stock_mode())
    return pa.check_function(f, [np.linspace(-1.0, 1.0, 7)], type(op).__name__)


@pytest.mark.parametrize("op, kind, what", [
    (AccumulateIntoOutput(), "py", "output 0 differs"),
    (CAccumulateIntoOutput(), "c", "output 0 differs"),
    (ScaleInputInPlace(), "py", "modified, not in destroy_map")])
def test_checker_catches_ops_that_read_their_output_cell_or_write_their_input(op, kind, what):
    report = _toy_report(op)
    name = type(op).__name__
    assert report.ops[name].kinds == {kind: 1}
    problems = report.all_problems()
    assert problems and all(p.startswith(f"{name}{{}}(") or
                            p.startswith(f"{op}(") for p in problems), problems
    assert any(what in p for p in problems), problems
    if what == "output 0 differs":      # both garbage patterns, and it did write into them
        assert {p.split("]")[0].rsplit("[", 1)[1] for p in problems} == \
            {"garbage 0", "garbage 1"}
        assert report.ops[name].behaviours[pa.WRITES_INTO] == 2
    assert sum(report.ops["Elemwise"].behaviours.values()) == 4     # checked, not blamed


def test_checker_refuses_functions_not_compiled_by_the_stock_gc_off_vm():
    x = T.dvector("x")
    for mode in (theano.Mode(linker="cvm", optimizer="fast_run"),
                 theano.Mode(linker="cvm_lowmem_nogc", optimizer="fast_run")):
        f = theano.function([x], T.exp(x).sum(), mode=mode)
        with pytest.raises(ValueError, match="not a stock gc-off VM"):
            pa.check_function(f, [np.ones(3)])


def test_garbage_is_c_contiguous_exact_and_copies_keep_layout():
    for pattern in pa.PATTERNS:
        for dtype in ("float32", "float64", "int8", "int64", "uint8", "bool"):
            g = pa.garbage((2, 3), dtype, pattern)
            assert g.flags.c_contiguous and g.shape == (2, 3) and g.dtype == dtype
            assert g.flags.owndata == (pattern == 0)
    a = np.arange(24.0).reshape(4, 6)[::2, ::-3].T
    c = pa.faithful_copy(a)
    assert c.strides == a.strides and c.ctypes.data % 64 == a.ctypes.data % 64
    assert not np.may_share_memory(a, c) and pa.difference(a, c) is None
    assert pa.difference(np.float64([np.nan]), np.float64([np.nan])) is None
    assert pa.difference(np.float64([0.0]), np.float64([-0.0])) is not None
