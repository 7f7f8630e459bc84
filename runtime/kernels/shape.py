"""Shape kernels: Reshape, Flatten, Transpose, Concat, Identity, and the gradient kernels
(edgerun domain) ReshapeLike and ConcatGrad. Any dtype."""

from __future__ import annotations

from itertools import accumulate

import numpy as np

from runtime.kernels.attrs import flag_attr, int_attr, ints_attr, normalize_axis, prod
from runtime.kernels.base import Kernel, TensorSpec
from runtime.kernels.registry import register

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
