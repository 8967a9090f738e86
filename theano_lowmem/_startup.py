"""Interpreter start-up hook of theano_lowmem.

``theano_lowmem.pth`` (installed into site-packages) loads this file at every
interpreter start, *without* importing the ``theano_lowmem`` package (whose
``__init__`` imports Theano), and calls :func:`run_from_pth`.  It must stay
cheap: no numpy or Theano import, only environment checks, a few ``stat``
calls and, when they exist, a read of the small theanorc files.

Three jobs, all done before Theano is imported:

1. ``blas.ldflags`` default.  Theano 1.0.5 on numpy < 1.24 dies at
   ``import theano`` (``numpy.distutils.__config__`` has no ``blas_opt_info``)
   unless ``blas.ldflags`` is set.  When neither ``THEANO_FLAGS`` nor a
   theanorc file sets it, append ``blas.ldflags=-lopenblas`` to
   ``THEANO_FLAGS`` if a linkable ``libopenblas.so`` is in a standard library
   directory, else ``blas.ldflags=`` (Theano's numpy C-API fallback).
2. Scan fix (Python >= 3.11 only; opt out with ``THEANO_LOWMEM_NO_SCANFIX=1``).
   Theano's bundled ``scan_perform.c`` (Cython 0.28) does not compile on 3.11,
   and ``Scan.make_thunk`` falls back to the Python ``Scan.execute`` only on
   ``ImportError`` (theano/scan_module/scan_op.py:925 and :953).  A ``None``
   entry in ``sys.modules`` turns ``from . import scan_perform_ext`` into that
   ``ImportError``.
3. Zero-code activation.  When one of our flags appears in ``THEANO_FLAGS``
   or a theanorc file, a one-shot ``sys.meta_path`` finder wraps the loading
   of the ``theano`` package: Theano's own ``exec_module`` runs with exactly
   its "does not recognise this flag: lowmem_..." warnings for *our* flag
   names ignored, then ``theano_lowmem`` is imported (it registers the flags
   and, with ``lowmem_order=True``, flips the global switch).

Set ``THEANO_LOWMEM_DEBUG=1`` to see errors of the hook instead of having
them swallowed (a broken hook must never break the interpreter).
"""
from __future__ import annotations

import os
import sys

#: Our flag names, in the order of ``theano_lowmem.config.FLAGS`` (a test
#: checks that the two agree; this copy exists because the hook cannot import
#: ``theano_lowmem.config`` without importing Theano).
FLAG_NAMES: tuple[str, ...] = (
    "lowmem_order", "lowmem_share", "lowmem_time_budget",
    "lowmem_exact_max_nodes", "lowmem_unknown_dim", "lowmem_check_plan",
    "lowmem_call_plan", "lowmem_plan_cache", "lowmem_arena", "lowmem_budget",
    "lowmem_budget_action",
    "lowmem_warn")
SCANFIX_OPTOUT = "THEANO_LOWMEM_NO_SCANFIX"
DEBUG_ENV = "THEANO_LOWMEM_DEBUG"
SCAN_EXT = "theano.scan_module.scan_perform_ext"
UNRECOGNISED = "Theano does not recognise this flag: "

_state: dict[str, object] = {}   # what prepare_environment / the hook did


def parse_theano_flags(flags: str) -> dict[str, str]:
    """Parse a ``THEANO_FLAGS`` string the way Theano does.

    Same tokenizer as ``theano.configparser.parse_config_string``
    (``shlex``, posix, ``,`` as the only separator); entries without ``=`` are
    dropped and later entries win.

    Examples
    --------
    >>> parse_theano_flags("floatX=float32, blas.ldflags=,lowmem_order=True")
    {'floatX': 'float32', 'blas.ldflags': '', 'lowmem_order': 'True'}
    """
    if not flags.strip():
        return {}
    import shlex
    lex = shlex.shlex(flags, posix=True)
    lex.whitespace, lex.whitespace_split = ",", True
    out: dict[str, str] = {}
    for item in lex:
        k, eq, v = item.strip().partition("=")
        if eq:
            out[k] = v
    return out


def theanorc_files() -> list[str]:
    """The theanorc files Theano reads (configparser.py:63-71), existing or not.

    ``THEANORC`` is an ``os.pathsep``-separated list; the default is
    ``~/.theanorc`` (plus ``~/.theanorc.txt`` on Windows only).
    """
    files = [os.path.expanduser(s) for s in os.environ.get("THEANORC", "~/.theanorc").split(os.pathsep)]
    if "THEANORC" not in os.environ and sys.platform == "win32":
        files.append(os.path.expanduser("~/.theanorc.txt"))
    return files


