"""Indexing kernels: Slice, Gather, GatherElements, GatherND, the Scatters (TensorScatter, the
KV-cache update, among them), Compress, NonZero, OneHot, ReverseSequence. Any data dtype; indices are int32/int64.

Indices are checked before use: one out of range is a ModelError naming the node,
the axis and the bad value, never a numpy IndexError.
"""

from __future__ import annotations

import numpy as np

from edgerun.runtime.kernels.attrs import (
    has_input,
    int_attr,
    ints_attr,
    ints_input,
    normalize_axis,
    prod,
    require_kind,
    require_rank,
    str_attr,
)
from edgerun.runtime.kernels.base import Kernel, TensorSpec
from edgerun.runtime.kernels.registry import register

INDEX_KINDS = "iu"


def checked_indices(kernel: Kernel, indices: np.ndarray, size: int, what: str) -> np.ndarray:
    """`indices` (in [-size, size)) as int64 in [0, size); ModelError naming `what` for any
    index out of range."""
    idx = indices.astype(np.int64, copy=False)
    if idx.size and (idx.min() < -size or idx.max() >= size):
        bad = idx[(idx < -size) | (idx >= size)].reshape(-1)[0]
        raise kernel.fail(f"{what}: index {bad} is out of range [{-size}, {size - 1}]")
    return np.where(idx < 0, idx + size, idx)


@register("Slice", since=1)
class Slice(Kernel):
    """Y = X[starts:ends:steps] along `axes` (default: the first len(starts) axes). Opset 1
    takes starts/ends/axes as attributes; from opset 10 they are inputs 1..4 (needed at
    prepare time) with optional `steps` (default 1, never 0). Negative starts/ends count
    from the back and every bound is clamped to the axis, as in ONNX."""

    max_inputs = 5

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = inputs[0]
        rank = len(x.shape)
        if self.version < 10:
            starts, ends, axes = (ints_attr(self, k) for k in ("starts", "ends", "axes"))
            steps = None
            if starts is None or ends is None:
                raise self.fail("attributes 'starts' and 'ends' are required")
        else:
            if not (has_input(inputs, 1) and has_input(inputs, 2)):
                raise self.fail("inputs 'starts' and 'ends' are required")
            starts, ends, axes, steps = (  # any rank: exported Loop bodies pass (1, 1) bounds
                ints_input(self, inputs, values, i, what, any_rank=True)
                for i, what in ((1, "starts"), (2, "ends"), (3, "axes"), (4, "steps"))
            )
        axes = tuple(range(len(starts))) if axes is None else axes
        steps = (1,) * len(starts) if steps is None else steps
        if not len(starts) == len(ends) == len(axes) == len(steps):
            raise self.fail(f"starts {list(starts)}, ends {list(ends)}, axes {list(axes)} and steps "
                            f"{list(steps)} must have the same length")
        axes = tuple(normalize_axis(self, a, rank, negative=self.version >= 10) for a in axes)
        if len(set(axes)) != len(axes):
            raise self.fail(f"axes {list(axes)} repeat an axis")
        index = [slice(None)] * rank
        for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
            index[axis] = self._bounds(start, end, step, x.shape[axis])
        self.index = tuple(index)
        shape = tuple(len(range(*s.indices(d))) for s, d in zip(self.index, x.shape, strict=True))
        return [TensorSpec(x.dtype, shape)]

    def _bounds(self, start: int, end: int, step: int, dim: int) -> slice:
        if step == 0:
            raise self.fail("steps may not be 0")
        start = start + dim if start < 0 else start
        end = end + dim if end < 0 else end
        if step > 0:
            return slice(min(max(start, 0), dim), min(max(end, 0), dim), step)
        start = min(max(start, 0), dim - 1)
        end = min(max(end, -1), dim - 1)
        return slice(start, None if end < 0 else end, step)

    def run(self, inputs, outputs):
        np.copyto(outputs[0], inputs[0][self.index])


