"""Theano graph families used by the tests, the benchmark and the report examples.

Each builder returns a :class:`Case`: symbolic inputs, outputs, updates and a
function that makes example input values (seeded).  Sizes are parameters so the
tests can use small ones and the benchmark larger ones.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import theano
import theano.tensor as T

FLOATX = "float64"


@dataclass
class Case:
    """A graph to compile: ``theano.function(inputs, outputs, updates=updates)``."""

    name: str
    inputs: list
    outputs: list
    make_args: Callable[[], list]
    updates: list = field(default_factory=list)
    shared: list = field(default_factory=list)

    def compile(self, mode=None, **kwargs):
        """Compile with ``mode``; shared variables are reset to their initial values first."""
        self.reset()
        return theano.function(self.inputs, self.outputs, updates=self.updates, mode=mode,
                               **kwargs)

    def reset(self) -> None:
        for var, val in self.shared:
            var.set_value(val.copy())


def _shared(rng, shape, name, scale=0.1):
    val = (rng.standard_normal(shape) * scale).astype(FLOATX)
    return theano.shared(val.copy(), name=name), val


def mlp(batch=64, sizes=(256, 512, 512, 10), seed=0, lr=0.01) -> Case:
    """An MLP training step: tanh layers, softmax cross-entropy, SGD updates."""
    rng = np.random.default_rng(seed)
    x, y = T.matrix("x"), T.ivector("y")
    params, shared, h = [], [], x
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        W, wv = _shared(rng, (a, b), f"W{i}")
        bb, bv = _shared(rng, (b,), f"b{i}", 0.0)
        params += [W, bb]
        shared += [(W, wv), (bb, bv)]
        z = T.dot(h, W) + bb
        h = T.tanh(z) if i < len(sizes) - 2 else T.nnet.softmax(z)
    loss = T.nnet.categorical_crossentropy(h, y).mean()
    grads = T.grad(loss, params)
    updates = [(p, p - lr * g) for p, g in zip(params, grads)]

    def make_args():
        r = np.random.default_rng(seed + 1)
        return [r.standard_normal((batch, sizes[0])).astype(FLOATX),
                r.integers(0, sizes[-1], batch).astype("int32")]
    return Case("mlp", [x, y], [loss], make_args, updates, shared)


def convnet(batch=8, channels=(1, 4, 8), image=16, n_out=10, seed=0, lr=0.01) -> Case:
    """A small conv net training step: conv2d + relu + max pooling, dense, softmax, grad."""
    from theano.tensor.signal.pool import pool_2d
    rng = np.random.default_rng(seed)
    x, y = T.tensor4("x"), T.ivector("y")
    params, shared, h, side = [], [], x, image
    for i, (cin, cout) in enumerate(zip(channels[:-1], channels[1:])):
        W, wv = _shared(rng, (cout, cin, 3, 3), f"K{i}")
        params.append(W)
        shared.append((W, wv))
        h = T.nnet.relu(T.nnet.conv2d(h, W, border_mode="half"))
        h = pool_2d(h, (2, 2), ignore_border=True, mode="max")
        side //= 2
    Wd, wdv = _shared(rng, (channels[-1] * side * side, n_out), "Wd")
    params.append(Wd)
    shared.append((Wd, wdv))
    p = T.nnet.softmax(T.dot(h.flatten(2), Wd))
    loss = T.nnet.categorical_crossentropy(p, y).mean()
    updates = [(q, q - lr * g) for q, g in zip(params, T.grad(loss, params))]

    def make_args():
        r = np.random.default_rng(seed + 1)
        return [r.standard_normal((batch, channels[0], image, image)).astype(FLOATX),
                r.integers(0, n_out, batch).astype("int32")]
    return Case("convnet", [x, y], [loss], make_args, updates, shared)


def lstm(steps=10, batch=16, n_in=32, n_hid=64, seed=0, lr=0.01) -> Case:
    """An LSTM over a sequence with ``theano.scan``, loss on the last state, SGD step."""
    rng = np.random.default_rng(seed)
    x = T.tensor3("x")       # (steps, batch, n_in)
    W, wv = _shared(rng, (n_in, 4 * n_hid), "W_lstm")
    U, uv = _shared(rng, (n_hid, 4 * n_hid), "U_lstm")

    def step(x_t, h, c):
        z = T.dot(x_t, W) + T.dot(h, U)
        i, f = T.nnet.sigmoid(z[:, :n_hid]), T.nnet.sigmoid(z[:, n_hid:2 * n_hid])
        o, g = T.nnet.sigmoid(z[:, 2 * n_hid:3 * n_hid]), T.tanh(z[:, 3 * n_hid:])
        c = f * c + i * g
        return o * T.tanh(c), c

    h0 = T.zeros((x.shape[1], n_hid))
    (hs, _cs), _ = theano.scan(step, sequences=x, outputs_info=[h0, h0])
    loss = (hs[-1] ** 2).mean()
    params = [W, U]
    updates = [(p, p - lr * g) for p, g in zip(params, T.grad(loss, params))]

    def make_args():
        r = np.random.default_rng(seed + 1)
        return [r.standard_normal((steps, batch, n_in)).astype(FLOATX)]
    return Case("lstm", [x], [loss], make_args, updates, [(W, wv), (U, uv)])


def views_inplace(n=200, seed=0) -> Case:
    """Views (transpose, slicing, reshape) and inplace ops (inc_subtensor, fused elemwise)."""
    x, v = T.matrix("x"), T.vector("v")
    a = T.exp(x)
    b = a.T[::2]                          # views of a
    c = T.set_subtensor(T.log1p(a)[1:3], 0.0)   # inplace on a fresh temporary
    d = (b.sum() + c).reshape((n * n,))   # reshape: a view when contiguous
    e = T.inc_subtensor(d[:n], v)
    out = e * 2 + a.flatten()
    outs = [out.sum(), T.tanh(x).mean(axis=0), x.T]   # the last aliases an input

    def make_args():
        r = np.random.default_rng(seed)
        return [r.standard_normal((n, n)), r.standard_normal(n)]
    return Case("views_inplace", [x, v], outs, make_args)


def chain(depth=24, width=512, batch=512, seed=0) -> Case:
    """A deep ``tanh(dot(h, W_i))`` chain (one weight per layer)."""
    rng = np.random.default_rng(seed)
    x = T.matrix("x")
    h, shared = x, []
    for i in range(depth):
        W, wv = _shared(rng, (width, width), f"W{i}", 1.0 / np.sqrt(width))
        shared.append((W, wv))
        h = T.tanh(T.dot(h, W))

    def make_args():
        return [np.random.default_rng(seed + 1).standard_normal((batch, width))]
    return Case("chain", [x], [h.sum()], make_args, [], shared)


def branches(n_branches=4, n=10**6, seed=0) -> Case:
    """Independent ``cumsum(x * c).sum()`` branches summed: order decides the peak."""
    x = T.vector("x")
    parts = [T.cumsum(x * (i + 1.0)).sum() for i in range(n_branches)]
    total = parts[0]
    for p in parts[1:]:
        total = total + p

    def make_args():
        return [np.random.default_rng(seed).standard_normal(n)]
    return Case("branches", [x], [total], make_args)


FAMILIES = {"mlp": mlp, "convnet": convnet, "lstm": lstm, "views_inplace": views_inplace,
            "chain": chain, "branches": branches}


# ---------------------------------------------------------------- benchmark families
def randwire(n=32, width=64, batch=64, kind="ws", seed=0) -> Case:
    """RandWire-style net (Xie et al. 2019) over a seeded random DAG of ``n`` cells.

    The DAG comes from :mod:`theano_lowmem.core.randgraphs` (``kind='ws'``:
    Watts–Strogatz, ``'er'``: Erdős–Rényi; a last cell joins the sinks).  A cell
    with one input computes ``relu(dot(h, W))``; with several it alternates
    between summing them and concatenating them before the ``dot``.  Weights are
    shared variables, so no per-cell constants (one C module per op, not per cell).
    """
    from .core import randgraphs
    gen = {"ws": randgraphs.watts_strogatz, "er": randgraphs.erdos_renyi}[kind]
    skel = gen(n, seed, alias_prob=0.0, multi_prob=0.0, pin_prob=0.0, extra_prob=0.0,
               shuffle=False)
    rng = np.random.default_rng(seed)
    x = T.matrix("x")
    outs, shared = [], []
    for i, preds in enumerate(skel.preds):
        ins = [outs[p] for p in preds] or [x]
        if len(ins) > 1 and i % 2:
            h, fan = T.concatenate(ins, axis=1), len(ins)
        else:
            h, fan = (ins[0] if len(ins) == 1 else sum(ins[1:], ins[0])), 1
        W, wv = _shared(rng, (fan * width, width), f"W{i}", 1.0 / np.sqrt(fan * width))
        shared.append((W, wv))
        outs.append(T.nnet.relu(T.dot(h, W)))
    loss = outs[-1].mean()

    def make_args():
        return [np.random.default_rng(seed + 1).standard_normal((batch, width))]
    return Case(f"randwire_{kind}", [x], [loss], make_args, [], shared)


def inception(blocks=2, batch=8, channels=8, image=16, seed=0) -> Case:
    """Inception-like blocks: 1x1, 3x3, 5x5 (as two 3x3) convolution branches and an
    average branch, concatenated along channels, then a 1x1 projection back."""
    rng = np.random.default_rng(seed)
    x = T.tensor4("x")
    h, shared, c = x, [], channels
    for b in range(blocks):
        def conv(inp, cin, cout, k, tag):
            W, wv = _shared(rng, (cout, cin, k, k), f"K{b}{tag}", 1.0 / np.sqrt(cin * k * k))
            shared.append((W, wv))
            return T.nnet.relu(T.nnet.conv2d(inp, W, border_mode="half"))
        b1 = conv(h, c, c, 1, "a")
        b3 = conv(conv(h, c, c, 1, "b"), c, c, 3, "c")
        b5 = conv(conv(conv(h, c, c, 1, "d"), c, c, 3, "e"), c, c, 3, "f")
        bp = conv((h + T.roll(h, 1, axis=2) + T.roll(h, 1, axis=3)) / 3.0, c, c, 1, "g")
        h = conv(T.concatenate([b1, b3, b5, bp], axis=1), 4 * c, c, 1, "p") + h
    loss = (h ** 2).mean()

    def make_args():
        return [np.random.default_rng(seed + 1).standard_normal((batch, channels, image, image))]
    return Case("inception", [x], [loss], make_args, [], shared)


def resnet(blocks=3, batch=8, channels=8, image=16, seed=0, lr=0.01) -> Case:
    """ResNet-like training step: ``relu(x + conv(relu(conv(x))))`` blocks, loss, SGD."""
    rng = np.random.default_rng(seed)
    x = T.tensor4("x")
    h, params, shared = x, [], []
    for b in range(blocks):
        ws = []
        for j in range(2):
            W, wv = _shared(rng, (channels, channels, 3, 3), f"R{b}{j}", 1.0 / np.sqrt(9 * channels))
            ws.append(W)
            shared.append((W, wv))
        params += ws
        h = T.nnet.relu(h + T.nnet.conv2d(T.nnet.relu(T.nnet.conv2d(h, ws[0], border_mode="half")),
                                          ws[1], border_mode="half"))
    loss = (h ** 2).mean()
    updates = [(p, p - lr * g) for p, g in zip(params, T.grad(loss, params))]

    def make_args():
        return [np.random.default_rng(seed + 1).standard_normal((batch, channels, image, image))]
    return Case("resnet", [x], [loss], make_args, updates, shared)


def _layernorm(h, eps=1e-5):
    mu = h.mean(axis=-1, keepdims=True)
    var = ((h - mu) ** 2).mean(axis=-1, keepdims=True)
    return (h - mu) / T.sqrt(var + eps)


def transformer(batch=4, seq=32, d=64, heads=4, ff=256, layers=1, seed=0, lr=0.01) -> Case:
    """Transformer encoder training step: multi-head attention (dot, softmax), layernorm
    written in Theano, a ReLU feed-forward, residuals, loss, SGD on every weight."""
    rng = np.random.default_rng(seed)
    x = T.tensor3("x")                       # (batch, seq, d)
    dh = d // heads
    h, params, shared = x, [], []

    def weight(shape, nm):
        W, wv = _shared(rng, shape, nm, 1.0 / np.sqrt(shape[0]))
        params.append(W)
        shared.append((W, wv))
        return W

    for li in range(layers):
        flat = h.reshape((batch * seq, d))
        q, k, v = (T.dot(flat, weight((d, d), f"W{t}{li}")).reshape((batch, seq, heads, dh))
                   .dimshuffle(0, 2, 1, 3).reshape((batch * heads, seq, dh)) for t in "qkv")
        scores = T.batched_dot(q, k.dimshuffle(0, 2, 1)) / np.sqrt(dh).astype(FLOATX)
        att = T.nnet.softmax(scores.reshape((batch * heads * seq, seq))).reshape(
            (batch * heads, seq, seq))
        ctx = T.batched_dot(att, v).reshape((batch, heads, seq, dh)).dimshuffle(0, 2, 1, 3)
        ctx = T.dot(ctx.reshape((batch * seq, d)), weight((d, d), f"Wo{li}"))
        h1 = _layernorm(flat + ctx)
        f = T.dot(T.nnet.relu(T.dot(h1, weight((d, ff), f"Wf{li}"))), weight((ff, d), f"Wg{li}"))
        h = _layernorm(h1 + f).reshape((batch, seq, d))
    loss = (h ** 2).mean()
    updates = [(p, p - lr * g) for p, g in zip(params, T.grad(loss, params))]

    def make_args():
        return [np.random.default_rng(seed + 1).standard_normal((batch, seq, d))]
    return Case("transformer", [x], [loss], make_args, updates, shared)


def wide(n_branches=1000, n=256, seed=0) -> Case:
    """A very wide graph: ``n_branches`` parallel ``tanh(x * s_i)`` branches reduced to one
    number.  The per-branch scales are shared scalars, not constants, so every branch uses
    the same compiled ops (a constant per branch would mean one g++ compile per node)."""
    rng = np.random.default_rng(seed)
    x = T.vector("x")
    parts, shared = [], []
    for i in range(n_branches):
        val = np.asarray(rng.uniform(0.5, 1.5), dtype=FLOATX)
        s = theano.shared(val.copy(), name=f"s{i}")
        shared.append((s, val))
        parts.append(T.tanh(x * s).sum())
    total = T.stack(parts).sum()

    def make_args():
        return [np.random.default_rng(seed + 1).standard_normal(n)]
    return Case("wide", [x], [total], make_args, [], shared)


FAMILIES.update({"randwire_ws": randwire,
                 "randwire_er": lambda **kw: randwire(kind="er", **kw),
                 "inception": inception, "resnet": resnet, "transformer": transformer,
                 "wide": wide})


def mixed_dag(n=60, length=100_000, seed=0, max_in=3, cheap=False) -> Case:
    """An irregular DAG of ``n`` elementwise cells over values of three sizes (issue 11).

    Every value is a ``(r, length)`` float64 matrix with ``r`` in 1, 2, 4 rows (L, 2L,
    4L doubles).  A cell reads one to ``max_in`` earlier values (recent ones more
    often) and computes ``tanh(sum(terms) * c)`` (``cheap``: ``sum(terms) * c``, a
    memory-bound cell, so that allocating its output is a large part of its cost)
    with ``r`` rows (at most the widest
    input's): an input with at least ``r`` rows gives its first ``r`` rows (a view),
    a narrower one its first row broadcast.  The sinks are summed into the one
    output, so every intermediate is an arena candidate and every op writes into its
    output cell (C ``Elemwise`` and ``Sum``).  ``make_args(length=...)`` gives
    another row length: a second shape signature.
    """
    rng = np.random.default_rng(seed)
    x = T.matrix("x")
    vals = [(x, 4)]
    readers = [0]
    for i in range(n):
        k = int(rng.integers(1, max_in + 1))
        idx = sorted({int(len(vals) - 1 - min(len(vals) - 1, rng.geometric(0.25) - 1))
                      for _ in range(k)})
        ins = [vals[j] for j in idx]
        widest = max(r for _, r in ins)
        r = int(rng.choice([q for q in (1, 2, 4) if q <= widest]))
        terms = []
        for v, rv in ins:
            terms.append(v[:r] if rv >= r else T.addbroadcast(v[:1], 0))
        h = terms[0]
        for t in terms[1:]:
            h = h + t
        h = h * (0.5 + 0.01 * i)
        vals.append((h if cheap else T.tanh(h), r))
        for j in idx:
            readers[j] += 1
        readers.append(0)
    sinks = [v for (v, _), nr in zip(vals[1:], readers[1:]) if nr == 0]
    total = sinks[0].sum()
    for s in sinks[1:]:
        total = total + s.sum()

    def make_args(length: int = length):
        return [np.random.default_rng(seed + 1).standard_normal((4, length))]
    return Case(f"mixed_dag_{n}_{seed}" + ("_cheap" if cheap else ""), [x], [total], make_args)


FAMILIES.update({"mixed_dag": mixed_dag})
