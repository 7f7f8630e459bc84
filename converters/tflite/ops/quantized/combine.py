"""Quantized joining and padding: CONCATENATION (inputs of another quantization rescaled as
TFLite's uint8 kernel does), PAD and PADV2 (padding with the output's zero point or the
constant value).
"""

from __future__ import annotations

import numpy as np

from edgerun.converters.tflite.context import OpContext
from edgerun.converters.tflite.ops.quantized.common import DTYPE_NAMES, emit, per_tensor, same_type
from edgerun.converters.tflite.registry import converts


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
            value = emit(ctx, "RescaleFloat", [value], dtype=DTYPE_NAMES[kind], scale=float(factor), bias=float(bias),
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
