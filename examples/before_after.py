"""The README's before/after example: stock Theano against theano_lowmem, measured.

    python examples/before_after.py

For each graph, one row per configuration, all measured on a warm call: the
memory in use at the call's high-water mark (what the function held before the
call in its cells plus what the call allocated, tracemalloc), the bytes it
still holds in intermediate cells after the call, and the best call time of
10.  Outputs are checked bit-identical.
"""
from __future__ import annotations

import time

import theano_lowmem  # noqa: F401  (first: blas.ldflags default, scan fix, registration)
import numpy as np
import theano

from theano_lowmem import families
from theano_lowmem.measure import measure_call

CONFIGS = [
    ("stock, allow_gc=True", theano.Mode(linker="cvm", optimizer="fast_run")),
    ("stock, allow_gc=False", theano.Mode(linker="cvm_nogc", optimizer="fast_run")),
    ("lowmem order, allow_gc=True", theano.Mode(linker="cvm_lowmem", optimizer="fast_run+lowmem")),
    ("lowmem order + arena, allow_gc=False",
     theano.Mode(linker="cvm_lowmem_nogc", optimizer="fast_run+lowmem")),
]


def mb(n: int) -> str:
    return f"{n / 2**20:7.1f} MB"


def main() -> None:
    cases = [families.branches(n_branches=4, n=10**6),
             families.mlp(batch=256, sizes=(784, 1024, 1024, 10))]
    for case in cases:
        args = case.make_args()
        print(f"\n{case.name}")
        print(f"{'configuration':46s} {'in use at peak':>16s} {'held after call':>16s} {'call':>9s}")
        reference = None
        for label, mode in CONFIGS:
            f = case.compile(mode=mode)
            out = f(*args)
            case.reset()
            if reference is None:
                reference = out
            assert all(np.array_equal(a, b) for a, b in zip(out, reference)), label
            m = measure_call(f, *args)
            times = []
            for _ in range(10):
                case.reset()
                t0 = time.perf_counter()
                f(*args)
                times.append(time.perf_counter() - t0)
            case.reset()
            print(f"{label:46s} {mb(m.in_use):>16s} {mb(m.held):>16s} {min(times) * 1e3:7.1f} ms")


if __name__ == "__main__":
    main()
