"""fold_conv_mul: a per-channel constant Mul after a Conv scales the Conv's weights and bias
(optimize_and_check compares the optimized graph's outputs with onnxruntime's on the original)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from tests.converters.optimize.helpers import info, ops, optimize_and_check
from tests.onnx_models import make_model

node = helper.make_node


def _conv_mul(c_shape: tuple[int, ...], with_bias: bool, swap: bool = False, group: int = 1):
    rng = np.random.default_rng(7)
    inits = {"w": rng.standard_normal((4, 4 // group, 3, 3)).astype(np.float32),
             "c": rng.standard_normal(c_shape).astype(np.float32)}
    conv_inputs = ["x", "w"]
    if with_bias:
        inits["b"] = rng.standard_normal(4).astype(np.float32)
        conv_inputs.append("b")
    return make_model([
        node("Conv", conv_inputs, ["h"], group=group, pads=[1, 1, 1, 1]),
        node("Mul", ["c", "h"] if swap else ["h", "c"], ["y"]),
    ], [info("x", ["n", 4, 5, 5])], [info("y", None)], inits)


@pytest.mark.parametrize("c_shape, with_bias, swap, group", [
    ((4, 1, 1), True, False, 1), ((1, 4, 1, 1), False, False, 1), ((), True, True, 1),
    ((1, 1, 1), False, True, 1), ((4, 1, 1), True, False, 4),  # depthwise
])
def test_scale_mul_is_folded(c_shape: tuple, with_bias: bool, swap: bool, group: int) -> None:
    graph, report = optimize_and_check(_conv_mul(c_shape, with_bias, swap, group), passes=["fold_conv_mul"])
    assert ops(graph) == ["Conv"] and graph.nodes[0].outputs[0].name == "y"
    assert report.passes[0].changes == {"Mul into Conv weights": 1}


@pytest.mark.parametrize("c_shape", [(5,), (4, 5, 5), (2, 4, 1, 1)])
def test_mul_that_is_not_a_channel_scale_stays(c_shape: tuple) -> None:
    graph, _ = optimize_and_check(_conv_mul(c_shape, True), passes=["fold_conv_mul"])
    assert ops(graph) == ["Conv", "Mul"]


def test_caffe_scale_after_batchnorm_folds_completely() -> None:
    """Conv -> BatchNormalization -> Mul -> Add -> Relu (inception_v2's pattern) becomes one Conv."""
    rng = np.random.default_rng(8)
    inits = {"w": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
             "scale": rng.uniform(0.5, 1.5, 4).astype(np.float32), "bias": rng.standard_normal(4).astype(np.float32),
             "mean": rng.standard_normal(4).astype(np.float32), "var": rng.uniform(0.5, 1.5, 4).astype(np.float32),
             "s": rng.standard_normal((4, 1, 1)).astype(np.float32),
             "t": rng.standard_normal((4, 1, 1)).astype(np.float32)}
    model = make_model([
        node("Conv", ["x", "w"], ["c"]),
        node("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["n"]),
        node("Mul", ["n", "s"], ["m"]),
        node("Add", ["m", "t"], ["a"]),
        node("Relu", ["a"], ["y"]),
    ], [info("x", ["n", 3, 6, 6])], [info("y", None)], inits)
    graph, _ = optimize_and_check(model)
    assert ops(graph) == ["Conv"]