@register("Gather", since=1)
class Gather(Kernel):
    """Y = X indexed along `axis` (default 0) by int `indices` of any shape: Y's shape is
    X.shape[:axis] + indices.shape + X.shape[axis+1:]. Negative indices count from the back."""

    min_inputs = max_inputs = 2

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x, indices = inputs
        require_kind(self, indices, INDEX_KINDS, "indices")
        self.axis = normalize_axis(self, int_attr(self, "axis", 0), len(x.shape))
        shape = x.shape[: self.axis] + indices.shape + x.shape[self.axis + 1 :]
        constant = values[1] if len(values) > 1 else None  # checked once (an embedding row, a state slot)
        self.fixed = None if constant is None else checked_indices(
            self, constant, x.shape[self.axis], f"indices of axis {self.axis}")
        return [TensorSpec(x.dtype, shape)]

    def run(self, inputs, outputs):
        x, indices = inputs
        idx = self.fixed if self.fixed is not None else checked_indices(
            self, indices, x.shape[self.axis], f"indices of axis {self.axis}")
        np.take(x, idx, axis=self.axis, out=outputs[0])


@register("GatherElements", since=11)
class GatherElements(Kernel):
    """Y[i][j].. = X[..indices[i][j]..] with the index replacing the `axis` coordinate
    (default 0): Y has the shape of `indices`, which has X's rank."""

    min_inputs = max_inputs = 2

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x, indices = inputs
        require_kind(self, indices, INDEX_KINDS, "indices")
        if len(indices.shape) != len(x.shape):
            raise self.fail(f"indices shape {indices.shape} must have the rank of X shape {x.shape}")
        self.axis = normalize_axis(self, int_attr(self, "axis", 0), len(x.shape))
        return [TensorSpec(x.dtype, indices.shape)]

    def run(self, inputs, outputs):
        x, indices = inputs
        idx = checked_indices(self, indices, x.shape[self.axis], f"indices of axis {self.axis}")
        _check_fits(self, idx.shape, x.shape, self.axis)
        np.copyto(outputs[0], np.take_along_axis(x[_fitted(idx.shape, self.axis)], idx, axis=self.axis))


def _check_fits(kernel: Kernel, inner: tuple[int, ...], outer: tuple[int, ...], axis: int) -> None:
    """ModelError unless `inner` fits in `outer` on every axis but `axis`."""
    if any(a > b for i, (a, b) in enumerate(zip(inner, outer, strict=True)) if i != axis):
        raise kernel.fail(f"indices shape {inner} exceeds data shape {outer} outside axis {axis}")


def _fitted(shape: tuple[int, ...], axis: int) -> tuple[slice, ...]:
    """The index cutting data down to `shape` on every axis but `axis`."""
    return tuple(slice(None) if i == axis else slice(0, d) for i, d in enumerate(shape))


@register("GatherND", since=11)
class GatherND(Kernel):
    """Y = slices of X addressed by the last axis of `indices` (k coordinates each), after
    `batch_dims` leading axes shared by X and indices (opset 12): Y's shape is
    indices.shape[:-1] + X.shape[batch_dims + k:]."""

    min_inputs = max_inputs = 2

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x, indices = inputs
        require_kind(self, indices, INDEX_KINDS, "indices")
        b = int_attr(self, "batch_dims", 0) if self.version >= 12 else 0
        require_rank(self, indices, max(b + 1, 1), what="indices")
        k = indices.shape[-1]
        if not 0 <= b < min(len(x.shape), len(indices.shape)) + (b == 0) or x.shape[:b] != indices.shape[:b]:
            raise self.fail(f"batch_dims {b}: X shape {x.shape} and indices shape {indices.shape} "
                            f"must share their first {b} dimensions")
        if b + k > len(x.shape):
            raise self.fail(f"indices address {k} axes but X shape {x.shape} has {len(x.shape) - b} "
                            f"after batch_dims {b}")
        self.b, self.k = b, k
        return [TensorSpec(x.dtype, indices.shape[:-1] + x.shape[b + k :])]

    def run(self, inputs, outputs):
        x, indices = inputs
        b, k = self.b, self.k
        batch = prod(x.shape[:b])
        data = x.reshape((batch,) + x.shape[b:])
        idx = indices.reshape(batch, prod(indices.shape[b:-1]), k)
        coords = [checked_indices(self, idx[..., j], x.shape[b + j], f"indices of axis {b + j}") for j in range(k)]
        rows = np.broadcast_to(np.arange(batch).reshape(batch, 1), idx.shape[:2])
        np.copyto(outputs[0], data[(rows, *coords)].reshape(outputs[0].shape))


