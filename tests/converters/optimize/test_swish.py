"""fuse_swish: x * Sigmoid(x) after a Conv / ConvTranspose / Gemm / MatMul becomes the fused
activation "Swish" (EfficientNet's SiLU), on both backends, against onnxruntime; and where it
must not fuse, it does not."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from edgerun.converters.optimize import optimize, unfuse_activations
from tests.converters.optimize.helpers import assert_outputs_close, convert, info, ops, optimize_and_check, run
from tests.onnx_models import make_model, ort_run

node = helper.make_node
RNG = np.random.default_rng(5)

PRODUCERS = {  # op -> (input shape, weight shape, attrs)
    "Conv": ((2, 3, 9, 9), (6, 3, 3, 3), {"pads": [1, 1, 1, 1]}),
    "ConvTranspose": ((2, 3, 5, 5), (3, 6, 3, 3), {}),
    "Gemm": ((4, 6), (5, 6), {"transB": 1}),
    "MatMul": ((2, 4, 6), (6, 5), {}),
}


def _model(producer: str, *, swap=False, group=1, x_shape=None, extra_reader=None):
    shape, w_shape, attrs = PRODUCERS[producer]
    shape = x_shape or shape
    if group > 1:
        w_shape, attrs = (shape[1], 1, 3, 3), {"pads": [1, 1, 1, 1], "group": group}
    nodes = [node(producer, ["x", "w"], ["h"], **attrs), node("Sigmoid", ["h"], ["s"]),
             node("Mul", ["s", "h"] if swap else ["h", "s"], ["y"])]
    outputs = [info("y", None)]
    if extra_reader is not None:
        nodes.append(extra_reader)
        outputs.append(info("z", None))
    return make_model(nodes, [info("x", list(shape))], outputs,
                      {"w": RNG.standard_normal(w_shape).astype(np.float32)})


@pytest.mark.parametrize("device", ["cpu", "auto"])
@pytest.mark.parametrize("swap", [False, True])
@pytest.mark.parametrize("producer", list(PRODUCERS))
def test_swish_is_fused(producer, swap, device):
    graph, report = optimize_and_check(_model(producer, swap=swap), passes=["fuse_swish"], device=device)
    assert ops(graph) == [producer]
    assert graph.nodes[0].attrs["activation"] == "Swish"
    assert report.passes[0].changes == {"Sigmoid*Mul into Swish": 1}


@pytest.mark.parametrize("group", [1, 16])
def test_large_outputs_through_the_compiled_paths_keep_nan_and_inf(group):
    """Depthwise (group 16) and GEMM convolutions apply Swish in their compiled epilogue."""
    model = _model("Conv", group=group, x_shape=(1, 16, 40, 40))
    if group == 1:
        model = make_model([node("Conv", ["x", "w"], ["h"], pads=[1, 1, 1, 1]), node("Sigmoid", ["h"], ["s"]),
                            node("Mul", ["h", "s"], ["y"])], [info("x", [1, 16, 40, 40])], [info("y", None)],
                           {"w": RNG.standard_normal((16, 16, 3, 3)).astype(np.float32)})
    # depthwise sums 9 terms: large inputs reach past expf's range (|v| > 88) without the
    # cancellation a 144-term sum would add; the GEMM case stays at a moderate scale
    scale = 30 if group > 1 else 3
    x = (RNG.standard_normal((1, 16, 40, 40)) * scale).astype(np.float32)
    x[0, 0, 10, 10], x[0, 1, 20, 20], x[0, 2, 5, 5] = np.nan, np.inf, -np.inf
    graph = convert(model)
    optimize(graph)
    assert "Sigmoid" not in ops(graph)
    want = ort_run(model, {"x": x})
    for device in ("cpu", "auto"):
        assert_outputs_close(run(graph, {"x": x}, device), want)


@pytest.mark.parametrize("case", ["h read elsewhere", "sigmoid read elsewhere", "not the same value"])
def test_other_patterns_stay(case):
    if case == "h read elsewhere":
        model = _model("Conv", extra_reader=node("Relu", ["h"], ["z"]))
    elif case == "sigmoid read elsewhere":
        model = _model("Conv", extra_reader=node("Relu", ["s"], ["z"]))
    else:
        model = make_model([node("Conv", ["x", "w"], ["h"], pads=[1, 1, 1, 1]), node("Relu", ["h"], ["r"]),
                            node("Sigmoid", ["r"], ["s"]), node("Mul", ["h", "s"], ["y"])],
                           [info("x", [2, 3, 9, 9])], [info("y", None)],
                           {"w": RNG.standard_normal((6, 3, 3, 3)).astype(np.float32)})
    graph, report = optimize_and_check(model, passes=["fuse_swish"])
    assert "Sigmoid" in ops(graph) and report.passes[0].changes == {}


def test_unfuse_restores_sigmoid_and_mul():
    model = _model("Conv")
    graph = convert(model)
    optimize(graph, ["fuse_swish"])
    assert unfuse_activations(graph) == 1
    assert ops(graph) == ["Conv", "Sigmoid", "Mul"]
    feeds = {"x": RNG.standard_normal((2, 3, 9, 9)).astype(np.float32)}
    assert_outputs_close(run(graph, feeds, "cpu"), ort_run(model, feeds))
