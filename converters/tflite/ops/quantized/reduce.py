"""Quantized reductions: MEAN over constant axes, as TFLite's reference kernel computes it."""

from __future__ import annotations

import numpy as np

from edgerun.converters.tflite.context import OpContext
from edgerun.converters.tflite.ops.quantized.common import emit, fixed_point, per_tensor, same_type
from edgerun.converters.tflite.registry import converts


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
