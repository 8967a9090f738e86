"""The referee (``scripts/referee.py``): its report logic, and a CI-sized run of Theano's own tests.

``test_referee_run`` runs the ``--quick`` selection (theano/gof/tests, theano/compile/tests,
theano/tests/test_ifelse.py: 373 tests) stock and with theano_lowmem switched on, both at
once (``--parallel``), and fails on any unexplained regression.  About 75 s on a warm
compile cache, 5-7 min cold (docs/referee.md).  ``LOWMEM_REFEREE=0`` skips it.  It needs pytest 7.4.4
and nose in the referee's deps directory; the test installs them there (pip --target) when
they are missing, and skips (outside CI) if that fails.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "referee.py")


def load_referee():
    spec = importlib.util.spec_from_file_location("referee_script", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod      # dataclasses look the module up while it executes
    spec.loader.exec_module(mod)
    return mod


referee = load_referee()

JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">
<properties><property name="referee" value="referee run={run} cvm=X"/></properties>
{cases}</testsuite></testsuites>"""


def junit(tmp_path, run: str, outcomes: dict[str, str]) -> str:
    body = {"passed": "", "failed": "<failure message='x'/>", "error": "<error message='x'/>",
            "skipped": "<skipped message='x'/>"}
    cases = "".join(f'<testcase classname="{t.split("::")[0]}" name="{t.split("::")[1]}">'
                    f"{body[o]}</testcase>" for t, o in outcomes.items())
    p = tmp_path / f"{run}.xml"
    p.write_text(JUNIT.format(run=run, cases=cases))
    return str(p)


def test_parse_and_compare(tmp_path):
    stock = {"m.A::t1": "passed", "m.A::t2": "passed", "m.B::t3": "failed", "m.B::t4": "skipped",
             "m.C::t5": "passed"}
    low = {"m.A::t1": "passed", "m.A::t2": "failed", "m.B::t3": "passed", "m.B::t4": "skipped",
           "m.D::t6": "error"}
    s, hs = referee.parse_junit(junit(tmp_path, "stock", stock))
    l, hl = referee.parse_junit(junit(tmp_path, "lowmem", low))
    assert (s, l) == (stock, low) and hs.startswith("referee run=stock") and "lowmem" in hl
    diffs = referee.compare(s, l)
    assert diffs == [("m.A::t2", "passed", "failed"), ("m.B::t3", "failed", "passed"),
                     ("m.C::t5", "passed", "absent"), ("m.D::t6", "absent", "error")]
    assert [d[0] for d in diffs if referee.is_regression(d[1], d[2])] == ["m.A::t2", "m.C::t5"]
    assert referee.counts(s) == {"passed": 3, "failed": 1, "error": 0, "skipped": 1, "total": 5}


def test_teardown_error_after_failure_counts_as_error(tmp_path):
    p = tmp_path / "x.xml"
    p.write_text(JUNIT.format(run="stock", cases=(
        '<testcase classname="m" name="t"><failure message="f"/></testcase>'
        '<testcase classname="m" name="t"><error message="teardown"/></testcase>')))
    assert referee.parse_junit(str(p))[0] == {"m::t": "error"}


def test_flags_differ_only_by_lowmem(monkeypatch):
    monkeypatch.setenv("THEANO_FLAGS", "floatX=float64,allow_gc=True,lowmem_share=False")
    stock = referee.theano_flags("stock", False, "/tmp/cc").split(",")
    low = referee.theano_flags("lowmem", False, "/tmp/cc").split(",")
    assert "allow_gc=False" in stock and "allow_gc=False" in low and "allow_gc=True" not in low
    assert not any(f.startswith("lowmem_") for f in stock)
    assert sorted(set(low) - set(stock)) == ["lowmem_order=True", "lowmem_share=False"]


def deps_available() -> bool:
    d = os.environ.get("THEANO_LOWMEM_REFEREE_DEPS", referee.DEFAULT_DEPS_DIR)
    return all(os.path.isdir(os.path.join(d, p)) for p in ("nose", "pytest"))


@pytest.mark.skipif(os.environ.get("LOWMEM_REFEREE", "smoke") in ("0", "off", "no"),
                    reason="LOWMEM_REFEREE=0")
def test_referee_run(tmp_path):
    if not deps_available():
        # pytest 7.4.4 and nose go into the referee's own directory (pip --target), never into
        # the environment; CI reaches PyPI, so there a failed install is a failure.
        deps = os.environ.get("THEANO_LOWMEM_REFEREE_DEPS", referee.DEFAULT_DEPS_DIR)
        try:
            referee.ensure_deps(deps, install=True)
        except subprocess.CalledProcessError as exc:
            if os.environ.get("CI", "").lower() == "true":
                raise
            pytest.skip(f"referee deps could not be installed ({exc}): "
                        "python scripts/referee.py --install-deps")
    proc = subprocess.run([sys.executable, SCRIPT, "--quick", "--parallel", "--outdir", str(tmp_path)],
                          capture_output=True, text=True, timeout=1800)
    print(proc.stdout[-6000:], proc.stderr[-3000:])
    stock, hs = referee.parse_junit(str(tmp_path / "stock.xml"))
    low, hl = referee.parse_junit(str(tmp_path / "lowmem.xml"))
    assert "run=stock cvm=VM_Linker" in hs and "lowmem_in_fast_run=False" in hs, hs
    assert "run=lowmem cvm=LowMemLinker" in hl and "lowmem_in_fast_run=True" in hl, hl
    assert referee.counts(stock)["passed"] >= 300 and set(stock) == set(low)
    bad = [d for d in referee.compare(stock, low)
           if referee.is_regression(d[1], d[2]) and d[0] not in referee.KNOWN]
    assert not bad, bad
    assert proc.returncode == 0, proc.stdout[-3000:]
