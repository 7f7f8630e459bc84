"""Joining, splitting and padding: CONCATENATION, PACK, UNPACK, SPLIT, SPLIT_V, PAD, PADV2 and
MIRROR_PAD.

PACK, UNPACK, SPLIT and SPLIT_V serve any element type (`any_dtype`); CONCATENATION, PAD, PADV2
and MIRROR_PAD are registered for un-quantized tensors only (quantized CONCATENATION
requantizes, quantized PAD pads with the zero point: ops.quantized). Sizes, axes and paddings
may be constants or computed at run time (ops.indices). MIRROR_PAD (REFLECT and SYMMETRIC)
gathers each padded axis with computed indices, as ONNX Pad has no SYMMETRIC mode.
"""

from __future__ import annotations

import numpy as np

from edgerun.converters.tflite.context import OpContext
from edgerun.converters.tflite.ops.indices import IndexMath, Ints, checked_axis, constant_int, rank_of, vector_length
from edgerun.converters.tflite.registry import converts
from edgerun.runtime.graph import Value

# --- joining and splitting -----------------------------------------------------------------


@converts("CONCATENATION")
def concatenation(ctx: OpContext) -> None:
    """Joins the inputs along `axis` (negative counts from the back), then applies the fused
    activation."""
    if ctx.num_inputs < 1:
        raise ctx.fail("needs at least one input")
    axis = checked_axis(ctx, int(ctx.options.get("axis", 0)), rank_of(ctx))
    y = ctx.emit("Concat", [ctx.input(i) for i in range(ctx.num_inputs)], axis=axis)
    ctx.bind(0, ctx.activation(y))


@converts("PACK", any_dtype=True)
def pack(ctx: OpContext) -> None:
    """Stacks values_count equally shaped inputs along a new dimension `axis`."""
    count = int(ctx.options.get("values_count", 0))
    if count != ctx.num_inputs or count < 1:
        raise ctx.fail(f"values_count {count} does not match its {ctx.num_inputs} inputs")
    axis = checked_axis(ctx, int(ctx.options.get("axis", 0)), rank_of(ctx) + 1)
    axes = ctx.const("axes", np.asarray([axis], np.int64))
    parts = [ctx.emit("Unsqueeze", [ctx.input(i), axes]) for i in range(count)]
    ctx.bind(0, parts[0] if count == 1 else ctx.emit("Concat", parts, axis=axis))


@converts("UNPACK", any_dtype=True)
def unpack(ctx: OpContext) -> None:
    """Cuts the input along `axis` into `num` tensors with that dimension removed."""
    ctx.need_inputs(1)
    rank = rank_of(ctx)
    axis = checked_axis(ctx, int(ctx.options.get("axis", 0)), rank)
    num = int(ctx.options.get("num", 0))
    size = ctx.tensor(0).signature[axis]
    if num != ctx.num_outputs or num < 1 or size not in (num, -1):
        raise ctx.fail(f"num {num} must equal the {ctx.num_outputs} outputs and dimension {axis} ({size})")
    axes = ctx.const("axes", np.asarray([axis], np.int64))
    if num == 1:
        ctx.bind(0, ctx.emit("Squeeze", [ctx.input(0), axes]))
        return
    parts = ctx.emit("Split", [ctx.input(0), ctx.const("split", np.ones(num, np.int64))], axis=axis,
                     num_outputs=num)
    for i, part in enumerate(parts):
        ctx.bind(i, ctx.emit("Squeeze", [part, axes]))


def _bind_split(ctx: OpContext, x: Value, sizes: Ints, axis: int, count: int) -> None:
    if count == 1:
        ctx.bind(0, ctx.emit("Identity", [x]))
        return
    parts = ctx.emit("Split", [x, IndexMath(ctx).value(sizes)], axis=axis, num_outputs=count)
    for i, part in enumerate(parts):
        ctx.bind(i, part)


