"""Quantized binary arithmetic: ADD, SUB and MUL (broadcasting, fused activations), with the
input and output multipliers TFLite's 8-bit kernels use.
"""

from __future__ import annotations

import numpy as np

from edgerun.converters.tflite.context import OpContext
from edgerun.converters.tflite.ops.quantized.common import activation_range, emit, fixed_point, per_tensor, same_type
from edgerun.converters.tflite.registry import converts


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
