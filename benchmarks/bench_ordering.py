"""Ordering quality with exact sizes, at the call-time scheduling budget (issue 10).

    python benchmarks/bench_ordering.py [--graphs 40] [--exact-budget 20] [--seed 42]
        [--floor S --per-1000 S] [--dump FILE.json]

``--floor``/``--per-1000``: measure another call-time budget (seconds of work, floor plus
per 1,000 nodes) instead of :func:`theano_lowmem.callplan.call_budget`'s; ``--dump``: one
JSON record per graph (ours, the reference's order and lower bound, work, ms).

Irregular graphs of 40-100 nodes: random elementwise DAGs (Erdos-Renyi) and
RandWire-style cells (Watts-Strogatz), every value a vector of one of three
lengths (L, 2L, 4L bytes, as the issue's example).  For each graph, the order
call-time planning picks (:func:`theano_lowmem.core.schedule.schedule` with the
budget :mod:`theano_lowmem.callplan` gives a graph of that size) against the
proven optimum of the offline reference run with a large budget
(:func:`~theano_lowmem.core.schedule.reference_schedule`: an independent A* over
down-sets started from the minimum-cut lower bound of :mod:`theano_lowmem.core.sched_cuts`,
which also proves an order optimal when its peak reaches that bound; graphs it cannot
prove are counted apart, with their lower bound).
Prints one line per family and the share of graphs within 3% and 5% of the
optimum, from one run.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import time

from theano_lowmem.callplan import call_budget
from theano_lowmem.core import randgraphs
from theano_lowmem.core.schedule import reference_schedule, schedule

L = 8 * 100_000          # bytes of the shortest vector


def mixed(g, seed: int):
    """``g`` with every buffer of length L, 2L or 4L (seeded)."""
    rng = random.Random(seed)
    return g.with_sizes([0 if g.producer[v] < 0 else L * rng.choice((1, 2, 4))
                         for v in range(g.n_values)])


FAMILIES = {
    "elementwise-DAG (ER)": lambda n, s: randgraphs.erdos_renyi(n, s, alias_prob=0.1),
    "RandWire cell (WS)": lambda n, s: randgraphs.watts_strogatz(n, s, k=4, p=0.75),
}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--graphs", type=int, default=40, help="graphs per family")
    ap.add_argument("--exact-budget", type=float, default=20.0)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--verbose", action="store_true", help="one line per graph")
    ap.add_argument("--floor", type=float, default=None,
                    help="budget floor in seconds (default: callplan.call_budget's)")
    ap.add_argument("--per-1000", type=float, default=None,
                    help="budget seconds per 1,000 nodes (default: callplan.call_budget's)")
    ap.add_argument("--dump", default=None, help="write one JSON record per graph to this file")
    a = ap.parse_args(argv)

    def budget(n: int) -> float:
        if a.floor is None and a.per_1000 is None:
            return call_budget(n)
        return (a.floor or 0.0) + (a.per_1000 or 0.0) * n / 1000

    records = []
    print(f"{'family':<22s} {'graphs':>6s} {'proven':>6s} {'<=3%':>6s} {'<=5%':>6s} "
          f"{'max':>7s} {'mean':>7s} {'plan ms (median)':>16s}")
    for name, make in FAMILIES.items():
        rng = random.Random(a.seed)
        ratios, times, unproven = [], [], []
        for i in range(a.graphs):
            n = rng.randint(40, 100)
            g = mixed(make(n, a.seed + i), a.seed + i)
            base = g.topological_order()
            t0 = time.perf_counter()
            ours = schedule(g, baseline=base, time_budget=budget(g.n_nodes))
            times.append(time.perf_counter() - t0)
            ref = reference_schedule(g, time_budget=a.exact_budget, upper_bound=ours.peak)
            best = min(ref.peak, ours.peak)
            # proven: either side says optimal, or the search proved nothing lies below ours
            # (``ref.lower_bound``: it searches strictly below ``upper_bound=ours.peak``)
            proven = ref.optimal or ours.optimal or ref.lower_bound >= best
            if proven:
                ratios.append(ours.peak / best)
            else:
                unproven.append(ours.peak / max(1, ref.lower_bound))
            records.append(dict(family=name, i=i, seed=a.seed, nodes=g.n_nodes, ours=ours.peak,
                                method=ours.method, optimal=ours.optimal, work=ours.work,
                                ms=times[-1] * 1e3, ref=ref.peak, lower=ref.lower_bound,
                                proven=proven))
            if a.verbose:
                print(f"  {name[:12]} #{i:<2d} nodes {g.n_nodes:3d}  ours {ours.peak / L:5.0f} L "
                      f"({ours.method})  exact {ref.peak / L:5.0f} L  lower bound "
                      f"{ref.lower_bound / L:5.1f} L  {'proven' if proven else 'unproven'}")
        k = len(ratios)
        w3 = sum(r <= 1.03 for r in ratios) / max(1, k)
        w5 = sum(r <= 1.05 for r in ratios) / max(1, k)
        print(f"{name:<22s} {a.graphs:>6d} {k:>6d} {w3:>6.0%} {w5:>6.0%} "
              f"{max(ratios, default=1):>7.3f} {statistics.mean(ratios or [1]):>7.3f} "
              f"{statistics.median(times) * 1e3:>14.1f}"
              + (f"   unproven: {len(unproven)} (ours / lower bound <= "
                 f"{max(unproven):.3f})" if unproven else ""))
    if a.dump:
        with open(a.dump, "w") as f:
            json.dump(records, f, indent=0)


if __name__ == "__main__":
    main()
