"""Full-integer TFLite operators -> edgerun's TFLite integer kernels (runtime/kernels/tflite_quant.py).

A quantized operator (int8/uint8 activations, int8 per-tensor or per-channel / uint8
per-tensor weights, int32 bias) becomes one node of domain ai.edgerun.tflite that computes
exactly what TFLite's reference kernels (BUILTIN_REF) compute. This module holds TFLite's
policy, worked out once at conversion: the effective multipliers (which scales, multiplied
in float32 or double, as each TFLite kernel's Prepare does), their Q31 fixed-point form
(QuantizeMultiplier), the clamp range of a fused activation (CalculateActivationRangeQuantized)
and the checks TFLite makes; the kernels only do integer arithmetic. Elementwise functions of
one 8-bit input (RELU, RELU6, RELU_N1_TO_1, RELU_0_TO_1, LOGISTIC, TANH, HARD_SWISH,
LEAKY_RELU) become a 256-entry table computed here with TFLite's exact formulas.

Converted: QUANTIZE, DEQUANTIZE, CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, TRANSPOSE_CONV,
ADD, SUB, MUL, AVERAGE_POOL_2D, MAX_POOL_2D, CONCATENATION, PAD, PADV2, MEAN, SOFTMAX,
RESIZE_BILINEAR and the elementwise functions above. Operators that only move values
(RESHAPE, RESIZE_NEAREST_NEIGHBOR, ...) are the float converters registered any_dtype.
int16 activations (16x8 models) are refused.

QUANTIZE and DEQUANTIZE change domains and are always converted here: DEQUANTIZE of a
float16 constant is a Cast (the optimizer folds it), of int8/uint8/int16 a DequantizeLinear
(exactly TFLite's float32(scale * (q - zero_point)): the product of a float32 scale and a
small integer rounds once either way); QUANTIZE from float32 follows TFLite's rounding (half
away from zero, where ONNX's QuantizeLinear rounds half to even), between integer types it
requantizes in fixed point.

What TFLite's kernels leave undefined or refuse is a ConversionError here: a missing or
zero scale, per-channel scales on the wrong axis or of the wrong count, a non-int32 bias, a
fused TANH/SIGN_BIT (TFLite's integer kernels ignore it), ADD/SUB output scales that need a
multiplier >= 1, pools whose input and output quantization differ.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgerun.converters.tflite.context import OpContext
from edgerun.converters.tflite.layout import ACTIVATIONS, PADDINGS
from edgerun.converters.tflite.reader import TFLiteTensor
from edgerun.converters.tflite.registry import converts
from edgerun.runtime.kernels.fixed_point import (
    multiply_by_quantized_multiplier,
    quantize_multiplier,
    round_half_away,
    rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
    truncating_shift,
)

DOMAIN = "ai.edgerun.tflite"
EIGHT_BIT = ("INT8", "UINT8")
_RANGES = {"INT8": (-128, 127), "UINT8": (0, 255), "INT16": (-32768, 32767)}
_NAMES = {"INT8": "int8", "UINT8": "uint8", "INT16": "int16"}


# --- quantization parameters ----------------------------------------------------------------


def scales(ctx: OpContext, tensor: TFLiteTensor | None, what: str) -> tuple[np.ndarray, np.ndarray, int]:
    """(scales float32, zero points int64, axis) of a quantized tensor; ConversionError when it
    has no quantization or a scale is not > 0."""
    if tensor is None:
        raise ctx.fail(f"{what} is missing")
    q = tensor.quantization
    if q is None:
        raise ctx.fail(f"{what} {tensor.name!r} ({tensor.type}) has no quantization parameters")
    if np.any(q.scale <= 0):
        raise ctx.fail(f"{what} {tensor.name!r}: quantization scales must be > 0, got {q.scale.tolist()}")
    return q.scale.astype(np.float32), q.zero_point.astype(np.int64), q.axis


def per_tensor(ctx: OpContext, tensor: TFLiteTensor | None, what: str,
               types: tuple[str, ...] = EIGHT_BIT) -> tuple[np.float32, int]:
    """(scale, zero point) of a per-tensor quantized `types` tensor."""
    if tensor is not None and tensor.type not in types:
        raise ctx.fail(f"{what} {tensor.name!r} is {tensor.type}; expected {'/'.join(types)}")
    scale, zero, _ = scales(ctx, tensor, what)
    if scale.size != 1:
        raise ctx.fail(f"{what} {tensor.name!r} must be quantized per tensor, has {scale.size} scales")
    low, high = _RANGES[tensor.type]
    if not low <= zero[0] <= high:
        raise ctx.fail(f"{what} {tensor.name!r}: zero point {int(zero[0])} is outside the {tensor.type} range")
    return scale[0], int(zero[0])


def fixed_point(ctx: OpContext, real: float | np.ndarray, what: str) -> tuple[list[int], list[int]]:
    """TFLite's QuantizeMultiplier of one or more real multipliers: (multipliers, shifts)."""
    values = np.atleast_1d(np.asarray(real, np.float64))
    if not np.all(np.isfinite(values)):
        raise ctx.fail(f"the {what} multiplier is not finite ({values.tolist()})")
    pairs = [quantize_multiplier(v) for v in values]
    return [m for m, _ in pairs], [s for _, s in pairs]


