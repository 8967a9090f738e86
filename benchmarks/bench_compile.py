"""Compile time with theano_lowmem against stock Theano (issue 12), two protocols.

    python benchmarks/bench_compile.py [--rounds 8] [--protocol abba|rotate] [--gc-off]
        [--clock wall|cpu] FAMILY...

``abba`` (what ``python -m theano_lowmem bench`` does, ``bench.run_family``): stock and
ours (``cvm_lowmem_nogc`` + ``fast_run+lowmem``) compiled in alternation, stock first in
odd rounds and ours first in even ones; the ratio is the median over rounds 2..N of ours /
stock of the same round.  ``rotate``: four modes per round (stock; the ``lowmem`` pass with
Theano's linker; our linker with Theano's optimizer; both), their order rotated every
round; ratios paired with stock of the same round.  ``--gc-off``: the cyclic collector
off during each compile.  Families: those of ``python -m theano_lowmem bench`` (size small).
Every compile runs after ``gc.collect()`` with the objects alive before it frozen
(``bench._compile_timed``).
"""
from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import theano  # noqa: E402

from theano_lowmem import families as fam  # noqa: E402
from theano_lowmem import families_nets as nets  # noqa: E402
from theano_lowmem.bench import OURS_MODE, SIZES, STOCK_MODE, median_ci  # noqa: E402

FOUR = {"stock": STOCK_MODE,
        "lowmem pass only": dict(linker="cvm", optimizer="fast_run+lowmem"),
        "our linker only": dict(linker="cvm_lowmem_nogc", optimizer="fast_run"),
        "ours (both)": OURS_MODE}


def _timed(case, mode: dict, gc_off: bool) -> tuple:
    """(wall seconds, CPU seconds of this process) of one compile."""
    gc.collect()
    gc.freeze()
    if gc_off:
        gc.disable()
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        case.compile(theano.Mode(**mode))
        return time.perf_counter() - t0, time.process_time() - c0
    finally:
        gc.enable()
        gc.unfreeze()


def run(name: str, rounds: int, protocol: str, gc_off: bool, clock: str = "wall") -> str:
    case = nets.FAMILIES[name](**nets.family_kwargs(name, "small")) if name in nets.FAMILIES \
        else fam.FAMILIES[name](**SIZES["small"][name])
    modes = FOUR if protocol == "rotate" else {"stock": STOCK_MODE, "ours (both)": OURS_MODE}
    keys = list(modes)
    times: dict = {k: [] for k in keys}
    for rnd in range(rounds):
        if protocol == "rotate":
            order = keys[rnd % len(keys):] + keys[:rnd % len(keys)]
        else:
            order = keys if rnd % 2 == 0 else keys[::-1]
        for k in order:
            times[k].append(_timed(case, modes[k], gc_off)[clock == "cpu"])
    lines = [f"{name} ({protocol}, {rounds} rounds, {clock} clock{', gc off' if gc_off else ''})"]
    base = times["stock"][1:]
    for k in keys:
        pairs = [b / a for a, b in zip(base, times[k][1:])]
        lines.append(f"  {k:<18s} min {min(times[k]):.3f} s  median {statistics.median(times[k]):.3f} s"
                     f"  paired ratio median {statistics.median(pairs):.3f}"
                     f" [95% CI {'-'.join(f'{v:.3f}' for v in median_ci(pairs))}]"
                     f"  (pairs {' '.join(f'{p:.2f}' for p in pairs)})")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("families", nargs="+", choices=sorted(set(nets.FAMILIES) | set(fam.FAMILIES)),
                    metavar="FAMILY")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--protocol", choices=("abba", "rotate"), default="abba")
    ap.add_argument("--gc-off", action="store_true")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="wall: perf_counter; cpu: process_time (this process's CPU seconds: "
                         "time other processes take from it is not counted)")
    a = ap.parse_args(argv)
    for name in a.families:
        print(run(name, a.rounds, a.protocol, a.gc_off, a.clock), flush=True)


if __name__ == "__main__":
    main()
