"""The numba backend's convolutions (devices/numba_conv.py) and their compiled epilogue against
onnxruntime and the numpy reference kernels: depthwise over strides, pads (asymmetric, SAME),
dilations, channel multipliers, odd channel counts and batches; every fused activation; float64;
NaN and Inf; thread counts; a mobile network block; and what a steady-state run allocates and
what the backend's threads do between runs."""

from __future__ import annotations

import resource
import time
import tracemalloc

import numpy as np
import pytest
from onnx import TensorProto, helper

from edgerun.converters import from_onnx
from edgerun.devices.numba_conv import channels_last
from edgerun.runtime import Interpreter
from tests.devices.test_numba_kernels import conv_model
from tests.onnx_models import make_model, ort_run

F32 = TensorProto.FLOAT


def steps_of(it: Interpreter) -> list[str]:
    return [step[0].__name__ for step in it._plans["serving_default"].prepared.steps]


def check_against_onnxruntime(model, feeds, *, atol=1e-4, num_threads=None):
    it = Interpreter(from_onnx(model), device="numba", num_threads=num_threads)
    ours, theirs = it.run(feeds), ort_run(model, feeds)
    for name, want in theirs.items():
        np.testing.assert_allclose(ours[name], want, rtol=1e-4, atol=atol)
    return it


DEPTHWISE = [  # x shape, w shape, Conv attributes
    ((1, 8, 12, 12), (8, 1, 3, 3), dict(pads=[1, 1, 1, 1])),
    ((2, 5, 9, 11), (5, 1, 3, 3), dict(pads=[1, 1, 1, 1], strides=[2, 2])),          # odd sizes, batch 2
    ((1, 7, 10, 10), (7, 1, 3, 3), dict(pads=[0, 1, 2, 0], strides=[2, 1])),          # asymmetric
    ((1, 4, 13, 13), (4, 1, 5, 5), dict(pads=[2, 2, 2, 2], strides=[2, 2])),          # EfficientNet 5x5 s2
    ((1, 6, 9, 9), (6, 1, 5, 5), dict(pads=[2, 2, 2, 2])),
    ((1, 3, 11, 11), (3, 1, 3, 3), dict(pads=[2, 2, 2, 2], dilations=[2, 2])),
    ((1, 3, 11, 9), (3, 1, 3, 3), dict(pads=[1, 2, 1, 2], dilations=[1, 2], strides=[1, 2])),
    ((1, 4, 8, 8), (8, 1, 3, 3), dict(pads=[1, 1, 1, 1])),                            # multiplier 2
    ((3, 4, 7, 7), (12, 1, 3, 3), dict(pads=[1, 1, 1, 1], strides=[2, 2])),           # multiplier 3, batch 3
    ((1, 5, 8, 8), (5, 1, 3, 3), dict(auto_pad="SAME_UPPER", strides=[2, 2])),
    ((1, 5, 8, 8), (5, 1, 4, 4), dict(auto_pad="SAME_LOWER")),
    ((1, 5, 6, 6), (5, 1, 3, 3), {}),                                                 # no padding
    ((1, 3, 2, 2), (3, 1, 3, 3), dict(pads=[1, 1, 1, 1])),                            # smaller than the kernel
    ((1, 3, 9, 9), (3, 1, 1, 1), dict(strides=[3, 3])),                               # 1x1 depthwise
    ((1, 4, 10, 6), (4, 1, 3, 2), dict(pads=[1, 0, 1, 1], strides=[3, 3])),           # stride 3, 3x2
    ((1, 2, 1, 16), (2, 1, 1, 3), dict(pads=[0, 1, 0, 1])),                           # one row
    # output planes over channels_last's limits: the plane-by-plane kernel
    ((1, 3, 40, 40), (3, 1, 3, 3), dict(pads=[1, 1, 1, 1])),
    ((2, 3, 64, 66), (3, 1, 3, 3), dict(pads=[0, 1, 1, 0], strides=[2, 2])),
    ((1, 2, 36, 36), (4, 1, 5, 5), dict(pads=[2, 2, 2, 2], dilations=[1, 2])),         # multiplier 2, 5x5
    ((1, 2, 70, 35), (2, 1, 3, 3), dict(auto_pad="SAME_LOWER", strides=[1, 1])),
    ((1, 3, 31, 33), (3, 1, 5, 5), dict(auto_pad="SAME_UPPER")),                    # 5x5 s1 rows (palm detector)
    ((2, 2, 30, 29), (2, 1, 7, 7), dict(pads=[3, 2, 3, 4])),                          # 7x7 s1, asymmetric
    # all 25 taps of a 5x5 kernel in one pass: over wide rows (stride 1), over quarters (stride 2)
    ((2, 5, 15, 13), (5, 1, 5, 5), dict(pads=[2, 2, 2, 2])),                          # odd channels, batch 2
    ((3, 3, 45, 43), (3, 1, 5, 5), dict(pads=[2, 1, 2, 3], strides=[2, 2])),          # asymmetric, batch 3
    ((1, 3, 14, 14), (3, 1, 5, 5), dict(pads=[4, 4, 4, 4], dilations=[2, 2])),
    ((1, 5, 49, 47), (5, 1, 5, 5), dict(pads=[4, 2, 4, 2], strides=[2, 2], dilations=[2, 1])),
    ((2, 7, 12, 12), (7, 1, 3, 3), dict(pads=[1, 1, 1, 1])),                          # 3x3 at 12x12: planes
    # stride 2 both ways over the plane's four quarters: odd and even pads on either side
    ((1, 3, 61, 63), (3, 1, 3, 3), dict(pads=[1, 0, 0, 2], strides=[2, 2])),
    ((1, 2, 63, 64), (2, 1, 5, 5), dict(pads=[2, 3, 1, 2], strides=[2, 2])),
    ((2, 2, 64, 65), (4, 1, 7, 7), dict(pads=[3, 3, 3, 3], strides=[2, 2])),          # 7x7, multiplier 2
    ((1, 3, 66, 67), (3, 1, 2, 2), dict(strides=[2, 2])),                               # 2x2, no padding
]