def quantize_value(ctx: OpContext, value: float, scale: np.float32, zero: int) -> int:
    """kernel_util's Quantize: zero + int(round(value / scale)) in float32, halves away from 0."""
    q = round_half_away(np.float32(value) / np.float32(scale))
    if not -(2.0 ** 31) <= q <= 2.0 ** 31 - 1:
        raise ctx.fail(f"{value} does not quantize into int32 with scale {scale}")
    return zero + int(q)


def activation_range(ctx: OpContext, output: TFLiteTensor) -> dict[str, int]:
    """The fused activation as an integer clamp range on the output (TFLite's
    CalculateActivationRangeQuantized), as kernel attributes."""
    scale, zero = per_tensor(ctx, output, "output")
    low, high = _RANGES[output.type]
    code = ctx.options.get("fused_activation_function", 0)
    name = ACTIVATIONS.get(code)
    if name == "RELU":
        low = max(low, quantize_value(ctx, 0.0, scale, zero))
    elif name in ("RELU6", "RELU_N1_TO_1"):
        bottom, top = (0.0, 6.0) if name == "RELU6" else (-1.0, 1.0)
        low = max(low, quantize_value(ctx, bottom, scale, zero))
        high = min(high, quantize_value(ctx, top, scale, zero))
    elif name != "NONE":
        raise ctx.fail(f"fused activation {name or code} is not supported on quantized tensors")
    return {"activation_min": low, "activation_max": high, "output_zero_point": zero}


def same_type(ctx: OpContext, *tensors: TFLiteTensor | None) -> str:
    """The common int8/uint8 type of `tensors` (the operator's activations)."""
    kinds = {t.type for t in tensors if t is not None}
    if len(kinds) != 1 or not kinds <= set(EIGHT_BIT):
        raise ctx.fail(f"expects int8 or uint8 activations of one type, got {sorted(kinds)}")
    return kinds.pop()


def emit(ctx: OpContext, op_type: str, inputs: list, **attrs: Any) -> Any:
    return ctx.emit(op_type, inputs, domain=DOMAIN, version=1, **attrs)


# --- geometry options -----------------------------------------------------------------------


def window_options(ctx: OpContext, dilated: bool = True) -> dict[str, Any]:
    """padding, strides [h, w] (and dilations [h, w]) of a windowed operator, checked >= 1."""
    padding = PADDINGS.get(ctx.options.get("padding", 0))
    if padding not in ("SAME", "VALID"):
        raise ctx.fail(f"unknown padding code {ctx.options.get('padding')}")
    strides = [int(ctx.options.get("stride_h", 0)), int(ctx.options.get("stride_w", 0))]
    attrs: dict[str, Any] = {"padding": padding, "strides": strides}
    if dilated:
        attrs["dilations"] = [int(ctx.options.get(f"dilation_{axis}_factor", 1)) for axis in "hw"]
    if min(v for values in attrs.values() if isinstance(values, list) for v in values) < 1:
        raise ctx.fail(f"strides and dilations must be >= 1, got {ctx.options}")
    return attrs


# --- domain changers ------------------------------------------------------------------------


@converts("DEQUANTIZE")
def dequantize(ctx: OpContext) -> None:
    """float16 -> Cast to float32; int8/uint8/int16 (constant or run-time, per tensor or per
    channel) -> DequantizeLinear, which equals TFLite's float32(scale * (q - zero_point))."""
    ctx.need_inputs(1)
    x = ctx.tensor(0)
    if ctx.output_tensor(0).type != "FLOAT32":
        raise ctx.fail(f"the output must be float32, got {ctx.output_tensor(0).type}")
    if x.type == "FLOAT16":
        ctx.bind(0, ctx.emit("Cast", [ctx.input(0)], to=1))
        return
    if x.type not in _RANGES:
        raise ctx.fail(f"cannot dequantize a {x.type} tensor (int8/uint8/int16/float16)")
    scale, zero, axis = scales(ctx, x, "input")
    if zero.size not in (1, scale.size):
        raise ctx.fail(f"{zero.size} zero points for {scale.size} scales")
    zero = np.broadcast_to(zero, scale.shape).astype(x.dtype)
    if scale.size == 1:
        y = ctx.emit("DequantizeLinear", [ctx.input(0), ctx.const("scale", scale[0]), ctx.const("zero", zero[0])])
    else:
        y = ctx.emit("DequantizeLinear", [ctx.input(0), ctx.const("scale", scale), ctx.const("zero", zero)],
                     axis=axis)
    ctx.bind(0, y)


