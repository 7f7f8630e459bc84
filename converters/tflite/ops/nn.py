"""Convolutions, pooling, fully connected, resizing and other NHWC network layers (float).

TFLite filters are OHWI (depthwise: 1HW(C*M), CONV_3D: DHWIO) and activations NHWC; each
spatial converter transposes into ONNX's NCHW / OIHW at the node and back (the optimizer
cancels the pairs). SAME padding is TFLite's: total = max((out - 1) * stride +
effective_kernel - in, 0), the smaller half before, which is ONNX's SAME_UPPER.
Filters must have the input's type: hybrid models (int8 weights, float activations) are
refused rather than computed with different rounding.
"""

from __future__ import annotations

import numpy as np

from edgerun.converters.tflite.context import OpContext
from edgerun.converters.tflite.layout import ACTIVATIONS, PADDINGS
from edgerun.converters.tflite.reader import TFLiteTensor
from edgerun.converters.tflite.registry import converts
from edgerun.runtime.graph import Value

# --- shared option readers -----------------------------------------------------------


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


# --- pooling -------------------------------------------------------------------------


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


# --- resizing ------------------------------------------------------------------------

FLOAT, INT32, INT64 = 1, 6, 7  # ONNX element types for Cast


def resize_sizes(ctx: OpContext) -> np.ndarray | None:
    """The constant [new_h, new_w] (None when computed at run time); checks the operands."""
    ctx.need_inputs(2)
    nhwc_input(ctx)
    size = ctx.tensor(1)
    if size.type != "INT32" or tuple(size.signature) != (2,):
        raise ctx.fail(f"size must be an INT32 tensor of 2 values, got {size.type} shape {list(size.signature)}")
    if not ctx.is_constant(1):
        return None
    sizes = np.asarray(ctx.constant(1)).astype(np.int64)
    if sizes.min() < 1:
        raise ctx.fail(f"size {sizes.tolist()} must be positive")
    return sizes


@converts("RESIZE_BILINEAR")
def resize_bilinear(ctx: OpContext) -> None:
    """Resize (linear) over H and W (in NCHW, like the convolutions around it). TFLite
    reads output position i at i * in / out (ONNX asymmetric), with align_corners at
    i * (in - 1) / (out - 1) (align_corners), with half_pixel_centers at
    (i + 0.5) * in / out - 0.5 clamped into the image (half_pixel). LiteRT's kernel refuses
    both flags together (its XNNPACK delegate does not), and so does this converter."""
    sizes = resize_sizes(ctx)
    align, half = ctx.options["align_corners"], ctx.options["half_pixel_centers"]
    if align and half:
        raise ctx.fail("align_corners and half_pixel_centers cannot both be set")
    mode = "align_corners" if align else "half_pixel" if half else "asymmetric"
    if sizes is None:
        target = ctx.emit("Cast", [ctx.input(1)], to=INT64)
    else:
        target = ctx.const("sizes", sizes)
    y = ctx.emit("Resize", [ctx.nchw(ctx.input(0)), None, None, target], axes=[2, 3], mode="linear",
                 coordinate_transformation_mode=mode)
    ctx.bind(0, ctx.nhwc(y))


def nearest_indices(ctx: OpContext, axis: int, out: Value, align: bool, half: bool) -> Value:
    """The int64 source index of each output position along `axis` (out: int32 [1]),
    TFLite's float32 arithmetic step by step: scale = in / out, or (in - 1) / (out - 1) with
    align_corners when out > 1; v = (i + 0.5 if half_pixel_centers else i) * scale; index =
    round(v) (half away from zero) with align_corners, else floor(v); at most in - 1."""
    x = ctx.input(0)
    size = ctx.tensor(0).signature[axis]
    if size > 0:
        in_int = ctx.const(f"in{axis}", np.array([size], np.int64))
    else:
        in_int = ctx.emit("Shape", [x], start=axis, end=axis + 1)
    num = ctx.emit("Cast", [in_int], to=FLOAT)
    den = ctx.emit("Cast", [out], to=FLOAT)
    if align:
        corner = ctx.emit("Cast", [ctx.emit("Greater", [out, ctx.const("one", np.int32(1))])], to=FLOAT)
        num, den = ctx.emit("Sub", [num, corner]), ctx.emit("Sub", [den, corner])
    scale = ctx.emit("Div", [num, den])
    limit = ctx.emit("Reshape", [out, ctx.const("scalar", np.zeros(0, np.int64))])
    position = ctx.emit("Cast", [ctx.emit("Range", [ctx.const("zero", np.int32(0)), limit,
                                                    ctx.const("step", np.int32(1))])], to=FLOAT)
    if half:
        position = ctx.emit("Add", [position, ctx.const("half", np.float32(0.5))])
    value = ctx.emit("Mul", [position, scale])
    index = ctx.emit("Floor", [value])
    if align:
        fraction = ctx.emit("Sub", [value, index])
        up = ctx.emit("GreaterOrEqual", [fraction, ctx.const("half", np.float32(0.5))])
        index = ctx.emit("Add", [index, ctx.emit("Cast", [up], to=FLOAT)])
    last = ctx.emit("Sub", [in_int, ctx.const("one", np.int64(1))])
    return ctx.emit("Min", [ctx.emit("Cast", [index], to=INT64), last])


