"""TFLite network-layer builtins (float32) against LiteRT: one-operator models with random
inputs, over shapes (batch 2, non-square, odd channel counts) and every option that changes
the result; plus the models edgerun refuses, each with its message."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edgerun.converters.tflite.ops.conv  # noqa: F401
import edgerun.converters.tflite.ops.image  # noqa: F401
import edgerun.converters.tflite.ops.normalization  # noqa: F401
import edgerun.converters.tflite.ops.pool  # noqa: F401
import edgerun.converters.tflite.ops.recurrent  # noqa: F401
from edgerun import Interpreter
from edgerun.converters.tflite import from_tflite
from edgerun.runtime.errors import ConversionError
from tests.converters.tflite.builder import TFLiteBuilder, litert_run

pytest.importorskip("ai_edge_litert")

RNG = np.random.default_rng(0)
SAME, VALID = 0, 1
ACTIVATIONS = range(6)  # NONE, RELU, RELU_N1_TO_1, RELU6, TANH, SIGN_BIT


def rand(*shape: int, scale: float = 1.0) -> np.ndarray:
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def one_op(opcode: str, operands: list[Any], options_type: str | None = None, *, version: int = 1,
           outputs: int = 1, **options: Any) -> bytes:
    """A model of one operator. Operands: (name, shape[, signature[, type]]) for a run-time
    input, an array for a constant, -1 for an omitted input."""
    b = TFLiteBuilder()
    indices = []
    for k, operand in enumerate(operands):
        if isinstance(operand, tuple):
            name, shape, signature, type_ = (*operand, *(None, "FLOAT32")[len(operand) - 2:])
            indices.append(b.input(name, shape, type_, signature=signature))
        elif isinstance(operand, int):
            indices.append(operand)
        else:
            indices.append(b.constant(f"c{k}", operand))
    ys = [b.tensor(f"y{k}", (1,)) for k in range(outputs)]
    b.op(opcode, indices, ys, options_type, version=version, **options)
    for y in ys:
        b.output(y)
    return b.build()


def run_ours(data: bytes, inputs: list[np.ndarray], optimize: bool = True) -> list[np.ndarray]:
    it = Interpreter(from_tflite(data, optimize=optimize))
    names = list(it.signatures["serving_default"].inputs)  # the model's input order (one signature)
    return list(it.run(dict(zip(names, inputs, strict=True))).values())


def check(data: bytes, inputs: list[np.ndarray], *, rtol: float = 1e-4, atol: float = 1e-5,
          reference: bool = False, optimize: bool = True) -> list[np.ndarray]:
    """Our outputs equal LiteRT's (shape and values); returns LiteRT's."""
    expected = litert_run(data, inputs, reference=reference)
    got = run_ours(data, inputs, optimize)
    assert len(got) == len(expected)
    for ours, theirs in zip(got, expected, strict=True):
        assert ours.shape == theirs.shape
        assert ours.dtype == theirs.dtype
        np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=atol)
    return expected


# --- convolutions --------------------------------------------------------------------

CONV_SHAPES = [((1, 5, 6, 3), (4, 3, 3)), ((2, 7, 6, 5), (3, 2, 3)), ((1, 9, 8, 7), (6, 1, 1))]


@pytest.mark.parametrize("shape,filt", CONV_SHAPES)
@pytest.mark.parametrize("padding", [SAME, VALID])
@pytest.mark.parametrize("stride", [(1, 1), (2, 1), (2, 3)])
@pytest.mark.parametrize("dilation", [(1, 1), (2, 1), (1, 2)])
def test_conv_2d(shape, filt, padding, stride, dilation):
    out_c, kh, kw = filt
    x = rand(*shape)
    data = one_op("CONV_2D", [("x", shape), rand(out_c, kh, kw, shape[3]), rand(out_c)], "Conv2DOptions",
                  padding=padding, stride_h=stride[0], stride_w=stride[1], dilation_h_factor=dilation[0],
                  dilation_w_factor=dilation[1])
    check(data, [x])


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_conv_2d_fused_activation(activation):
    data = one_op("CONV_2D", [("x", (2, 5, 6, 3)), rand(4, 3, 3, 3), rand(4)], "Conv2DOptions",
                  padding=SAME, stride_h=1, stride_w=1, fused_activation_function=activation)
    check(data, [rand(2, 5, 6, 3, scale=2.0)])


@pytest.mark.parametrize("channels,filter_channels,out_c", [(6, 3, 4), (6, 2, 9), (8, 1, 8)])
def test_conv_2d_grouped(channels, filter_channels, out_c):
    data = one_op("CONV_2D", [("x", (2, 5, 7, channels)), rand(out_c, 3, 2, filter_channels), rand(out_c)],
                  "Conv2DOptions", padding=SAME, stride_h=1, stride_w=2, fused_activation_function=1)
    check(data, [rand(2, 5, 7, channels)])


def test_conv_2d_without_bias():
    """Version 1's kernel needs a bias; later ones take -1 (here checked against a zero bias)."""
    x, w = rand(1, 6, 5, 3), rand(2, 3, 3, 3)
    expected = litert_run(one_op("CONV_2D", [("x", x.shape), w, np.zeros(2, np.float32)], "Conv2DOptions",
                                 padding=VALID, stride_h=1, stride_w=1), [x])[0]
    got = run_ours(one_op("CONV_2D", [("x", x.shape), w, -1], "Conv2DOptions", padding=VALID,
                          stride_h=1, stride_w=1), [x])[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shape,multiplier,kernel", [((1, 5, 6, 3), 1, (3, 3)), ((2, 7, 6, 5), 2, (2, 3)),
                                                      ((1, 6, 9, 1), 3, (3, 1))])
