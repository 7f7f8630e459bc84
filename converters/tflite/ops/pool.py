"""Pooling (float): AVERAGE_POOL_2D, MAX_POOL_2D and L2_POOL_2D over NHWC windows, each an
ONNX pool in NCHW; padding never counts (TFLite divides by the taps inside the image).
"""

from __future__ import annotations

from edgerun.converters.tflite.context import OpContext
from edgerun.converters.tflite.ops.nhwc import auto_pad, nhwc_input, strides
from edgerun.converters.tflite.registry import converts


def pool_attrs(ctx: OpContext) -> dict:
    nhwc_input(ctx)
    kernel = [int(ctx.options["filter_height"]), int(ctx.options["filter_width"])]
    if min(kernel) < 1:
        raise ctx.fail(f"filter size must be >= 1, got {kernel}")
    return dict(kernel_shape=kernel, strides=strides(ctx), auto_pad=auto_pad(ctx))


@converts("AVERAGE_POOL_2D")
def average_pool_2d(ctx: OpContext) -> None:
    """AveragePool; TFLite divides by the number of values inside the image, so padding is
    not counted (count_include_pad=0)."""
    ctx.need_inputs(1)
    y = ctx.emit("AveragePool", [ctx.nchw(ctx.input(0))], count_include_pad=0, **pool_attrs(ctx))
    ctx.bind(0, ctx.activation(ctx.nhwc(y)))


@converts("MAX_POOL_2D")
def max_pool_2d(ctx: OpContext) -> None:
    """MaxPool (padding never wins)."""
    ctx.need_inputs(1)
    y = ctx.emit("MaxPool", [ctx.nchw(ctx.input(0))], **pool_attrs(ctx))
    ctx.bind(0, ctx.activation(ctx.nhwc(y)))


@converts("L2_POOL_2D")
def l2_pool_2d(ctx: OpContext) -> None:
    """sqrt(mean of squares) over each window's values inside the image (not ONNX LpPool,
    which does not divide): Sqrt(AveragePool(x * x, count_include_pad=0))."""
    ctx.need_inputs(1)
    x = ctx.nchw(ctx.input(0))
    mean = ctx.emit("AveragePool", [ctx.emit("Mul", [x, x])], count_include_pad=0, **pool_attrs(ctx))
    ctx.bind(0, ctx.activation(ctx.nhwc(ctx.emit("Sqrt", [mean]))))
