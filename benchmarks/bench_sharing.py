"""Storage sharing (LowMemLinker) against the stock linker, measured on real calls.

Run::

    THEANO_FLAGS='blas.ldflags=-lopenblas,base_compiledir=/tmp/thc_dev' \\
        python benchmarks/bench_sharing.py [--repeat N]

For each workload and linker, one table row (baseline and ours from one run):

* ``held MB``: distinct arrays left in the intermediate cells after a call
  (not counting data owned by inputs or by the returned outputs; what
  ``allow_gc=False`` keeps between calls).
* ``peak MB``: tracemalloc high-water mark of a warm call above the level
  before it: the bytes the call allocates at once (all domains, mostly numpy).
* ``resident MB``: ``held`` + ``peak``: the most intermediate memory alive
  during a warm call.
* ``new arrays``: intermediate cells whose array data (the array owning it)
  changed between two warm calls (``allow_gc=False`` rows only; with gc the cells are emptied).
* ``ms``: best-of-N wall time of a call.
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
from theano_lowmem.measure import _owner, measure_call  # noqa: E402  (held: measure.held_bytes)
from theano_lowmem.storage_reuse import LowMemLinker  # noqa: E402

MB = 2.0 ** 20
SEED = 42


def chain_case(layers=24, n=512):
    """``h = tanh(dot(h, W_i))``, 24 layers of 512x512 float64."""
    rng = np.random.RandomState(SEED)
    x = T.matrix("x")
    Ws = [T.matrix(f"W{i}") for i in range(layers)]
    h = x
    for W in Ws:
        h = T.tanh(T.dot(h, W))
    args = [rng.rand(n, n)] + [rng.randn(n, n) / np.sqrt(n) for _ in range(layers)]
    return dict(name=f"chain{layers} {n}x{n}", inputs=[x] + Ws, outputs=h, args=args, updates=None)


def mlp_case(batch=256, sizes=(784, 1024, 1024, 10)):
    """One SGD step of a tanh MLP with softmax cross-entropy (updates on shared weights)."""
    rng = np.random.RandomState(SEED)
    x, y = T.matrix("x"), T.ivector("y")
    params, h = [], x
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        W = theano.shared(rng.randn(a, b) / np.sqrt(a), f"W{i}")
        c = theano.shared(np.zeros(b), f"b{i}")
        params += [W, c]
        z = T.dot(h, W) + c
        h = T.tanh(z) if i < len(sizes) - 2 else T.nnet.softmax(z)
    loss = T.nnet.categorical_crossentropy(h, y).mean()
    updates = [(p, p - 0.01 * g) for p, g in zip(params, T.grad(loss, params))]
    args = [rng.rand(batch, sizes[0]), rng.randint(0, sizes[-1], batch).astype("int32")]
    return dict(name=f"mlp step {'-'.join(map(str, sizes))} b{batch}", inputs=[x, y],
                outputs=loss, args=args, updates=updates, params=params)


def scalar_case(steps=20, n=1000):
    """A chain of 0-d values: ``s = tanh(max(x * s))``, 20 steps (0-d and n-d temporaries)."""
    x = T.vector("x")
    s = x.sum()
    for _ in range(steps):
        s = T.tanh((x * s).max())
    args = [np.random.RandomState(SEED).rand(n) / n]
    return dict(name=f"0-d chain {steps} steps", inputs=[x], outputs=s, args=args, updates=None)


LINKERS = [  # (label, linker factory)
    ("stock gc-on", lambda: "cvm"),
    ("stock gc-off", lambda: "cvm_nogc"),
    ("ours gc-off", lambda: LowMemLinker(allow_gc=False, use_cloop=True)),
    ("ours gc-off type", lambda: LowMemLinker(allow_gc=False, use_cloop=True, share_by="type")),
    ("ours gc-off shape", lambda: LowMemLinker(allow_gc=False, use_cloop=True, share_by="shape")),
    ("ours gc-on keep", lambda: LowMemLinker(allow_gc=True, use_cloop=True, keep_for_reuse=True)),
]


def cell_arrays(f):
    fg = f.maker.fgraph
    skip = set(fg.inputs) | set(fg.outputs)
    return {v: c[0] for v, c in f.fn.storage_map.items() if v.owner is not None and v not in skip}


def run(case, repeat):
    rows, saved = [], None
    params = case.get("params", [])
    if params:
        saved = [p.get_value() for p in params]
    for label, make in LINKERS:
        if saved is not None:       # every linker starts from the same weights
            for p, v in zip(params, saved):
                p.set_value(v.copy())
        f = theano.function(case["inputs"], case["outputs"], updates=case["updates"],
                            mode=theano.Mode(make(), "fast_run"))
        args = case["args"]
        first = np.array(f(*args))
        f(*args)
        before = cell_arrays(f)      # references held: a freed array's id cannot be reused
        f(*args)
        new = sum(1 for v, a in cell_arrays(f).items()      # new data, not just a new view
                  if a is not None and (before.get(v) is None or _owner(a) is not _owner(before[v])))
        del before
        m = measure_call(f, *args)
        held = m.held
        best = min(_timed(f, args) for _ in range(repeat))
        plan = getattr(f.maker.linker, "buffer_plan", None)
        rows.append(dict(label=label, held=held, peak=m.peak, new=new, ms=best * 1e3,
                         first=first, gc=f.maker.linker.allow_gc, plan=plan))
    return rows


def _timed(f, args):
    t0 = time.perf_counter()
    f(*args)
    return time.perf_counter() - t0


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=15, help="calls timed per row (best of)")
    a = ap.parse_args(argv)
    print(f"theano {theano.__version__}, blas.ldflags={theano.config.blas.ldflags!r}, "
          f"floatX={theano.config.floatX}, best of {a.repeat}")
    head = (f"{'workload':28s} {'linker':16s} {'held MB':>8s} {'peak MB':>8s} {'resident MB':>11s} "
            f"{'new arrays':>10s} {'ms':>8s}  plan cells / MB (before -> after)")
    print(head)
    print("-" * len(head))
    for case in (scalar_case(), chain_case(), mlp_case()):
        rows = run(case, a.repeat)
        gc_peak = rows[0]["peak"]
        for r in rows:
            same = np.array_equal(r["first"], rows[0]["first"])
            plan = r["plan"]
            ptxt = (f"{plan.n_cells_before} -> {plan.n_cells_after} / "
                    f"{plan.bytes_before / MB:.1f} -> {plan.bytes_after / MB:.1f}") if plan else ""
            new = "-" if r["gc"] else str(r["new"])
            print(f"{case['name']:28s} {r['label']:16s} {r['held'] / MB:8.1f} {r['peak'] / MB:8.1f} "
                  f"{(r['held'] + r['peak']) / MB:11.1f} {new:>10s} {r['ms']:8.2f}  {ptxt}"
                  f"{'' if same else '  RESULT DIFFERS'}")
        ours = next(r for r in rows if r["label"] == "ours gc-off")
        print(f"{'':28s} ours gc-off held / stock gc-on peak = {ours['held'] / gc_peak:.2f}")
    print("(peak: tracemalloc high-water mark of a warm call above its starting level; "
          "held: intermediate arrays kept after it)")


if __name__ == "__main__":
    main()
