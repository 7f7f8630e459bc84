"""Reductions along axes: ReduceSum/Mean/Max/Min/Prod/L1/L2/LogSum/LogSumExp/SumSquare, ArgMax
and ArgMin, and the cumulative (running) reductions CumSum and CumProd.

A reduction over an empty set gives the operation's identity: 0 for sums and norms, 1 for
products, -inf / +inf for Max / Min (the dtype's extreme for ints, False / True for bool),
-inf for the log sums, and nan for a mean.
"""

from __future__ import annotations

import math

import numpy as np

from edgerun.runtime.kernels.attrs import (
    NUMERIC_KINDS,
    flag_attr,
    int_attr,
    int_list,
    ints_attr,
    normalize_axis,
    require_kind,
)
from edgerun.runtime.kernels.base import Kernel, TensorSpec
from edgerun.runtime.kernels.registry import register


def _accumulator(dtype: np.dtype) -> np.dtype:
    """The dtype sums of `dtype` accumulate in: float32 for float16, else `dtype` (ints wrap)."""
    return np.dtype(np.float32) if dtype == np.float16 else dtype


class _Reduce(Kernel):
    """(data[, axes]) -> reduced: axes come from attribute `axes` before opset `axes_input_since`
    and from the optional input from then on, where `noop_with_empty_axes`=1 makes empty axes
    reduce nothing (only the elementwise part applies: ReduceSumSquare gives X**2, as in onnxruntime)
    instead of every axis. `keepdims` (default 1) keeps reduced axes as 1. Subclasses define
    `reduce(x, axes)`, returning the result with the reduced axes kept (axes may be empty)."""

    axes_input_since: int = 18
    kinds: str = NUMERIC_KINDS

    def prepare(self, inputs, values):
        from_input = self.version >= self.axes_input_since
        self.max_inputs = 2 if from_input else 1
        self.check_arity(inputs)
        x = inputs[0]
        require_kind(self, x, self.kinds, "data")
        keep = flag_attr(self, "keepdims", 1)
        if from_input:
            has_axes = len(inputs) > 1 and inputs[1] is not None
            axes = int_list(self, self.value_of(values, 1), "axes") if has_axes else ()
            noop = flag_attr(self, "noop_with_empty_axes")
        else:
            axes, noop = ints_attr(self, "axes") or (), False
        rank = len(x.shape)
        self.axes = tuple(sorted({normalize_axis(self, a, rank) for a in axes}))
        if len(self.axes) != len(axes):
            raise self.fail(f"axes {list(axes)} repeat an axis")
        if not axes and not noop:
            self.axes = tuple(range(rank))
        shape = tuple(1 if i in self.axes else d for i, d in enumerate(x.shape) if keep or i not in self.axes)
        return [TensorSpec(x.dtype, shape)]

    def run(self, inputs, outputs):
        out = outputs[0]
        with np.errstate(all="ignore"):
            result = self.reduce(inputs[0], self.axes)
        np.copyto(out, np.reshape(result, out.shape), casting="unsafe")

    def reduce(self, x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
        raise NotImplementedError


@register("ReduceSum", since=1)
class ReduceSum(_Reduce):
    axes_input_since = 13

    def reduce(self, x, axes):
        return np.sum(x, axis=axes, keepdims=True, dtype=_accumulator(x.dtype))


@register("ReduceMean", since=1)
class ReduceMean(_Reduce):
    def reduce(self, x, axes):
        count = math.prod(x.shape[a] for a in axes)
        total = np.add.reduce(x, axis=axes, keepdims=True, dtype=np.float32 if x.dtype == np.float16 else np.float64)
        return total / count if count else np.full(total.shape, np.nan)


@register("ReduceProd", since=1)
class ReduceProd(_Reduce):
    def reduce(self, x, axes):
        return np.prod(x, axis=axes, keepdims=True, dtype=x.dtype)


@register("ReduceMax", since=1)
class ReduceMax(_Reduce):
    kinds = NUMERIC_KINDS + "b"

    def reduce(self, x, axes):
        return np.max(x, axis=axes, keepdims=True, initial=_lowest(x.dtype))


@register("ReduceMin", since=1)
class ReduceMin(_Reduce):
    kinds = NUMERIC_KINDS + "b"

    def reduce(self, x, axes):
        return np.min(x, axis=axes, keepdims=True, initial=_highest(x.dtype))


def _lowest(dtype: np.dtype) -> float | int | bool:
    """The identity of max for `dtype`: -inf, the int minimum or False."""
    return -np.inf if dtype.kind == "f" else False if dtype.kind == "b" else np.iinfo(dtype).min


def _highest(dtype: np.dtype) -> float | int | bool:
    """The identity of min for `dtype`: inf, the int maximum or True."""
    return np.inf if dtype.kind == "f" else True if dtype.kind == "b" else np.iinfo(dtype).max


@register("ReduceL1", since=1)
class ReduceL1(_Reduce):
    def reduce(self, x, axes):
        return np.sum(np.abs(x), axis=axes, keepdims=True, dtype=_accumulator(x.dtype))


@register("ReduceL2", since=1)
class ReduceL2(_Reduce):
    def reduce(self, x, axes):
        wide = x.astype(_accumulator(x.dtype) if x.dtype.kind == "f" else np.float64)
        return np.sqrt(np.sum(wide * wide, axis=axes, keepdims=True))


@register("ReduceSumSquare", since=1)
class ReduceSumSquare(_Reduce):
    def reduce(self, x, axes):
        wide = x.astype(_accumulator(x.dtype))
        return np.sum(wide * wide, axis=axes, keepdims=True)


@register("ReduceLogSum", since=1)
class ReduceLogSum(_Reduce):
    def reduce(self, x, axes):
        wide = _accumulator(x.dtype) if x.dtype.kind == "f" else np.float64
        return np.log(np.sum(x, axis=axes, keepdims=True, dtype=wide))


@register("ReduceLogSumExp", since=1)
class ReduceLogSumExp(_Reduce):
    """log(sum(exp(x))), computed as m + log(sum(exp(x - m))) with m the finite maximum."""

    def reduce(self, x, axes):
        wide = x.astype(_accumulator(x.dtype) if x.dtype.kind == "f" else np.float64)
        peak = np.max(wide, axis=axes, keepdims=True, initial=-np.inf)
        peak = np.where(np.isfinite(peak), peak, 0).astype(wide.dtype)
        return peak + np.log(np.sum(np.exp(wide - peak), axis=axes, keepdims=True))


class _ArgReduce(Kernel):
    """data -> int64 index of the first (or, with select_last_index=1, last) extreme along `axis`
    (default 0); `keepdims` (default 1) keeps that axis as 1. The axis must not be empty."""

    pick: staticmethod

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = inputs[0]
        require_kind(self, x, NUMERIC_KINDS, "data")
        self.axis = normalize_axis(self, int_attr(self, "axis", 0), len(x.shape), negative=self.version >= 11)
        self.last = flag_attr(self, "select_last_index")
        if x.shape[self.axis] == 0:
            raise self.fail(f"axis {self.axis} of data shape {x.shape} is empty: no extreme to select")
        keep = flag_attr(self, "keepdims", 1)
        shape = tuple(1 if i == self.axis else d for i, d in enumerate(x.shape) if keep or i != self.axis)
        return [TensorSpec(np.dtype(np.int64), shape)]

    def run(self, inputs, outputs):
        x = inputs[0]
        if self.last:
            index = x.shape[self.axis] - 1 - self.pick(np.flip(x, self.axis), axis=self.axis, keepdims=True)
        else:
            index = self.pick(x, axis=self.axis, keepdims=True)
        np.copyto(outputs[0], index.reshape(outputs[0].shape))


@register("ArgMax", since=1)
class ArgMax(_ArgReduce):
    pick = staticmethod(np.argmax)


@register("ArgMin", since=1)
class ArgMin(_ArgReduce):
    pick = staticmethod(np.argmin)


class _Scan(Kernel):
    """(x, axis) -> running `ufunc` along axis (a scalar int input, read at run time);
    exclusive=1 leaves each element out of its own result (the first gets `identity`),
    reverse=1 runs from the end."""

    min_inputs = max_inputs = 2
    ufunc: np.ufunc
    identity: int

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x, axis = inputs
        require_kind(self, x, NUMERIC_KINDS, "x")
        require_kind(self, axis, "iu", "axis")
        if axis.size != 1 or len(axis.shape) > 1:
            raise self.fail(f"axis: expected a scalar, got shape {axis.shape}")
        self.exclusive = flag_attr(self, "exclusive")
        self.reverse = flag_attr(self, "reverse")
        if values[1] is not None:
            normalize_axis(self, int(values[1].reshape(())), len(x.shape))
        return [x]

    def run(self, inputs, outputs):
        x, out = inputs[0], outputs[0]
        axis = normalize_axis(self, int(inputs[1].reshape(())), x.ndim)
        if self.reverse:
            x, out = np.flip(x, axis), np.flip(out, axis)
        n = x.shape[axis]
        if not self.exclusive:
            self.ufunc.accumulate(x, axis=axis, dtype=x.dtype, out=out)
        elif n:
            head = [slice(None)] * x.ndim
            head[axis] = slice(0, 1)
            out[tuple(head)] = self.identity
            head[axis], tail = slice(1, n), [slice(None)] * x.ndim
            tail[axis] = slice(0, n - 1)
            self.ufunc.accumulate(x[tuple(tail)], axis=axis, dtype=x.dtype, out=out[tuple(head)])


@register("CumSum", since=11)
class CumSum(_Scan):
    ufunc = np.add
    identity = 0


@register("CumProd", since=26)
class CumProd(_Scan):
    ufunc = np.multiply
    identity = 1
