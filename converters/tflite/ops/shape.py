"""Shape and data-movement builtins: reshaping, slicing, gathering, scattering, padding,
concatenating, splitting, tiling, reversing, sorting (TOPK_V2), UNIQUE and WHERE.

These move elements without arithmetic, so most serve any element type (`any_dtype`):
an int8 quantized tensor passes through with its quantization parameters. CONCATENATION,
PAD, PADV2 and MIRROR_PAD are registered for un-quantized tensors only (quantized
CONCATENATION requantizes, quantized PAD pads with the zero point: ops.quantized).

Index inputs (shapes, begins, axes, paddings, ...) may be constants or computed at run
time; the index arithmetic (`_Ints`) runs in numpy when every operand is known at
conversion time, so a static model gets plain constants, and becomes int64 ONNX nodes
otherwise. Where TFLite differs from the ONNX op of the same name:

* RESHAPE: a 0 in the new shape is a dimension of 0 (ONNX Reshape with allowzero=1);
* STRIDED_SLICE: TFLite's begin/end clamping (StridedSliceStartForAxis / EndForAxis),
  ellipsis, new-axis and shrink masks and `offset` are worked out into one ONNX Slice
  (plus Unsqueeze / Squeeze); a shrunk axis takes one element whatever the stride;
* GATHER batch_dims becomes GatherND between Transposes; indices must be in range in
  TFLite (LiteRT fails), ONNX Gather counts negative ones from the back;
* ONE_HOT: a negative index is all `off` (ONNX would count it from the back);
* SCATTER_ND adds duplicate indices (ScatterND reduction="add" into zeros);
* MIRROR_PAD (REFLECT and SYMMETRIC) gathers each padded axis with computed indices.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edgerun.converters.tflite.context import OpContext
from edgerun.converters.tflite.registry import converts
from edgerun.runtime.graph import Value

INT64_MIN = np.iinfo(np.int64).min
INT64_MAX = np.iinfo(np.int64).max
# TFLite tensor type -> ONNX element type code (Cast's `to`) for the index types.
_ONNX_INTS = {"INT16": 5, "INT32": 6, "INT64": 7}
_INDEX_TYPES = ("INT32", "INT64")

Ints = np.ndarray | Value   # int64 indices known at conversion time, or computed at run time


class _Ints:
    """int64 index arithmetic: numpy when every operand is known at conversion time, ONNX
    nodes when one is computed at run time."""

    def __init__(self, ctx: OpContext) -> None:
        self.ctx = ctx

    def input(self, i: int, what: str, types: tuple[str, ...] = _INDEX_TYPES) -> Ints:
        """Input `i` (an int tensor) as int64; ConversionError for another type."""
        tensor = self.ctx.tensor(i)
        if tensor is None or tensor.type not in types:
            got = "nothing" if tensor is None else tensor.type
            raise self.ctx.fail(f"{what} must be an {' or '.join(t.lower() for t in types)} tensor, got {got}")
        if tensor.data is not None:
            return np.asarray(tensor.data, np.int64)
        value = self.ctx.input(i)
        return value if tensor.type == "INT64" else self.ctx.emit("Cast", [value], to=_ONNX_INTS["INT64"])

    def dims(self, i: int, value: Value | None = None) -> Ints:
        """Input `i`'s shape (or `value`'s, of the same rank with dimensions of 1 added)."""
        signature = self.ctx.tensor(i).signature
        if -1 not in signature and value is None:
            return np.asarray(signature, np.int64)
        return self.ctx.emit("Shape", [self.ctx.input(i) if value is None else value])

    def value(self, a: Ints) -> Value:
        return a if isinstance(a, Value) else self.ctx.const("index", np.asarray(a))

    def apply(self, fn: Callable, op: str, *args: Ints, **attrs: object) -> Ints:
        if not any(isinstance(a, Value) for a in args):
            return np.asarray(fn(*args))
        return self.ctx.emit(op, [self.value(a) for a in args], **attrs)

    def add(self, a: Ints, b: Ints) -> Ints:
        return self.apply(np.add, "Add", a, b)

    def sub(self, a: Ints, b: Ints) -> Ints:
        return self.apply(np.subtract, "Sub", a, b)

    def less(self, a: Ints, b: Ints) -> Ints:
        return self.apply(np.less, "Less", a, b)

    def equal(self, a: Ints, b: Ints) -> Ints:
        return self.apply(np.equal, "Equal", a, b)

    def where(self, cond: Ints, a: Ints, b: Ints) -> Ints:
        return self.apply(np.where, "Where", cond, a, b)

    def clip(self, a: Ints, low: Ints, high: Ints) -> Ints:
        return self.apply(np.maximum, "Max", self.apply(np.minimum, "Min", a, high), low)

    def total(self, a: Ints) -> Ints:
        return self.apply(np.sum, "ReduceSum", a, keepdims=0)

    def take(self, a: Ints, index: np.ndarray) -> Ints:
        """a[index] for a constant index array (a 0-d index gives a 0-d result)."""
        return self.apply(lambda v, i: v[i], "Gather", a, np.asarray(index, np.int64))

    def reshape(self, a: Ints, shape: list[int]) -> Ints:
        return self.apply(lambda v, s: v.reshape(s), "Reshape", a, np.asarray(shape, np.int64))


def _rank(ctx: OpContext, i: int = 0) -> int:
    return len(ctx.tensor(i).signature)


def _axis(ctx: OpContext, axis: int, rank: int, what: str = "axis") -> int:
    """`axis` in [-rank, rank) as a non-negative axis; ConversionError otherwise."""
    if not -rank <= axis < rank:
        raise ctx.fail(f"{what} {axis} is out of range for rank {rank}")
    return axis + rank if axis < 0 else axis


def _scalar(ctx: OpContext, i: int, what: str) -> int:
    """A constant one-element int input as a Python int."""
    data = ctx.constant(i, what)
    if data.size != 1 or data.dtype.kind not in "iu":
        raise ctx.fail(f"{what} must hold one integer, got {data.dtype} of shape {list(data.shape)}")
    return int(data.reshape(-1)[0])


def _vector_length(ctx: OpContext, i: int, what: str) -> int:
    """The static length of 1-D input `i`."""
    signature = ctx.tensor(i).signature
    if len(signature) != 1 or signature[0] < 0:
        raise ctx.fail(f"{what} must be a 1-D tensor of static length, got shape {list(signature)}")
    return signature[0]


def _cast_to(ctx: OpContext, value: Value, tflite_type: str) -> Value:
    """An int64 result (Shape, TopK, NonZero...) as the output's int type."""
    if tflite_type == "INT64":
        return value
    if tflite_type not in _ONNX_INTS:
        raise ctx.fail(f"the output must be int32 or int64, got {tflite_type}")
    return ctx.emit("Cast", [value], to=_ONNX_INTS[tflite_type])


