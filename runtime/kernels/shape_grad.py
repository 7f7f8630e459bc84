"""Gradient kernels (edgerun domain) of the indexing, cutting, padding and reducing ops that no
existing op can express: GatherGrad (a scatter-add), GatherGradSparse (the same gradient as the
rows it touches, for a large embedding table), SliceGrad, SplitGrad (for pieces without a
gradient), PadGrad (every mode: reflect, edge and wrap add their copies back), ReduceSumGrad and
ReduceMeanGrad (dY broadcast back over the reduced axes).

Each reads only the forward input's shape and the same shape-deciding inputs as its forward op,
and works the forward's geometry out with that op's own kernel (`_forward`), so the two cannot
disagree. Squeeze, Unsqueeze and Expand need none: their rules use ReshapeLike and SumTo.
"""

from __future__ import annotations

import numpy as np

from edgerun.runtime.kernels.attrs import (
    FLOAT_KINDS,
    flag_attr,
    int_attr,
    normalize_axis,
    prod,
    require_kind,
    str_attr,
)
from edgerun.runtime.kernels.base import Kernel, TensorSpec
from edgerun.runtime.kernels.concat import Split
from edgerun.runtime.kernels.indexing import INDEX_KINDS, Slice, checked_indices
from edgerun.runtime.kernels.pad import Pad
from edgerun.runtime.kernels.reduce import ReduceSum
from edgerun.runtime.kernels.registry import register


def _forward(grad: Kernel, cls: type[Kernel], version: int, attrs: dict) -> Kernel:
    """A forward kernel of `cls` at `version` that reports errors as `grad`'s node."""
    return cls(grad.op_type, grad.name, attrs, version)


def _require_grad(kernel: Kernel, dy: TensorSpec, want: TensorSpec, what: str = "dY") -> None:
    """ModelError unless `dy` has the forward output's shape and dtype `want`."""
    if dy.dtype != want.dtype or dy.shape != want.shape:
        raise kernel.fail(f"{what} is {dy.dtype} {dy.shape}; the forward output is {want.dtype} {want.shape}")


@register("GatherGrad", since=1, domain="edgerun")
class GatherGrad(Kernel):
    """(dY, X, indices; axis) -> dX of Y = Gather(X, indices, axis): zeros shaped like X (only
    X's shape is read) into which every slice of dY is added at its index along `axis`
    (default 0); repeated indices accumulate, negative ones count from the back. ModelError
    for an index out of range."""

    min_inputs = max_inputs = 3

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        dy, x, indices = inputs
        require_kind(self, indices, INDEX_KINDS, "indices")
        self.axis = normalize_axis(self, int_attr(self, "axis", 0), len(x.shape))
        shape = x.shape[: self.axis] + indices.shape + x.shape[self.axis + 1 :]
        _require_grad(self, dy, TensorSpec(x.dtype, shape))
        return [x]

    def run(self, inputs, outputs):
        dy, x, indices = inputs
        out = outputs[0]
        idx = checked_indices(self, indices, x.shape[self.axis], f"indices of axis {self.axis}")
        out[...] = 0
        np.add.at(out, (slice(None),) * self.axis + (idx,), dy)


@register("GatherGradSparse", since=1, domain="edgerun")
class GatherGradSparse(Kernel):
    """(X, dY1, indices1[, dY2, indices2, ...]) -> (indices, rows): the gradient of X for
    Y1 = Gather(X, indices1, axis=0), Y2 = Gather(X, indices2, axis=0), ... as the rows it
    touches instead of a table shaped like X (only X's shape is read).

    With N the number of indices of all pairs together, `indices` is int64 (N,) and `rows`
    is (N, *X.shape[1:]): the first k entries are the k distinct rows touched, ascending
    (negative indices counted from the back), each with the sum of the dY slices gathered
    from it, added in the order they occur as GatherGrad adds them (so one pair gives
    GatherGrad's rows bit for bit); the other N - k entries are padding, index -1 with a zero
    row. The shapes depend only on the inputs' shapes, so the plan can place them ahead of
    time. ModelError for an index out of range."""

    min_inputs, max_inputs = 3, 1 << 31

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = inputs[0]
        if len(inputs) % 2 == 0 or any(spec is None for spec in inputs):
            raise self.fail(f"expected X and (dY, indices) pairs, got {len(inputs)} inputs")
        if not x.shape:
            raise self.fail("X must have rank >= 1 (the rows are along axis 0)")
        row = tuple(x.shape[1:])
        total = 0
        for dy, indices in zip(inputs[1::2], inputs[2::2], strict=True):
            require_kind(self, indices, INDEX_KINDS, "indices")
            _require_grad(self, dy, TensorSpec(x.dtype, tuple(indices.shape) + row))
            total += prod(indices.shape)
        return [TensorSpec(np.dtype(np.int64), (total,)), TensorSpec(x.dtype, (total, *row))]

    def run(self, inputs, outputs):
        x, (out_indices, rows) = inputs[0], outputs
        pieces = [checked_indices(self, indices, x.shape[0], "indices of axis 0").reshape(-1)
                  for indices in inputs[2::2]]
        flat = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
        distinct, inverse = np.unique(flat, return_inverse=True)
        k = distinct.size
        out_indices[:k] = distinct
        out_indices[k:] = -1
        # one flat add.at over elements (numpy's fast path; a row at a time is 5x slower), in
        # the order the indices occur, as GatherGrad adds them
        width = prod(rows.shape[1:])
        targets = (inverse.reshape(-1, 1) * width + np.arange(width)).reshape(-1)
        dys = [dy.reshape(-1) for dy in inputs[1::2]]
        rows[...] = 0
        np.add.at(rows.reshape(-1), targets, dys[0] if len(dys) == 1 else np.concatenate(dys))


