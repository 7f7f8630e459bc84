"""Small inference graphs for training tests, built with the IR builder."""

from __future__ import annotations

import numpy as np

from edgerun.runtime.graph import Graph, GraphBuilder


def mlp(sizes=(64, 32, 10), dtype=np.float32, seed: int = 0, softmax: bool = False) -> Graph:
    """Gemm + Relu layers (He init), optionally ending in Softmax."""
    rng = np.random.default_rng(seed)
    g = GraphBuilder("mlp", opset=17)
    h = g.input("x", dtype, (-1, sizes[0]))
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        scale = np.sqrt(2 / n_in)
        w = g.constant(f"fc{i}.weight", (rng.standard_normal((n_out, n_in)) * scale).astype(dtype))
        b = g.constant(f"fc{i}.bias", np.zeros(n_out, dtype))
        h = g.op("Gemm", [h, w, b], name=f"fc{i}", transB=1)
        if i < len(sizes) - 2:
            h = g.op("Relu", [h], name=f"relu{i}")
    if softmax:
        h = g.op("Softmax", [h], name="softmax", axis=-1)
    g.output(h, "y")
    return g.build()


def cnn(dtype=np.float32, seed: int = 0, batch_norm: bool = True, classes: int = 10) -> Graph:
    """For 1x8x8 images: Conv 3x3 (8) [-> BN] -> Relu -> MaxPool 2 -> Conv 3x3 (16) -> Relu
    -> GlobalAveragePool -> Flatten -> Gemm."""
    rng = np.random.default_rng(seed)
    g = GraphBuilder("cnn", opset=17)
    x = g.input("x", dtype, (-1, 1, 8, 8))

    def weight(name, shape, fan_in):
        return g.constant(name, (rng.standard_normal(shape) * np.sqrt(2 / fan_in)).astype(dtype))

    def bias(name, n):
        return g.constant(name, np.zeros(n, dtype))

    h = g.op("Conv", [x, weight("conv1.weight", (8, 1, 3, 3), 9), bias("conv1.bias", 8)],
             name="conv1", pads=[1, 1, 1, 1])
    if batch_norm:
        h = g.op("BatchNormalization", [h, g.constant("bn1.scale", np.ones(8, dtype)),
                                        g.constant("bn1.bias", np.zeros(8, dtype)),
                                        g.constant("bn1.mean", np.zeros(8, dtype)),
                                        g.constant("bn1.var", np.ones(8, dtype))], name="bn1")
    h = g.op("MaxPool", [g.op("Relu", [h], name="relu1")], name="pool1", kernel_shape=[2, 2], strides=[2, 2])
    h = g.op("Conv", [h, weight("conv2.weight", (16, 8, 3, 3), 72), bias("conv2.bias", 16)],
             name="conv2", pads=[1, 1, 1, 1])
    h = g.op("GlobalAveragePool", [g.op("Relu", [h], name="relu2")], name="gap")
    h = g.op("Flatten", [h], name="flat")
    h = g.op("Gemm", [h, weight("fc.weight", (classes, 16), 16), bias("fc.bias", classes)],
             name="fc", transB=1)
    g.output(h, "y")
    return g.build()