@converts("QUANTIZE")
def quantize(ctx: OpContext) -> None:
    """float32 -> int8/uint8/int16 with TFLite's rounding (per tensor or per channel);
    int8/uint8/int16 -> int8/uint8/int16 requantized with multiplier in_scale / out_scale."""
    ctx.need_inputs(1)
    x, y = ctx.tensor(0), ctx.output_tensor(0)
    if y.type not in _RANGES:
        raise ctx.fail(f"cannot quantize to {y.type} (int8/uint8/int16)")
    out_scale, out_zero, axis = scales(ctx, y, "output")
    if x.type == "FLOAT32":
        if out_zero.size not in (1, out_scale.size):
            raise ctx.fail(f"{out_zero.size} zero points for {out_scale.size} scales")
        value = emit(ctx, "Quantize", [ctx.input(0)], dtype=_NAMES[y.type], scale=out_scale.tolist(),
                     zero_point=out_zero.tolist(), axis=axis)
        ctx.bind(0, value)
        return
    if x.type not in _RANGES:
        raise ctx.fail(f"cannot quantize a {x.type} tensor (float32/int8/uint8/int16)")
    in_scale, in_zero = per_tensor(ctx, x, "input", tuple(_RANGES))
    out_scale, out_zero = per_tensor(ctx, y, "output", tuple(_RANGES))
    multiplier, shift = fixed_point(ctx, float(in_scale) / float(out_scale), "requantization")
    ctx.bind(0, emit(ctx, "Requantize", [ctx.input(0)], dtype=_NAMES[y.type], input_zero_point=in_zero,
                     output_zero_point=out_zero, multiplier=multiplier, shift=shift))


# --- convolutions and fully connected -------------------------------------------------------


def _bias(ctx: OpContext, index: int, channels: int) -> Any:
    bias = ctx.tensor(index)
    if bias is None:
        return None
    if bias.type != "INT32":
        raise ctx.fail(f"the bias {bias.name!r} must be int32 for 8-bit activations, got {bias.type}")
    if bias.shape != (channels,):
        raise ctx.fail(f"the bias {bias.name!r} must have shape ({channels},), got {list(bias.shape)}")
    return ctx.input(index)


def _filter_scales(ctx: OpContext, kind: str, axis: int, channels: int,
                   int8_offset: bool = False) -> tuple[np.ndarray, int]:
    """The filter's scales broadcast to `channels` and its zero point: int8 filters must have
    zero point 0 (TFLite requires or assumes it) unless `int8_offset` allows a per-tensor one
    (FULLY_CONNECTED honours it); uint8 filters are per tensor."""
    w = ctx.tensor(1)
    if w.type != kind:
        raise ctx.fail(f"{w.type} weights with {kind} activations (TFLite pairs int8 with int8, uint8 with uint8)")
    scale, zero, q_axis = scales(ctx, w, "filter")
    if scale.size > 1:
        if kind != "INT8":
            raise ctx.fail("per-channel quantized weights need int8 activations")
        if q_axis != axis or scale.size != channels:
            raise ctx.fail(f"per-channel filter scales must be {channels} along axis {axis}, got "
                           f"{scale.size} along axis {q_axis}")
    if kind == "INT8" and np.any(zero != 0) and not (int8_offset and scale.size == 1):
        raise ctx.fail(f"int8 weights must have zero point 0, got {zero.tolist()}")
    return np.broadcast_to(scale, (channels,)), int(zero[0])


def _check_bias_scale(ctx: OpContext, bias_index: int, product: float, output_scale: np.float32) -> None:
    """kernel_util's GetQuantizedConvolutionMultipler check: the bias scale must be within
    0.02 output steps of input_scale * filter_scale."""
    bias = ctx.tensor(bias_index)
    if bias is None:
        return
    bias_scale = float(bias.quantization.scale[0]) if bias.quantization is not None else 0.0
    if abs(product - bias_scale) / float(output_scale) > 0.02:
        raise ctx.fail(f"the bias scale {bias_scale} is not input scale * filter scale ({product})")


def _conv_stage(ctx: OpContext, kind: str, filter_scale: np.ndarray, x_index: int = 0,
                bias_index: int = 2) -> dict[str, Any]:
    """Output-stage attributes of CONV_2D / DEPTHWISE_CONV_2D / TRANSPOSE_CONV (TFLite's
    PopulateConvolutionQuantizationParams): int8 rescales per channel by double(s_in) *
    double(s_w[c]) / double(s_out); uint8 by float32(s_in * s_w) / double(s_out)."""
    in_scale, in_zero = per_tensor(ctx, ctx.tensor(x_index), "input")
    out = ctx.output_tensor(0)
    attrs = activation_range(ctx, out)
    out_scale = per_tensor(ctx, out, "output")[0]
    if kind == "INT8":
        real = float(in_scale) * filter_scale.astype(np.float64) / float(out_scale)
    else:
        product = float(np.float32(in_scale) * np.float32(filter_scale[0]))
        _check_bias_scale(ctx, bias_index, product, out_scale)
        real = product / float(out_scale)
    attrs["multiplier"], attrs["shift"] = fixed_point(ctx, real, "output")
    attrs["input_zero_point"] = in_zero
    return attrs


