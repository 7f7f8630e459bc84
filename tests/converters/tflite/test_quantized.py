"""Full-integer TFLite operators against LiteRT: bit-exact with its reference kernels
(BUILTIN_REF), within 1 of its default kernels (XNNPACK and TFLite's optimized kernels, which
requantize with other rounding: float32 scales rounded to even, single-rounding fixed point)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import edgerun
import edgerun.converters.tflite.ops.elementwise  # noqa: F401  (float ADD in mixed models)
import edgerun.converters.tflite.ops.quantized  # noqa: F401
from edgerun.converters.tflite.convert import from_tflite
from edgerun.runtime.errors import ConversionError, ModelError
from edgerun.runtime.graph import GraphBuilder
from edgerun.runtime.loader import load_model
from edgerun.runtime.writer import serialize
from tests.converters.tflite.builder import TFLiteBuilder, litert_run

FIXTURES = Path(__file__).parent / "fixtures"
TYPES = {"INT8": np.int8, "UINT8": np.uint8, "INT16": np.int16}
RNG = np.random.default_rng(1234)


def q(scale, zero_point=0, axis=0) -> dict:
    scales = np.atleast_1d(np.asarray(scale, np.float32))
    return {"scale": scales, "zero_point": np.atleast_1d(zero_point), "axis": axis}


def random_input(kind: str, shape) -> np.ndarray:
    info = np.iinfo(TYPES[kind])
    return RNG.integers(info.min, info.max + 1, shape).astype(TYPES[kind])


def ours(data: bytes, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """edgerun's outputs, in the model's output order, for inputs in its input order."""
    graph = from_tflite(data)
    signature = graph.signatures["serving_default"]
    in_names = {id(v): name for name, v in signature.inputs.items()}
    out_names = {id(v): name for name, v in signature.outputs.items()}
    result = edgerun.Interpreter(graph).run({in_names[id(v)]: x for v, x in zip(graph.inputs, inputs, strict=True)})
    return [result[out_names[id(v)]] for v in graph.outputs]


def check(data: bytes, inputs: list[np.ndarray], optimized_tolerance: int = 1) -> list[np.ndarray]:
    """Ours equals LiteRT's reference kernels exactly and its default kernels within the tolerance."""
    got = ours(data, inputs)
    for mine, ref in zip(got, litert_run(data, inputs, reference=True), strict=True):
        assert mine.dtype == ref.dtype and mine.shape == ref.shape
        np.testing.assert_array_equal(mine, ref)
    for mine, fast in zip(got, litert_run(data, inputs, reference=False), strict=True):
        if mine.dtype.kind == "f":
            np.testing.assert_allclose(mine, fast, rtol=1e-6, atol=0)
        else:
            assert np.abs(mine.astype(np.int64) - fast.astype(np.int64)).max(initial=0) <= optimized_tolerance
    return got


def single_op(opcode: str, options_type: str | None, inputs: list[tuple], output: tuple, **options) -> bytes:
    """A model of one operator: inputs are (name, shape, type, quant) run-time tensors or
    ("const", array, type, quant) constants (None: omitted); output is (shape, type, quant)."""
    b = TFLiteBuilder()
    indices = []
    for spec in inputs:
        if spec is None:
            indices.append(-1)
        elif spec[0] == "const":
            indices.append(b.constant(f"c{len(indices)}", spec[1], spec[2], quant=spec[3]))
        else:
            indices.append(b.input(spec[0], spec[1], spec[2], quant=spec[3]))
    y = b.tensor("y", output[0], output[1], quant=output[2])
    b.op(opcode, indices, [y], options_type, **options)
    b.output(y)
    return b.build()


# --- QUANTIZE / DEQUANTIZE --------------------------------------------------------------------


@pytest.mark.parametrize("kind,zero", [("INT8", 0), ("INT8", -7), ("UINT8", 128), ("INT16", 0)])
@pytest.mark.parametrize("scale", [1.0, 0.0371])
def test_quantize_float_rounds_halves_away_from_zero(kind, zero, scale):
    halves = np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5], np.float32) * np.float32(scale)
    x = np.concatenate([halves, RNG.normal(0, 4, 58).astype(np.float32)]).reshape(4, 16)
    data = single_op("QUANTIZE", None, [("x", x.shape, "FLOAT32", None)], (x.shape, kind, q(scale, zero)))
    got = check(data, [x])[0].reshape(-1)   # XNNPACK rounds halves to even: off by one there
    if scale == 1.0:
        info = np.iinfo(TYPES[kind])
        np.testing.assert_array_equal(got[:6], np.clip(np.array([-3, -2, -1, 1, 2, 3]) + zero, info.min, info.max))