def digits(split: float = 0.8, seed: int = 0, images: bool = False):
    """sklearn's 8x8 digits scaled to [0, 1]: (x_train, y_train, x_test, y_test)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    if images:
        x = x.reshape(-1, 1, 8, 8)
    y = data.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    cut = int(split * len(y))
    train, test = order[:cut], order[cut:]
    return x[train], y[train], x[test], y[test]


# MobileNetV2's inverted residual stages (Sandler et al. 2018, table 2): expansion t, channels c,
# repeats n, first stride s.
MOBILENET_V2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                       (6, 160, 3, 2), (6, 320, 1, 1))


def mobilenet_v2(width: float = 1.0, size: int = 224, classes: int = 1000, seed: int = 0,
                 stages=MOBILENET_V2_STAGES, batch_norm: bool = False, last: int | None = None) -> Graph:
    """MobileNetV2 as torchvision exports it (BatchNormalization folded into each Conv's bias):
    stem Conv 3x3/2 -> Relu6, inverted residual blocks (1x1 expand -> Relu6 -> depthwise 3x3 ->
    Relu6 -> 1x1 project [+ input when the shapes allow]), 1x1 Conv to 1280 -> Relu6, global
    average pool, Gemm. He-initialised random weights (memory and shapes do not depend on them).
    `batch_norm` keeps a frozen BatchNormalization after every Conv instead of folding it; `last`
    sets the channels of the final 1x1 Conv (torchvision's: max(1280, 1280 x width)).
    Input "x" (batch, 3, size, size), output "y"."""
    rng = np.random.default_rng(seed)
    g = GraphBuilder("mobilenet_v2", opset=17)
    count = [0]

    def conv(h, c_in, c_out, kernel=1, stride=1, group=1, relu6=True):
        i = count[0] = count[0] + 1
        fan_in = c_in // group * kernel * kernel
        w = g.constant(f"conv{i}.weight", (rng.standard_normal((c_out, c_in // group, kernel, kernel))
                                           * np.sqrt(2 / fan_in)).astype(np.float32))
        b = g.constant(f"conv{i}.bias", np.zeros(c_out, np.float32))
        pad = kernel // 2
        h = g.op("Conv", [h, w, b], name=f"conv{i}", pads=[pad] * 4, strides=[stride] * 2, group=group)
        if batch_norm:
            h = g.op("BatchNormalization", [h, *(g.constant(f"bn{i}.{k}", (rng.uniform(0.5, 1.5, c_out) if k in
                                                 ("scale", "var") else rng.normal(0, 0.1, c_out)).astype(np.float32))
                                                 for k in ("scale", "bias", "mean", "var"))], name=f"bn{i}")
        if relu6:
            h = g.op("Clip", [h, g.constant(f"lo{i}", np.float32(0)), g.constant(f"hi{i}", np.float32(6))],
                     name=f"relu6_{i}")
        return h

    def channels(c):  # torchvision's _make_divisible(c * width, 8)
        c = c * width
        rounded = max(8, int(c + 4) // 8 * 8)
        return rounded + 8 if rounded < 0.9 * c else rounded

    h = conv(g.input("x", np.float32, (-1, 3, size, size)), 3, channels(32), kernel=3, stride=2)
    c_in = channels(32)
    for t, c, n, s in stages:
        c_out = channels(c)
        for repeat in range(n):
            stride = s if repeat == 0 else 1
            hidden = c_in * t
            x = h
            if t != 1:
                h = conv(h, c_in, hidden)
            h = conv(h, hidden, hidden, kernel=3, stride=stride, group=hidden)
            h = conv(h, hidden, c_out, relu6=False)
            if stride == 1 and c_in == c_out:
                h = g.op("Add", [x, h])
            c_in = c_out
    last = last or max(1280, channels(1280))
    h = g.op("Flatten", [g.op("GlobalAveragePool", [conv(h, c_in, last)])])
    w = g.constant("fc.weight", (rng.standard_normal((classes, last)) * np.sqrt(1 / last)).astype(np.float32))
    h = g.op("Gemm", [h, w, g.constant("fc.bias", np.zeros(classes, np.float32))], name="fc", transB=1)
    g.output(h, "y")
    return g.build()


def depthwise_cnn(seed: int = 0, classes: int = 10) -> Graph:
    """For 1x8x8 images, a small MobileNet-style net: Conv 3x3 (16) -> Relu6 -> depthwise Conv
    3x3 -> Relu6 (the frozen "backbone"), then the head: Conv 1x1 (32) "head" -> Relu6 ->
    AveragePool 2x2 -> Flatten -> Gemm "fc". He-initialised, zero biases; Relu6 is Clip(0, 6)."""
    rng = np.random.default_rng(seed)
    g = GraphBuilder("depthwise_cnn", opset=17)

    def weight(name, shape, fan_in):
        return g.constant(name, (rng.standard_normal(shape) * np.sqrt(2 / fan_in)).astype(np.float32))

    def relu6(h, i):
        return g.op("Clip", [h, g.constant(f"lo{i}", np.float32(0)), g.constant(f"hi{i}", np.float32(6))],
                    name=f"relu6_{i}")

    h = g.input("x", np.float32, (-1, 1, 8, 8))
    h = relu6(g.op("Conv", [h, weight("stem.weight", (16, 1, 3, 3), 9), g.constant("stem.bias", np.zeros(16,
              np.float32))], name="stem", pads=[1, 1, 1, 1]), 0)
    h = relu6(g.op("Conv", [h, weight("dw.weight", (16, 1, 3, 3), 9), g.constant("dw.bias", np.zeros(16,
              np.float32))], name="dw", pads=[1, 1, 1, 1], group=16), 1)
    h = relu6(g.op("Conv", [h, weight("head.weight", (32, 16, 1, 1), 16), g.constant("head.bias", np.zeros(
              32, np.float32))], name="head"), 2)
    h = g.op("Flatten", [g.op("AveragePool", [h], name="pool", kernel_shape=[2, 2], strides=[2, 2])], name="flat")
    g.output(g.op("Gemm", [h, weight("fc.weight", (classes, 512), 512), g.constant("fc.bias", np.zeros(
             classes, np.float32))], name="fc", transB=1), "y")
    return g.build()
