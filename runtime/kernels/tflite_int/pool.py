"""Quantized pooling: AveragePool2D and MaxPool2D over NHWC windows."""

from __future__ import annotations

import numpy as np

from edgerun.runtime.kernels.base import TensorSpec
from edgerun.runtime.kernels.fixed_point import integer_range
from edgerun.runtime.kernels.registry import register
from edgerun.runtime.kernels.tflite_int.common import (
    DOMAIN,
    EIGHT_BIT,
    Spatial,
    activation_range,
    pad_nhwc,
    pair_attr,
    require,
)


class _Pool(Spatial):
    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = require(self, inputs[0], EIGHT_BIT, "X", 4)
        kh, kw = pair_attr(self, "kernel_shape")
        if self.attr("dilations") is not None:
            raise self.fail("pooling takes no dilations")
        oh, ow = self._geometry(x, kh, kw)
        low, high = integer_range(x.dtype)
        self.range = activation_range(self, x.dtype)
        return [TensorSpec(x.dtype, (x.shape[0], oh, ow, x.shape[3]))]


@register("AveragePool2D", since=1, domain=DOMAIN)
class AveragePool2D(_Pool):
    """X (N,H,W,C) int8/uint8 -> Y (N,OH,OW,C): TFLite's quantized AVERAGE_POOL_2D, the sum of
    the window's taps inside the input divided by their count, rounded half away from zero,
    then clamped to the activation range (input and output share scale and zero point)."""

    def run(self, inputs, outputs):
        x, out = inputs[0], outputs[0]
        if out.size == 0:
            return
        total = np.zeros(out.shape, np.int64)
        inside = np.zeros(out.shape[1:3], np.int64)
        ones = pad_nhwc(np.ones((1,) + x.shape[1:3] + (1,), np.int64), self.pads, 0, np.int64)
        for tap, valid in zip(self._taps(pad_nhwc(x, self.pads, 0, np.int64)), self._taps(ones), strict=True):
            total += tap
            inside += valid[0, :, :, 0]
        count = np.maximum(inside, 1)[None, :, :, None]
        half = count // 2
        mean = np.where(total > 0, (total + half) // count, -((half - total) // count))
        np.copyto(out, np.clip(mean, *self.range), casting="unsafe")


@register("MaxPool2D", since=1, domain=DOMAIN)
class MaxPool2D(_Pool):
    """X (N,H,W,C) int8/uint8 -> Y (N,OH,OW,C): TFLite's quantized MAX_POOL_2D, the largest
    tap inside the input, clamped to the activation range."""

    def run(self, inputs, outputs):
        x, out = inputs[0], outputs[0]
        if out.size == 0:
            return
        best = np.full(out.shape, np.iinfo(np.int64).min, np.int64)
        for tap in self._taps(pad_nhwc(x, self.pads, np.iinfo(np.int64).min, np.int64)):
            np.maximum(best, tap, out=best)
        np.copyto(out, np.clip(best, *self.range), casting="unsafe")
