"""Gathering and scattering: GATHER, GATHER_ND, SCATTER_ND and ONE_HOT (any element type).
Where TFLite differs from the ONNX op of the same name:

* GATHER batch_dims becomes GatherND between Transposes; indices must be in range in
  TFLite (LiteRT fails), ONNX Gather counts negative ones from the back;
* ONE_HOT: a negative index is all `off` (ONNX would count it from the back);
* SCATTER_ND adds duplicate indices (ScatterND reduction="add" into zeros).
"""

from __future__ import annotations

import numpy as np

from edgerun.converters.tflite.context import OpContext
from edgerun.converters.tflite.ops.indices import ONNX_INTS, IndexMath, checked_axis, int64_indices, rank_of
from edgerun.converters.tflite.registry import converts


@converts("GATHER", any_dtype=True)
def gather(ctx: OpContext) -> None:
    """params (input 0) indexed along `axis` by the int indices (input 1), with `batch_dims`
    leading dimensions shared by both (negative axis and batch_dims count from the back)."""
    ctx.need_inputs(2)
    rank, index_rank = rank_of(ctx, 0), rank_of(ctx, 1)
    axis = checked_axis(ctx, int(ctx.options.get("axis", 0)), rank)
    batch = int(ctx.options.get("batch_dims", 0))
    batch = batch + index_rank if batch < 0 else batch
    if not 0 <= batch <= min(axis, index_rank):
        raise ctx.fail(f"batch_dims {ctx.options.get('batch_dims')} must lie in [0, {min(axis, index_rank)}] "
                       f"(axis {axis}, indices of rank {index_rank})")
    if ctx.tensor(1).type not in ("INT16", "INT32", "INT64"):
        raise ctx.fail(f"the indices must be int16, int32 or int64, got {ctx.tensor(1).type}")
    indices = ctx.input(1)
    if ctx.tensor(1).type == "INT16":
        indices = ctx.emit("Cast", [indices], to=ONNX_INTS["INT64"])
    if batch == 0:
        ctx.bind(0, ctx.emit("Gather", [ctx.input(0), indices], axis=axis))
        return
    # params with `axis` moved to `batch`, then GatherND along it, then the index dimensions
    # moved behind params' dimensions between batch and axis.
    perm = [*range(batch), axis, *range(batch, axis), *range(axis + 1, rank)]
    params = ctx.input(0) if perm == sorted(perm) else ctx.emit("Transpose", [ctx.input(0)], perm=perm)
    if ctx.tensor(1).type != "INT64":
        indices = ctx.emit("Cast", [indices], to=ONNX_INTS["INT64"])
    indices = ctx.emit("Unsqueeze", [indices, ctx.const("last", np.asarray([-1], np.int64))])
    y = ctx.emit("GatherND", [params, indices], batch_dims=batch)
    taken, between = index_rank - batch, axis - batch
    out = [*range(batch), *range(batch + taken, batch + taken + between), *range(batch, batch + taken),
           *range(batch + taken + between, rank - 1 + taken)]
    ctx.bind(0, y if out == sorted(out) else ctx.emit("Transpose", [y], perm=out))


@converts("GATHER_ND", any_dtype=True)
def gather_nd(ctx: OpContext) -> None:
    """params (input 0) at the index tuples of the last dimension of indices (input 1)."""
    ctx.need_inputs(2)
    ctx.bind(0, ctx.emit("GatherND", [ctx.input(0), int64_indices(ctx, 1)]))


@converts("SCATTER_ND", any_dtype=True)
def scatter_nd(ctx: OpContext) -> None:
    """A tensor of the shape input (2) holding zeros, plus updates (1) at the index tuples of
    indices (0); updates at the same index add up."""
    ctx.need_inputs(3)
    dtype = ctx.tensor(1).dtype
    if dtype is None or dtype.kind not in "fiub":
        raise ctx.fail(f"updates of type {ctx.tensor(1).type} are not supported")
    ints = IndexMath(ctx)
    shape = ints.input(2, "the shape")
    if isinstance(shape, np.ndarray) and (shape < 0).any():
        raise ctx.fail(f"shape {shape.tolist()} has a negative dimension")
    zeros = ctx.emit("Expand", [ctx.const("zero", np.zeros((), dtype)), ints.value(shape)])
    ctx.bind(0, ctx.emit("ScatterND", [zeros, int64_indices(ctx, 0), ctx.input(1)], reduction="add"))


@converts("ONE_HOT", any_dtype=True)
def one_hot(ctx: OpContext) -> None:
    """on_value (input 2) where an index (input 0) names the position along the new
    dimension `axis` of size depth (input 1), off_value (3) elsewhere; an index outside
    [0, depth) is all off_value."""
    ctx.need_inputs(4)
    rank = rank_of(ctx)
    axis = int(ctx.options.get("axis", -1))
    if not -1 <= axis <= rank:
        raise ctx.fail(f"axis {axis} is out of range for indices of rank {rank}")
    ints = IndexMath(ctx)
    indices = ints.input(0, "the indices")
    depth = ints.reshape(ints.input(1, "depth", ("INT32",)), [])
    indices = ints.where(ints.less(indices, np.asarray(0, np.int64)), depth, indices)
    if ctx.tensor(2).type != ctx.tensor(3).type:
        raise ctx.fail(f"on_value and off_value types differ: {ctx.tensor(2).type} and {ctx.tensor(3).type}")
    one = ctx.const("one", np.asarray([1], np.int64))
    values = ctx.emit("Concat", [ctx.emit("Reshape", [ctx.input(i), one]) for i in (3, 2)], axis=0)
    ctx.bind(0, ctx.emit("OneHot", [ints.value(indices), ints.value(depth), values], axis=axis))