# --- reshaping -----------------------------------------------------------------------------


@converts("RESHAPE", optional=(1,), any_dtype=True)
def reshape(ctx: OpContext) -> None:
    """The new shape comes from a 1-D int shape input (constant or computed), else from
    ReshapeOptions.new_shape (where [0] is the legacy spelling of a scalar); -1 is inferred,
    0 is a dimension of 0."""
    ctx.need_inputs(1, 2)
    ints = _Ints(ctx)
    shape_tensor = ctx.tensor(1) if ctx.num_inputs > 1 else None
    if shape_tensor is not None and len(shape_tensor.shape) == 1 and shape_tensor.type in _INDEX_TYPES:
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
    rank = _rank(ctx)
    listed = ctx.options.get("squeeze_dims")
    dims = [] if listed is None else [int(d) for d in listed]
    if not dims:
        ctx.bind(0, ctx.emit("Squeeze", [ctx.input(0)]))
        return
    axes = sorted({_axis(ctx, d, rank, "squeeze dimension") for d in dims})
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
    ints = _Ints(ctx)
    if ctx.is_constant(1):
        axes: Ints = np.asarray([_axis(ctx, _scalar(ctx, 1, "the axis"), _rank(ctx) + 1)], np.int64)
    else:
        axes = ints.reshape(ints.input(1, "the axis"), [1])
    ctx.bind(0, ctx.emit("Unsqueeze", [ctx.input(0), ints.value(axes)]))