@pytest.mark.parametrize("x_shape,w_shape,attrs", DEPTHWISE)
@pytest.mark.parametrize("bias", [True, False])
def test_depthwise_matches_onnxruntime(x_shape, w_shape, attrs, bias):
    model, feeds = conv_model(x_shape, w_shape, bias=bias, group=x_shape[1], **attrs)
    it = check_against_onnxruntime(model, feeds)
    (step,) = steps_of(it)
    out_shape = it.run(feeds)["y"].shape[2:]
    kernel, strides, dilations = w_shape[2:], tuple(attrs.get("strides", (1, 1))), tuple(attrs.get("dilations", (1, 1)))
    small = channels_last(kernel, strides, dilations, out_shape) and w_shape[0] == x_shape[1]
    assert step == ("_run_depthwise_channels_last" if small else "_run_depthwise")


@pytest.mark.parametrize("x_shape,w_shape,attrs", DEPTHWISE[:6] + DEPTHWISE[-9:])
def test_depthwise_float64_matches_the_reference(x_shape, w_shape, attrs):
    model, feeds = conv_model(x_shape, w_shape, group=x_shape[1], dtype=np.float64, **attrs)
    want = Interpreter(from_onnx(model), device="cpu").run(feeds)["y"]
    it = Interpreter(from_onnx(model), device="numba")
    np.testing.assert_allclose(it.run(feeds)["y"], want, rtol=1e-12, atol=1e-12)
    assert steps_of(it)[0].startswith("_run_depthwise")


ACTIVATIONS = [("Relu", {}), ("Clip", dict(min=0.0, max=6.0)), ("LeakyRelu", dict(alpha=0.1)),
               ("HardSigmoid", dict(alpha=0.2, beta=0.5)), ("HardSwish", {}), ("Sigmoid", {}), ("Tanh", {})]


def conv_act_model(x_shape, w_shape, activation, act_attrs, **conv_attrs):
    """x -> Conv -> activation -> y, Clip's bounds as constant inputs (opset 13)."""
    model, feeds = conv_model(x_shape, w_shape, **conv_attrs)
    graph = model.graph
    graph.node[0].output[0] = "c"
    inputs = ["c"]
    if activation == "Clip":
        for name, value in (("lo", act_attrs["min"]), ("hi", act_attrs["max"])):
            graph.initializer.append(helper.make_tensor(name, F32, [], [value]))
        inputs += ["lo", "hi"]
        act_attrs = {}
    graph.node.append(helper.make_node(activation, inputs, ["y"], **act_attrs))
    return model, feeds


