"""Tiling and broadcasting: TILE, BROADCAST_TO and BROADCAST_ARGS; multiples and shapes may be
constants or computed at run time (ops.indices).
"""

from __future__ import annotations

import numpy as np

from edgerun.converters.tflite.context import OpContext
from edgerun.converters.tflite.ops.indices import IndexMath, cast_int, rank_length, rank_of, vector_length
from edgerun.converters.tflite.registry import converts


@converts("TILE", any_dtype=True)
def tile(ctx: OpContext) -> None:
    """Repeats the input `multiples` (input 1, constant or computed) times along each axis."""
    ctx.need_inputs(2)
    if vector_length(ctx, 1, "multiples") != rank_of(ctx):
        raise ctx.fail(f"multiples must hold {rank_of(ctx)} entries, one per dimension")
    ints = IndexMath(ctx)
    multiples = ints.input(1, "multiples")
    if isinstance(multiples, np.ndarray) and (multiples < 0).any():
        raise ctx.fail(f"multiples {multiples.tolist()} hold a negative count")
    ctx.bind(0, ctx.emit("Tile", [ctx.input(0), ints.value(multiples)]))


@converts("BROADCAST_TO", any_dtype=True)
def broadcast_to(ctx: OpContext) -> None:
    """The input broadcast (numpy rules) to the shape input (constant or computed)."""
    ctx.need_inputs(2)
    ints = IndexMath(ctx)
    ctx.bind(0, ctx.emit("Expand", [ctx.input(0), ints.value(ints.input(1, "the shape"))]))


@converts("BROADCAST_ARGS")
def broadcast_args(ctx: OpContext) -> None:
    """The shape two shapes (1-D int inputs of static length, at most MAX_RANK entries)
    broadcast to."""
    ctx.need_inputs(2)
    lengths = [rank_length(ctx, i, f"shape {i}") for i in (0, 1)]
    if ctx.tensor(0).type != ctx.tensor(1).type:
        raise ctx.fail(f"the shapes' types differ: {ctx.tensor(0).type} and {ctx.tensor(1).type}")
    ints = IndexMath(ctx)
    a, b = (ints.input(i, f"shape {i}") for i in (0, 1))
    size = max(lengths)
    a, b = (ints.apply(lambda pad, v: np.concatenate([pad, v]), "Concat", np.ones(size - n, np.int64), v, axis=0)
            if n < size else v for v, n in ((a, lengths[0]), (b, lengths[1])))
    one = np.asarray(1, np.int64)
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and ((a != b) & (a != 1) & (b != 1)).any():
        raise ctx.fail(f"shapes {a.tolist()} and {b.tolist()} do not broadcast")
    y = ints.where(ints.equal(a, one), b, a)
    if isinstance(y, np.ndarray):   # (both shapes constant)
        ctx.bind(0, ctx.emit("Identity", [ctx.const("shape", y.astype(ctx.tensor(0).dtype))]))
        return
    ctx.bind(0, cast_int(ctx, y, ctx.tensor(0).type))
