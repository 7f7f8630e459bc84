"""Quantized normalization: SOFTMAX over the last axis (TFLite's reference, gemmlowp fixed
point).
"""

from __future__ import annotations

import numpy as np

from edgerun.converters.tflite.context import OpContext
from edgerun.converters.tflite.ops.quantized.common import RANGES, emit, per_tensor, same_type
from edgerun.converters.tflite.registry import converts
from edgerun.runtime.kernels.fixed_point import quantize_multiplier


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
    if z_out != RANGES[kind][0] or abs(float(s_out) - 1.0 / 256) > 0.001 / 256:
        raise ctx.fail(f"the output of a quantized SOFTMAX must have scale 1/256 and zero point {RANGES[kind][0]}, "
                       f"got {s_out} and {z_out}")
    beta = float(np.float32(ctx.options.get("beta", 1.0)))
    real = min(beta * float(s_in) * float(1 << 26), float((1 << 31) - 1))
    if not real > 1.0:
        raise ctx.fail(f"beta * input scale ({beta} * {s_in}) is too small for TFLite's softmax")
    multiplier, left_shift = quantize_multiplier(real)
    diff_min = -int(np.floor(31.0 * (1 << 26) / (1 << left_shift)))
    ctx.bind(0, emit(ctx, "Softmax", [ctx.input(0)], input_multiplier=multiplier, input_left_shift=left_shift,
                     diff_min=diff_min))
