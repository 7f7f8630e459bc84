"""Shape kernels: Reshape, Flatten, Squeeze and Unsqueeze (X's elements in order, in a new
shape), ReshapeLike (edgerun domain, their gradient), Expand and Tile (X repeated), Identity, and
Shape and Size, which read only X's shape. Any dtype.

Inputs that decide an output shape (Reshape's shape, axes, repeats) are read with
`attrs.ints_input`, which asks the plan for them at prepare time (`Kernel.value_of`).
Concat and Split live in concat.py, Transpose and DepthToSpace in transpose.py, Pad in pad.py.
"""

from __future__ import annotations

import numpy as np

from edgerun.runtime.kernels.attrs import flag_attr, int_attr, ints_attr, ints_input, normalize_axis, prod
from edgerun.runtime.kernels.base import Kernel, TensorSpec, copy_value
from edgerun.runtime.kernels.registry import register

MAX_RANK = 64  # numpy's limit


@register("Reshape", since=5)
class Reshape(Kernel):
    """Y = X with the shape held by input 1 (needed at prepare time): -1 is inferred and 0
    copies X's dimension at that position (from opset 14, allowzero=1 makes 0 a real 0)."""

    min_inputs = max_inputs = 2

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        target = self.value_of(values, 1)
        if target.ndim != 1 or target.dtype.kind not in "iu" or target.size > MAX_RANK:
            raise self.fail(f"the shape input must be 1-D ints of length <= {MAX_RANK}, got {target!r}")
        shape = self._resolve(inputs[0].shape, [int(d) for d in target])
        return [TensorSpec(inputs[0].dtype, shape)]

    def _allowzero(self) -> bool:
        return False

    def _resolve(self, x: tuple[int, ...], dims: list[int]) -> tuple[int, ...]:
        allowzero = self._allowzero()
        if any(d < -1 for d in dims) or dims.count(-1) > 1 or (allowzero and 0 in dims and -1 in dims):
            raise self.fail(f"shape {dims} invalid (allowzero={int(allowzero)})")
        if not allowzero and any(d == 0 and i >= len(x) for i, d in enumerate(dims)):
            raise self.fail(f"shape {dims} copies a dimension that X shape {x} lacks")
        out = [x[i] if d == 0 and not allowzero else d for i, d in enumerate(dims)]
        total = prod(x)
        if -1 in out:
            known = prod([d for d in out if d != -1])
            if known == 0 or total % known:
                raise self.fail(f"cannot infer -1 in {dims} for X shape {x} ({total} elements)")
            out[out.index(-1)] = total // known
        if prod(out) != total:
            raise self.fail(f"cannot reshape X shape {x} ({total} elements) to {dims}")
        return tuple(out)

    def run(self, inputs, outputs):
        np.copyto(outputs[0], inputs[0].reshape(outputs[0].shape))


@register("Reshape", since=14)
class Reshape14(Reshape):
    def _allowzero(self) -> bool:
        return flag_attr(self, "allowzero")


@register("ReshapeLike", since=1, domain="edgerun")
class ReshapeLike(Kernel):
    """(dY, Like) -> dY reshaped to Like's shape (only Like's shape is read): the gradient of
    Reshape, Flatten and other ops that only change the shape. ModelError when the sizes differ."""

    min_inputs = max_inputs = 2

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        dy, like = inputs
        if dy.size != like.size:
            raise self.fail(f"cannot reshape dY shape {dy.shape} ({dy.size} elements) to {like.shape}")
        return [TensorSpec(dy.dtype, like.shape)]

    def run(self, inputs, outputs):
        np.copyto(outputs[0], inputs[0].reshape(outputs[0].shape))


@register("Flatten", since=1)
class Flatten(Kernel):
    """Y = X as 2-D (prod(shape[:axis]), prod(shape[axis:])); axis in [0, rank] (negative
    from opset 11), default 1."""

    negative_axis = False

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = inputs[0]
        axis = normalize_axis(
            self, int_attr(self, "axis", 1), len(x.shape), negative=self.negative_axis, end=True
        )
        return [TensorSpec(x.dtype, (prod(x.shape[:axis]), prod(x.shape[axis:])))]

    def run(self, inputs, outputs):
        np.copyto(outputs[0], inputs[0].reshape(outputs[0].shape))


@register("Flatten", since=11)
class Flatten11(Flatten):
    negative_axis = True


def node_axes(
    kernel: Kernel, inputs: list[TensorSpec | None], values: list, index: int, rank: int
) -> tuple[int, ...] | None:
    """A node's `axes` normalized to [0, rank): the attribute before opset 13, input `index`
    from 13 on; None when absent. Negative axes count from the back from opset 11.
    ModelError for a repeated or out-of-range axis."""
    if kernel.version < 13:
        axes = ints_attr(kernel, "axes")
    else:
        axes = ints_input(kernel, inputs, values, index, "axes")
    if axes is None:
        return None
    normalized = tuple(normalize_axis(kernel, a, rank, negative=kernel.version >= 11) for a in axes)
    if len(set(normalized)) != len(normalized):
        raise kernel.fail(f"axes {list(axes)} repeat an axis")
    return normalized


class _ReshapeTo(Kernel):
    """Base of kernels whose output is X's data with the shape prepare gave it."""

    def run(self, inputs, outputs):
        np.copyto(outputs[0], inputs[0].reshape(outputs[0].shape))


