"""Quantized elementwise kernels: Add, Sub and Mul (broadcasting, TFLite's 8-bit arithmetic)
and TableLookup (any elementwise function of an 8-bit value, tabulated by the converter).
"""

from __future__ import annotations

import numpy as np

from edgerun.runtime.kernels.attrs import int_attr
from edgerun.runtime.kernels.base import Kernel, TensorSpec
from edgerun.runtime.kernels.fixed_point import integer_range, multiply_by_quantized_multiplier, wrap_int32
from edgerun.runtime.kernels.registry import register
from edgerun.runtime.kernels.tflite_int.common import DOMAIN, EIGHT_BIT, OutputStage, require


class _Binary(Kernel):
    min_inputs = max_inputs = 2

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        a = require(self, inputs[0], EIGHT_BIT, "A")
        b = require(self, inputs[1], EIGHT_BIT, "B")
        if a.dtype != b.dtype:
            raise self.fail(f"A is {a.dtype} but B is {b.dtype}")
        try:
            shape = np.broadcast_shapes(a.shape, b.shape)
        except ValueError:
            raise self.fail(f"shapes {a.shape} and {b.shape} do not broadcast") from None
        self.zeros = (int_attr(self, "input1_zero_point", 0), int_attr(self, "input2_zero_point", 0))
        self.stage = OutputStage(self, a.dtype, None)
        self._prepare_inputs()
        return [TensorSpec(a.dtype, shape)]

    def _prepare_inputs(self) -> None:
        pass


class _AddSub(_Binary):
    """Both inputs are shifted left by `left_shift` and rescaled to a common scale
    (input1_multiplier/shift, input2_multiplier/shift), combined, then through the output
    stage: TFLite's quantized ADD / SUB (left_shift 20 for 8-bit)."""

    sign = 1

    def _prepare_inputs(self) -> None:
        self.left_shift = int_attr(self, "left_shift", 20)
        if not 0 <= self.left_shift <= 22:
            raise self.fail(f"left_shift {self.left_shift} is out of range [0, 22]")
        self.scales = [(int_attr(self, f"input{i}_multiplier"), int_attr(self, f"input{i}_shift")) for i in (1, 2)]
        if any(not 0 <= m < 1 << 31 or not -31 <= s <= 0 for m, s in self.scales):
            raise self.fail("input multipliers must be Q31 values with shifts in [-31, 0]")

    def run(self, inputs, outputs):
        scaled = [multiply_by_quantized_multiplier((x.astype(np.int64) - zero) << self.left_shift, m, s)
                  for x, zero, (m, s) in zip(inputs, self.zeros, self.scales, strict=True)]
        self.stage(wrap_int32(scaled[0] + self.sign * scaled[1]), outputs[0])


@register("Add", since=1, domain=DOMAIN)
class Add(_AddSub):
    __doc__ = "A + B (broadcasting), int8/uint8. " + _AddSub.__doc__


@register("Sub", since=1, domain=DOMAIN)
class Sub(_AddSub):
    __doc__ = "A - B (broadcasting), int8/uint8. " + _AddSub.__doc__
    sign = -1


@register("Mul", since=1, domain=DOMAIN)
class Mul(_Binary):
    """A * B (broadcasting), int8/uint8: the output stage applied to (a - input1_zero_point)
    * (b - input2_zero_point), TFLite's quantized MUL."""

    def run(self, inputs, outputs):
        a = inputs[0].astype(np.int64) - self.zeros[0]
        b = inputs[1].astype(np.int64) - self.zeros[1]
        self.stage(a * b, outputs[0])


@register("TableLookup", since=1, domain=DOMAIN)
class TableLookup(Kernel):
    """(X int8/uint8, table (256,) int8/uint8) -> Y of the table's type, y = table[x - min]
    (min = -128 for int8, 0 for uint8): an elementwise function of 8-bit values, tabulated by
    the converter with TFLite's exact arithmetic (LOGISTIC, TANH, HARD_SWISH, LEAKY_RELU,
    RELU and friends)."""

    min_inputs = max_inputs = 2

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = require(self, inputs[0], EIGHT_BIT, "X")
        table = require(self, inputs[1], EIGHT_BIT, "table", 1)
        if table.shape != (256,):
            raise self.fail(f"table: expected 256 entries, got shape {table.shape}")
        self.low = integer_range(x.dtype)[0]
        return [TensorSpec(table.dtype, x.shape)]

    def run(self, inputs, outputs):
        np.take(inputs[1], inputs[0].astype(np.intp) - self.low, out=outputs[0])