@pytest.mark.parametrize("activation,act_attrs", ACTIVATIONS)
@pytest.mark.parametrize("x_shape,w_shape,group", [
    ((1, 6, 9, 9), (6, 1, 3, 3), 6),       # depthwise
    ((2, 6, 7, 7), (10, 6, 1, 1), 1),      # pointwise
    ((1, 3, 9, 9), (5, 3, 3, 3), 1),       # im2col
    ((1, 6, 8, 8), (9, 2, 3, 3), 3),       # grouped
])
def test_fused_activations_match_onnxruntime(activation, act_attrs, x_shape, w_shape, group):
    model, feeds = conv_act_model(x_shape, w_shape, activation, act_attrs, group=group, pads=[1, 1, 1, 1]
                                  if w_shape[2] == 3 else [0, 0, 0, 0])
    feeds["x"] *= 3  # values well past every activation's bends
    it = check_against_onnxruntime(model, feeds)
    assert len(steps_of(it)) == 1  # the activation is fused into the Conv


@pytest.mark.parametrize("x_shape,w_shape,group", [
    ((1, 4, 8, 8), (4, 1, 3, 3), 4), ((1, 4, 30, 30), (4, 1, 3, 3), 4), ((1, 4, 8, 8), (6, 4, 1, 1), 1),
    ((2, 4, 8, 8), (6, 4, 3, 3), 1), ((2, 4, 16, 16), (4, 1, 5, 5), 4)])
@pytest.mark.parametrize("activation", [None, "Relu", "Clip"])
def test_nan_and_inf_propagate_like_the_reference(x_shape, w_shape, group, activation):
    model, feeds = (conv_model(x_shape, w_shape, group=group, pads=[1, 1, 1, 1] if w_shape[2] == 3 else [0] * 4)
                    if activation is None else
                    conv_act_model(x_shape, w_shape, activation, dict(min=0.0, max=6.0) if activation == "Clip" else {},
                                   group=group, pads=[1, 1, 1, 1] if w_shape[2] == 3 else [0] * 4))
    feeds["x"][0, 1, 2, 3] = np.nan
    feeds["x"][0, 2, 5, 5] = np.inf
    feeds["x"][-1, 3, 0, 0] = -np.inf
    want = Interpreter(from_onnx(model), device="cpu").run(feeds)["y"]
    got = Interpreter(from_onnx(model), device="numba").run(feeds)["y"]
    assert np.isnan(want).any()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("x_shape,strides,path", [
    ((2, 5, 15, 15), [1, 1], "_run_depthwise"),                     # 5x5 over wide rows
    ((2, 5, 45, 43), [2, 2], "_run_depthwise"),                     # 5x5 over the plane's quarters
    ((3, 5, 13, 13), [2, 2], "_run_depthwise_channels_last"),
])
def test_depthwise_swish_keeps_nan_and_inf(x_shape, strides, path):
    """EfficientNet's depthwise 5x5 + SiLU (fused into one Swish activation), the activation
    applied over whole output planes: values past expf's range, NaN and +-Inf as onnxruntime."""
    model, feeds = conv_model(x_shape, (x_shape[1], 1, 5, 5), group=x_shape[1], pads=[2, 2, 2, 2], strides=strides)
    graph = model.graph
    graph.node[0].output[0] = "c"
    graph.node.extend([helper.make_node("Sigmoid", ["c"], ["s"]), helper.make_node("Mul", ["c", "s"], ["y"])])
    feeds["x"] *= 20
    feeds["x"][0, 1, 2, 3] = np.nan
    feeds["x"][0, 2, 5, 5] = np.inf
    feeds["x"][-1, 3, 0, 0] = -np.inf
    it = Interpreter(from_onnx(model), device="numba")
    assert steps_of(it) == [path]
    got, want = it.run(feeds)["y"], ort_run(model, feeds)["y"]
    assert np.isnan(want).any()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(got[~finite], want[~finite])


@pytest.mark.parametrize("x_shape,w_shape,group", [((2, 16, 14, 14), (16, 1, 3, 3), 16),
                                                   ((2, 16, 32, 32), (16, 1, 3, 3), 16),
                                                   ((2, 16, 14, 14), (24, 16, 3, 3), 1)])
def test_thread_count_does_not_change_results(x_shape, w_shape, group):
    model, feeds = conv_model(x_shape, w_shape, group=group, pads=[1, 1, 1, 1], activation="Relu")
    one = Interpreter(from_onnx(model), device="numba", num_threads=1).run(feeds)["y"]
    two = Interpreter(from_onnx(model), device="numba", num_threads=2).run(feeds)["y"]
    if group > 1:  # depthwise: each output plane is computed by one thread, whatever the count
        np.testing.assert_array_equal(one, two)
    else:  # BLAS may split its sums differently across threads
        np.testing.assert_allclose(one, two, rtol=1e-5, atol=1e-5)


