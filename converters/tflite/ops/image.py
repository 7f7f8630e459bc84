"""Resizing and moving data between space, depth and batch: RESIZE_BILINEAR,
RESIZE_NEAREST_NEIGHBOR, DEPTH_TO_SPACE, SPACE_TO_DEPTH, SPACE_TO_BATCH_ND and
BATCH_TO_SPACE_ND (NHWC; those that only move values serve any element type).
"""

from __future__ import annotations

import numpy as np

from edgerun.converters.tflite.context import OpContext
from edgerun.converters.tflite.ops.nhwc import nhwc_input
from edgerun.converters.tflite.registry import converts
from edgerun.runtime.graph import Value

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
