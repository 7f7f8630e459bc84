"""The domain changers, always converted here: DEQUANTIZE (float16 -> Cast, which the optimizer
folds; int8/uint8/int16 -> DequantizeLinear, exactly TFLite's float32(scale * (q - zero_point)))
and QUANTIZE (from float32 with TFLite's rounding, half away from zero where ONNX's
QuantizeLinear rounds half to even; between integer types a fixed-point requantization).
"""

from __future__ import annotations

import numpy as np

from edgerun.converters.tflite.context import OpContext
from edgerun.converters.tflite.ops.quantized.common import DTYPE_NAMES, RANGES, emit, fixed_point, per_tensor, scales
from edgerun.converters.tflite.registry import converts


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
    if x.type not in RANGES:
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
    if y.type not in RANGES:
        raise ctx.fail(f"cannot quantize to {y.type} (int8/uint8/int16)")
    out_scale, out_zero, axis = scales(ctx, y, "output")
    if x.type == "FLOAT32":
        if out_zero.size not in (1, out_scale.size):
            raise ctx.fail(f"{out_zero.size} zero points for {out_scale.size} scales")
        value = emit(ctx, "Quantize", [ctx.input(0)], dtype=DTYPE_NAMES[y.type], scale=out_scale.tolist(),
                     zero_point=out_zero.tolist(), axis=axis)
        ctx.bind(0, value)
        return
    if x.type not in RANGES:
        raise ctx.fail(f"cannot quantize a {x.type} tensor (float32/int8/uint8/int16)")
    in_scale, in_zero = per_tensor(ctx, x, "input", tuple(RANGES))
    out_scale, out_zero = per_tensor(ctx, y, "output", tuple(RANGES))
    multiplier, shift = fixed_point(ctx, float(in_scale) / float(out_scale), "requantization")
    ctx.bind(0, emit(ctx, "Requantize", [ctx.input(0)], dtype=DTYPE_NAMES[y.type], input_zero_point=in_zero,
                     output_zero_point=out_zero, multiplier=multiplier, shift=shift))