@converts("SHAPE", any_dtype=True)
def shape(ctx: OpContext) -> None:
    """The input's shape as the output tensor's int type (int32 or int64; LiteRT too goes by
    the output's type, not ShapeOptions.out_type)."""
    ctx.need_inputs(1)
    ctx.bind(0, _cast_to(ctx, ctx.emit("Shape", [ctx.input(0)]), ctx.output_tensor(0).type))


@converts("RANK", any_dtype=True)
def rank(ctx: OpContext) -> None:
    """The input's rank, an int32 scalar (ranks are static in TFLite)."""
    ctx.need_inputs(1)
    ctx.bind(0, ctx.emit("Identity", [ctx.const("rank", np.asarray(_rank(ctx), np.int32))]))


@converts("TRANSPOSE", any_dtype=True)
def transpose(ctx: OpContext) -> None:
    """Transposes by the constant perm input (a permutation of 0..rank-1)."""
    ctx.need_inputs(2)
    perm = [int(p) for p in ctx.constant(1, "the permutation").reshape(-1)]
    if sorted(perm) != list(range(_rank(ctx))):
        raise ctx.fail(f"perm {perm} is not a permutation of the {_rank(ctx)} dimensions")
    ctx.bind(0, ctx.emit("Transpose", [ctx.input(0)], perm=perm))


# --- joining and splitting -----------------------------------------------------------------


@converts("CONCATENATION")
def concatenation(ctx: OpContext) -> None:
    """Joins the inputs along `axis` (negative counts from the back), then applies the fused
    activation."""
    if ctx.num_inputs < 1:
        raise ctx.fail("needs at least one input")
    axis = _axis(ctx, int(ctx.options.get("axis", 0)), _rank(ctx))
    y = ctx.emit("Concat", [ctx.input(i) for i in range(ctx.num_inputs)], axis=axis)
    ctx.bind(0, ctx.activation(y))


@converts("PACK", any_dtype=True)
def pack(ctx: OpContext) -> None:
    """Stacks values_count equally shaped inputs along a new dimension `axis`."""
    count = int(ctx.options.get("values_count", 0))
    if count != ctx.num_inputs or count < 1:
        raise ctx.fail(f"values_count {count} does not match its {ctx.num_inputs} inputs")
    axis = _axis(ctx, int(ctx.options.get("axis", 0)), _rank(ctx) + 1)
    axes = ctx.const("axes", np.asarray([axis], np.int64))
    parts = [ctx.emit("Unsqueeze", [ctx.input(i), axes]) for i in range(count)]
    ctx.bind(0, parts[0] if count == 1 else ctx.emit("Concat", parts, axis=axis))


@converts("UNPACK", any_dtype=True)
def unpack(ctx: OpContext) -> None:
    """Cuts the input along `axis` into `num` tensors with that dimension removed."""
    ctx.need_inputs(1)
    rank = _rank(ctx)
    axis = _axis(ctx, int(ctx.options.get("axis", 0)), rank)
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
    parts = ctx.emit("Split", [x, _Ints(ctx).value(sizes)], axis=axis, num_outputs=count)
    for i, part in enumerate(parts):
        ctx.bind(i, part)