@converts("CONV_2D", optional=(2,), quantized=True)
def conv_2d(ctx: OpContext) -> None:
    """Quantized CONV_2D (NHWC, OHWI filter, grouped when the input has a multiple of the
    filter's channels): any padding, strides, dilations, fused RELU/RELU6/RELU_N1_TO_1."""
    ctx.need_inputs(2, 3)
    x, w = ctx.tensor(0), ctx.tensor(1)
    kind = same_type(ctx, x, ctx.output_tensor(0))
    if len(w.shape) != 4 or len(x.shape) != 4:
        raise ctx.fail(f"expects a 4-D NHWC input and a 4-D OHWI filter, got {list(x.shape)} and {list(w.shape)}")
    filter_scale, weight_zero = _filter_scales(ctx, kind, 0, w.shape[0])
    bias = _bias(ctx, 2, w.shape[0])
    attrs = _conv_stage(ctx, kind, filter_scale)
    y = emit(ctx, "Conv2D", [ctx.input(0), ctx.input(1), bias], weight_zero_point=weight_zero,
             **window_options(ctx), **attrs)
    ctx.bind(0, y)


@converts("DEPTHWISE_CONV_2D", optional=(2,), quantized=True)
def depthwise_conv_2d(ctx: OpContext) -> None:
    """Quantized DEPTHWISE_CONV_2D (1HW(C*M) filter, depth multiplier M >= 1 taken from the
    shapes as TFLite does), per-channel scales along axis 3."""
    ctx.need_inputs(2, 3)
    x, w = ctx.tensor(0), ctx.tensor(1)
    kind = same_type(ctx, x, ctx.output_tensor(0))
    if len(w.shape) != 4 or len(x.shape) != 4 or w.shape[0] != 1:
        raise ctx.fail(f"expects a 4-D NHWC input and a (1, KH, KW, C*M) filter, got {list(x.shape)} and "
                       f"{list(w.shape)}")
    filter_scale, weight_zero = _filter_scales(ctx, kind, 3, w.shape[3])
    bias = _bias(ctx, 2, w.shape[3])
    attrs = _conv_stage(ctx, kind, filter_scale)
    y = emit(ctx, "DepthwiseConv2D", [ctx.input(0), ctx.input(1), bias], weight_zero_point=weight_zero,
             **window_options(ctx), **attrs)
    ctx.bind(0, y)


@converts("FULLY_CONNECTED", optional=(2,), quantized=True)
def fully_connected(ctx: OpContext) -> None:
    """Quantized FULLY_CONNECTED (default weights format, keep_num_dims both ways): TFLite's
    reference kernel rescales in double, scale = double(s_in) * double(s_w[o]) / double(s_out),
    rounding halves away from zero."""
    ctx.need_inputs(2, 3)
    x, w, out = ctx.tensor(0), ctx.tensor(1), ctx.output_tensor(0)
    kind = same_type(ctx, x, out)
    if ctx.options.get("weights_format", 0) != 0:
        raise ctx.fail("only the DEFAULT weights format is supported")
    if len(w.shape) != 2:
        raise ctx.fail(f"the weights must be 2-D (units, depth), got {list(w.shape)}")
    filter_scale, weight_zero = _filter_scales(ctx, kind, 0, w.shape[0], int8_offset=True)
    per_channel = w.quantization.scale.size > 1
    bias = _bias(ctx, 2, w.shape[0])
    in_scale, in_zero = per_tensor(ctx, x, "input")
    out_scale = per_tensor(ctx, out, "output")[0]
    if not per_channel:
        _check_bias_scale(ctx, 2, float(np.float32(in_scale) * np.float32(filter_scale[0])), out_scale)
    real = float(in_scale) * filter_scale.astype(np.float64) / float(out_scale)
    y = emit(ctx, "FullyConnected", [ctx.input(0), ctx.input(1), bias], input_zero_point=in_zero,
             weight_zero_point=weight_zero, scale=(real if per_channel else real[:1]).tolist(),
             keep_num_dims=int(bool(ctx.options.get("keep_num_dims"))), **activation_range(ctx, out))
    ctx.bind(0, y)


# --- elementwise ----------------------------------------------------------------------------


def _binary_params(ctx: OpContext) -> tuple[list[tuple[np.float32, int]], tuple[np.float32, int]]:
    ctx.need_inputs(2)
    same_type(ctx, ctx.tensor(0), ctx.tensor(1), ctx.output_tensor(0))
    inputs = [per_tensor(ctx, ctx.tensor(i), f"input {i}") for i in (0, 1)]
    return inputs, per_tensor(ctx, ctx.output_tensor(0), "output")


