"""The cuda backend's Conv and FusedConv (devices/cuda/conv.py) against the CPU reference kernels,
under numba's CUDA simulator: each path (depthwise, pointwise, im2col) over strides, asymmetric
and SAME pads, dilations, groups and batches; every fused activation; FusedConv's residual, as
the optimizer writes it and broadcast; float64; and convolutions the device leaves to the host."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

import edgerun.devices.cuda.conv  # noqa: F401  (registers the claims)
from edgerun.converters.onnx_import import from_onnx
from edgerun.runtime import Interpreter
from edgerun.runtime.graph import GraphBuilder
from tests.devices.cuda.harness import expect_same_as_cpu
from tests.onnx_models import make_model

ELEM = {np.float16: TensorProto.FLOAT16, np.float32: TensorProto.FLOAT, np.float64: TensorProto.DOUBLE}
TOL = {np.float32: dict(rtol=1e-4, atol=1e-5), np.float64: dict(rtol=1e-10, atol=1e-10)}


def conv_model(x_shape, w_shape, *, bias=True, dtype=np.float32, activation=None, residual=False,
               weights_input=False, **attrs):
    """x -> Conv (W, B constants unless weights_input) [+ z, a graph input] [-> activation] -> y.
    `activation` is (op, attributes, constant inputs). Returns (ONNX bytes, feeds)."""
    rng = np.random.default_rng(sum(x_shape) * 7 + sum(w_shape))
    w = rng.standard_normal(w_shape).astype(dtype)
    inits, names = {}, ["x", "w"]
    inputs = [helper.make_tensor_value_info("x", ELEM[dtype], x_shape)]
    feeds = {"x": rng.standard_normal(x_shape).astype(dtype)}
    if weights_input:
        inputs.append(helper.make_tensor_value_info("w", ELEM[dtype], w_shape))
        feeds["w"] = w
    else:
        inits["w"] = w
    if bias:
        inits["b"] = rng.standard_normal(w_shape[0]).astype(dtype)
        names.append("b")
    nodes, last = [helper.make_node("Conv", names, ["c"], name="conv", **attrs)], "c"
    if residual:
        out_shape = output_shape(x_shape, w_shape, dtype, attrs)
        inputs.append(helper.make_tensor_value_info("z", ELEM[dtype], out_shape))
        feeds["z"] = rng.standard_normal(out_shape).astype(dtype)
        nodes.append(helper.make_node("Add", ["c", "z"], ["s"], name="add"))
        last = "s"
    if activation is not None:
        op, act_attrs, consts = activation
        inits.update({k: np.asarray(v, dtype) for k, v in consts.items()})
        nodes.append(helper.make_node(op, [last, *consts], ["a"], name="act", **act_attrs))
        last = "a"
    nodes.append(helper.make_node("Identity", [last], ["y"], name="out"))
    model = make_model(nodes, inputs, [helper.make_tensor_value_info("y", ELEM[dtype], None)], inits)
    return model.SerializeToString(), feeds


def output_shape(x_shape, w_shape, dtype, attrs) -> tuple[int, ...]:
    """The Conv's output shape, from the CPU reference (the residual must match it)."""
    model, feeds = conv_model(x_shape, w_shape, dtype=dtype, **attrs)
    return Interpreter(from_onnx(model), device="cpu").run(feeds)["y"].shape


def one_node(model: bytes, op: str):
    """The optimized graph, asserting the optimizer left one `op` node (activation, residual fused)."""
    graph = from_onnx(model)
    assert [node.op_type for node in graph.nodes] == [op]
    return graph


