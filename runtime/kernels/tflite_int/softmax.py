"""Quantized Softmax over the last axis, TFLite's reference kernel in gemmlowp fixed point."""

from __future__ import annotations

import numpy as np

from edgerun.runtime.kernels.attrs import int_attr
from edgerun.runtime.kernels.base import Kernel, TensorSpec
from edgerun.runtime.kernels.fixed_point import (
    exp_on_negative_values,
    integer_range,
    reciprocal,
    rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
    wrap_int32,
)
from edgerun.runtime.kernels.registry import register
from edgerun.runtime.kernels.tflite_int.common import DOMAIN, EIGHT_BIT, require


@register("Softmax", since=1, domain=DOMAIN)
class Softmax(Kernel):
    """X int8/uint8 -> softmax over the last axis, Y of X's type with scale 1/256 and zero
    point the type's minimum: TFLite's reference quantized SOFTMAX in gemmlowp fixed point.
    d = x - max(row); entries with d < diff_min give the minimum; the others exp(d * beta *
    s_in) with d rescaled by (input_multiplier, input_left_shift) into Q5.26, exps summed in
    Q12.19, y = exp * reciprocal(sum) / 2**(bits over unit + 23) + minimum."""

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = require(self, inputs[0], EIGHT_BIT, "X")
        if not x.shape:
            raise self.fail("X must have at least one dimension")
        self.multiplier = int_attr(self, "input_multiplier")
        self.left_shift = int_attr(self, "input_left_shift")
        self.diff_min = int_attr(self, "diff_min")
        if not 0 <= self.multiplier < 1 << 31 or not 0 <= self.left_shift <= 31 or self.diff_min > 0:
            raise self.fail("input_multiplier must be Q31, input_left_shift in [0, 31], diff_min <= 0")
        return [TensorSpec(x.dtype, x.shape)]

    def run(self, inputs, outputs):
        x, out = inputs[0].astype(np.int64), outputs[0]
        low, high = integer_range(out.dtype)
        diff = x - x.max(axis=-1, keepdims=True, initial=low)
        inside = diff >= self.diff_min
        scaled = saturating_rounding_doubling_high_mul(np.where(inside, diff, 0) << self.left_shift, self.multiplier)
        exps = exp_on_negative_values(scaled, 5)
        total = wrap_int32(np.where(inside, rounding_divide_by_pot(exps, 12), 0).sum(axis=-1, keepdims=True))
        scale, bits_over_unit = reciprocal(total, 12)
        unsaturated = rounding_divide_by_pot(saturating_rounding_doubling_high_mul(scale, exps),
                                             bits_over_unit + 31 - 8)
        y = np.where(inside, np.clip(unsaturated + low, low, high), low)
        np.copyto(out, y, casting="unsafe")