_REDUCTIONS = {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}


def _reduction(kernel: Kernel) -> np.ufunc | None:
    """The `reduction` attribute as a ufunc (None for 'none'): add/mul from opset 16,
    max/min from 18."""
    name = str_attr(kernel, "reduction", "none") if kernel.version >= 16 else "none"
    allowed = ("none", "add", "mul", "max", "min") if kernel.version >= 18 else ("none", "add", "mul")
    if name not in allowed:
        raise kernel.fail(f"reduction {name!r} is not one of {', '.join(allowed)}")
    return _REDUCTIONS.get(name)


def _scatter(out: np.ndarray, index: tuple, updates: np.ndarray, ufunc: np.ufunc | None) -> None:
    if ufunc is None:
        out[index] = updates
    else:
        ufunc.at(out, index, updates)


@register("ScatterND", since=11)
class ScatterND(Kernel):
    """Y = a copy of X where the slices addressed by the last axis of `indices` take
    `updates` (shape indices.shape[:-1] + X.shape[k:]), or are combined with them by
    `reduction` (add/mul from opset 16, max/min from 18)."""

    min_inputs = max_inputs = 3

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x, indices, updates = inputs
        require_kind(self, indices, INDEX_KINDS, "indices")
        require_rank(self, indices, 1, what="indices")
        k = indices.shape[-1]
        want = indices.shape[:-1] + x.shape[k:]
        if k > len(x.shape) or updates.shape != want or updates.dtype != x.dtype:
            raise self.fail(f"updates {updates.dtype}{updates.shape} must be {x.dtype}{want} for X shape "
                            f"{x.shape} and indices shape {indices.shape}")
        self.k, self.ufunc = k, _reduction(self)
        return [TensorSpec(x.dtype, x.shape)]

    def run(self, inputs, outputs):
        x, indices, updates = inputs
        out = outputs[0]
        np.copyto(out, x)
        idx = indices.reshape(-1, self.k)
        coords = tuple(checked_indices(self, idx[:, j], x.shape[j], f"indices of axis {j}") for j in range(self.k))
        _scatter(out, coords, updates.reshape((idx.shape[0],) + x.shape[self.k :]), self.ufunc)


@register("ScatterElements", since=11)
class ScatterElements(Kernel):
    """Y = a copy of X where Y[..indices[i][j]..] (the index replacing the `axis` coordinate)
    takes updates[i][j], or is combined with it by `reduction` (add/mul from opset 16,
    max/min from 18). indices and updates have one shape, of X's rank."""

    min_inputs = max_inputs = 3

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x, indices, updates = inputs
        require_kind(self, indices, INDEX_KINDS, "indices")
        if updates.shape != indices.shape or len(indices.shape) != len(x.shape) or updates.dtype != x.dtype:
            raise self.fail(f"indices shape {indices.shape} and updates {updates.dtype}{updates.shape} "
                            f"must agree, with X's rank and dtype ({x.dtype}{x.shape})")
        self.axis = normalize_axis(self, int_attr(self, "axis", 0), len(x.shape))
        self.ufunc = _reduction(self)
        return [TensorSpec(x.dtype, x.shape)]

    def run(self, inputs, outputs):
        x, indices, updates = inputs
        out = outputs[0]
        np.copyto(out, x)
        idx = checked_indices(self, indices, x.shape[self.axis], f"indices of axis {self.axis}")
        _check_fits(self, idx.shape, x.shape, self.axis)
        index = list(np.indices(idx.shape, sparse=True))
        index[self.axis] = idx
        _scatter(out, tuple(index), updates, self.ufunc)


@register("Scatter", since=9)
class Scatter(ScatterElements):
    """Deprecated alias of ScatterElements (opsets 9 and 10), without reduction."""


