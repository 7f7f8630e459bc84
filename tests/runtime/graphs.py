"""Small graphs built with the IR builder (no ONNX), shared by runtime tests."""

from __future__ import annotations

import numpy as np

from edgerun.runtime.graph import Graph, GraphBuilder, Quantization


def add_relu_graph() -> Graph:
    """y = relu(x + c) with a dynamic batch: the smallest runnable model."""
    g = GraphBuilder("add_relu")
    x = g.input("x", np.float32, (-1, 4))
    c = g.constant("c", np.array([-1.0, 0.0, 1.0, 2.0], np.float32))
    g.output(g.op("Relu", [g.op("Add", [x, c], name="add")], name="relu"), "y")
    return g.build()


def mlp_graph(sizes: tuple[int, ...] = (64, 32, 10), seed: int = 0) -> Graph:
    """Gemm/Relu layers with float32 weights; the last layer has no activation."""
    rng = np.random.default_rng(seed)
    g = GraphBuilder("mlp")
    h = g.input("x", np.float32, (-1, sizes[0]))
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        w = g.constant(f"w{i}", (rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)).astype(np.float32))
        b = g.constant(f"b{i}", rng.standard_normal(n_out).astype(np.float32))
        h = g.op("Gemm", [h, w, b], name=f"fc{i}", transB=1)
        if i < len(sizes) - 2:
            h = g.op("Relu", [h], name=f"relu{i}")
    g.output(h, "y")
    return g.build()


def feature_graph() -> Graph:
    """Exercises every format feature: all attribute types, a nested graph, a
    variable, quantization (per tensor and per axis), unknown shapes, omitted
    optional slots, several signatures and metadata. Not meant to run."""
    body = GraphBuilder("body")
    bx = body.input("bx", np.float32, (2,))
    body.output(body.op("Relu", [bx], name="body_relu"), "by")
    body_graph = body.build()

    g = GraphBuilder("features", opset=17)
    x = g.input("x", np.float32, (-1, 3))
    n = g.input("n", np.int64, ())
    w = g.constant("w", np.arange(12, dtype=np.int8).reshape(4, 3))
    w.quantization = Quantization(np.array([0.5, 0.25, 1.0, 2.0], np.float32), np.zeros(4, np.int64), 0)
    big = g.constant("big", np.linspace(0, 1, 1000, dtype=np.float64))
    s = g.variable("state", np.zeros((3,), np.float32))
    s.quantization = Quantization(np.array([0.1], np.float32), np.array([3]), 0)
    y = g.op("Custom", [x, None, w, big, s], domain="com.example", version=3, name="custom",
             f=1.5, i=-7, s="héllo", floats=[0.1, 2.5], ints=[1, -2, 3], strings=["a", "ü"],
             t=np.eye(2, dtype=np.float32), ts=[np.ones(3, np.int32), np.zeros((2, 2), np.uint8)],
             body=body_graph, empty=[])
    y2, _ = g.op("Split2", [y, n], num_outputs=2, output_names=["y2", "unused"])
    g.output(y2, "out")
    g.signature("serving_default", {"x": x, "n": n}, {"out": y2})
    g.signature("raw", {"input": x}, {"state": s})
    g.metadata.update({"producer": "tests", "note": "ünïcode"})
    return g.build()


def nested_chain(depth: int) -> Graph:
    """`depth` graphs, each wrapping the next as a `body` attribute (control-flow nesting)."""
    body = None
    for level in range(depth):
        g = GraphBuilder(f"g{level}")
        x = g.input("x", np.float32, (1,))
        attrs = {} if body is None else {"body": body}
        g.output(g.op("Wrap", [x], **attrs), "y")
        body = g.build()
    return body


def table_cnn(rows: int = 960, size: int = 16, seed: int = 0) -> Graph:
    """x [-1, 3, size, size] -> y [-1, 10]: x plus row 0 of a learned (rows, 3, size, size) table
    (Gather, Add), then conv1 and conv2 (3x3, 3 -> 16 -> 16, pad 1) with Relu, GlobalAveragePool,
    Flatten and a Gemm. Pointing conv1's input at the table (a 4-byte change to the .erm, see
    mutate.repoint_input) runs the rest of the network at batch `rows`."""
    rng = np.random.default_rng(seed)
    g = GraphBuilder("table_cnn")
    x = g.input("x", np.float32, (-1, 3, size, size))
    table = g.constant("table", rng.standard_normal((rows, 3, size, size)).astype(np.float32))
    row = g.op("Gather", [table, g.constant("row", np.array([0], np.int64))], name="pick_row", axis=0)
    h = g.op("Add", [x, row], name="add_row")
    for i, (c_in, c_out) in enumerate(((3, 16), (16, 16)), start=1):
        w = g.constant(f"conv{i}_w", (rng.standard_normal((c_out, c_in, 3, 3)) * 0.2).astype(np.float32))
        h = g.op("Relu", [g.op("Conv", [h, w], name=f"conv{i}", pads=[1, 1, 1, 1])], name=f"relu{i}")
    h = g.op("Flatten", [g.op("GlobalAveragePool", [h], name="gap")], name="flatten", axis=1)
    fc_w = g.constant("fc_w", (rng.standard_normal((10, 16)) * 0.2).astype(np.float32))
    g.output(g.op("Gemm", [h, fc_w], name="fc", transB=1), "y")
    return g.build()
