"""What the NHWC network layers share: their padding, stride and dilation options, and the
checks of their activation input and filter.

TFLite filters are OHWI (depthwise: 1HW(C*M), CONV_3D: DHWIO) and activations NHWC; each
spatial converter transposes into ONNX's NCHW / OIHW at the node and back (the optimizer
cancels the pairs). SAME padding is TFLite's: total = max((out - 1) * stride +
effective_kernel - in, 0), the smaller half before, which is ONNX's SAME_UPPER (`auto_pad`).
Filters must have the input's type (`filter_tensor`): hybrid models (int8 weights, float
activations) are refused rather than computed with different rounding.
"""

from __future__ import annotations

from edgerun.converters.tflite.context import OpContext
from edgerun.converters.tflite.layout import PADDINGS
from edgerun.converters.tflite.reader import TFLiteTensor
from edgerun.runtime.graph import Value


def auto_pad(ctx: OpContext) -> str:
    padding = PADDINGS.get(ctx.options.get("padding", 0))
    if padding == "SAME":
        return "SAME_UPPER"
    if padding == "VALID":
        return "VALID"
    raise ctx.fail(f"unknown padding code {ctx.options.get('padding')}")


def strides(ctx: OpContext, axes: str = "hw") -> list[int]:
    values = [int(ctx.options[f"stride_{a}"]) for a in axes]
    if min(values) < 1:
        raise ctx.fail(f"strides must be >= 1, got {values}")
    return values


def dilations(ctx: OpContext, axes: str = "hw") -> list[int]:
    values = [int(ctx.options[f"dilation_{a}_factor"]) for a in axes]
    if min(values) < 1:
        raise ctx.fail(f"dilations must be >= 1, got {values}")
    return values


def nhwc_input(ctx: OpContext, i: int = 0, rank: int = 4) -> tuple[int, ...]:
    """Input `i`'s shape signature (-1 = dynamic); fails unless it has `rank` dimensions."""
    signature = ctx.tensor(i).signature
    if len(signature) != rank:
        layout = "NHWC" if rank == 4 else "NDHWC"
        raise ctx.fail(f"the input must be {rank}-D {layout}, got shape {list(signature)}")
    return signature


def filter_tensor(ctx: OpContext, i: int, rank: int, layout: str, data: int = 0) -> TFLiteTensor:
    """The filter (or weights) input `i`: `rank`-D and of the type of the activations (input `data`)."""
    weights = ctx.tensor(i)
    if len(weights.shape) != rank:
        raise ctx.fail(f"the filter must be a {rank}-D {layout} tensor, got shape {list(weights.shape)}")
    data_type = ctx.tensor(data).type
    if weights.type != data_type:
        raise ctx.fail(f"the filter is {weights.type} but the input is {data_type} "
                       "(hybrid quantized weights are not supported)")
    return weights


def with_bias(ctx: OpContext, inputs: list[Value], i: int) -> list[Value]:
    return [*inputs, ctx.input(i)] if ctx.has_input(i) else inputs