IM2COL = [  # x shape, w shape, Conv attributes
    ((1, 3, 6, 6), (4, 3, 3, 3), dict(pads=[1, 1, 1, 1])),
    ((2, 3, 7, 7), (5, 3, 3, 3), dict(strides=[2, 2], pads=[0, 1, 2, 0])),        # batch 2, asymmetric
    ((1, 2, 7, 7), (3, 2, 3, 3), dict(dilations=[2, 2], pads=[1, 1, 1, 1])),
    ((1, 4, 4, 3), (6, 2, 3, 3), dict(group=2, pads=[1, 0, 1, 2])),               # groups 2
    ((1, 3, 7, 7), (4, 3, 3, 3), dict(auto_pad="SAME_UPPER", strides=[2, 2])),
    ((1, 3, 5, 5), (4, 3, 2, 2), dict(auto_pad="SAME_LOWER")),
    ((1, 4, 7, 7), (3, 4, 1, 1), dict(strides=[2, 2])),                            # 1x1 strided
    ((1, 3, 6, 5), (4, 3, 3, 2), dict(strides=[1, 2], pads=[1, 0, 1, 1], dilations=[2, 1])),
    ((1, 2, 3, 3), (3, 2, 5, 5), dict(pads=[2, 2, 2, 2])),                         # every window hangs over
]
POINTWISE = [
    ((2, 5, 4, 5), (7, 5, 1, 1), {}),
    ((1, 4, 3, 3), (6, 2, 1, 1), dict(group=2)),
]
DEPTHWISE = [
    ((2, 4, 6, 6), (4, 1, 3, 3), dict(group=4, pads=[1, 1, 1, 1])),
    ((1, 3, 7, 7), (3, 1, 3, 3), dict(group=3, strides=[2, 2], dilations=[2, 2], pads=[2, 1, 0, 1])),
    ((1, 3, 5, 5), (6, 1, 3, 3), dict(group=3, auto_pad="SAME_UPPER")),            # multiplier 2
    ((1, 1, 6, 6), (3, 1, 3, 3), dict(strides=[2, 1])),                            # one input channel
]


@pytest.mark.parametrize("x_shape,w_shape,attrs", IM2COL + POINTWISE + DEPTHWISE)
def test_conv_float32(x_shape, w_shape, attrs):
    model, feeds = conv_model(x_shape, w_shape, **attrs)
    expect_same_as_cpu(model, feeds, on_device=("Conv",), **TOL[np.float32])


@pytest.mark.parametrize("x_shape,w_shape,attrs", [IM2COL[7], POINTWISE[0], DEPTHWISE[2]])
def test_conv_without_bias(x_shape, w_shape, attrs):
    model, feeds = conv_model(x_shape, w_shape, bias=False, **attrs)
    expect_same_as_cpu(model, feeds, on_device=("Conv",), **TOL[np.float32])


@pytest.mark.parametrize("x_shape,w_shape,attrs", [IM2COL[1], IM2COL[3], POINTWISE[1], DEPTHWISE[1]])
def test_conv_float64(x_shape, w_shape, attrs):
    model, feeds = conv_model(x_shape, w_shape, dtype=np.float64, **attrs)
    expect_same_as_cpu(model, feeds, on_device=("Conv",), **TOL[np.float64])


@pytest.mark.parametrize("x_shape,w_shape,attrs", [IM2COL[6], DEPTHWISE[0]])
def test_conv_weights_read_at_run_time(x_shape, w_shape, attrs):
    model, feeds = conv_model(x_shape, w_shape, weights_input=True, **attrs)
    expect_same_as_cpu(model, feeds, on_device=("Conv",), **TOL[np.float32])


ACTIVATIONS = [
    ("Relu", {}, {}),
    ("Clip", {}, dict(lo=0.0, hi=6.0)),
    ("Clip", {}, dict(lo=-0.5, hi=0.25)),
    ("LeakyRelu", dict(alpha=0.1), {}),
    ("HardSigmoid", dict(alpha=0.3, beta=0.4), {}),
    ("HardSwish", {}, {}),
    ("Sigmoid", {}, {}),
    ("Tanh", {}, {}),
    ("PRelu", {}, dict(slope=[[[0.1]], [[-0.2]], [[0.3]], [[2.0]]])),             # one slope per channel
    ("PRelu", {}, dict(slope=[0.25])),
]


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=lambda a: a[0])
def test_conv_fused_activation(activation):
    model, feeds = conv_model((1, 4, 5, 5), (4, 1, 3, 3), group=4, pads=[1, 1, 1, 1], activation=activation)
    feeds["x"] *= 3  # reach Relu6's and HardSigmoid's upper bounds
    expect_same_as_cpu(one_node(model, "Conv"), feeds, on_device=("Conv",), **TOL[np.float32])


