"""Small ONNX models built with onnx.helper, with deterministic random weights.

Shared by converter, runtime, CLI tests, demos and benchmarks:

    model = make_mlp()                        # x: [batch, 64] -> y: [batch, 10]
    expected = ort_run(model, {"x": x})       # onnxruntime's outputs, the anchor
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def _weights(rng: np.random.Generator, shape: tuple[int, ...], scale: float = 0.2) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def make_model(
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    initializers: dict[str, np.ndarray] | None = None,
    name: str = "model",
    opset: int = OPSET,
) -> onnx.ModelProto:
    """A ModelProto over one graph; `initializers` are named numpy arrays."""
    tensors = [numpy_helper.from_array(a, n) for n, a in (initializers or {}).items()]
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=tensors)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="edgerun-tests", producer_version="1")
    model.ir_version = 8
    return model


def make_mlp(batch: int | str = "batch", seed: int = 0, opset: int = OPSET) -> onnx.ModelProto:
    """MLP 64-32-10: Gemm, Relu, Gemm, Softmax. Input "x" [batch, 64], output "y" [batch, 10].

    A str `batch` makes the batch dimension dynamic (dim_param)."""
    rng = np.random.default_rng(seed)
    weights = {
        "w1": _weights(rng, (32, 64)), "b1": _weights(rng, (32,)),
        "w2": _weights(rng, (10, 32)), "b2": _weights(rng, (10,)),
    }
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h1"], name="fc1", transB=1),
        helper.make_node("Relu", ["h1"], ["a1"], name="relu1"),
        helper.make_node("Gemm", ["a1", "w2", "b2"], ["logits"], name="fc2", transB=1),
        helper.make_node("Softmax", ["logits"], ["y"], name="softmax", axis=-1),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 64])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 10])
    return make_model(nodes, [x], [y], weights, name="mlp", opset=opset)


def make_cnn(batch: int | str = "batch", seed: int = 0, opset: int = OPSET) -> onnx.ModelProto:
    """Small CNN: input "x" [batch, 3, 16, 16] -> output "y" [batch, 10].

    Conv/BatchNormalization/Relu/MaxPool, then two heads concatenated: a second
    Conv/Relu/GlobalAveragePool/Flatten and a GlobalAveragePool/Reshape (its shape
    from a `Constant` node); then Gemm and an Add of a bias."""
    rng = np.random.default_rng(seed)
    weights = {
        "conv1_w": _weights(rng, (8, 3, 3, 3)), "conv1_b": _weights(rng, (8,)),
        "bn_scale": 1 + _weights(rng, (8,), 0.1), "bn_bias": _weights(rng, (8,), 0.1),
        "bn_mean": _weights(rng, (8,), 0.1), "bn_var": 1 + np.abs(_weights(rng, (8,), 0.1)),
        "conv2_w": _weights(rng, (16, 8, 3, 3)), "conv2_b": _weights(rng, (16,)),
        "fc_w": _weights(rng, (10, 24)), "fc_b": _weights(rng, (10,)),
        "out_bias": _weights(rng, (10,)),
    }
    node = helper.make_node
    nodes = [
        node("Conv", ["x", "conv1_w", "conv1_b"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        node("BatchNormalization", ["c1", "bn_scale", "bn_bias", "bn_mean", "bn_var"], ["bn1"],
             name="bn1", epsilon=1e-5),
        node("Relu", ["bn1"], ["r1"], name="relu1"),
        node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        node("Conv", ["p1", "conv2_w", "conv2_b"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        node("Relu", ["c2"], ["r2"], name="relu2"),
        node("GlobalAveragePool", ["r2"], ["g2"], name="gap2"),
        node("Flatten", ["g2"], ["f2"], name="flatten", axis=1),
        node("GlobalAveragePool", ["p1"], ["g1"], name="gap1"),
        node("Constant", [], ["g1_shape"], name="g1_shape",
             value=numpy_helper.from_array(np.array([0, -1], dtype=np.int64))),
        node("Reshape", ["g1", "g1_shape"], ["f1"], name="reshape"),
        node("Concat", ["f2", "f1"], ["features"], name="concat", axis=1),
        node("Gemm", ["features", "fc_w", "fc_b"], ["logits"], name="fc", transB=1),
        node("Add", ["logits", "out_bias"], ["y"], name="add_bias"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 16, 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 10])
    return make_model(nodes, [x], [y], weights, name="cnn", opset=opset)


def ort_run(model: onnx.ModelProto, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """onnxruntime's outputs for `inputs`, by output name (CPU provider, one thread)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, inputs), strict=True))
