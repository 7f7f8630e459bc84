"""Channels-last regions (runtime/layout.py) in the numba backend's convolutions: inverted
residual blocks (1x1 expand, depthwise, 1x1 project, residual) against onnxruntime and against
the same plan with the pass off; the region forms where it should and stops at tensors read
from outside the convolutions (signature outputs, views, a squeeze-excite's Mul)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from edgerun.converters import from_onnx
from edgerun.runtime import Interpreter, layout
from tests.onnx_models import make_model, ort_run


def block_model(*, channels=8, expand=3, size=12, stride=2, dtype=np.float32, extra_outputs=(), view=False, se=False):
    """x -> stem 1x1 -> [expand 1x1 + Clip, dw 3x3 + Clip, project 1x1, + residual] -> [expand,
    dw stride `stride` + Relu, project] -> y; optionally the first dw's output as a signature
    output, a Reshape of it, or a squeeze-excite Mul on it."""
    rng = np.random.default_rng(channels + size + stride)
    elem = TensorProto.FLOAT if dtype == np.float32 else TensorProto.DOUBLE
    c, e = channels, channels * expand
    inits = {"zero": np.array(0, dtype), "six": np.array(6, dtype)}

    def weight(name, shape):
        inits[name] = (rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(dtype)
        inits[name + "_b"] = (rng.standard_normal(shape[0]) * 0.1).astype(dtype)
        return [name, name + "_b"]

    n = helper.make_node
    nodes = [
        n("Conv", ["x", *weight("stem", (c, 3, 1, 1))], ["s"]),
        n("Conv", ["s", *weight("e1", (e, c, 1, 1))], ["e1o"]), n("Clip", ["e1o", "zero", "six"], ["e1c"]),
        n("Conv", ["e1c", *weight("d1", (e, 1, 3, 3))], ["d1o"], pads=[1, 1, 1, 1], group=e),
        n("Clip", ["d1o", "zero", "six"], ["d1c"]),
    ]
    dw_out = "d1c"
    if se:  # squeeze-excite: GlobalAveragePool, 1x1, HardSigmoid, Mul
        nodes += [n("GlobalAveragePool", ["d1c"], ["g"]), n("Conv", ["g", *weight("se", (e, e, 1, 1))], ["g1"]),
                  n("HardSigmoid", ["g1"], ["g2"]), n("Mul", ["d1c", "g2"], ["d1s"])]
        dw_out = "d1s"
    nodes += [
        n("Conv", [dw_out, *weight("p1", (c, e, 1, 1))], ["p1o"]), n("Add", ["p1o", "s"], ["b1"]),
        n("Conv", ["b1", *weight("e2", (e, c, 1, 1))], ["e2o"]), n("Relu", ["e2o"], ["e2r"]),
        n("Conv", ["e2r", *weight("d2", (e, 1, 3, 3))], ["d2o"], pads=[1, 1, 1, 1], group=e, strides=[stride] * 2),
        n("Relu", ["d2o"], ["d2r"]),
        n("Conv", ["d2r", *weight("p2", (c, e, 1, 1))], ["y"]),
    ]
    outputs = [helper.make_tensor_value_info("y", elem, None)]
    for name in extra_outputs:
        outputs.append(helper.make_tensor_value_info(name, elem, None))
    if view:
        inits["flat"] = np.array([0, -1], np.int64)
        nodes.append(n("Reshape", ["d1c", "flat"], ["v"]))
        outputs.append(helper.make_tensor_value_info("v", elem, None))
    model = make_model(nodes, [helper.make_tensor_value_info("x", elem, (None, 3, None, None))], outputs, inits)
    return model


def run(model, feeds, enabled, num_threads=2):
    previous = layout.ENABLED
    layout.ENABLED = enabled
    try:
        it = Interpreter(from_onnx(model), device="numba", num_threads=num_threads)
        return it, it.run(feeds)
    finally:
        layout.ENABLED = previous


def layouts(it):
    """op -> [(x_last, out_last)] of the numba Conv kernels, in step order."""
    found = []
    for run_, _, _, node in it._plans["serving_default"].prepared.steps:
        kernel = run_.__self__
        if node.op_type in ("Conv", "FusedConv"):
            found.append((node.op_type, bool(kernel.x_last), bool(kernel.out_last)))
    return found


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("num_threads", [1, 2])
def test_blocks_match_onnxruntime_with_and_without_regions(batch, stride, num_threads):
    model = block_model(stride=stride)
    feeds = {"x": np.random.default_rng(batch).standard_normal((batch, 3, 12, 12)).astype(np.float32)}
    want = ort_run(model, feeds)["y"]
    it, got = run(model, feeds, True, num_threads)
    _, plain = run(model, feeds, False, num_threads)
    np.testing.assert_allclose(got["y"], want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["y"], plain["y"], rtol=1e-5, atol=1e-6)
    # every tensor between the stem and the output channels-last: the depthwise convolutions gain
    # from it and so do the pointwise ones with constant weights (our own GEMM's packed panels:
    # devices.numba_microkernel), the residual s (tied to project 1's output) with them
    assert layouts(it) == [
        ("Conv", False, True),         # stem: NCHW x in
        ("Conv", True, True),          # expand 1
        ("Conv", True, True),          # dw 1
        ("FusedConv", True, True),     # project 1 + residual
        ("Conv", True, True),          # expand 2
        ("Conv", True, True),          # dw 2
        ("Conv", True, False),         # project 2: y is an output
    ]
    # a second run on the same plan (already laid out) gives the same
    np.testing.assert_array_equal(it.run(feeds)["y"], got["y"])


def test_float64_regions_match_the_reference():
    model = block_model(dtype=np.float64)
    feeds = {"x": np.random.default_rng(5).standard_normal((2, 3, 12, 12))}
    want = Interpreter(from_onnx(model), device="cpu").run(feeds)["y"]
    it, got = run(model, feeds, True)
    np.testing.assert_allclose(got["y"], want, rtol=1e-12, atol=1e-12)
    assert ("Conv", True, True) in layouts(it)


@pytest.mark.parametrize("kind", ["output", "view"])
def test_tensors_read_outside_the_convolutions_stay_nchw(kind):
    model = block_model(extra_outputs=("d1c",) if kind == "output" else (), view=kind == "view")
    feeds = {"x": np.random.default_rng(2).standard_normal((2, 3, 12, 12)).astype(np.float32)}
    want = ort_run(model, feeds)
    it, got = run(model, feeds, True)
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-4, atol=1e-5)
    first_dw = layouts(it)[2]
    assert first_dw == ("Conv", True, False)  # reads the expand's NHWC, writes NCHW for the outside reader


def test_switched_off_no_kernel_is_told():
    model = block_model()
    feeds = {"x": np.random.default_rng(3).standard_normal((1, 3, 12, 12)).astype(np.float32)}
    it, _ = run(model, feeds, False)
    assert all(not x and not o for _, x, o in layouts(it))


def test_a_new_input_size_lays_out_its_own_preparation():
    model = block_model()
    it, _ = run(model, {"x": np.ones((1, 3, 12, 12), np.float32)}, True)
    feeds = {"x": np.random.default_rng(4).standard_normal((2, 3, 20, 20)).astype(np.float32)}
    np.testing.assert_allclose(it.run(feeds)["y"], ort_run(model, feeds)["y"], rtol=1e-4, atol=1e-5)
    assert ("Conv", True, True) in layouts(it)


@pytest.mark.parametrize("batch", [1, 2])
def test_a_squeeze_excite_keeps_the_region(batch):
    """GlobalAveragePool and the scaling Mul read the depthwise output channels-last; the Mul
    writes it so for the projection."""
    model = block_model(se=True)
    feeds = {"x": np.random.default_rng(batch).standard_normal((batch, 3, 12, 12)).astype(np.float32)}
    it, got = run(model, feeds, True)
    np.testing.assert_allclose(got["y"], ort_run(model, feeds)["y"], rtol=1e-4, atol=1e-5)
    steps = {node.op_type: run_.__self__ for run_, *_, node in it._plans["serving_default"].prepared.steps}
    assert steps["Mul"].x_last and steps["GlobalAveragePool"].run.__name__ == "_run_pixels"
    assert layouts(it)[2] == ("Conv", True, True)  # the depthwise convolution


@pytest.mark.parametrize("case", ["conv3d", "float16", "empty batch"])
def test_fused_convs_on_the_reference_path_stay_out_of_regions(case):
    """A FusedConv (Conv + Add) that the numba kernel leaves to the reference kernel offers
    nothing to the layout pass (its first run once failed asking)."""
    rng = np.random.default_rng(0)
    dtype = np.float16 if case == "float16" else np.float32
    elem = TensorProto.FLOAT16 if case == "float16" else TensorProto.FLOAT
    shape = (1, 4, 3, 3, 3) if case == "conv3d" else ((0, 4, 6, 6) if case == "empty batch" else (1, 4, 6, 6))
    w = (rng.standard_normal((4, 4) + (1,) * (len(shape) - 2)) * 0.3).astype(dtype)
    model = make_model([helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Add", ["c", "x"], ["y"])],
                       [helper.make_tensor_value_info("x", elem, (None, *shape[1:]))],
                       [helper.make_tensor_value_info("y", elem, None)], {"w": w})
    x = rng.standard_normal(shape).astype(dtype)
    want = Interpreter(from_onnx(model), device="cpu").run({"x": x})["y"]
    it, got = run(model, {"x": x}, True)
    assert [n.op_type for *_, n in it._plans["serving_default"].prepared.steps] == ["FusedConv"]
    np.testing.assert_allclose(got["y"], want, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("shape", [(0, 3, 4, 4), (2, 3, 0, 4)])
def test_scaling_an_empty_tensor(shape):
    scale = np.random.default_rng(1).standard_normal((1, 3, 1, 1)).astype(np.float32)
    model = make_model([helper.make_node("Mul", ["x", "s"], ["y"])],
                       [helper.make_tensor_value_info("x", TensorProto.FLOAT, (None, 3, None, 4))],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], {"s": scale})
    got = Interpreter(from_onnx(model), device="numba").run({"x": np.zeros(shape, np.float32)})["y"]
    assert got.shape == shape


@pytest.mark.parametrize("batch", [1, 2])
def test_a_mobile_network_is_the_same_with_the_pass_on_and_off(batch):
    """The mixed mobile network of the convolution tests (stem, inverted residual, squeeze-
    excite, channel shuffle, 5x5 stride-2 depthwise with SiLU, Concat, classifier)."""
    from tests.devices.test_numba_conv import mobile_block_model

    model = mobile_block_model(channels=16)
    feeds = {"x": np.random.default_rng(batch).standard_normal((batch, 3, 16, 16)).astype(np.float32)}
    it, on = run(model, feeds, True)
    _, off = run(model, feeds, False)
    np.testing.assert_allclose(on["y"], off["y"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(on["y"], ort_run(model, feeds)["y"], rtol=1e-4, atol=1e-5)
    assert any(x or o for _, x, o in layouts(it))  # a region formed


@pytest.mark.parametrize("shape", [(1, 49, 150), (2, 196, 64), (3, 5, 1)])
def test_channels_last_mean_over_pixels(shape):
    """GlobalAveragePool's channels-last pass (blocks of 64 channels, float64 sums)."""
    from edgerun.devices.numba_spatial import mean_pixels

    x = np.random.default_rng(shape[2]).standard_normal(shape).astype(np.float32)
    x[0, 0, 0] = np.nan
    out = np.empty((shape[0], shape[2]), np.float32)
    mean_pixels(x, out)
    np.testing.assert_allclose(out, x.astype(np.float64).mean(axis=1), rtol=1e-6, atol=1e-7)
    assert np.isnan(out[0, 0]) and np.isfinite(out[0, 1:]).all()