def test_conv_fused_swish_float64():
    rng = np.random.default_rng(3)
    inits = {"w": rng.standard_normal((3, 2, 1, 1)), "b": rng.standard_normal(3)}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv"),
             helper.make_node("Sigmoid", ["c"], ["s"], name="sig"),
             helper.make_node("Mul", ["c", "s"], ["y"], name="mul")]
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.DOUBLE, (1, 2, 4, 4))],
                       [helper.make_tensor_value_info("y", TensorProto.DOUBLE, None)], inits)
    graph = one_node(model.SerializeToString(), "Conv")
    assert graph.nodes[0].attrs["activation"] == "Swish"
    expect_same_as_cpu(graph, {"x": rng.standard_normal((1, 2, 4, 4)) * 4}, on_device=("Conv",),
                       **TOL[np.float64])


@pytest.mark.parametrize("x_shape,w_shape,attrs", [IM2COL[1], POINTWISE[0], DEPTHWISE[0]])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_conv_residual_then_relu(x_shape, w_shape, attrs, dtype):
    model, feeds = conv_model(x_shape, w_shape, dtype=dtype, residual=True, activation=("Relu", {}, {}), **attrs)
    graph = one_node(model, "FusedConv")
    assert graph.nodes[0].attrs["activation"] == "Relu"
    expect_same_as_cpu(graph, feeds, on_device=("FusedConv",), **TOL[dtype])


def test_fused_conv_without_bias_or_activation():
    model, feeds = conv_model((1, 4, 4, 4), (6, 2, 3, 3), bias=False, residual=True, group=2, pads=[1, 1, 1, 1])
    expect_same_as_cpu(one_node(model, "FusedConv"), feeds, on_device=("FusedConv",), **TOL[np.float32])


@pytest.mark.parametrize("z_shape", [(1, 4, 1, 1), (4, 1, 1), (1, 1, 2, 1)])
def test_fused_conv_broadcast_residual(z_shape):
    """A FusedConv whose Z broadcasts (built by hand: the optimizer fuses same shapes only)."""
    rng = np.random.default_rng(4)
    g = GraphBuilder("fused", opset=17)
    x = g.input("x", np.float32, (2, 3, 5, 5))
    w = g.constant("w", rng.standard_normal((4, 3, 3, 3)).astype(np.float32))
    b = g.constant("b", rng.standard_normal(4).astype(np.float32))
    z = g.constant("z", rng.standard_normal(z_shape).astype(np.float32))
    y = g.op("FusedConv", [x, w, b, z], name="fc", domain="edgerun", version=1, strides=[2, 2],
             activation="LeakyRelu", activation_params=[0.2])
    g.output(y, "y")
    feeds = {"x": rng.standard_normal((2, 3, 5, 5)).astype(np.float32)}
    expect_same_as_cpu(g.build(), feeds, on_device=("FusedConv",), **TOL[np.float32])


@pytest.mark.parametrize("x_shape,w_shape,dtype", [
    ((1, 2, 9), (3, 2, 3), np.float32),              # 1-D
    ((1, 2, 3, 3, 3), (2, 2, 2, 2, 2), np.float32),  # 3-D
    ((1, 2, 4, 4), (3, 2, 3, 3), np.float16),        # a dtype the device kernels do not take
])
def test_refused_convolutions_run_on_the_host(x_shape, w_shape, dtype):
    model, feeds = conv_model(x_shape, w_shape, dtype=dtype)
    placement = expect_same_as_cpu(model, feeds, rtol=1e-3, atol=1e-3)  # (float16: the host backend's rounding)
    assert placement["conv"] == "host"
