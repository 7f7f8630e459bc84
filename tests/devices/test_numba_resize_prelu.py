"""The numba backend's Resize and per-channel PRelu against onnxruntime, and their fallbacks."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from edgerun.converters import from_onnx
from edgerun.runtime import Interpreter
from tests.devices.test_numba_kernels import run_both
from tests.onnx_models import make_model

F32 = TensorProto.FLOAT


def _resize_model(x_shape, sizes, **attrs):
    inits = {"roi": np.zeros(0, np.float32), "scales": np.zeros(0, np.float32),
             "sizes": np.array(sizes, np.int64)}
    node = helper.make_node("Resize", ["x", "roi", "scales", "sizes"], ["y"], **attrs)
    return make_model([node], [helper.make_tensor_value_info("x", F32, x_shape)],
                      [helper.make_tensor_value_info("y", F32, None)], inits)


@pytest.mark.parametrize("attrs", [
    dict(mode="linear", coordinate_transformation_mode="half_pixel"),
    dict(mode="linear", coordinate_transformation_mode="align_corners"),
    dict(mode="linear", coordinate_transformation_mode="asymmetric"),
    dict(mode="linear", coordinate_transformation_mode="pytorch_half_pixel"),
    dict(mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
    dict(mode="nearest", coordinate_transformation_mode="half_pixel", nearest_mode="round_prefer_ceil"),
    dict(mode="cubic", coordinate_transformation_mode="half_pixel"),
])
@pytest.mark.parametrize("x_shape,sizes", [((1, 3, 6, 5), (1, 3, 12, 10)), ((2, 4, 9, 7), (2, 4, 4, 3)),
                                           ((1, 2, 5, 5), (1, 2, 5, 11))])
def test_resize_matches_onnxruntime(attrs, x_shape, sizes):
    x = np.random.default_rng(0).standard_normal(x_shape).astype(np.float32)
    steps = run_both(_resize_model(x_shape, sizes, **attrs), {"x": x}, atol=1e-5)
    assert "_run_compiled" in steps


def test_resize_spreads_nan_as_the_reference_does():
    """A NaN input reaches every output whose taps read it (weight 0 included: 0 * NaN), as
    in the reference kernel; onnxruntime skips zero-weight taps."""
    x = np.random.default_rng(0).standard_normal((1, 2, 5, 5)).astype(np.float32)
    x[0, 1, 2, 3] = np.nan
    model = _resize_model((1, 2, 5, 5), (1, 2, 9, 11), mode="linear", coordinate_transformation_mode="align_corners")
    graph = from_onnx(model)
    fast, reference = Interpreter(graph, device="numba"), Interpreter(graph, device="cpu")
    np.testing.assert_array_equal(fast.run({"x": x})["y"], reference.run({"x": x})["y"])
    assert np.isnan(fast.run({"x": x})["y"]).sum() > 0


def test_resize_of_the_channel_axis_falls_back():
    x = np.random.default_rng(1).standard_normal((1, 3, 4, 4)).astype(np.float32)
    steps = run_both(_resize_model((1, 3, 4, 4), (1, 6, 4, 4), mode="nearest"), {"x": x})
    assert "_run_compiled" not in steps


@pytest.mark.parametrize("slope_shape", [(8, 1, 1), (1, 8, 1, 1), (1,), (1, 1, 1)])
def test_prelu_per_channel(slope_shape):
    rng = np.random.default_rng(2)
    slope = rng.uniform(-0.5, 0.5, slope_shape).astype(np.float32)
    node = helper.make_node("PRelu", ["x", "slope"], ["y"])
    model = make_model([node], [helper.make_tensor_value_info("x", F32, (2, 8, 24, 24))],
                       [helper.make_tensor_value_info("y", F32, None)], {"slope": slope})
    x = rng.standard_normal((2, 8, 24, 24)).astype(np.float32)
    x[0, 0, 0, :3] = [np.nan, -np.inf, np.inf]
    steps = run_both(model, {"x": x})
    assert "_run_compiled" in steps


def test_prelu_with_a_slope_per_pixel_falls_back():
    rng = np.random.default_rng(3)
    node = helper.make_node("PRelu", ["x", "slope"], ["y"])
    model = make_model([node], [helper.make_tensor_value_info("x", F32, (1, 8, 24, 24))],
                       [helper.make_tensor_value_info("y", F32, None)],
                       {"slope": rng.uniform(-1, 1, (24, 24)).astype(np.float32)})
    steps = run_both(model, {"x": rng.standard_normal((1, 8, 24, 24)).astype(np.float32)})
    assert "_run_compiled" not in steps
