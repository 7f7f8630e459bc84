"""Joining and cutting along an axis: Concat, its gradient ConcatGrad (edgerun domain) and
Split. Any dtype.
"""

from __future__ import annotations

from itertools import accumulate

import numpy as np

from edgerun.runtime.kernels.attrs import int_attr, ints_attr, ints_input, normalize_axis
from edgerun.runtime.kernels.base import Kernel, TensorSpec
from edgerun.runtime.kernels.registry import register


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
