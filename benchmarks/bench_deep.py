"""Big graphs (3k-5k Apply nodes): compile and call time, stock against lowmem, and
what the C VM's prerequisites cost (issue 12, "recursion depth of the pinned chain").

Run (once, it takes minutes; ``nice`` on a shared machine)::

    THEANO_FLAGS='base_compiledir=/tmp/thc_deep' nice python benchmarks/bench_deep.py

Families (``seed = 42``), identical branches so that g++ compiles each op once:

* ``wide K``: ``K`` branches ``cumsum(tanh(x * w_i)).sum()`` stacked and summed (one
  output): Theano's own walk is 5 deep, a full chain as deep as the graph.
* ``deep L``: ``L`` layers ``h = cumsum(tanh(h * w_i)) * 0.5``: every walk is deep
  (Theano's own graph cloning recurses as deep, so the recursion limit is raised).

For each mode: ``compile s``, ``first ms`` (first call, includes call-time
planning), ``call ms`` (best of 20 warm calls), ``prereqs`` (prerequisite edges the
C VM got from our OrderFeature; a full chain gives nodes - 1), ``depth`` (C
recursion depth of ``lazy_rec_eval``, from the walk's replica).  The family's ops are
compiled by g++ once, untimed, before the rows.  ``chain`` rows
switch the minimal prerequisites off (``order.MINIMAL_CVM_PREREQS = False``),
i.e. the code before issue 12.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.modules.setdefault("theano.scan_module.scan_perform_ext", None)
import theano  # noqa: E402
import theano.tensor as T  # noqa: E402

import theano_lowmem  # noqa: E402,F401
from theano_lowmem import order as order_mod  # noqa: E402
from theano_lowmem.core.executed import cvm_walk  # noqa: E402
from theano_lowmem.core.prereqs import chain_depth  # noqa: E402

SEED = 42
ROWS, COLS = 16, 8


def wide(k: int):
    x = T.matrix("x")
    ws = [theano.shared(np.full(COLS, 0.5 + i * 1e-3), name=f"w{i}") for i in range(k)]
    return x, T.stack([T.cumsum(T.tanh(x * w), axis=1).sum() for w in ws]).sum()


def deep(layers: int):
    x = T.matrix("x")
    h = x
    for i in range(layers):
        h = T.cumsum(T.tanh(h * theano.shared(np.full(COLS, 0.5 + i * 1e-3), name=f"w{i}")),
                     axis=1) * 0.5
    return x, h.sum()


def modes():
    return [("stock", theano.Mode(optimizer="fast_run"), True),
            ("order chain", theano.Mode(optimizer="fast_run+lowmem"), False),
            ("order", theano.Mode(optimizer="fast_run+lowmem"), True),
            ("lowmem chain", theano.Mode(linker="cvm_lowmem_nogc", optimizer="fast_run+lowmem"),
             False),
            ("lowmem", theano.Mode(linker="cvm_lowmem_nogc", optimizer="fast_run+lowmem"), True)]


def depths(f) -> tuple[str, int]:
    """(prereqs, depth) of the C VM built for ``f``: ours if pinned, else Theano's walk."""
    fg = f.maker.fgraph
    feature = next((ft for ft in fg._features if isinstance(ft, order_mod.OrderFeature)), None)
    nodes = fg.toposort()
    enc = order_mod._cvm_encoding(fg, nodes, feature)
    if feature is None or not feature.valid:
        return "-", cvm_walk(enc[0], enc[1], enc[2], lambda n, c: enc[3][n], enc[4])[1]
    stats = feature.cvm_stats or {}
    if order_mod.MINIMAL_CVM_PREREQS and "prereqs" in stats:
        return str(stats["prereqs"]), stats["depth"]
    idx = {n: i for i, n in enumerate(nodes)}
    chain = [idx[n] for n in feature.chain(fg)]
    return str(max(0, len(chain) - 1)), chain_depth(chain, *enc)


def run(name: str, build, repeat: int) -> None:
    rng = np.random.RandomState(SEED)
    xv = rng.rand(ROWS, COLS)
    x, out = build()                     # untimed: g++ compiles the family's ops once
    theano.function([x], out, mode=theano.Mode(optimizer="fast_run"))
    print(f"\n{name}")
    print(f"{'mode':<14}{'nodes':>7}{'compile s':>11}{'first ms':>10}{'call ms':>9}"
          f"{'prereqs':>9}{'depth':>7}  result")
    for label, mode, minimal in modes():
        order_mod.MINIMAL_CVM_PREREQS = minimal
        x, out = build()
        x.tag.test_value = xv            # exact sizes at compile time: the pass pins an order
        t0 = time.perf_counter()
        f = theano.function([x], out, mode=mode)
        compile_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        r = float(f(xv))
        first = time.perf_counter() - t0
        best = float("inf")
        for _ in range(repeat):
            t0 = time.perf_counter()
            f(xv)
            best = min(best, time.perf_counter() - t0)
        prereqs, depth = depths(f)
        print(f"{label:<14}{len(f.maker.fgraph.apply_nodes):>7}{compile_s:>11.1f}"
              f"{first * 1e3:>10.1f}{best * 1e3:>9.2f}{prereqs:>9}{depth:>7}  {r:.6g}",
              flush=True)
    order_mod.MINIMAL_CVM_PREREQS = True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--wide", type=int, default=1000, help="branches of the wide family")
    ap.add_argument("--deep", type=int, default=1000, help="layers of the deep family")
    ap.add_argument("--repeat", type=int, default=20)
    a = ap.parse_args()
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 20 * a.deep))   # Theano's clone recurses
    run(f"wide {a.wide}", lambda: wide(a.wide), a.repeat)
    run(f"deep {a.deep}", lambda: deep(a.deep), a.repeat)


if __name__ == "__main__":
    main()
