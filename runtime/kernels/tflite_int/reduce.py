"""Quantized reductions: Mean, TFLite's reference quantized MEAN."""

from __future__ import annotations

import numpy as np

from edgerun.runtime.kernels.attrs import int_attr
from edgerun.runtime.kernels.base import Kernel, TensorSpec
from edgerun.runtime.kernels.fixed_point import wrap_int32
from edgerun.runtime.kernels.registry import register
from edgerun.runtime.kernels.tflite_int.common import DOMAIN, EIGHT_BIT, OutputStage, require, required_ints


@register("Mean", since=1, domain=DOMAIN)
class Mean(Kernel):
    """X int8/uint8 -> the mean over `axes` (kept as size 1 when keepdims): TFLite's
    reference quantized MEAN. n = the reduced count; the input-to-output multiplier (attrs
    multiplier/shift) is divided by n in fixed point (multiplier << s / n, shift - s with
    s = min(floor(log2 n), 32, 31 + shift)), then y = clamp(MultiplyByQuantizedMultiplier(
    sum(x) - input_zero_point * n) + output_zero_point)."""

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = require(self, inputs[0], EIGHT_BIT, "X")
        rank = len(x.shape)
        axes = required_ints(self, "axes")
        if any(not -rank <= a < rank for a in axes):
            raise self.fail(f"axes {list(axes)} are out of range for rank {rank}")
        self.axes = tuple(sorted({a % rank for a in axes}))
        keep = int_attr(self, "keepdims", 0)
        shape = tuple(1 if i in self.axes else d for i, d in enumerate(x.shape) if keep or i not in self.axes)
        count = int(np.prod([x.shape[a] for a in self.axes], dtype=np.int64))
        stage = OutputStage(self, x.dtype, None)
        multiplier, shift = int(stage.multiplier[0]), int(stage.shift[0])
        if count > 0:
            s = min(count.bit_length() - 1, 32, 31 + shift)
            multiplier, shift = (multiplier << s) // count, shift - s
        stage.multiplier, stage.shift = np.int64(multiplier), np.int64(shift)
        self.stage, self.count = stage, count
        self.input_zero = int_attr(self, "input_zero_point", 0)
        return [TensorSpec(x.dtype, shape)]

    def run(self, inputs, outputs):
        out = outputs[0]
        if self.count == 0 or inputs[0].size == 0:
            out[...] = 0
            return
        total = inputs[0].astype(np.int64).sum(axis=self.axes)
        self.stage(wrap_int32(total - self.input_zero * self.count).reshape(out.shape), out)
