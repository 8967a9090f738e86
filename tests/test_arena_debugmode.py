"""Every op the net families use, against preallocated C-contiguous outputs (issue 11).

An arena view is an exact-shape, C-contiguous array of the output's dtype, left in
the op's output cell.  Theano's DebugMode with ``check_preallocated_output=
c_contiguous`` (debugmode.py:1078-1092) runs every C thunk once more with exactly
such an array (filled with garbage) in its output cell and raises
``BadThunkOutput`` if the result differs from the op's own.  Slow (DebugMode
compiles and checks each node): ``python -m pytest --runslow tests/test_arena_debugmode.py``.

Only the families DebugMode can run here: Theano 1.0.5's DebugMode leaves
``AbstractConv2d*`` unlowered ("No code run for AbstractConv2d", its optimizer
query misses the ``conv_gemm`` lowering), and with ``.including('conv_gemm')`` it
runs ``Pool.perform``, which indexes with a list of slices that numpy 1.23 refuses
(pool.py:574).  ``tests/test_prealloc_outputs.py`` does the same c_contiguous check
without DebugMode (:mod:`theano_lowmem.testing.prealloc`: each node of the graph a
stock FAST_RUN function runs, its own thunk, garbage-filled output arrays) on every
family, conv and pool ops, ``IfElse`` and scans' inner graphs included.  The conv and
pool ops are also covered by the differential fuzz (rank-4 float32 programs with
conv2d, pool_2d and their gradients, arena on) and by the bit-identity checks of
``benchmarks/bench_arena.py`` on the conv families.
"""
from __future__ import annotations

import pytest
import theano

import theano_lowmem  # noqa: F401
from theano_lowmem import families_nets as nets


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in sorted(nets.FAMILIES)
                                  if n.startswith(("mlp_mnist", "lstm_seq"))])
def test_family_ops_write_correctly_into_c_contiguous_output_arrays(name):
    old = theano.config.DebugMode.check_preallocated_output
    theano.config.DebugMode.check_preallocated_output = "c_contiguous"
    try:
        case = nets.FAMILIES[name](**nets.family_kwargs(name, "tiny"))
        mode = theano.compile.DebugMode(check_py_code=False, check_isfinite=False,
                                        stability_patience=1)
        f = case.compile(mode)
        ops = {type(n.op).__name__ for n in f.maker.fgraph.apply_nodes}
        f(*case.make_args())          # raises BadThunkOutput on a wrong result
        assert ops
    finally:
        theano.config.DebugMode.check_preallocated_output = old