@converts("ADD", "SUB", quantized=True)
def add_sub(ctx: OpContext) -> None:
    """Quantized ADD / SUB (broadcasting, fused activations): both inputs rescaled to twice
    the larger input scale after a left shift of 20, summed, rescaled to the output, as
    TFLite's 8-bit kernels do."""
    (s1, z1), (s2, z2) = _binary_params(ctx)[0]
    out_scale = per_tensor(ctx, ctx.output_tensor(0), "output")[0]
    left_shift = 20
    twice_max = 2.0 * float(max(s1, s2))
    real_out = twice_max / (float(1 << left_shift) * float(out_scale))
    if real_out >= 1.0:
        raise ctx.fail(f"the output scale {out_scale} is too small for the input scales ({s1}, {s2}): TFLite's "
                       "8-bit kernel needs an output multiplier below 1")
    (m1,), (sh1,) = fixed_point(ctx, float(s1) / twice_max, "input 0")
    (m2,), (sh2,) = fixed_point(ctx, float(s2) / twice_max, "input 1")
    multiplier, shift = fixed_point(ctx, real_out, "output")
    op = "Add" if ctx.op.opcode == "ADD" else "Sub"
    y = emit(ctx, op, [ctx.input(0), ctx.input(1)], left_shift=left_shift, input1_zero_point=z1,
             input2_zero_point=z2, input1_multiplier=m1, input1_shift=sh1, input2_multiplier=m2,
             input2_shift=sh2, multiplier=multiplier, shift=shift, **activation_range(ctx, ctx.output_tensor(0)))
    ctx.bind(0, y)


@converts("MUL", quantized=True)
def mul(ctx: OpContext) -> None:
    """Quantized MUL (broadcasting, fused activations): multiplier s1 * s2 / s_out computed
    in float32, as TFLite's Prepare does."""
    (s1, z1), (s2, z2) = _binary_params(ctx)[0]
    out_scale = per_tensor(ctx, ctx.output_tensor(0), "output")[0]
    real = np.float32(np.float32(s1) * np.float32(s2)) / np.float32(out_scale)
    multiplier, shift = fixed_point(ctx, float(real), "output")
    y = emit(ctx, "Mul", [ctx.input(0), ctx.input(1)], input1_zero_point=z1, input2_zero_point=z2,
             multiplier=multiplier, shift=shift, **activation_range(ctx, ctx.output_tensor(0)))
    ctx.bind(0, y)


# --- pooling, concatenation, padding, reductions ----------------------------------------------


def _same_quantization(ctx: OpContext, what: str) -> None:
    (s_in, z_in), (s_out, z_out) = (per_tensor(ctx, t, n) for t, n in ((ctx.tensor(0), "input"),
                                                                       (ctx.output_tensor(0), "output")))
    if abs(float(s_in) - float(s_out)) > 1e-6 or z_in != z_out:
        raise ctx.fail(f"{what} needs the same input and output quantization, got scale {s_in} / zero point "
                       f"{z_in} in and {s_out} / {z_out} out")


@converts("AVERAGE_POOL_2D", "MAX_POOL_2D", quantized=True)
def pool_2d(ctx: OpContext) -> None:
    """Quantized AVERAGE_POOL_2D (rounded half away from zero, padding taps not counted) and
    MAX_POOL_2D, any padding and strides, fused activations; input and output share their
    quantization (TFLite assumes it)."""
    ctx.need_inputs(1)
    same_type(ctx, ctx.tensor(0), ctx.output_tensor(0))
    if len(ctx.tensor(0).shape) != 4:
        raise ctx.fail(f"expects a 4-D NHWC input, got {list(ctx.tensor(0).shape)}")
    _same_quantization(ctx, ctx.op.opcode)
    kernel = [int(ctx.options.get("filter_height", 0)), int(ctx.options.get("filter_width", 0))]
    if min(kernel) < 1:
        raise ctx.fail(f"the filter size must be >= 1, got {kernel}")
    attrs = activation_range(ctx, ctx.output_tensor(0))
    del attrs["output_zero_point"]
    op = "AveragePool2D" if ctx.op.opcode == "AVERAGE_POOL_2D" else "MaxPool2D"
    ctx.bind(0, emit(ctx, op, [ctx.input(0)], kernel_shape=kernel, **window_options(ctx, dilated=False), **attrs))


@converts("CONCATENATION", quantized=True)
def concatenation(ctx: OpContext) -> None:
    """Quantized CONCATENATION: an input whose scale or zero point differs from the output's
    is first rescaled as TFLite's uint8 kernel does (float32 x * (s_in * (1 / s_out)) + bias,
    halves away from zero); TFLite's int8 kernel refuses such inputs, edgerun rescales them
    the same way."""
    if ctx.num_inputs < 1:
        raise ctx.fail("expects at least one input")
    out = ctx.output_tensor(0)
    kind = same_type(ctx, out, *(ctx.tensor(i) for i in range(ctx.num_inputs)))
    if ctx.options.get("fused_activation_function", 0) != 0:
        raise ctx.fail("a fused activation is not supported on a concatenation")
    rank = len(out.shape)
    axis = int(ctx.options.get("axis", 0))
    if not -rank <= axis < rank:
        raise ctx.fail(f"axis {axis} is out of range for rank {rank}")
    out_scale, out_zero = per_tensor(ctx, out, "output")
    parts = []
    for i in range(ctx.num_inputs):
        scale, zero = per_tensor(ctx, ctx.tensor(i), f"input {i}")
        value = ctx.input(i)
        if zero != out_zero or scale != out_scale:
            factor = np.float32(scale) * (np.float32(1.0) / np.float32(out_scale))
            bias = np.float32(-zero) * factor
            value = emit(ctx, "RescaleFloat", [value], dtype=_NAMES[kind], scale=float(factor), bias=float(bias),
                         output_zero_point=out_zero)
        parts.append(value)
    ctx.bind(0, ctx.emit("Concat", parts, axis=axis % rank))


