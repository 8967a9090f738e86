"""pytest plugin of ``scripts/referee.py``: run Theano's own tests stock or with theano_lowmem on.

Load it with ``-p theano_lowmem.testing.referee_plugin`` (lowmem run) or, for a
stock run that must not import theano_lowmem at all, put this directory on
``PYTHONPATH`` and load it as ``-p referee_plugin``.  ``-p`` plugins are
imported before pytest collects any test module, so everything below happens
before the tests import Theano.

``THEANO_LOWMEM_REFEREE`` selects the run:

* ``stock``: only the scan fix (Theano's bundled Cython scan does not compile on
  Python 3.11; scan_op.py:925, :953 fall back to Python on ``ImportError``).
* ``lowmem``: the scan fix, then ``import theano_lowmem`` and
  ``activate.enable()``: the ``lowmem`` pass joins ``fast_run`` and the
  default ``cvm``/``cvm_nogc``/``vm``/``vm_nogc`` linkers become
  ``LowMemLinker`` (with their own ``allow_gc``), so every test function compiled
  with the default mode, ``FAST_RUN`` or a named VM linker runs through
  theano_lowmem, unmodified.

The run's identity is printed in the pytest header and stored as junit
properties, so a report can be checked for what it really ran.
"""
from __future__ import annotations

import os
import sys

ENV = "THEANO_LOWMEM_REFEREE"
SCAN_EXT = "theano.scan_module.scan_perform_ext"


def _setup() -> str:
    run = os.environ.get(ENV, "stock")
    if run not in ("stock", "lowmem"):
        raise ValueError(f"{ENV} must be 'stock' or 'lowmem', got {run!r}")
    if sys.version_info >= (3, 11):
        sys.modules.setdefault(SCAN_EXT, None)
    if run == "lowmem":
        import theano_lowmem
        theano_lowmem.activate.enable()
        if not theano_lowmem.activate.enabled():
            raise RuntimeError("theano_lowmem.activate.enable() did not switch on")
    elif "theano_lowmem" in sys.modules:
        raise RuntimeError("stock referee run, but theano_lowmem is imported")
    return run


RUN = _setup()


def describe() -> str:
    """One line: run kind, default linker class, allow_gc, whether lowmem is in fast_run."""
    import theano
    from theano.compile import mode as M
    lk = M.predefined_linkers["cvm"]
    tagged = "lowmem" in M.optdb.__db__ and \
        bool(M.optdb.__db__["lowmem"] & M.optdb.__db__["fast_run"])
    return (f"referee run={RUN} cvm={type(lk).__name__} allow_gc={theano.config.allow_gc} "
            f"lowmem_in_fast_run={tagged} scanfix={sys.modules.get(SCAN_EXT, 1) is None}")


def pytest_report_header(config):
    return describe()


def pytest_sessionstart(session):
    try:
        from _pytest.junitxml import xml_key
        xml = session.config.stash.get(xml_key, None)
    except (ImportError, AttributeError):   # older pytest: no stash / key
        xml = None
    if xml is not None:
        xml.add_global_property("referee", describe())
