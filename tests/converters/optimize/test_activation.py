"""fuse_activations: Conv/ConvTranspose/Gemm/MatMul + activation -> one node whose kernel
applies the activation (runtime.kernels.fused), on every backend."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from edgerun.converters.optimize import optimize, unfuse_activations
from edgerun.runtime.kernels.fused import ACTIVATIONS
from tests.converters.optimize.helpers import assert_outputs_close, convert, info, ops, optimize_and_check, run
from tests.onnx_models import make_model, ort_run

node = helper.make_node
RNG = np.random.default_rng(7)

PRODUCERS = {  # op -> (input shape, weight shape, output shape, attrs)
    "Conv": ([2, 3, 5, 5], (4, 3, 3, 3), [2, 4, 5, 5], {"pads": [1, 1, 1, 1]}),
    "ConvTranspose": ([2, 3, 4, 4], (3, 4, 3, 3), [2, 4, 6, 6], {}),
    "Gemm": ([3, 6], (4, 6), [3, 4], {"transB": 1}),
    "MatMul": ([2, 3, 6], (6, 4), [2, 3, 4], {}),
}
ACTIVATION_NODES = {
    "Relu": ([], {}),
    "Clip": (["lo", "hi"], {}),
    "LeakyRelu": ([], {"alpha": 0.2}),
    "HardSigmoid": ([], {"alpha": 0.3, "beta": 0.4}),
    "HardSwish": ([], {}),
    "Sigmoid": ([], {}),
    "Tanh": ([], {}),
}


def _fusable(producer: str, activation: str, opset: int = 17):
    x_shape, w_shape, y_shape, attrs = PRODUCERS[producer]
    extra, act_attrs = ACTIVATION_NODES[activation]
    inits = {"w": RNG.standard_normal(w_shape).astype(np.float32)}
    if extra:
        inits.update(lo=np.array(-0.5, np.float32), hi=np.array(0.7, np.float32))
    return make_model([
        node(producer, ["x", "w"], ["h"], **attrs),
        node(activation, ["h", *extra], ["y"], **act_attrs),
    ], [info("x", x_shape)], [info("y", y_shape)], inits, opset=opset)


def test_every_fused_activation_is_covered() -> None:
    """(PRelu, which takes a per-channel slope and fuses into convolutions only, is covered
    in test_prelu_fusion.py.)"""
    assert set(ACTIVATION_NODES) | {"PRelu"} == set(ACTIVATIONS)


@pytest.mark.parametrize("device", ["cpu", "auto"])
@pytest.mark.parametrize("activation", list(ACTIVATION_NODES))
@pytest.mark.parametrize("producer", list(PRODUCERS))
def test_fused(producer: str, activation: str, device: str) -> None:
    graph, report = optimize_and_check(_fusable(producer, activation), passes=["fuse_activations"], device=device)
    assert ops(graph) == [producer]
    assert graph.nodes[0].attrs["activation"] == activation
    assert report.passes[0].changes == {f"{producer}+{activation}": 1}


def test_activation_params() -> None:
    graph = convert(_fusable("Conv", "HardSigmoid"))
    optimize(graph)
    assert graph.nodes[0].attrs["activation_params"] == pytest.approx([0.3, 0.4])
    graph = convert(_fusable("Gemm", "Clip"))
    optimize(graph)
    assert graph.nodes[0].attrs["activation_params"] == pytest.approx([-0.5, 0.7])
    graph = convert(_fusable("Gemm", "Relu"))
    optimize(graph)
    assert "activation_params" not in graph.nodes[0].attrs


@pytest.mark.parametrize("opset, bounds", [(17, []), (17, ["", "hi"]), (6, [])])
def test_clip_without_bounds(opset: int, bounds: list[str]) -> None:
    clip_attrs = {"min": -0.2} if opset < 11 else {}
    model = make_model([node("MatMul", ["x", "w"], ["h"]), node("Clip", ["h", *bounds], ["y"], **clip_attrs)],
                       [info("x", [3, 6])], [info("y", [3, 4])],
                       {"w": RNG.standard_normal((6, 4)).astype(np.float32), "hi": np.array(0.1, np.float32)},
                       opset=opset)
    graph, _ = optimize_and_check(model)
    assert ops(graph) == ["MatMul"]


def test_clip_with_computed_bound_is_not_fused() -> None:
    model = make_model([node("MatMul", ["x", "w"], ["h"]), node("Clip", ["h", "lo"], ["y"])],
                       [info("x", [2, 6]), info("lo", [])], [info("y", [2, 4])],
                       {"w": RNG.standard_normal((6, 4)).astype(np.float32)})
    graph, _ = optimize_and_check(model, {"x": RNG.standard_normal((2, 6)).astype(np.float32),
                                          "lo": np.array(0.1, np.float32)})
    assert ops(graph) == ["MatMul", "Clip"]


def test_not_fused_when_the_output_is_read_twice() -> None:
    model = make_model([node("Conv", ["x", "w"], ["h"]), node("Relu", ["h"], ["y"]), node("Neg", ["h"], ["z"])],
                       [info("x", [1, 3, 4, 4])], [info("y", [1, 4, 2, 2]), info("z", [1, 4, 2, 2])],
                       {"w": RNG.standard_normal((4, 3, 3, 3)).astype(np.float32)})
    graph, _ = optimize_and_check(model)
    assert ops(graph) == ["Conv", "Relu", "Neg"]


def test_integer_matmul_is_not_fused() -> None:
    model = make_model([node("MatMul", ["x", "w"], ["h"]), node("Relu", ["h"], ["y"])],
                       [info("x", [2, 3], TensorProto.INT32)], [info("y", [2, 2], TensorProto.INT32)],
                       {"w": np.arange(6, dtype=np.int32).reshape(3, 2)})
    graph, _ = optimize_and_check(model, {"x": np.array([[1, -2, 3], [-4, 5, -6]], np.int32)})
    assert ops(graph) == ["MatMul", "Relu"]


def test_second_activation_is_not_fused() -> None:
    model = make_model([node("Conv", ["x", "w"], ["h"]), node("Relu", ["h"], ["r"]), node("Sigmoid", ["r"], ["y"])],
                       [info("x", [1, 3, 4, 4])], [info("y", [1, 4, 2, 2])],
                       {"w": RNG.standard_normal((4, 3, 3, 3)).astype(np.float32)})
    graph, _ = optimize_and_check(model)
    assert ops(graph) == ["Conv", "Sigmoid"]


@pytest.mark.parametrize("activation", list(ACTIVATION_NODES))
def test_unfuse_restores_two_nodes(activation: str) -> None:
    model = _fusable("Conv", activation)
    graph, _ = optimize_and_check(model, device="cpu")
    assert unfuse_activations(graph) == 1
    assert ops(graph) == ["Conv", activation] and "activation" not in graph.nodes[0].attrs
    assert graph.nodes[1].outputs[0] is graph.outputs[0]
    x = RNG.standard_normal((2, 3, 5, 5)).astype(np.float32)
    assert_outputs_close(run(graph, {"x": x}, "cpu"), ort_run(model, {"x": x}))


@pytest.mark.parametrize("opset, bounds", [(17, ["", "hi"]), (17, ["lo"]), (6, [])])
def test_unfuse_clip_with_open_bounds(opset: int, bounds: list[str]) -> None:
    model = make_model([node("MatMul", ["x", "w"], ["h"]), node("Clip", ["h", *bounds], ["y"])],
                       [info("x", [3, 6])], [info("y", [3, 4])],
                       {"w": RNG.standard_normal((6, 4)).astype(np.float32), "hi": np.array(0.1, np.float32),
                        "lo": np.array(-0.1, np.float32)}, opset=opset)
    graph, _ = optimize_and_check(model)
    unfuse_activations(graph)
    assert ops(graph) == ["MatMul", "Clip"]
    x = RNG.standard_normal((3, 6)).astype(np.float32)
    assert_outputs_close(run(graph, {"x": x}), ort_run(model, {"x": x}))