@converts("SPLIT", any_dtype=True)
def split(ctx: OpContext) -> None:
    """Cuts input 1 into num_splits equal parts along the constant axis input 0."""
    ctx.need_inputs(2)
    count = int(ctx.options.get("num_splits", 0))
    if count != ctx.num_outputs or count < 1:
        raise ctx.fail(f"num_splits {count} does not match its {ctx.num_outputs} outputs")
    axis = checked_axis(ctx, constant_int(ctx, 0, "the axis"), rank_of(ctx, 1))
    size = ctx.tensor(1).signature[axis]
    if size >= 0:
        if size % count:
            raise ctx.fail(f"cannot split dimension {axis} of size {size} into {count} equal parts")
        sizes: Ints = np.full(count, size // count, np.int64)
    else:
        ints = IndexMath(ctx)
        piece = ctx.emit("Div", [ints.take(ints.dims(1), np.asarray([axis])), ints.value(np.asarray([count]))])
        sizes = ctx.emit("Expand", [piece, ints.value(np.asarray([count]))])
    _bind_split(ctx, ctx.input(1), sizes, axis, count)


@converts("SPLIT_V", any_dtype=True)
def split_v(ctx: OpContext) -> None:
    """Cuts input 0 along the constant axis input 2 into the sizes of input 1 (one of them
    may be -1: the rest of the dimension)."""
    ctx.need_inputs(3)
    count = int(ctx.options.get("num_splits", 0))
    if count != ctx.num_outputs or count != vector_length(ctx, 1, "size_splits"):
        raise ctx.fail(f"num_splits {count} must match the {ctx.num_outputs} outputs and the size_splits")
    axis = checked_axis(ctx, constant_int(ctx, 2, "the axis"), rank_of(ctx))
    ints = IndexMath(ctx)
    sizes = ints.input(1, "size_splits")
    if isinstance(sizes, np.ndarray):
        if (sizes < -1).any() or (sizes == -1).sum() > 1:
            raise ctx.fail(f"size_splits {sizes.tolist()} may hold one -1 and no other negative size")
        size = ctx.tensor(0).signature[axis]
        if size >= 0 and (sizes.sum() != size if -1 not in sizes else sizes.sum() + 1 > size):
            raise ctx.fail(f"size_splits {sizes.tolist()} do not fit dimension {axis} of size {size}")
    dim = ints.take(ints.dims(0), np.asarray(axis))
    rest = ints.sub(dim, ints.add(ints.total(sizes), np.asarray(1, np.int64)))
    sizes = ints.where(ints.equal(sizes, np.asarray(-1, np.int64)), rest, sizes)
    _bind_split(ctx, ctx.input(0), sizes, axis, count)


# --- padding -------------------------------------------------------------------------------


def _paddings(ctx: OpContext, ints: IndexMath) -> Ints:
    """The [rank, 2] paddings input (1) as int64, checked when constant."""
    rank = rank_of(ctx)
    signature = ctx.tensor(1).signature
    if list(signature) not in ([rank, 2], [-1, 2]):
        raise ctx.fail(f"paddings must have shape [{rank}, 2], got {list(signature)}")
    paddings = ints.input(1, "paddings")
    if isinstance(paddings, np.ndarray):
        if paddings.shape != (rank, 2) or (paddings < 0).any():
            raise ctx.fail(f"paddings {paddings.tolist()} must be {rank} pairs of counts >= 0")
    return paddings


@converts("PAD", "PADV2")
def pad(ctx: OpContext) -> None:
    """Pads with paddings[i] = (before, after) elements on axis i, of 0 (PAD) or of the
    one-element constant_values input (PADV2)."""
    ctx.need_inputs(2, 2 if ctx.op.opcode == "PAD" else 3)
    ints = IndexMath(ctx)
    paddings = _paddings(ctx, ints)
    pads = ints.reshape(ints.apply(np.transpose, "Transpose", paddings, perm=[1, 0]), [-1])
    inputs = [ctx.input(0), ints.value(pads)]
    if ctx.num_inputs == 3:
        if ctx.tensor(2).type != ctx.tensor(0).type:
            raise ctx.fail(f"constant_values has type {ctx.tensor(2).type}, the input {ctx.tensor(0).type}")
        inputs.append(ctx.emit("Reshape", [ctx.input(2), ctx.const("scalar", np.zeros(0, np.int64))]))
    ctx.bind(0, ctx.emit("Pad", inputs, mode="constant"))


@converts("MIRROR_PAD")
def mirror_pad(ctx: OpContext) -> None:
    """Pads each axis with its mirror image: REFLECT leaves the edge element out (at most
    dim - 1 before and after), SYMMETRIC repeats it (at most dim). ONNX Pad has no SYMMETRIC,
    so each padded axis is a Gather of computed source positions (REFLECT alike)."""
    ctx.need_inputs(2)
    mode = int(ctx.options.get("mode", 0))
    if mode not in (0, 1):
        raise ctx.fail(f"unknown mirror pad mode {mode} (0 REFLECT, 1 SYMMETRIC)")
    ints = IndexMath(ctx)
    paddings = _paddings(ctx, ints)
    dims = ints.dims(0)
    if isinstance(paddings, np.ndarray) and isinstance(dims, np.ndarray):
        limit = dims - 1 + mode
        if (paddings > limit[:, None]).any():
            raise ctx.fail(f"paddings {paddings.tolist()} exceed what {'SYMMETRIC' if mode else 'REFLECT'} mode "
                           f"allows for shape {dims.tolist()} (at most {limit.tolist()})")
    flat = ints.reshape(paddings, [-1])
    y = ctx.input(0)
    for axis in range(rank_of(ctx)):
        before, after = (ints.take(flat, np.asarray(2 * axis + side)) for side in (0, 1))
        if isinstance(before, np.ndarray) and isinstance(after, np.ndarray) and before == after == 0:
            continue
        y = ctx.emit("Gather", [y, ints.value(_mirror_index(ints, ints.take(dims, np.asarray(axis)),
                                                            before, after, mode))], axis=axis)
    ctx.bind(0, ctx.emit("Identity", [y]) if y is ctx.input(0) else y)


def _mirror_index(ints: IndexMath, n: Ints, before: Ints, after: Ints, symmetric: int) -> Ints:
    """For j in [-before, n + after): j inside [0, n), else its mirror: -j - symmetric before,
    2n - 2 + symmetric - j after. Computed at run time (Range and arithmetic nodes) when the
    padded dimension is big, so a declared (1, 2**29) input costs no index array here."""
    one = np.asarray(1, np.int64)
    j = ints.range(ints.sub(np.asarray(0, np.int64), before), ints.add(n, after), one)
    left = ints.sub(np.asarray(-symmetric, np.int64), j)
    right = ints.sub(ints.add(ints.add(n, n), np.asarray(symmetric - 2, np.int64)), j)
    return ints.where(ints.less(j, np.asarray(0, np.int64)), left,
                      ints.where(ints.less(j, n), j, right))
