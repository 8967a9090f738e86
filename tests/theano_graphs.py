"""Hypothesis strategies that build random Theano graphs for differential fuzzing.

A :class:`Program` is plain data (drawn by :func:`programs`); :func:`build`
turns it into fresh Theano variables, so every compilation mode gets its own
graph and its own shared variables.  Every value has a *kind* (its shape in
terms of the per-call dimensions ``R``, ``H``, ``W`` and the per-program
channel/column count ``C``) and a *dtype*:

=====  ==================================  ===========================================
kind   shape                               examples
=====  ==================================  ===========================================
M      (R, C)                              inputs ``x``, ``y``; ``im.mean((2, 3))``
V      (C,)                                input ``v``, shared ``b``, ``M.sum(0)``
Q      (C, C)                              shared ``W``, ``dot(M.T, M)``
T      (C, R)                              ``M.T``, ``M.reshape((C, R))``
K      (R,)                                ``M.sum(1)``, ``argmax(M, 1)`` (int64)
S      ()                                  shared ``s`` (float64), ``n`` (int64)
X      (R, C, H, W)                        input ``im`` (float32), ``conv2d(.., 'half')``
Xv     (R, C, H-2, W-2)                    ``conv2d(X, Wc, 'valid')``
Xp     (R, C, H//2, W//2)                  ``pool_2d(X, (2, 2))``
Xvp    (R, C, (H-2)//2, (W-2)//2)          ``pool_2d(Xv, (2, 2))``
F3/F1  (C, C, 3, 3) / (C, C, 1, 1)         shared filters ``Wc``/``Wp`` (float32), their grads
=====  ==================================  ===========================================

dtypes are float64, float32, int64, int8 and bool.  An op declares, per argument,
the kinds and dtypes it accepts (``"M:f"``: kind M, any float; ``"=:="``: the
kind and dtype of the first argument; ``"X*:4"``: any image kind, float32) and
how its result's kind and dtype follow; :func:`programs` only draws well-typed
steps, and :func:`build` checks that every built value has the predicted
dtype and rank.

Vocabularies: :data:`OPS` (the float 2-D world: elemwise, broadcasting,
Dot22/Gemm/Gemv, reductions, views, inc/set_subtensor, joins),
:data:`MIXED_OPS` (comparisons ``gt``/``eq`` giving bool, ``switch``, casts
to float32/float64/int8/int64, int64 arithmetic, ``argmax``, counts,
``AdvancedSubtensor1`` with int64 indices), :data:`IMAGE_OPS` (rank-4 float32:
``conv2d`` 'half'/'valid' with 3x3 and 1x1 kernels, ``pool_2d`` max and
average with ``ignore_border=True``, ``T.grad`` through conv (input and
filter gradients) and pool, gradients of a program's scalar with respect to
``im`` and ``Wc``, bridges to and from the 2-D world), :data:`LAZY_OPS`
(ifelse) and :data:`SCAN_OPS`.

Compile cost is kept bounded (every new C op costs a g++ run, ~1-3 s): the op
vocabulary and constants are fixed (``0``, ``0.5``, ``1``, ``2``, pool window
``(2, 2)``, kernels 3x3 and 1x1), and programs are small (3-15 ops).  Fused
elemwise ``Composite`` ops are the one open-ended source of new C code;
derandomized CI runs draw the same programs every run, so a warm cache covers
them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from hypothesis import strategies as st

HALF, ONE, TWO = 0.5, 1.0, 2.0
IMAGE_KINDS = ("X", "Xv", "Xp", "Xvp")
RANK = {"M": 2, "V": 1, "Q": 2, "T": 2, "K": 1, "S": 0, "F3": 4, "F1": 4,
        **{k: 4 for k in IMAGE_KINDS}}
FLOATS = ("float32", "float64")
# dtype class of an argument -> accepted dtypes ("=": the first argument's dtype)
DTYPE_CLASSES = {"f": FLOATS, "4": ("float32",), "8": ("float64",), "b": ("bool",),
                 "i": ("int64",), "d": ("bool", "int8", "int64"),
                 "n": FLOATS + ("bool", "int8", "int64")}
POOL_OF = {"X": "Xp", "Xv": "Xvp"}


@dataclass(frozen=True)
class Op:
    """``args``: one ``(kinds, dtype class)`` per argument, kinds a tuple of kind
    names or ``("*",)`` (any) or ``("=",)`` (the first argument's kind);
    ``kind``: result kind (``"="``: the first argument's, a dict: by the first
    argument's kind); ``dtype``: result dtype (``"="``: the first argument's,
    ``"up"``: numpy's promotion of all arguments', else a dtype name)."""

    args: tuple[tuple[tuple[str, ...], str], ...]
    kind: Any
    dtype: str
    fn: Callable | None

    def result(self, kinds: list[str], dtypes: list[str]) -> tuple[str, str]:
        k = kinds[0] if self.kind == "=" else self.kind.get(kinds[0]) if isinstance(self.kind, dict) \
            else self.kind
        d = dtypes[0] if self.dtype == "=" else \
            np.result_type(*[np.dtype(t) for t in dtypes]).name if self.dtype == "up" else self.dtype
        return k, d


def op(args: str, kind: Any, dtype: str, fn: Callable | None) -> Op:
    """``op("M:f Q:=", "M", "up", fn)``; ``X*`` in a kind list means every image kind."""
    parsed = []
    for tok in args.split():
        kinds, dt = tok.split(":")
        ks = tuple(k2 for k in kinds.split("|") for k2 in (IMAGE_KINDS if k == "X*" else (k,)))
        parsed.append((ks, dt))
    return Op(tuple(parsed), kind, dtype, fn)


def _conv(T, a, w, mode):
    from theano.tensor.nnet import conv2d
    return conv2d(a, w, border_mode=mode)


def _pool(T, a, mode):
    from theano.tensor.signal.pool import pool_2d
    return pool_2d(a, ws=(2, 2), ignore_border=True, mode=mode)


# name -> Op.  Builders take (T, *argument variables).
OPS: dict[str, Op] = {
    # elemwise unary (fast_run makes chains of these inplace and fuses them)
    "exp": op("*:f", "=", "=", lambda T, a: T.exp(a)),
    "tanh": op("*:f", "=", "=", lambda T, a: T.tanh(a)),
    "log1p_abs": op("*:f", "=", "=", lambda T, a: T.log1p(abs(a))),
    "sqr": op("*:f", "=", "=", lambda T, a: T.sqr(a)),
    "neg": op("*:f", "=", "=", lambda T, a: -a),
    "scale": op("*:f", "=", "=", lambda T, a: a * HALF),
    "shift": op("*:f", "=", "=", lambda T, a: a + ONE),
    # elemwise binary, same kind (float32 with float64 upcasts)
    "add": op("*:f =:f", "=", "up", lambda T, a, b: a + b),
    "mul": op("*:f =:f", "=", "up", lambda T, a, b: a * b),
    "sub": op("*:f =:f", "=", "up", lambda T, a, b: a - b),
    "maximum": op("*:f =:f", "=", "up", lambda T, a, b: T.maximum(a, b)),
    # broadcasting
    "add_row": op("M:f V:f", "M", "up", lambda T, a, b: a + b.dimshuffle("x", 0)),
    "mul_col": op("M:f K:f", "M", "up", lambda T, a, b: a * b.dimshuffle(0, "x")),
    "sub_scalar": op("*:f S:f", "=", "up", lambda T, a, s: a - s),
    "max_scalar": op("*:f S:f", "=", "up", lambda T, a, s: T.maximum(a, s)),
    # dot / gemm / gemv
    "dot_MQ": op("M:f Q:f", "M", "up", lambda T, a, b: T.dot(a, b)),
    "dot_TM": op("T:f M:f", "Q", "up", lambda T, a, b: T.dot(a, b)),
    "dot_QQ": op("Q:f Q:f", "Q", "up", lambda T, a, b: T.dot(a, b)),
    "dot_MV": op("M:f V:f", "K", "up", lambda T, a, b: T.dot(a, b)),
    "gemm": op("M:f M:f Q:f", "M", "up", lambda T, a, b, c: a + HALF * T.dot(b, c)),
    "gemm_Q": op("Q:f M:f M:f", "Q", "up", lambda T, a, b, c: TWO * a - T.dot(b.T, c)),
    # reductions
    "sum0": op("M:f", "V", "=", lambda T, a: a.sum(axis=0)),
    "sum1": op("M:f", "K", "=", lambda T, a: a.sum(axis=1)),
    "max0": op("M:f", "V", "=", lambda T, a: a.max(axis=0)),
    "mean1": op("M:f", "K", "=", lambda T, a: a.mean(axis=1)),
    "sum_all": op("*:f", "S", "=", lambda T, a: a.sum()),
    "max_all": op("M:f", "S", "=", lambda T, a: a.max()),
    # views: transpose, reshape, dimshuffle, reversed slices (any dtype)
    "transpose": op("M:n", "T", "=", lambda T, a: a.T),
    "untranspose": op("T:n", "M", "=", lambda T, a: a.dimshuffle(1, 0)),
    "reshape_T": op("M:n", "T", "=", lambda T, a: a.reshape((a.shape[1], a.shape[0]))),
    "reshape_M": op("T:n", "M", "=", lambda T, a: a.reshape((a.shape[1], a.shape[0]))),
    "flip_rows": op("M:n", "M", "=", lambda T, a: a[::-1]),
    "flip_cols": op("M:n", "M", "=", lambda T, a: a[:, ::-1]),
    "row_col": op("V:f", "Q", "=", lambda T, a: a.dimshuffle(0, "x") * a.dimshuffle("x", 0)),
    # subtensor updates (inplace-eligible after fast_run); the value must fit the dtype
    "inc_tail": op("M:f M:=", "M", "=", lambda T, a, b: T.inc_subtensor(a[1:], b[:-1])),
    "set_head": op("M:n M:=", "M", "=", lambda T, a, b: T.set_subtensor(a[:1], b[-1:])),
    "set_col": op("M:f K:n", "M", "=", lambda T, a, k: T.set_subtensor(a[:, 0], T.cast(k, a.dtype))),
    # joins (Join allocates each call)
    "concat0": op("M:f M:f", "M", "up", lambda T, a, b: T.concatenate([a, b], axis=0)[::2]),
    "concat1": op("M:f M:f", "M", "up", lambda T, a, b: T.concatenate([a, b], axis=1)[:, 1::2]),
    "roll_rows": op("M:f M:f", "M", "up", lambda T, a, b: T.concatenate([a[1:], b[:1]], axis=0)),
}
# Mixed dtypes: bool results of comparisons used downstream, casts, int64 values.
MIXED_OPS: dict[str, Op] = {
    "gt": op("*:f =:f", "=", "bool", lambda T, a, b: T.gt(a, b)),
    "eq_floor": op("*:f =:f", "=", "bool", lambda T, a, b: T.eq(T.floor(a), T.floor(b))),
    "gt0": op("*:f", "=", "bool", lambda T, a: T.gt(a, 0)),
    "switch": op("*:b =:f =:f", "=", "up", lambda T, c, a, b: T.switch(c, a, b)),
    "mask": op("*:d =:f", "=", "up", lambda T, m, a: m * a),
    "to_f32": op("*:n", "=", "float32", lambda T, a: T.cast(a, "float32")),
    "to_f64": op("*:n", "=", "float64", lambda T, a: T.cast(a, "float64")),
    "to_i8": op("*:b", "=", "int8", lambda T, a: T.cast(a, "int8")),
    "floor_i64": op("*:f", "=", "int64", lambda T, a: T.cast(T.floor(T.clip(a, -8, 8)), "int64")),
    "count1": op("M:d", "K", "int64", lambda T, a: a.sum(axis=1)),
    "argmax1": op("M:f", "K", "int64", lambda T, a: T.argmax(a, axis=1)),
    "int_add": op("*:i =:i", "=", "int64", lambda T, a, b: a + b),
    "int_inc": op("*:i", "=", "int64", lambda T, a: a + 1),
    "take_rows": op("M:n K:i", "M", "=", lambda T, a, k: a[T.clip(k, 0, a.shape[0] - 1)]),
}
# Rank-4 float32: conv, pool, their gradients, bridges to the 2-D world.
IMAGE_OPS: dict[str, Op] = {
    "conv3": op("X*:4 F3:4", "=", "float32", lambda T, a, w: _conv(T, a, w, "half")),
    "conv1": op("X*:4 F1:4", "=", "float32", lambda T, a, w: _conv(T, a, w, "valid")),
    "conv3_valid": op("X:4 F3:4", "Xv", "float32", lambda T, a, w: _conv(T, a, w, "valid")),
    "pool_max": op("X|Xv:f", POOL_OF, "=", lambda T, a: _pool(T, a, "max")),
    "pool_avg": op("X|Xv:f", POOL_OF, "=", lambda T, a: _pool(T, a, "average_exc_pad")),
    "relu": op("*:f", "=", "=", lambda T, a: T.maximum(a, 0)),
    "flip_w": op("X*:n", "=", "=", lambda T, a: a[:, :, :, ::-1]),
    "gap": op("X*:f", "M", "=", lambda T, a: a.mean(axis=(2, 3))),
    "gmp": op("X*:f", "M", "=", lambda T, a: a.max(axis=(2, 3))),
    "chan_scale": op("X*:f M:f", "=", "up", lambda T, a, m: a * m.dimshuffle(0, 1, "x", "x")),
    "chan_bias": op("X*:f V:f", "=", "up", lambda T, a, v: a + v.dimshuffle("x", 0, "x", "x")),
    # gradients through conv (CorrMM_gradInputs / _gradWeights) and pool (Max/AveragePoolGrad)
    "conv3_grad_in": op("X*:4 F3:4", "=", "float32",
                        lambda T, a, w: T.grad(T.sqr(_conv(T, a, w, "half")).sum(), a)),
    "conv3_grad_w": op("X*:4 F3:4", "F3", "float32",
                       lambda T, a, w: T.grad(T.sqr(_conv(T, a, w, "half")).sum(), w)),
    "conv3v_grad_w": op("X:4 F3:4", "F3", "float32",
                        lambda T, a, w: T.grad(T.tanh(_conv(T, a, w, "valid")).sum(), w)),
    "pool_max_grad": op("X|Xv:f", "=", "=", lambda T, a: T.grad(T.sqr(_pool(T, a, "max")).sum(), a)),
    "pool_avg_grad": op("X|Xv:f", "=", "=",
                        lambda T, a: T.grad(T.sqr(_pool(T, a, "average_exc_pad")).sum(), a)),
    # backprop of a program's scalar to the image input / the conv filter (built in build())
    "grad_im": op("S:f", "X", "float32", None),
    "grad_Wc": op("S:f", "F3", "float32", None),
}
LAZY_OPS: dict[str, Op] = {
    "ifelse": op("M:f M:= S:f", "M", "=", None),   # ifelse(s > 0, a, b): built in build()
}
SCAN_OPS: dict[str, Op] = {
    "scan_rows": op("M:f V:=", "V", "=", None),  # fold over rows: acc <- tanh(acc * 0.5 + row)
}
ALL_OPS: dict[str, Op] = {**OPS, **MIXED_OPS, **IMAGE_OPS, **LAZY_OPS, **SCAN_OPS}

# Inputs and shared variables every program starts from: (name, kind, dtype).
INPUTS = (("x", "M", "float64"), ("y", "M", "float64"), ("v", "V", "float64"), ("im", "X", "float32"))
SHARED = (("W", "Q", "float64"), ("b", "V", "float64"), ("s", "S", "float64"),
          ("Wc", "F3", "float32"), ("Wp", "F1", "float32"), ("n", "S", "int64"))
BASE = len(INPUTS) + len(SHARED)
EXTRA_OUTPUTS = ("input", "input_T", "input_tail", "input_im", "repeat", "borrow", "borrow_raw")


@dataclass(frozen=True)
class Program:
    """A random graph as data.

    ``steps[i] = (op name, argument value indices)``; value ``j`` is
    ``(INPUTS + SHARED)[j]`` for ``j < BASE``, else the result of step
    ``j - BASE``.  ``outputs`` are value indices, ``extras`` special outputs
    (:data:`EXTRA_OUTPUTS`), ``updates`` maps a shared variable's name to
    the value index of its new value.  ``C`` is the fixed column/channel count.
    ``kinds``/``dtypes`` are the predicted kind and dtype of every value (empty
    for hand-written programs; :func:`build` checks them when present).
    """

    steps: tuple[tuple[str, tuple[int, ...]], ...]
    outputs: tuple[int, ...]
    extras: tuple[str, ...] = ()
    updates: tuple[tuple[str, int], ...] = ()
    C: int = 3
    kinds: tuple[str, ...] = field(default=(), compare=False)
    dtypes: tuple[str, ...] = field(default=(), compare=False)

    def op_names(self) -> list[str]:
        return [s[0] for s in self.steps]


def _match(spec: tuple[tuple[str, ...], str], sig: tuple[str, str], first: tuple[str, str]) -> bool:
    kinds, dt = spec
    kind_ok = True if kinds == ("*",) else sig[0] == first[0] if kinds == ("=",) else sig[0] in kinds
    dtype_ok = sig[1] == first[1] if dt == "=" else sig[1] in DTYPE_CLASSES[dt]
    return kind_ok and dtype_ok


_FIRST_CACHE: dict[tuple, Any] = {}


def _first_sigs(name: str, spec: Op, sigs: frozenset) -> frozenset:
    """The (kind, dtype) signatures a first argument of ``name`` may have, given the
    signatures available, such that every later argument has a candidate."""
    key = (name, sigs)
    if key not in _FIRST_CACHE:
        ok = set()
        for s0 in sigs:
            if _match(spec.args[0], s0, s0) and all(any(_match(a, s, s0) for s in sigs)
                                                    for a in spec.args[1:]):
                ok.add(s0)
        _FIRST_CACHE[key] = frozenset(ok)
    return _FIRST_CACHE[key]


def _takes(name: str, spec: Op, sigs: frozenset, sig: tuple[str, str]) -> bool:
    """Whether some argument of ``name`` can be a value of signature ``sig``."""
    key = (name, sigs, sig)
    if key not in _FIRST_CACHE:
        firsts = _first_sigs(name, spec, sigs)
        _FIRST_CACHE[key] = sig in firsts or any(
            _match(a, sig, s0) for a in spec.args[1:] for s0 in firsts)
    return _FIRST_CACHE[key]


@st.composite
def programs(draw, min_ops: int = 3, max_ops: int = 15, lazy: bool = False, scan: bool = False,
             mixed: bool = False, image: bool = False, focus: bool = False, max_C: int = 5) -> Program:
    """Strategy: a well-typed :class:`Program` of ``min_ops``..``max_ops`` steps.

    ``lazy``/``scan``/``mixed``/``image`` add :data:`LAZY_OPS`/:data:`SCAN_OPS`/
    :data:`MIXED_OPS`/:data:`IMAGE_OPS` to :data:`OPS`.  The first step is drawn from
    the added ops with probability 1/2; with ``focus`` every later step too.
    """
    table = dict(OPS)
    for flag, ops in ((lazy, LAZY_OPS), (scan, SCAN_OPS), (mixed, MIXED_OPS), (image, IMAGE_OPS)):
        if flag:
            table.update(ops)
    names = sorted(table)
    special = sorted(set(table) - set(OPS))
    kinds = [k for _, k, _ in INPUTS + SHARED]
    dtypes = [d for _, _, d in INPUTS + SHARED]
    steps: list[tuple[str, tuple[int, ...]]] = []
    n = draw(st.integers(min_ops, max_ops))
    for i in range(n):
        sigs = frozenset(zip(kinds, dtypes))
        firsts = {m: _first_sigs(m, table[m], sigs) for m in names}
        usable = [m for m in names if firsts[m]]
        usable_special = [m for m in special if firsts[m]]
        last = (kinds[-1], dtypes[-1])
        consumers = [m for m in usable if _takes(m, table[m], sigs, last)] if steps else []
        if usable_special and (i == 0 or focus) and draw(st.booleans()):
            name = draw(st.sampled_from(usable_special))
        elif consumers and draw(st.integers(0, 2)) == 0:   # an op that can take the last value
            name = draw(st.sampled_from(consumers))
        else:
            name = draw(st.sampled_from(usable))
        spec = table[name]
        args: list[int] = []
        for j, aspec in enumerate(spec.args):
            if j == 0:
                pool = [v for v, s in enumerate(zip(kinds, dtypes)) if s in firsts[name]]
            else:
                s0 = (kinds[args[0]], dtypes[args[0]])
                pool = [v for v, s in enumerate(zip(kinds, dtypes)) if _match(aspec, s, s0)]
            fresh = [v for v in pool if v < len(INPUTS)]
            if fresh and draw(st.integers(0, 3)) == 0:
                # a new branch from an input: independent temporaries whose cells can be shared
                idx = draw(st.sampled_from(fresh))
            else:   # shrinks towards recent values: deep rather than wide graphs
                idx = draw(st.integers(0, len(pool) - 1).map(lambda t, p=pool: p[len(p) - 1 - t]))
            args.append(idx)
        k, d = spec.result([kinds[a] for a in args], [dtypes[a] for a in args])
        steps.append((name, tuple(args)))
        kinds.append(k)
        dtypes.append(d)
    computed = list(range(BASE, len(kinds)))
    outs = draw(st.lists(st.sampled_from(computed), min_size=1, max_size=3))
    if draw(st.booleans()):   # the last step always reachable: deep graphs
        outs.append(computed[-1])
    extras = tuple(draw(st.lists(st.sampled_from(EXTRA_OUTPUTS), max_size=2, unique=True)))
    updates = []
    for name, k, d in SHARED:
        cands = [v for v in computed if kinds[v] == k and dtypes[v] == d]
        if cands and draw(st.booleans()):
            updates.append((name, draw(st.sampled_from(cands))))
    C = draw(st.integers(1, max_C))
    return Program(tuple(steps), tuple(dict.fromkeys(outs)), extras, tuple(updates), C,
                   tuple(kinds), tuple(dtypes))


# A call's shape: (R, H, W): rows/batch, image height and width.
call_shapes = st.tuples(st.integers(1, 5), st.integers(4, 7), st.integers(4, 7))


@st.composite
def calls(draw) -> list[tuple[int, int, int]]:
    """Three call shapes: A, B, then A again (mostly) or a third shape C."""
    a, b = draw(call_shapes), draw(call_shapes)
    return [a, b, a if draw(st.integers(0, 3)) else draw(call_shapes)]


@dataclass
class Built:
    """A built program: what ``theano.function`` needs, plus the shared variables and
    which outputs are ``borrow=True``."""

    inputs: list
    outputs: list
    updates: list
    shared: dict[str, Any]
    borrowed: frozenset = frozenset()


def shared_values(program: Program, seed: int) -> dict[str, np.ndarray]:
    """Initial values of the shared variables (deterministic in ``seed``)."""
    rng = np.random.RandomState(seed)
    C = program.C
    return {"W": rng.uniform(-1, 1, (C, C)), "b": rng.uniform(-1, 1, (C,)),
            "s": np.asarray(rng.uniform(-1, 1)),
            "Wc": rng.uniform(-0.5, 0.5, (C, C, 3, 3)).astype("float32"),
            "Wp": rng.uniform(-1, 1, (C, C, 1, 1)).astype("float32"),
            "n": np.asarray(3, dtype="int64")}


def _shape(call) -> tuple[int, int, int]:
    return (call, 4, 5) if isinstance(call, (int, np.integer)) else tuple(call)


def input_values(program: Program, call, seed: int) -> list[np.ndarray]:
    """Values for ``x`` (R, C), ``y`` (R, C), ``v`` (C,), ``im`` (R, C, H, W) float32;
    ``call`` is ``(R, H, W)`` or just ``R`` (then H, W = 4, 5)."""
    R, H, W = _shape(call)
    rng = np.random.RandomState(seed)
    C = program.C
    return [rng.uniform(-2, 2, (R, C)), rng.uniform(-2, 2, (R, C)), rng.uniform(-2, 2, (C,)),
            rng.uniform(-2, 2, (R, C, H, W)).astype("float32")]


def _grad(T, cost, wrt):
    """``T.grad(cost, wrt)``; zeros where no gradient is defined (same on every build)."""
    from theano.gradient import NullTypeGradError
    try:
        return T.grad(cost, wrt, disconnected_inputs="ignore")
    except (NullTypeGradError, TypeError, NotImplementedError):
        return T.zeros_like(wrt)


def build(program: Program, seed: int = 0) -> Built:
    """Fresh Theano variables for ``program`` (new shared variables each time)."""
    import theano
    import theano.tensor as T
    from theano.ifelse import ifelse
    x, y, v = T.matrix("x"), T.matrix("y"), T.vector("v")
    im = T.tensor4("im", dtype="float32")
    init = shared_values(program, seed)
    shared = {k: theano.shared(init[k], name=k) for k, _, _ in SHARED}
    vals: list = [x, y, v, im] + [shared[k] for k, _, _ in SHARED]
    for name, args in program.steps:
        a = [vals[i] for i in args]
        if name == "ifelse":
            vals.append(ifelse(T.gt(a[2], 0), a[0], a[1]))
        elif name == "scan_rows":
            out, _ = theano.scan(lambda row, acc: T.tanh(acc * HALF + row), sequences=a[0], outputs_info=a[1])
            vals.append(out[-1])
        elif name == "grad_im":
            vals.append(_grad(T, a[0], im))
        elif name == "grad_Wc":
            vals.append(_grad(T, a[0], shared["Wc"]))
        else:
            vals.append(ALL_OPS[name].fn(T, *a))
        if program.dtypes:
            i = len(vals) - 1
            assert (vals[i].dtype, vals[i].ndim) == (program.dtypes[i], RANK[program.kinds[i]]), \
                f"step {name}{args}: built {vals[i].dtype} rank {vals[i].ndim}, " \
                f"predicted {program.dtypes[i]} kind {program.kinds[i]}"
    outputs: list = [vals[i] for i in program.outputs]
    borrowed = set()
    for e in program.extras:
        if e == "input":
            outputs.append(x)
        elif e == "input_T":
            outputs.append(x.T)
        elif e == "input_tail":
            outputs.append(x[1:])
        elif e == "input_im":
            outputs.append(im[:, :, ::-1])
        elif e == "repeat":
            outputs.append(outputs[0])
        elif e == "borrow":
            borrowed.add(len(outputs))
            outputs.append(theano.Out(vals[program.outputs[-1]] * TWO, borrow=True))
        elif e == "borrow_raw":
            borrowed.add(len(outputs))
            outputs.append(theano.Out(vals[program.outputs[0]], borrow=True))
    updates = [(shared[k], vals[i]) for k, i in program.updates]
    return Built([x, y, v, im], outputs, updates, shared, frozenset(borrowed))


BRANCH_OPS = ("exp", "tanh", "log1p_abs", "sqr", "neg", "scale", "shift", "flip_rows", "dot_MQ")
REDUCE_OPS = ("sum0", "max0")


@st.composite
def branchy_programs(draw, max_branches: int = 5, max_C: int = 5) -> Program:
    """Strategy: 2..``max_branches`` branches, each a short chain from input ``x`` or ``y``
    reduced to a ``(C,)`` vector, the vectors summed.  Every branch makes ``(R, C)``
    temporaries that die at its reduction: what the sharing linker shares."""
    steps: list[tuple[str, tuple[int, ...]]] = []
    W = [n for n, _, _ in INPUTS + SHARED].index("W")
    reduced: list[int] = []
    for _ in range(draw(st.integers(2, max_branches))):
        cur = draw(st.sampled_from([0, 1]))
        for _ in range(draw(st.integers(1, 3))):
            name = draw(st.sampled_from(BRANCH_OPS))
            steps.append((name, (cur, W) if name == "dot_MQ" else (cur,)))
            cur = BASE + len(steps) - 1
        if draw(st.booleans()):   # a binary op with the other input keeps the branch alive longer
            steps.append((draw(st.sampled_from(["add", "mul", "maximum"])), (cur, draw(st.sampled_from([0, 1])))))
            cur = BASE + len(steps) - 1
        steps.append((draw(st.sampled_from(REDUCE_OPS)), (cur,)))
        reduced.append(BASE + len(steps) - 1)
    acc = reduced[0]
    for r in reduced[1:]:
        steps.append(("add", (acc, r)))
        acc = BASE + len(steps) - 1
    C = draw(st.integers(1, max_C))
    return Program(tuple(steps), (acc,), (), (), C)
