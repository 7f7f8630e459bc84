"""Quantized pooling: AVERAGE_POOL_2D and MAX_POOL_2D (input and output share their
quantization, as TFLite assumes).
"""

from __future__ import annotations

from edgerun.converters.tflite.context import OpContext
from edgerun.converters.tflite.ops.quantized.common import (
    activation_range,
    emit,
    same_quantization,
    same_type,
    window_options,
)
from edgerun.converters.tflite.registry import converts


@converts("AVERAGE_POOL_2D", "MAX_POOL_2D", quantized=True)
def pool_2d(ctx: OpContext) -> None:
    """Quantized AVERAGE_POOL_2D (rounded half away from zero, padding taps not counted) and
    MAX_POOL_2D, any padding and strides, fused activations; input and output share their
    quantization (TFLite assumes it)."""
    ctx.need_inputs(1)
    same_type(ctx, ctx.tensor(0), ctx.output_tensor(0))
    if len(ctx.tensor(0).shape) != 4:
        raise ctx.fail(f"expects a 4-D NHWC input, got {list(ctx.tensor(0).shape)}")
    same_quantization(ctx, ctx.op.opcode)
    kernel = [int(ctx.options.get("filter_height", 0)), int(ctx.options.get("filter_width", 0))]
    if min(kernel) < 1:
        raise ctx.fail(f"the filter size must be >= 1, got {kernel}")
    attrs = activation_range(ctx, ctx.output_tensor(0))
    del attrs["output_zero_point"]
    op = "AveragePool2D" if ctx.op.opcode == "AVERAGE_POOL_2D" else "MaxPool2D"
    ctx.bind(0, emit(ctx, op, [ctx.input(0)], kernel_shape=kernel, **window_options(ctx, dilated=False), **attrs))