def theanorc_keys() -> set[str]:
    """Keys set in the existing theanorc files, spelled as Theano's flags.

    ``[global] x`` becomes ``x``, ``[blas] ldflags`` becomes ``blas.ldflags``.
    An unreadable or malformed file contributes nothing (Theano itself will
    complain about it).
    """
    files = [f for f in theanorc_files() if os.path.isfile(f)]
    if not files:
        return set()
    import configparser
    keys: set[str] = set()
    for f in files:
        cp = configparser.RawConfigParser()
        try:
            cp.read(f)
        except (configparser.Error, OSError, UnicodeDecodeError):
            continue
        for sec in cp.sections():
            keys.update(o if sec == "global" else f"{sec}.{o}" for o in cp.options(sec))
    return keys


def user_flag_keys() -> set[str]:
    """Every flag key the user set, in ``THEANO_FLAGS`` or a theanorc file."""
    return set(parse_theano_flags(os.environ.get("THEANO_FLAGS", ""))) | theanorc_keys()


def _lib_dirs() -> list[str]:
    """Standard directories where ``ld`` finds ``-lopenblas`` (no subprocess)."""
    roots = ["/usr/local/lib64", "/usr/local/lib", "/usr/lib64", "/usr/lib", "/lib64", "/lib"]
    dirs: list[str] = []
    for r in roots:
        dirs.append(r)
        try:   # multiarch dirs, e.g. /usr/lib/x86_64-linux-gnu (what a glob of */-linux-gnu finds)
            dirs.extend(os.path.join(r, d) for d in sorted(os.listdir(r)) if d.endswith(("-linux-gnu", "-linux-gnueabihf")))
        except OSError:
            pass
    return dirs


def find_openblas() -> str | None:
    """Path of a linkable ``libopenblas.so`` (not a dangling link) or ``None``.

    Examples
    --------
    >>> p = find_openblas()
    >>> p is None or p.endswith("libopenblas.so")
    True
    """
    for d in _lib_dirs():
        p = os.path.join(d, "libopenblas.so")
        if os.path.exists(p):   # follows symlinks: Debian's alternatives chain
            return p
    return None


def default_ldflags() -> str:
    """``-lopenblas`` when :func:`find_openblas` finds it, else ``''``."""
    return "-lopenblas" if find_openblas() else ""


def add_theano_flag(key: str, value: str) -> None:
    """Append ``key=value`` to ``os.environ['THEANO_FLAGS']``."""
    cur = os.environ.get("THEANO_FLAGS", "").strip()
    os.environ["THEANO_FLAGS"] = f"{cur.rstrip(',')},{key}={value}" if cur.rstrip(",") else f"{key}={value}"


def apply_scan_fix() -> bool:
    """Make Scan use its Python ``execute`` on Python >= 3.11.

    Returns True when the fix is in effect.  Skipped on older Pythons (where
    the bundled Cython code compiles) and when ``THEANO_LOWMEM_NO_SCANFIX`` is
    set to a non-empty value other than ``0``.
    """
    if sys.version_info < (3, 11) or os.environ.get(SCANFIX_OPTOUT, "0") not in ("", "0"):
        return False
    sys.modules.setdefault(SCAN_EXT, None)
    return sys.modules[SCAN_EXT] is None


# THEANO_FLAGS=linker=<ours>: Theano's `linker` flag is a closed enum (configdefaults.py:565-569)
# that rejects any name it does not know at import, before a plugin can register one.
LOWMEM_LINKERS = {"cvm_lowmem": "cvm", "cvm_lowmem_nogc": "cvm_nogc",
                  "vm_lowmem": "vm", "vm_lowmem_nogc": "vm_nogc"}


def translate_linker_flag() -> str | None:
    """Read ``THEANO_FLAGS=linker=cvm_lowmem[_nogc]|vm_lowmem[_nogc]`` as Theano's own
    linker name plus ``lowmem_order=True`` (the global switch makes that name a
    ``LowMemLinker``), appended to ``THEANO_FLAGS`` (later entries win).  Returns the
    name translated, or None.  Only before Theano is imported; a theanorc entry is
    left to Theano (which rejects it).

    Examples
    --------
    >>> sorted(LOWMEM_LINKERS)[0]
    'cvm_lowmem'
    """
    if "theano" in sys.modules:
        return None
    flags = parse_theano_flags(os.environ.get("THEANO_FLAGS", ""))
    name = flags.get("linker")
    if name not in LOWMEM_LINKERS:
        return None
    add_theano_flag("linker", LOWMEM_LINKERS[name])
    if "lowmem_order" not in flags:
        add_theano_flag("lowmem_order", "True")
    return name


