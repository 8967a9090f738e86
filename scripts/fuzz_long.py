#!/usr/bin/env python
"""Long differential-fuzzing run (>= 10,000 random graphs) in bounded memory.

Theano keeps ~2.4 MB per compiled function in-process (a single 10,000-example
pytest process was OOM-killed at 24 GB), so the run is split into chunks: each
chunk is one subprocess ``python -m pytest tests/test_fuzz_differential.py::<test>``
with ``HYPOTHESIS_PROFILE=long``, ``LOWMEM_FUZZ_EXAMPLES=<n>`` and its own
``LOWMEM_FUZZ_SEED`` (so no two chunks draw the same programs), and its memory
is returned when it exits.  Every passed example appends a line to the chunk's
``LOWMEM_FUZZ_LOG``; the script sums them, collects each failing chunk's
falsifying example (hypothesis prints it, shrunk), prints ``N passed, M failed``
last and exits 1 on any failure.

Usage (from the repository root; on a shared box prefix ``nice -n 19``)::

    python scripts/fuzz_long.py --total 10000 --out /tmp/fuzz_long          # the documented run
    python scripts/fuzz_long.py --total 10000 --out /tmp/fuzz_long --resume # continue it
    python scripts/fuzz_long.py --total 300 --chunk 20 --only image         # a quick sample

``--resume`` skips the chunks already recorded in ``<out>/state.jsonl`` (same
total, chunk size and seed give the same chunk list).  Each state line records
the chunk's test, examples, seed, passed/failed counts, seconds and the git
commit it ran against (the code under test may change during a long run).
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULE = "tests/test_fuzz_differential.py"
CONFIGS = ("order_gc", "order_nogc", "pyvm_gc", "pyvm_nogc", "pyvm_nogc_nofuse", "share_gc",
           "share_gc_nofuse", "share_nogc", "share_nogc_nofuse")
# (pytest node id relative to MODULE, weight): the share of the run each test gets.
PLAN: tuple[tuple[str, float], ...] = (
    *((f"test_differential_image[{c}]", 5.0) for c in CONFIGS),
    *((f"test_differential[{c}]", 4.0) for c in CONFIGS),
    ("test_differential_copy[copy]", 4.0),
    ("test_differential_copy[copy_shared]", 4.0),
    *((f"test_differential_branchy[{c}]", 1.0)
      for c in ("share_gc", "share_nogc", "pyvm_nogc", "share_nogc_nofuse")),
    ("test_differential_ifelse", 4.0),
    ("test_differential_scan", 2.0),
    ("test_global_switch", 1.5),
)


def chunks(total: int, size: int, seed: int, only: str | None) -> list[dict]:
    """The run's chunks: each test's share of ``total`` (rounded up), cut into pieces of at
    most ``size`` examples, interleaved across tests so a partial run covers every test."""
    plan = [(t, w) for t, w in PLAN if only is None or only in t]
    if not plan:
        raise SystemExit(f"--only {only!r} matches no test; tests: {[t for t, _ in PLAN]}")
    weight = sum(w for _, w in plan)
    per_test = []
    for test, w in plan:
        n = math.ceil(total * w / weight)
        k = math.ceil(n / size)
        per_test.append([(test, n // k + (1 if j < n % k else 0)) for j in range(k)])
    out = []
    for rank in range(max(len(p) for p in per_test)):
        for pieces in per_test:
            if rank < len(pieces):
                test, n = pieces[rank]
                out.append({"chunk": len(out), "test": test, "n": n, "seed": seed + len(out)})
    return out


def git_commit() -> str:
    try:
        return subprocess.run(["git", "log", "-1", "--format=%h"], cwd=ROOT, capture_output=True,
                              text=True, timeout=30).stdout.strip() or "?"
    except Exception:
        return "?"


def falsifying(text: str, limit: int = 80) -> str:
    """The shrunk failing example and the assertion of a pytest/hypothesis output."""
    lines = text.splitlines()
    start = next((i for i, l in enumerate(lines) if "Falsifying example" in l), None)
    if start is None:
        errs = [l for l in lines if l.startswith("E ") or l.startswith("FAILED") or "Error" in l]
        return "\n".join(errs[-limit:])
    errs = [l for l in lines[:start] if l.startswith("E ")][-8:]
    return "\n".join(errs + lines[start:start + limit])


def run_chunk(c: dict, out: str, timeout: float) -> dict:
    log = os.path.join(out, f"chunk{c['chunk']:04d}.log")
    txt = os.path.join(out, f"chunk{c['chunk']:04d}.out")
    if os.path.exists(log):
        os.remove(log)
    env = dict(os.environ, HYPOTHESIS_PROFILE="long", LOWMEM_FUZZ_EXAMPLES=str(c["n"]),
               LOWMEM_FUZZ_SEED=str(c["seed"]), LOWMEM_FUZZ_LOG=log)
    env.pop("LOWMEM_FUZZ_RANDOM", None)
    cmd = [sys.executable, "-m", "pytest", f"{MODULE}::{c['test']}", "-q", "-p", "no:cacheprovider",
           "-x", "-rfE"]
    commit, t0 = git_commit(), time.time()
    with open(txt, "w") as fh:
        try:
            rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    with open(txt) as fh:
        text = fh.read()
    passed = sum(1 for _ in open(log)) if os.path.exists(log) else 0
    failed = 0 if rc == 0 else 1
    if failed:   # passing lines logged while hypothesis shrank the failure are not examples
        passed = min(passed, c["n"])
    return dict(c, passed=passed, failed=failed, rc=rc, seconds=round(time.time() - t0, 1),
                commit=commit, date=datetime.datetime.now().isoformat(timespec="seconds"),
                failure=falsifying(text) if failed else "", output=txt)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--total", type=int, default=10000, help="examples (graphs) in all (default 10000)")
    ap.add_argument("--chunk", type=int, default=200, help="max examples per subprocess (default 200)")
    ap.add_argument("--seed", type=int, default=20240, help="base seed; chunk i uses seed + i")
    ap.add_argument("--out", default=os.path.join("/tmp", "fuzz_long"), help="state, logs, outputs")
    ap.add_argument("--resume", action="store_true", help="skip chunks recorded in <out>/state.jsonl")
    ap.add_argument("--only", default=None, help="only tests whose node id contains this string")
    ap.add_argument("--timeout", type=float, default=3 * 3600, help="seconds per chunk")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    state_path = os.path.join(args.out, "state.jsonl")
    plan = chunks(args.total, args.chunk, args.seed, args.only)
    done: dict[int, dict] = {}
    if args.resume and os.path.exists(state_path):
        for line in open(state_path):
            r = json.loads(line)
            if r["chunk"] < len(plan) and (r["test"], r["n"], r["seed"]) == \
                    tuple(plan[r["chunk"]][k] for k in ("test", "n", "seed")):
                done[r["chunk"]] = r
    elif os.path.exists(state_path):
        os.remove(state_path)
    print(f"fuzz_long: {sum(c['n'] for c in plan)} examples in {len(plan)} chunks "
          f"({len(done)} done), out={args.out}, commit {git_commit()}", flush=True)
    t0 = time.time()
    for c in plan:
        if c["chunk"] in done:
            continue
        r = run_chunk(c, args.out, args.timeout)
        done[c["chunk"]] = r
        with open(state_path, "a") as fh:
            fh.write(json.dumps(r) + "\n")
        p = sum(d["passed"] for d in done.values())
        f = sum(d["failed"] for d in done.values())
        rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(f"[{len(done)}/{len(plan)}] {c['test']} n={c['n']} seed={c['seed']}: "
              f"{r['passed']} passed, {r['failed']} failed, {r['seconds']} s, commit {r['commit']} "
              f"| total {p} passed, {f} failed, {time.time() - t0:.0f} s, max child RSS {rss:.0f} MB",
              flush=True)
        if r["failed"]:
            print(f"  FAILURE (output {r['output']}):\n" + "\n".join("    " + l for l in r["failure"].splitlines()),
                  flush=True)
    failures = [d for d in done.values() if d["failed"]]
    for d in failures:
        print(f"\nFAILED chunk {d['chunk']} {d['test']} seed={d['seed']} commit {d['commit']} "
              f"(rc {d['rc']}, output {d['output']}):\n{d['failure']}")
    passed = sum(d["passed"] for d in done.values())
    print(f"{passed} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
