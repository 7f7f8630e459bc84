"""Shape kernels: Reshape, Flatten, Transpose, Concat, Identity, Shape, Size, Squeeze,
Unsqueeze, Split, Expand, Tile, DepthToSpace, SpaceToDepth, and the gradient kernels
(edgerun domain) ReshapeLike and ConcatGrad. Any dtype.

Inputs that decide an output shape (Reshape's shape, axes, split sizes, repeats) are read
with `ints_input`, which asks the plan for them at prepare time (`Kernel.value_of`)."""

from __future__ import annotations

from itertools import accumulate

import numpy as np

from edgerun.runtime.kernels.attrs import flag_attr, int_attr, ints_attr, normalize_axis, prod, require_rank, str_attr
from edgerun.runtime.kernels.base import Kernel, TensorSpec
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


@register("Transpose", since=1)
class Transpose(Kernel):
    """Y = X with axes permuted by `perm` (default: reversed)."""

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = inputs[0]
        rank = len(x.shape)
        perm = ints_attr(self, "perm")
        self.perm = tuple(range(rank))[::-1] if perm is None else perm
        if sorted(self.perm) != list(range(rank)):
            raise self.fail(f"perm {self.perm} is not a permutation of the {rank} axes of X")
        return [TensorSpec(x.dtype, tuple(x.shape[p] for p in self.perm))]

    def run(self, inputs, outputs):
        np.copyto(outputs[0], inputs[0].transpose(self.perm))


@register("Concat", since=1)
class Concat(Kernel):
    """Y = the inputs joined along `axis`; every other dimension must agree. Before opset 4
    axis defaults to 1; from opset 11 it may be negative."""

    max_inputs = 1 << 31
    default_axis: int | None = 1
    negative_axis = False

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        if any(spec is None for spec in inputs):
            raise self.fail("Concat inputs may not be omitted")
        first = inputs[0]
        rank = len(first.shape)
        axis = normalize_axis(
            self, int_attr(self, "axis", self.default_axis), rank, negative=self.negative_axis
        )
        for i, spec in enumerate(inputs):
            if spec.dtype != first.dtype:
                raise self.fail(f"input {i} dtype {spec.dtype} differs from input 0 ({first.dtype})")
            rest = spec.shape[:axis] + spec.shape[axis + 1 :]
            if len(spec.shape) != rank or rest != first.shape[:axis] + first.shape[axis + 1 :]:
                raise self.fail(
                    f"input {i} shape {spec.shape} does not match input 0 shape {first.shape} "
                    f"outside axis {axis}"
                )
        self.axis = axis
        joined = sum(spec.shape[axis] for spec in inputs)
        return [TensorSpec(first.dtype, first.shape[:axis] + (joined,) + first.shape[axis + 1 :])]

    def run(self, inputs, outputs):
        np.concatenate(inputs, axis=self.axis, out=outputs[0])


@register("Concat", since=4)
class Concat4(Concat):
    default_axis = None  # required


@register("Concat", since=11)
class Concat11(Concat4):
    negative_axis = True


@register("ConcatGrad", since=1, domain="edgerun")
class ConcatGrad(Kernel):
    """(dY, X1, ..., Xn; axis) -> (dX1, ..., dXn): dY split along `axis` (required, may be
    negative) into pieces shaped like the Xi, of which only the shapes are read. ModelError
    unless the Xi concatenated along `axis` have dY's shape."""

    min_inputs, max_inputs = 2, 1 << 31

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        if any(spec is None for spec in inputs):
            raise self.fail("ConcatGrad inputs may not be omitted")
        dy, parts = inputs[0], inputs[1:]
        self.axis = normalize_axis(self, int_attr(self, "axis"), len(dy.shape))
        outside = _drop(dy.shape, self.axis)
        for i, spec in enumerate(parts, start=1):
            if len(spec.shape) != len(dy.shape) or _drop(spec.shape, self.axis) != outside:
                raise self.fail(
                    f"input {i} shape {spec.shape} does not match dY shape {dy.shape} "
                    f"outside axis {self.axis}"
                )
        sizes = [spec.shape[self.axis] for spec in parts]
        if sum(sizes) != dy.shape[self.axis]:
            raise self.fail(f"the inputs' sizes {sizes} along axis {self.axis} do not add up to "
                            f"dY's {dy.shape[self.axis]}")
        self.bounds = list(accumulate(sizes, initial=0))
        return [TensorSpec(dy.dtype, spec.shape) for spec in parts]

    def run(self, inputs, outputs):
        dy = inputs[0]
        index = [slice(None)] * dy.ndim
        for i, out in enumerate(outputs):
            index[self.axis] = slice(self.bounds[i], self.bounds[i + 1])
            np.copyto(out, dy[tuple(index)])


def _drop(shape: tuple[int, ...], axis: int) -> tuple[int, ...]:
    return shape[:axis] + shape[axis + 1 :]


@register("Identity", since=1)
class Identity(Kernel):
    def prepare(self, inputs, values):
        self.check_arity(inputs)
        return [inputs[0]]

    def run(self, inputs, outputs):
        np.copyto(outputs[0], inputs[0])



