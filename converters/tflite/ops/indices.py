"""What the shape and data-movement converters share: int64 index arithmetic over index
inputs (shapes, begins, axes, paddings, ...) that may be constants or computed at run time,
and the readers of those inputs.

`IndexMath` runs in numpy when every operand is known at conversion time, so a static model
gets plain constants, and becomes int64 ONNX nodes otherwise.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edgerun.converters.tflite.context import OpContext
from edgerun.converters.tflite.reader import MAX_RANK
from edgerun.runtime.graph import Value

INT64_MIN = np.iinfo(np.int64).min
INT64_MAX = np.iinfo(np.int64).max
# TFLite tensor type -> ONNX element type code (Cast's `to`) for the index types.
ONNX_INTS = {"INT16": 5, "INT32": 6, "INT64": 7}
INDEX_TYPES = ("INT32", "INT64")
# Index arrays longer than this (sized by a declared dimension) are made at run time, where the
# memory budget applies, rather than as constants at conversion.
MAX_CONSTANT_INDICES = 1 << 16

Ints = np.ndarray | Value   # int64 indices known at conversion time, or computed at run time


class IndexMath:
    """int64 index arithmetic: numpy when every operand is known at conversion time, ONNX
    nodes when one is computed at run time."""

    def __init__(self, ctx: OpContext) -> None:
        self.ctx = ctx

    def input(self, i: int, what: str, types: tuple[str, ...] = INDEX_TYPES) -> Ints:
        """Input `i` (an int tensor) as int64; ConversionError for another type."""
        tensor = self.ctx.tensor(i)
        if tensor is None or tensor.type not in types:
            got = "nothing" if tensor is None else tensor.type
            raise self.ctx.fail(f"{what} must be an {' or '.join(t.lower() for t in types)} tensor, got {got}")
        if tensor.data is not None:
            return np.asarray(tensor.data, np.int64)
        value = self.ctx.input(i)
        return value if tensor.type == "INT64" else self.ctx.emit("Cast", [value], to=ONNX_INTS["INT64"])

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

    def range(self, start: Ints, limit: Ints, delta: Ints) -> Ints:
        """start, start + delta, ... before limit (int64 scalars): numpy when all three are
        known and the result holds at most MAX_CONSTANT_INDICES entries, else a Range node
        (the constant folder leaves a big one to run time)."""
        bounds = (start, limit, delta)
        if not any(isinstance(a, Value) for a in bounds) and int(delta) != 0:
            if len(range(int(start), int(limit), int(delta))) <= MAX_CONSTANT_INDICES:
                return np.arange(start, limit, delta, dtype=np.int64)
        return self.ctx.emit("Range", [self.value(a if isinstance(a, Value) else np.asarray(a, np.int64))
                                       for a in bounds])

    def total(self, a: Ints) -> Ints:
        return self.apply(np.sum, "ReduceSum", a, keepdims=0)

    def take(self, a: Ints, index: np.ndarray) -> Ints:
        """a[index] for a constant index array (a 0-d index gives a 0-d result)."""
        return self.apply(lambda v, i: v[i], "Gather", a, np.asarray(index, np.int64))

    def reshape(self, a: Ints, shape: list[int]) -> Ints:
        return self.apply(lambda v, s: v.reshape(s), "Reshape", a, np.asarray(shape, np.int64))


def rank_of(ctx: OpContext, i: int = 0) -> int:
    return len(ctx.tensor(i).signature)


def checked_axis(ctx: OpContext, axis: int, rank: int, what: str = "axis") -> int:
    """`axis` in [-rank, rank) as a non-negative axis; ConversionError otherwise."""
    if not -rank <= axis < rank:
        raise ctx.fail(f"{what} {axis} is out of range for rank {rank}")
    return axis + rank if axis < 0 else axis


def constant_int(ctx: OpContext, i: int, what: str) -> int:
    """A constant one-element int input as a Python int."""
    data = ctx.constant(i, what)
    if data.size != 1 or data.dtype.kind not in "iu":
        raise ctx.fail(f"{what} must hold one integer, got {data.dtype} of shape {list(data.shape)}")
    return int(data.reshape(-1)[0])


def vector_length(ctx: OpContext, i: int, what: str) -> int:
    """The static length of 1-D input `i`."""
    signature = ctx.tensor(i).signature
    if len(signature) != 1 or signature[0] < 0:
        raise ctx.fail(f"{what} must be a 1-D tensor of static length, got shape {list(signature)}")
    return signature[0]


def rank_length(ctx: OpContext, i: int, what: str, limit: int = MAX_RANK) -> int:
    """The static length of 1-D input `i` that holds one entry per dimension (begins, axes,
    shapes): at most `limit` (the reader's MAX_RANK), checked before anything is made of it."""
    length = vector_length(ctx, i, what)
    if length > limit:
        raise ctx.fail(f"{what} has {length} entries; at most {limit} are allowed (one per dimension)")
    return length


def cast_int(ctx: OpContext, value: Value, tflite_type: str) -> Value:
    """An int64 result (Shape, TopK, NonZero...) as the output's int type."""
    if tflite_type == "INT64":
        return value
    if tflite_type not in ONNX_INTS:
        raise ctx.fail(f"the output must be int32 or int64, got {tflite_type}")
    return ctx.emit("Cast", [value], to=ONNX_INTS[tflite_type])


def int64_indices(ctx: OpContext, i: int, what: str = "the indices") -> Value:
    """Int input `i` as int64 (what ScatterND, GatherND and ReverseSequence take)."""
    tensor = ctx.tensor(i)
    if tensor.type not in ("INT16", "INT32", "INT64"):
        raise ctx.fail(f"{what} must be int16, int32 or int64, got {tensor.type}")
    value = ctx.input(i)
    return value if tensor.type == "INT64" else ctx.emit("Cast", [value], to=ONNX_INTS["INT64"])
