"""Convolutions, pooling, fully connected and other NHWC network layers (float).

TFLite filters are OHWI (depthwise: 1HW(C*M)) and activations NHWC; each converter
transposes into ONNX's NCHW / OIHW at the node and back (the optimizer cancels the pairs).
SAME padding is TFLite's: total = max((out - 1) * stride + effective_kernel - in, 0), the
smaller half before, which is ONNX's SAME_UPPER.
"""

from __future__ import annotations

import numpy as np

from edgerun.converters.tflite.context import OpContext
from edgerun.converters.tflite.layout import PADDINGS
from edgerun.converters.tflite.registry import converts


def auto_pad(ctx: OpContext) -> str:
    padding = PADDINGS.get(ctx.options.get("padding", 0))
    if padding == "SAME":
        return "SAME_UPPER"
    if padding == "VALID":
        return "VALID"
    raise ctx.fail(f"unknown padding code {ctx.options.get('padding')}")


def strides(ctx: OpContext) -> list[int]:
    values = [int(ctx.options["stride_h"]), int(ctx.options["stride_w"])]
    if min(values) < 1:
        raise ctx.fail(f"strides must be >= 1, got {values}")
    return values


def dilations(ctx: OpContext) -> list[int]:
    values = [int(ctx.options["dilation_h_factor"]), int(ctx.options["dilation_w_factor"])]
    if min(values) < 1:
        raise ctx.fail(f"dilations must be >= 1, got {values}")
    return values


@converts("CONV_2D", optional=(2,))
def conv_2d(ctx: OpContext) -> None:
    ctx.need_inputs(2, 3)
    weights = ctx.tensor(1)
    if weights is None or len(weights.shape) != 4:
        raise ctx.fail("the filter must be a 4-D OHWI tensor")
    x_shape = ctx.tensor(0).shape
    if len(x_shape) != 4:
        raise ctx.fail(f"the input must be 4-D NHWC, got shape {list(x_shape)}")
    groups = 1
    if x_shape[3] and weights.shape[3] and x_shape[3] != weights.shape[3]:
        if x_shape[3] % weights.shape[3]:
            raise ctx.fail(f"input channels {x_shape[3]} are not a multiple of the filter's {weights.shape[3]}")
        groups = x_shape[3] // weights.shape[3]
    w = ctx.emit("Transpose", [ctx.input(1)], perm=[0, 3, 1, 2])   # OHWI -> OIHW (folded)
    inputs = [ctx.nchw(ctx.input(0)), w]
    if ctx.has_input(2):
        inputs.append(ctx.input(2))
    y = ctx.emit("Conv", inputs, auto_pad=auto_pad(ctx), strides=strides(ctx), dilations=dilations(ctx),
                 group=groups)
    ctx.bind(0, ctx.activation(ctx.nhwc(y)))


_ = np  # (numpy is used by the converters added below)
