"""fuse_activations with PRelu: a per-channel (or single) constant slope after a Conv or
ConvTranspose joins it (mediapipe's models run a PRelu after most convolutions); other slopes
and producers stay separate. Checked against onnxruntime on both backends, with NaN."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from edgerun.converters.optimize import optimize, unfuse_activations
from tests.converters.optimize.helpers import assert_outputs_close, convert, info, ops, optimize_and_check, run
from tests.onnx_models import make_model, ort_run

node = helper.make_node
RNG = np.random.default_rng(11)


def _model(producer: str, slope_shape: tuple[int, ...], x_shape=(2, 3, 9, 9), channels=6, residual=False):
    if producer == "Conv":
        w_shape, attrs = (channels, x_shape[1], 3, 3), {"pads": [1, 1, 1, 1]}
    elif producer == "ConvTranspose":
        w_shape, attrs = (x_shape[1], channels, 3, 3), {}
    else:  # Gemm
        w_shape, attrs = (channels, x_shape[1]), {"transB": 1}
    inits = {"w": RNG.standard_normal(w_shape).astype(np.float32),
             "slope": RNG.uniform(-0.6, 0.6, slope_shape).astype(np.float32)}
    nodes = [node(producer, ["x", "w"], ["h"], **attrs)]
    if residual:
        inits["z"] = RNG.standard_normal((x_shape[0], channels, *x_shape[2:])).astype(np.float32)
        nodes.append(node("Add", ["h", "z"], ["hz"]))
    nodes.append(node("PRelu", ["hz" if residual else "h", "slope"], ["y"]))
    return make_model(nodes, [info("x", list(x_shape))], [info("y", None)], inits)


@pytest.mark.parametrize("device", ["cpu", "auto"])
@pytest.mark.parametrize("slope_shape", [(6, 1, 1), (1, 6, 1, 1), (1,), (), (1, 1, 1)])
@pytest.mark.parametrize("producer", ["Conv", "ConvTranspose"])
def test_per_channel_prelu_is_fused(producer, slope_shape, device):
    graph, report = optimize_and_check(_model(producer, slope_shape), passes=["fuse_activations"], device=device)
    assert ops(graph) == [producer]
    assert graph.nodes[0].attrs["activation"] == "PRelu"
    assert len(graph.nodes[0].attrs["activation_params"]) in (1, 6)


@pytest.mark.parametrize("device", ["cpu", "auto"])
def test_large_outputs_take_the_compiled_epilogue_and_keep_nan(device):
    model = _model("Conv", (1, 16, 1, 1), x_shape=(1, 8, 40, 40), channels=16)
    x = RNG.standard_normal((1, 8, 40, 40)).astype(np.float32)
    x[0, 0, 5, 5] = np.nan
    graph = convert(model)
    optimize(graph)
    assert "PRelu" not in ops(graph)
    assert_outputs_close(run(graph, {"x": x}, device), ort_run(model, {"x": x}))


def test_residual_then_prelu_fuses_into_fused_conv():
    model = _model("Conv", (6, 1, 1), residual=True)
    graph, _ = optimize_and_check(model)
    assert ops(graph) == ["FusedConv"] and graph.nodes[0].attrs["activation"] == "PRelu"


@pytest.mark.parametrize("producer, slope_shape", [
    ("Conv", (6, 9, 9)),        # a slope per pixel
    ("Conv", (9,)),             # along the last axis
    ("Gemm", (6,)),             # channels last: not fused
])
def test_other_slopes_stay_separate(producer, slope_shape):
    x_shape = (2, 3) if producer == "Gemm" else (2, 3, 9, 9)
    graph, report = optimize_and_check(_model(producer, slope_shape, x_shape=x_shape), passes=["fuse_activations"])
    assert "PRelu" in ops(graph)


def test_unfuse_restores_a_prelu():
    model = _model("Conv", (6, 1, 1))
    graph = convert(model)
    optimize(graph, ["fuse_activations"])
    assert unfuse_activations(graph) == 1
    assert ops(graph) == ["Conv", "PRelu"]
    feeds = {"x": RNG.standard_normal((2, 3, 9, 9)).astype(np.float32)}
    assert_outputs_close(run(graph, feeds, "cpu"), ort_run(model, feeds))
