"""Sorting and searching: TOPK_V2, WHERE and UNIQUE (any element type); their int64 indices
become the output tensor's int type.
"""

from __future__ import annotations

import numpy as np

from edgerun.converters.tflite.context import OpContext
from edgerun.converters.tflite.ops.indices import IndexMath, cast_int, rank_of
from edgerun.converters.tflite.registry import converts


@converts("TOPK_V2", any_dtype=True)
def topk_v2(ctx: OpContext) -> None:
    """The k (input 1) largest entries along the last axis, descending (ties: the lower
    index first), and their indices as the second output's int type."""
    ctx.need_inputs(2)
    ints = IndexMath(ctx)
    k = ints.reshape(ints.input(1, "k", ("INT16", "INT32", "INT64")), [1])
    if isinstance(k, np.ndarray):
        size = ctx.tensor(0).signature[-1] if rank_of(ctx) else 0
        if k[0] < 0 or (size >= 0 and k[0] > size):
            raise ctx.fail(f"k {int(k[0])} must lie in [0, {size}], the size of the last dimension")
    values, indices = ctx.emit("TopK", [ctx.input(0), ints.value(k)], num_outputs=2, axis=-1, largest=1, sorted=1)
    ctx.bind(0, values)
    ctx.bind(1, cast_int(ctx, indices, ctx.output_tensor(1).type))


@converts("WHERE", any_dtype=True)
def where(ctx: OpContext) -> None:
    """The coordinates of the input's true (non-zero) entries, [count, rank], row-major."""
    ctx.need_inputs(1)
    coords = ctx.emit("Transpose", [ctx.emit("NonZero", [ctx.input(0)])], perm=[1, 0])
    ctx.bind(0, cast_int(ctx, coords, ctx.output_tensor(0).type))


@converts("UNIQUE", any_dtype=True)
def unique(ctx: OpContext) -> None:
    """The distinct entries of a 1-D input in order of first appearance, and for each input
    entry the position of its value among them (as the second output's int type)."""
    ctx.need_inputs(1)
    if rank_of(ctx) != 1:
        raise ctx.fail(f"the input must be 1-D, got shape {list(ctx.tensor(0).signature)}")
    y, _, inverse, _ = ctx.emit("Unique", [ctx.input(0)], num_outputs=4, sorted=0)
    ctx.bind(0, y)
    ctx.bind(1, cast_int(ctx, inverse, ctx.output_tensor(1).type))
