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
