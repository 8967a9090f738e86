"""The global switch: make Theano's default and FAST_RUN modes use theano_lowmem.

Theano cannot be extended through flags (``optimizer=``/``linker=`` are
closed enums and ``optimizer_including`` is frozen after import; see
THEANO_FACTS §4), so the switch edits Theano's registries in place:

* ``optdb.add_tags('lowmem', 'fast_run')``: every ``Query`` that includes
  ``fast_run`` now selects the pass (default mode, ``'FAST_RUN'``, DebugMode,
  scan inner graphs).  ``Mode.optimizer`` queries optdb on every access
  (compile/mode.py:300-306), so existing Mode objects pick it up too.
* ``predefined_linkers['cvm'|'cvm_nogc'|'vm'|'vm_nogc']`` become
  ``LowMemLinker`` instances with the same constructor arguments.
* ``predefined_modes['FAST_RUN']`` is rebuilt: it holds a linker *instance*
  resolved at construction (compile/mode.py:381-390); ``FAST_COMPILE``'s own
  ``VM_Linker`` instance becomes a ``LowMemLinker`` with the same arguments.
* ``instantiated_default_mode = None`` drops the cached default mode
  (compile/mode.py:395-445).

:func:`disable` puts the original objects back.
"""
from __future__ import annotations

from typing import Any

LINKER_NAMES = ("cvm", "cvm_nogc", "vm", "vm_nogc")
OPT_NAME = "lowmem"
_saved: dict[str, Any] | None = None   # what enable() replaced; None while disabled


def _linker_kwargs(linker: Any) -> dict[str, Any]:
    """Constructor arguments of a ``VM_Linker`` (:func:`theano_lowmem.scans.linker_kwargs`)."""
    from .scans import linker_kwargs
    return linker_kwargs(linker)


def enabled() -> bool:
    """True while the switch is on."""
    return _saved is not None


def enable(share: bool | None = None) -> None:
    """Turn the switch on.  Idempotent.

    Parameters
    ----------
    share : bool, optional
        Sets ``theano.config.lowmem_share`` (restored by :func:`disable`);
        ``None`` keeps the current value.

    Raises
    ------
    RuntimeError
        The ``lowmem`` pass is not registered in optdb (``opt.register()``).

    Examples
    --------
    >>> import theano_lowmem.activate as act
    >>> from theano.compile import mode as M
    >>> was = act.enabled()
    >>> act.enable(); type(M.predefined_linkers['cvm']).__name__
    'LowMemLinker'
    >>> act.disable(); type(M.predefined_linkers['cvm']).__name__
    'VM_Linker'
    >>> act.enable() if was else None
    """
    global _saved
    import theano
    from theano.compile import mode as M
    from .storage_reuse import LowMemLinker
    if _saved is None:
        if OPT_NAME not in M.optdb._names:
            raise RuntimeError("theano_lowmem: optdb has no 'lowmem' pass; "
                               "call theano_lowmem.opt.register() first")
        obj = next(iter(M.optdb.__db__[OPT_NAME]))
        saved: dict[str, Any] = {
            "linkers": {k: M.predefined_linkers[k] for k in LINKER_NAMES},
            "fast_run_mode": M.predefined_modes["FAST_RUN"],
            "fast_compile_mode": M.predefined_modes["FAST_COMPILE"],
            "tagged": obj in M.optdb.__db__["fast_run"],
        }
        if not saved["tagged"]:
            M.optdb.add_tags(OPT_NAME, "fast_run")
        for k, lk in saved["linkers"].items():
            M.predefined_linkers[k] = LowMemLinker(**_linker_kwargs(lk))
        fr = saved["fast_run_mode"]   # provided_linker is the name 'cvm': resolves to ours now
        M.predefined_modes["FAST_RUN"] = type(fr)(fr.provided_linker, fr.provided_optimizer)
        # FAST_COMPILE holds its own VM_Linker instance (compile/mode.py:381-382): same
        # arguments, our class (it gets the sharing, not the pass: fast_compile has no
        # fast_run tag), so every default-built mode links through LowMemLinker.
        fc = saved["fast_compile_mode"]
        if type(fc.linker) is theano.gof.vm.VM_Linker:
            M.predefined_modes["FAST_COMPILE"] = type(fc)(
                LowMemLinker(**_linker_kwargs(fc.linker)), fc.provided_optimizer)
        _saved = saved
    if share is not None:
        _saved.setdefault("share", theano.config.lowmem_share)
        theano.config.lowmem_share = bool(share)
    M.instantiated_default_mode = None


def disable() -> None:
    """Turn the switch off and restore Theano's objects exactly.  Idempotent."""
    global _saved
    if _saved is None:
        return
    import theano
    from theano.compile import mode as M
    saved, _saved = _saved, None
    M.predefined_linkers.update(saved["linkers"])
    M.predefined_modes["FAST_RUN"] = saved["fast_run_mode"]
    M.predefined_modes["FAST_COMPILE"] = saved["fast_compile_mode"]
    obj = next(iter(M.optdb.__db__[OPT_NAME]))
    if not saved["tagged"] and obj in M.optdb.__db__["fast_run"]:
        M.optdb.remove_tags(OPT_NAME, "fast_run")
    if "share" in saved:
        theano.config.lowmem_share = saved["share"]
    M.instantiated_default_mode = None


def apply_flags() -> bool:
    """Turn the switch on when ``theano.config.lowmem_order`` is true.

    Called by ``import theano_lowmem``.  Never turns it off (a program may have
    called :func:`enable` itself).  Returns :func:`enabled`.
    """
    import theano
    if theano.config.lowmem_order:
        enable()
    return enabled()
