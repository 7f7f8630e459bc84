"""Windowed pooling kernels (ONNX semantics, (N, C, *spatial)): MaxPool and AveragePool, each
followed by its gradient kernel (edgerun domain, for training), LpPool, MaxUnpool (MaxPool's
inverse) and RoiAlign (pooling over regions of interest). The global pools live in
global_pool.py.

Windowed pools pad the input into scratch (-inf / 0) and reduce one kernel tap
at a time with whole-array ufunc calls, which beats reducing a strided window
view for the small kernels CNNs use.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass

import numpy as np

from edgerun.runtime.errors import InputError, WorkBudgetError
from edgerun.runtime.kernels.attrs import (
    FLOAT_KINDS,
    flag_attr,
    float_attr,
    int_attr,
    ints_attr,
    prod,
    require_kind,
    require_rank,
    str_attr,
)
from edgerun.runtime.kernels.base import Kernel, TensorSpec
from edgerun.runtime.kernels.registry import register
from edgerun.runtime.kernels.spatial import (
    Index,
    PaddedInput,
    TapGradient,
    Window,
    require_output_grad,
    scratch,
    window_from_attrs,
)


@dataclass(frozen=True)
class PoolParams:
    """The window a pool's prepare works out for X's shape, read by the pool's run and, for
    MaxPool, the numba fast path (devices/numba_spatial.py)."""

    window: Window  # the sliding-window geometry over X's spatial axes
    taps: tuple[Index, ...]  # per kernel tap, its strided slice of the padded input (Window.taps)


class _WindowPool(Kernel):
    kinds = FLOAT_KINDS

    def _prepare_window(self, x: TensorSpec) -> PoolParams:
        """Validate X and the window attributes; sets and returns `self.params`."""
        require_kind(self, x, self.kinds, "X")
        require_rank(self, x, 3, what="X (N, C, *spatial)")
        kernel_shape = ints_attr(self, "kernel_shape")
        if kernel_shape is None:
            raise self.fail("attribute 'kernel_shape' is required")
        window = window_from_attrs(
            self, x.shape, kernel_shape,
            ceil_mode=flag_attr(self, "ceil_mode"), pads_below_kernel=True,
        )
        self.params = PoolParams(window, tuple(window.taps()))
        return self.params


@register("MaxPool", since=1)
class MaxPool(_WindowPool):
    """Y = max over each window (padding never wins). Prepare also describes the optional
    Indices output (int64 flat index into X; column-major within each plane when
    storage_order=1); run computes it only when given a second output."""

    kinds = FLOAT_KINDS + "iu"  # int8/uint8 from opset 12

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = inputs[0]
        window = self._prepare_window(x).window
        self.column_major = flag_attr(self, "storage_order")
        fill = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
        self.pad = PaddedInput(window, fill, "pool.pad")
        self.tap_indices: list[np.ndarray] | None = None  # built on first use
        y = TensorSpec(x.dtype, x.shape[:2] + window.out_shape)
        return [y, TensorSpec(np.dtype(np.int64), y.shape)]

    def run(self, inputs, outputs):
        buf, out = self.pad(inputs[0]), outputs[0]
        if len(outputs) > 1:
            self._run_with_indices(buf, out, outputs[1])
            return
        np.copyto(out, buf[self.params.taps[0]])
        for tap in self.params.taps[1:]:
            np.maximum(out, buf[tap], out=out)

    def _run_with_indices(self, buf: np.ndarray, out: np.ndarray, indices: np.ndarray) -> None:
        if self.tap_indices is None:
            self.tap_indices = _tap_indices(self.params.window, self.column_major)
        np.copyto(out, buf[self.params.taps[0]])
        np.copyto(indices, self.tap_indices[0])
        for tap, tap_index in zip(self.params.taps[1:], self.tap_indices[1:], strict=True):
            values = buf[tap]
            better = values > out  # strict: the first maximum in window order wins
            np.copyto(out, values, where=better)
            np.copyto(indices, tap_index, where=better)
        n, c = out.shape[:2]
        planes = np.arange(n * c, dtype=np.int64).reshape((n, c) + (1,) * (out.ndim - 2))
        indices += planes * prod(self.params.window.in_shape)


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
        window = self._prepare_window(x).window
        require_output_grad(self, dy, x, x.shape[:2] + window.out_shape)
        self.pad = PaddedInput(window, -np.inf, "pool.pad")
        self.scatter = TapGradient(window, "pool.dpad")
        self.plane_size = prod(window.padded_shape)
        plane = np.arange(self.plane_size).reshape(window.padded_shape)
        self.table = np.stack([plane[tap].ravel() for tap in self.params.taps], axis=1)  # (out, K)
        self.shifts = np.asarray(window.tap_shifts())  # each tap's position in its window
        self.starts = self.table[:, 0] + np.arange(prod(x.shape[:2]))[:, None] * self.plane_size
        # the part of X the windows reach (PaddedInput returns X whole when it needs no padding,
        # which is more than the windows reach when the last window stops short of X's end)
        self.reached = (Ellipsis,) + tuple(slice(0, p) for p in window.padded_shape)
        return [x]

    def run(self, inputs, outputs):
        dy, x = inputs
        dx = outputs[0]
        planes = self.pad(x)[self.reached].reshape(len(self.starts), self.plane_size)
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
        window = self._prepare_window(x).window
        include_pad = flag_attr(self, "count_include_pad")
        self.pad = PaddedInput(window, 0.0, "pool.pad")
        self.divisor = _window_counts(window, include_pad).astype(x.dtype)
        return [TensorSpec(x.dtype, x.shape[:2] + window.out_shape)]

    def run(self, inputs, outputs):
        buf, out = self.pad(inputs[0]), outputs[0]
        np.copyto(out, buf[self.params.taps[0]])
        for tap in self.params.taps[1:]:
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
        window = self._prepare_window(x).window
        require_output_grad(self, dy, x, x.shape[:2] + window.out_shape)
        self.divisor = _window_counts(window, flag_attr(self, "count_include_pad")).astype(x.dtype)
        self.scatter = TapGradient(window, "pool.dpad")
        return [x]

    def run(self, inputs, outputs):
        dy, dx = inputs[0], outputs[0]
        share = np.divide(dy, self.divisor, out=scratch("pool.share", dy.shape, dy.dtype))
        acc = self.scatter.start(dx)
        for k in range(len(self.params.taps)):
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


def p_attr(kernel: Kernel) -> float:
    """The `p` of an Lp pool (default 2; a float attribute in opset 1, an int after)."""
    value = kernel.attr("p", 2)
    if not isinstance(value, int | float | np.integer | np.floating) or not value > 0:
        raise kernel.fail(f"attribute 'p' must be a number > 0, got {value!r}")
    return float(value)


@register("LpPool", since=1)
class LpPool(_WindowPool):
    """Y = (sum over each window of |X|^p)^(1/p); padding adds nothing."""

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = inputs[0]
        window = self._prepare_window(x).window
        self.p = p_attr(self)
        self.pad = PaddedInput(window, 0.0, "pool.pad")
        return [TensorSpec(x.dtype, x.shape[:2] + window.out_shape)]

    def run(self, inputs, outputs):
        powered = np.abs(self.pad(inputs[0])) ** self.p
        total = np.zeros(outputs[0].shape, np.float64)
        for tap in self.params.taps:
            total += powered[tap]
        np.copyto(outputs[0], total ** (1 / self.p), casting="unsafe")


@register("MaxUnpool", since=9)
class MaxUnpool(Kernel):
    """Y = zeros with X's values at the flat positions I (MaxPool's Indices output) of the
    unpooled shape (N, C, *spatial), spatial = (in - 1) * stride + kernel - pads_begin - pads_end.
    With output_shape (a run-time value), Y has that shape and holds the unpooled tensor at its
    start (zeros beyond; cropped where smaller), as the ONNX reference does. An index outside
    the unpooled shape is an InputError; repeated indices keep the last value written."""

    min_inputs, max_inputs = 2, 3

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x, indices = inputs[0], inputs[1]
        require_kind(self, x, FLOAT_KINDS + "iu", "X")
        require_rank(self, x, 3, what="X (N, C, *spatial)")
        require_kind(self, indices, "iu", "I")
        if indices.shape != x.shape:
            raise self.fail(f"I shape {indices.shape} differs from X shape {x.shape}")
        self.unpooled = shape = x.shape[:2] + self._default_spatial(x.shape[2:])
        if len(inputs) > 2 and inputs[2] is not None:
            shape = tuple(int(d) for d in self.value_of(values, 2).reshape(-1))
            if len(shape) != len(x.shape) or shape[:2] != x.shape[:2] or min(shape) < 0:
                raise self.fail(f"output_shape {shape} does not fit X shape {x.shape}")
        self.common = tuple(slice(0, min(a, b)) for a, b in zip(shape, self.unpooled, strict=True))
        return [TensorSpec(x.dtype, shape)]

    def _default_spatial(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        n = len(in_shape)
        kernel = ints_attr(self, "kernel_shape")
        strides = ints_attr(self, "strides") or (1,) * n
        pads = ints_attr(self, "pads") or (0,) * (2 * n)
        if kernel is None or len(kernel) != n or len(strides) != n or len(pads) != 2 * n:
            raise self.fail(f"kernel_shape {kernel}, strides {strides}, pads {pads} invalid for {n} spatial axes")
        shape = tuple((i - 1) * s + k - b - e
                      for i, s, k, b, e in zip(in_shape, strides, kernel, pads[:n], pads[n:], strict=True))
        if min(shape) < 1:
            raise self.fail(f"output spatial shape {shape} is empty")
        return shape

    def run(self, inputs, outputs):
        out = outputs[0]
        unpooled = out if out.shape == self.unpooled else np.zeros(self.unpooled, out.dtype)
        flat = inputs[1].reshape(-1).astype(np.int64)
        if flat.size and (flat.min() < 0 or flat.max() >= unpooled.size):
            raise InputError(f"node {self.name!r} (MaxUnpool): index out of range for shape {self.unpooled}")
        unpooled.fill(0)
        unpooled.reshape(-1)[flat] = inputs[0].reshape(-1)
        if unpooled is not out:
            out.fill(0)
            out[self.common] = unpooled[self.common]


@register("RoiAlign", since=10)
class RoiAlign(Kernel):
    """Region-of-interest pooling with bilinear samples (ONNX / Mask R-CNN semantics).

    X (N, C, H, W), rois (R, 4) as (x1, y1, x2, y2) scaled by spatial_scale, batch_indices (R,).
    Each ROI splits into output_height x output_width bins, each sampled on a grid of
    sampling_ratio^2 points (adaptive ceil(bin size) when 0); a sample reads X bilinearly (0 when
    more than one pixel off the input) and a bin averages them (mode avg) or takes the largest
    weighted corner value (mode max). coordinate_transformation_mode half_pixel (the opset-16
    default) shifts coordinates by -0.5; output_half_pixel (opset 10) does not and makes ROIs at
    least 1 pixel. A batch index outside X, or a ROI coordinate that is not finite, is an InputError.

    The adaptive grid follows the ROI *values*, so the work does too: quadratic in the ROI's side,
    whatever the image size (an ROI past the image still samples the zeros outside it, and
    clamping the grid would change the average). A run therefore counts its samples,
    R x C x out_h x out_w x grid_h x grid_w, from the actual rois before sampling, and raises
    WorkBudgetError when they pass the plan's work budget (context.work_budget). Samples are
    made and read in blocks of at most about _BLOCK values, so memory stays bounded either way."""

    min_inputs = max_inputs = 3
    _BLOCK = 1 << 18  # sample values (C x rows x out_w x grid_w) read at once

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x, rois, indices = inputs
        require_kind(self, x, FLOAT_KINDS, "X")
        require_rank(self, x, 4, 4, what="X (N, C, H, W)")
        require_kind(self, indices, "iu", "batch_indices")
        r = rois.shape[0] if rois.shape else -1
        if rois.dtype != x.dtype or len(rois.shape) != 2 or rois.shape[1] != 4 or indices.shape != (r,):
            raise self.fail(f"rois {rois.dtype} {rois.shape} must be {x.dtype} (R, 4) with batch_indices (R,), "
                            f"got {indices.shape}")
        default = "half_pixel" if self.version >= 16 else "output_half_pixel"
        self.half_pixel = str_attr(self, "coordinate_transformation_mode", default) == "half_pixel"
        self.mode = str_attr(self, "mode", "avg")
        if self.mode not in ("avg", "max"):
            raise self.fail(f"mode {self.mode!r} must be avg or max")
        self.out_h, self.out_w = int_attr(self, "output_height", 1), int_attr(self, "output_width", 1)
        self.ratio = int_attr(self, "sampling_ratio", 0)
        self.scale = float_attr(self, "spatial_scale", 1.0)
        if self.out_h < 1 or self.out_w < 1 or self.ratio < 0 or 0 in x.shape[2:]:
            raise self.fail(f"output size ({self.out_h}, {self.out_w}), sampling_ratio {self.ratio} "
                            f"or X shape {x.shape} invalid")
        return [TensorSpec(x.dtype, (r, x.shape[1], self.out_h, self.out_w))]

    def regions(self, rois: np.ndarray) -> list[tuple[float, float, float, float, int, int]]:
        """Per ROI: (start_h, start_w, bin_h, bin_w, grid_h, grid_w), as the ONNX reference
        works them out. InputError for a coordinate that is not finite."""
        boxes = rois.astype(np.float64) * self.scale - (0.5 if self.half_pixel else 0.0)
        if not np.isfinite(boxes).all():
            raise InputError(f"node {self.name!r} (RoiAlign): rois must be finite")
        regions = []
        for start_w, start_h, end_w, end_h in boxes.tolist():
            size_h, size_w = end_h - start_h, end_w - start_w
            if not self.half_pixel:
                size_h, size_w = max(size_h, 1.0), max(size_w, 1.0)
            bin_h, bin_w = size_h / self.out_h, size_w / self.out_w
            grid_h = self.ratio or max(1, math.ceil(bin_h))
            grid_w = self.ratio or max(1, math.ceil(bin_w))
            regions.append((start_h, start_w, bin_h, bin_w, grid_h, grid_w))
        return regions

    def run(self, inputs, outputs):
        x, rois, indices = inputs
        if indices.size and (indices.min() < 0 or indices.max() >= x.shape[0]):
            raise InputError(f"node {self.name!r} (RoiAlign): batch index outside the {x.shape[0]} images")
        regions = self.regions(rois)
        per_sample = x.shape[1] * self.out_h * self.out_w
        work = per_sample * sum(gh * gw for *_, gh, gw in regions)
        budget = getattr(self.context, "work_budget", None)
        if budget is not None and work > budget:
            raise WorkBudgetError(
                f"node {self.name!r} (RoiAlign): its rois need {work} bilinear samples "
                f"(R x C x output_height x output_width x sampling grid), over the work budget of {budget}")
        for r, (start_h, start_w, bin_h, bin_w, gh, gw) in enumerate(regions):
            plane = x[int(indices[r])].astype(np.float64)
            outputs[0][r] = self._pool(plane, (start_h, bin_h, gh), (start_w, bin_w, gw))

    def _samples(self, start: float, bin_size: float, grid: int, size: int, bins: range, cells: range):
        """Along one axis, samples `cells` of bins `bins`: (low, high, weight of low, weight of
        high), each (len(bins), len(cells)); weights are 0 for samples more than one pixel off."""
        pos = (start + np.arange(bins.start, bins.stop)[:, None] * bin_size
               + (np.arange(cells.start, cells.stop)[None, :] + 0.5) * bin_size / grid)
        valid = (pos >= -1.0) & (pos <= size)
        pos = np.maximum(pos, 0)
        low = np.minimum(pos.astype(np.int64), size - 1)
        high = np.minimum(low + 1, size - 1)
        pos = np.where(low >= size - 1, low, pos)
        frac = pos - low
        return low, high, np.where(valid, 1 - frac, 0), np.where(valid, frac, 0)

    def _pool(self, plane: np.ndarray, y_axis: tuple, x_axis: tuple) -> np.ndarray:
        """(C, out_h, out_w) from one image (C, H, W); each axis is (start, bin size, grid).
        Reads blocks of bin rows x grid rows (all of x at once, or x's bins in blocks too)."""
        channels, height, width = plane.shape
        gh, gw = y_axis[2], x_axis[2]
        avg = self.mode == "avg"
        out = np.zeros((channels, self.out_h, self.out_w)) if avg else np.full((channels, self.out_h, self.out_w),
                                                                                -np.inf)
        per_x = channels * self.out_w * gw  # values one y sample reads over all of x
        if per_x <= self._BLOCK:
            x_blocks = [(range(self.out_w), range(gw))]
        elif channels * gw <= self._BLOCK:
            step = self._BLOCK // (channels * gw)
            x_blocks = [(range(b, min(self.out_w, b + step)), range(gw)) for b in range(0, self.out_w, step)]
        else:
            step = max(1, self._BLOCK // channels)
            x_blocks = [(range(b, b + 1), range(c, min(gw, c + step)))
                        for b in range(self.out_w) for c in range(0, gw, step)]
        per_y = channels * max(len(bins) * len(cells) for bins, cells in x_blocks)
        g_step = max(1, min(gh, self._BLOCK // per_y))
        b_step = max(1, self._BLOCK // (per_y * gh)) if g_step == gh else 1
        for b0 in range(0, self.out_h, b_step):
            y_bins = range(b0, min(self.out_h, b0 + b_step))
            for g0 in range(0, gh, g_step):
                ys = self._samples(*y_axis, height, y_bins, range(g0, min(gh, g0 + g_step)))
                for x_bins, cells in x_blocks:
                    xs = self._samples(*x_axis, width, x_bins, cells)
                    part = self._block(plane, ys, xs, avg)  # (C, y bins, x bins)
                    view = out[:, y_bins.start:y_bins.stop, x_bins.start:x_bins.stop]
                    if avg:
                        view += part
                    else:
                        np.maximum(view, part, out=view)
        if avg:
            out /= gh * gw
        return out

    @staticmethod
    def _block(plane: np.ndarray, ys, xs, avg: bool) -> np.ndarray:
        """Sum (avg) or largest weighted corner value (max) over a block of samples:
        (C, bins of ys, bins of xs)."""
        result = None
        for y_idx, y_w in ((ys[0], ys[2]), (ys[1], ys[3])):
            for x_idx, x_w in ((xs[0], xs[2]), (xs[1], xs[3])):
                values = plane[:, y_idx[:, :, None, None], x_idx[None, None, :, :]]  # (C, oh, gh, ow, gw)
                values *= y_w[:, :, None, None] * x_w[None, None, :, :]
                part = values.sum(axis=(2, 4)) if avg else values.max(axis=(2, 4))
                result = part if result is None else (result + part if avg else np.maximum(result, part))
        return result