@pytest.mark.parametrize("kind,zero", [("INT8", 0), ("INT8", -7), ("UINT8", 128)])
def test_quantize_float_out_of_range_as_the_reference_kernel(kind, zero):
    """The reference kernel casts an out-of-range or NaN quotient to int32 as x86 does
    (INT32_MIN), then adds the zero point in int32: 1e10 may become the type's minimum."""
    x = np.array([[1000.0, -1000.0, 1e10, -1e10, np.inf, -np.inf, np.nan, 3e9]], np.float32)
    data = single_op("QUANTIZE", None, [("x", x.shape, "FLOAT32", None)], (x.shape, kind, q(1.0, zero)))
    np.testing.assert_array_equal(ours(data, [x])[0], litert_run(data, [x], reference=True)[0])


def test_quantize_float_per_channel():
    x = RNG.normal(0, 3, (2, 3, 4)).astype(np.float32)
    data = single_op("QUANTIZE", None, [("x", x.shape, "FLOAT32", None)],
                     (x.shape, "INT8", q([0.02, 0.05, 0.1], [0, 3, -2], axis=1)))
    check(data, [x])


@pytest.mark.parametrize("src,dst", [("INT8", "UINT8"), ("UINT8", "INT8"), ("INT8", "INT8"), ("UINT8", "UINT8"),
                                     ("INT16", "INT8"), ("INT8", "INT16")])
@pytest.mark.parametrize("ratio", [1.0, 0.37, 2.9])
def test_requantize(src, dst, ratio):
    zin = {"INT8": -3, "UINT8": 131, "INT16": 0}[src]
    zout = {"INT8": 5, "UINT8": 120, "INT16": 0}[dst]
    if ratio == 1.0 and {src, dst} == {"INT8", "UINT8"}:
        zout = zin + 128 if src == "INT8" else zin - 128   # the sign-flip fast path
    x = random_input(src, (3, 50))
    data = single_op("QUANTIZE", None, [("x", x.shape, src, q(0.1, zin))], (x.shape, dst, q(0.1 * ratio, zout)))
    check(data, [x])


@pytest.mark.parametrize("kind,zero", [("INT8", -4), ("UINT8", 140), ("INT16", 0)])
def test_dequantize_runtime(kind, zero):
    x = random_input(kind, (5, 40))
    data = single_op("DEQUANTIZE", None, [("x", x.shape, kind, q(0.0123, zero))], (x.shape, "FLOAT32", None))
    got = check(data, [x])[0]
    np.testing.assert_array_equal(got, np.float32(0.0123) * (x.astype(np.float32) - zero))


def test_dequantize_constant_per_channel_and_float16():
    w = RNG.integers(-127, 128, (4, 6)).astype(np.int8)
    h = RNG.normal(0, 1, (4, 6)).astype(np.float16)
    b = TFLiteBuilder()
    x = b.input("x", (4, 6))
    cw = b.constant("w", w, "INT8", quant=q([0.1, 0.2, 0.3, 0.4], [0, 1, 2, 3], axis=0))
    ch = b.constant("h", h)
    dw, dh, s1, s2 = (b.tensor(n, (4, 6)) for n in ("dw", "dh", "s1", "s2"))
    b.op("DEQUANTIZE", [cw], [dw])
    b.op("DEQUANTIZE", [ch], [dh])
    b.op("ADD", [x, dw], [s1], "AddOptions")
    b.op("ADD", [s1, dh], [s2], "AddOptions")
    b.output(s2)
    data = b.build()
    graph = from_tflite(data)
    assert {n.op_type for n in graph.nodes} <= {"Add"}       # both dequantizations folded
    xin = RNG.normal(0, 1, (4, 6)).astype(np.float32)
    np.testing.assert_array_equal(ours(data, [xin])[0], litert_run(data, [xin], reference=True)[0])


# --- CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED ---------------------------------------------

ZEROS = {"INT8": (3, -5), "UINT8": (130, 100)}   # input, output zero points