def prepare_environment(keys: set[str] | None = None) -> dict[str, object]:
    """Set the ``blas.ldflags`` default and apply the scan fix.  Idempotent.

    Never overrides a user's ``blas.ldflags``; does not touch ``THEANO_FLAGS``
    once Theano has been imported (it has parsed the flags by then).

    Parameters
    ----------
    keys : set of str, optional
        The user's flag keys (:func:`user_flag_keys`, computed when omitted).

    Returns
    -------
    dict
        ``ldflags``: the value added to ``THEANO_FLAGS`` (``None`` if nothing
        was added), ``scanfix``: whether the scan fix is in effect.

    Examples
    --------
    >>> sorted(prepare_environment())
    ['ldflags', 'scanfix']
    """
    if "linker" not in _state:
        _state["linker"] = translate_linker_flag()
    if "ldflags" not in _state:
        added = None
        if "theano" not in sys.modules and "blas.ldflags" not in (user_flag_keys() if keys is None else keys):
            added = default_ldflags()
            add_theano_flag("blas.ldflags", added)
        _state["ldflags"] = added
    _state["scanfix"] = apply_scan_fix()
    return {"ldflags": _state["ldflags"], "scanfix": _state["scanfix"]}


def unrecognised_flag_pattern() -> str:
    """Regex matching Theano's unknown-flag warning for exactly our flag names.

    Examples
    --------
    >>> import re
    >>> p = re.compile(unrecognised_flag_pattern())
    >>> bool(p.match(UNRECOGNISED + "lowmem_order")), bool(p.match(UNRECOGNISED + "lowmem_ordr"))
    (True, False)
    """
    # warnings compiles the message with re.I: keep the flag names case-sensitive.
    return UNRECOGNISED + "(?-i:" + "|".join(FLAG_NAMES) + r")\Z"


class TheanoImportHook:
    """One-shot ``sys.meta_path`` finder wrapping the import of ``theano``.

    Finds ``theano`` through the other finders, then patches *that* spec's
    loader instance so that its ``exec_module`` runs Theano's module code with
    our unknown-flag warnings ignored and afterwards imports ``theano_lowmem``.
    The loader keeps its type (``__loader__`` stays a ``SourceFileLoader``).
    """

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "theano":
            return None
        uninstall_activation_hook()
        for finder in list(sys.meta_path):
            find = getattr(finder, "find_spec", None)
            spec = find(fullname, path, target) if find else None
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        original = loader.exec_module

        def exec_module(module):
            import warnings
            # Not warnings.catch_warnings(): it would also drop the filters that
            # modules imported meanwhile install (numpy adds "size changed" ones).
            warnings.filterwarnings("ignore", message=unrecognised_flag_pattern(), category=UserWarning)
            entry = warnings.filters[0]
            try:
                original(module)
            finally:
                if "exec_module" in vars(loader):
                    del loader.exec_module
                if entry in warnings.filters:
                    warnings.filters.remove(entry)
                    getattr(warnings, "_filters_mutated", lambda: None)()
            # Theano's code has run completely (sys.modules['theano'] is usable);
            # theano_lowmem registers the flags and applies lowmem_order.
            import importlib
            importlib.import_module("theano_lowmem")
            _state["activated"] = True

        try:
            loader.exec_module = exec_module
        except (AttributeError, TypeError):   # a loader without __dict__: import theano unwrapped
            pass
        return spec


_HOOK = TheanoImportHook()


def install_activation_hook() -> bool:
    """Put the finder first on ``sys.meta_path`` unless Theano is already imported."""
    if "theano" in sys.modules:
        return False
    if not any(f is _HOOK for f in sys.meta_path):
        sys.meta_path.insert(0, _HOOK)
    return True


def uninstall_activation_hook() -> None:
    """Remove the finder from ``sys.meta_path`` (no-op when absent)."""
    sys.meta_path[:] = [f for f in sys.meta_path if f is not _HOOK]


def wants_activation(keys: set[str] | None = None) -> bool:
    """True when one of our flags is set in ``THEANO_FLAGS`` or a theanorc."""
    keys = user_flag_keys() if keys is None else keys
    return any(k in keys for k in FLAG_NAMES)


def run_from_pth() -> None:
    """Entry point of ``theano_lowmem.pth``: all three jobs, errors swallowed."""
    try:
        if "linker" not in _state:
            _state["linker"] = translate_linker_flag()
        keys = user_flag_keys()
        prepare_environment(keys)
        if wants_activation(keys):
            install_activation_hook()
    except Exception:   # the interpreter must start whatever happens here
        if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
            raise
