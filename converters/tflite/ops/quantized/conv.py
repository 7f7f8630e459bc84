"""Quantized convolutions and dense layers: CONV_2D, DEPTHWISE_CONV_2D, TRANSPOSE_CONV and
FULLY_CONNECTED (int8 per-tensor or per-channel / uint8 per-tensor weights, int32 bias), with
the effective multipliers worked out as TFLite's PopulateConvolutionQuantizationParams does.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgerun.converters.tflite.context import OpContext
from edgerun.converters.tflite.ops.quantized.common import (
    activation_range,
    emit,
    fixed_point,
    per_tensor,
    same_type,
    scales,
    window_options,
)
from edgerun.converters.tflite.registry import converts


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
