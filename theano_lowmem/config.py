"""Every flag of theano_lowmem, declared once.

The flags are ordinary Theano config variables (``theano.config.lowmem_*``),
set like Theano's own: ``THEANO_FLAGS=lowmem_order=True`` or a ``[global]``
entry of a theanorc file.  They are registered with ``in_c_key=False``: none
of them changes generated C code, so none may invalidate the C module cache.

Importing this module does not import Theano; :func:`register_flags` does.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

_BOOL = {"True": True, "true": True, "1": True, "False": False, "false": False, "0": False}


def _parse_bool(name: str) -> Callable[[Any], bool]:
    def parse(val: Any) -> bool:
        if isinstance(val, bool):
            return val
        if isinstance(val, str) and val in _BOOL:
            return _BOOL[val]
        raise ValueError(f"{name}: expected one of True, False, true, false, 1, 0, got {val!r}")
    return parse


def _parse_positive_float(name: str, what: str) -> Callable[[Any], float]:
    def parse(val: Any) -> float:
        try:
            x = float(val) if not isinstance(val, bool) else math.nan
        except (TypeError, ValueError):
            x = math.nan
        if not (math.isfinite(x) and x > 0):
            raise ValueError(f"{name}: expected {what}, got {val!r}")
        return x
    return parse


def _parse_int(name: str, lo: int, what: str) -> Callable[[Any], int]:
    def parse(val: Any) -> int:
        x: int | None = None
        if isinstance(val, int) and not isinstance(val, bool):
            x = val
        elif isinstance(val, str):
            try:
                x = int(val.strip())
            except ValueError:
                x = None
        if x is None or x < lo:
            raise ValueError(f"{name}: expected {what}, got {val!r}")
        return x
    return parse


_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_bytes(val: Any, name: str = "lowmem_budget") -> int:
    """Bytes from ``val``: an int, or a string like ``'512MB'``, ``'4GB'``, ``'1.5GiB'``, ``'0'``.

    Examples
    --------
    >>> parse_bytes("512MB"), parse_bytes("4GiB"), parse_bytes(0)
    (512000000, 4294967296, 0)
    """
    import re
    if isinstance(val, int) and not isinstance(val, bool) and val >= 0:
        return val
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", val) if isinstance(val, str) else None
    if m is not None and m.group(2).upper() in _UNITS:
        return int(float(m.group(1)) * _UNITS[m.group(2).upper()])
    raise ValueError(f"{name}: expected a number of bytes >= 0, optionally with a unit "
                     f"(B, KB, MB, GB, TB, KiB, MiB, GiB, TiB), e.g. 512MB or 4GB; 0 means "
                     f"no budget; got {val!r}")


def _parse_budget(val: Any) -> str:
    """Validated, kept as written (the bytes come from :func:`parse_bytes`)."""
    parse_bytes(val)
    return str(val)


def _parse_choice(name: str, choices: tuple[str, ...]) -> Callable[[Any], str]:
    def parse(val: Any) -> str:
        if isinstance(val, str) and val in choices:
            return val
        raise ValueError(f"{name}: expected one of {', '.join(choices)}, got {val!r}")
    return parse


@dataclass(frozen=True)
class Flag:
    """One flag: name, default, help text and the parser that validates values."""

    name: str
    default: Any
    help: str
    parse: Callable[[Any], Any]


_SPECS: tuple[Flag, ...] = (
    Flag("lowmem_order", False,
         "Global switch. When true, every function compiled with the default mode or FAST_RUN "
         "gets the `lowmem` ordering pass and the cell-sharing linker `LowMemLinker`.",
         _parse_bool("lowmem_order")),
    Flag("lowmem_share", True,
         "When the switch is on, let the sharing linker give same-type intermediates with "
         "disjoint lifetimes one storage cell (false: order only).",
         _parse_bool("lowmem_share")),
    Flag("lowmem_time_budget", 0.25,
         "Scheduler budget per graph, in seconds of deterministic work (calibrated units, so the same graph always gets the same order; a wall-clock cap of 2x + 0.1 s is the only fallback). Past it the best order so far is kept (> 0).",
         _parse_positive_float("lowmem_time_budget", "a positive number of seconds")),
    Flag("lowmem_exact_max_nodes", 20,
         "Graphs with at most this many apply nodes are scheduled by the exact (optimal) "
         "search; larger ones by the heuristic (>= 0; 0 disables the exact search).",
         _parse_int("lowmem_exact_max_nodes", 0, "an integer >= 0")),
    Flag("lowmem_unknown_dim", 128,
         "Size assumed for a dimension that cannot be inferred at compile time (>= 1).",
         _parse_int("lowmem_unknown_dim", 1, "an integer >= 1")),
    Flag("lowmem_check_plan", False,
         "Run the plan checker at link time (order respects dependencies, no two live values "
         "share a cell); raises on a bad plan. For debugging; costs compile time.",
         _parse_bool("lowmem_check_plan")),
    Flag("lowmem_call_plan", True,
         "Plan at call time: at a function's first call, and whenever the shapes of its inputs "
         "match no cached plan, compute every intermediate's exact size from the real "
         "arguments and re-plan the order (sharing linker `LowMemLinker` only; false: plan "
         "once at compile time).",
         _parse_bool("lowmem_call_plan")),
    Flag("lowmem_plan_cache", 4,
         "Call-time plans kept per function, one per input-shape signature, least recently "
         "used dropped first (>= 1).",
         _parse_int("lowmem_plan_cache", 1, "an integer >= 1")),
    Flag("lowmem_arena", "gc_off",
         "One arena per call-time plan: intermediates of every shape and dtype get views "
         "of one allocation at offsets planned from their lifetimes, handed to the ops "
         "through their output cells. `gc_off` (functions with allow_gc=False), `always` "
         "(also allow_gc=True: the arena stays allocated between calls) or `off` (then "
         "same-Type cells are shared as before).",
         _parse_choice("lowmem_arena", ("gc_off", "always", "off"))),
    Flag("lowmem_budget", "0",
         "Memory budget per call in bytes (e.g. 512MB, 4GB, 1.5GiB; 0: none). When a call's "
         "planned peak (with allow_gc=False: the planned held bytes) exceeds it, "
         "`lowmem_budget_action` happens before anything is allocated.",
         _parse_budget),
    Flag("lowmem_budget_action", "warn",
         "What a call over `lowmem_budget` does: `warn` (once per shape signature) or "
         "`raise` (MemoryError naming the function, the shapes, the planned bytes and the "
         "budget).",
         _parse_choice("lowmem_budget_action", ("warn", "raise"))),
    Flag("lowmem_warn", True,
         "Warn when theano_lowmem falls back to Theano's own behaviour for a function.",
         _parse_bool("lowmem_warn")),
)

#: ``(name, default, help)`` of every flag, in declaration order (for the docs table).
FLAGS: list[tuple[str, Any, str]] = [(f.name, f.default, f.help) for f in _SPECS]
FLAG_BY_NAME: dict[str, Flag] = {f.name: f for f in _SPECS}


def register_flags() -> list[str]:
    """Add every flag to ``theano.config``.  Idempotent.

    A value the user set (``THEANO_FLAGS`` or theanorc) is validated *before*
    Theano's ``AddConfigVar`` consumes it, so a bad value raises the same clear
    ``ValueError`` on every attempt (``AddConfigVar`` pops the key from
    ``THEANO_FLAGS`` before filtering it: configparser.py:136-151, :281).

    Returns
    -------
    list of str
        Names registered by this call (empty when all were already there).

    Raises
    ------
    ValueError
        A flag has a bad value, e.g.
        ``lowmem_time_budget: expected a positive number of seconds, got 'abc'``.

    Examples
    --------
    >>> import theano
    >>> _ = register_flags()
    >>> register_flags(), type(theano.config.lowmem_time_budget).__name__
    ([], 'float')
    """
    import theano
    from theano.configparser import AddConfigVar, ConfigParam, fetch_val_for_key
    added = []
    for f in _SPECS:
        if hasattr(theano.config, f.name):
            continue
        try:
            f.parse(fetch_val_for_key(f.name))
        except KeyError:
            pass
        # ConfigParam calls `filter` on every value, the default and later assignments too.
        AddConfigVar(f.name, f.help, ConfigParam(f.default, filter=f.parse), in_c_key=False)
        added.append(f.name)
    return added


def flag_table_markdown() -> str:
    """The flags as a Markdown table (name, default, meaning) for the docs.

    Examples
    --------
    >>> print(flag_table_markdown().splitlines()[2])
    | `lowmem_order` | `False` | Global switch. When true, every function compiled with the default mode or FAST_RUN gets the `lowmem` ordering pass and the cell-sharing linker `LowMemLinker`. |
    """
    rows = ["| Flag | Default | Meaning |", "|---|---|---|"]
    rows += [f"| `{n}` | `{d}` | {h.replace('|', '/')} |" for n, d, h in FLAGS]
    return "\n".join(rows)
