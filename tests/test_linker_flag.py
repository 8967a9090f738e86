"""``THEANO_FLAGS=linker=cvm_lowmem_nogc``: Theano's linker flag only takes its own names;
the start-up code reads ours as the stock name plus ``lowmem_order=True``."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CODE = ("import theano_lowmem, theano, theano.tensor as T, numpy as np\n"
        "x = T.vector('x'); f = theano.function([x], T.exp(T.exp(x) * 2).sum())\n"
        "print(type(f.maker.linker).__name__, f.maker.linker.allow_gc, f.maker.linker.use_cloop,\n"
        "      float(f(np.ones(3))))\n")


@pytest.mark.parametrize("name,gc,cloop", [("cvm_lowmem_nogc", False, True), ("vm_lowmem", True, False)])
def test_linker_flag_with_our_name(name, gc, cloop):
    env = dict(os.environ, PYTHONPATH=ROOT)
    env["THEANO_FLAGS"] = f"{env.get('THEANO_FLAGS', '')},linker={name}".lstrip(",")
    p = subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True,
                       timeout=600, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-2000:]
    cls, allow_gc, use_cloop, value = p.stdout.split()
    assert (cls, allow_gc, use_cloop) == ("LowMemLinker", str(gc), str(cloop))
    assert "does not recognise" not in p.stderr


def test_unknown_linker_name_is_still_rejected():
    env = dict(os.environ, PYTHONPATH=ROOT)
    env["THEANO_FLAGS"] = f"{env.get('THEANO_FLAGS', '')},linker=cvm_lowmem_typo".lstrip(",")
    p = subprocess.run([sys.executable, "-c", "import theano_lowmem"], env=env,
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert p.returncode != 0 and "cvm_lowmem_typo" in p.stderr
