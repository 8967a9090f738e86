"""The benchmark suite on tiny families: it runs, checks results, writes its files."""
from __future__ import annotations

import numpy as np
import pytest

import theano

import theano_lowmem  # noqa: F401
from theano_lowmem import bench, families
from theano_lowmem.core.memory import simulate
from theano_lowmem.model import model_for

from .oracles import downset_optimum, sim_peak, tracing


def test_check_identical_is_strict():
    a = np.arange(4.0)
    bench.check_identical("x", [a], [a.copy()], "ours")
    with pytest.raises(bench.MismatchError):
        bench.check_identical("x", [a], [a + 1e-12], "ours")
    with pytest.raises(bench.MismatchError):
        bench.check_identical("x", [a], [a.astype("float32")], "ours")
    with pytest.raises(bench.MismatchError):
        bench.check_identical("x", [a], [a, a], "ours")


def check_against_real_call(row) -> None:
    """The row's modelled numbers against an independent look: the family compiled as the
    benchmark compiles "ours", one traced real call, the model of the order that really ran
    (its peak must be the row's "ours"), and the exact optimum of ``tests.oracles``' DP over
    executed sets (the row's optimum must equal it when it says proven, and be bracketed
    by its bounds otherwise)."""
    case = families.FAMILIES[row.family](**bench.SIZES["tiny"][row.family])
    with tracing() as rec:
        f = case.compile(theano.Mode(**bench.OURS_MODE))
        args = case.make_args()
        f(*args)
    case.reset()
    g = model_for(f, *args, order=rec.order()).graph
    assert g.n_nodes == row.nodes
    real = simulate(g, list(range(g.n_nodes))).peak
    assert real == sim_peak(g, list(range(g.n_nodes))) == row.modelled["ours"], row.family
    best, order, _ = downset_optimum(g)
    assert simulate(g, order).peak == best
    m = row.modelled
    if m["optimal"]:
        assert m["optimum"] == best, row.family
    assert m["lower_bound"] <= best <= m["optimum"] <= m["ours"]


def test_bench_tiny_two_families(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench, "COMPILE_SECONDS", 0.0)     # exactly COMPILE_ROUNDS rounds
    rows = bench.run(size="tiny", families=["branches", "mlp"], out=str(tmp_path), plots=False,
                     time_budget=0.3, command="test")
    assert [r.family for r in rows] == ["branches", "mlp"]
    for r in rows:
        assert r.identical and r.nodes > 0
        check_against_real_call(r)
        assert r.modelled["ours"] <= r.modelled["theano"]
        assert r.measured["ours_nogc"]["cells"] <= r.measured["stock_nogc"]["cells"]
        assert all(t > 0 for t in r.call.values())
    out = capsys.readouterr().out
    assert "| branches |" in out and "| mlp |" in out and "Scheduling cost" in out
    md = (tmp_path / "results.md").read_text()
    assert "Command: `test`" in md and "| mlp |" in md and "numpy=" in md
    for r in rows:      # every compile timed on both clocks, paired by round
        for runs in (r.compile_runs, r.compile_runs_cpu):
            assert len(runs["stock"]) == len(runs["ours"]) == bench.COMPILE_ROUNDS
            assert all(t > 0 for t in runs["stock"] + runs["ours"])


def test_compile_rounds_grow_for_fast_compiles(monkeypatch):
    """At least COMPILE_ROUNDS rounds; then more while stock's compiles total less than
    COMPILE_SECONDS; never more than COMPILE_ROUNDS_MAX."""
    monkeypatch.setattr(bench, "COMPILE_ROUNDS", 3)
    monkeypatch.setattr(bench, "COMPILE_SECONDS", 2.0)
    monkeypatch.setattr(bench, "COMPILE_ROUNDS_MAX", 10)

    def rounds(seconds_each):
        done, stock = 0, []
        while bench.compile_more(done, stock):
            done += 1
            stock.append(seconds_each)
        return done
    assert rounds(5.0) == 3          # slow compiles: the minimum
    assert rounds(0.5) == 4          # 4 x 0.5 s reach 2 s
    assert rounds(0.3) == 7          # 7 x 0.3 s = 2.1 s
    assert rounds(0.01) == 10        # the cap


