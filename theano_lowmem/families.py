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