def out_size(size: int, k: int, stride: int, dilation: int, padding: int) -> int:
    effective = (k - 1) * dilation + 1
    return -(-size // stride) if padding == 0 else (size + stride - effective) // stride


def weights(kind: str, shape, channels: int, per_channel: bool, axis: int):
    """(weights, their quant, their scales: one, or one per channel)."""
    w = random_input(kind, shape)
    if kind == "INT8":
        w[w == -128] = -127
    scales = RNG.uniform(0.002, 0.02, channels if per_channel else 1).astype(np.float32)
    zero = np.zeros(scales.size, np.int64) if kind == "INT8" else np.array([119])
    return w, q(scales, zero, axis), scales


def bias(channels: int, in_scale: float, w_scales: np.ndarray):
    scales = (np.float32(in_scale) * w_scales).astype(np.float32)
    return ("const", RNG.integers(-3000, 3000, channels).astype(np.int32), "INT32",
            q(scales, np.zeros(scales.size, np.int64)))


CONV_CASES = [  # padding (0 SAME, 1 VALID), strides (h, w), dilations (h, w), fused activation
    (0, (1, 1), (1, 1), 0), (1, (1, 1), (1, 1), 1), (0, (2, 2), (1, 1), 3), (1, (2, 1), (1, 1), 2),
    (0, (1, 1), (2, 2), 1), (1, (1, 2), (2, 1), 0), (0, (3, 2), (1, 1), 0),
]


@pytest.mark.parametrize("kind,per_channel", [("INT8", True), ("INT8", False), ("UINT8", False)])
@pytest.mark.parametrize("padding,strides,dilations,act", CONV_CASES)
def test_conv_2d(kind, per_channel, padding, strides, dilations, act):
    n, h, w, c, o, k = 2, 9, 8, 5, 7, 3
    wt, wq, ws = weights(kind, (o, k, k, c), o, per_channel, 0)
    zin, zout = ZEROS[kind]
    shape = (n, out_size(h, k, strides[0], dilations[0], padding), out_size(w, k, strides[1], dilations[1], padding), o)
    data = single_op("CONV_2D", "Conv2DOptions",
                     [("x", (n, h, w, c), kind, q(0.05, zin)), ("const", wt, kind, wq), bias(o, 0.05, ws)],
                     (shape, kind, q(0.09, zout)), padding=padding, stride_h=strides[0], stride_w=strides[1],
                     dilation_h_factor=dilations[0], dilation_w_factor=dilations[1], fused_activation_function=act)
    check(data, [random_input(kind, (n, h, w, c))])


def test_conv_2d_grouped_without_bias_and_large_multiplier():
    """Groups (input channels a multiple of the filter's) and an effective scale above 1
    (a positive shift: the accumulator is shifted left in int32 first)."""
    wt, wq, ws = weights("INT8", (4, 2, 2, 3), 4, True, 0)
    data = single_op("CONV_2D", "Conv2DOptions",
                     [("x", (1, 5, 5, 6), "INT8", q(0.5, 1)), ("const", wt, "INT8", wq), bias(4, 0.5, ws)],
                     ((1, 5, 5, 4), "INT8", q(0.0007, 2)), padding=0, stride_h=1, stride_w=1)
    check(data, [random_input("INT8", (1, 5, 5, 6))])


@pytest.mark.parametrize("kind,per_channel", [("INT8", True), ("INT8", False), ("UINT8", False)])
@pytest.mark.parametrize("multiplier", [1, 2])
@pytest.mark.parametrize("padding,strides,dilations,act", CONV_CASES[:5])
def test_depthwise_conv_2d(kind, per_channel, multiplier, padding, strides, dilations, act):
    n, h, w, c, k = 1, 8, 9, 4, 3
    o = c * multiplier
    wt, wq, ws = weights(kind, (1, k, k, o), o, per_channel, 3)
    zin, zout = ZEROS[kind]
    shape = (n, out_size(h, k, strides[0], dilations[0], padding), out_size(w, k, strides[1], dilations[1], padding), o)
    data = single_op("DEPTHWISE_CONV_2D", "DepthwiseConv2DOptions",
                     [("x", (n, h, w, c), kind, q(0.04, zin)), ("const", wt, kind, wq), bias(o, 0.04, ws)],
                     (shape, kind, q(0.03, zout)), padding=padding, stride_h=strides[0], stride_w=strides[1],
                     depth_multiplier=multiplier, dilation_h_factor=dilations[0], dilation_w_factor=dilations[1],
                     fused_activation_function=act)
    check(data, [random_input(kind, (n, h, w, c))])


@pytest.mark.parametrize("kind,per_channel", [("INT8", True), ("INT8", False), ("UINT8", False)])
@pytest.mark.parametrize("x_shape,keep,act", [((3, 20), False, 0), ((2, 3, 20), True, 1), ((2, 4, 5), False, 3),
                                              ((1, 20), False, 2)])
def test_fully_connected(kind, per_channel, x_shape, keep, act):
    units, depth = 6, x_shape[-1] if keep or len(x_shape) == 2 else 20
    wt, wq, ws = weights(kind, (units, depth), units, per_channel, 0)
    zin, zout = ZEROS[kind]
    rows = int(np.prod(x_shape)) // depth
    shape = x_shape[:-1] + (units,) if keep else (rows, units)
    data = single_op("FULLY_CONNECTED", "FullyConnectedOptions",
                     [("x", x_shape, kind, q(0.06, zin)), ("const", wt, kind, wq), bias(units, 0.06, ws)],
                     (shape, kind, q(0.05, zout)), keep_num_dims=keep, fused_activation_function=act)
    check(data, [random_input(kind, x_shape)])


def test_fully_connected_int8_weight_zero_point_per_tensor():
    w = random_input("INT8", (5, 12))
    data = single_op("FULLY_CONNECTED", "FullyConnectedOptions",
                     [("x", (3, 12), "INT8", q(0.05, 4)), ("const", w, "INT8", q(0.01, 9)),
                      bias(5, 0.05, np.array([0.01], np.float32))],
                     ((3, 5), "INT8", q(0.04, -1)))
    check(data, [random_input("INT8", (3, 12))])


def test_conv_2d_deep_accumulator_and_double_rounding():
    """uint8 with 300 input channels of full-range weights: the sum passes 2**24, where float32
    stops holding odd integers (the kernel switches to float64). The accumulator is 148.49999
    output steps: TFLite's double rounding (high multiply, then RoundingDivideByPOT) gives 149."""
    w = np.full((1, 1, 1, 300), 255, np.uint8)
    acc = 149 * 2 ** 17 - 2 ** 16 - 1
    data = single_op("CONV_2D", "Conv2DOptions",
                     [("x", (1, 1, 1, 300), "UINT8", q(1.0, 0)), ("const", w, "UINT8", q(1.0, 0)),
                      ("const", np.array([acc - 300 * 255 * 255], np.int32), "INT32", q(1.0))],
                     ((1, 1, 1, 1), "UINT8", q(2.0 ** 17, 0)), padding=1, stride_h=1, stride_w=1)
    got = check(data, [np.full((1, 1, 1, 300), 255, np.uint8)])[0]
    assert got.reshape(-1)[0] == 149


def test_fully_connected_without_bias_rounds_exact_halves_away_from_zero():
    """scale 0.5 exactly: odd accumulators are exact halves, which the reference rounds away
    from zero (XNNPACK to even: off by one there)."""
    w = np.array([[1, 0], [0, 1], [1, 1]], np.int8)
    data = single_op("FULLY_CONNECTED", "FullyConnectedOptions",
                     [("x", (4, 2), "INT8", q(1.0, 0)), ("const", w, "INT8", q(0.5)), None],
                     ((4, 3), "INT8", q(1.0, 0)))
    x = np.array([[1, 2], [-1, -2], [3, -5], [-7, 7]], np.int8)
    got = check(data, [x])[0]
    np.testing.assert_array_equal(got, [[1, 1, 2], [-1, -1, -2], [2, -3, -1], [-4, 4, 0]])


# --- ADD / SUB / MUL ---------------------------------------------------------------------------

BINARY_QUANT = {  # (input 1, input 2, output) as (scale, zero point) per type
    "INT8": ((0.04, -10), (0.11, 7), (0.08, 3)),
    "UINT8": ((0.04, 120), (0.11, 131), (0.08, 128)),
}


@pytest.mark.parametrize("opcode", ["ADD", "SUB", "MUL"])
@pytest.mark.parametrize("kind", ["INT8", "UINT8"])
@pytest.mark.parametrize("shapes,act", [(((2, 3, 4), (2, 3, 4)), 0), (((2, 3, 4), (4,)), 1), (((3, 1), (1, 5)), 3),
                                        (((1, 4, 4, 3), (1, 1, 1, 3)), 2), (((2, 3), ()), 0)])
def test_binary(opcode, kind, shapes, act):
    (s1, z1), (s2, z2), (so, zo) = BINARY_QUANT[kind]
    if opcode == "MUL":
        so = 0.3
    out_shape = np.broadcast_shapes(*shapes)
    options = {"ADD": "AddOptions", "SUB": "SubOptions", "MUL": "MulOptions"}[opcode]
    data = single_op(opcode, options, [("a", shapes[0], kind, q(s1, z1)), ("b", shapes[1], kind, q(s2, z2))],
                     (out_shape, kind, q(so, zo)), fused_activation_function=act)
    check(data, [random_input(kind, shapes[0]), random_input(kind, shapes[1])])


def test_add_with_constant_and_equal_scales():
    c = random_input("INT8", (1, 1, 3))
    data = single_op("ADD", "AddOptions", [("a", (2, 2, 3), "INT8", q(0.1, 0)), ("const", c, "INT8", q(0.1, 0))],
                     ((2, 2, 3), "INT8", q(0.1, 0)))
    check(data, [random_input("INT8", (2, 2, 3))])


# --- pooling -----------------------------------------------------------------------------------


@pytest.mark.parametrize("opcode", ["AVERAGE_POOL_2D", "MAX_POOL_2D"])
@pytest.mark.parametrize("kind", ["INT8", "UINT8"])
@pytest.mark.parametrize("padding,filt,strides,act", [(0, (3, 3), (2, 2), 0), (1, (2, 2), (2, 2), 1),
                                                      (0, (3, 2), (1, 1), 3), (1, (3, 3), (1, 2), 0),
                                                      (0, (7, 6), (1, 1), 2)])
def test_pool_2d(opcode, kind, padding, filt, strides, act):
    n, h, w, c = 2, 7, 6, 3
    quant = q(0.05, ZEROS[kind][0])
    shape = (n, out_size(h, filt[0], strides[0], 1, padding), out_size(w, filt[1], strides[1], 1, padding), c)
    data = single_op(opcode, "Pool2DOptions", [("x", (n, h, w, c), kind, quant)], (shape, kind, quant),
                     padding=padding, stride_h=strides[0], stride_w=strides[1], filter_height=filt[0],
                     filter_width=filt[1], fused_activation_function=act)
    check(data, [random_input(kind, (n, h, w, c))])


def test_average_pool_rounds_halves_away_from_zero():
    x = np.array([-3, -2, 1, 2, 5, 6, -1, -1], np.int8).reshape(1, 1, 8, 1)
    quant = q(1.0, 0)
    data = single_op("AVERAGE_POOL_2D", "Pool2DOptions", [("x", x.shape, "INT8", quant)], ((1, 1, 4, 1), "INT8", quant),
                     padding=1, stride_h=1, stride_w=2, filter_height=1, filter_width=2)
    np.testing.assert_array_equal(check(data, [x])[0].reshape(-1), [-3, 2, 6, -1])


# --- CONCATENATION / PAD / MEAN ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["INT8", "UINT8"])
@pytest.mark.parametrize("axis", [3, -1, 1])
def test_concatenation_same_quantization(kind, axis):
    quant = q(0.05, ZEROS[kind][0])
    shapes = [(1, 2, 3, 2), (1, 2, 3, 4)] if axis % 4 == 3 else [(1, 2, 3, 2), (1, 5, 3, 2)]
    out = list(shapes[0])
    out[axis] = shapes[0][axis] + shapes[1][axis]
    data = single_op("CONCATENATION", "ConcatenationOptions",
                     [("a", shapes[0], kind, quant), ("b", shapes[1], kind, quant)], (tuple(out), kind, quant),
                     axis=axis)
    check(data, [random_input(kind, s) for s in shapes])


def test_concatenation_uint8_rescales_inputs():
    data = single_op("CONCATENATION", "ConcatenationOptions",
                     [("a", (2, 40), "UINT8", q(0.05, 128)), ("b", (2, 40), "UINT8", q(0.021, 77)),
                      ("c", (2, 40), "UINT8", q(0.1, 100))], ((2, 120), "UINT8", q(0.1, 100)), axis=1)
    check(data, [random_input("UINT8", (2, 40)) for _ in range(3)])


def test_concatenation_int8_rescales_where_tflite_refuses():
    data = single_op("CONCATENATION", "ConcatenationOptions",
                     [("a", (1, 4), "INT8", q(0.5, 0)), ("b", (1, 4), "INT8", q(0.25, 2))], ((1, 8), "INT8", q(0.5, 0)),
                     axis=1)
    a = np.array([[1, -2, 3, 127]], np.int8)
    b = np.array([[1, 3, 4, -128]], np.int8)   # 0.25 * (b - 2) / 0.5 -> -0.5, 0.5, 1, -65
    np.testing.assert_array_equal(ours(data, [a, b])[0], [[1, -2, 3, 127, -1, 1, 1, -65]])


@pytest.mark.parametrize("kind", ["INT8", "UINT8"])
@pytest.mark.parametrize("opcode", ["PAD", "PADV2"])
def test_pad(kind, opcode):
    quant = q(0.05, ZEROS[kind][0])
    paddings = np.array([[0, 0], [1, 2], [0, 3], [2, 0]], np.int32)
    inputs = [("x", (1, 2, 3, 2), kind, quant), ("const", paddings, "INT32", None)]
    if opcode == "PADV2":
        inputs.append(("const", np.array([7], TYPES[kind]), kind, quant))
    data = single_op(opcode, "PadOptions" if opcode == "PAD" else "PadV2Options", inputs,
                     ((1, 5, 6, 4), kind, quant))
    got = check(data, [random_input(kind, (1, 2, 3, 2))])[0]
    assert got[0, 0, 0, 0] == (7 if opcode == "PADV2" else ZEROS[kind][0])


@pytest.mark.parametrize("kind", ["INT8", "UINT8"])
@pytest.mark.parametrize("axes,keep", [([1, 2], True), ([1, 2], False), ([-1], False), ([0, 3], True),
                                       ([2, 1, 2], True)])
@pytest.mark.parametrize("same", [True, False])
def test_mean(kind, axes, keep, same):
    shape = (2, 5, 7, 3)
    in_q = q(0.05, ZEROS[kind][0])
    out_q = in_q if same else q(0.013, ZEROS[kind][1])
    resolved = {a % 4 for a in axes}
    out_shape = tuple(1 if i in resolved else d for i, d in enumerate(shape) if keep or i not in resolved)
    axes_tensor = ("const", np.array(axes, np.int32), "INT32", None)
    data = single_op("MEAN", "ReducerOptions", [("x", shape, kind, in_q), axes_tensor], (out_shape, kind, out_q),
                     keep_dims=keep)
    check(data, [random_input(kind, shape)])


# --- elementwise activations (tabulated) --------------------------------------------------------

ACT_QUANT = {  # opcode -> (input quant, output quant) per type
    "RELU": ((0.05, -20), (0.03, -128)), "RELU6": ((0.05, 10), (0.03, -128)),
    "RELU_N1_TO_1": ((0.01, 0), (0.008, 0)), "RELU_0_TO_1": ((0.01, -5), (0.0045, -128)),
    "LOGISTIC": ((0.06, 4), (1 / 256, -128)), "TANH": ((0.03, -7), (1 / 128, 0)),
    "LEAKY_RELU": ((0.04, 9), (0.035, -3)), "HARD_SWISH": ((0.05, -10), (0.04, -30)),
}


def uint8_quant(scale_zero):
    scale, zero = scale_zero
    return scale, zero + 128


@pytest.mark.parametrize("kind", ["INT8", "UINT8"])
@pytest.mark.parametrize("opcode", sorted(ACT_QUANT))
def test_activation(kind, opcode):
    (s_in, z_in), (s_out, z_out) = (uint8_quant(p) if kind == "UINT8" else p for p in ACT_QUANT[opcode])
    x = np.arange(*((-128, 128) if kind == "INT8" else (0, 256))).astype(TYPES[kind]).reshape(4, 64)
    options = {"LEAKY_RELU": ("LeakyReluOptions", {"alpha": 0.2})}.get(opcode, (None, {}))
    data = single_op(opcode, options[0], [("x", x.shape, kind, q(s_in, z_in))], (x.shape, kind, q(s_out, z_out)),
                     **options[1])
    check(data, [x])


@pytest.mark.parametrize("alpha", [0.01, -0.3, 1.7])
def test_leaky_relu_alpha(alpha):
    x = np.arange(-128, 128).astype(np.int8).reshape(2, 128)
    data = single_op("LEAKY_RELU", "LeakyReluOptions", [("x", x.shape, "INT8", q(0.05, 3))],
                     (x.shape, "INT8", q(0.07, -2)), alpha=alpha)
    check(data, [x])


@pytest.mark.parametrize("opcode", ["LOGISTIC", "TANH"])
def test_sigmoid_tanh_tables_over_many_scales(opcode):
    """Rounding ties in the float tables are where a libm difference would show."""
    x = np.arange(-128, 128).astype(np.int8).reshape(1, 256)
    for scale in np.geomspace(0.002, 0.5, 25):
        out = q(1 / 256, -128) if opcode == "LOGISTIC" else q(1 / 128, 0)
        data = single_op(opcode, None, [("x", x.shape, "INT8", q(scale, int(RNG.integers(-20, 20))))],
                         (x.shape, "INT8", out))
        np.testing.assert_array_equal(ours(data, [x])[0], litert_run(data, [x], reference=True)[0])


@pytest.mark.parametrize("s_in,z_in,s_out,z_out", [(0.02, 0, 0.02, 0), (0.1, -50, 0.05, -100), (0.005, 20, 0.01, 7),
                                                  (0.4, -3, 0.6, -120), (0.03, 127, 0.025, -128)])
def test_hard_swish_scales(s_in, z_in, s_out, z_out):
    x = np.arange(-128, 128).astype(np.int8).reshape(2, 128)
    data = single_op("HARD_SWISH", None, [("x", x.shape, "INT8", q(s_in, z_in))], (x.shape, "INT8", q(s_out, z_out)))
    check(data, [x])


@pytest.mark.parametrize("kind", ["INT8", "UINT8"])
@pytest.mark.parametrize("shape,s_in,beta", [((3, 10), 0.1, 1.0), ((2, 4, 33), 0.03, 1.0), ((5, 7), 0.5, 0.7),
                                            ((1, 1000), 0.08, 1.0), ((4, 3), 0.002, 2.0), ((2, 1), 0.1, 1.0)])
def test_softmax(kind, shape, s_in, beta):
    low = -128 if kind == "INT8" else 0
    data = single_op("SOFTMAX", "SoftmaxOptions", [("x", shape, kind, q(s_in, low + 100))],
                     (shape, kind, q(1 / 256, low)), beta=beta)
    check(data, [random_input(kind, shape)])


# --- models made by TensorFlow's converter ------------------------------------------------------


@pytest.mark.parametrize("name,tolerance", [("dense_int8", 1), ("mobile_block_int8", 8)])
def test_tensorflow_fixture(name, tolerance):
    """Bit-exact with the reference kernels end to end. The default kernels differ by at most
    1 per operator; through mobile_block's 24 operators that compounds (up to 4 seen over 40
    random inputs), hence the looser bound there."""
    import edgerun.converters.tflite.ops.reshape  # noqa: F401  (RESHAPE)

    data = (FIXTURES / f"{name}.tflite").read_bytes()
    graph = from_tflite(data)
    rng = np.random.default_rng(7)
    for _ in range(3):
        inputs = [rng.integers(-128, 128, v.shape).astype(np.int8) for v in graph.inputs]
        want = check(data, inputs, optimized_tolerance=tolerance)
    # the integer nodes and their attributes survive .erm
    reloaded = edgerun.Interpreter(load_model(serialize(graph)))
    (name_in,), (name_out,) = reloaded.signatures["serving_default"].inputs, graph.signatures["serving_default"].outputs
    np.testing.assert_array_equal(reloaded.run({name_in: inputs[0]})[name_out], want[0])


# --- RESIZE_BILINEAR / TRANSPOSE_CONV -----------------------------------------------------------


@pytest.mark.parametrize("kind", ["INT8", "UINT8"])
@pytest.mark.parametrize("size", [(8, 10), (3, 2), (7, 7), (1, 5)])
@pytest.mark.parametrize("align,half", [(False, False), (True, False), (False, True)])
def test_resize_bilinear(kind, size, align, half):
    quant = q(0.05, ZEROS[kind][0])
    data = single_op("RESIZE_BILINEAR", "ResizeBilinearOptions",
                     [("x", (2, 4, 5, 3), kind, quant), ("const", np.array(size, np.int32), "INT32", None)],
                     ((2, *size, 3), kind, quant), align_corners=align, half_pixel_centers=half)
    check(data, [random_input(kind, (2, 4, 5, 3))])


@pytest.mark.parametrize("kind,per_channel", [("INT8", True), ("INT8", False), ("UINT8", False)])
@pytest.mark.parametrize("padding,strides,out_hw,act", [(0, (2, 2), (8, 10), 0), (1, (2, 2), (9, 11), 1),
                                                        (0, (1, 1), (4, 5), 3), (1, (2, 1), (10, 7), 0),
                                                        (0, (3, 2), (12, 9), 0)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_transpose_conv(kind, per_channel, padding, strides, out_hw, act, with_bias):
    n, h, w, c, o, k = 1, 4, 5, 3, 4, 3
    wt, wq, ws = weights(kind, (o, k, k, c), o, per_channel, 0)
    zin, zout = ZEROS[kind]
    inputs = [("const", np.array([n, *out_hw, o], np.int32), "INT32", None), ("const", wt, kind, wq),
              ("x", (n, h, w, c), kind, q(0.05, zin))]
    if with_bias:
        inputs.append(bias(o, 0.05, ws))
    data = single_op("TRANSPOSE_CONV", "TransposeConvOptions", inputs, ((n, *out_hw, o), kind, q(0.07, zout)),
                     padding=padding, stride_h=strides[0], stride_w=strides[1], fused_activation_function=act)
    check(data, [random_input(kind, (n, h, w, c))])


# --- what TFLite refuses or leaves undefined ----------------------------------------------------


def conv_model(w_quant=None, bias_spec="default", x_quant=None, act=0, w_type="INT8"):
    wt = np.ones((4, 3, 3, 5), np.int8 if w_type == "INT8" else np.uint8)
    inputs = [("x", (1, 6, 6, 5), "INT8", x_quant or q(0.05, 0)),
              ("const", wt, w_type, w_quant or q(np.full(4, 0.01), np.zeros(4, np.int64))),
              bias(4, 0.05, np.full(4, 0.01, np.float32)) if bias_spec == "default" else bias_spec]
    return single_op("CONV_2D", "Conv2DOptions", inputs, ((1, 6, 6, 4), "INT8", q(0.1, 0)), padding=0, stride_h=1,
                     stride_w=1, fused_activation_function=act)


@pytest.mark.parametrize("model,message", [
    (lambda: conv_model(w_quant=q(np.full(5, 0.01), np.zeros(5, np.int64), axis=3)),
     "per-channel filter scales must be 4 along axis 0, got 5 along axis 3"),
    (lambda: conv_model(x_quant=q(0.0, 0)), "quantization scales must be > 0"),
    (lambda: conv_model(w_quant=q(np.array([0.01, 0.0, 0.01, 0.01]), np.zeros(4, np.int64))),
     "quantization scales must be > 0"),
    (lambda: conv_model(bias_spec=("const", np.zeros(4, np.int8), "INT8", q(0.0005))), "must be int32"),
    (lambda: conv_model(bias_spec=("const", np.zeros(3, np.int32), "INT32", q(0.0005))), "must have shape (4,)"),
    (lambda: conv_model(w_type="UINT8", w_quant=q(0.01, 128)), "UINT8 weights with INT8 activations"),
    (lambda: conv_model(w_quant=q(np.full(4, 0.01), np.array([0, 1, 0, 0]))), "int8 weights must have zero point 0"),
    (lambda: conv_model(act=4), "fused activation TANH is not supported on quantized tensors"),
    (lambda: single_op("SOFTMAX", "SoftmaxOptions", [("x", (2, 5), "INT8", q(0.1, 0))], ((2, 5), "INT8", q(0.1, 0)),
                       beta=1.0), "must have scale 1/256 and zero point -128"),
    (lambda: single_op("LOGISTIC", None, [("x", (2, 5), "INT8", q(0.1, 0))], ((2, 5), "INT8", q(0.01, -128))),
     "output scale of a quantized LOGISTIC must be 1/256"),
    (lambda: single_op("MAX_POOL_2D", "Pool2DOptions", [("x", (1, 4, 4, 2), "INT8", q(0.1, 0))],
                       ((1, 2, 2, 2), "INT8", q(0.2, 0)), padding=1, stride_h=2, stride_w=2, filter_height=2,
                       filter_width=2), "needs the same input and output quantization"),
    (lambda: single_op("ADD", "AddOptions", [("a", (4,), "INT8", q(1.0, 0)), ("b", (4,), "INT8", q(1.0, 0))],
                       ((4,), "INT8", q(1e-7, 0))), "too small for the input scales"),
    (lambda: single_op("ADD", "AddOptions", [("a", (4,), "INT8", q(1.0, 0)), ("b", (4,), "UINT8", q(1.0, 0))],
                       ((4,), "INT8", q(1.0, 0))), "int8 or uint8 activations of one type"),
    (lambda: single_op("DEQUANTIZE", None, [("x", (4,), "INT32", q(1.0, 0))], ((4,), "FLOAT32", None)),
     "cannot dequantize a INT32 tensor"),
    (lambda: single_op("QUANTIZE", None, [("x", (4,), "FLOAT32", None)], ((4,), "INT8", None)),
     "has no quantization parameters"),
])
def test_refused_models(model, message):
    with pytest.raises(ConversionError, match=re.escape(message)):
        from_tflite(model())


def test_kernels_refuse_bad_attributes():
    b = GraphBuilder()
    x = b.input("x", np.int8, (1, 4, 4, 2))
    w = b.constant("w", np.ones((3, 1, 1, 2), np.int8))
    y = b.op("Conv2D", [x, w], domain="ai.edgerun.tflite", version=1, multiplier=[1 << 30, 1 << 30],
             shift=[0, 0])
    b.output(y)
    with pytest.raises(ModelError, match="2 multipliers for 3 output channels"):
        edgerun.Interpreter(b.build()).run({"x": np.zeros((1, 4, 4, 2), np.int8)})
    b = GraphBuilder()
    x = b.input("x", np.int8, (4,))
    b.output(b.op("TableLookup", [x, b.constant("t", np.zeros(255, np.int8))], domain="ai.edgerun.tflite", version=1))
    with pytest.raises(ModelError, match="expected 256 entries"):
        edgerun.Interpreter(b.build()).run({"x": np.zeros(4, np.int8)})


def test_dynamic_batch():
    """A model whose batch is -1 in the shape signature runs for any batch."""
    b = TFLiteBuilder()
    wt, wq, ws = weights("INT8", (3, 3, 3, 2), 3, True, 0)
    x = b.input("x", (1, 5, 5, 2), "INT8", quant=q(0.05, 1), signature=(-1, 5, 5, 2))
    c = b.tensor("c", (1, 5, 5, 3), "INT8", quant=q(0.07, -2), signature=(-1, 5, 5, 3))
    _, values, _, bias_quant = bias(3, 0.05, ws)
    b.op("CONV_2D", [x, b.constant("w", wt, "INT8", quant=wq), b.constant("b", values, "INT32", quant=bias_quant)],
         [c], "Conv2DOptions", padding=0, stride_h=1, stride_w=1)
    b.output(c)
    data = b.build()
    graph = from_tflite(data)
    for batch in (1, 3):
        check(data, [random_input("INT8", (batch, 5, 5, 2))])
    assert graph.inputs[0].shape == (-1, 5, 5, 2)


@pytest.mark.parametrize("kind", ["INT8", "UINT8"])
@pytest.mark.parametrize("align,half", [(False, False), (True, False), (False, True)])
def test_resize_nearest_neighbor_needs_no_arithmetic(kind, align, half):
    """RESIZE_NEAREST_NEIGHBOR only moves values: the float converter (any_dtype) is exact."""
    import edgerun.converters.tflite.ops.image  # noqa: F401

    quant = q(0.05, ZEROS[kind][0])
    data = single_op("RESIZE_NEAREST_NEIGHBOR", "ResizeNearestNeighborOptions",
                     [("x", (1, 3, 4, 2), kind, quant), ("const", np.array([7, 5], np.int32), "INT32", None)],
                     ((1, 7, 5, 2), kind, quant), align_corners=align, half_pixel_centers=half)
    check(data, [random_input(kind, (1, 3, 4, 2))])


def test_conv_without_options_is_refused_clearly():
    wt = np.ones((2, 1, 1, 3), np.int8)
    data = single_op("CONV_2D", None, [("x", (1, 2, 2, 3), "INT8", q(0.1)), ("const", wt, "INT8", q(0.1)), None],
                     ((1, 2, 2, 2), "INT8", q(0.1)))
    with pytest.raises(ConversionError, match="strides and dilations must be >= 1"):
        from_tflite(data)