@converts("PAD", "PADV2", optional=(2,), quantized=True)
def pad(ctx: OpContext) -> None:
    """Quantized PAD pads with the output's zero point, PADV2 with its constant value (which
    TFLite requires to share the output's quantization); paddings (rank, 2) may be run-time."""
    ctx.need_inputs(2, 3)
    x, out = ctx.tensor(0), ctx.output_tensor(0)
    kind = same_type(ctx, x, out)
    scale, zero = per_tensor(ctx, out, "output")
    value = ctx.const("pad_value", np.array(zero, dtype=x.dtype))
    if ctx.has_input(2):
        constant = ctx.tensor(2)
        if constant.type != kind or int(np.prod(constant.shape)) != 1:
            raise ctx.fail(f"the pad value must be one {kind} value, got {constant.type} {list(constant.shape)}")
        if per_tensor(ctx, constant, "pad value") != (scale, zero):
            raise ctx.fail("the pad value must share the output's scale and zero point")
        value = ctx.emit("Reshape", [ctx.input(2), ctx.const("scalar", np.zeros(0, np.int64))])
    paddings = ctx.tensor(1)
    if paddings.type not in ("INT32", "INT64") or len(paddings.shape) != 2 or paddings.shape[1] != 2:
        raise ctx.fail(f"paddings must be an int32/int64 (rank, 2) tensor, got {paddings.type} {list(paddings.shape)}")
    if ctx.is_constant(1) and np.any(ctx.constant(1) < 0):
        raise ctx.fail(f"paddings must be >= 0, got {ctx.constant(1).tolist()}")
    pads = ctx.emit("Reshape", [ctx.emit("Transpose", [ctx.input(1)], perm=[1, 0]), ctx.const("flat", np.array([-1]))])
    pads = ctx.emit("Cast", [pads], to=7)
    ctx.bind(0, ctx.emit("Pad", [ctx.input(0), pads, value], mode="constant"))


@converts("MEAN", quantized=True)
def mean(ctx: OpContext) -> None:
    """Quantized MEAN over constant axes (keep_dims both ways), TFLite's reference: the sum
    less n * input zero point, rescaled by s_in / s_out divided by n in fixed point."""
    ctx.need_inputs(2)
    x, out = ctx.tensor(0), ctx.output_tensor(0)
    same_type(ctx, x, out)
    axes = np.asarray(ctx.constant(1, "the axes")).reshape(-1)
    if axes.dtype.kind not in "iu":
        raise ctx.fail(f"the axes must be integers, got {axes.dtype}")
    in_scale, in_zero = per_tensor(ctx, x, "input")
    out_scale, out_zero = per_tensor(ctx, out, "output")
    multiplier, shift = fixed_point(ctx, float(in_scale) / float(out_scale), "output")
    ctx.bind(0, emit(ctx, "Mean", [ctx.input(0)], axes=[int(a) for a in axes],
                     keepdims=int(bool(ctx.options.get("keep_dims"))), input_zero_point=in_zero,
                     output_zero_point=out_zero, multiplier=multiplier, shift=shift))


# --- elementwise functions of 8-bit values: tabulated ------------------------------------------


def _table_op(ctx: OpContext, table_of: Any) -> None:
    """Bind TableLookup(x, table), table[i] = what TFLite computes for the i-th value of the
    input type: `table_of(values, (in_scale, in_zero), (out_scale, out_zero), out_type)`."""
    ctx.need_inputs(1)
    x, out = ctx.tensor(0), ctx.output_tensor(0)
    kind = same_type(ctx, x, out)
    low, high = _RANGES[kind]
    values = np.arange(low, high + 1, dtype=np.int64)
    table = table_of(values, per_tensor(ctx, x, "input"), per_tensor(ctx, out, "output"), kind)
    table = ctx.const("table", np.clip(table, low, high).astype(x.dtype))
    ctx.bind(0, emit(ctx, "TableLookup", [ctx.input(0), table]))


def _relu_table(bottom: float, top: float | None):
    """TFLite's QuantizedReluX: requantize by float32(s_in / s_out), then clamp to
    [zp + roundf(bottom / s_out), zp + roundf(top / s_out)] (no upper bound for RELU)."""

    def table(values, inp, out, kind):
        (s_in, z_in), (s_out, z_out) = inp, out
        m, s = quantize_multiplier(float(np.float32(s_in) / np.float32(s_out)))
        low, high = _RANGES[kind]
        low = max(low, z_out + int(round_half_away(np.float32(bottom) / np.float32(s_out))))
        if top is not None:
            high = min(high, z_out + int(round_half_away(np.float32(top) / np.float32(s_out))))
        return np.clip(z_out + multiply_by_quantized_multiplier(values - z_in, m, s), low, high)

    return table


