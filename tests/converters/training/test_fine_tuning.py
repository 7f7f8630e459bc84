"""Fine-tuning the last layers: the frozen part of the network stays plain inference."""

from __future__ import annotations

import numpy as np

from edgerun.converters.training import make_trainable
from edgerun.runtime import GraphBuilder, Interpreter, save_model


def mobile_cnn(seed: int = 0):
    """Conv -> Relu6 three times, global average pool, a Gemm head (a MobileNet-like stack)."""
    rng = np.random.default_rng(seed)
    g = GraphBuilder("cnn", opset=17)
    h = g.input("x", np.float32, (-1, 3, 8, 8))
    for i in range(3):
        w = g.constant(f"c{i}.w", (rng.standard_normal((8, 3 if i == 0 else 8, 3, 3)) * 0.2).astype(np.float32))
        h = g.op("Conv", [h, w], pads=[1, 1, 1, 1])
        h = g.op("Clip", [h, g.constant(f"lo{i}", np.float32(0)), g.constant(f"hi{i}", np.float32(6))])
    h = g.op("Flatten", [g.op("GlobalAveragePool", [h])])
    head = g.constant("fc.w", (rng.standard_normal((10, 8)) * 0.2).astype(np.float32))
    h = g.op("Gemm", [h, head, g.constant("fc.b", np.zeros(10, np.float32))], transB=1)
    g.output(h, "y")
    return g.build()


def test_training_the_last_layer_adds_no_gradient_node_for_the_frozen_part(tmp_path):
    graph = make_trainable(mobile_cnn(), trainable=1, optimizer=("sgd", {"lr": 0.5}))
    assert list(graph.signatures["save"].outputs) == ["fc.w", "fc.b"]
    grads = sorted(n.op_type for n in graph.nodes if n.op_type.endswith("Grad"))
    assert grads == ["GemmGrad", "SoftmaxCrossEntropyGrad"]  # no ConvGrad, ClipGrad or pool gradient

    frozen = {v.name: v for node in graph.nodes for v in node.inputs if v is not None and v.name.endswith(".w")}
    assert all(frozen[f"c{i}.w"].is_constant for i in range(3))  # constants: nothing can update them

    model = Interpreter(save_model(graph, tmp_path / "cnn.train.erm"))
    before = model.run({}, signature="save")
    x = np.random.default_rng(1).standard_normal((4, 3, 8, 8)).astype(np.float32)
    model.run({"x": x, "labels": np.array([0, 1, 2, 3])}, signature="train")
    after = model.run({}, signature="save")
    assert not np.allclose(after["fc.w"], before["fc.w"])  # the head trained