@converts("RESIZE_NEAREST_NEIGHBOR", any_dtype=True)
def resize_nearest_neighbor(ctx: OpContext) -> None:
    """Two Gathers (rows, then columns; in NCHW, like the convolutions around it) at the
    indices LiteRT's kernel computes (see `nearest_indices`): exact for every flag
    combination, both flags together included, which no ONNX Resize mode reproduces.
    Constant sizes fold the indices into constants."""
    sizes = resize_sizes(ctx)
    align, half = ctx.options["align_corners"], ctx.options["half_pixel_centers"]
    y = ctx.nchw(ctx.input(0))
    for k, axis in enumerate((1, 2)):
        if sizes is None:
            out = ctx.emit("Slice", [ctx.input(1), ctx.const("start", np.array([k], np.int64)),
                                     ctx.const("end", np.array([k + 1], np.int64))])
        else:
            out = ctx.const("size", np.array([sizes[k]], np.int32))
        y = ctx.emit("Gather", [y, nearest_indices(ctx, axis, out, align, half)], axis=axis + 1)  # NCHW axis
    ctx.bind(0, ctx.nhwc(y))


# --- moving data between space, depth and batch --------------------------------------


def block_size(ctx: OpContext) -> int:
    ctx.need_inputs(1)
    nhwc_input(ctx)
    block = int(ctx.options["block_size"])
    if block < 1:
        raise ctx.fail(f"block_size must be >= 1, got {block}")
    return block


@converts("DEPTH_TO_SPACE", any_dtype=True)
def depth_to_space(ctx: OpContext) -> None:
    """DepthToSpace, mode DCR: TFLite reads channel (i * block + j) * C_out + c for offset
    (i, j), which is ONNX's DCR order."""
    y = ctx.emit("DepthToSpace", [ctx.nchw(ctx.input(0))], blocksize=block_size(ctx), mode="DCR")
    ctx.bind(0, ctx.nhwc(y))


@converts("SPACE_TO_DEPTH", any_dtype=True)
def space_to_depth(ctx: OpContext) -> None:
    """SpaceToDepth (the inverse of DCR DepthToSpace, as TFLite's)."""
    y = ctx.emit("SpaceToDepth", [ctx.nchw(ctx.input(0))], blocksize=block_size(ctx))
    ctx.bind(0, ctx.nhwc(y))


def block_operands(ctx: OpContext, what: str) -> tuple[list[int], np.ndarray, list[int]]:
    """(block_shape, [M, 2] paddings or crops, the input's dimensions after batch), all
    constant and static: the converters reshape with them."""
    ctx.need_inputs(3)
    block = [int(v) for v in np.asarray(ctx.constant(1, "block_shape")).reshape(-1)]
    shape = list(ctx.tensor(0).signature)
    if not block or min(block) < 1 or len(shape) < len(block) + 1:
        raise ctx.fail(f"block_shape {block} must hold 1 to rank-1 ({len(shape) - 1}) positive sizes")
    amounts = np.asarray(ctx.constant(2, what)).astype(np.int64)
    if amounts.shape != (len(block), 2) or amounts.min(initial=0) < 0:
        raise ctx.fail(f"{what} must be [{len(block)}, 2] non-negative values, got shape {list(amounts.shape)}")
    if min(shape[1:]) < 0:
        raise ctx.fail(f"all dimensions but batch must be static, got shape {shape}")
    return block, amounts, shape[1:]


def shape_const(ctx: OpContext, name: str, dims: list[int]) -> Value:
    return ctx.const(name, np.array(dims, np.int64))