@converts("RELU", "RELU6", "RELU_N1_TO_1", "RELU_0_TO_1", quantized=True)
def relu(ctx: OpContext) -> None:
    """Quantized RELU / RELU6 / RELU_N1_TO_1 / RELU_0_TO_1: requantization to the output's
    scale and a clamp, as TFLite's QuantizedReluX computes them (tabulated)."""
    bounds = {"RELU": (0.0, None), "RELU6": (0.0, 6.0), "RELU_N1_TO_1": (-1.0, 1.0), "RELU_0_TO_1": (0.0, 1.0)}
    _table_op(ctx, _relu_table(*bounds[ctx.op.opcode]))


def _lut_table(fn):
    """TFLite's LUTPopulate for int8/uint8: float32 dequantize, fn in float32, multiply by
    float32(1 / s_out), round half away from zero, add the zero point in float32, truncate."""

    def table(values, inp, out, kind):
        (s_in, z_in), (s_out, z_out) = inp, out
        dequantized = np.float32(s_in) * (values - z_in).astype(np.float32)
        rescaled = round_half_away(fn(dequantized) * (np.float32(1.0) / np.float32(s_out)))
        return np.trunc(rescaled + np.float32(z_out)).astype(np.int64)

    return table


def _sigmoid(x: np.ndarray) -> np.ndarray:   # 1.0f / (1.0f + expf(-x)), expf correctly rounded
    return np.float32(1.0) / (np.float32(1.0) + np.exp(-x.astype(np.float64)).astype(np.float32))


def _tanh(x: np.ndarray) -> np.ndarray:
    return np.tanh(x.astype(np.float64)).astype(np.float32)


@converts("LOGISTIC", quantized=True)
def logistic(ctx: OpContext) -> None:
    """Quantized LOGISTIC: TFLite's 256-entry table of the float sigmoid; the output scale
    must be 1/256, as TFLite requires."""
    if float(per_tensor(ctx, ctx.output_tensor(0), "output")[0]) != 1.0 / 256:
        raise ctx.fail("the output scale of a quantized LOGISTIC must be 1/256")
    _table_op(ctx, _lut_table(_sigmoid))


@converts("TANH", quantized=True)
def tanh(ctx: OpContext) -> None:
    """Quantized TANH: TFLite's 256-entry table of the float tanh."""
    _table_op(ctx, _lut_table(_tanh))


@converts("LEAKY_RELU", quantized=True)
def leaky_relu(ctx: OpContext) -> None:
    """Quantized LEAKY_RELU: x >= zp rescaled by float32(s_in / s_out), below by
    float32(s_in * alpha / s_out) (a negative alpha negates the product), as TFLite does."""
    alpha = np.float32(ctx.options.get("alpha", 0.0))

    def table(values, inp, out, kind):
        (s_in, z_in), (s_out, z_out) = inp, out
        m_id, s_id = quantize_multiplier(float(np.float32(s_in) / np.float32(s_out)))
        m_a, s_a = quantize_multiplier(float(np.float32(np.float32(s_in) * alpha) / np.float32(s_out)))
        diff = values - z_in
        identity = multiply_by_quantized_multiplier(diff, m_id, s_id)
        scaled = np.sign(m_a) * multiply_by_quantized_multiplier(diff, abs(m_a), s_a)
        return z_out + np.where(diff >= 0, identity, scaled)

    _table_op(ctx, table)


def _int16_multiplier(real: float) -> tuple[int, int]:
    """QuantizeMultiplier then DownScaleInt32ToInt16Multiplier: a Q15 multiplier, exponent."""
    m, exponent = quantize_multiplier(real)
    return (32767 if m >= (1 << 31) - 1 - (1 << 15) else (m + (1 << 15)) >> 16), exponent


def _saturate16(x: np.ndarray) -> np.ndarray:
    return np.clip(x, -(1 << 15), (1 << 15) - 1)


def _hard_swish_table(values, inp, out, kind):
    """TFLite's reference 8-bit HardSwish, in int16 fixed point: x * relu6(x + 3) / 6 with the
    'reluish' factor rescaled to [-1, 1] (multiplier s_in / 128 / (3 / 32768)) and the output
    multiplier s_in / 128 / s_out, both float32 then Q15."""
    (s_in, z_in), (s_out, z_out) = inp, out
    hires = np.float32(1.0 / 128.0) * np.float32(s_in)
    out_m, out_exp = _int16_multiplier(float(hires / np.float32(s_out)))
    relu_m, relu_exp = _int16_multiplier(float(hires / np.float32(3.0 / 32768.0)))
    x = (values - z_in) * 128
    preshift = saturating_rounding_doubling_high_mul(x, out_m, bits=16)
    reluish = x
    if relu_exp > 0:
        reluish = _saturate16(reluish << (relu_exp - 1))
    reluish = saturating_rounding_doubling_high_mul(reluish, relu_m, bits=16)
    if relu_exp > 0:
        reluish = _saturate16(reluish << 1)
    if relu_exp < 0:
        reluish = rounding_divide_by_pot(reluish, -relu_exp)
    reluish = (reluish + (1 << 15)) >> 1
    product = reluish * preshift                  # SaturatingDoublingHighMul: truncating
    product = np.where((reluish == -(1 << 15)) & (preshift == -(1 << 15)), (1 << 15) - 1,
                       truncating_shift(product, 15))
    y = rounding_divide_by_pot(product, -out_exp) + z_out
    return (y + (1 << 15) & 0xFFFF) - (1 << 15)   # int16 arithmetic wraps