@pytest.mark.parametrize("padding", [SAME, VALID])
@pytest.mark.parametrize("stride,dilation", [((1, 1), (1, 1)), ((2, 1), (1, 1)), ((1, 2), (2, 1)),
                                             ((1, 1), (2, 2))])
def test_depthwise_conv_2d(shape, multiplier, kernel, padding, stride, dilation):
    c = shape[3] * multiplier
    data = one_op("DEPTHWISE_CONV_2D", [("x", shape), rand(1, *kernel, c), rand(c)], "DepthwiseConv2DOptions",
                  version=2, padding=padding, stride_h=stride[0], stride_w=stride[1], depth_multiplier=multiplier,
                  dilation_h_factor=dilation[0], dilation_w_factor=dilation[1], fused_activation_function=3)
    check(data, [rand(*shape, scale=2.0)])


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_depthwise_conv_2d_fused_activation(activation):
    data = one_op("DEPTHWISE_CONV_2D", [("x", (1, 5, 5, 4)), rand(1, 3, 3, 8), rand(8)], "DepthwiseConv2DOptions",
                  padding=SAME, stride_h=1, stride_w=1, depth_multiplier=2, fused_activation_function=activation)
    check(data, [rand(1, 5, 5, 4, scale=2.0)])


def transpose_conv(x_shape, out_shape, filt, padding, stride, bias=True, activation=0, version=4):
    operands = [np.array(out_shape, np.int32), rand(*filt), ("x", x_shape)]
    if bias:
        operands.append(rand(filt[0]))
    return one_op("TRANSPOSE_CONV", operands, "TransposeConvOptions", version=version, padding=padding,
                  stride_h=stride[0], stride_w=stride[1], fused_activation_function=activation)


@pytest.mark.parametrize("x_shape,out_hw,filt_hw,stride,padding", [
    ((1, 4, 5, 3), (8, 10), (3, 3), (2, 2), SAME),
    ((1, 4, 5, 3), (7, 9), (3, 3), (2, 2), SAME),
    ((2, 3, 4, 5), (7, 9), (3, 3), (2, 2), VALID),
    ((2, 3, 4, 5), (8, 10), (3, 3), (2, 2), VALID),      # one more row/column than the kernel reaches
    ((1, 5, 3, 2), (5, 3), (2, 3), (1, 1), SAME),
    ((1, 5, 3, 2), (6, 5), (2, 3), (1, 1), VALID),
    ((1, 3, 4, 4), (9, 7), (4, 2), (3, 2), SAME),
    ((1, 3, 3, 4), (10, 7), (4, 2), (3, 2), VALID),
    ((1, 4, 4, 1), (8, 8), (2, 2), (2, 2), SAME),
])
@pytest.mark.parametrize("bias", [True, False])
def test_transpose_conv(x_shape, out_hw, filt_hw, stride, padding, bias):
    out_c = 3
    data = transpose_conv(x_shape, (x_shape[0], *out_hw, out_c), (out_c, *filt_hw, x_shape[3]), padding, stride,
                          bias=bias)
    check(data, [rand(*x_shape)])


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_transpose_conv_fused_activation(activation):
    data = transpose_conv((1, 3, 4, 2), (1, 6, 8, 3), (3, 3, 3, 2), SAME, (2, 2), activation=activation)
    check(data, [rand(1, 3, 4, 2, scale=2.0)])


@pytest.mark.parametrize("shape,kernel,padding,stride,dilation", [
    ((1, 4, 5, 6, 3), (2, 3, 3), SAME, (1, 1, 1), (1, 1, 1)),
    ((2, 5, 4, 3, 2), (3, 2, 2), VALID, (2, 1, 2), (1, 1, 1)),
    ((1, 6, 6, 5, 3), (2, 2, 3), SAME, (1, 2, 1), (2, 1, 1)),
    ((1, 6, 6, 5, 3), (2, 2, 2), VALID, (1, 1, 1), (1, 2, 2)),
])
@pytest.mark.parametrize("activation", [0, 1, 3])
def test_conv_3d(shape, kernel, padding, stride, dilation, activation):
    data = one_op("CONV_3D", [("x", shape), rand(*kernel, shape[4], 4), rand(4)], "Conv3DOptions",
                  padding=padding, stride_d=stride[0], stride_h=stride[1], stride_w=stride[2],
                  dilation_d_factor=dilation[0], dilation_h_factor=dilation[1], dilation_w_factor=dilation[2],
                  fused_activation_function=activation)
    check(data, [rand(*shape)])


