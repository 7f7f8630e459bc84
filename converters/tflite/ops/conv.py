"""Convolutions and dense layers (float): CONV_2D, DEPTHWISE_CONV_2D, CONV_3D, TRANSPOSE_CONV,
FULLY_CONNECTED and BATCH_MATMUL.

Filters go from TFLite's OHWI (depthwise: 1HW(C*M), CONV_3D: DHWIO) to ONNX's OIHW through a
Transpose the optimizer folds, activations from NHWC to NCHW around each node; the padding,
stride and dilation options and the filter checks are ops.nhwc's.
"""

from __future__ import annotations

import numpy as np

from edgerun.converters.tflite.context import OpContext
from edgerun.converters.tflite.layout import ACTIVATIONS, PADDINGS
from edgerun.converters.tflite.ops.nhwc import auto_pad, dilations, filter_tensor, nhwc_input, strides, with_bias
from edgerun.converters.tflite.registry import converts

# --- convolutions --------------------------------------------------------------------


@converts("CONV_2D", optional=(2,))
def conv_2d(ctx: OpContext) -> None:
    """Conv (OHWI filter -> OIHW); a filter with fewer input channels than the input makes
    a grouped convolution (group = input channels / filter channels)."""
    ctx.need_inputs(2, 3)
    weights = filter_tensor(ctx, 1, 4, "OHWI")
    x_shape = nhwc_input(ctx)
    groups = 1
    if x_shape[3] > 0 and weights.shape[3] and x_shape[3] != weights.shape[3]:
        if x_shape[3] % weights.shape[3]:
            raise ctx.fail(f"input channels {x_shape[3]} are not a multiple of the filter's {weights.shape[3]}")
        groups = x_shape[3] // weights.shape[3]
    w = ctx.emit("Transpose", [ctx.input(1)], perm=[0, 3, 1, 2])   # OHWI -> OIHW (folded)
    y = ctx.emit("Conv", with_bias(ctx, [ctx.nchw(ctx.input(0)), w], 2), auto_pad=auto_pad(ctx),
                 strides=strides(ctx), dilations=dilations(ctx), group=groups)
    ctx.bind(0, ctx.activation(ctx.nhwc(y)))


@converts("DEPTHWISE_CONV_2D", optional=(2,))
def depthwise_conv_2d(ctx: OpContext) -> None:
    """Conv with group = C: the 1HW(C*M) filter becomes (C*M, 1, H, W), output channel
    c * M + m reading input channel c as TFLite's does. The multiplier M is taken from the
    shapes (LiteRT does the same; the depth_multiplier option is not trusted)."""
    ctx.need_inputs(2, 3)
    weights = filter_tensor(ctx, 1, 4, "1HWC")
    channels = nhwc_input(ctx)[3]
    if weights.shape[0] != 1:
        raise ctx.fail(f"the filter must be 1HW(C*M), got shape {list(weights.shape)}")
    if channels <= 0:
        raise ctx.fail("the input's channel dimension must be static")
    if weights.shape[3] % channels:
        raise ctx.fail(f"filter channels {weights.shape[3]} are not a multiple of input channels {channels}")
    w = ctx.emit("Transpose", [ctx.input(1)], perm=[3, 0, 1, 2])   # 1HW(CM) -> (CM)1HW (folded)
    y = ctx.emit("Conv", with_bias(ctx, [ctx.nchw(ctx.input(0)), w], 2), auto_pad=auto_pad(ctx),
                 strides=strides(ctx), dilations=dilations(ctx), group=channels)
    ctx.bind(0, ctx.activation(ctx.nhwc(y)))


@converts("CONV_3D", optional=(2,))
def conv_3d(ctx: OpContext) -> None:
    """Conv over NDHWC with a DHWIO filter (-> OIDHW); grouped when the filter has fewer
    input channels than the input."""
    ctx.need_inputs(2, 3)
    weights = filter_tensor(ctx, 1, 5, "DHWIO")
    channels = nhwc_input(ctx, rank=5)[4]
    groups = 1
    if channels > 0 and weights.shape[3] and channels != weights.shape[3]:
        if channels % weights.shape[3]:
            raise ctx.fail(f"input channels {channels} are not a multiple of the filter's {weights.shape[3]}")
        groups = channels // weights.shape[3]
    w = ctx.emit("Transpose", [ctx.input(1)], perm=[4, 3, 0, 1, 2])
    x = ctx.emit("Transpose", [ctx.input(0)], perm=[0, 4, 1, 2, 3])
    y = ctx.emit("Conv", with_bias(ctx, [x, w], 2), auto_pad=auto_pad(ctx), strides=strides(ctx, "dhw"),
                 dilations=dilations(ctx, "dhw"), group=groups)
    ctx.bind(0, ctx.activation(ctx.emit("Transpose", [y], perm=[0, 2, 3, 4, 1])))