def mobile_block_model(channels=8, expand=4, seed=0):
    """The blocks mobile CNNs are made of: a stem Conv + HardSwish, an inverted residual
    (1x1 expand + Clip(0, 6), 3x3 depthwise + Clip, 1x1 project, residual Add), a
    squeeze-excite (GlobalAveragePool, 1x1 + Relu, 1x1 + HardSigmoid, Mul), a ShuffleNet
    channel shuffle (Reshape-Transpose-Reshape), a stride-2 5x5 depthwise with SiLU written as
    x * Sigmoid(x), Concat, and a classifier head."""
    rng = np.random.default_rng(seed)
    c, e = channels, channels * expand
    inits = {}

    def weight(name, shape):
        fan_in = int(np.prod(shape[1:]))
        inits[name] = (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)
        inits[name + "_b"] = (rng.standard_normal(shape[0]) * 0.1).astype(np.float32)
        return [name, name + "_b"]

    inits["zero"], inits["six"] = np.array(0, np.float32), np.array(6, np.float32)
    inits["shape_g"] = np.array([0, 2, c // 2, -1], np.int64)
    inits["shape_back"] = np.array([0, c, 8, 8], np.int64)
    n = helper.make_node
    nodes = [
        n("Conv", ["x", *weight("stem", (c, 3, 3, 3))], ["s0"], pads=[1, 1, 1, 1], strides=[2, 2]),
        n("HardSwish", ["s0"], ["s1"]),
        n("Conv", ["s1", *weight("expand", (e, c, 1, 1))], ["e0"]),
        n("Clip", ["e0", "zero", "six"], ["e1"]),
        n("Conv", ["e1", *weight("dw", (e, 1, 3, 3))], ["d0"], pads=[1, 1, 1, 1], group=e),
        n("Clip", ["d0", "zero", "six"], ["d1"]),
        n("GlobalAveragePool", ["d1"], ["se0"]),
        n("Conv", ["se0", *weight("se_reduce", (c, e, 1, 1))], ["se1"]),
        n("Relu", ["se1"], ["se2"]),
        n("Conv", ["se2", *weight("se_expand", (e, c, 1, 1))], ["se3"]),
        n("HardSigmoid", ["se3"], ["se4"], alpha=1 / 6, beta=0.5),
        n("Mul", ["d1", "se4"], ["d2"]),
        n("Conv", ["d2", *weight("project", (c, e, 1, 1))], ["p0"]),
        n("Add", ["p0", "s1"], ["r0"]),
        n("Reshape", ["r0", "shape_g"], ["g0"]),
        n("Transpose", ["g0"], ["g1"], perm=[0, 2, 1, 3]),
        n("Reshape", ["g1", "shape_back"], ["g2"]),
        n("Conv", ["g2", *weight("dw5", (c, 1, 5, 5))], ["f0"], pads=[2, 2, 2, 2], strides=[2, 2], group=c),
        n("Sigmoid", ["f0"], ["f1"]),
        n("Mul", ["f0", "f1"], ["f2"]),
        n("Conv", ["g2", *weight("side", (c, c, 3, 3))], ["h0"], pads=[1, 1, 1, 1], strides=[2, 2]),
        n("Concat", ["f2", "h0"], ["cat"], axis=1),
        n("GlobalAveragePool", ["cat"], ["pool"]),
        n("Flatten", ["pool"], ["flat"]),
        n("Gemm", ["flat", "head", "head_b"], ["y"], transB=1),
    ]
    inits["head"] = (rng.standard_normal((10, 2 * c)) / 4).astype(np.float32)
    inits["head_b"] = np.zeros(10, np.float32)
    return make_model(nodes, [helper.make_tensor_value_info("x", F32, ["n", 3, 16, 16])],
                      [helper.make_tensor_value_info("y", F32, None)], inits, opset=14)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("num_threads", [1, 2])
def test_mobile_block_matches_onnxruntime(batch, num_threads):
    model = mobile_block_model()
    x = np.random.default_rng(batch).standard_normal((batch, 3, 16, 16)).astype(np.float32)
    it = check_against_onnxruntime(model, {"x": x}, atol=1e-5, num_threads=num_threads)
    steps = set(steps_of(it))
    # the pointwise products channels-last next to the depthwise one where the layout pass put them there
    assert "_run_depthwise_channels_last" in steps and steps & {"_run_gemm", "_run_pointwise_layouts"}


def test_steady_state_run_allocates_only_its_results():
    model = mobile_block_model(channels=16)
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    it = Interpreter(from_onnx(model), device="numba")
    for _ in range(3):  # compile, fill the scratch buffers
        it.run({"x": x})
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for _ in range(5):
            result = it.run({"x": x})
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename") if stat.size_diff > 0)
    # what stays allocated after five runs: the last result (80 bytes of data) and small change
    assert grown < 16 * 1024, [str(s) for s in after.compare_to(before, "lineno")[:5]]
    assert result["y"].shape == (2, 10)


def test_no_thread_spins_between_runs():
    model = mobile_block_model(channels=16)
    x = np.random.default_rng(0).standard_normal((4, 3, 16, 16)).astype(np.float32)
    it = Interpreter(from_onnx(model), device="numba", num_threads=2)
    for _ in range(3):
        it.run({"x": x})
    start = resource.getrusage(resource.RUSAGE_SELF)
    time.sleep(0.5)
    end = resource.getrusage(resource.RUSAGE_SELF)
    busy = (end.ru_utime - start.ru_utime) + (end.ru_stime - start.ru_stime)
    assert busy < 0.1, f"the process used {busy:.2f} s of CPU while idle for 0.5 s"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_and_batchnorm_fast_paths_match_the_reference(dtype):
    """Relu and inference BatchNormalization over a tensor large enough for their compiled
    parallel passes, with NaN and infinities, against the numpy reference kernels."""
    rng = np.random.default_rng(4)
    shape = (2, 16, 40, 40)
    elem = F32 if dtype == np.float32 else TensorProto.DOUBLE
    inits = {"scale": rng.uniform(0.5, 1.5, 16).astype(dtype), "bias": rng.standard_normal(16).astype(dtype),
             "mean": rng.standard_normal(16).astype(dtype), "var": rng.uniform(0.5, 1.5, 16).astype(dtype)}
    model = make_model([
        helper.make_node("BatchNormalization", ["x", "scale", "bias", "mean", "var"], ["n"]),
        helper.make_node("Relu", ["n"], ["y"]),
    ], [helper.make_tensor_value_info("x", elem, shape)], [helper.make_tensor_value_info("y", elem, None)], inits)
    x = rng.standard_normal(shape).astype(dtype)
    x[0, 0, 0, :3] = [np.nan, np.inf, -np.inf]
    want = Interpreter(from_onnx(model, optimize=False), device="cpu").run({"x": x})["y"]
    it = Interpreter(from_onnx(model, optimize=False), device="numba")
    np.testing.assert_allclose(it.run({"x": x})["y"], want, rtol=1e-6, atol=1e-6)
    assert steps_of(it) == ["_run_compiled", "_run_compiled"]
    if dtype == np.float32:
        np.testing.assert_allclose(it.run({"x": x})["y"], ort_run(model, {"x": x})["y"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(3, 7), (16, 16), (2, 24, 56, 56), (1, (1 << 14) + 5)])
def test_sigmoid_fast_path_matches_the_closed_form(shape):
    """float32 Sigmoid with its own vectorized exp, against 1 / (1 + exp(-x)) in float64 and
    onnxruntime, over the whole float32 range: NaN stays NaN, +-inf give 1 and 0."""
    x = (np.random.default_rng(5).standard_normal(shape) * 30).astype(np.float32)
    flat = x.reshape(-1)
    flat[:6] = [np.nan, np.inf, -np.inf, 0.0, 88.0, -104.0]
    model = make_model([helper.make_node("Sigmoid", ["x"], ["y"])], [helper.make_tensor_value_info("x", F32, shape)],
                       [helper.make_tensor_value_info("y", F32, None)])
    it = Interpreter(from_onnx(model), device="numba")
    got = it.run({"x": x})["y"]
    assert steps_of(it) == ["_run_compiled" if x.size >= 1 << 14 else "run"]  # small: numpy's calls are cheaper
    with np.errstate(over="ignore"):
        want = 1.0 / (1.0 + np.exp(-x.astype(np.float64)))
    np.testing.assert_allclose(got, want, rtol=3e-7, atol=1e-38)
    # onnxruntime's fast logistic is the less exact one: off by up to ~1.4e-7 absolute near 1e-7
    np.testing.assert_allclose(got, ort_run(model, {"x": x})["y"], rtol=1e-5, atol=3e-7)


def test_depthwise_planes_into_a_strided_output():
    """The plane-by-plane kernel activates whole output planes as flat rows; an output that is
    a strided view (not one the planner makes, but a caller's) still gets every value."""
    model, feeds = conv_act_model((2, 5, 15, 15), (5, 1, 5, 5), "Clip", dict(min=0.0, max=6.0), group=5,
                                  pads=[2, 2, 2, 2])
    it = Interpreter(from_onnx(model), device="numba")
    want = it.run(feeds)["y"]
    (run, ins, outs, _node), = it._plans["serving_default"].prepared.steps
    assert run.__name__ == "_run_depthwise"
    wide = np.full((2, 5, 15, 30), -1.0, np.float32)
    run([feeds["x"], *ins[1:]], [wide[..., ::2]])
    np.testing.assert_array_equal(wide[..., ::2], want)
    assert (wide[..., 1::2] == -1).all()


def _depthwise_oracle(x, w, bias, geometry):
    """float64 depthwise conv of NCHW x over an explicitly zero-padded copy (0 * inf: NaN)."""
    kh, kw, sh, sw, dh, dw, ph, pw = geometry
    n, c, h, wd = x.shape
    oh = (ph * 2 + h - (kh - 1) * dh - 1) // sh + 1
    ow = (pw * 2 + wd - (kw - 1) * dw - 1) // sw + 1
    padded = np.zeros((n, c, h + 2 * ph + sh * 2, wd + 2 * pw + sw * 2))
    padded[:, :, ph : ph + h, pw : pw + wd] = x
    out = np.broadcast_to(bias.astype(np.float64)[None, :, None, None], (n, c, oh, ow)).copy()
    with np.errstate(invalid="ignore"):
        for i in range(kh):
            for j in range(kw):
                rows = slice(i * dh, i * dh + (oh - 1) * sh + 1, sh)
                window = padded[:, :, rows, j * dw : j * dw + (ow - 1) * sw + 1 : sw]
                out += w[None, :, i, j, None, None].astype(np.float64) * window
    return out


@pytest.mark.parametrize("geometry", [
    (3, 3, 1, 1, 1, 1, 1, 1),   # the nine-tap pass inside, the border taps outside
    (3, 3, 2, 2, 1, 1, 1, 1),
    (3, 3, 1, 2, 2, 1, 2, 0),   # dilation, no column padding
    (5, 5, 2, 2, 1, 1, 2, 2),
    (2, 3, 1, 1, 1, 1, 0, 1),
])
@pytest.mark.parametrize("x_last", [True, False])
def test_depthwise_channels_last_reads_its_input_in_place(geometry, x_last):
    """A channels-last input is read where it lies (no bordered copy): inside windows by
    rows, border windows tap by tap with the outside as zeros, so an infinite weight gives
    NaN at the border as the padded computation does; against a float64 oracle."""
    from edgerun.devices.numba_depthwise import channels_last_buffers, depthwise_channels_last
    from edgerun.devices.numba_epilogue import activation_code

    kh, kw, sh, sw, dh, dw, ph, pw = geometry
    rng = np.random.default_rng(sum(geometry) + x_last)
    x = rng.standard_normal((2, 19, 9, 11)).astype(np.float32)
    x[1, 3, 4, 5] = np.nan
    w = rng.standard_normal((19, kh, kw)).astype(np.float32)
    w[7, 0, 0] = np.inf  # NaN wherever tap (0, 0) reads the zero border, inf/-inf inside
    bias = rng.standard_normal(19).astype(np.float32)
    want = _depthwise_oracle(x, w, bias, geometry)
    out_shape = (2, 19, *want.shape[2:])
    xt, ot = channels_last_buffers(x.shape, out_shape, geometry, np.float32)
    out = np.full(out_shape, 7.0, np.float32)
    code, consts, _ = activation_code(None, np.float32)
    source = np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if x_last else x
    depthwise_channels_last(source, np.ascontiguousarray(w.transpose(1, 2, 0)), bias, out, sh, sw, dh, dw, ph, pw,
                            code, consts, xt, ot, x_last, False)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(want))
    assert np.isnan(out[:, 7]).any() and np.isinf(out[:, 7]).any()
    finite = np.isfinite(want)
    np.testing.assert_array_equal(out[~finite & ~np.isnan(want)], want[~finite & ~np.isnan(want)])
    np.testing.assert_allclose(out[finite], want[finite], rtol=1e-5, atol=1e-5)
