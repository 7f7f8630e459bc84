"""Reshaping builtins: RESHAPE, SQUEEZE, EXPAND_DIMS, SHAPE, RANK and TRANSPOSE. They move no
values, so they serve any element type (`any_dtype`: an int8 quantized tensor passes through
with its quantization parameters). Shapes and axes may be constants or computed at run time
(ops.indices). Where TFLite differs from ONNX: a 0 in RESHAPE's new shape is a dimension of 0
(ONNX Reshape with allowzero=1).
"""

from __future__ import annotations

import numpy as np

from edgerun.converters.tflite.context import OpContext
from edgerun.converters.tflite.ops.indices import (
    INDEX_TYPES,
    IndexMath,
    Ints,
    cast_int,
    checked_axis,
    constant_int,
    rank_of,
)
from edgerun.converters.tflite.registry import converts


@converts("RESHAPE", optional=(1,), any_dtype=True)
def reshape(ctx: OpContext) -> None:
    """The new shape comes from a 1-D int shape input (constant or computed), else from
    ReshapeOptions.new_shape (where [0] is the legacy spelling of a scalar); -1 is inferred,
    0 is a dimension of 0."""
    ctx.need_inputs(1, 2)
    ints = IndexMath(ctx)
    shape_tensor = ctx.tensor(1) if ctx.num_inputs > 1 else None
    if shape_tensor is not None and len(shape_tensor.shape) == 1 and shape_tensor.type in INDEX_TYPES:
        shape = ints.input(1, "the shape")
    elif ctx.options.get("new_shape") is not None:
        dims = [int(d) for d in ctx.options["new_shape"]]
        shape = np.asarray([] if dims == [0] else dims, np.int64)
    else:
        raise ctx.fail("has neither a 1-D int shape input nor ReshapeOptions.new_shape")
    if isinstance(shape, np.ndarray):
        dims = shape.tolist()
        if any(d < -1 for d in dims) or dims.count(-1) > 1 or (-1 in dims and 0 in dims):
            raise ctx.fail(f"new shape {dims} is invalid (one -1 at most, no -1 beside a 0)")
        signature = ctx.tensor(0).signature
        if -1 not in signature and -1 not in dims and int(np.prod(signature)) != int(np.prod(dims)):
            raise ctx.fail(f"cannot reshape {list(signature)} into {dims}")
    ctx.bind(0, ctx.emit("Reshape", [ctx.input(0), ints.value(shape)], allowzero=1))


@converts("SQUEEZE", any_dtype=True)
def squeeze(ctx: OpContext) -> None:
    """Removes the dimensions squeeze_dims names (negative count from the back; each must be
    1), or every dimension of 1 when it is empty."""
    ctx.need_inputs(1)
    rank = rank_of(ctx)
    listed = ctx.options.get("squeeze_dims")
    dims = [] if listed is None else [int(d) for d in listed]
    if not dims:
        ctx.bind(0, ctx.emit("Squeeze", [ctx.input(0)]))
        return
    axes = sorted({checked_axis(ctx, d, rank, "squeeze dimension") for d in dims})
    signature = ctx.tensor(0).signature
    for a in axes:
        if signature[a] not in (1, -1):
            raise ctx.fail(f"cannot squeeze dimension {a} of size {signature[a]} (shape {list(signature)})")
    ctx.bind(0, ctx.emit("Squeeze", [ctx.input(0), ctx.const("axes", np.asarray(axes, np.int64))]))


@converts("EXPAND_DIMS", any_dtype=True)
def expand_dims(ctx: OpContext) -> None:
    """Inserts a dimension of 1 at the axis input (constant or computed; negative counts
    from the back of the result)."""
    ctx.need_inputs(2)
    ints = IndexMath(ctx)
    if ctx.is_constant(1):
        axes: Ints = np.asarray([checked_axis(ctx, constant_int(ctx, 1, "the axis"), rank_of(ctx) + 1)], np.int64)
    else:
        axes = ints.reshape(ints.input(1, "the axis"), [1])
    ctx.bind(0, ctx.emit("Unsqueeze", [ctx.input(0), ints.value(axes)]))


@converts("SHAPE", any_dtype=True)
def shape(ctx: OpContext) -> None:
    """The input's shape as the output tensor's int type (int32 or int64; LiteRT too goes by
    the output's type, not ShapeOptions.out_type)."""
    ctx.need_inputs(1)
    ctx.bind(0, cast_int(ctx, ctx.emit("Shape", [ctx.input(0)]), ctx.output_tensor(0).type))


@converts("RANK", any_dtype=True)
def rank(ctx: OpContext) -> None:
    """The input's rank, an int32 scalar (ranks are static in TFLite)."""
    ctx.need_inputs(1)
    ctx.bind(0, ctx.emit("Identity", [ctx.const("rank", np.asarray(rank_of(ctx), np.int32))]))


@converts("TRANSPOSE", any_dtype=True)
def transpose(ctx: OpContext) -> None:
    """Transposes by the constant perm input (a permutation of 0..rank-1)."""
    ctx.need_inputs(2)
    perm = [int(p) for p in ctx.constant(1, "the permutation").reshape(-1)]
    if sorted(perm) != list(range(rank_of(ctx))):
        raise ctx.fail(f"perm {perm} is not a permutation of the {rank_of(ctx)} dimensions")
    ctx.bind(0, ctx.emit("Transpose", [ctx.input(0)], perm=perm))
