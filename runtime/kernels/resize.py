"""Resampling kernels: Resize and Upsample.

Resize is separable: prepare builds, for every resized axis, the input positions each
output position reads and their weights (`AxisSampling`); run gathers and sums along
one axis after another, in float64, and casts back (rounding and saturating for ints).
Coordinate mapping and weights follow the ONNX reference evaluator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edgerun.runtime.kernels.attrs import (
    flag_attr,
    float_attr,
    has_input,
    ints_attr,
    ints_input,
    normalize_axis,
    str_attr,
)
from edgerun.runtime.kernels.base import Kernel, TensorSpec
from edgerun.runtime.kernels.registry import register

TRANSFORMS = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric",
              "tf_half_pixel_for_nn", "tf_crop_and_resize")


NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")
MAX_TAPS = 1 << 12  # antialiased downsampling by a huge factor would read this many inputs per output


@dataclass(frozen=True)
class AxisSampling:
    """How one axis is resampled: output position i reads input positions index[i, :]
    with weights[i, :]; where `outside[i]` (tf_crop_and_resize) it is the extrapolation value."""

    axis: int
    index: np.ndarray  # (out, taps) intp, in [0, in)
    weights: np.ndarray  # (out, taps) float64
    outside: np.ndarray | None  # (out,) bool


@dataclass(frozen=True)
class Sampling:
    """Everything that decides where an axis' samples come from."""

    mode: str  # nearest / linear / cubic
    transform: str
    nearest_mode: str = "round_prefer_floor"
    cubic_a: float = -0.75
    antialias: bool = False
    exclude_outside: bool = False


def source_coords(s: Sampling, out: int, size: int, scale: float, roi: tuple[float, float]) -> np.ndarray:
    """The input coordinate each of `out` output positions maps to along an axis of `size`."""
    y = np.arange(out, dtype=np.float64)
    width = scale * size  # the output width before rounding down to an integer
    if s.transform == "align_corners":
        return np.zeros(out) if width == 1 else y * (size - 1) / (width - 1)
    if s.transform == "asymmetric":
        return y / scale
    if s.transform == "tf_half_pixel_for_nn":
        return (y + 0.5) / scale
    if s.transform == "tf_crop_and_resize":
        start, end = roi
        x = np.full(out, (end - start) * (size - 1) / 2) if width == 1 else y * (end - start) * (size - 1) / (width - 1)
        return x + start * (size - 1)
    if s.transform == "pytorch_half_pixel":
        return np.full(out, -0.5) if width == 1 else (y + 0.5) / scale - 0.5
    if s.transform == "half_pixel_symmetric":
        offset = size / 2 * (1 - out / width)
        return offset + (y + 0.5) / scale - 0.5
    return (y + 0.5) / scale - 0.5  # half_pixel


def tap_weights(s: Sampling, ratio: np.ndarray, scale: float) -> np.ndarray:
    """(out, taps) weights for the fractional positions `ratio` in (0, 1] (1 where the
    coordinate is an integer): the taps are the nearest input positions, left-biased."""
    r = ratio[:, None]
    if s.mode == "nearest":
        right = {"round_prefer_floor": r > 0.5, "round_prefer_ceil": r >= 0.5,
                 "floor": np.zeros_like(r, bool), "ceil": np.ones_like(r, bool)}[s.nearest_mode] | (r == 1.0)
        return np.concatenate([~right, right], axis=1).astype(np.float64)
    shrink = min(scale, 1.0) if s.antialias else 1.0
    support = 1 if s.mode == "linear" else 2
    first = math.floor(-support / shrink) + 1
    offsets = np.arange(first, 2 - first)  # the taps the kernel's support can reach
    if len(offsets) > MAX_TAPS:
        raise ValueError(f"downsampling by {scale} reads {len(offsets)} inputs per output")
    x = np.abs((offsets[None, :] - r) * shrink)
    if s.mode == "linear":
        w = np.clip(1 - x, 0, 1)
    else:
        a = s.cubic_a
        near = ((a + 2) * x - (a + 3)) * x * x + 1
        far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
        w = np.where(x <= 1, near, np.where(x < 2, far, 0.0))
    return w / w.sum(axis=1, keepdims=True) if s.antialias else w