@register("Squeeze", since=1)
class Squeeze(_ReshapeTo):
    """Y = X without the size-1 axes listed in `axes` (attribute before opset 13, optional
    input 1 after), or without every size-1 axis when axes are absent."""

    max_inputs = 2

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = inputs[0]
        axes = node_axes(self, inputs, values, 1, len(x.shape))
        if axes is None:
            axes = tuple(i for i, d in enumerate(x.shape) if d == 1)
        for a in axes:
            if x.shape[a] != 1:
                raise self.fail(f"cannot squeeze axis {a} of X shape {x.shape}: its size is not 1")
        shape = tuple(d for i, d in enumerate(x.shape) if i not in axes)
        return [TensorSpec(x.dtype, shape)]


@register("Unsqueeze", since=1)
class Unsqueeze(_ReshapeTo):
    """Y = X with size-1 axes inserted at `axes` (positions in Y; attribute before opset 13,
    required input 1 after)."""

    max_inputs = 2

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = inputs[0]
        count = len(ints_attr(self, "axes") or ()) if self.version < 13 else None
        if count is None:
            count = len(ints_input(self, inputs, values, 1, "axes") or ())
        axes = node_axes(self, inputs, values, 1, len(x.shape) + count)
        if not axes:
            raise self.fail("axes are required and may not be empty")
        dims = iter(x.shape)
        shape = tuple(1 if i in axes else next(dims) for i in range(len(x.shape) + len(axes)))
        return [TensorSpec(x.dtype, shape)]


@register("Expand", since=8)
class Expand(Kernel):
    """Y = X broadcast with the shape held by input 1 (needed at prepare time), both ways:
    Y's shape is the numpy broadcast of X's shape and that shape."""

    min_inputs = max_inputs = 2

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = inputs[0]
        target = ints_input(self, inputs, values, 1, "shape")
        if any(d < 0 for d in target):
            raise self.fail(f"shape {list(target)} has a negative dimension")
        try:
            shape = np.broadcast_shapes(x.shape, target)
        except ValueError:
            raise self.fail(f"cannot expand X shape {x.shape} to {list(target)}") from None
        return [TensorSpec(x.dtype, shape)]

    def run(self, inputs, outputs):
        np.copyto(outputs[0], inputs[0])


@register("Tile", since=6)
class Tile(Kernel):
    """Y = X repeated `repeats[i]` times along each axis i (input 1, needed at prepare time,
    one non-negative count per axis)."""

    min_inputs = max_inputs = 2

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = inputs[0]
        repeats = ints_input(self, inputs, values, 1, "repeats")
        if len(repeats) != len(x.shape) or any(r < 0 for r in repeats):
            raise self.fail(f"repeats {list(repeats)} must be {len(x.shape)} non-negative counts")
        self.repeats = repeats
        return [TensorSpec(x.dtype, tuple(d * r for d, r in zip(x.shape, repeats, strict=True)))]

    def run(self, inputs, outputs):
        np.copyto(outputs[0], np.tile(inputs[0], self.repeats))


@register("Tile", since=1)
class Tile1(Tile):
    """Opset 1: Y = X repeated `tiles` (input 1) times along `axis` (input 2), both scalars."""

    min_inputs = max_inputs = 3

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = inputs[0]
        tiles, axis = (ints_input(self, inputs, values, i, what) for i, what in ((1, "tiles"), (2, "axis")))
        if len(tiles) != 1 or len(axis) != 1 or tiles[0] < 0:
            raise self.fail(f"tiles {list(tiles)} and axis {list(axis)} must be a count and an axis")
        axis = normalize_axis(self, axis[0], len(x.shape), negative=False)
        self.repeats = tuple(tiles[0] if i == axis else 1 for i in range(len(x.shape)))
        return [TensorSpec(x.dtype, tuple(d * r for d, r in zip(x.shape, self.repeats, strict=True)))]


@register("Shape", since=1)
class Shape(Kernel):
    """Y = X's shape as 1-D int64; from opset 15, dims[start:end] (negative counts from the
    back, both clamped to [0, rank])."""

    shape_only = True

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        dims = inputs[0].shape
        start, end = 0, len(dims)
        if self.version >= 15:
            start = _clamp_index(int_attr(self, "start", 0), len(dims))
            end = _clamp_index(int_attr(self, "end", len(dims)), len(dims))
        self.dims = np.array(dims[start:end], np.int64)
        return [TensorSpec(np.dtype(np.int64), self.dims.shape)]

    def run(self, inputs, outputs):
        np.copyto(outputs[0], self.dims)


def _clamp_index(index: int, size: int) -> int:
    """`index` (negative counts from the back) clamped to [0, size]."""
    return min(max(index + size if index < 0 else index, 0), size)


@register("Size", since=1)
class Size(Kernel):
    """Y = the number of elements of X, an int64 scalar."""

    shape_only = True

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        self.count = prod(inputs[0].shape)
        return [TensorSpec(np.dtype(np.int64), ())]

    def run(self, inputs, outputs):
        outputs[0][...] = self.count


@register("Identity", since=1)
class Identity(Kernel):
    """Y = X: a tensor, or (opset 14+ in ONNX) a sequence or an optional, passed through."""

    takes_sequences = True

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        return [inputs[0]]

    def run(self, inputs, outputs):
        np.copyto(outputs[0], inputs[0])

    def evaluate(self, inputs, out_specs):
        if isinstance(out_specs[0], TensorSpec):
            return super().evaluate(inputs, out_specs)
        return [copy_value(inputs[0])]