@pytest.mark.parametrize("n", [2, 5, 6, 9, 10, 13, 16])
def test_median_ci_matches_brute_force_coverage(n):
    """The sign-test interval of the median, checked by enumerating the 2**n ways the n
    samples fall below or above the true median: the interval ``(x_(k), x_(n+1-k))`` covers
    it exactly when between k and n-k samples are below; its coverage must be >= 95% and
    the next narrower interval's < 95% (or the interval is (min, max))."""
    from itertools import product

    def coverage(k):
        hits = sum(1 for signs in product((0, 1), repeat=n) if k <= sum(signs) <= n - k)
        return hits / 2 ** n
    xs = [float(10 * i) for i in range(n)]
    lo, hi = bench.median_ci(list(reversed(xs)))
    k = xs.index(lo) + 1
    assert hi == xs[n - k]
    if k > 1:
        assert coverage(k) >= 0.95
    if k + 1 <= n - k:
        assert coverage(k + 1) < 0.95


def test_compile_ci_brackets_the_paired_median():
    row = bench.Row("f", 1, 1.0, 1.0, 0.0, 0.0, "-", {}, {}, {}, True,
                    compile_runs_cpu={"stock": [9.0] + [1.0] * 10,
                                      "ours": [1.0] + [0.9 + 0.02 * i for i in range(10)]})
    lo, hi = row.compile_ci
    assert lo <= row.compile_ratio <= hi
    assert (lo, hi) == (pytest.approx(0.92), pytest.approx(1.06))   # x_(2), x_(9) of 10
    assert "[0.92-1.06]" in row.compile_cell()


def test_sched_table_shows_the_first_call_plan():
    """The scheduling-cost table reads the call-time plan's seconds (issue 10: the
    scheduler runs at the first call), per 1,000 nodes and as a share of the compile."""
    row = bench.Row("f", 500, 1.0, 2.0, 0.0, 0.0, "-", {}, {}, {}, True,
                    call_plan=dict(method="cuts", seconds=dict(total=0.04, schedule=0.025)))
    t = bench.sched_table([row], [dict(graph="core", nodes=10, schedule_ms=3.0, pass_ms=None,
                                       compile_s=None, plan_ms=None, plan_schedule_ms=None,
                                       method="m")])
    assert "| f | 500 | 0.0 (0.0) | 40.0 (25.0) | 80.0 | 2.0% | cuts |" in t
    assert "| core | 10 | - (3.0) | - (-) | - | - | m |" in t


def test_compile_ratio_is_the_median_of_paired_cpu_ratios():
    """The ratio pairs each round's two compiles, skips the first round (C cache loading),
    takes the median, and uses CPU seconds when they were recorded (wall seconds also count
    other processes' time)."""
    row = bench.Row("f", 1, 1.0, 1.0, 0.0, 0.0, "-", {}, {}, {}, True,
                    compile_runs={"stock": [9.0, 1.0, 1.0, 1.0], "ours": [1.0, 2.0, 2.0, 0.5]},
                    compile_runs_cpu={"stock": [5.0, 2.0, 2.0, 2.0],
                                      "ours": [1.0, 2.2, 1.0, 2.4]})
    assert row.compile_ratio == pytest.approx(1.1)        # median of 1.1, 0.5, 1.2
    assert row.compile_ratio_wall == pytest.approx(2.0)   # median of 2, 2, 0.5
    wall_only = bench.Row("f", 1, 1.0, 1.0, 0.0, 0.0, "-", {}, {}, {}, True,
                          compile_runs=row.compile_runs)
    assert wall_only.compile_ratio == pytest.approx(2.0)


def test_new_families_build_and_match(tmp_path):
    """Every family added for the benchmark compiles at tiny size and ours matches stock."""
    import theano
    for name, kw in [("randwire_er", dict(n=6, width=4, batch=3)),
                     ("wide", dict(n_branches=5, n=8))]:
        case = families.FAMILIES[name](**kw)
        f_s = case.compile(theano.Mode(**bench.STOCK_MODE))
        f_o = case.compile(theano.Mode(**bench.OURS_MODE))
        args = case.make_args()
        bench.check_identical(name, bench._results(f_s, case, args),
                              bench._results(f_o, case, args), "ours")