# --- dense layers --------------------------------------------------------------------


@pytest.mark.parametrize("x_shape,units,keep", [((2, 7), 5, False), ((1, 3, 6), 4, False), ((3, 2, 6), 5, True),
                                                ((2, 2, 3, 5), 3, True), ((4, 3, 2), 7, False)])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("activation", [0, 1, 2, 3])
def test_fully_connected(x_shape, units, keep, bias, activation):
    depth = x_shape[-1] if keep else x_shape[-1] * (x_shape[-2] if len(x_shape) > 2 and x_shape[0] == 4 else 1)
    operands = [("x", x_shape), rand(units, depth), rand(units) if bias else -1]
    data = one_op("FULLY_CONNECTED", operands, "FullyConnectedOptions", version=7 if keep else 1,
                  keep_num_dims=keep, fused_activation_function=activation)
    check(data, [rand(*x_shape)])


@pytest.mark.parametrize("a,b", [((3, 4), (4, 5)), ((2, 3, 4), (2, 4, 5)), ((2, 1, 3, 4), (3, 4, 6)),
                                 ((1, 3, 4), (2, 5, 4, 2))])
@pytest.mark.parametrize("adj_x,adj_y", list(itertools.product([False, True], repeat=2)))
def test_batch_matmul(a, b, adj_x, adj_y):
    swap = lambda s: (*s[:-2], s[-1], s[-2])  # noqa: E731
    a, b = swap(a) if adj_x else a, swap(b) if adj_y else b
    data = one_op("BATCH_MATMUL", [("a", a), ("b", b)], "BatchMatMulOptions", adj_x=adj_x, adj_y=adj_y)
    check(data, [rand(*a), rand(*b)])


def test_batch_matmul_constant_rhs():
    data = one_op("BATCH_MATMUL", [("a", (2, 3, 4)), rand(5, 4)], "BatchMatMulOptions", adj_y=True)
    check(data, [rand(2, 3, 4)])


# --- pooling -------------------------------------------------------------------------


@pytest.mark.parametrize("opcode", ["AVERAGE_POOL_2D", "MAX_POOL_2D", "L2_POOL_2D"])
@pytest.mark.parametrize("shape,window,stride", [((1, 5, 6, 3), (2, 2), (2, 2)), ((2, 7, 4, 5), (3, 2), (2, 1)),
                                                 ((1, 8, 9, 2), (3, 3), (1, 1)), ((1, 5, 5, 1), (4, 3), (3, 2))])
@pytest.mark.parametrize("padding", [SAME, VALID])
def test_pool(opcode, shape, window, stride, padding):
    data = one_op(opcode, [("x", shape)], "Pool2DOptions", padding=padding, filter_height=window[0],
                  filter_width=window[1], stride_h=stride[0], stride_w=stride[1])
    check(data, [rand(*shape)])