@converts("SPACE_TO_BATCH_ND")
def space_to_batch_nd(ctx: OpContext) -> None:
    """Pad the M block dimensions, split each into (size / block, block), move the block
    factors in front of batch and merge them into it: batch index = offset * N + n."""
    block, pads, dims = block_operands(ctx, "paddings")
    m, rank = len(block), len(dims) + 1
    padded = [dims[i] + int(pads[i].sum()) for i in range(m)]
    if any(p % b for p, b in zip(padded, block, strict=True)):
        raise ctx.fail(f"padded block dimensions {padded} are not multiples of block_shape {block}")
    all_pads = [0] * (2 * rank)
    for i in range(m):
        all_pads[1 + i], all_pads[rank + 1 + i] = int(pads[i, 0]), int(pads[i, 1])
    x = ctx.emit("Pad", [ctx.input(0), shape_const(ctx, "pads", all_pads)])
    split = [d for p, b in zip(padded, block, strict=True) for d in (p // b, b)]
    rest = dims[m:]
    x = ctx.emit("Reshape", [x, shape_const(ctx, "split", [-1, *split, *rest])])
    perm = [*range(2, 2 * m + 1, 2), 0, *range(1, 2 * m, 2), *range(2 * m + 1, 2 * m + 1 + len(rest))]
    x = ctx.emit("Transpose", [x], perm=perm)
    merged = [p // b for p, b in zip(padded, block, strict=True)]
    ctx.bind(0, ctx.emit("Reshape", [x, shape_const(ctx, "merged", [-1, *merged, *rest])]))


@converts("BATCH_TO_SPACE_ND", any_dtype=True)
def batch_to_space_nd(ctx: OpContext) -> None:
    """The inverse of SPACE_TO_BATCH_ND: split batch into (block..., N), interleave each
    block factor after its dimension, merge, then crop (begin, end) per block dimension."""
    block, crops, dims = block_operands(ctx, "crops")
    m = len(block)
    spatial, rest = dims[:m], dims[m:]
    x = ctx.emit("Reshape", [ctx.input(0), shape_const(ctx, "split", [*block, -1, *dims])])
    perm = [m, *[a for i in range(m) for a in (m + 1 + i, i)], *range(2 * m + 1, 2 * m + 1 + len(rest))]
    x = ctx.emit("Transpose", [x], perm=perm)
    full = [s * b for s, b in zip(spatial, block, strict=True)]
    x = ctx.emit("Reshape", [x, shape_const(ctx, "merged", [-1, *full, *rest])])
    ends = [f - int(c) for f, c in zip(full, crops[:, 1], strict=True)]
    if any(e < int(c) for e, c in zip(ends, crops[:, 0], strict=True)):
        raise ctx.fail(f"crops {crops.tolist()} remove more than the {full} rows/columns there are")
    ctx.bind(0, ctx.emit("Slice", [x, shape_const(ctx, "starts", [int(c) for c in crops[:, 0]]),
                                   shape_const(ctx, "ends", ends), shape_const(ctx, "axes", list(range(1, m + 1)))]))


# --- normalization -------------------------------------------------------------------


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


# --- recurrent -----------------------------------------------------------------------

LSTM_OPTIONAL = (1, 5, 9, 10, 11, 12, 16, 17, 20, 21, 22, 23)  # CIFG, peepholes, projection, layer norm


def lstm_activation(ctx: OpContext, value: Value) -> Value:
    """The LSTM's cell activation, applied for real (TANH too, unlike the clamp of other
    kernels). NONE is refused: LiteRT's kernel then computes h = o * g instead of o * c (its
    activation step leaves the scratch holding the cell gate), and SIGN_BIT is not supported."""
    name = ACTIVATIONS.get(ctx.options["fused_activation_function"])
    if name in ("RELU", "RELU6", "RELU_N1_TO_1"):
        return ctx.activation(value)
    if name == "NONE":
        raise ctx.fail("cell activation NONE is not supported (LiteRT computes h = output gate * cell gate with it)")
    if name != "TANH":
        raise ctx.fail(f"cell activation {name} is not supported")
    return ctx.emit("Tanh", [value])


def lstm_state(ctx: OpContext, i: int) -> Value | None:
    """Initial state input `i`; None for a variable tensor without contents (zeros)."""
    tensor = ctx.tensor(i)
    if tensor.is_variable and tensor.data is None:
        return None
    return ctx.input(i)


def clipped(ctx: OpContext, value: Value, limit: float) -> Value:
    if limit <= 0:
        return value
    return ctx.emit("Clip", [value, ctx.const("low", np.float32(-limit)), ctx.const("high", np.float32(limit))])


@converts("UNIDIRECTIONAL_SEQUENCE_LSTM", optional=LSTM_OPTIONAL)
def unidirectional_sequence_lstm(ctx: OpContext) -> None:
    """TFLite's float LSTM unrolled over its (static) time steps into elementwise nodes, as
    LiteRT computes it: gates i, f, g, o from x W^T + h R^T + b (+ peepholes c * p for i, f
    from the previous and o from the new cell state), i = 1 - f with CIFG (no input gate),
    c = f * c + i * act(g) clipped to cell_clip, h = o * act(c) (then projected and clipped
    to proj_clip). ONNX LSTM is not used: its `clip` bounds the gates' inputs, not the cell
    state. Each run starts from the state tensors' contents (zeros for variable ones); LiteRT
    carries the state over to the next invocation, edgerun's graph does not. Layer
    normalization and diagonal recurrent weights are refused."""
    ctx.need_inputs(20, 24)
    if any(ctx.has_input(i) for i in (20, 21, 22, 23)):
        raise ctx.fail("layer normalization is not supported")
    if ctx.options["diagonal_recurrent_tensors"]:
        raise ctx.fail("diagonal recurrent weights are not supported")
    shape = ctx.tensor(0).signature
    time_axis = 0 if ctx.options["time_major"] else 1
    if len(shape) != 3 or shape[time_axis] < 1:
        raise ctx.fail(f"the input must be 3-D with a static number of time steps, got shape {list(shape)}")
    gates = [g for g in range(4) if g or ctx.has_input(1)]  # input, forget, cell, output; CIFG: no input
    for g in gates:
        filter_tensor(ctx, 1 + g, 2, "[cells, inputs]")
        if not (ctx.has_input(5 + g) and ctx.has_input(12 + g)):
            raise ctx.fail(f"gate {g} has input weights but lacks its recurrent weights or bias")
    n_cell = ctx.tensor(2).shape[0]
    w_x = ctx.emit("Concat", [ctx.input(1 + g) for g in gates], axis=0)
    w_h = ctx.emit("Transpose", [ctx.emit("Concat", [ctx.input(5 + g) for g in gates], axis=0)], perm=[1, 0])
    bias = ctx.emit("Concat", [ctx.input(12 + g) for g in gates], axis=0)
    xw = ctx.emit("Add", [ctx.emit("MatMul", [ctx.input(0), ctx.emit("Transpose", [w_x], perm=[1, 0])]), bias])
    split = ctx.const("split", np.full(len(gates), n_cell, np.int64))
    h, c = lstm_state(ctx, 18), lstm_state(ctx, 19)
    projection = ctx.emit("Transpose", [ctx.input(16)], perm=[1, 0]) if ctx.has_input(16) else None
    outputs = []
    for t in range(shape[time_axis]):
        z = ctx.emit("Gather", [xw, ctx.const("t", np.int64(t))], axis=time_axis)
        if h is not None:
            z = ctx.emit("Add", [z, ctx.emit("MatMul", [h, w_h])])
        pre = dict(zip(gates, ctx.emit("Split", [z, split], axis=1, num_outputs=len(gates)), strict=True))
        h, c = lstm_step(ctx, pre, c, projection)
        outputs.append(ctx.emit("Unsqueeze", [h, ctx.const("axis", np.array([time_axis], np.int64))]))
    ctx.bind(0, outputs[0] if len(outputs) == 1 else ctx.emit("Concat", outputs, axis=time_axis))


def lstm_step(ctx: OpContext, pre: dict[int, Value], c: Value | None,
              projection: Value | None) -> tuple[Value, Value]:
    """One time step from the gates' pre-activations and the previous cell state (None:
    zeros): the new (h, c). `projection`: the transposed projection weights."""

    def peephole(gate: int, state: Value | None) -> Value:
        if state is None or not ctx.has_input(9 + min(gate, 2)):
            return pre[gate]
        return ctx.emit("Add", [pre[gate], ctx.emit("Mul", [state, ctx.input(9 + min(gate, 2))])])

    forget = ctx.emit("Sigmoid", [peephole(1, c)])
    if 0 in pre:
        gate_in = ctx.emit("Sigmoid", [peephole(0, c)])
    else:
        gate_in = ctx.emit("Sub", [ctx.const("one", np.float32(1.0)), forget])
    new_c = ctx.emit("Mul", [gate_in, lstm_activation(ctx, pre[2])])
    if c is not None:
        new_c = ctx.emit("Add", [ctx.emit("Mul", [forget, c]), new_c])
    new_c = clipped(ctx, new_c, float(ctx.options["cell_clip"]))
    h = ctx.emit("Mul", [ctx.emit("Sigmoid", [peephole(3, new_c)]), lstm_activation(ctx, new_c)])
    if projection is not None:
        h = ctx.emit("MatMul", [h, projection])
        if ctx.has_input(17):
            h = ctx.emit("Add", [h, ctx.input(17)])
        h = clipped(ctx, h, float(ctx.options["proj_clip"]))
    return h, new_c