@register("TensorScatter", since=24)
class TensorScatter(Kernel):
    """(past_cache, update[, write_indices]) -> present_cache: a copy of past_cache where, for
    each batch entry b, the `update` slices along the sequence axis `axis` (default -2; never
    0, the batch axis) land at positions write_indices[b] + 0, 1, ... (write_indices: int,
    shape (batch,), default all 0). mode "linear" (default) needs every write to fit in the
    cache's sequence length; mode "circular" wraps the positions modulo it. update has
    past_cache's shape and dtype except a sequence length no longer than the cache's.
    ModelError for shapes or attributes that disagree, and (when it runs) for a negative
    write index or, in linear mode, one whose update would run past the cache's end, as in
    onnxruntime."""

    min_inputs, max_inputs = 2, 3

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        cache, update = inputs[0], inputs[1]
        rank = len(cache.shape)
        self.axis = normalize_axis(self, int_attr(self, "axis", -2), rank)
        if self.axis == 0:
            raise self.fail(f"axis {self.attr('axis', -2)} is the batch axis of past_cache shape {cache.shape}")
        self.circular = _cache_mode(self) == "circular"
        want = cache.shape[: self.axis] + cache.shape[self.axis + 1 :]
        got = update.shape[: self.axis] + update.shape[self.axis + 1 :]
        if len(update.shape) != rank or got != want or update.shape[self.axis] > cache.shape[self.axis] \
                or update.dtype != cache.dtype:
            raise self.fail(f"update {update.dtype}{update.shape} must match past_cache {cache.dtype}{cache.shape} "
                            f"but for a sequence length (axis {self.axis}) of at most {cache.shape[self.axis]}")
        if has_input(inputs, 2):
            require_kind(self, inputs[2], INDEX_KINDS, "write_indices")
            if inputs[2].shape != cache.shape[:1]:
                raise self.fail(f"write_indices shape {inputs[2].shape} must be {cache.shape[:1]}")
        return [cache]

    def run(self, inputs, outputs):
        cache, update = inputs[0], inputs[1]
        starts = inputs[2] if len(inputs) > 2 and inputs[2] is not None else np.zeros(cache.shape[0], np.int64)
        size, length = cache.shape[self.axis], update.shape[self.axis]
        if starts.size and (starts.min() < 0 or (not self.circular and starts.max() > size - length)):
            limit = "0 or more" if self.circular else f"in [0, {size - length}] (cache length {size}, update {length})"
            raise self.fail(f"write_indices {starts.tolist()} must be {limit}")
        out = outputs[0]
        np.copyto(out, cache)
        if length == 0:
            return
        index: list = [slice(None)] * (cache.ndim - 1)
        for b, start in enumerate(starts.tolist()):
            steps = np.arange(length)
            index[self.axis - 1] = (start % size + steps) % size if self.circular else start + steps
            out[b][tuple(index)] = update[b]


def _cache_mode(kernel: Kernel) -> str:
    mode = str_attr(kernel, "mode", "linear")
    if mode not in ("linear", "circular"):
        raise kernel.fail(f"mode {mode!r} is not one of linear, circular")
    return mode


@register("Compress", since=9)
class Compress(Kernel):
    """Y = the slices of X along `axis` where the 1-D bool `condition` (needed at prepare
    time; it may be shorter than the axis) is true; without `axis`, of X flattened."""

    min_inputs = max_inputs = 2

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = inputs[0]
        condition = self.value_of(values, 1)
        axis = self.attr("axis")
        rank = 1 if axis is None else len(x.shape)
        if axis is not None:
            axis = normalize_axis(self, int_attr(self, "axis"), rank, negative=self.version >= 11)
        dim = prod(x.shape) if axis is None else x.shape[axis]
        if condition.ndim != 1 or condition.size > dim:
            raise self.fail(f"condition shape {condition.shape} must be 1-D and at most {dim} long")
        self.axis = axis
        self.keep = np.flatnonzero(condition.astype(bool))
        shape = (len(self.keep),) if axis is None else x.shape[:axis] + (len(self.keep),) + x.shape[axis + 1 :]
        return [TensorSpec(x.dtype, shape)]

    def run(self, inputs, outputs):
        keep = np.flatnonzero(inputs[1].astype(bool))
        if keep.shape != self.keep.shape:
            raise self.fail(f"condition selects {len(keep)} slices, prepared for {len(self.keep)}")
        x = inputs[0].reshape(-1) if self.axis is None else inputs[0]
        np.take(x, keep, axis=0 if self.axis is None else self.axis, out=outputs[0])


