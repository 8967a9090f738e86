"""What call-time planning costs: per call on a cached signature, and per new signature.

    python benchmarks/bench_callplan.py [--repeat 2000] [--families mlp,randwire_ws,...]
        [--linker cvm_lowmem_nogc] [--first-calls K]

Prints, from one run:

1. the time of a warm call of a small function, stock ``cvm`` against
   ``cvm_lowmem`` (a cached signature: one tuple of shapes and one dict lookup
   per call), median of ``--repeat`` calls, interleaved;
2. per graph family: Apply nodes, ``theano.function`` compile time with
   lowmem, the first call's planning time (shapes + model + schedule + arena, with the
   first call's probe + VM; the shape tape is built at link time, in the compile, and
   shown apart) and its share of the compile time, the planning time per 1,000 nodes, and
   the time of a call that changes the signature (a cache miss) against a call
   that does not.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

import theano
import theano.tensor as T

import theano_lowmem  # noqa: F401
from theano_lowmem import families
from theano_lowmem.callplan import planned_vm

LOWMEM = theano.Mode(linker="cvm_lowmem", optimizer="fast_run+lowmem")
#: the linker of the planning-cost table (``--linker``; ``cvm_lowmem_nogc`` plans an arena too)
PLAN_LINKER = ["cvm_lowmem"]
STOCK = theano.Mode(linker="cvm", optimizer="fast_run")


def per_call_overhead(repeat: int) -> None:
    x = T.vector("x")
    out = T.tanh(x * 2 + 1).sum()
    fs, fl = theano.function([x], out, mode=STOCK), theano.function([x], out, mode=LOWMEM)
    xv = np.ones(10)
    fs(xv), fl(xv)
    ts, tl = [], []
    for _ in range(repeat):           # interleaved, so load changes hit both alike
        t0 = time.perf_counter()
        fs(xv)
        t1 = time.perf_counter()
        fl(xv)
        t2 = time.perf_counter()
        ts.append(t1 - t0)
        tl.append(t2 - t1)
    ms, ml = statistics.median(ts), statistics.median(tl)
    pv = planned_vm(fl)
    print("1. warm call of a small function (tanh(2x+1).sum(), x of 10 float64), "
          f"median of {repeat} interleaved calls")
    print(f"   stock cvm {ms * 1e6:8.2f} us   cvm_lowmem (cached plan) {ml * 1e6:8.2f} us   "
          f"difference {(ml - ms) * 1e6:+.2f} us ({(ml / ms - 1) * 100:+.1f}%)   "
          f"plans {len(pv.plans)}, hits {pv.hits}, misses {pv.misses}")
    # issue 10's reference for a cached signature: a dict lookup on a tuple of shapes, from
    # Python (the cell read, the key and the lookup), best of 5 x 200,000
    import timeit
    cell, cache = [xv], {((10,),): "plan"}
    lookup = min(timeit.repeat(lambda: cache.get((cell[0].shape,)), number=200_000,
                               repeat=5)) / 200_000
    empty = min(timeit.repeat(lambda: None, number=200_000, repeat=5)) / 200_000
    print(f"   for reference: a dict lookup on a tuple of shapes from Python "
          f"{(lookup - empty) * 1e6:.2f} us (its lambda's call, {empty * 1e6:.2f} us, taken off)")


def _families(names):
    table = {
        "mlp": lambda: families.mlp(batch=64, sizes=(256, 512, 512, 10)),
        "convnet": lambda: families.convnet(batch=8),
        "lstm": lambda: families.lstm(steps=10, batch=16),
        "randwire_ws": lambda: families.randwire(n=32, kind="ws"),
        "randwire_er": lambda: families.randwire(n=32, kind="er"),
        "inception": lambda: families.inception(blocks=2),
        "resnet": lambda: families.resnet(blocks=3),
        "transformer": lambda: families.transformer(),
        "wide": lambda: families.wide(n_branches=1000),
    }
    try:
        from theano_lowmem import families_nets as nets
        for name in getattr(nets, "FAMILIES", {}):
            table[name] = (lambda n=name: nets.FAMILIES[n]())
    except ImportError:
        pass
    return {n: table[n] for n in (names or table)}


def _smaller(args):
    """The same inputs with the first axis of the first array input halved (a new signature)."""
    out = list(args)
    for i, a in enumerate(out):
        if isinstance(a, np.ndarray) and a.ndim >= 1 and a.shape[0] >= 2:
            out[i] = a[: a.shape[0] // 2].copy()
            return out
    return out


def planning_cost(names, first_calls: int = 1) -> None:
    print("\n2. planning cost per family (first call, and a call with a new signature)"
          + (f"; the first call of {first_calls} functions compiled in turn, the median one "
             f"shown (min-max of ms/1k nodes in brackets)" if first_calls > 1 else ""))
    print(f"   {'family':<16s} {'nodes':>6s} {'compile':>9s} {'plan 1st':>9s} {'share':>6s} "
          f"{'ms/1k nodes':>11s} {'call (hit)':>11s} {'call (miss)':>12s}  sizes   breakdown (ms)")
    for name, build in _families(names).items():
        case = build()
        firsts = []          # (plan seconds, compile seconds, f, plan) per compiled function
        for _ in range(first_calls):
            t0 = time.perf_counter()
            f = case.compile(mode=theano.Mode(linker=PLAN_LINKER[0], optimizer="fast_run+lowmem"))
            tc = time.perf_counter() - t0
            args = case.make_args()
            pv = planned_vm(f)
            if pv is None:
                break
            case.reset()
            f(*args)
            firsts.append((pv.current.seconds["total"], tc, f, pv.current))
        if not firsts:
            print(f"   {name:<16s} (no call-time plans: lazy graph or planning declined)")
            continue
        firsts.sort(key=lambda t: t[0])
        _, tc, f, p = firsts[(len(firsts) - 1) // 2]          # the median (lower middle)
        pv = planned_vm(f)
        n = len(f.maker.fgraph.apply_nodes)
        case.reset()
        t0 = time.perf_counter()
        f(*args)
        hit = time.perf_counter() - t0
        small = _smaller(args)
        case.reset()
        t0 = time.perf_counter()
        try:
            f(*small)
            miss = time.perf_counter() - t0
        except Exception:     # a family whose inputs cannot be cut
            miss = float("nan")
        s = p.seconds
        spread = (f" [{firsts[0][0] / n * 1e6:.1f}-{firsts[-1][0] / n * 1e6:.1f}]"
                  if len(firsts) > 1 else "")
        print(f"   {name:<16s} {n:>6d} {tc:>8.2f}s {s['total'] * 1e3:>7.1f}ms "
              f"{s['total'] / tc * 100:>5.1f}% {s['total'] / n * 1e6:>11.1f}{spread} "
              f"{hit * 1e3:>9.2f}ms {miss * 1e3:>10.2f}ms  {'exact' if p.exact else 'GUESS'}   "
              f"tape {s.get('tape', 0.0) * 1e3:.1f} "
              f"shapes {s['shapes'] * 1e3:.1f} model {s['model'] * 1e3:.1f} "
              f"schedule {s['schedule'] * 1e3:.1f} arena {s.get('arena', 0.0) * 1e3:.1f} "
              f"vm {s['vm'] * 1e3:.1f}   (at link time, in compile: VM factory "
              f"{pv._planner.link_seconds * 1e3:.1f}, shape tape "
              f"{pv._planner.tape_seconds * 1e3:.1f})")
        case.reset()
        sys.stdout.flush()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=2000)
    ap.add_argument("--families", default="")
    ap.add_argument("--first-calls", type=int, default=1,
                    help="compile each family this many times and show the median first call "
                         "(a first call happens once per function: one sample is noisy)")
    ap.add_argument("--linker", default="cvm_lowmem", choices=["cvm_lowmem", "cvm_lowmem_nogc"],
                    help="linker of the planning-cost table (the _nogc one also places an arena)")
    a = ap.parse_args(argv)
    PLAN_LINKER[0] = a.linker
    per_call_overhead(a.repeat)
    planning_cost([n for n in a.families.split(",") if n], a.first_calls)


if __name__ == "__main__":
    main()
