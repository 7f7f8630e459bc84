"""What the TFLite integer kernels share: the domain and dtypes, typed attribute readers, the
window geometry of TFLite's padding.h, and the output stage most kernels end with.

The output stage (`OutputStage`): y = clamp(MultiplyByQuantizedMultiplier(acc, multiplier[c],
shift[c]) + output_zero_point, activation_min, activation_max), with one (multiplier, shift)
pair or one per output channel (the last axis). Spatial kernels (`Spatial`) take NHWC inputs,
`padding` SAME (TFLite's: the smaller half before) or VALID, `strides` and `dilations` as
[h, w]. Every reader fails with a ModelError naming the node for a wrong dtype, rank or
attribute.
"""

from __future__ import annotations

import numpy as np

from edgerun.runtime.kernels.attrs import int_attr, ints_attr, str_attr
from edgerun.runtime.kernels.base import Kernel, TensorSpec
from edgerun.runtime.kernels.fixed_point import integer_range, multiply_by_quantized_multiplier

DOMAIN = "ai.edgerun.tflite"
INT8, UINT8, INT16, INT32 = (np.dtype(t) for t in (np.int8, np.uint8, np.int16, np.int32))
EIGHT_BIT = (INT8, UINT8)
QUANTIZED = (INT8, UINT8, INT16)
_DTYPES = {"int8": INT8, "uint8": UINT8, "int16": INT16}


def floats_attr(kernel: Kernel, key: str) -> np.ndarray:
    value = kernel.attr(key)
    if value is None:
        raise kernel.fail(f"attribute {key!r} is required")
    array = np.atleast_1d(np.asarray(value))
    if array.ndim != 1 or array.dtype.kind not in "fiu" or array.size == 0:
        raise kernel.fail(f"attribute {key!r}: expected a non-empty list of floats, got {value!r}")
    return array.astype(np.float64)


def required_ints(kernel: Kernel, key: str, default: tuple[int, ...] | None = None) -> tuple[int, ...]:
    value = ints_attr(kernel, key)
    if value is None:
        if default is None:
            raise kernel.fail(f"attribute {key!r} is required")
        return default
    return value


def dtype_attr(kernel: Kernel) -> np.dtype:
    name = str_attr(kernel, "dtype", "")
    if name not in _DTYPES:
        raise kernel.fail(f"attribute 'dtype' must be one of {sorted(_DTYPES)}, got {name!r}")
    return _DTYPES[name]


def require(kernel: Kernel, spec: TensorSpec | None, dtypes: tuple[np.dtype, ...], what: str,
             rank: int | None = None) -> TensorSpec:
    if spec is None:
        raise kernel.fail(f"{what} is missing")
    if spec.dtype not in dtypes:
        raise kernel.fail(f"{what}: expected a {'/'.join(map(str, dtypes))} tensor, got {spec.dtype}")
    if rank is not None and len(spec.shape) != rank:
        raise kernel.fail(f"{what}: expected rank {rank}, got shape {spec.shape}")
    return spec


def pair_attr(kernel: Kernel, key: str) -> tuple[int, int]:
    value = required_ints(kernel, key, (1, 1))
    if len(value) != 2 or min(value) < 1:
        raise kernel.fail(f"attribute {key!r} must be two ints >= 1, got {list(value)}")
    return value[0], value[1]


def window_geometry(kernel: Kernel, size: int, extent: int, stride: int, dilation: int,
                    padding: str) -> tuple[int, int]:
    """(output size, padding before) along one spatial axis, as TFLite's padding.h works them out."""
    effective = (extent - 1) * dilation + 1
    if padding == "SAME":
        out = (size + stride - 1) // stride
        return out, max((out - 1) * stride + effective - size, 0) // 2
    if padding == "VALID":
        numerator = size + stride - effective
        if numerator <= -stride:
            raise kernel.fail(f"input size {size} is smaller than the window ({effective}) for VALID padding")
        return max(numerator, 0) // stride, 0
    raise kernel.fail(f"attribute 'padding' must be 'SAME' or 'VALID', got {padding!r}")


