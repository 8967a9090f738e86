"""What the scan fix costs: Theano's Python scan loop (``Scan.execute``) per step.

    python benchmarks/bench_scanfix.py [--steps 2000] [--repeat 7]

The Cython loop cannot be the baseline (it does not build on Python 3.11), so
the table compares, per step: the whole scan, one call of its compiled inner
function alone (the work a Cython loop would also do), and a numpy loop.
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    import theano_lowmem  # noqa: F401  (first: blas.ldflags default and the scan fix)
    import theano
    import theano.tensor as T

    print(f"{'size':>6} | {'scan / step':>12} | {'inner fn / call':>15} | {'numpy / step':>12}")
    for n in (10, 10000):
        x = T.matrix("x")
        h0 = T.vector("h0")
        hs, _ = theano.scan(lambda xt, h: T.tanh(0.5 * h + xt), sequences=x, outputs_info=h0)
        f = theano.function([x, h0], hs[-1])
        xv, hv = np.random.default_rng(0).standard_normal((args.steps, n)), np.zeros(n)
        f(xv, hv)
        t_scan = best(lambda: f(xv, hv), args.repeat) / args.steps
        scan_op = [nd.op for nd in f.maker.fgraph.apply_nodes if hasattr(nd.op, "fn")][0]
        inner = scan_op.fn
        for i, c in enumerate(inner.input_storage):
            c.storage[0] = np.zeros(n)

        def inner_loop():
            for _ in range(args.steps):
                inner.fn()
        t_inner = best(inner_loop, args.repeat) / args.steps

        def numpy_loop():
            h = hv
            for t in range(args.steps):
                h = np.tanh(0.5 * h + xv[t])
        t_np = best(numpy_loop, args.repeat) / args.steps
        print(f"{n:>6} | {t_scan * 1e6:>9.1f} µs | {t_inner * 1e6:>12.1f} µs | {t_np * 1e6:>9.1f} µs")


if __name__ == "__main__":
    main()
