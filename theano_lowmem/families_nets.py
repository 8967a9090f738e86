"""Benchmark families written the way Lasagne users write them.

Every input dimension is unknown at compile time: inputs are ``T.tensor4('inputs')``,
``T.tensor3`` or ``T.matrix`` with ``T.ivector('targets')``, no test values, no
static shapes (Theano 1.0.5 types carry none, THEANO_FACTS.md §11).  The layer
sizes a Lasagne ``InputLayer(shape=(None, 3, 32, 32))`` would know are used only
in Python, to size the weights; the batch size (and the LSTM's sequence length)
exists only when the function is called.

Each builder returns a :class:`theano_lowmem.families.Case` in one of two variants:

* ``train=True``: a training step, ``[loss]`` out, ``T.grad`` and SGD updates on
  every trainable shared parameter (and, for batch-norm nets, Lasagne's running
  mean / inverse-std updates);
* ``train=False``: evaluation, Lasagne's ``deterministic=True`` forward pass
  (batch norm from the running statistics), ``[loss, accuracy]`` out, no updates.

All values are float32 whatever ``theano.config.floatX`` is: shared parameters,
inputs (``dtype='float32'``) and every constant (``np.float32``).
``case.make_args(batch=None)`` (the LSTM's also ``steps=None``) makes seeded
inputs; other batch sizes give other (still seeded) data.  Dropout is left out:
its random state would make stock and lowmem results differ by construction.

Examples
--------
>>> case = mlp_mnist(train=True, **SIZES["tiny"]["mlp_mnist"])
>>> [v.type.dtype for v in case.inputs], case.outputs[0].dtype
(['float32', 'int32'], 'float32')
>>> [a.shape for a in case.make_args(batch=3)]
[(3, 64), (3,)]
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import theano
import theano.tensor as T
from theano.tensor.signal.pool import pool_2d

from .families import Case

FLOATX = "float32"
F = np.float32
BN_EPS, BN_ALPHA = F(1e-4), F(0.1)


class _Net:
    """Parameters of one net as it is built: trainable ones and Lasagne's running statistics."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.params: list = []      # trainable: get SGD updates
        self.shared: list = []      # (variable, initial value) for Case.reset
        self.stat_updates: list = []   # running mean/inv-std updates (training only)

    def var(self, shape: Sequence[int], name: str, fan_in: int | None = None,
            const: float | None = None, trainable: bool = True):
        if const is not None:
            val = np.full(shape, const, dtype=FLOATX)
        else:   # He initialisation
            val = (self.rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(FLOATX)
        v = theano.shared(val.copy(), name=name)
        self.shared.append((v, val))
        if trainable:
            self.params.append(v)
        return v

    # ---- layers (Lasagne's Conv2DLayer, BatchNormLayer, DenseLayer, Pool2DLayer)
    def conv(self, h, cin: int, cout: int, k: int, name: str, stride: int = 1,
             pad="half", bias: bool = True):
        W = self.var((cout, cin, k, k), f"{name}.W", fan_in=cin * k * k)
        h = T.nnet.conv2d(h, W, border_mode=pad, subsample=(stride, stride))
        if bias:
            h = h + self.var((cout,), f"{name}.b", const=0.0).dimshuffle("x", 0, "x", "x")
        return h

    def batch_norm(self, h, c: int, name: str, train: bool):
        """Lasagne's BatchNormLayer over axes (0, 2, 3): batch statistics when training
        (and updates of the running ones), running statistics when ``deterministic``."""
        gamma = self.var((c,), f"{name}.gamma", const=1.0)
        beta = self.var((c,), f"{name}.beta", const=0.0)
        run_mean = self.var((c,), f"{name}.mean", const=0.0, trainable=False)
        run_inv_std = self.var((c,), f"{name}.inv_std", const=1.0, trainable=False)
        if train:
            mean = h.mean(axis=(0, 2, 3))
            inv_std = T.inv(T.sqrt(h.var(axis=(0, 2, 3)) + BN_EPS))
            self.stat_updates += [
                (run_mean, (F(1) - BN_ALPHA) * run_mean + BN_ALPHA * mean),
                (run_inv_std, (F(1) - BN_ALPHA) * run_inv_std + BN_ALPHA * inv_std)]
        else:
            mean, inv_std = run_mean, run_inv_std
        bc = ("x", 0, "x", "x")
        return (h - mean.dimshuffle(*bc)) * (gamma * inv_std).dimshuffle(*bc) + beta.dimshuffle(*bc)

    def dense(self, h, n_in: int, n_out: int, name: str):
        W = self.var((n_in, n_out), f"{name}.W", fan_in=n_in)
        return T.dot(h.flatten(2), W) + self.var((n_out,), f"{name}.b", const=0.0)

    # ---- the end of every net
    def case(self, name: str, inputs: list, logits, y, train: bool, lr: float,
             make_args: Callable[..., list]) -> Case:
        """Softmax cross-entropy; training: ``[loss]`` and SGD updates, else ``[loss, acc]``."""
        prob = T.nnet.softmax(logits)
        loss = T.nnet.categorical_crossentropy(prob, y).mean()
        if train:
            grads = T.grad(loss, self.params)
            updates = [(p, p - F(lr) * g) for p, g in zip(self.params, grads)]
            updates += self.stat_updates
            outputs = [loss]
        else:
            acc = T.mean(T.eq(T.argmax(prob, axis=1), y), dtype=FLOATX)
            updates, outputs = [], [loss, acc]
        for v in outputs + [u for _, u in updates]:
            assert v.dtype == FLOATX, f"{name}: {v} is {v.dtype}, not {FLOATX}"
        return Case(f"{name}_{'train' if train else 'eval'}", inputs, outputs, make_args,
                    updates, self.shared)


def _image_args(seed: int, default_batch: int, shape: tuple, n_out: int) -> Callable[..., list]:
    def make_args(batch: int | None = None) -> list:
        b = batch or default_batch
        r = np.random.default_rng([seed, b])
        return [r.standard_normal((b, *shape)).astype(FLOATX),
                r.integers(0, n_out, b).astype("int32")]
    return make_args


def _image_inputs():
    return T.tensor4("inputs", dtype=FLOATX), T.ivector("targets")


# ---------------------------------------------------------------- 1. LeNet / AlexNet
def lenet(train: bool = True, batch: int = 8, image: tuple = (1, 28, 28),
          convs: Sequence[tuple] = ((6, 5, True), (16, 5, True)), dense: Sequence[int] = (120, 84),
          n_out: int = 10, pad="valid", seed: int = 0, lr: float = 0.01) -> Case:
    """LeNet-5 (defaults) or AlexNet-style (more ``convs``): ``(channels, kernel, pool)``
    conv layers with ReLU and 2x2 max pooling, ReLU dense layers, softmax."""
    net = _Net(seed)
    x, y = _image_inputs()
    h, (c, side, _) = x, image
    for i, (cout, k, pool) in enumerate(convs):
        h = T.nnet.relu(net.conv(h, c, cout, k, f"conv{i}", pad=pad))
        c, side = cout, side - k + 1 if pad == "valid" else side
        if pool:
            h = pool_2d(h, ws=(2, 2), ignore_border=True, mode="max")
            side //= 2
    n = c * side * side
    for i, width in enumerate(dense):
        h, n = T.nnet.relu(net.dense(h, n, width, f"fc{i}")), width
    logits = net.dense(h, n, n_out, "out")
    return net.case("lenet", [x, y], logits, y, train, lr, _image_args(seed, batch, image, n_out))


# ---------------------------------------------------------------- 2. ResNet, bottlenecks
def resnet_bneck(train: bool = True, batch: int = 8, image: tuple = (3, 32, 32), stem: int = 16,
                 stages: Sequence[tuple] = ((8, 32, 2, 1), (16, 64, 2, 2)), n_out: int = 10,
                 seed: int = 0, lr: float = 0.01) -> Case:
    """ResNet with bottleneck blocks: stem conv-BN-ReLU, then per stage
    ``(mid, out, blocks, stride)`` blocks ``relu(bn(1x1(relu(bn(3x3(relu(bn(1x1 x)))))) + s)``
    where ``s`` is ``x`` (identity) or ``bn(1x1 stride x)`` (projection, the first block
    of a stage); global average pooling, dense softmax."""
    net = _Net(seed)
    x, y = _image_inputs()
    h = T.nnet.relu(net.batch_norm(net.conv(x, image[0], stem, 3, "stem", bias=False),
                                   stem, "stem.bn", train))
    c = stem
    for s, (mid, out, blocks, stride) in enumerate(stages):
        for b in range(blocks):
            nm, st = f"s{s}b{b}", stride if b == 0 else 1

            def cbn(inp, cin, cout, k, tag, stride_=1):
                return net.batch_norm(net.conv(inp, cin, cout, k, f"{nm}.{tag}", stride=stride_,
                                               bias=False), cout, f"{nm}.{tag}.bn", train)
            r = T.nnet.relu(cbn(h, c, mid, 1, "a"))
            r = T.nnet.relu(cbn(r, mid, mid, 3, "b", st))
            r = cbn(r, mid, out, 1, "c")
            short = h if (c == out and st == 1) else cbn(h, c, out, 1, "proj", st)
            h, c = T.nnet.relu(r + short), out
    logits = net.dense(h.mean(axis=(2, 3)), c, n_out, "out")
    return net.case("resnet_bneck", [x, y], logits, y, train, lr,
                    _image_args(seed, batch, image, n_out))


# ---------------------------------------------------------------- 3. Inception / GoogLeNet
def inception_net(train: bool = True, batch: int = 8, image: tuple = (3, 32, 32), stem: int = 16,
                  modules: Sequence[tuple] = ((8, 8, 12, 4, 6, 6), (12, 12, 16, 4, 8, 8)),
                  pool_after: Sequence[int] = (0,), n_out: int = 10, seed: int = 0,
                  lr: float = 0.01) -> Case:
    """GoogLeNet-style: stem conv + max pool, then inception modules
    ``(n1x1, n3x3red, n3x3, n5x5red, n5x5, pool_proj)``: parallel 1x1, 1x1->3x3, 1x1->5x5
    and 3x3-max-pool->1x1 branches (ReLU), ``T.concatenate``'d along channels; a 2x2 max
    pool after the modules listed in ``pool_after``; global average pooling, softmax."""
    net = _Net(seed)
    x, y = _image_inputs()
    h = T.nnet.relu(net.conv(x, image[0], stem, 3, "stem"))
    h = pool_2d(h, ws=(2, 2), ignore_border=True, mode="max")
    c = stem
    for m, (n1, r3, n3, r5, n5, pp) in enumerate(modules):
        def cr(inp, cin, cout, k, tag):
            return T.nnet.relu(net.conv(inp, cin, cout, k, f"inc{m}.{tag}"))
        b1 = cr(h, c, n1, 1, "1x1")
        b3 = cr(cr(h, c, r3, 1, "3x3red"), r3, n3, 3, "3x3")
        b5 = cr(cr(h, c, r5, 1, "5x5red"), r5, n5, 5, "5x5")
        bp = cr(pool_2d(h, ws=(3, 3), stride=(1, 1), pad=(1, 1), ignore_border=True, mode="max"),
                c, pp, 1, "pool_proj")
        h, c = T.concatenate([b1, b3, b5, bp], axis=1), n1 + n3 + n5 + pp
        if m in pool_after:
            h = pool_2d(h, ws=(2, 2), ignore_border=True, mode="max")
    logits = net.dense(h.mean(axis=(2, 3)), c, n_out, "out")
    return net.case("inception_net", [x, y], logits, y, train, lr,
                    _image_args(seed, batch, image, n_out))


# ---------------------------------------------------------------- 4. DenseNet
def densenet(train: bool = True, batch: int = 8, image: tuple = (3, 32, 32), blocks: int = 3,
             layers: int = 4, growth: int = 6, first: int | None = None, n_out: int = 10,
             seed: int = 0, lr: float = 0.01) -> Case:
    """DenseNet (Huang et al. 2017, the Lasagne recipe's layout): a 3x3 conv, then
    ``blocks`` dense blocks of ``layers`` BN-ReLU-3x3-conv layers, each of which
    ``T.concatenate``'s its ``growth`` new maps onto *all* earlier ones (concatenations of
    concatenations), BN-ReLU-1x1-conv-2x2-average-pool transitions between blocks, and
    BN-ReLU-global-average-pool-softmax at the end.  DenseNet-40: ``blocks=3, layers=12,
    growth=12`` (depth ``3 * layers + 4``)."""
    net = _Net(seed)
    x, y = _image_inputs()
    c = first or 2 * growth
    h = net.conv(x, image[0], c, 3, "pre", bias=False)
    for b in range(blocks):
        for i in range(layers):
            nm = f"d{b}l{i}"
            new = net.conv(T.nnet.relu(net.batch_norm(h, c, f"{nm}.bn", train)), c, growth, 3, nm,
                           bias=False)
            h, c = T.concatenate([h, new], axis=1), c + growth
        if b < blocks - 1:
            nm = f"trans{b}"
            h = net.conv(T.nnet.relu(net.batch_norm(h, c, f"{nm}.bn", train)), c, c, 1, nm,
                         bias=False)
            h = pool_2d(h, ws=(2, 2), ignore_border=True, mode="average_inc_pad")
    h = T.nnet.relu(net.batch_norm(h, c, "post.bn", train))
    logits = net.dense(h.mean(axis=(2, 3)), c, n_out, "out")
    return net.case("densenet", [x, y], logits, y, train, lr,
                    _image_args(seed, batch, image, n_out))


# ---------------------------------------------------------------- 5. LSTM with scan
def lstm_seq(train: bool = True, batch: int = 8, steps: int = 12, n_in: int = 16,
             n_hid: int = 32, n_out: int = 10, seed: int = 0, lr: float = 0.01) -> Case:
    """Lasagne's LSTMLayer (peepholes, precomputed input projection, ``strict`` scan over
    ``non_sequences``) on a ``(time, batch, features)`` tensor3 whose length is known only
    at call time; the last hidden state feeds a dense softmax classifier."""
    net = _Net(seed)
    x, y = T.tensor3("inputs", dtype=FLOATX), T.ivector("targets")
    W_in = net.var((n_in, 4 * n_hid), "lstm.W_in", fan_in=n_in)
    W_hid = net.var((n_hid, 4 * n_hid), "lstm.W_hid", fan_in=n_hid)
    b = net.var((4 * n_hid,), "lstm.b", const=0.0)
    w_ci, w_cf, w_co = (net.var((n_hid,), f"lstm.W_cell_to_{g}", fan_in=n_hid)
                        for g in ("ingate", "forgetgate", "outgate"))
    cell_init = net.var((1, n_hid), "lstm.cell_init", const=0.0, trainable=False)
    hid_init = net.var((1, n_hid), "lstm.hid_init", const=0.0, trainable=False)
    x_proj = T.dot(x, W_in) + b                    # precompute_input=True

    def gate(z, n):
        return z[:, n * n_hid:(n + 1) * n_hid]

    def step(x_n, cell_prev, hid_prev, W_hid_, w_ci_, w_cf_, w_co_):
        gates = x_n + T.dot(hid_prev, W_hid_)
        ingate = T.nnet.sigmoid(gate(gates, 0) + cell_prev * w_ci_)
        forgetgate = T.nnet.sigmoid(gate(gates, 1) + cell_prev * w_cf_)
        cell = forgetgate * cell_prev + ingate * T.tanh(gate(gates, 2))
        outgate = T.nnet.sigmoid(gate(gates, 3) + cell * w_co_)
        return [cell, outgate * T.tanh(cell)]

    ones = T.ones((x.shape[1], 1), dtype=FLOATX)
    (_cells, hids), _ = theano.scan(step, sequences=[x_proj],
                                    outputs_info=[T.dot(ones, cell_init), T.dot(ones, hid_init)],
                                    non_sequences=[W_hid, w_ci, w_cf, w_co], strict=True)
    logits = net.dense(hids[-1], n_hid, n_out, "out")

    b0, t0 = batch, steps

    def make_args(batch: int | None = None, steps: int | None = None) -> list:
        bs, ts = batch or b0, steps or t0
        r = np.random.default_rng([seed, bs, ts])
        return [r.standard_normal((ts, bs, n_in)).astype(FLOATX),
                r.integers(0, n_out, bs).astype("int32")]
    return net.case("lstm_seq", [x, y], logits, y, train, lr, make_args)


# ---------------------------------------------------------------- 6. MNIST MLP
def mlp_mnist(train: bool = True, batch: int = 32, n_in: int = 784, hidden: Sequence[int] = (800, 800),
              n_out: int = 10, seed: int = 0, lr: float = 0.01) -> Case:
    """Lasagne's MNIST MLP (``build_mlp`` without dropout): ``T.matrix`` input,
    ReLU dense layers, softmax."""
    net = _Net(seed)
    x, y = T.matrix("inputs", dtype=FLOATX), T.ivector("targets")
    h, n = x, n_in
    for i, width in enumerate(hidden):
        h, n = T.nnet.relu(net.dense(h, n, width, f"hid{i}")), width
    logits = net.dense(h, n, n_out, "out")

    b0 = batch

    def make_args(batch: int | None = None) -> list:
        b = batch or b0
        r = np.random.default_rng([seed, b])
        return [r.random((b, n_in), dtype=np.float32), r.integers(0, n_out, b).astype("int32")]
    return net.case("mlp_mnist", [x, y], logits, y, train, lr, make_args)


# ---------------------------------------------------------------- registry and sizes
# ---------------------------------------------------------------- 7. stochastic depth
def resnet_sd(train: bool = True, batch: int = 8, image: tuple = (3, 32, 32), stem: int = 16,
              stages: Sequence[tuple] = ((16, 3, 1), (32, 3, 2)), n_out: int = 10,
              p_last: float = 0.5, seed: int = 0, lr: float = 0.01) -> Case:
    """ResNet with stochastic depth (Huang et al. 2016, as Lasagne recipes write it):
    basic blocks ``relu(bn(3x3(relu(bn(3x3 x)))) + s)`` per stage ``(channels, blocks,
    stride)``.  When training, each identity block is ``ifelse(gate, block(x), x)`` on a
    per-call gate (an ``int8`` input ``gates``, one per identity block, drawn by
    ``make_args`` with survival probability falling linearly to ``p_last``), its running
    batch-norm statistics updated only when the block runs; the graph is lazy, so the
    C VM's walk depends on the gates.  Evaluation scales each identity block by its
    survival probability (no ``ifelse``).  Inputs ``[inputs, gates, targets]``."""
    from theano.ifelse import ifelse
    net = _Net(seed)
    x, y = _image_inputs()
    gates = T.bvector("gates")
    h = T.nnet.relu(net.batch_norm(net.conv(x, image[0], stem, 3, "stem", bias=False),
                                   stem, "stem.bn", train))
    c, gated = stem, 0
    n_gated = sum(1 for s, (out, blocks, stride) in enumerate(stages) for b in range(blocks)
                  if not (b == 0 and (stride != 1 or out != (stem if s == 0 else stages[s - 1][0]))))
    survive = [1.0 - (1.0 - p_last) * (i + 1) / max(1, n_gated) for i in range(n_gated)]
    for s, (out, blocks, stride) in enumerate(stages):
        for b in range(blocks):
            nm, st = f"s{s}b{b}", stride if b == 0 else 1
            n_stats = len(net.stat_updates)

            def cbn(inp, cin, cout, tag, stride_=1):
                return net.batch_norm(net.conv(inp, cin, cout, 3, f"{nm}.{tag}", stride=stride_,
                                               bias=False), cout, f"{nm}.{tag}.bn", train)
            r = cbn(T.nnet.relu(cbn(h, c, out, "a", st)), out, out, "b")
            if c == out and st == 1:        # identity block: dropped at random when training
                if train:
                    g = gates[gated]
                    h = ifelse(g, T.nnet.relu(r + h), h)
                    net.stat_updates[n_stats:] = [(v, ifelse(g, u, v))
                                                  for v, u in net.stat_updates[n_stats:]]
                else:
                    h = T.nnet.relu(F(survive[gated]) * r + h)
                gated += 1
            else:
                h = T.nnet.relu(r + cbn(h, c, out, "proj", st))
            c = out
    logits = net.dense(h.mean(axis=(2, 3)), c, n_out, "out")
    image_args = _image_args(seed, batch, image, n_out)

    def make_args(batch: int | None = None) -> list:
        xs, ys = image_args(batch)
        r = np.random.default_rng([seed, len(ys), 7])
        return [xs, (r.random(n_gated) < np.array(survive)).astype("int8"), ys]
    inputs = [x, gates, y] if train else [x, y]
    return net.case("resnet_sd", inputs, logits, y, train, lr,
                    make_args if train else image_args)


BUILDERS: dict[str, Callable[..., Case]] = {
    "lenet": lenet, "resnet_bneck": resnet_bneck, "inception_net": inception_net,
    "densenet": densenet, "lstm_seq": lstm_seq, "mlp_mnist": mlp_mnist, "resnet_sd": resnet_sd}


def _variant(builder: Callable[..., Case], train: bool) -> Callable[..., Case]:
    def build(**kw) -> Case:
        return builder(train=train, **kw)
    build.__name__ = f"{builder.__name__}_{'train' if train else 'eval'}"
    build.__doc__ = builder.__doc__
    build.base = builder.__name__            # type: ignore[attr-defined]
    return build


#: ``<net>_train`` and ``<net>_eval`` for every builder (the bench's family names)
FAMILIES: dict[str, Callable[..., Case]] = {
    f"{n}_{v}": _variant(b, v == "train") for n, b in BUILDERS.items() for v in ("train", "eval")}

#: size -> builder -> keyword arguments (shared by both variants).  ``tiny`` is for tests
#: (each compiles in seconds), ``small`` is the benchmark default, ``medium`` is closer to the
#: real nets (AlexNet-style conv stack, more bottleneck blocks, GoogLeNet-like modules),
#: ``large`` has DenseNet-40.
SIZES: dict[str, dict[str, dict]] = {
    "tiny": {
        "lenet": dict(batch=4, image=(1, 12, 12), convs=((4, 3, True), (6, 3, True)), dense=(16,)),
        "resnet_bneck": dict(batch=4, image=(3, 8, 8), stem=4, stages=((2, 8, 1, 1), (4, 12, 1, 2))),
        "inception_net": dict(batch=4, image=(3, 8, 8), stem=4, modules=((2, 2, 3, 1, 2, 2),)),
        "densenet": dict(batch=4, image=(3, 8, 8), blocks=2, layers=3, growth=3),
        "lstm_seq": dict(batch=4, steps=5, n_in=6, n_hid=8),
        "mlp_mnist": dict(batch=8, n_in=64, hidden=(32, 32)),
        "resnet_sd": dict(batch=4, image=(3, 8, 8), stem=4, stages=((4, 2, 1), (6, 2, 2)))},
    "small": {"lenet": {}, "resnet_bneck": {}, "inception_net": {}, "densenet": {},
              "lstm_seq": {}, "mlp_mnist": {}, "resnet_sd": {}},
    "medium": {
        "lenet": dict(batch=32, image=(3, 32, 32), pad="half", dense=(256, 256),
                      convs=((32, 5, True), (64, 5, True), (96, 3, False), (96, 3, False),
                             (64, 3, True))),
        "resnet_bneck": dict(batch=16, stem=32, stages=((16, 64, 3, 1), (32, 128, 4, 2),
                                                        (64, 256, 3, 2))),
        "inception_net": dict(batch=16, stem=32, pool_after=(1, 3), modules=(
            (16, 24, 32, 4, 8, 8), (32, 32, 48, 8, 24, 16), (48, 24, 52, 4, 12, 16),
            (40, 28, 56, 6, 16, 16), (64, 40, 80, 8, 32, 32))),
        "densenet": dict(batch=16, blocks=3, layers=8, growth=12),
        "lstm_seq": dict(batch=32, steps=40, n_in=64, n_hid=128),
        "mlp_mnist": dict(batch=256),
        "resnet_sd": dict(batch=16, stem=16, stages=((16, 5, 1), (32, 5, 2), (64, 5, 2)))},
    "large": {
        "lenet": dict(batch=64, image=(3, 64, 64), pad="half", dense=(512, 512),
                      convs=((64, 5, True), (128, 5, True), (192, 3, False), (192, 3, False),
                             (128, 3, True))),
        "resnet_bneck": dict(batch=32, stem=64, stages=((64, 256, 3, 1), (128, 512, 4, 2),
                                                        (256, 1024, 6, 2))),
        "inception_net": dict(batch=32, stem=64, pool_after=(1, 6), modules=(
            (64, 96, 128, 16, 32, 32), (128, 128, 192, 32, 96, 64), (192, 96, 208, 16, 48, 64),
            (160, 112, 224, 24, 64, 64), (128, 128, 256, 24, 64, 64),
            (112, 144, 288, 32, 64, 64), (256, 160, 320, 32, 128, 128))),
        "densenet": dict(batch=32, blocks=3, layers=12, growth=12),     # DenseNet-40
        "lstm_seq": dict(batch=64, steps=100, n_in=128, n_hid=256),
        "mlp_mnist": dict(batch=500),
        "resnet_sd": dict(batch=32, stem=16, stages=((16, 18, 1), (32, 18, 2), (64, 18, 2)))},
}


def family_kwargs(name: str, size: str) -> dict:
    """Builder keyword arguments of family ``name`` (e.g. ``'densenet_train'``) at ``size``."""
    return dict(SIZES[size][FAMILIES[name].base])