def has_input(inputs: list[TensorSpec | None], index: int) -> bool:
    """True when optional input `index` is present (not omitted)."""
    return index < len(inputs) and inputs[index] is not None


def ints_input(
    kernel: Kernel, inputs: list[TensorSpec | None], values: list, index: int, what: str, *, any_rank: bool = False
) -> tuple[int, ...] | None:
    """Input `index` as a tuple of ints (needed at prepare time), None when omitted.
    ModelError unless it is a 0-D or 1-D int tensor (any rank, flattened, with `any_rank`)."""
    if not has_input(inputs, index):
        return None
    array = kernel.value_of(values, index)
    if (array.ndim > 1 and not any_rank) or array.dtype.kind not in "iu":
        raise kernel.fail(f"{what} must be a {'' if any_rank else '1-D '}int tensor, "
                          f"got {array.dtype} shape {array.shape}")
    return tuple(int(v) for v in array.reshape(-1))


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


@register("Split", since=1)
class Split(Kernel):
    """Y1..Yn = X cut along `axis` (default 0) into pieces of the sizes `split` gives
    (attribute, or input 1 in opset 1 and from 13), else into n equal pieces; from opset 18
    `num_outputs` pieces of ceil(dim / n) (the last may be smaller). n is the node's
    output count."""

    max_inputs = 2

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = inputs[0]
        axis = normalize_axis(self, int_attr(self, "axis", 0), len(x.shape))  # exporters use -1 before opset 11
        dim = x.shape[axis]
        sizes = self._sizes(inputs, values, dim)
        if any(s < 0 for s in sizes) or sum(sizes) != dim:
            raise self.fail(f"split sizes {list(sizes)} do not add up to {dim}, the size of axis {axis}")
        self.axis = axis
        self.bounds = list(accumulate(sizes, initial=0))
        return [TensorSpec(x.dtype, x.shape[:axis] + (s,) + x.shape[axis + 1 :]) for s in sizes]

    def _sizes(self, inputs: list, values: list, dim: int) -> tuple[int, ...]:
        split = ints_attr(self, "split") if self.version < 13 else None
        if split is None:
            split = ints_input(self, inputs, values, 1, "split")
        if split is not None:
            return split
        count = int_attr(self, "num_outputs", 0) if self.version >= 18 else 0
        if count > 0:
            piece = -(-dim // count)
            return tuple(min(piece, max(dim - i * piece, 0)) for i in range(count))
        count = self.num_outputs  # the node's output count
        if count <= 0 or dim % count:
            raise self.fail(f"cannot split a dimension of {dim} into {count} equal parts")
        return (dim // count,) * count

    def run(self, inputs, outputs):
        index = [slice(None)] * inputs[0].ndim
        for i, out in enumerate(outputs):
            index[self.axis] = slice(self.bounds[i], self.bounds[i + 1])
            np.copyto(out, inputs[0][tuple(index)])


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


@register("DepthToSpace", since=1)
class DepthToSpace(Kernel):
    """(N, C, H, W) -> (N, C / b^2, H * b, W * b) with b = `blocksize`: depth moves into
    b x b spatial blocks, in DCR order (depth, column, row) or, from opset 11, CRD."""

    inverse = False  # SpaceToDepth

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = inputs[0]
        require_rank(self, x, 4, 4, what="input")
        b = int_attr(self, "blocksize")
        mode = str_attr(self, "mode", "DCR") if self.version >= 11 or self.inverse else "DCR"
        if b <= 0 or mode not in ("DCR", "CRD"):
            raise self.fail(f"blocksize {b} must be positive and mode {mode!r} DCR or CRD")
        n, c, h, w = x.shape
        if self.inverse:
            if h % b or w % b:
                raise self.fail(f"H and W of input shape {x.shape} must be multiples of blocksize {b}")
            self.split = (n, c, h // b, b, w // b, b)
            self.perm = (0, 3, 5, 1, 2, 4) if mode == "DCR" else (0, 1, 3, 5, 2, 4)
            out = (n, c * b * b, h // b, w // b)
        else:
            if c % (b * b):
                raise self.fail(f"C of input shape {x.shape} must be a multiple of blocksize^2 = {b * b}")
            depth = c // (b * b)
            self.split = (n, b, b, depth, h, w) if mode == "DCR" else (n, depth, b, b, h, w)
            self.perm = (0, 3, 4, 1, 5, 2) if mode == "DCR" else (0, 1, 4, 2, 5, 3)
            out = (n, depth, h * b, w * b)
        return [TensorSpec(x.dtype, out)]

    def run(self, inputs, outputs):
        blocks = inputs[0].reshape(self.split).transpose(self.perm)
        np.copyto(outputs[0], blocks.reshape(outputs[0].shape))


@register("SpaceToDepth", since=1)
class SpaceToDepth(DepthToSpace):
    """(N, C, H, W) -> (N, C * b^2, H / b, W / b): the inverse of DepthToSpace; DCR order,
    from opset 28 `mode` may be CRD."""

    inverse = True

    def prepare(self, inputs, values):
        if self.version < 28 and "mode" in self.attrs:
            raise self.fail("the mode attribute needs opset 28")
        return super().prepare(inputs, values)
