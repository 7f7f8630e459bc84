"""The seeds' first example as an ONNX model: y = W * x + b with scalar (rank-0) W and b, as
TensorFlow's `tf.get_variable(shape=[])` makes them."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def scalar_linear_onnx(w: float = 0.5, b: float = 0.0, dtype: type = np.float32) -> onnx.ModelProto:
    """x (n,) -> y = Mul(x, W) + b, W and b rank-0 initializers of `dtype`."""
    elem = TensorProto.DOUBLE if dtype == np.float64 else TensorProto.FLOAT
    x = helper.make_tensor_value_info("x", elem, ["n"])
    y = helper.make_tensor_value_info("y", elem, ["n"])
    weights = [numpy_helper.from_array(np.asarray(w, dtype), "W"), numpy_helper.from_array(np.asarray(b, dtype), "b")]
    nodes = [helper.make_node("Mul", ["x", "W"], ["xw"], name="mul"), helper.make_node("Add", ["xw", "b"], ["y"],
                                                                                       name="add")]
    graph = helper.make_graph(nodes, "linear", [x], [y], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
