"""Hypothesis strategies that build random Theano graphs for differential fuzzing.

A :class:`Program` is plain data (drawn by :func:`programs`); :func:`build`
turns it into fresh Theano variables, so every compilation mode gets its own
graph and its own shared variables.  Values carry a *kind* that fixes their
shape in terms of two dimensions: ``R`` (rows, free: drawn anew for every
call) and ``C`` (columns, fixed per program because shared variables hold
``(C, C)`` and ``(C,)`` arrays):

====  ========  ====================================
kind  shape     examples
====  ========  ====================================
M     (R, C)    inputs ``x``, ``y``; most elemwise
V     (C,)      input ``v``, shared ``b``, ``M.sum(0)``
Q     (C, C)    shared ``W``, ``dot(M.T, M)``
T     (C, R)    ``M.T``, ``M.reshape((C, R))``
K     (R,)      ``M.sum(1)``, ``dot(M, v)``
S     ()        shared ``s``, ``M.sum()``
====  ========  ====================================

Compile cost is kept bounded (every new C op costs a g++ run, ~1-3 s): the op
vocabulary and constants are fixed (``0.5``, ``1.0``, ``2.0``), every value is
float64, and ranks are at most 2.  Fused elemwise ``Composite`` ops are the
one open-ended source of new C code; programs are small (3-15 ops) to keep
them few, and derandomized CI runs reuse the cache.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from hypothesis import strategies as st

KINDS = "MVQTKS"
HALF, ONE, TWO = 0.5, 1.0, 2.0


# name -> (argument kinds, result kind, builder(T, *args)).  A kind "*" means any
# kind, and a result "=" the kind of the first argument.
OPS: dict[str, tuple[str, str, Callable]] = {
    # elemwise unary (fast_run makes chains of these inplace and fuses them)
    "exp": ("*", "=", lambda T, a: T.exp(a)),
    "tanh": ("*", "=", lambda T, a: T.tanh(a)),
    "log1p_abs": ("*", "=", lambda T, a: T.log1p(abs(a))),
    "sqr": ("*", "=", lambda T, a: T.sqr(a)),
    "neg": ("*", "=", lambda T, a: -a),
    "scale": ("*", "=", lambda T, a: a * HALF),
    "shift": ("*", "=", lambda T, a: a + ONE),
    # elemwise binary, same kind
    "add": ("**", "=", lambda T, a, b: a + b),
    "mul": ("**", "=", lambda T, a, b: a * b),
    "sub": ("**", "=", lambda T, a, b: a - b),
    "maximum": ("**", "=", lambda T, a, b: T.maximum(a, b)),
    # broadcasting
    "add_row": ("MV", "M", lambda T, a, b: a + b.dimshuffle("x", 0)),
    "mul_col": ("MK", "M", lambda T, a, b: a * b.dimshuffle(0, "x")),
    "sub_scalar": ("*S", "=", lambda T, a, s: a - s),
    "max_scalar": ("*S", "=", lambda T, a, s: T.maximum(a, s)),
    # dot / gemm / gemv
    "dot_MQ": ("MQ", "M", lambda T, a, b: T.dot(a, b)),
    "dot_TM": ("TM", "Q", lambda T, a, b: T.dot(a, b)),
    "dot_QQ": ("QQ", "Q", lambda T, a, b: T.dot(a, b)),
    "dot_MV": ("MV", "K", lambda T, a, b: T.dot(a, b)),
    "gemm": ("MMQ", "M", lambda T, a, b, c: a + HALF * T.dot(b, c)),
    "gemm_Q": ("QTM", "Q", lambda T, a, b, c: TWO * a - T.dot(b, c)),
    # reductions
    "sum0": ("M", "V", lambda T, a: a.sum(axis=0)),
    "sum1": ("M", "K", lambda T, a: a.sum(axis=1)),
    "max0": ("M", "V", lambda T, a: a.max(axis=0)),
    "mean1": ("M", "K", lambda T, a: a.mean(axis=1)),
    "sum_all": ("*", "S", lambda T, a: a.sum()),
    "max_all": ("M", "S", lambda T, a: a.max()),
    # views: transpose, reshape, dimshuffle, reversed slices
    "transpose": ("M", "T", lambda T, a: a.T),
    "untranspose": ("T", "M", lambda T, a: a.dimshuffle(1, 0)),
    "reshape_T": ("M", "T", lambda T, a: a.reshape((a.shape[1], a.shape[0]))),
    "reshape_M": ("T", "M", lambda T, a: a.reshape((a.shape[1], a.shape[0]))),
    "flip_rows": ("M", "M", lambda T, a: a[::-1]),
    "flip_cols": ("M", "M", lambda T, a: a[:, ::-1]),
    "row_col": ("V", "Q", lambda T, a: a.dimshuffle(0, "x") * a.dimshuffle("x", 0)),
    # subtensor updates (inplace-eligible after fast_run)
    "inc_tail": ("MM", "M", lambda T, a, b: T.inc_subtensor(a[1:], b[:-1])),
    "set_head": ("MM", "M", lambda T, a, b: T.set_subtensor(a[:1], b[-1:])),
    "set_col": ("MK", "M", lambda T, a, k: T.set_subtensor(a[:, 0], k)),
    # joins (Join allocates each call)
    "concat0": ("MM", "M", lambda T, a, b: T.concatenate([a, b], axis=0)[::2]),
    "concat1": ("MM", "M", lambda T, a, b: T.concatenate([a, b], axis=1)[:, 1::2]),
    "roll_rows": ("MM", "M", lambda T, a, b: T.concatenate([a[1:], b[:1]], axis=0)),
}
LAZY_OPS: dict[str, tuple[str, str, Callable]] = {
    "ifelse": ("SMM", "M", None),   # ifelse(s > 0, a, b): built in build()
}
SCAN_OPS: dict[str, tuple[str, str, Callable]] = {
    "scan_rows": ("MV", "V", None),  # fold over rows: acc <- tanh(acc * 0.5 + row)
}

# Inputs and shared variables every program starts from: (name, kind).
INPUTS = (("x", "M"), ("y", "M"), ("v", "V"))
SHARED = (("W", "Q"), ("b", "V"), ("s", "S"))
EXTRA_OUTPUTS = ("input", "input_T", "input_tail", "repeat", "borrow")


@dataclass(frozen=True)
class Program:
    """A random graph as data.

    ``steps[i] = (op name, argument value indices)``; value ``j`` is
    ``(INPUTS + SHARED)[j]`` for ``j < 6``, else the result of step
    ``j - 6``.  ``outputs`` are value indices, ``extras`` special outputs
    (:data:`EXTRA_OUTPUTS`), ``updates`` maps a shared variable's name to
    the value index of its new value.  ``C`` is the fixed column count.
    """

    steps: tuple[tuple[str, tuple[int, ...]], ...]
    outputs: tuple[int, ...]
    extras: tuple[str, ...] = ()
    updates: tuple[tuple[str, int], ...] = ()
    C: int = 3
    kinds: tuple[str, ...] = field(default=(), compare=False)

    def op_names(self) -> list[str]:
        return [s[0] for s in self.steps]


def _spec(name: str) -> tuple[str, str, Callable]:
    return OPS.get(name) or LAZY_OPS.get(name) or SCAN_OPS[name]


@st.composite
def programs(draw, min_ops: int = 3, max_ops: int = 15, lazy: bool = False, scan: bool = False,
             max_C: int = 5) -> Program:
    """Strategy: a :class:`Program` of ``min_ops``..``max_ops`` steps.

    ``lazy``/``scan`` add ``ifelse``/``scan`` to the vocabulary (and make at
    least one such step likely by drawing it first with probability 1/2).
    """
    table = dict(OPS)
    if lazy:
        table.update(LAZY_OPS)
    if scan:
        table.update(SCAN_OPS)
    names = sorted(table)
    kinds = [k for _, k in INPUTS + SHARED]
    steps: list[tuple[str, tuple[int, ...]]] = []
    n = draw(st.integers(min_ops, max_ops))
    special = sorted(set(table) - set(OPS))
    for i in range(n):
        have = set(kinds)
        usable = [m for m in names if all(k == "*" or k in have for k in table[m][0])]
        if i == 0 and special and draw(st.booleans()):
            name = draw(st.sampled_from(special))
        else:
            name = draw(st.sampled_from(usable))
        argk, resk, _ = table[name]
        first_kind = None
        args = []
        for j, ak in enumerate(argk):
            want = first_kind if (ak == "*" and j > 0 and argk[0] == "*") else ak
            pool = [v for v, k in enumerate(kinds) if want == "*" or k == want]
            fresh = [v for v in pool if v < len(INPUTS)]
            if fresh and draw(st.integers(0, 3)) == 0:
                # a new branch from an input: independent temporaries whose cells can be shared
                idx = draw(st.sampled_from(fresh))
            else:   # shrinks towards recent values: deep rather than wide graphs
                idx = draw(st.integers(0, len(pool) - 1).map(lambda t, p=pool: p[len(p) - 1 - t]))
            args.append(idx)
            if j == 0:
                first_kind = kinds[idx]
        steps.append((name, tuple(args)))
        kinds.append(first_kind if resk == "=" else resk)
    base = len(INPUTS) + len(SHARED)
    computed = list(range(base, len(kinds)))
    outs = draw(st.lists(st.sampled_from(computed), min_size=1, max_size=3))
    if draw(st.booleans()):   # the last step always reachable: deep graphs
        outs.append(computed[-1])
    extras = tuple(draw(st.lists(st.sampled_from(EXTRA_OUTPUTS), max_size=2, unique=True)))
    updates = []
    for name, k in SHARED:
        cands = [v for v in computed if kinds[v] == k]
        if cands and draw(st.booleans()):
            updates.append((name, draw(st.sampled_from(cands))))
    C = draw(st.integers(1, max_C))
    return Program(tuple(steps), tuple(dict.fromkeys(outs)), extras, tuple(updates), C, tuple(kinds))


@dataclass
class Built:
    """A built program: what ``theano.function`` needs, plus the shared variables."""

    inputs: list
    outputs: list
    updates: list
    shared: dict[str, Any]


def shared_values(program: Program, seed: int) -> dict[str, np.ndarray]:
    """Initial values of the shared variables (deterministic in ``seed``)."""
    rng = np.random.RandomState(seed)
    C = program.C
    return {"W": rng.uniform(-1, 1, (C, C)), "b": rng.uniform(-1, 1, (C,)), "s": np.asarray(rng.uniform(-1, 1))}


def input_values(program: Program, R: int, seed: int) -> list[np.ndarray]:
    """Values for ``x`` (R, C), ``y`` (R, C), ``v`` (C,)."""
    rng = np.random.RandomState(seed)
    C = program.C
    return [rng.uniform(-2, 2, (R, C)), rng.uniform(-2, 2, (R, C)), rng.uniform(-2, 2, (C,))]


def build(program: Program, seed: int = 0) -> Built:
    """Fresh Theano variables for ``program`` (new shared variables each time)."""
    import theano
    import theano.tensor as T
    from theano.ifelse import ifelse
    x, y, v = T.matrix("x"), T.matrix("y"), T.vector("v")
    init = shared_values(program, seed)
    shared = {k: theano.shared(init[k], name=k) for k, _ in SHARED}
    vals: list = [x, y, v] + [shared[k] for k, _ in SHARED]
    for name, args in program.steps:
        a = [vals[i] for i in args]
        if name == "ifelse":
            vals.append(ifelse(T.gt(a[0], 0), a[1], a[2]))
        elif name == "scan_rows":
            out, _ = theano.scan(lambda row, acc: T.tanh(acc * HALF + row), sequences=a[0], outputs_info=a[1])
            vals.append(out[-1])
        else:
            vals.append(_spec(name)[2](T, *a))
    outputs: list = [vals[i] for i in program.outputs]
    for e in program.extras:
        if e == "input":
            outputs.append(x)
        elif e == "input_T":
            outputs.append(x.T)
        elif e == "input_tail":
            outputs.append(x[1:])
        elif e == "repeat":
            outputs.append(outputs[0])
        elif e == "borrow":
            outputs.append(theano.Out(vals[program.outputs[-1]] * TWO, borrow=True))
    updates = [(shared[k], vals[i]) for k, i in program.updates]
    return Built([x, y, v], outputs, updates, shared)


BRANCH_OPS = ("exp", "tanh", "log1p_abs", "sqr", "neg", "scale", "shift", "flip_rows", "dot_MQ")
REDUCE_OPS = ("sum0", "max0")


@st.composite
def branchy_programs(draw, max_branches: int = 5, max_C: int = 5) -> Program:
    """Strategy: 2..``max_branches`` branches, each a short chain from input ``x`` or ``y``
    reduced to a ``(C,)`` vector, the vectors summed.  Every branch makes ``(R, C)``
    temporaries that die at its reduction: what the sharing linker shares."""
    steps: list[tuple[str, tuple[int, ...]]] = []
    base = len(INPUTS) + len(SHARED)
    reduced: list[int] = []
    for _ in range(draw(st.integers(2, max_branches))):
        cur = draw(st.sampled_from([0, 1]))
        for _ in range(draw(st.integers(1, 3))):
            name = draw(st.sampled_from(BRANCH_OPS))
            steps.append((name, (cur, 3) if name == "dot_MQ" else (cur,)))
            cur = base + len(steps) - 1
        if draw(st.booleans()):   # a binary op with the other input keeps the branch alive longer
            steps.append((draw(st.sampled_from(["add", "mul", "maximum"])), (cur, draw(st.sampled_from([0, 1])))))
            cur = base + len(steps) - 1
        steps.append((draw(st.sampled_from(REDUCE_OPS)), (cur,)))
        reduced.append(base + len(steps) - 1)
    acc = reduced[0]
    for r in reduced[1:]:
        steps.append(("add", (acc, r)))
        acc = base + len(steps) - 1
    C = draw(st.integers(1, max_C))
    return Program(tuple(steps), (acc,), (), (), C)