@register("NonZero", since=9)
class NonZero(Kernel):
    """Y = the coordinates of X's non-zero elements, int64 of shape (rank, count), in
    row-major order (a scalar counts as shape (1,)). X is needed at prepare time."""

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = np.atleast_1d(self.value_of(values, 0))
        return [TensorSpec(np.dtype(np.int64), (x.ndim, int(np.count_nonzero(x))))]

    def run(self, inputs, outputs):
        coords = np.nonzero(np.atleast_1d(inputs[0]))
        if len(coords[0]) != outputs[0].shape[1]:
            raise self.fail(f"X has {len(coords[0])} non-zeros, prepared for {outputs[0].shape[1]}")
        np.copyto(outputs[0], np.array(coords, np.int64).reshape(outputs[0].shape))


@register("OneHot", since=9)
class OneHot(Kernel):
    """Y = values[1] where the new axis `axis` (default -1) equals the index, values[0]
    elsewhere. `depth` (input 1, needed at prepare time) is a positive scalar; negative
    indices count from depth (opset 11); indices out of range give an all-off row."""

    min_inputs = max_inputs = 3

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        indices, _, off_on = inputs
        depth_value = self.value_of(values, 1)
        if depth_value.size != 1 or off_on.shape not in ((2,),):
            raise self.fail(f"depth must hold one number and values two, got shapes "
                            f"{depth_value.shape} and {off_on.shape}")
        depth = int(depth_value.reshape(-1)[0])
        if depth <= 0:
            raise self.fail(f"depth must be positive, got {depth}")
        rank = len(indices.shape) + 1
        self.axis = normalize_axis(self, int_attr(self, "axis", -1), rank)
        self.depth = depth
        shape = indices.shape[: self.axis] + (depth,) + indices.shape[self.axis :]
        return [TensorSpec(off_on.dtype, shape)]

    def run(self, inputs, outputs):
        indices, _, off_on = inputs
        idx = np.expand_dims(indices.astype(np.int64), self.axis)
        idx = np.where(idx < 0, idx + self.depth, idx)
        positions = np.arange(self.depth).reshape([-1 if i == self.axis else 1 for i in range(idx.ndim)])
        np.copyto(outputs[0], np.where(idx == positions, off_on[1], off_on[0]))


@register("ReverseSequence", since=10)
class ReverseSequence(Kernel):
    """Y = X with the first sequence_lens[b] steps along `time_axis` (default 0) reversed
    in each batch entry b along `batch_axis` (default 1); X has rank >= 2."""

    min_inputs = max_inputs = 2

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x, lens = inputs
        require_rank(self, x, 2, what="input")
        require_kind(self, lens, INDEX_KINDS, "sequence_lens")
        self.batch_axis = int_attr(self, "batch_axis", 1)
        self.time_axis = int_attr(self, "time_axis", 0)
        if {self.batch_axis, self.time_axis} != {0, 1}:
            raise self.fail(f"batch_axis {self.batch_axis} and time_axis {self.time_axis} must be 0 and 1")
        if lens.shape != (x.shape[self.batch_axis],):
            raise self.fail(f"sequence_lens shape {lens.shape} must be ({x.shape[self.batch_axis]},)")
        return [TensorSpec(x.dtype, x.shape)]

    def run(self, inputs, outputs):
        x, lens = inputs
        steps = x.shape[self.time_axis]
        if lens.size and (lens.min() < 0 or lens.max() > steps):
            raise self.fail(f"sequence_lens {lens.tolist()} must lie in [0, {steps}]")
        out = outputs[0]
        np.copyto(out, x)
        index: list = [slice(None)] * x.ndim
        for b, n in enumerate(lens.tolist()):
            index[self.batch_axis] = b
            index[self.time_axis] = slice(0, n)
            out[tuple(index)] = np.flip(x[tuple(index)], axis=0)
