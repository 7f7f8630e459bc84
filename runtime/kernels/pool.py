"""Pooling kernels (ONNX semantics, (N, C, *spatial)): MaxPool, AveragePool and the global pools,
each followed by its gradient kernel (edgerun domain, for training).

Windowed pools pad the input into scratch (-inf / 0) and reduce one kernel tap
at a time with whole-array ufunc calls, which beats reducing a strided window
view for the small kernels CNNs use.
"""

from __future__ import annotations

import functools
import itertools

import numpy as np

from runtime.kernels.attrs import FLOAT_KINDS, flag_attr, ints_attr, prod, require_kind, require_rank
from runtime.kernels.base import Kernel, TensorSpec
from runtime.kernels.registry import register
from runtime.kernels.spatial import (
    PaddedInput,
    TapGradient,
    Window,
    require_output_grad,
    scratch,
    window_from_attrs,
)


class _WindowPool(Kernel):
    kinds = FLOAT_KINDS

    def _window(self, x: TensorSpec) -> Window:
        require_kind(self, x, self.kinds, "X")
        require_rank(self, x, 3, what="X (N, C, *spatial)")
        kernel_shape = ints_attr(self, "kernel_shape")
        if kernel_shape is None:
            raise self.fail("attribute 'kernel_shape' is required")
        window = window_from_attrs(
            self, x.shape, kernel_shape,
            ceil_mode=flag_attr(self, "ceil_mode"), pads_below_kernel=True,
        )
        self.taps = window.taps()
        return window


@register("MaxPool", since=1)
class MaxPool(_WindowPool):
    """Y = max over each window (padding never wins). Prepare also describes the optional
    Indices output (int64 flat index into X; column-major within each plane when
    storage_order=1); run computes it only when given a second output."""

    kinds = FLOAT_KINDS + "iu"  # int8/uint8 from opset 12

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = inputs[0]
        self.window = self._window(x)
        self.column_major = flag_attr(self, "storage_order")
        fill = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
        self.pad = PaddedInput(self.window, fill, "pool.pad")
        self.tap_indices: list[np.ndarray] | None = None  # built on first use
        y = TensorSpec(x.dtype, x.shape[:2] + self.window.out_shape)
        return [y, TensorSpec(np.dtype(np.int64), y.shape)]

    def run(self, inputs, outputs):
        buf, out = self.pad(inputs[0]), outputs[0]
        if len(outputs) > 1:
            self._run_with_indices(buf, out, outputs[1])
            return
        np.copyto(out, buf[self.taps[0]])
        for tap in self.taps[1:]:
            np.maximum(out, buf[tap], out=out)

    def _run_with_indices(self, buf: np.ndarray, out: np.ndarray, indices: np.ndarray) -> None:
        if self.tap_indices is None:
            self.tap_indices = _tap_indices(self.window, self.column_major)
        np.copyto(out, buf[self.taps[0]])
        np.copyto(indices, self.tap_indices[0])
        for tap, tap_index in zip(self.taps[1:], self.tap_indices[1:], strict=True):
            values = buf[tap]
            better = values > out  # strict: the first maximum in window order wins
            np.copyto(out, values, where=better)
            np.copyto(indices, tap_index, where=better)
        n, c = out.shape[:2]
        planes = np.arange(n * c, dtype=np.int64).reshape((n, c) + (1,) * (out.ndim - 2))
        indices += planes * prod(self.window.in_shape)


@register("MaxPoolGrad", since=1, domain="edgerun")
class MaxPoolGrad(_WindowPool):
    """dX of Y = MaxPool(X) from (dY, X); the node carries the forward MaxPool's attributes.
    Each output's gradient goes to the first maximum of its window in window (row-major)
    order, as numpy's argmax picks, and is dropped when that maximum is padding.

    Prepare tabulates, per output and tap, the flat position it reads in one padded plane,
    and where each output's window starts in the whole padded input; run gathers every window
    with the table, takes one argmax per window and adds dY at the winners (np.add.at, so
    overlapping windows that pick the same input add up)."""

    min_inputs = max_inputs = 2

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        dy, x = inputs
        window = self._window(x)
        require_output_grad(self, dy, x, x.shape[:2] + window.out_shape)
        self.pad = PaddedInput(window, -np.inf, "pool.pad")
        self.scatter = TapGradient(window, "pool.dpad")
        self.plane_size = prod(window.padded_shape)
        plane = np.arange(self.plane_size).reshape(window.padded_shape)
        self.table = np.stack([plane[tap].ravel() for tap in self.taps], axis=1)  # (out, K)
        self.shifts = np.asarray(window.tap_shifts())  # each tap's position in its window
        self.starts = self.table[:, 0] + np.arange(prod(x.shape[:2]))[:, None] * self.plane_size
        return [x]

    def run(self, inputs, outputs):
        dy, x = inputs
        dx = outputs[0]
        planes = self.pad(x).reshape(len(self.starts), self.plane_size)
        windows = scratch("pool.windows", planes.shape[:1] + self.table.shape, x.dtype)
        np.take(planes, self.table, axis=1, out=windows)
        targets = np.take(self.shifts, np.argmax(windows, axis=2))
        targets += self.starts  # now flat positions in the padded input
        acc = self.scatter.start(dx)
        np.add.at(acc.reshape(-1), targets.reshape(-1), dy.reshape(-1))
        self.scatter.finish(acc, dx)


