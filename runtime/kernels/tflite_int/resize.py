"""Quantized ResizeBilinear: int8 in TFLite's 10-bit fixed point, uint8 in float32."""

from __future__ import annotations

import numpy as np

from edgerun.runtime.kernels.attrs import int_attr
from edgerun.runtime.kernels.base import Kernel, TensorSpec
from edgerun.runtime.kernels.registry import register
from edgerun.runtime.kernels.tflite_int.common import DOMAIN, EIGHT_BIT, INT8, require, size_input


@register("ResizeBilinear", since=1, domain=DOMAIN)
class ResizeBilinear(Kernel):
    """(X (N,H,W,C) int8/uint8, size int32 [h, w]) -> Y (N,h,w,C): TFLite's reference quantized
    RESIZE_BILINEAR (align_corners, half_pixel_centers; input and output share quantization).
    int8 interpolates in 10-bit fixed point, rounding halves away from zero
    (ResizeBilinearInteger); uint8 interpolates in float32 and adds 0.5 before truncating."""

    min_inputs = max_inputs = 2

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = require(self, inputs[0], EIGHT_BIT, "X", 4)
        size = size_input(self, values, 1, "size")
        if len(size) != 2 or min(size) < 1:
            raise self.fail(f"size must be two positive ints, got {list(size)}")
        self.align = bool(int_attr(self, "align_corners", 0))
        self.half = bool(int_attr(self, "half_pixel_centers", 0))
        if self.align and self.half:
            raise self.fail("align_corners and half_pixel_centers cannot both be set")
        if x.dtype == INT8:
            self.axes = [self._integer_axis(n, out) for n, out in zip(x.shape[1:3], size, strict=True)]
        else:
            self.axes = [self._float_axis(n, out) for n, out in zip(x.shape[1:3], size, strict=True)]
        return [TensorSpec(x.dtype, (x.shape[0], *size, x.shape[3]))]

    def _integer_axis(self, size: int, out: int):
        """(low index, high index, weight of high in 1/1024, 1024 * position - 1024 * low)."""
        scale = ((1 << 10) * size + out // 2) // out
        if self.align and out > 1:
            scale = ((1 << 10) * (size - 1) + (out - 1) // 2) // (out - 1)
        i = np.arange(out, dtype=np.int64)
        scaled = i * scale + (scale // 2 - (1 << 9) if self.half else 0)
        low = np.maximum(np.trunc(scaled / 1024).astype(np.int64), 0)
        high = np.minimum(np.trunc((scaled + 1023) / 1024).astype(np.int64), size - 1)
        return low, high, scaled - 1024 * low

    def _float_axis(self, size: int, out: int):
        scale = np.float32(size) / np.float32(out)
        if self.align and out > 1:
            scale = np.float32(size - 1) / np.float32(out - 1)
        i = np.arange(out, dtype=np.float32)
        scaled = (i + np.float32(0.5)) * scale - np.float32(0.5) if self.half else i * scale
        low = np.maximum(np.floor(scaled).astype(np.int64), 0)
        high = np.minimum(np.ceil(scaled).astype(np.int64), size - 1)
        return low, high, scaled - low.astype(np.float32)

    def run(self, inputs, outputs):
        x, out = inputs[0], outputs[0]
        (y0, y1, dy), (x0, x1, dx) = self.axes
        dy, dx = dy[None, :, None, None], dx[None, None, :, None]
        corners = [x[:, ya][:, :, xa] for ya in (y0, y1) for xa in (x0, x1)]   # ll, lr, ul... by (y, x)
        if x.dtype == INT8:
            v00, v01, v10, v11 = (c.astype(np.int64) for c in corners)
            total = (v00 * (1024 - dy) * (1024 - dx) + v10 * dy * (1024 - dx) + v01 * (1024 - dy) * dx
                     + v11 * dy * dx)
            value = truncating_divide(total + np.where(total > 0, 1 << 19, -(1 << 19)), 1 << 20)
        else:
            v00, v01, v10, v11 = (c.astype(np.float32) for c in corners)
            one = np.float32(1)
            value = v00 * (one - dy) * (one - dx) + v10 * dy * (one - dx) + v01 * (one - dy) * dx + v11 * dy * dx
            value = np.trunc(value + np.float32(0.5))
        np.copyto(out, value, casting="unsafe")


def truncating_divide(x: np.ndarray, divisor: int) -> np.ndarray:
    """C's x / divisor for int64 x and a positive divisor: the quotient truncated toward zero."""
    quotient = np.abs(x) // divisor
    return np.where(x < 0, -quotient, quotient)