@converts("HARD_SWISH", quantized=True)
def hard_swish(ctx: OpContext) -> None:
    """Quantized HARD_SWISH: TFLite's reference int16 fixed-point formula, tabulated; its
    output multiplier must be below 1 (TFLite's requirement)."""
    s_in = per_tensor(ctx, ctx.tensor(0), "input")[0]
    s_out = per_tensor(ctx, ctx.output_tensor(0), "output")[0]
    if _int16_multiplier(float(np.float32(1.0 / 128.0) * np.float32(s_in) / np.float32(s_out)))[1] > 0:
        raise ctx.fail(f"the output scale {s_out} is too small for the input scale {s_in}")
    _table_op(ctx, _hard_swish_table)


@converts("SOFTMAX", quantized=True)
def softmax(ctx: OpContext) -> None:
    """Quantized SOFTMAX over the last axis (TFLite's reference, gemmlowp fixed point): the
    input multiplier beta * s_in * 2**26 (capped at 2**31 - 1) in Q31, diff_min the most
    negative difference that still fits Q5.26. The output must be scale 1/256 with the
    type's minimum as zero point (TFLite's requirement for int8; assumed for uint8)."""
    ctx.need_inputs(1)
    x, out = ctx.tensor(0), ctx.output_tensor(0)
    kind = same_type(ctx, x, out)
    s_in = per_tensor(ctx, x, "input")[0]
    s_out, z_out = per_tensor(ctx, out, "output")
    if z_out != _RANGES[kind][0] or abs(float(s_out) - 1.0 / 256) > 0.001 / 256:
        raise ctx.fail(f"the output of a quantized SOFTMAX must have scale 1/256 and zero point {_RANGES[kind][0]}, "
                       f"got {s_out} and {z_out}")
    beta = float(np.float32(ctx.options.get("beta", 1.0)))
    real = min(beta * float(s_in) * float(1 << 26), float((1 << 31) - 1))
    if not real > 1.0:
        raise ctx.fail(f"beta * input scale ({beta} * {s_in}) is too small for TFLite's softmax")
    multiplier, left_shift = quantize_multiplier(real)
    diff_min = -int(np.floor(31.0 * (1 << 26) / (1 << left_shift)))
    ctx.bind(0, emit(ctx, "Softmax", [ctx.input(0)], input_multiplier=multiplier, input_left_shift=left_shift,
                     diff_min=diff_min))


@converts("RESIZE_BILINEAR", quantized=True)
def resize_bilinear(ctx: OpContext) -> None:
    """Quantized RESIZE_BILINEAR (align_corners, half_pixel_centers; the size may be computed
    at run time): int8 in TFLite's 10-bit fixed point, uint8 in float32, as its reference
    kernels do. Input and output must share their quantization (TFLite does not rescale)."""
    ctx.need_inputs(2)
    same_type(ctx, ctx.tensor(0), ctx.output_tensor(0))
    if len(ctx.tensor(0).shape) != 4:
        raise ctx.fail(f"expects a 4-D NHWC input, got {list(ctx.tensor(0).shape)}")
    _same_quantization(ctx, "RESIZE_BILINEAR")
    align, half = bool(ctx.options.get("align_corners")), bool(ctx.options.get("half_pixel_centers"))
    if align and half:
        raise ctx.fail("align_corners and half_pixel_centers cannot both be set")
    ctx.bind(0, emit(ctx, "ResizeBilinear", [ctx.input(0), ctx.input(1)], align_corners=int(align),
                     half_pixel_centers=int(half)))


@converts("TRANSPOSE_CONV", optional=(3,), quantized=True)
def transpose_conv(ctx: OpContext) -> None:
    """Quantized TRANSPOSE_CONV (inputs output_shape, OHWI filter, input, optional bias):
    SAME/VALID padding, strides, fused activations; multipliers as CONV_2D's."""
    ctx.need_inputs(3, 4)
    x, w = ctx.tensor(2), ctx.tensor(1)
    kind = same_type(ctx, x, ctx.output_tensor(0))
    if len(w.shape) != 4 or len(x.shape) != 4:
        raise ctx.fail(f"expects a 4-D NHWC input and a 4-D OHWI filter, got {list(x.shape)} and {list(w.shape)}")
    filter_scale, weight_zero = _filter_scales(ctx, kind, 0, w.shape[0])
    bias = _bias(ctx, 3, w.shape[0])
    attrs = _conv_stage(ctx, kind, filter_scale, x_index=2, bias_index=3)
    options = window_options(ctx, dilated=False)
    y = emit(ctx, "TransposeConv2D", [ctx.input(0), ctx.input(1), ctx.input(2), bias],
             weight_zero_point=weight_zero, **options, **attrs)
    ctx.bind(0, y)