@register("SliceGrad", since=1, domain="edgerun")
class SliceGrad(Kernel):
    """(dY, X, starts, ends[, axes, steps]) -> dX of Y = Slice(X, ...) (opset-10 form; the
    bound inputs are needed at prepare time): zeros shaped like X with dY at the sliced
    positions. Only X's shape is read."""

    min_inputs, max_inputs = 4, 6

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        forward = _forward(self, Slice, 13, {})
        (y,) = forward.prepare(inputs[1:], values[1:])
        _require_grad(self, inputs[0], y)
        self.index = forward.index
        return [inputs[1]]

    def run(self, inputs, outputs):
        out = outputs[0]
        out[...] = 0
        out[self.index] = inputs[0]


@register("SplitGrad", since=1, domain="edgerun")
class SplitGrad(Kernel):
    """(X, split, dY1, ..., dYn; axis) -> dX of Y1..Yn = Split(X, split, axis) (opset-18 form:
    without `split`, n pieces of ceil(dim / n), the last maybe smaller, as num_outputs=n cuts):
    the dYi joined along `axis` (default 0), zeros where a dYi is omitted (an output no
    gradient reaches). Only X's shape is read."""

    min_inputs, max_inputs = 1, 1 << 31

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        if len(inputs) < 3:
            raise self.fail(f"expected X, split and at least one dY, got {len(inputs)} inputs")
        forward = _forward(self, Split, 18, {"axis": int_attr(self, "axis", 0), "num_outputs": len(inputs) - 2})
        pieces = forward.prepare(inputs[:2], values[:2])
        if len(pieces) != len(inputs) - 2:
            raise self.fail(f"the forward Split makes {len(pieces)} pieces, but {len(inputs) - 2} dY are given")
        for i, (dy, piece) in enumerate(zip(inputs[2:], pieces, strict=True)):
            if dy is not None:
                _require_grad(self, dy, piece, f"dY{i + 1}")
        self.axis, self.bounds = forward.axis, forward.bounds
        return [inputs[0]]

    def run(self, inputs, outputs):
        out = outputs[0]
        index = [slice(None)] * out.ndim
        for i, dy in enumerate(inputs[2:]):
            index[self.axis] = slice(self.bounds[i], self.bounds[i + 1])
            if dy is None:
                out[tuple(index)] = 0
            else:
                out[tuple(index)] = dy


@register("PadGrad", since=1, domain="edgerun")
class PadGrad(Kernel):
    """(dY, X, pads[, axes]; mode) -> dX of Y = Pad(X, pads, mode=mode[, axes]) (opset-19 form:
    constant, reflect, edge or wrap; pads needed at prepare time, negative ones crop). Every
    output position's dY is added to the element of X it copies; a constant position copies
    none, a cropped element gets 0. Only X's shape is read."""

    min_inputs, max_inputs = 3, 4

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        mode = str_attr(self, "mode", "constant")
        axes = inputs[3] if len(inputs) > 3 else None
        forward = _forward(self, Pad, 19, {"mode": mode})
        (y,) = forward.prepare([inputs[1], inputs[2], None, axes], [*values[1:3], None, *values[3:4]])
        _require_grad(self, inputs[0], y)
        self.forward = forward
        return [inputs[1]]

    def run(self, inputs, outputs):
        forward, out = self.forward, outputs[0]
        grad = inputs[0]
        if forward.mode == "constant":
            grad = grad[forward.interior]
        else:  # undo the gathers: each becomes a scatter-add
            for axis, source in forward._gathers():  # one per padded axis; any order
                n = forward.cropped[axis]
                folded = np.zeros(grad.shape[:axis] + (n,) + grad.shape[axis + 1 :], grad.dtype)
                np.add.at(folded, (slice(None),) * axis + (source,), grad)
                grad = folded
        out[...] = 0
        out[forward.crop] = grad


class _ReduceGrad(Kernel):
    """(dY, X[, axes]; keepdims, noop_with_empty_axes) -> dX of a reduction of X over `axes`
    (opset-18 form: input, needed at prepare time; omitted or empty means every axis, or none
    with noop_with_empty_axes=1): dY broadcast back over the reduced axes times `scale(count)`,
    count the number of elements each output reduced. Only X's shape is read."""

    min_inputs, max_inputs = 2, 3

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        dy, x = inputs[:2]
        require_kind(self, x, FLOAT_KINDS, "X")
        noop = {"noop_with_empty_axes": int(flag_attr(self, "noop_with_empty_axes"))}
        forward = _forward(self, ReduceSum, 13, {"keepdims": 1, **noop})
        (kept,) = forward.prepare(inputs[1:], values[1:])
        keepdims = flag_attr(self, "keepdims", 1)
        shape = kept.shape if keepdims else tuple(d for i, d in enumerate(x.shape) if i not in forward.axes)
        _require_grad(self, dy, TensorSpec(x.dtype, shape))
        self.kept = kept.shape
        self.factor = self.scale(prod([x.shape[a] for a in forward.axes]))
        return [x]

    def scale(self, count: int) -> float:
        raise NotImplementedError

    def run(self, inputs, outputs):
        np.multiply(inputs[0].reshape(self.kept), self.factor, out=outputs[0])


@register("ReduceSumGrad", since=1, domain="edgerun")
class ReduceSumGrad(_ReduceGrad):
    def scale(self, count: int) -> float:
        return 1.0


@register("ReduceMeanGrad", since=1, domain="edgerun")
class ReduceMeanGrad(_ReduceGrad):
    """As ReduceSumGrad, divided by the count of elements each mean took (1 when it took none:
    X is then empty and so is dX)."""

    def scale(self, count: int) -> float:
        return 1.0 / max(count, 1)
