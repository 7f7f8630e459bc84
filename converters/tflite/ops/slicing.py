"""Slicing and reversing: SLICE, STRIDED_SLICE, REVERSE_V2 and REVERSE_SEQUENCE (any element
type). Begins, ends, sizes and axes may be constants or computed at run time (ops.indices).

STRIDED_SLICE: TFLite's begin/end clamping (StridedSliceStartForAxis / EndForAxis), ellipsis,
new-axis and shrink masks and `offset` are worked out into one ONNX Slice (plus Unsqueeze /
Squeeze); a shrunk axis takes one element whatever the stride.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgerun.converters.tflite.context import OpContext
from edgerun.converters.tflite.ops.indices import (
    INT64_MAX,
    INT64_MIN,
    IndexMath,
    Ints,
    checked_axis,
    int64_indices,
    rank_length,
    rank_of,
    vector_length,
)
from edgerun.converters.tflite.registry import converts


@converts("SLICE", any_dtype=True)
def slice_(ctx: OpContext) -> None:
    """input[begin : begin + size] on every axis; a size of -1 takes the rest."""
    ctx.need_inputs(3)
    rank = rank_of(ctx)
    if vector_length(ctx, 1, "begin") != rank or vector_length(ctx, 2, "size") != rank:
        raise ctx.fail(f"begin and size must hold {rank} entries, one per dimension")
    ints = IndexMath(ctx)
    begin, size = ints.input(1, "begin"), ints.input(2, "size")
    if isinstance(begin, np.ndarray) and isinstance(size, np.ndarray):
        signature = np.asarray(ctx.tensor(0).signature)
        end = np.where(size == -1, signature, begin + size)
        if (begin < 0).any() or (size < -1).any() or ((signature >= 0) & (end > signature)).any():
            raise ctx.fail(f"begin {begin.tolist()} and size {size.tolist()} do not fit the input shape "
                           f"{signature.tolist()}")
    end = ints.where(ints.less(size, np.asarray(0, np.int64)), np.asarray(INT64_MAX), ints.add(begin, size))
    axes = np.arange(rank, dtype=np.int64)
    ctx.bind(0, ctx.emit("Slice", [ctx.input(0), ints.value(begin), ints.value(end), ints.value(axes)]))


@dataclass
class _SliceAxes:
    """STRIDED_SLICE's masks worked out per dimension of the input with its new axes added
    (TFLite's BuildStridedSliceParams): `source` is the begin/end/strides entry each
    dimension takes (-1: none, the whole dimension or a new axis)."""

    source: np.ndarray
    new_axes: list[int]
    begin_mask: np.ndarray
    end_mask: np.ndarray
    shrink: np.ndarray


def _slice_axes(ctx: OpContext, rank: int, count: int) -> _SliceAxes:
    """Where each of the `count` begin/end/strides entries lands on an input of `rank`
    dimensions: an ellipsis covers the dimensions the other entries leave (at least one),
    a new-axis entry adds a dimension, dimensions past the entries are taken whole."""
    opts = ctx.options
    ellipsis, new_axis = int(opts.get("ellipsis_mask", 0)), int(opts.get("new_axis_mask", 0))
    if ellipsis >> count or new_axis >> count or bin(ellipsis).count("1") > 1:
        raise ctx.fail(f"ellipsis_mask {ellipsis} and new_axis_mask {new_axis} must name at most one ellipsis "
                       f"among the {count} begin entries")
    added = sum(1 for i in range(count) if not ellipsis >> i & 1 and new_axis >> i & 1)
    dims = rank + added
    ellipsis_axes: set[int] = set()
    new_axes: list[int] = []
    start, expanded, i = dims, 0, 0
    while i < dims:
        if ellipsis >> i & 1:
            start, stop = i, max(i + 1, min(i + 1 + added + rank - count, dims))
            expanded = stop - start - 1
            ellipsis_axes.update(range(start, stop))
            i = stop
            continue
        if new_axis >> (i - expanded) & 1:
            new_axes.append(i)
        i += 1
    source, begin_mask, end_mask, shrink = (np.full(dims, -1), np.ones(dims, bool), np.ones(dims, bool),
                                            np.zeros(dims, bool))
    shift = 0
    for i in range(dims):
        if i in ellipsis_axes:
            shift = max(0, i - start)
        elif i in new_axes:
            begin_mask[i] = end_mask[i] = False   # new axes slice [0, 1)
        elif i < count + expanded:
            k = i - shift
            source[i] = k
            begin_mask[i], end_mask[i] = (bool(int(opts.get(m, 0)) >> k & 1) for m in ("begin_mask", "end_mask"))
            shrink[i] = bool(int(opts.get("shrink_axis_mask", 0)) >> k & 1)
    return _SliceAxes(source, new_axes, begin_mask, end_mask, shrink)


@converts("STRIDED_SLICE", any_dtype=True)
def strided_slice(ctx: OpContext) -> None:
    """input[begin:end:strides] with TFLite's masks: begin_mask / end_mask take the whole
    range, ellipsis_mask the dimensions the entries leave out, new_axis_mask inserts a
    dimension of 1, shrink_axis_mask takes one element and drops the dimension (with step 1
    whatever the stride), `offset` makes end a size added to begin (it must fit: LiteRT's
    kernels disagree outside). Entries past the input's dimensions are ignored, as LiteRT
    does. begin, end and strides may be computed at run time; they may hold at most MAX_RANK
    (16) entries."""
    ctx.need_inputs(4)
    count = rank_length(ctx, 1, "begin")
    if vector_length(ctx, 2, "end") != count or vector_length(ctx, 3, "strides") != count:
        raise ctx.fail("begin, end and strides must have the same length")
    rank = rank_of(ctx)
    plan = _slice_axes(ctx, rank, count)
    ints = IndexMath(ctx)
    x = ctx.input(0)
    if plan.new_axes:
        x = ctx.emit("Unsqueeze", [x, ctx.const("new_axes", np.asarray(plan.new_axes, np.int64))])
    dims = ints.dims(0, x if plan.new_axes and -1 in ctx.tensor(0).signature else None)
    if isinstance(dims, np.ndarray):
        dims = np.insert(dims, [a - k for k, a in enumerate(plan.new_axes)], 1) if plan.new_axes else dims
    spec = plan.source >= 0

    def entries(i: int, what: str, fill: np.ndarray) -> Ints:
        values = ints.take(ints.input(i, what), np.maximum(plan.source, 0))
        return ints.where(spec, values, fill)

    zeros = np.zeros(len(spec), np.int64)
    new = np.isin(np.arange(len(spec)), plan.new_axes)
    stride = ints.where(plan.shrink, np.ones_like(zeros), entries(3, "strides", np.ones_like(zeros)))
    if isinstance(stride, np.ndarray) and (stride == 0).any():
        raise ctx.fail(f"strides {ctx.constant(3).tolist()} hold a 0")
    start, stop = _slice_bounds(ints, plan, dims, stride, entries(1, "begin", zeros),
                                entries(2, "end", new.astype(np.int64)), bool(ctx.options.get("offset")))
    if isinstance(start, np.ndarray) and isinstance(dims, np.ndarray):
        if (plan.shrink & (start >= dims)).any():
            raise ctx.fail(f"a shrunk axis' begin is out of range for shape {dims.tolist()}")
    axes = np.arange(len(spec), dtype=np.int64)
    if all(isinstance(v, np.ndarray) for v in (start, stop, stride, dims)):
        keep = ~((start == 0) & (stop >= dims) & (stride == 1))   # leave out the whole-range axes
        start, stop, stride, axes = start[keep], stop[keep], stride[keep], axes[keep]
    y = x
    if axes.size:
        y = ctx.emit("Slice", [x, *(ints.value(v) for v in (start, stop, axes, stride))])
    if plan.shrink.any():
        y = ctx.emit("Squeeze", [y, ctx.const("shrink", np.flatnonzero(plan.shrink).astype(np.int64))])
    ctx.bind(0, ctx.emit("Identity", [y]) if y is ctx.input(0) else y)


def _slice_bounds(ints: IndexMath, plan: _SliceAxes, dims: Ints, stride: Ints, begin: Ints, end: Ints,
                  offset: bool) -> tuple[Ints, Ints]:
    """ONNX Slice starts and ends giving what TFLite's loop visits: TFLite clamps begin to
    [0, dim] (stride > 0) or [-1, dim - 1] (stride < 0), end likewise; ONNX would clamp a
    backward start to [0, dim - 1] and read an end of -1 as the last element."""
    zero, one = np.asarray(0, np.int64), np.asarray(1, np.int64)
    forward = ints.less(zero, stride)
    last = ints.sub(dims, one)

    def clamp(v: Ints) -> Ints:
        v = ints.where(ints.less(v, zero), ints.add(v, dims), v)
        return ints.where(forward, ints.clip(v, zero, dims), ints.clip(v, -one, last))

    start = ints.where(plan.begin_mask, ints.where(forward, zero, last), clamp(begin))
    if offset:
        end = ints.add(end, start)
    stop = ints.where(plan.end_mask, ints.where(forward, dims, -one), clamp(end))
    stop = ints.where(plan.shrink, ints.add(start, one), stop)
    # To ONNX: an empty backward range starting at -1 becomes [0, 0); a backward end of -1, INT64_MIN.
    below = ints.where(ints.less(start, zero), zero, np.asarray(INT64_MIN))
    return ints.where(ints.less(start, zero), zero, start), ints.where(ints.less(stop, zero), below, stop)


@converts("REVERSE_V2", any_dtype=True)
def reverse_v2(ctx: OpContext) -> None:
    """Reverses the dimensions the axis input names (constant or computed; negative count
    from the back): a Slice with step -1 on each. It may name at most as many axes as the
    input has dimensions."""
    ctx.need_inputs(2)
    count = rank_length(ctx, 1, "the axis", rank_of(ctx))
    ints = IndexMath(ctx)
    axes = ints.input(1, "the axis")
    if isinstance(axes, np.ndarray):
        axes = np.asarray([checked_axis(ctx, int(a), rank_of(ctx)) for a in axes], np.int64)
    if count == 0:
        ctx.bind(0, ctx.emit("Identity", [ctx.input(0)]))
        return
    starts, ends, steps = (np.full(count, v, np.int64) for v in (-1, INT64_MIN, -1))
    ctx.bind(0, ctx.emit("Slice", [ctx.input(0), *(ints.value(v) for v in (starts, ends, axes, steps))]))


@converts("REVERSE_SEQUENCE", any_dtype=True)
def reverse_sequence(ctx: OpContext) -> None:
    """Reverses the first seq_lengths[b] (input 1) entries along seq_dim of each slice b
    along batch_dim; ONNX ReverseSequence takes axes 0 and 1 only, so others are
    transposed there and back."""
    ctx.need_inputs(2)
    rank = rank_of(ctx)
    seq = checked_axis(ctx, int(ctx.options.get("seq_dim", 0)), rank, "seq_dim")
    batch = checked_axis(ctx, int(ctx.options.get("batch_dim", 0)), rank, "batch_dim")
    if seq == batch:
        raise ctx.fail(f"seq_dim and batch_dim are both {seq}")
    lengths = int64_indices(ctx, 1, "seq_lengths")
    if {seq, batch} == {0, 1}:
        ctx.bind(0, ctx.emit("ReverseSequence", [ctx.input(0), lengths], time_axis=seq, batch_axis=batch))
        return
    perm = [batch, seq, *(a for a in range(rank) if a not in (batch, seq))]
    x = ctx.emit("Transpose", [ctx.input(0)], perm=perm)
    y = ctx.emit("ReverseSequence", [x, lengths], time_axis=1, batch_axis=0)
    ctx.bind(0, ctx.emit("Transpose", [y], perm=np.argsort(perm).tolist()))