@converts("SPLIT", any_dtype=True)
def split(ctx: OpContext) -> None:
    """Cuts input 1 into num_splits equal parts along the constant axis input 0."""
    ctx.need_inputs(2)
    count = int(ctx.options.get("num_splits", 0))
    if count != ctx.num_outputs or count < 1:
        raise ctx.fail(f"num_splits {count} does not match its {ctx.num_outputs} outputs")
    axis = _axis(ctx, _scalar(ctx, 0, "the axis"), _rank(ctx, 1))
    size = ctx.tensor(1).signature[axis]
    if size >= 0:
        if size % count:
            raise ctx.fail(f"cannot split dimension {axis} of size {size} into {count} equal parts")
        sizes: Ints = np.full(count, size // count, np.int64)
    else:
        ints = _Ints(ctx)
        piece = ctx.emit("Div", [ints.take(ints.dims(1), np.asarray([axis])), ints.value(np.asarray([count]))])
        sizes = ctx.emit("Expand", [piece, ints.value(np.asarray([count]))])
    _bind_split(ctx, ctx.input(1), sizes, axis, count)


@converts("SPLIT_V", any_dtype=True)
def split_v(ctx: OpContext) -> None:
    """Cuts input 0 along the constant axis input 2 into the sizes of input 1 (one of them
    may be -1: the rest of the dimension)."""
    ctx.need_inputs(3)
    count = int(ctx.options.get("num_splits", 0))
    if count != ctx.num_outputs or count != _vector_length(ctx, 1, "size_splits"):
        raise ctx.fail(f"num_splits {count} must match the {ctx.num_outputs} outputs and the size_splits")
    axis = _axis(ctx, _scalar(ctx, 2, "the axis"), _rank(ctx))
    ints = _Ints(ctx)
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


# --- slicing -------------------------------------------------------------------------------


@converts("SLICE", any_dtype=True)
def slice_(ctx: OpContext) -> None:
    """input[begin : begin + size] on every axis; a size of -1 takes the rest."""
    ctx.need_inputs(3)
    rank = _rank(ctx)
    if _vector_length(ctx, 1, "begin") != rank or _vector_length(ctx, 2, "size") != rank:
        raise ctx.fail(f"begin and size must hold {rank} entries, one per dimension")
    ints = _Ints(ctx)
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
    does. begin, end and strides may be computed at run time."""
    ctx.need_inputs(4)
    count = _vector_length(ctx, 1, "begin")
    if _vector_length(ctx, 2, "end") != count or _vector_length(ctx, 3, "strides") != count:
        raise ctx.fail("begin, end and strides must have the same length")
    rank = _rank(ctx)
    plan = _slice_axes(ctx, rank, count)
    ints = _Ints(ctx)
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


def _slice_bounds(ints: _Ints, plan: _SliceAxes, dims: Ints, stride: Ints, begin: Ints, end: Ints,
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
    from the back): a Slice with step -1 on each."""
    ctx.need_inputs(2)
    count = _vector_length(ctx, 1, "the axis")
    ints = _Ints(ctx)
    axes = ints.input(1, "the axis")
    if isinstance(axes, np.ndarray):
        axes = np.asarray([_axis(ctx, int(a), _rank(ctx)) for a in axes], np.int64)
    if count == 0:
        ctx.bind(0, ctx.emit("Identity", [ctx.input(0)]))
        return
    starts, ends, steps = (np.full(count, v, np.int64) for v in (-1, INT64_MIN, -1))
    ctx.bind(0, ctx.emit("Slice", [ctx.input(0), *(ints.value(v) for v in (starts, ends, axes, steps))]))


# --- gathering and scattering --------------------------------------------------------------


@converts("GATHER", any_dtype=True)
def gather(ctx: OpContext) -> None:
    """params (input 0) indexed along `axis` by the int indices (input 1), with `batch_dims`
    leading dimensions shared by both (negative axis and batch_dims count from the back)."""
    ctx.need_inputs(2)
    rank, index_rank = _rank(ctx, 0), _rank(ctx, 1)
    axis = _axis(ctx, int(ctx.options.get("axis", 0)), rank)
    batch = int(ctx.options.get("batch_dims", 0))
    batch = batch + index_rank if batch < 0 else batch
    if not 0 <= batch <= min(axis, index_rank):
        raise ctx.fail(f"batch_dims {ctx.options.get('batch_dims')} must lie in [0, {min(axis, index_rank)}] "
                       f"(axis {axis}, indices of rank {index_rank})")
    if ctx.tensor(1).type not in ("INT16", "INT32", "INT64"):
        raise ctx.fail(f"the indices must be int16, int32 or int64, got {ctx.tensor(1).type}")
    indices = ctx.input(1)
    if ctx.tensor(1).type == "INT16":
        indices = ctx.emit("Cast", [indices], to=_ONNX_INTS["INT64"])
    if batch == 0:
        ctx.bind(0, ctx.emit("Gather", [ctx.input(0), indices], axis=axis))
        return
    # params with `axis` moved to `batch`, then GatherND along it, then the index dimensions
    # moved behind params' dimensions between batch and axis.
    perm = [*range(batch), axis, *range(batch, axis), *range(axis + 1, rank)]
    params = ctx.input(0) if perm == sorted(perm) else ctx.emit("Transpose", [ctx.input(0)], perm=perm)
    if ctx.tensor(1).type != "INT64":
        indices = ctx.emit("Cast", [indices], to=_ONNX_INTS["INT64"])
    indices = ctx.emit("Unsqueeze", [indices, ctx.const("last", np.asarray([-1], np.int64))])
    y = ctx.emit("GatherND", [params, indices], batch_dims=batch)
    taken, between = index_rank - batch, axis - batch
    out = [*range(batch), *range(batch + taken, batch + taken + between), *range(batch, batch + taken),
           *range(batch + taken + between, rank - 1 + taken)]
    ctx.bind(0, y if out == sorted(out) else ctx.emit("Transpose", [y], perm=out))


def _int64_indices(ctx: OpContext, i: int, what: str = "the indices") -> Value:
    """Int input `i` as int64 (what ScatterND, GatherND and ReverseSequence take)."""
    tensor = ctx.tensor(i)
    if tensor.type not in ("INT16", "INT32", "INT64"):
        raise ctx.fail(f"{what} must be int16, int32 or int64, got {tensor.type}")
    value = ctx.input(i)
    return value if tensor.type == "INT64" else ctx.emit("Cast", [value], to=_ONNX_INTS["INT64"])


@converts("GATHER_ND", any_dtype=True)
def gather_nd(ctx: OpContext) -> None:
    """params (input 0) at the index tuples of the last dimension of indices (input 1)."""
    ctx.need_inputs(2)
    ctx.bind(0, ctx.emit("GatherND", [ctx.input(0), _int64_indices(ctx, 1)]))


@converts("SCATTER_ND", any_dtype=True)
def scatter_nd(ctx: OpContext) -> None:
    """A tensor of the shape input (2) holding zeros, plus updates (1) at the index tuples of
    indices (0); updates at the same index add up."""
    ctx.need_inputs(3)
    dtype = ctx.tensor(1).dtype
    if dtype is None or dtype.kind not in "fiub":
        raise ctx.fail(f"updates of type {ctx.tensor(1).type} are not supported")
    ints = _Ints(ctx)
    shape = ints.input(2, "the shape")
    if isinstance(shape, np.ndarray) and (shape < 0).any():
        raise ctx.fail(f"shape {shape.tolist()} has a negative dimension")
    zeros = ctx.emit("Expand", [ctx.const("zero", np.zeros((), dtype)), ints.value(shape)])
    ctx.bind(0, ctx.emit("ScatterND", [zeros, _int64_indices(ctx, 0), ctx.input(1)], reduction="add"))


@converts("ONE_HOT", any_dtype=True)
def one_hot(ctx: OpContext) -> None:
    """on_value (input 2) where an index (input 0) names the position along the new
    dimension `axis` of size depth (input 1), off_value (3) elsewhere; an index outside
    [0, depth) is all off_value."""
    ctx.need_inputs(4)
    rank = _rank(ctx)
    axis = int(ctx.options.get("axis", -1))
    if not -1 <= axis <= rank:
        raise ctx.fail(f"axis {axis} is out of range for indices of rank {rank}")
    ints = _Ints(ctx)
    indices = ints.input(0, "the indices")
    depth = ints.reshape(ints.input(1, "depth", ("INT32",)), [])
    indices = ints.where(ints.less(indices, np.asarray(0, np.int64)), depth, indices)
    if ctx.tensor(2).type != ctx.tensor(3).type:
        raise ctx.fail(f"on_value and off_value types differ: {ctx.tensor(2).type} and {ctx.tensor(3).type}")
    one = ctx.const("one", np.asarray([1], np.int64))
    values = ctx.emit("Concat", [ctx.emit("Reshape", [ctx.input(i), one]) for i in (3, 2)], axis=0)
    ctx.bind(0, ctx.emit("OneHot", [ints.value(indices), ints.value(depth), values], axis=axis))


# --- tiling and broadcasting ---------------------------------------------------------------


@converts("TILE", any_dtype=True)
def tile(ctx: OpContext) -> None:
    """Repeats the input `multiples` (input 1, constant or computed) times along each axis."""
    ctx.need_inputs(2)
    if _vector_length(ctx, 1, "multiples") != _rank(ctx):
        raise ctx.fail(f"multiples must hold {_rank(ctx)} entries, one per dimension")
    ints = _Ints(ctx)
    multiples = ints.input(1, "multiples")
    if isinstance(multiples, np.ndarray) and (multiples < 0).any():
        raise ctx.fail(f"multiples {multiples.tolist()} hold a negative count")
    ctx.bind(0, ctx.emit("Tile", [ctx.input(0), ints.value(multiples)]))


@converts("BROADCAST_TO", any_dtype=True)
def broadcast_to(ctx: OpContext) -> None:
    """The input broadcast (numpy rules) to the shape input (constant or computed)."""
    ctx.need_inputs(2)
    ints = _Ints(ctx)
    ctx.bind(0, ctx.emit("Expand", [ctx.input(0), ints.value(ints.input(1, "the shape"))]))


@converts("BROADCAST_ARGS")
def broadcast_args(ctx: OpContext) -> None:
    """The shape two shapes (1-D int inputs of static length) broadcast to."""
    ctx.need_inputs(2)
    lengths = [_vector_length(ctx, i, f"shape {i}") for i in (0, 1)]
    if ctx.tensor(0).type != ctx.tensor(1).type:
        raise ctx.fail(f"the shapes' types differ: {ctx.tensor(0).type} and {ctx.tensor(1).type}")
    ints = _Ints(ctx)
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
    ctx.bind(0, _cast_to(ctx, y, ctx.tensor(0).type))


# --- padding -------------------------------------------------------------------------------


def _paddings(ctx: OpContext, ints: _Ints) -> Ints:
    """The [rank, 2] paddings input (1) as int64, checked when constant."""
    rank = _rank(ctx)
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
    ints = _Ints(ctx)
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
    ints = _Ints(ctx)
    paddings = _paddings(ctx, ints)
    dims = ints.dims(0)
    if isinstance(paddings, np.ndarray) and isinstance(dims, np.ndarray):
        limit = dims - 1 + mode
        if (paddings > limit[:, None]).any():
            raise ctx.fail(f"paddings {paddings.tolist()} exceed what {'SYMMETRIC' if mode else 'REFLECT'} mode "
                           f"allows for shape {dims.tolist()} (at most {limit.tolist()})")
    flat = ints.reshape(paddings, [-1])
    y = ctx.input(0)
    for axis in range(_rank(ctx)):
        before, after = (ints.take(flat, np.asarray(2 * axis + side)) for side in (0, 1))
        if isinstance(before, np.ndarray) and isinstance(after, np.ndarray) and before == after == 0:
            continue
        y = ctx.emit("Gather", [y, ints.value(_mirror_index(ints, ints.take(dims, np.asarray(axis)),
                                                            before, after, mode))], axis=axis)
    ctx.bind(0, ctx.emit("Identity", [y]) if y is ctx.input(0) else y)


def _mirror_index(ints: _Ints, n: Ints, before: Ints, after: Ints, symmetric: int) -> Ints:
    """For j in [-before, n + after): j inside [0, n), else its mirror: -j - symmetric before,
    2n - 2 + symmetric - j after."""
    one = np.asarray(1, np.int64)
    j = ints.apply(np.arange, "Range", ints.sub(np.asarray(0, np.int64), before), ints.add(n, after), one)
    left = ints.sub(np.asarray(-symmetric, np.int64), j)
    right = ints.sub(ints.add(ints.add(n, n), np.asarray(symmetric - 2, np.int64)), j)
    return ints.where(ints.less(j, np.asarray(0, np.int64)), left,
                      ints.where(ints.less(j, n), j, right))


# --- sorting and searching ----------------------------------------------------------------


@converts("TOPK_V2", any_dtype=True)
def topk_v2(ctx: OpContext) -> None:
    """The k (input 1) largest entries along the last axis, descending (ties: the lower
    index first), and their indices as the second output's int type."""
    ctx.need_inputs(2)
    ints = _Ints(ctx)
    k = ints.reshape(ints.input(1, "k", ("INT16", "INT32", "INT64")), [1])
    if isinstance(k, np.ndarray):
        size = ctx.tensor(0).signature[-1] if _rank(ctx) else 0
        if k[0] < 0 or (size >= 0 and k[0] > size):
            raise ctx.fail(f"k {int(k[0])} must lie in [0, {size}], the size of the last dimension")
    values, indices = ctx.emit("TopK", [ctx.input(0), ints.value(k)], num_outputs=2, axis=-1, largest=1, sorted=1)
    ctx.bind(0, values)
    ctx.bind(1, _cast_to(ctx, indices, ctx.output_tensor(1).type))


@converts("WHERE", any_dtype=True)
def where(ctx: OpContext) -> None:
    """The coordinates of the input's true (non-zero) entries, [count, rank], row-major."""
    ctx.need_inputs(1)
    coords = ctx.emit("Transpose", [ctx.emit("NonZero", [ctx.input(0)])], perm=[1, 0])
    ctx.bind(0, _cast_to(ctx, coords, ctx.output_tensor(0).type))


@converts("UNIQUE", any_dtype=True)
def unique(ctx: OpContext) -> None:
    """The distinct entries of a 1-D input in order of first appearance, and for each input
    entry the position of its value among them (as the second output's int type)."""
    ctx.need_inputs(1)
    if _rank(ctx) != 1:
        raise ctx.fail(f"the input must be 1-D, got shape {list(ctx.tensor(0).signature)}")
    y, _, inverse, _ = ctx.emit("Unique", [ctx.input(0)], num_outputs=4, sorted=0)
    ctx.bind(0, y)
    ctx.bind(1, _cast_to(ctx, inverse, ctx.output_tensor(1).type))


@converts("REVERSE_SEQUENCE", any_dtype=True)
def reverse_sequence(ctx: OpContext) -> None:
    """Reverses the first seq_lengths[b] (input 1) entries along seq_dim of each slice b
    along batch_dim; ONNX ReverseSequence takes axes 0 and 1 only, so others are
    transposed there and back."""
    ctx.need_inputs(2)
    rank = _rank(ctx)
    seq = _axis(ctx, int(ctx.options.get("seq_dim", 0)), rank, "seq_dim")
    batch = _axis(ctx, int(ctx.options.get("batch_dim", 0)), rank, "batch_dim")
    if seq == batch:
        raise ctx.fail(f"seq_dim and batch_dim are both {seq}")
    lengths = _int64_indices(ctx, 1, "seq_lengths")
    if {seq, batch} == {0, 1}:
        ctx.bind(0, ctx.emit("ReverseSequence", [ctx.input(0), lengths], time_axis=seq, batch_axis=batch))
        return
    perm = [batch, seq, *(a for a in range(rank) if a not in (batch, seq))]
    x = ctx.emit("Transpose", [ctx.input(0)], perm=perm)
    y = ctx.emit("ReverseSequence", [x, lengths], time_axis=1, batch_axis=0)
    ctx.bind(0, ctx.emit("Transpose", [y], perm=np.argsort(perm).tolist()))
