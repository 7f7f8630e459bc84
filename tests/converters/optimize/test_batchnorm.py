"""fold_batchnorm: BatchNormalization folded into the Conv / Gemm before it."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from tests.converters.optimize.helpers import info, ops, optimize_and_check
from tests.onnx_models import make_model

node = helper.make_node


def _bn_params(channels: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "scale": (1 + 0.3 * rng.standard_normal(channels)).astype(np.float32),
        "bias": rng.standard_normal(channels).astype(np.float32),
        "mean": rng.standard_normal(channels).astype(np.float32),
        "var": (0.5 + rng.random(channels)).astype(np.float32),
    }


BN_INPUTS = ["h", "scale", "bias", "mean", "var"]


@pytest.mark.parametrize("with_bias, group", [(True, 1), (False, 1), (True, 2)])
def test_conv_bn(with_bias: bool, group: int) -> None:
    rng = np.random.default_rng(1)
    inits = {"w": rng.standard_normal((4, 4 // group, 3, 3)).astype(np.float32), **_bn_params(4, rng)}
    conv_inputs = ["x", "w"]
    if with_bias:
        inits["b"] = rng.standard_normal(4).astype(np.float32)
        conv_inputs.append("b")
    model = make_model([
        node("Conv", conv_inputs, ["h"], pads=[1, 1, 1, 1], group=group),
        node("BatchNormalization", BN_INPUTS, ["y"], epsilon=1e-3),
    ], [info("x", ["n", 4, 6, 6])], [info("y", ["n", 4, 6, 6])], inits)
    graph, report = optimize_and_check(model)
    assert ops(graph) == ["Conv"]
    assert graph.nodes[0].outputs[0] is graph.outputs[0] and graph.outputs[0].name == "y"
    assert {p.name: p for p in report.passes}["fold_batchnorm"].changes == {"BatchNormalization into Conv": 1}
    assert report.constants_after == 2


@pytest.mark.parametrize("trans_b, beta, c_shape", [(1, 1.0, (5,)), (0, 0.5, (1, 5)), (1, 2.0, (3, 1)),
                                                    (0, 1.0, None), (1, 0.0, (5,))])
def test_gemm_bn(trans_b: int, beta: float, c_shape: tuple | None) -> None:
    rng = np.random.default_rng(2)
    inits = {"w": rng.standard_normal((5, 4) if trans_b else (4, 5)).astype(np.float32), **_bn_params(5, rng)}
    gemm_inputs = ["x", "w"]
    if c_shape is not None:
        inits["c"] = rng.standard_normal(c_shape).astype(np.float32)
        gemm_inputs.append("c")
    model = make_model([
        node("Gemm", gemm_inputs, ["h"], transB=trans_b, beta=beta, alpha=0.7),
        node("BatchNormalization", BN_INPUTS, ["y"]),
    ], [info("x", [3, 4])], [info("y", [3, 5])], inits)
    graph, _ = optimize_and_check(model)
    assert ops(graph) == ["Gemm"]


def test_bn_not_folded_when_conv_output_is_read_elsewhere() -> None:
    rng = np.random.default_rng(3)
    model = make_model([
        node("Conv", ["x", "w"], ["h"]),
        node("BatchNormalization", BN_INPUTS, ["y"]),
        node("Relu", ["h"], ["z"]),
    ], [info("x", [1, 2, 4, 4])], [info("y", [1, 2, 4, 4]), info("z", [1, 2, 4, 4])],
        {"w": rng.standard_normal((2, 2, 1, 1)).astype(np.float32), **_bn_params(2, rng)})
    graph, _ = optimize_and_check(model)
    assert ops(graph) == ["Conv", "BatchNormalization", "Relu"]


def test_bn_not_folded_when_weights_are_computed() -> None:
    rng = np.random.default_rng(4)
    model = make_model([
        node("Conv", ["x", "w"], ["h"]),
        node("BatchNormalization", BN_INPUTS, ["y"]),
    ], [info("x", [1, 2, 4, 4]), info("w", [2, 2, 1, 1])], [info("y", [1, 2, 4, 4])], _bn_params(2, rng))
    graph, _ = optimize_and_check(model)
    assert ops(graph) == ["Conv", "BatchNormalization"]


def test_shared_weight_is_not_modified() -> None:
    """Two Convs share W; folding the BN after one gives it a new weight."""
    rng = np.random.default_rng(5)
    model = make_model([
        node("Conv", ["x", "w"], ["h"]),
        node("BatchNormalization", BN_INPUTS, ["y"]),
        node("Conv", ["x", "w"], ["z"]),
    ], [info("x", [1, 2, 4, 4])], [info("y", [1, 2, 4, 4]), info("z", [1, 2, 4, 4])],
        {"w": rng.standard_normal((2, 2, 1, 1)).astype(np.float32), **_bn_params(2, rng)})
    graph, _ = optimize_and_check(model)
    assert ops(graph) == ["Conv", "Conv"]
    assert graph.nodes[0].inputs[1] is not graph.nodes[1].inputs[1]


# --- fold_batchnorm_affine: per-channel Mul / Add after a BN join its parameters ---


def _bn_then(ops_after: list[tuple[str, np.ndarray]], rank: int = 4, first: str = "x"):
    """A Concat-fed BN (nothing to fold it into) followed by `ops_after` (op, constant) in turn."""
    rng = np.random.default_rng(3)
    inits = _bn_params(4, rng)
    spatial = [5, 6][: rank - 2]
    nodes = [node("Concat", [first, first], ["h"], axis=1),
             node("BatchNormalization", BN_INPUTS, ["b0"], epsilon=1e-3)]
    for i, (op, constant) in enumerate(ops_after):
        inits[f"c{i}"] = constant
        nodes.append(node(op, [f"b{i}", f"c{i}"] if i % 2 == 0 else [f"c{i}", f"b{i}"], [f"b{i + 1}"]))
    nodes.append(node("Relu", [f"b{len(ops_after)}"], ["y"]))
    return make_model(nodes, [info(first, ["n", 2, *spatial])], [info("y", ["n", 4, *spatial])], inits)


@pytest.mark.parametrize("shape", [(4, 1, 1), (1, 4, 1, 1), (1, 1, 1), (), (1,)])
def test_mul_and_add_after_bn_join_its_parameters(shape: tuple) -> None:
    """The Caffe-era Scale layer (DenseNet's BN -> Mul -> Add), the constant on either side."""
    rng = np.random.default_rng(4)
    size = int(np.prod(shape)) if shape else 1
    m = (rng.standard_normal(size) * 2).astype(np.float32).reshape(shape)
    t = rng.standard_normal(size).astype(np.float32).reshape(shape)
    graph, report = optimize_and_check(_bn_then([("Mul", m), ("Add", t)]))
    assert ops(graph) == ["Concat", "BatchNormalization", "Relu"]
    changes = {p.name: p for p in report.passes}["fold_batchnorm_affine"].changes
    assert changes == {"Mul into BatchNormalization": 1, "Add into BatchNormalization": 1}


def test_add_then_mul_and_negative_or_zero_scales_fold_too() -> None:
    m = np.array([-2.0, 0.0, 0.5, 3.0], np.float32).reshape(4, 1, 1)
    t = np.array([1.0, -1.0, 0.25, 0.0], np.float32).reshape(4, 1, 1)
    graph, _ = optimize_and_check(_bn_then([("Add", t), ("Mul", m), ("Mul", m)]))
    assert ops(graph) == ["Concat", "BatchNormalization", "Relu"]


@pytest.mark.parametrize("constant, why", [
    (np.ones((4, 1), np.float32), "a rank-4 X: (4, 1) lies on the last two axes, not the channels"),
    (np.ones((1, 1, 5, 1), np.float32), "varies along H"),
    (np.ones((2, 4, 1, 1), np.float32), "broadcasts the batch"),
    (np.ones((4, 1, 1), np.float64), "another dtype (onnxruntime refuses the model; we keep it)"),
])
def test_constants_that_are_not_per_channel_stay(constant: np.ndarray, why: str) -> None:
    from edgerun.converters.optimize import optimize
    from tests.converters.optimize.helpers import convert

    graph = convert(_bn_then([("Mul", constant)]))
    optimize(graph, ["fold_batchnorm_affine"])
    assert ops(graph) == ["Concat", "BatchNormalization", "Mul", "Relu"], why


def test_a_rank_3_input_folds_a_channel_constant_of_shape_c_1() -> None:
    t = np.arange(4, dtype=np.float32).reshape(4, 1)
    graph, _ = optimize_and_check(_bn_then([("Add", t)], rank=3))
    assert ops(graph) == ["Concat", "BatchNormalization", "Relu"]


def test_a_bn_output_read_elsewhere_keeps_its_mul() -> None:
    rng = np.random.default_rng(5)
    inits = {**_bn_params(4, rng), "m": np.full((4, 1, 1), 2.0, np.float32)}
    model = make_model([
        node("Concat", ["x", "x"], ["h"], axis=1),
        node("BatchNormalization", BN_INPUTS, ["b"]),
        node("Mul", ["b", "m"], ["y"]),
        node("Relu", ["b"], ["z"]),
    ], [info("x", ["n", 2, 3, 3])], [info("y", ["n", 4, 3, 3]), info("z", ["n", 4, 3, 3])], inits)
    graph, _ = optimize_and_check(model)
    assert ops(graph) == ["Concat", "BatchNormalization", "Mul", "Relu"]