def transpose_conv_pads(ctx: OpContext, size: int, x_size: int, kernel: int, stride: int) -> tuple[int, int, int]:
    """(pad before, pad after, output_padding) of one axis so that ConvTranspose yields
    exactly `size`: TFLite pads as for the convolution from `size` back to the input
    (smaller half before) and writes only the outputs inside `size`. Like LiteRT, fails
    unless that convolution gives the input's size."""
    if PADDINGS.get(ctx.options.get("padding")) == "SAME":
        conv_out = -(-size // stride)
    else:
        conv_out = (size - kernel + stride) // stride
    if conv_out != x_size:
        raise ctx.fail(f"output size {size} does not match input size {x_size} (kernel {kernel}, stride {stride} "
                       f"and this padding map it back to {conv_out})")
    before = max((conv_out - 1) * stride + kernel - size, 0) // 2
    after = stride * (x_size - 1) + kernel - before - size
    return before, max(after, 0), max(-after, 0)


@converts("TRANSPOSE_CONV", optional=(3,))
def transpose_conv(ctx: OpContext) -> None:
    """ConvTranspose of input 2 with the OHWI filter (-> IOHW) to the constant NHWC
    `output_shape` (input 0); explicit pads / output_padding give exactly that shape.
    Optional bias (input 3) and fused activation (version 4+)."""
    ctx.need_inputs(3, 4)
    auto_pad(ctx)  # (validates the padding code)
    out_shape = [int(v) for v in np.asarray(ctx.constant(0, "output_shape")).reshape(-1)]
    weights = filter_tensor(ctx, 1, 4, "OHWI", data=2)
    x_shape = nhwc_input(ctx, 2)
    if len(out_shape) != 4 or min(out_shape) < 0:
        raise ctx.fail(f"output_shape {out_shape} must be 4 non-negative NHWC sizes")
    if out_shape[3] != weights.shape[0] or (x_shape[3] > 0 and x_shape[3] != weights.shape[3]):
        raise ctx.fail(f"filter shape {list(weights.shape)} does not map input shape {list(x_shape)} "
                       f"to output_shape {out_shape}")
    if min(x_shape[1:3]) <= 0:
        raise ctx.fail(f"the input's height and width must be static, got shape {list(x_shape)}")
    axes = [transpose_conv_pads(ctx, out_shape[a], x_shape[a], weights.shape[a], s)
            for a, s in zip((1, 2), strides(ctx), strict=True)]
    w = ctx.emit("Transpose", [ctx.input(1)], perm=[3, 0, 1, 2])   # OHWI -> IOHW (folded)
    y = ctx.emit("ConvTranspose", with_bias(ctx, [ctx.nchw(ctx.input(2)), w], 3), strides=strides(ctx),
                 pads=[axes[0][0], axes[1][0], axes[0][1], axes[1][1]],
                 output_padding=[axes[0][2], axes[1][2]])
    ctx.bind(0, ctx.activation(ctx.nhwc(y)))


# --- dense layers --------------------------------------------------------------------


@converts("FULLY_CONNECTED", optional=(2,))
def fully_connected(ctx: OpContext) -> None:
    """y = x @ W^T + b with W [units, depth]: x is flattened to [-1, depth] (Gemm), or with
    keep_num_dims keeps its leading dimensions (MatMul). Only the DEFAULT weights_format;
    fused TANH and SIGN_BIT are refused, as LiteRT's kernel refuses them."""
    ctx.need_inputs(2, 3)
    if ctx.options["weights_format"] != 0:
        raise ctx.fail(f"weights_format {ctx.options['weights_format']} is not supported (only DEFAULT)")
    activation = ACTIVATIONS.get(ctx.options["fused_activation_function"])
    if activation in ("TANH", "SIGN_BIT"):
        raise ctx.fail(f"fused activation {activation} is not supported (LiteRT refuses it too)")
    weights = filter_tensor(ctx, 1, 2, "[units, depth]")
    depth = weights.shape[1]
    if ctx.options["keep_num_dims"]:
        y = ctx.emit("MatMul", [ctx.input(0), ctx.emit("Transpose", [ctx.input(1)], perm=[1, 0])])
        if ctx.has_input(2):
            y = ctx.emit("Add", [y, ctx.input(2)])
    else:
        x = ctx.emit("Reshape", [ctx.input(0), ctx.const("flat_shape", np.array([-1, depth], np.int64))])
        y = ctx.emit("Gemm", with_bias(ctx, [x, ctx.input(1)], 2), transB=1)
    ctx.bind(0, ctx.activation(y))


@converts("BATCH_MATMUL")
def batch_matmul(ctx: OpContext) -> None:
    """MatMul (batch dimensions broadcast as in numpy); adj_x / adj_y transpose the last two
    dimensions of x / y first."""
    ctx.need_inputs(2)
    operands = []
    for i, adjoint in enumerate((ctx.options["adj_x"], ctx.options["adj_y"])):
        rank = len(ctx.tensor(i).signature)
        if rank < 2:
            raise ctx.fail(f"input {i} must have rank >= 2, got shape {list(ctx.tensor(i).signature)}")
        value = ctx.input(i)
        if adjoint:
            value = ctx.emit("Transpose", [value], perm=[*range(rank - 2), rank - 1, rank - 2])
        operands.append(value)
    ctx.bind(0, ctx.emit("MatMul", operands))
