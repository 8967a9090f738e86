"""Every docstring example of the package runs and gives what it says."""
from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import theano_lowmem

MODULES = sorted(m.name for m in pkgutil.walk_packages(theano_lowmem.__path__, "theano_lowmem.")
                 # the referee plugin checks its environment when imported (pytest -p)
                 if m.name not in ("theano_lowmem.__main__", "theano_lowmem.testing.referee_plugin"))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    mod = importlib.import_module(name)
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0


def test_public_api_has_examples():
    """The names ``theano_lowmem`` exports carry an example (numpydoc ``Examples``)."""
    missing = [n for n in theano_lowmem.__all__
               if callable(getattr(theano_lowmem, n)) and
               "Examples" not in (getattr(theano_lowmem, n).__doc__ or "")]
    assert not missing, missing