def _tap_indices(window: Window, column_major: bool) -> list[np.ndarray]:
    """Per kernel tap, the flat index within one input plane that each output reads."""
    starts = [
        np.arange(o) * s - b
        for o, s, b in zip(window.out_shape, window.strides, window.pads_begin, strict=True)
    ]
    result = []
    for offsets in itertools.product(*(range(k) for k in window.kernel)):
        coords = [
            np.clip(start + k * d, 0, n - 1)
            for start, k, d, n in zip(starts, offsets, window.dilations, window.in_shape, strict=True)
        ]
        result.append(np.ravel_multi_index(
            np.ix_(*coords), window.in_shape, order="F" if column_major else "C"
        ).astype(np.int64))
    return result


@register("AveragePool", since=1)
class AveragePool(_WindowPool):
    """Y = mean over each window; padding counts only with count_include_pad=1 and never
    beyond the explicit pads (ceil_mode overhang is not counted)."""

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = inputs[0]
        window = self._window(x)
        include_pad = flag_attr(self, "count_include_pad")
        self.pad = PaddedInput(window, 0.0, "pool.pad")
        self.divisor = _window_counts(window, include_pad).astype(x.dtype)
        return [TensorSpec(x.dtype, x.shape[:2] + window.out_shape)]

    def run(self, inputs, outputs):
        buf, out = self.pad(inputs[0]), outputs[0]
        np.copyto(out, buf[self.taps[0]])
        for tap in self.taps[1:]:
            np.add(out, buf[tap], out=out)
        np.divide(out, self.divisor, out=out)


@register("AveragePoolGrad", since=1, domain="edgerun")
class AveragePoolGrad(_WindowPool):
    """dX of Y = AveragePool(X) from (dY, X), with the forward's attributes (count_include_pad
    and ceil_mode included): each output spreads dY / (its divisor) over its window."""

    min_inputs = max_inputs = 2

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        dy, x = inputs
        window = self._window(x)
        require_output_grad(self, dy, x, x.shape[:2] + window.out_shape)
        self.divisor = _window_counts(window, flag_attr(self, "count_include_pad")).astype(x.dtype)
        self.scatter = TapGradient(window, "pool.dpad")
        return [x]

    def run(self, inputs, outputs):
        dy, dx = inputs[0], outputs[0]
        share = np.divide(dy, self.divisor, out=scratch("pool.share", dy.shape, dy.dtype))
        acc = self.scatter.start(dx)
        for k in range(len(self.taps)):
            self.scatter.add(acc, k, share)
        self.scatter.finish(acc, dx)


def _window_counts(window: Window, include_pad: bool) -> np.ndarray:
    """How many positions of each output's window are counted, shape `window.out_shape`."""
    per_axis = []
    for n, k, s, d, b, e, o in zip(
        window.in_shape, window.kernel, window.strides, window.dilations,
        window.pads_begin, window.pads_end, window.out_shape, strict=True,
    ):
        lo, hi = (-b, n + e) if include_pad else (0, n)
        coords = np.arange(o)[:, None] * s - b + np.arange(k)[None, :] * d
        per_axis.append(((coords >= lo) & (coords < hi)).sum(axis=1))
    counts = functools.reduce(np.multiply.outer, per_axis)
    return np.maximum(counts, 1)


class _GlobalPool(Kernel):
    def prepare(self, inputs, values):
        self.check_arity(inputs)
        return [self._output(inputs[0])]

    def _output(self, x: TensorSpec) -> TensorSpec:
        require_kind(self, x, FLOAT_KINDS, "X")
        require_rank(self, x, 3, what="X (N, C, *spatial)")
        if 0 in x.shape[2:]:
            raise self.fail(f"X shape {x.shape} has an empty spatial axis")
        self.axes = tuple(range(2, len(x.shape)))
        return TensorSpec(x.dtype, x.shape[:2] + (1,) * len(self.axes))


@register("GlobalAveragePool", since=1)
class GlobalAveragePool(_GlobalPool):
    def run(self, inputs, outputs):
        np.mean(inputs[0], axis=self.axes, keepdims=True, out=outputs[0])


@register("GlobalMaxPool", since=1)
class GlobalMaxPool(_GlobalPool):
    def run(self, inputs, outputs):
        np.max(inputs[0], axis=self.axes, keepdims=True, out=outputs[0])


@register("GlobalAveragePoolGrad", since=1, domain="edgerun")
class GlobalAveragePoolGrad(_GlobalPool):
    """dX of Y = GlobalAveragePool(X) from (dY, X): dY / (spatial size), broadcast over space."""

    min_inputs = max_inputs = 2

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        dy, x = inputs
        require_output_grad(self, dy, x, self._output(x).shape)
        self.count = prod(x.shape[2:])
        return [x]

    def run(self, inputs, outputs):
        np.divide(inputs[0], self.count, out=outputs[0])