def axis_sampling(
    s: Sampling, axis: int, size: int, out: int, scale: float, roi: tuple[float, float]
) -> AxisSampling:
    """The positions and weights resampling an axis of `size` to `out` reads."""
    x = source_coords(s, out, size, scale, roi)
    floor = np.floor(x)
    ratio = np.where(x == floor, 1.0, x - floor)
    weights = tap_weights(s, ratio, scale)
    taps = weights.shape[1]
    pad = math.ceil(taps / 2)
    padded = x + pad
    p = np.floor(padded).astype(np.int64)
    frac = padded - p
    if taps % 2 == 0:
        start = p + np.where(frac == 0, -(taps // 2), -(taps // 2) + 1)
    else:
        start = p + np.where(frac <= 0.5, -((taps - 1) // 2), -((taps - 1) // 2) + 1)
    index = start[:, None] + np.arange(taps)[None, :] - pad
    if s.exclude_outside:
        weights = np.where((index < 0) | (index >= size), 0.0, weights)
        total = weights.sum(axis=1, keepdims=True)
        weights = weights / np.where(total == 0, 1.0, total)
    outside = ((x < 0) | (x > size - 1)) if s.transform == "tf_crop_and_resize" else None
    return AxisSampling(axis, np.clip(index, 0, max(size - 1, 0)).astype(np.intp), weights, outside)


def resample(x: np.ndarray, plans: list[AxisSampling], nearest: bool, extrapolation: float,
             out: np.ndarray) -> None:
    """Apply the axes' samplings one after another and write the result into `out`."""
    result = x if nearest else x.astype(np.float64)
    for plan in plans:
        before, after = (1,) * plan.axis, (1,) * (x.ndim - plan.axis - 1)
        if nearest:  # one weight is 1: gather without arithmetic (exact for any dtype)
            pick = plan.index[np.arange(len(plan.index)), np.argmax(plan.weights, axis=1)]
            result = np.take(result, pick, axis=plan.axis)
        else:
            gathered = np.take(result, plan.index, axis=plan.axis)
            result = (gathered * plan.weights.reshape(before + plan.weights.shape + after)).sum(axis=plan.axis + 1)
        if plan.outside is not None and plan.outside.any():
            fill = np.asarray(extrapolation, result.dtype)
            result = np.where(plan.outside.reshape(before + (-1,) + after), fill, result)
    if out.dtype.kind in "iu" and not nearest:
        info = np.iinfo(out.dtype)
        result = np.clip(np.rint(result), info.min, info.max)
    np.copyto(out, result, casting="unsafe")


def floats_input(kernel: Kernel, inputs: list, values: list, index: int, what: str) -> tuple[float, ...] | None:
    """Input `index` as a tuple of floats (needed at prepare time); None when omitted or empty."""
    if not has_input(inputs, index):
        return None
    array = kernel.value_of(values, index)
    if array.ndim > 1 or array.dtype.kind not in "fiu":
        raise kernel.fail(f"{what} must be a 1-D numeric tensor, got {array.dtype} shape {array.shape}")
    return tuple(float(v) for v in array.reshape(-1)) or None


class _Resampler(Kernel):
    """Base of Resize and Upsample: prepare sets self.plans, self.nearest, self.extrapolation."""

    def plan_axes(self, s: Sampling, shape: tuple[int, ...], axes: tuple[int, ...], out_shape: tuple[int, ...],
                  scales: tuple[float, ...], rois: list[tuple[float, float]]) -> None:
        plans = []
        for axis, scale, roi in zip(axes, scales, rois, strict=True):
            size, out = shape[axis], out_shape[axis]
            if math.isclose(scale, 1.0) and out == size and (math.isclose(roi[0], 0) and math.isclose(roi[1], 1)):
                continue  # identity along this axis
            axis_s = s
            if s.nearest_mode == "simple":  # opset < 11: floor when upsampling, ceil when downsampling
                axis_s = Sampling(s.mode, s.transform, "ceil" if scale < 1 else "floor")
            try:
                plans.append(axis_sampling(axis_s, axis, size, out, scale, roi))
            except ValueError as exc:
                raise self.fail(str(exc)) from None
        self.plans = plans
        self.nearest = s.mode == "nearest"

    def run(self, inputs, outputs):
        resample(inputs[0], self.plans, self.nearest, self.extrapolation, outputs[0])


def _scaled_shape(kernel: Kernel, shape: tuple[int, ...], axes: tuple[int, ...], scales: tuple[float, ...]) -> tuple:
    if len(scales) != len(axes) or any(not s > 0 for s in scales):
        raise kernel.fail(f"scales {list(scales)} must be {len(axes)} positive numbers")
    out = list(shape)
    for axis, scale in zip(axes, scales, strict=True):
        out[axis] = math.floor(scale * shape[axis])
    return tuple(out)


@register("Resize", since=10)
class Resize(_Resampler):
    """Y = X resampled by `scales` (Y dim = floor(X dim * scale)) or to `sizes`, along
    `axes` (opset 18; default all). mode nearest/linear/cubic; the coordinate transform,
    nearest rounding, cubic_coeff_a, exclude_outside, extrapolation_value (for
    tf_crop_and_resize with `roi`), antialias and keep_aspect_ratio_policy (18) follow
    ONNX. Opset 10 takes (X, scales) and maps coordinates asymmetrically. scales, sizes
    and roi are needed at prepare time."""

    max_inputs = 4

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = inputs[0]
        rank = len(x.shape)
        s = self._sampling()
        axes = tuple(range(rank))
        if self.version >= 18 and ints_attr(self, "axes") is not None:
            axes = tuple(normalize_axis(self, a, rank) for a in ints_attr(self, "axes"))
            if len(set(axes)) != len(axes):
                raise self.fail(f"axes {list(axes)} repeat an axis")
        if self.version < 11:
            scales, sizes, roi = floats_input(self, inputs, values, 1, "scales"), None, None
        else:
            scales = floats_input(self, inputs, values, 2, "scales")
            sizes = ints_input(self, inputs, values, 3, "sizes") or None
            roi = floats_input(self, inputs, values, 1, "roi") if s.transform == "tf_crop_and_resize" else None
        if scales is not None and sizes is not None or scales is None and sizes is None:
            raise self.fail("exactly one of scales and sizes must be given")
        if scales is not None:
            out_shape = _scaled_shape(self, x.shape, axes, scales)
        else:
            out_shape, scales = self._sized_shape(x.shape, axes, sizes)
        rois = [(0.0, 1.0)] * len(axes)
        if roi is not None:
            if len(roi) != 2 * len(axes):
                raise self.fail(f"roi {list(roi)} must hold {2 * len(axes)} numbers")
            rois = list(zip(roi[: len(axes)], roi[len(axes) :], strict=True))
        self.extrapolation = float_attr(self, "extrapolation_value", 0.0)
        self.plan_axes(s, x.shape, axes, out_shape, scales, rois)
        return [TensorSpec(x.dtype, out_shape)]

    def _sampling(self) -> Sampling:
        mode = str_attr(self, "mode", "nearest")
        if mode not in ("nearest", "linear") + (("cubic",) if self.version >= 11 else ()):
            raise self.fail(f"mode {mode!r} is not supported at opset {self.version}")
        if self.version < 11:
            return Sampling(mode, "asymmetric", "simple")
        transform = str_attr(self, "coordinate_transformation_mode", "half_pixel")
        nearest_mode = str_attr(self, "nearest_mode", "round_prefer_floor")
        if transform not in TRANSFORMS or nearest_mode not in NEAREST_MODES:
            raise self.fail(f"coordinate_transformation_mode {transform!r} or nearest_mode {nearest_mode!r} "
                            f"is not one of {TRANSFORMS} / {NEAREST_MODES}")
        antialias = flag_attr(self, "antialias") if self.version >= 18 else False
        if antialias and mode == "nearest":
            raise self.fail("antialias does not apply to mode 'nearest'")
        return Sampling(mode, transform, nearest_mode, float_attr(self, "cubic_coeff_a", -0.75), antialias,
                        flag_attr(self, "exclude_outside"))

    def _sized_shape(self, shape: tuple[int, ...], axes: tuple[int, ...], sizes: tuple[int, ...]) -> tuple:
        if len(sizes) != len(axes) or any(d < 0 for d in sizes) or any(shape[a] == 0 for a in axes):
            raise self.fail(f"sizes {list(sizes)} must be {len(axes)} non-negative sizes for X shape {shape}")
        scales = [d / shape[a] for a, d in zip(axes, sizes, strict=True)]
        policy = str_attr(self, "keep_aspect_ratio_policy", "stretch") if self.version >= 18 else "stretch"
        out = list(shape)
        if policy == "stretch":
            for a, d in zip(axes, sizes, strict=True):
                out[a] = d
            return tuple(out), tuple(scales)
        if policy not in ("not_larger", "not_smaller"):
            raise self.fail(f"keep_aspect_ratio_policy {policy!r} is not stretch, not_larger or not_smaller")
        scale = min(scales) if policy == "not_larger" else max(scales)
        for a in axes:
            out[a] = int(scale * shape[a] + 0.5)
        return tuple(out), (scale,) * len(axes)


@register("Upsample", since=7)
class Upsample(_Resampler):
    """Y = X scaled by `scales` (one per axis, >= 1; attribute in opset 7, input 1 from 9),
    Y dim = floor(X dim * scale); mode nearest (floor of the asymmetric coordinate) or linear."""

    max_inputs = 2

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = inputs[0]
        if self.version >= 9:
            scales = floats_input(self, inputs, values, 1, "scales")
        else:
            scales = self.attr("scales")
            if scales is not None and not (isinstance(scales, list | tuple | np.ndarray) and all(
                    isinstance(v, float | int | np.floating | np.integer) for v in scales)):
                raise self.fail(f"attribute 'scales': expected a list of floats, got {scales!r}")
            scales = None if scales is None else tuple(float(v) for v in scales)
        if scales is None:
            raise self.fail("scales are required")
        mode = str_attr(self, "mode", "nearest")
        if mode not in ("nearest", "linear"):
            raise self.fail(f"mode {mode!r} is not nearest or linear")
        axes = tuple(range(len(x.shape)))
        out_shape = _scaled_shape(self, x.shape, axes, scales)
        self.extrapolation = 0.0
        self.plan_axes(Sampling(mode, "asymmetric", "simple"), x.shape, axes, out_shape, scales,
                       [(0.0, 1.0)] * len(axes))
        return [TensorSpec(x.dtype, out_shape)]
