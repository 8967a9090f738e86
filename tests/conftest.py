"""Test-session set-up, run before any test module imports Theano.

* ``base_compiledir``: a per-user directory under the system tmp, reused across
  runs (C compilation dominates cold runs), unless the user set one.
* ``blas.ldflags`` default and the scan fix: the same start-up code the
  installed ``.pth`` runs (``theano_lowmem/_startup.py``), loaded by file path
  so that the ``theano_lowmem`` package (which imports Theano) is not imported
  yet.
* ``--runslow`` runs the tests marked ``slow``.
* Hypothesis profiles: ``dev`` (default), ``ci`` (when ``CI=true``), ``long``;
  ``HYPOTHESIS_PROFILE`` overrides.
"""
from __future__ import annotations

import importlib.util
import os
import sys
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEST_CACHE = os.path.join(tempfile.gettempdir(), f"theano_lowmem_test_cache_{os.getuid()}")


def _load_startup():
    """``theano_lowmem._startup`` without importing the package."""
    mod = sys.modules.get("theano_lowmem._startup")
    if mod is None:
        spec = importlib.util.spec_from_file_location(
            "theano_lowmem._startup", os.path.join(ROOT, "theano_lowmem", "_startup.py"))
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod
        spec.loader.exec_module(mod)
    return mod


_startup = _load_startup()
if "theano" not in sys.modules and "base_compiledir" not in _startup.user_flag_keys():
    _startup.add_theano_flag("base_compiledir", TEST_CACHE)
_startup.prepare_environment()

try:
    from hypothesis import HealthCheck, settings
except ImportError:   # the `test` extra is not installed: hypothesis tests will fail to import
    settings = None
if settings is not None:
    settings.register_profile("dev", max_examples=50, deadline=None)
    settings.register_profile("ci", max_examples=30, deadline=None, derandomize=True,
                              suppress_health_check=[HealthCheck.too_slow])
    # long: random examples (scripts/fuzz_long.py sets LOWMEM_FUZZ_SEED per chunk); print_blob
    # gives an @reproduce_failure line with every falsifying example
    settings.register_profile("long", max_examples=2000, deadline=None, print_blob=True)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE")
                          or ("ci" if os.environ.get("CI", "").lower() == "true" else "dev"))


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False,
                     help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: use --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
