"""Normalization (float): SOFTMAX, LOG_SOFTMAX and L2_NORMALIZATION over the last axis,
LOCAL_RESPONSE_NORMALIZATION over the channels of NHWC.
"""

from __future__ import annotations

import numpy as np

from edgerun.converters.tflite.context import OpContext
from edgerun.converters.tflite.layout import ACTIVATIONS
from edgerun.converters.tflite.ops.nhwc import nhwc_input
from edgerun.converters.tflite.registry import converts


@converts("SOFTMAX")
def softmax(ctx: OpContext) -> None:
    """Softmax(beta * x) over the last axis."""
    ctx.need_inputs(1)
    x = ctx.input(0)
    beta = float(ctx.options["beta"])
    if beta != 1.0:
        x = ctx.emit("Mul", [x, ctx.const("beta", np.float32(beta))])
    ctx.bind(0, ctx.emit("Softmax", [x], axis=-1))


@converts("LOG_SOFTMAX")
def log_softmax(ctx: OpContext) -> None:
    """LogSoftmax over the last axis."""
    ctx.need_inputs(1)
    ctx.bind(0, ctx.emit("LogSoftmax", [ctx.input(0)], axis=-1))


@converts("L2_NORMALIZATION")
def l2_normalization(ctx: OpContext) -> None:
    """x / max(sqrt(sum of squares over the last axis), 1e-6), TFLite's epsilon (a zero
    vector stays zero). LiteRT takes no fused activation here, and neither does edgerun."""
    ctx.need_inputs(1)
    if ctx.options["fused_activation_function"] != 0:
        raise ctx.fail(f"fused activation {ACTIVATIONS.get(ctx.options['fused_activation_function'])} "
                       "is not supported (LiteRT refuses it too)")
    x = ctx.input(0)
    norm = ctx.emit("Sqrt", [ctx.emit("ReduceSumSquare", [x, ctx.const("axes", np.array([-1], np.int64))],
                                      keepdims=1)])
    norm = ctx.emit("Max", [norm, ctx.const("epsilon", np.float32(1e-6))])
    ctx.bind(0, ctx.emit("Div", [x, norm]))


@converts("LOCAL_RESPONSE_NORMALIZATION")
def local_response_normalization(ctx: OpContext) -> None:
    """LRN over the channels of NHWC: TFLite's x * (bias + alpha * sum of squares within
    `radius`)^-beta is ONNX's with size = 2 * radius + 1 and alpha = alpha_tflite * size."""
    ctx.need_inputs(1)
    nhwc_input(ctx)
    radius = int(ctx.options["radius"])
    if radius < 0:
        raise ctx.fail(f"radius must be >= 0, got {radius}")
    size = 2 * radius + 1
    y = ctx.emit("LRN", [ctx.nchw(ctx.input(0))], size=size, alpha=float(ctx.options["alpha"]) * size,
                 beta=float(ctx.options["beta"]), bias=float(ctx.options["bias"]))
    ctx.bind(0, ctx.nhwc(y))