@pytest.mark.parametrize("opcode", ["AVERAGE_POOL_2D", "MAX_POOL_2D", "L2_POOL_2D"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_pool_fused_activation(opcode, activation):
    data = one_op(opcode, [("x", (2, 5, 6, 3))], "Pool2DOptions", padding=SAME, filter_height=3, filter_width=2,
                  stride_h=2, stride_w=2, fused_activation_function=activation)
    check(data, [rand(2, 5, 6, 3, scale=3.0)])


# --- resizing ------------------------------------------------------------------------

RESIZE_SIZES = [((1, 4, 5, 3), (8, 10)), ((2, 5, 3, 2), (7, 4)), ((1, 9, 7, 3), (4, 3)), ((1, 6, 6, 1), (3, 13)),
                ((1, 3, 4, 2), (1, 1)), ((1, 1, 1, 2), (3, 2)), ((1, 7, 5, 2), (7, 5)), ((1, 10, 11, 1), (13, 6)),
                ((1, 6, 9, 2), (9, 6)), ((1, 3, 7, 1), (7, 15)), ((1, 15, 5, 1), (4, 12)), ((1, 5, 2, 1), (2, 5))]
FLAGS = list(itertools.product([False, True], repeat=2))


def resize(opcode: str, shape, size, align: bool, half: bool, constant: bool = True) -> bytes:
    """A resize model; with `constant` False both the size and the input's N, H, W are dynamic."""
    options = "ResizeBilinearOptions" if opcode == "RESIZE_BILINEAR" else "ResizeNearestNeighborOptions"
    if constant:
        operands = [("x", shape), np.array(size, np.int32)]
    else:
        operands = [("x", shape, (-1, -1, -1, shape[3])), ("size", (2,), None, "INT32")]
    return one_op(opcode, operands, options, version=3, align_corners=align, half_pixel_centers=half)


@pytest.mark.parametrize("shape,size", RESIZE_SIZES)
@pytest.mark.parametrize("align,half", FLAGS)
@pytest.mark.parametrize("opcode", ["RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR"])
def test_resize(opcode, shape, size, align, half):
    x = rand(*shape)
    if opcode == "RESIZE_BILINEAR" and align and half:
        with pytest.raises(RuntimeError, match="half_pixel_centers is True, align_corners must be False"):
            litert_run(resize(opcode, shape, size, align, half), [x], reference=True)
        with pytest.raises(ConversionError, match="align_corners and half_pixel_centers cannot both be set"):
            from_tflite(resize(opcode, shape, size, align, half))
        return
    check(resize(opcode, shape, size, align, half), [x], reference=True)
    check(resize(opcode, shape, size, align, half), [x])


@pytest.mark.parametrize("align,half", FLAGS)
@pytest.mark.parametrize("opcode", ["RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR"])
def test_resize_size_at_run_time(opcode, align, half):
    """The size is a model input and the image's size dynamic: one graph serves every size."""
    if opcode == "RESIZE_BILINEAR" and align and half:
        return
    data = resize(opcode, (1, 5, 6, 2), (1, 1), align, half, constant=False)
    for shape, size in [((1, 5, 6, 2), (9, 4)), ((2, 7, 3, 2), (3, 11)), ((1, 5, 6, 2), (1, 6)),
                        ((3, 1, 4, 2), (5, 4))]:
        check(data, [rand(*shape), np.array(size, np.int32)])


@pytest.mark.parametrize("align,half", FLAGS)
def test_resize_nearest_unoptimized_graph(align, half):
    """Without the optimizer the index arithmetic runs as nodes: same result."""
    check(resize("RESIZE_NEAREST_NEIGHBOR", (1, 7, 5, 2), (12, 3), align, half), [rand(1, 7, 5, 2)], optimize=False)


def test_resize_nearest_with_constant_sizes_is_two_gathers():
    """The index arithmetic folds into constants: the graph only gathers (in NCHW)."""
    graph = from_tflite(resize("RESIZE_NEAREST_NEIGHBOR", (1, 7, 5, 2), (12, 3), True, True))
    histogram = graph.op_histogram()
    assert histogram["Gather"] == 2 and set(histogram) <= {"Gather", "Transpose"}


# --- space, depth and batch ----------------------------------------------------------


@pytest.mark.parametrize("shape,block", [((1, 2, 3, 8), 2), ((2, 3, 2, 27), 3), ((1, 1, 4, 5), 1), ((2, 2, 2, 12), 2)])
def test_depth_to_space(shape, block):
    data = one_op("DEPTH_TO_SPACE", [("x", shape)], "DepthToSpaceOptions", block_size=block)
    check(data, [rand(*shape)], rtol=0, atol=0)


@pytest.mark.parametrize("shape,block", [((1, 4, 6, 3), 2), ((2, 6, 3, 5), 3), ((1, 2, 2, 1), 2), ((2, 3, 3, 2), 1)])
def test_space_to_depth(shape, block):
    data = one_op("SPACE_TO_DEPTH", [("x", shape)], "SpaceToDepthOptions", block_size=block)
    check(data, [rand(*shape)], rtol=0, atol=0)


@pytest.mark.parametrize("shape,block,pads", [
    ((1, 4, 6, 3), (2, 2), ((0, 0), (0, 0))),
    ((2, 5, 4, 3), (2, 3), ((1, 0), (1, 1))),
    ((1, 3, 7, 1), (3, 2), ((2, 1), (0, 1))),
    ((2, 6, 5), (3,), ((1, 2),)),
    ((3, 2, 2, 2), (1, 1), ((1, 1), (0, 2))),
])
def test_space_to_batch_nd(shape, block, pads):
    data = one_op("SPACE_TO_BATCH_ND", [("x", shape), np.array(block, np.int32), np.array(pads, np.int32)],
                  "SpaceToBatchNDOptions")
    check(data, [rand(*shape)], rtol=0, atol=0)


@pytest.mark.parametrize("shape,block,crops", [
    ((4, 2, 3, 3), (2, 2), ((0, 0), (0, 0))),
    ((12, 3, 2, 2), (2, 3), ((1, 0), (1, 2))),
    ((6, 2, 4, 1), (3, 2), ((2, 1), (0, 3))),
    ((6, 4, 5), (3,), ((1, 2),)),
    ((2, 2, 2, 2), (1, 1), ((1, 0), (0, 1))),
])
def test_batch_to_space_nd(shape, block, crops):
    data = one_op("BATCH_TO_SPACE_ND", [("x", shape), np.array(block, np.int32), np.array(crops, np.int32)],
                  "BatchToSpaceNDOptions")
    check(data, [rand(*shape)], rtol=0, atol=0)


# --- normalization -------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(7,), (2, 5), (2, 3, 9), (1, 2, 3, 4)])
@pytest.mark.parametrize("beta", [1.0, 0.5, 2.7])
def test_softmax(shape, beta):
    check(one_op("SOFTMAX", [("x", shape)], "SoftmaxOptions", beta=beta), [rand(*shape, scale=3.0)])


@pytest.mark.parametrize("shape", [(7,), (2, 5), (2, 3, 9), (1, 2, 3, 4)])
def test_log_softmax(shape):
    check(one_op("LOG_SOFTMAX", [("x", shape)], "LogSoftmaxOptions"), [rand(*shape, scale=3.0)])


@pytest.mark.parametrize("shape", [(6,), (2, 5), (2, 3, 9), (1, 2, 3, 4)])
def test_l2_normalization(shape):
    x = rand(*shape)
    x.reshape(-1, shape[-1])[0] = 0  # a zero vector stays zero (divided by epsilon, not by 0)
    if len(shape) > 1:
        x.reshape(-1, shape[-1])[-1] *= 1e-8  # a norm below epsilon: divided by epsilon
    check(one_op("L2_NORMALIZATION", [("x", shape)], "L2NormOptions"), [x])


@pytest.mark.parametrize("shape", [(1, 3, 4, 7), (2, 2, 3, 5), (1, 1, 1, 3)])
@pytest.mark.parametrize("radius,bias,alpha,beta", [(2, 1.0, 1e-4, 0.75), (1, 2.0, 0.3, 0.5), (0, 0.5, 1.0, 1.3),
                                                    (5, 1.5, 0.1, 0.6)])
def test_local_response_normalization(shape, radius, bias, alpha, beta):
    data = one_op("LOCAL_RESPONSE_NORMALIZATION", [("x", shape)], "LocalResponseNormalizationOptions",
                  radius=radius, bias=bias, alpha=alpha, beta=beta)
    check(data, [rand(*shape, scale=2.0)])


# --- recurrent -----------------------------------------------------------------------


def lstm(n_in=3, n_cell=5, batch=2, steps=4, *, cifg=False, peephole=False, projection=0, proj_bias=False,
         time_major=False, layer_norm=False, signature=None, **options) -> bytes:
    """A UNIDIRECTIONAL_SEQUENCE_LSTM model; `projection`: its output size (0: none); states
    are variable tensors without contents, as TensorFlow's converter writes them."""
    b = TFLiteBuilder()
    n_out = projection or n_cell
    shape = (steps, batch, n_in) if time_major else (batch, steps, n_in)
    operands = [b.input("x", shape, signature=signature)] + [-1] * 23
    for g in range(4):
        if g or not cifg:
            operands[1 + g] = b.constant(f"w{g}", rand(n_cell, n_in, scale=0.6))
            operands[5 + g] = b.constant(f"r{g}", rand(n_cell, n_out, scale=0.6))
            operands[12 + g] = b.constant(f"b{g}", rand(n_cell, scale=0.5))
            if layer_norm:
                operands[20 + g] = b.constant(f"ln{g}", rand(n_cell))
    for k in range(3):
        if peephole and (k or not cifg):
            operands[9 + k] = b.constant(f"p{k}", rand(n_cell))
    if projection:
        operands[16] = b.constant("proj", rand(n_out, n_cell, scale=0.6))
        if proj_bias:
            operands[17] = b.constant("proj_bias", rand(n_out))
    operands[18] = b.tensor("h0", (batch, n_out), is_variable=True)
    operands[19] = b.tensor("c0", (batch, n_cell), is_variable=True)
    y = b.tensor("y", (*shape[:2], n_out))
    b.op("UNIDIRECTIONAL_SEQUENCE_LSTM", operands, [y], "UnidirectionalSequenceLSTMOptions",
         time_major=time_major, **{"fused_activation_function": 4, **options})
    b.output(y)
    return b.build()


@pytest.mark.parametrize("config", [
    {}, {"cifg": True}, {"peephole": True}, {"cifg": True, "peephole": True},
    {"projection": 3, "proj_bias": True}, {"projection": 4}, {"projection": 3, "proj_bias": True, "proj_clip": 0.2},
    {"time_major": True}, {"time_major": True, "cifg": True, "projection": 2}, {"cell_clip": 0.3},
    {"cell_clip": 0.5, "peephole": True}, {"fused_activation_function": 1}, {"fused_activation_function": 3},
    {"fused_activation_function": 2}, {"steps": 1}, {"batch": 1, "steps": 7},
], ids=str)
def test_unidirectional_sequence_lstm(config):
    config = {"batch": 2, "steps": 4, **config}
    shape = (config["steps"], config["batch"], 3) if config.get("time_major") else (config["batch"], config["steps"], 3)
    check(lstm(**config), [rand(*shape, scale=2.0)])


def test_unidirectional_sequence_lstm_keras_fixture():
    """TensorFlow's converter fused a tf_keras LSTM(8, return_sequences) into this operator."""
    data = (Path(__file__).parent / "fixtures" / "lstm_f32.tflite").read_bytes()
    check(data, [rand(1, 6, 5)])


# --- models edgerun refuses, as LiteRT does ------------------------------------------


def refused(data: bytes, inputs: list[np.ndarray], litert_says: str, we_say: str) -> None:
    with pytest.raises(RuntimeError, match=litert_says):
        litert_run(data, inputs, reference=True)
    with pytest.raises(ConversionError, match=we_say):
        from_tflite(data)


@pytest.mark.parametrize("activation,name", [(4, "TANH"), (5, "SIGN_BIT")])
def test_fully_connected_refuses_tanh_and_sign_bit(activation, name):
    data = one_op("FULLY_CONNECTED", [("x", (2, 3)), rand(4, 3), rand(4)], "FullyConnectedOptions",
                  fused_activation_function=activation)
    refused(data, [rand(2, 3)], "params->activation", f"fused activation {name} is not supported")


def test_l2_normalization_refuses_fused_activation():
    data = one_op("L2_NORMALIZATION", [("x", (2, 5))], "L2NormOptions", fused_activation_function=1)
    refused(data, [rand(2, 5)], "kTfLiteActNone", "fused activation RELU is not supported")


def test_transpose_conv_refuses_an_output_shape_the_input_does_not_fit():
    data = transpose_conv((1, 3, 3, 2), (1, 9, 8, 3), (3, 4, 2, 2), SAME, (3, 2))
    refused(data, [rand(1, 3, 3, 2)], "computed_input_width", "output size 8 does not match input size 3")


def conv(x_shape=(1, 5, 6, 3), filt=None, **options) -> bytes:
    options = {"padding": SAME, "stride_h": 1, "stride_w": 1, **options}
    filt = rand(4, 3, 3, 3) if filt is None else filt
    return one_op("CONV_2D", [("x", x_shape), filt, rand(filt.shape[0])], "Conv2DOptions", **options)


@pytest.mark.parametrize("make,message", [
    (lambda: one_op("FULLY_CONNECTED", [("x", (2, 3)), rand(4, 3), rand(4)], "FullyConnectedOptions",
                    weights_format=1), "weights_format 1 is not supported"),
    (lambda: one_op("TRANSPOSE_CONV", [("shape", (4,), None, "INT32"), rand(3, 3, 3, 2), ("x", (1, 3, 3, 2))],
                    "TransposeConvOptions", padding=SAME, stride_h=2, stride_w=2), "output_shape must be a constant"),
    (lambda: one_op("TRANSPOSE_CONV", [np.array([1, 6, 6, 3], np.int32), rand(3, 3, 3, 2),
                                       ("x", (1, 3, 3, 2), (1, -1, -1, 2))], "TransposeConvOptions",
                    padding=SAME, stride_h=2, stride_w=2), "height and width must be static"),
    (lambda: conv(filt=np.ones((4, 3, 3, 3), np.int8)), "hybrid quantized weights are not supported"),
    (lambda: conv(x_shape=(5, 6, 3)), "the input must be 4-D NHWC"),
    (lambda: conv(x_shape=(1, 5, 6, 4)), "input channels 4 are not a multiple of the filter's 3"),
    (lambda: conv(stride_h=0), r"strides must be >= 1, got \[0, 1\]"),
    (lambda: conv(dilation_w_factor=0), r"dilations must be >= 1, got \[1, 0\]"),
    (lambda: conv(padding=7), "unknown padding code 7"),
    (lambda: one_op("DEPTHWISE_CONV_2D", [("x", (1, 4, 4, 3)), rand(1, 3, 3, 5), rand(5)], "DepthwiseConv2DOptions",
                    padding=SAME, stride_h=1, stride_w=1), "filter channels 5 are not a multiple of input channels 3"),
    (lambda: one_op("DEPTHWISE_CONV_2D", [("x", (1, 4, 4, 3)), rand(2, 3, 3, 3), rand(3)], "DepthwiseConv2DOptions",
                    padding=SAME, stride_h=1, stride_w=1), r"the filter must be 1HW\(C\*M\)"),
    (lambda: one_op("AVERAGE_POOL_2D", [("x", (1, 4, 4, 3))], "Pool2DOptions", padding=SAME, stride_h=1, stride_w=1,
                    filter_height=0, filter_width=2), r"filter size must be >= 1, got \[0, 2\]"),
    (lambda: one_op("BATCH_MATMUL", [("a", (3,)), ("b", (3, 2))], "BatchMatMulOptions"),
     "input 0 must have rank >= 2"),
    (lambda: one_op("RESIZE_BILINEAR", [("x", (1, 4, 4, 3)), np.array([2, 2, 2], np.int32)], "ResizeBilinearOptions"),
     "size must be an INT32 tensor of 2 values"),
    (lambda: one_op("RESIZE_NEAREST_NEIGHBOR", [("x", (1, 4, 4, 3)), np.array([0, 2], np.int32)],
                    "ResizeNearestNeighborOptions"), r"size \[0, 2\] must be positive"),
    (lambda: one_op("DEPTH_TO_SPACE", [("x", (1, 2, 2, 4))], "DepthToSpaceOptions", block_size=0),
     "block_size must be >= 1, got 0"),
    (lambda: one_op("SPACE_TO_BATCH_ND", [("x", (1, 5, 4, 1)), np.array([2, 2], np.int32),
                                          np.zeros((2, 2), np.int32)], "SpaceToBatchNDOptions"),
     r"padded block dimensions \[5, 4\] are not multiples of block_shape \[2, 2\]"),
    (lambda: one_op("SPACE_TO_BATCH_ND", [("x", (1, 4, 4, 1), (-1, -1, 4, 1)), np.array([2, 2], np.int32),
                                          np.zeros((2, 2), np.int32)], "SpaceToBatchNDOptions"),
     "all dimensions but batch must be static"),
    (lambda: one_op("SPACE_TO_BATCH_ND", [("x", (1, 4, 4, 1)), ("block", (2,), None, "INT32"),
                                          np.zeros((2, 2), np.int32)], "SpaceToBatchNDOptions"),
     "block_shape must be a constant"),
    (lambda: one_op("BATCH_TO_SPACE_ND", [("x", (4, 2, 2, 1)), np.array([2, 2], np.int32),
                                          np.array([[3, 2], [0, 0]], np.int32)], "BatchToSpaceNDOptions"),
     r"crops \[\[3, 2\], \[0, 0\]\] remove more"),
    (lambda: one_op("BATCH_TO_SPACE_ND", [("x", (4, 2, 2, 1)), np.array([2, 2], np.int32),
                                          np.zeros((3, 2), np.int32)], "BatchToSpaceNDOptions"),
     r"crops must be \[2, 2\] non-negative values"),
    (lambda: one_op("LOCAL_RESPONSE_NORMALIZATION", [("x", (1, 2, 2, 3))], "LocalResponseNormalizationOptions",
                    radius=-1), "radius must be >= 0, got -1"),
    (lambda: one_op("CONV_3D", [("x", (1, 4, 4, 3)), rand(2, 2, 2, 3, 4), rand(4)], "Conv3DOptions",
                    padding=SAME, stride_d=1, stride_h=1, stride_w=1), "the input must be 5-D NDHWC"),
    (lambda: lstm(layer_norm=True), "layer normalization is not supported"),
    (lambda: lstm(signature=(2, -1, 3)), "static number of time steps"),
    (lambda: lstm(diagonal_recurrent_tensors=True), "diagonal recurrent weights are not supported"),
    (lambda: lstm(fused_activation_function=5), "cell activation SIGN_BIT is not supported"),
    (lambda: lstm(fused_activation_function=0), "cell activation NONE is not supported"),
])
def test_refused(make, message):
    with pytest.raises(ConversionError, match=message):
        from_tflite(make())


# --- dynamic batch ---------------------------------------------------------------------


def dynamic(opcode: str, shape, operands: list[Any], options_type: str | None, **options: Any) -> bytes:
    return one_op(opcode, [("x", shape, (-1, *shape[1:])), *operands], options_type, **options)


DYNAMIC_MODELS = {
    "conv_2d": lambda: dynamic("CONV_2D", (1, 5, 6, 3), [rand(4, 3, 3, 3), rand(4)], "Conv2DOptions", padding=SAME,
                               stride_h=2, stride_w=1, fused_activation_function=1),
    "depthwise": lambda: dynamic("DEPTHWISE_CONV_2D", (1, 5, 6, 3), [rand(1, 3, 3, 6), rand(6)],
                                 "DepthwiseConv2DOptions", padding=VALID, stride_h=1, stride_w=1, depth_multiplier=2),
    "conv_3d": lambda: dynamic("CONV_3D", (1, 3, 4, 5, 2), [rand(2, 2, 2, 2, 3), rand(3)], "Conv3DOptions",
                               padding=SAME, stride_d=1, stride_h=1, stride_w=2),
    "fully_connected": lambda: dynamic("FULLY_CONNECTED", (1, 6), [rand(4, 6), rand(4)], "FullyConnectedOptions"),
    "fully_connected_keep": lambda: dynamic("FULLY_CONNECTED", (1, 2, 6), [rand(4, 6), rand(4)],
                                            "FullyConnectedOptions", version=7, keep_num_dims=True),
    "batch_matmul": lambda: dynamic("BATCH_MATMUL", (1, 3, 4), [rand(4, 5)], "BatchMatMulOptions"),
    "average_pool": lambda: dynamic("AVERAGE_POOL_2D", (1, 5, 7, 3), [], "Pool2DOptions", padding=SAME,
                                    filter_height=3, filter_width=2, stride_h=2, stride_w=2),
    "max_pool": lambda: dynamic("MAX_POOL_2D", (1, 5, 7, 3), [], "Pool2DOptions", padding=VALID,
                                filter_height=2, filter_width=3, stride_h=1, stride_w=2),
    "l2_pool": lambda: dynamic("L2_POOL_2D", (1, 5, 7, 3), [], "Pool2DOptions", padding=SAME,
                               filter_height=2, filter_width=2, stride_h=2, stride_w=2),
    "resize_bilinear": lambda: dynamic("RESIZE_BILINEAR", (1, 4, 5, 3), [np.array([7, 3], np.int32)],
                                       "ResizeBilinearOptions", half_pixel_centers=True),
    "resize_nearest": lambda: dynamic("RESIZE_NEAREST_NEIGHBOR", (1, 4, 5, 3), [np.array([7, 3], np.int32)],
                                      "ResizeNearestNeighborOptions", align_corners=True),
    "depth_to_space": lambda: dynamic("DEPTH_TO_SPACE", (1, 2, 3, 8), [], "DepthToSpaceOptions", block_size=2),
    "space_to_depth": lambda: dynamic("SPACE_TO_DEPTH", (1, 4, 6, 3), [], "SpaceToDepthOptions", block_size=2),
    "space_to_batch": lambda: dynamic("SPACE_TO_BATCH_ND", (1, 5, 4, 3), [np.array([2, 2], np.int32),
                                      np.array([[1, 0], [0, 2]], np.int32)], "SpaceToBatchNDOptions"),
    "softmax": lambda: dynamic("SOFTMAX", (1, 7), [], "SoftmaxOptions", beta=0.7),
    "log_softmax": lambda: dynamic("LOG_SOFTMAX", (1, 2, 7), [], "LogSoftmaxOptions"),
    "l2_normalization": lambda: dynamic("L2_NORMALIZATION", (1, 7), [], "L2NormOptions"),
    "lrn": lambda: dynamic("LOCAL_RESPONSE_NORMALIZATION", (1, 3, 2, 5), [], "LocalResponseNormalizationOptions",
                           radius=1, bias=1.0, alpha=0.2, beta=0.5),
}


@pytest.mark.parametrize("name", list(DYNAMIC_MODELS))
def test_dynamic_batch(name):
    """An input of signature (-1, ...) runs at batch 1 and 3 (LiteRT resized the same way)."""
    data = DYNAMIC_MODELS[name]()
    shape = from_tflite(data).inputs[0].shape
    assert shape[0] == -1
    for batch in (1, 3):
        check(data, [rand(batch, *shape[1:])])


def test_batch_to_space_dynamic_batch():
    operands = [np.array([2, 2], np.int32), np.array([[1, 0], [0, 2]], np.int32)]
    data = dynamic("BATCH_TO_SPACE_ND", (4, 2, 3, 2), operands, "BatchToSpaceNDOptions")
    for batch in (4, 12):
        check(data, [rand(batch, 2, 3, 2)], rtol=0, atol=0)


def test_a_dynamic_batch_network():
    """Layers chained, batch dynamic: what a converted image model looks like."""
    b = TFLiteBuilder()
    x = b.input("x", (1, 8, 6, 3), signature=(-1, 8, 6, 3))

    def layer(opcode, inputs, shape, options_type, **options):
        y = b.tensor(f"t{len(b.ops)}", (1, *shape), signature=(-1, *shape))
        b.op(opcode, [b.constant(f"c{len(b.ops)}_{k}", v) if isinstance(v, np.ndarray) else v
                      for k, v in enumerate(inputs)], [y], options_type, **options)
        return y

    y = layer("CONV_2D", [x, rand(5, 3, 3, 3), rand(5)], (8, 6, 5), "Conv2DOptions", padding=SAME,
              stride_h=1, stride_w=1, fused_activation_function=3)
    y = layer("DEPTHWISE_CONV_2D", [y, rand(1, 3, 3, 10), rand(10)], (4, 3, 10), "DepthwiseConv2DOptions",
              padding=SAME, stride_h=2, stride_w=2, depth_multiplier=2, fused_activation_function=1)
    y = layer("MAX_POOL_2D", [y], (2, 2, 10), "Pool2DOptions", padding=SAME, stride_h=2, stride_w=2,
              filter_height=2, filter_width=2)
    y = layer("RESIZE_BILINEAR", [y, np.array([3, 5], np.int32)], (3, 5, 10), "ResizeBilinearOptions",
              half_pixel_centers=True)
    y = layer("LOCAL_RESPONSE_NORMALIZATION", [y], (3, 5, 10), "LocalResponseNormalizationOptions", radius=2,
              bias=1.0, alpha=0.1, beta=0.75)
    y = layer("FULLY_CONNECTED", [y, rand(4, 150), rand(4)], (4,), "FullyConnectedOptions")
    b.output(layer("SOFTMAX", [y], (4,), "SoftmaxOptions", beta=1.0))
    data = b.build()
    for batch in (1, 3):
        check(data, [rand(batch, 8, 6, 3)])
        check(data, [rand(batch, 8, 6, 3)], optimize=False)
