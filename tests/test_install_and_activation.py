"""Start-up hook, flags, the global switch and the install.

Subprocess tests run a fresh interpreter with ``PYTHONPATH=<checkout>``; when
the hook is not installed they run the ``.pth`` line of the checkout first, so
the mechanism is tested either way, and ``test_pth_installed`` says whether it
is installed (a failure under ``CI=true`` or when pip installed the package, a skip
only where it was never installed).  No test skips because a module of ours is
missing: a rename fails loudly.
"""
from __future__ import annotations

import math
import os
import re
import site
import subprocess
import sys
import sysconfig
import textwrap

import pytest
from hypothesis import given, strategies as st

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = os.path.join(ROOT, "theano_lowmem")
PTH = os.path.join(ROOT, "theano_lowmem_startup.pth")
_startup = sys.modules["theano_lowmem._startup"]   # loaded by conftest


def _cache() -> str:
    """This session's Theano compile cache (conftest's per-user dir, or the user's)."""
    import theano
    return theano.config.base_compiledir


UNRECOGNISED = "Theano does not recognise this flag: "


def _run(code: str, flags: str | None = "", extra_env: dict | None = None, isolated: bool = False,
         timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter with the start-up hook active.

    ``flags=None`` leaves THEANO_FLAGS unset; otherwise ``base_compiledir`` is
    prepended.  ``isolated`` uses ``python -S`` (no site-packages, no .pth) for
    tests of ``_startup`` alone, which is then loaded by file path.
    """
    env = {k: v for k, v in os.environ.items()
           if k not in ("THEANO_FLAGS", "THEANORC", "PYTHONPATH", _startup.SCANFIX_OPTOUT)}
    env["THEANORC"] = os.devnull + "_none"    # no theanorc unless a test gives one
    if flags is not None:
        env["THEANO_FLAGS"] = f"base_compiledir={_cache()}" + (f",{flags}" if flags else "")
    env["PYTHONPATH"] = ROOT
    env.update(extra_env or {})
    if isolated:
        pre = (f"import importlib.util, sys\n"
               f"_s = importlib.util.spec_from_file_location('st', {os.path.join(PKG, '_startup.py')!r})\n"
               f"st = importlib.util.module_from_spec(_s); _s.loader.exec_module(st)\n")
        argv = [sys.executable, "-S", "-c", pre + textwrap.dedent(code)]
    else:
        pre = ("import sys\nif 'theano_lowmem._startup' not in sys.modules:\n"
               f"    exec(open({PTH!r}).read())\n")
        argv = [sys.executable, "-c", pre + textwrap.dedent(code)]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def _ok(p: subprocess.CompletedProcess) -> str:
    assert p.returncode == 0, f"exit {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}"
    return p.stdout


# ---------------------------------------------------------------- _startup, pure parts
_key = st.from_regex(r"[a-z][a-z_.]{0,10}", fullmatch=True)
_val = st.from_regex(r"[A-Za-z0-9_./ -]{0,8}", fullmatch=True)


@given(st.lists(st.tuples(_key, _val, st.booleans()), max_size=6), st.sampled_from([",", ", ", ",,"]))
def test_parse_theano_flags_matches_theano(items, sep):
    from theano.configparser import parse_config_string
    s = sep.join(f"{k}='{v}'" if quote else f"{k}={v}" for k, v, quote in items)
    assert _startup.parse_theano_flags(s) == parse_config_string(s, issue_warnings=False)


def test_theanorc_keys(tmp_path, monkeypatch):
    a, b, bad = tmp_path / "a", tmp_path / "b", tmp_path / "bad"
    a.write_text("[global]\nlowmem_order = True\nfloatX = float32\n[blas]\nldflags =\n")
    b.write_text("[nvcc]\nflags = -O3\n")
    bad.write_text("no section header\n")
    monkeypatch.setenv("THEANORC", os.pathsep.join(map(str, [a, tmp_path / "missing", b, bad])))
    assert _startup.theanorc_keys() == {"lowmem_order", "floatx", "blas.ldflags", "nvcc.flags"}
    monkeypatch.setenv("THEANO_FLAGS", "lowmem_share=0")
    keys = _startup.user_flag_keys()
    assert {"lowmem_share", "lowmem_order", "blas.ldflags"} <= keys and _startup.wants_activation(keys)
    assert not _startup.wants_activation({"lowmem_ordr", "floatx"})


def test_unrecognised_pattern_is_exact():
    p = re.compile(_startup.unrecognised_flag_pattern(), re.I)   # warnings compiles it with re.I
    for name in _startup.FLAG_NAMES:
        assert p.match(UNRECOGNISED + name)
        assert not p.match(UNRECOGNISED + name + "x") and not p.match(UNRECOGNISED + name.upper())
    assert not p.match(UNRECOGNISED + "lowmem_ordr") and not p.match(UNRECOGNISED + "floatX")


# ---------------------------------------------------------------- prepare_environment (python -S)
def _prepare(flags: str | None, rc: str | None = None, tmp_path=None, extra_env=None):
    env = dict(extra_env or {})
    if rc is not None:
        f = tmp_path / "theanorc"
        f.write_text(rc)
        env["THEANORC"] = str(f)
    code = """
        import os, json
        r = st.prepare_environment(); r2 = st.prepare_environment()
        print(json.dumps([r, r2, os.environ.get('THEANO_FLAGS'), st.find_openblas(),
                          'theano.scan_module.scan_perform_ext' in sys.modules]))
    """
    import json
    if flags is not None:
        env["THEANO_FLAGS"] = flags
    p = _run(code, flags=None, extra_env=env, isolated=True)
    return json.loads(_ok(p))


def test_prepare_environment_default_ldflags():
    r, r2, flags, blas, scan_entry = _prepare(None)
    want = "-lopenblas" if blas else ""
    assert r == r2 == {"ldflags": want, "scanfix": sys.version_info >= (3, 11)}
    assert flags == f"blas.ldflags={want}"
    assert scan_entry == (sys.version_info >= (3, 11))


def test_prepare_environment_appends_to_user_flags():
    r, _, flags, blas, _ = _prepare("floatX=float32,")
    assert flags == "floatX=float32,blas.ldflags=" + ("-lopenblas" if blas else "")


@pytest.mark.parametrize("flags,rc", [("blas.ldflags=-lmyblas", None), ("floatX=float32", "[blas]\nldflags =\n"),
                                      ("blas.ldflags=", "[blas]\nldflags = -lopenblas\n")])
def test_prepare_environment_never_overrides_user(flags, rc, tmp_path):
    r, _, out, _, _ = _prepare(flags, rc, tmp_path)
    assert r["ldflags"] is None and out == flags


def test_scanfix_opt_out():
    r, _, _, _, scan_entry = _prepare(None, extra_env={_startup.SCANFIX_OPTOUT: "1"})
    assert r["scanfix"] is False and scan_entry is False


def test_startup_is_cheap():
    p = _run("""
        import time; t = time.perf_counter()
        for _ in range(20):
            st._state.clear(); st.run_from_pth()
        print((time.perf_counter() - t) / 20)
        print(sorted(m for m in ('numpy', 'theano', 'theano_lowmem') if m in sys.modules))
    """, flags="floatX=float32,lowmem_order=True", isolated=True)
    per_call, mods = _ok(p).splitlines()
    assert mods == "[]"
    assert float(per_call) < 0.02, per_call   # measured ~0.1 ms; generous for a loaded box


# ---------------------------------------------------------------- scan fix, in this process
def test_scan_runs_on_python_path():
    import numpy as np
    import theano
    import theano.tensor as T
    if sys.version_info >= (3, 11):
        assert sys.modules.get(_startup.SCAN_EXT, "absent") is None
    x = T.dvector("x")
    out, _ = theano.scan(lambda xt, acc: acc + xt, sequences=x, outputs_info=T.constant(0.0, dtype="float64"))
    f = theano.function([x], out)
    v = np.random.RandomState(0).rand(7)
    np.testing.assert_allclose(f(v), np.cumsum(v))


# ---------------------------------------------------------------- config
def test_flag_names_agree_with_startup():
    from theano_lowmem import config
    assert tuple(n for n, _, _ in config.FLAGS) == _startup.FLAG_NAMES
    assert all(re.fullmatch(r"lowmem_[a-z_]+", n) for n in _startup.FLAG_NAMES)   # flat names


@pytest.mark.parametrize("doc", ["README.md", os.path.join("docs", "guide.md")])
def test_readme_flag_table_is_current(doc):
    from theano_lowmem import config
    text = open(os.path.join(ROOT, doc), encoding="utf-8").read()
    assert config.flag_table_markdown() in text


def test_register_flags_idempotent_and_typed():
    import theano
    from theano.configparser import _config_var_list
    from theano_lowmem import config
    config.register_flags()
    assert config.register_flags() == []
    for name, default, help_ in config.FLAGS:
        assert type(getattr(theano.config, name)) is type(default)
        (cv,) = [c for c in _config_var_list if c.fullname == name]
        assert cv.in_c_key is False and cv.doc == help_ and help_


@pytest.mark.parametrize("name,bad", [
    ("lowmem_order", "maybe"), ("lowmem_order", "yes"), ("lowmem_share", 2), ("lowmem_check_plan", ""),
    ("lowmem_time_budget", "abc"), ("lowmem_time_budget", "-1"), ("lowmem_time_budget", "0"),
    ("lowmem_time_budget", "nan"), ("lowmem_time_budget", "inf"), ("lowmem_time_budget", True),
    ("lowmem_exact_max_nodes", "-1"), ("lowmem_exact_max_nodes", "1.5"), ("lowmem_exact_max_nodes", False),
    ("lowmem_unknown_dim", "0"), ("lowmem_unknown_dim", "x")])
def test_bad_values_are_rejected_clearly(name, bad):
    import theano
    from theano_lowmem import config
    config.register_flags()
    before = getattr(theano.config, name)
    with pytest.raises(ValueError, match=rf"^{name}: expected .*, got {re.escape(repr(bad))}$"):
        setattr(theano.config, name, bad)
    assert getattr(theano.config, name) == before


@given(st.one_of(st.floats(allow_nan=True), st.integers(-10**6, 10**6), st.text(max_size=6)))
def test_parsers_total(val):
    """Every parser returns a valid value or raises ValueError naming its flag; nothing else."""
    from theano_lowmem.config import FLAG_BY_NAME
    for name, f in FLAG_BY_NAME.items():
        try:
            out = f.parse(val)
        except ValueError as e:
            assert str(e).startswith(name + ": expected ")
            continue
        assert type(out) is type(f.default)
        if name == "lowmem_time_budget":
            assert math.isfinite(out) and out > 0 and out == float(val)
        elif isinstance(f.default, int) and not isinstance(f.default, bool):
            assert out >= (1 if name == "lowmem_unknown_dim" else 0) and out == int(val)


def test_bad_flag_in_environment_fails_import_clearly():
    p = _run("import theano_lowmem", flags="lowmem_time_budget=-1")
    assert p.returncode != 0
    assert "ValueError: lowmem_time_budget: expected a positive number of seconds, got '-1'" in p.stderr


# ---------------------------------------------------------------- activate (in process)
@pytest.fixture
def switch():
    import theano_lowmem  # noqa: F401  (registers flags and the pass)
    from theano_lowmem import activate
    was = activate.enabled()
    activate.disable()
    yield activate
    activate.disable()
    if was:
        activate.enable()


def _opt_names(mode) -> list[str]:
    return [getattr(o, "name", None) for o in mode.optimizer]


def test_enable_disable_roundtrip(switch):
    import theano
    from theano.compile import mode as M
    from theano_lowmem.storage_reuse import LowMemLinker
    stock = {k: M.predefined_linkers[k] for k in switch.LINKER_NAMES}
    stock_fr, share = M.predefined_modes["FAST_RUN"], theano.config.lowmem_share
    stock_fc = M.predefined_modes["FAST_COMPILE"]
    fast_run_set = list(M.optdb.__db__["fast_run"])
    assert "lowmem" not in _opt_names(M.get_default_mode()) and not switch.enabled()

    switch.enable(share=not share)
    first = {k: M.predefined_linkers[k] for k in switch.LINKER_NAMES}
    switch.enable()                                             # idempotent
    assert {k: M.predefined_linkers[k] for k in switch.LINKER_NAMES} == first and switch.enabled()
    for k, lk in first.items():
        assert type(lk) is LowMemLinker
        assert switch._linker_kwargs(lk) == switch._linker_kwargs(stock[k]), k
    assert type(M.predefined_modes["FAST_RUN"].linker) is LowMemLinker
    assert type(M.get_default_mode().linker) is LowMemLinker
    for mode in (M.get_default_mode(), M.get_mode("FAST_RUN")):
        assert _opt_names(mode)[-1] == "lowmem"                # last pass, after merge3
    assert "lowmem" not in _opt_names(M.get_mode("FAST_COMPILE"))
    fc = M.get_mode("FAST_COMPILE").linker
    assert type(fc) is LowMemLinker and switch._linker_kwargs(fc) == switch._linker_kwargs(
        stock_fc.linker)
    assert theano.config.lowmem_share is (not share)

    switch.disable()
    switch.disable()                                            # idempotent
    assert all(M.predefined_linkers[k] is stock[k] for k in stock)
    assert M.predefined_modes["FAST_RUN"] is stock_fr and M.instantiated_default_mode is None
    assert M.predefined_modes["FAST_COMPILE"] is stock_fc
    assert list(M.optdb.__db__["fast_run"]) == fast_run_set
    assert "lowmem" not in _opt_names(M.get_default_mode()) and theano.config.lowmem_share is share


def test_enabled_function_gives_same_results(switch):
    import numpy as np
    import theano
    import theano.tensor as T
    x = T.dmatrix("x")
    y = (T.exp(x) + 1) * T.tanh(x).sum(axis=0)
    v = np.random.RandomState(1).rand(3, 4)
    stock = theano.function([x], y)(v)
    switch.enable()
    f = theano.function([x], y)
    assert "lowmem" in _opt_names(f.maker.mode)
    np.testing.assert_allclose(f(v), stock)


# ---------------------------------------------------------------- zero-code activation (subprocess)
PROBE = """
    import json, sys, warnings
    import theano
    from theano.compile import mode as M
    m = M.get_default_mode()
    print(json.dumps({
        "imported": "theano_lowmem" in sys.modules,
        "order": getattr(theano.config, "lowmem_order", None),
        "opts": [getattr(o, "name", None) for o in m.optimizer][-2:],
        "linker": type(m.linker).__name__,
        "loader": type(theano.__loader__).__name__,
        "hook_left": any(type(f).__name__ == "TheanoImportHook" for f in sys.meta_path),
        "n_filters": len(warnings.filters),
        "our_filter_left": any("lowmem" in str(getattr(f[1], "pattern", "")) for f in warnings.filters),
    }))
"""


def _probe(flags="", extra_env=None):
    import json
    p = _run(PROBE, flags=flags, extra_env={"PYTHONWARNINGS": "default", **(extra_env or {})})
    return json.loads(_ok(p).splitlines()[-1]), p.stderr


def test_activation_by_theano_flags():
    r, err = _probe("lowmem_order=True")
    assert r["imported"] and r["order"] is True
    assert r["opts"][-1] == "lowmem" and r["linker"] == "LowMemLinker"
    assert r["loader"] == "SourceFileLoader" and not r["hook_left"] and not r["our_filter_left"]
    assert UNRECOGNISED not in err, err
    stock, _ = _probe("")
    assert not stock["imported"] and stock["opts"][-1] != "lowmem" and stock["linker"] == "VM_Linker"
    assert r["n_filters"] == stock["n_filters"]     # ours removed, the ones set during import kept


def test_activation_by_theanorc(tmp_path):
    rc = tmp_path / "theanorc"
    rc.write_text("[global]\nlowmem_order = True\n")
    r, err = _probe(flags=None, extra_env={"THEANORC": str(rc)})
    assert r["imported"] and r["order"] is True and r["opts"][-1] == "lowmem" and r["linker"] == "LowMemLinker"
    assert UNRECOGNISED not in err


def test_flag_false_registers_without_switch():
    r, err = _probe("lowmem_order=False,lowmem_share=0")
    assert r["imported"] and r["order"] is False and r["opts"][-1] != "lowmem" and r["linker"] == "VM_Linker"
    assert UNRECOGNISED not in err


def test_typo_flag_still_warns():
    r, err = _probe("lowmem_order=True,lowmem_ordr=True")
    assert r["imported"] and r["opts"][-1] == "lowmem"
    assert UNRECOGNISED + "lowmem_ordr" in err and UNRECOGNISED + "lowmem_order\n" not in err
    r, err = _probe("lowmem_ordr=True")            # a typo alone: no activation, Theano's warning
    assert not r["imported"] and UNRECOGNISED + "lowmem_ordr" in err


def test_plain_import_theano_without_theano_flags(tmp_path):
    """No THEANO_FLAGS at all: the hook's blas.ldflags default makes ``import theano`` work."""
    rc = tmp_path / "theanorc"      # only to keep the compile cache out of ~/.theano
    rc.write_text(f"[global]\nbase_compiledir = {_cache()}\n")
    p = _run("import os, theano; print(os.environ['THEANO_FLAGS']); print(repr(theano.config.blas.ldflags))",
             flags=None, extra_env={"THEANORC": str(rc)})
    flags, ldflags = _ok(p).splitlines()[-2:]
    assert flags.startswith("blas.ldflags=") and ldflags == repr(flags.split("=", 1)[1])


# ---------------------------------------------------------------- the install
def _site_dirs() -> list[str]:
    return [d for d in {sysconfig.get_paths()["purelib"], *site.getsitepackages()} if os.path.isdir(d)]


def _installed() -> bool:
    """pip installed a ``theano_lowmem`` distribution into this interpreter."""
    import importlib.metadata
    try:
        importlib.metadata.distribution("theano_lowmem")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def test_pth_installed():
    """Skipped only when the package was never pip-installed (outside CI): an installed
    package without the .pth (e.g. after a rename of the file) is a failure."""
    assert os.path.exists(PTH), f"{PTH} is missing from the checkout"
    found = [d for d in _site_dirs() if os.path.exists(os.path.join(d, os.path.basename(PTH)))]
    if not found:
        if os.environ.get("CI", "").lower() == "true" or _installed():
            pytest.fail("theano_lowmem_startup.pth is not in site-packages: run the README install command")
        pytest.skip("theano_lowmem is not installed here (python -m pip install -e '.[test,plot,docs]')")
    with open(os.path.join(found[0], "theano_lowmem_startup.pth")) as fh, open(PTH) as src:
        assert fh.read() == src.read()


@pytest.mark.slow
@pytest.mark.parametrize("editable", [False, True], ids=["wheel", "editable"])
def test_pip_install_into_venv(tmp_path, editable):
    """``pip install [-e] .`` in a ``--system-site-packages`` venv puts the .pth into its site-packages."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    src = tmp_path / "src"   # a copy: a non-editable build must not leave build/ in the checkout
    subprocess.run(["cp", "-r", ROOT, str(src)], check=True)
    cmd = [py, "-m", "pip", "install", "--no-deps", "-q"] + (["-e", str(src)] if editable else [str(src)])
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    sp = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        capture_output=True, text=True, check=True).stdout.strip()
    assert os.path.exists(os.path.join(sp, "theano_lowmem_startup.pth"))
    env = {k: v for k, v in os.environ.items() if k not in ("THEANO_FLAGS", "PYTHONPATH")}
    env["THEANORC"] = str(tmp_path / "rc")
    (tmp_path / "rc").write_text(f"[global]\nbase_compiledir = {_cache()}\nlowmem_order = True\n")
    p = subprocess.run([py, "-c", "import theano, theano_lowmem, sys; from theano_lowmem import activate;"
                        "print(theano_lowmem.__file__, activate.enabled())"],
                       env=env, capture_output=True, text=True, cwd=str(tmp_path), timeout=300)
    out = _ok(p).split()
    assert out[-1] == "True" and out[-2].startswith(str(src) if editable else sp)