def activation_range(kernel: Kernel, dtype: np.dtype) -> tuple[int, int]:
    """[activation_min, activation_max] within the range of `dtype` (default: all of it)."""
    low, high = integer_range(dtype)
    low, high = max(low, int_attr(kernel, "activation_min", low)), min(high, int_attr(kernel, "activation_max", high))
    if low > high:
        raise kernel.fail(f"activation range [{low}, {high}] is empty")
    return low, high


class OutputStage:
    """The requantization every accumulating kernel ends with (see the module docstring)."""

    def __init__(self, kernel: Kernel, dtype: np.dtype, channels: int | None) -> None:
        self.multiplier = np.asarray(required_ints(kernel, "multiplier"), np.int64)
        self.shift = np.asarray(required_ints(kernel, "shift"), np.int64)
        if self.multiplier.size != self.shift.size:
            raise kernel.fail(f"{self.multiplier.size} multipliers but {self.shift.size} shifts")
        if self.multiplier.size != 1 and self.multiplier.size != channels:
            raise kernel.fail(f"{self.multiplier.size} multipliers for {channels} output channels")
        if np.any(self.multiplier < 0) or np.any(self.multiplier >= 1 << 31) or np.any(np.abs(self.shift) > 31):
            raise kernel.fail("multipliers must be Q31 values in [0, 2**31) and shifts in [-31, 31]")
        self.zero_point = int_attr(kernel, "output_zero_point", 0)
        self.low, self.high = activation_range(kernel, dtype)

    def __call__(self, acc: np.ndarray, out: np.ndarray) -> None:
        scaled = multiply_by_quantized_multiplier(acc, self.multiplier, self.shift) + self.zero_point
        np.copyto(out, np.clip(scaled, self.low, self.high), casting="unsafe")


def pad_nhwc(x: np.ndarray, pads: tuple[int, int, int, int], fill: float, dtype: type) -> np.ndarray:
    """x (NHWC) as `dtype`, padded with `fill` (top, bottom, left, right)."""
    top, bottom, left, right = pads
    n, h, w, c = x.shape
    out = np.full((n, h + top + bottom, w + left + right, c), fill, dtype)
    out[:, top:top + h, left:left + w, :] = x
    return out


class Spatial(Kernel):
    """Shared geometry of the NHWC windowed kernels: window (kh, kw) over x (N, H, W, C)."""

    def _geometry(self, x: TensorSpec, kh: int, kw: int) -> tuple[int, int]:
        self.strides = pair_attr(self, "strides")
        self.dilations = pair_attr(self, "dilations")
        padding = str_attr(self, "padding", "VALID")
        oh, top = window_geometry(self, x.shape[1], kh, self.strides[0], self.dilations[0], padding)
        ow, left = window_geometry(self, x.shape[2], kw, self.strides[1], self.dilations[1], padding)
        need_h = (oh - 1) * self.strides[0] + (kh - 1) * self.dilations[0] + 1 if oh else 0
        need_w = (ow - 1) * self.strides[1] + (kw - 1) * self.dilations[1] + 1 if ow else 0
        self.pads = (top, max(need_h - x.shape[1] - top, 0), left, max(need_w - x.shape[2] - left, 0))
        self.window = (kh, kw, oh, ow)
        return oh, ow

    def _taps(self, padded: np.ndarray):
        """Per window tap (ky, kx): the strided (N, OH, OW, C) view of the padded input."""
        kh, kw, oh, ow = self.window
        (sh, sw), (dh, dw) = self.strides, self.dilations
        for ky in range(kh):
            for kx in range(kw):
                y, x = ky * dh, kx * dw
                yield padded[:, y:y + (oh - 1) * sh + 1:sh, x:x + (ow - 1) * sw + 1:sw, :]


def size_input(kernel: Kernel, values: list, index: int, what: str) -> tuple[int, ...]:
    array = kernel.value_of(values, index)
    if array.dtype.kind not in "iu" or array.ndim != 1:
        raise kernel.fail(f"{what}: expected a 1-D int tensor, got {array.dtype} of shape {array.shape}")
    return tuple(int(v) for v in array)
