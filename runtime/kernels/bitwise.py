"""Bitwise kernels on integers: BitwiseAnd, BitwiseOr, BitwiseXor (broadcasting), BitwiseNot and
BitShift.
"""

from __future__ import annotations

import numpy as np

from edgerun.runtime.kernels.attrs import str_attr
from edgerun.runtime.kernels.elementwise import Binary, Unary
from edgerun.runtime.kernels.registry import register


@register("BitwiseAnd", since=18)
class BitwiseAnd(Binary):
    kinds = "iu"
    ufunc = np.bitwise_and


@register("BitwiseOr", since=18)
class BitwiseOr(Binary):
    kinds = "iu"
    ufunc = np.bitwise_or


@register("BitwiseXor", since=18)
class BitwiseXor(Binary):
    kinds = "iu"
    ufunc = np.bitwise_xor


@register("BitwiseNot", since=18)
class BitwiseNot(Unary):
    kinds = "iu"

    def fn(self, x, out):
        np.invert(x, out=out)


@register("BitShift", since=11)
class BitShift(Binary):
    """Z = X << Y or X >> Y (attribute direction LEFT/RIGHT) for unsigned ints, and from opset 28
    signed ints (right shifts are arithmetic; a left shift drops bits past the sign bit). A shift
    by a negative amount or by the bit width or more gives 0, or -1 right-shifting a negative X."""

    kinds = "u"

    def prepare(self, inputs, values):
        if self.version >= 28:
            self.kinds = "iu"
        self.left = str_attr(self, "direction", "") == "LEFT"
        if not self.left and str_attr(self, "direction", "") != "RIGHT":
            raise self.fail(f"attribute 'direction' must be LEFT or RIGHT, got {self.attr('direction')!r}")
        return super().prepare(inputs, values)

    def run(self, inputs, outputs):
        x, y = inputs
        out = outputs[0]
        bits = out.dtype.itemsize * 8
        valid = (y >= 0) & (y < bits)
        shift = np.where(valid, y, 0)
        if self.left:
            unsigned = np.dtype(f"u{out.dtype.itemsize}")
            x = np.broadcast_to(x, out.shape)
            shifted = np.left_shift(x.view(unsigned), shift.astype(unsigned)).view(out.dtype)
            np.copyto(out, np.where(valid, shifted, 0))
        else:
            np.right_shift(x, shift.astype(out.dtype), out=out)
            np.copyto(out, np.where(x < 0, -1, 0).astype(out.dtype), where=~valid)
