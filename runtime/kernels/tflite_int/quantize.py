"""Changing between float and integer, and between integer quantizations: Quantize (float32 ->
int, TFLite's AffineQuantize), Requantize (int -> int) and RescaleFloat (CONCATENATION's input
rescale in float32).
"""

from __future__ import annotations

import numpy as np

from edgerun.runtime.kernels.attrs import int_attr
from edgerun.runtime.kernels.base import Kernel, TensorSpec
from edgerun.runtime.kernels.fixed_point import float_to_int32, integer_range, round_half_away, wrap_int32
from edgerun.runtime.kernels.registry import register
from edgerun.runtime.kernels.tflite_int.common import (
    DOMAIN,
    EIGHT_BIT,
    QUANTIZED,
    OutputStage,
    dtype_attr,
    floats_attr,
    require,
    required_ints,
)


@register("Quantize", since=1, domain=DOMAIN)
class Quantize(Kernel):
    """X float32 -> `dtype` (int8/uint8/int16): q = clamp(int32(round(x / scale)) + zero_point)
    as TFLite's reference AffineQuantize computes it: x / scale in float32, rounded half away
    from zero, an out-of-range or NaN quotient becoming INT32_MIN (x86's conversion). `scale`
    and `zero_point` hold one value, or one per index of `axis` (per-channel)."""

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = require(self, inputs[0], (np.dtype(np.float32),), "X")
        self.dtype = dtype_attr(self)
        scale = floats_attr(self, "scale").astype(np.float32)
        zero = np.asarray(required_ints(self, "zero_point", (0,)), np.int64)
        if zero.size not in (1, scale.size):
            raise self.fail(f"{zero.size} zero points for {scale.size} scales")
        if np.any(scale <= 0):
            raise self.fail("scales must be > 0")
        shape: list[int] = []                      # per tensor: scalars
        if scale.size > 1:
            axis = int_attr(self, "axis", 0)
            if not 0 <= axis < len(x.shape) or x.shape[axis] != scale.size:
                raise self.fail(f"{scale.size} scales do not fit axis {axis} of X {x.shape}")
            shape = [-1 if i == axis else 1 for i in range(len(x.shape))]
        self.scale = scale.reshape(shape)
        self.zero = np.broadcast_to(zero, scale.shape).reshape(shape)
        return [TensorSpec(self.dtype, x.shape)]

    def run(self, inputs, outputs):
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            q = float_to_int32(round_half_away(inputs[0] / self.scale))
        low, high = integer_range(self.dtype)
        np.copyto(outputs[0], np.clip(wrap_int32(q + self.zero), low, high), casting="unsafe")


@register("Requantize", since=1, domain=DOMAIN)
class Requantize(Kernel):
    """X int8/uint8/int16 -> `dtype`: clamp(MultiplyByQuantizedMultiplier(x - input_zero_point,
    multiplier, shift) + output_zero_point) to the type's range (TFLite's QUANTIZE between
    integer types; an int8<->uint8 flip with equal scales is the same formula)."""

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = require(self, inputs[0], QUANTIZED, "X")
        self.dtype = dtype_attr(self)
        self.stage = OutputStage(self, self.dtype, None)
        self.input_zero = int_attr(self, "input_zero_point", 0)
        return [TensorSpec(self.dtype, x.shape)]

    def run(self, inputs, outputs):
        self.stage(inputs[0].astype(np.int64) - self.input_zero, outputs[0])


@register("RescaleFloat", since=1, domain=DOMAIN)
class RescaleFloat(Kernel):
    """X int8/uint8 -> `dtype`: clamp(int32(round(x * scale + bias)) + output_zero_point), in
    float32 with halves away from zero: how TFLite's CONCATENATION requantizes an input whose
    scale or zero point differ from the output's (scale = in_scale * (1 / out_scale), bias =
    -in_zero_point * scale, both float32)."""

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = require(self, inputs[0], EIGHT_BIT, "X")
        self.dtype = dtype_attr(self)
        self.scale = np.float32(floats_attr(self, "scale")[0])
        self.bias = np.float32(floats_attr(self, "bias")[0])
        self.zero = int_attr(self, "output_zero_point", 0)
        return [TensorSpec(self.dtype, x.shape)]

    def run(self, inputs, outputs):
        value = inputs[0].astype(np.float32) * self.scale + self.bias
        low, high = integer_range(self.dtype)
        q = float_to_int32(round_half_away(value)) + self.zero
        np.copyto(outputs[0], np.clip(q, low, high), casting="unsafe")
