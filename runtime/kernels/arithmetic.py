"""Arithmetic kernels with numpy/ONNX broadcasting: Add, Sub, Mul, Div, Pow, Mod, the variadic
Max, Min, Sum and Mean, and SumTo (edgerun domain), the gradient of broadcasting.
Neg and the other one-input math live in unary_math.py.
"""

from __future__ import annotations

import numpy as np

from edgerun.runtime.kernels.attrs import FLOAT_KINDS, NUMERIC_KINDS, flag_attr, require_kind, require_same_dtype
from edgerun.runtime.kernels.base import Kernel, TensorSpec
from edgerun.runtime.kernels.elementwise import Binary, broadcast_shape, check_broadcasts_to, sum_to
from edgerun.runtime.kernels.registry import register


@register("Add", since=1)
class Add(Binary):
    ufunc = np.add


@register("Sub", since=1)
class Sub(Binary):
    ufunc = np.subtract


@register("Mul", since=1)
class Mul(Binary):
    ufunc = np.multiply


@register("Div", since=1)
class Div(Binary):
    """Float division is IEEE (x/0 is ±inf or nan). Integer division truncates
    toward zero as in C and ONNX Runtime, and x/0 gives 0 instead of trapping."""

    def run(self, inputs, outputs):
        a, b = self.operands(inputs)
        out = outputs[0]
        kind = out.dtype.kind
        if kind == "f":
            np.divide(a, b, out=out)
            return
        with np.errstate(all="ignore"):  # numpy yields 0 for x // 0; INT_MIN // -1 wraps
            np.floor_divide(a, b, out=out)
            if kind == "u":
                return
            # floor and truncation differ when the division is inexact and the signs differ
            inexact = np.remainder(a, b) != 0
        np.add(out, inexact & ((a < 0) != (b < 0)), out=out)


@register("Pow", since=1)
class Pow(Binary):
    """Z = X ** Y with Z of X's dtype (float or signed int); from opset 12 Y may be any numeric
    type. An integer power is exact (it wraps on overflow); a negative integer exponent gives the
    truncated quotient 1 / X**-Y (0 unless |X| is 1)."""

    def check_dtypes(self, a, b):
        require_kind(self, a, FLOAT_KINDS + "i", "X")
        require_kind(self, b, NUMERIC_KINDS, "Y")
        if self.version < 12 and a.dtype != b.dtype:
            raise self.fail(f"input dtypes differ: {a.dtype} and {b.dtype} (allowed from opset 12)")

    def prepare(self, inputs, values):
        specs = super().prepare(inputs, values)
        exponent = values[1] if len(values) > 1 else None
        if (exponent is not None and exponent.size == 1 and float(exponent.reshape(-1)[0]) == 2.0
                and specs[0].dtype.kind == "f" and specs[0].shape == inputs[0].shape):
            self.run = self._square  # X ** 2 (a power spectrum, a variance): one multiply
        return specs

    def _square(self, inputs, outputs):
        np.multiply(inputs[0], inputs[0], out=outputs[0])

    def run(self, inputs, outputs):
        x, y = self.operands(inputs)
        out = outputs[0]
        if out.dtype.kind == "f" or y.dtype.kind == "f":
            with np.errstate(all="ignore"):
                np.copyto(out, np.power(x, y, dtype=np.result_type(x.dtype, y.dtype)), casting="unsafe")
            return
        # in int64, which wraps modulo 2**64 and so modulo X's width too
        y = (np.minimum(y, np.iinfo(np.int64).max) if y.dtype == np.uint64 else y).astype(np.int64)
        negative = y < 0
        np.copyto(out, np.power(x.astype(np.int64), np.where(negative, 0, y)), casting="unsafe")
        if negative.any():  # 1 / x**n truncates to 0 unless x is 1 or -1
            inverse = np.where(x == 1, 1, np.where(x == -1, np.where(y % 2 == 0, 1, -1), 0))
            np.copyto(out, inverse, where=negative, casting="unsafe")


@register("Mod", since=10)
class Mod(Binary):
    """fmod=0: the remainder has the divisor's sign (Python's %); fmod=1: the dividend's sign
    (C fmod). Integer x mod 0 gives 0; float x mod 0 and inf mod y give nan."""

    def prepare(self, inputs, values):
        self.fmod = flag_attr(self, "fmod")
        return super().prepare(inputs, values)

    def run(self, inputs, outputs):
        with np.errstate(all="ignore"):
            (np.fmod if self.fmod else np.mod)(inputs[0], inputs[1], out=outputs[0])


class _Variadic(Kernel):
    """1 or more inputs of one dtype (kind in `kinds`), broadcast together, folded with `ufunc`."""

    max_inputs = 2**31 - 1
    kinds: str = NUMERIC_KINDS
    ufunc: np.ufunc

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        if any(spec is None for spec in inputs):
            raise self.fail("an input is omitted")
        require_kind(self, inputs[0], self.kinds, "input 0")
        require_same_dtype(self, inputs, "inputs")
        return [TensorSpec(inputs[0].dtype, broadcast_shape(self, [s.shape for s in inputs]))]

    def run(self, inputs, outputs):
        out = outputs[0]
        np.copyto(out, inputs[0])
        for x in inputs[1:]:
            self.ufunc(out, x, out=out)


@register("Max", since=1)
class Max(_Variadic):
    """Elementwise maximum; nan wins."""

    ufunc = np.maximum


@register("Min", since=1)
class Min(_Variadic):
    """Elementwise minimum; nan wins."""

    ufunc = np.minimum


@register("Sum", since=1)
class Sum(_Variadic):
    kinds = FLOAT_KINDS
    ufunc = np.add


@register("Mean", since=1)
class Mean(Sum):
    def run(self, inputs, outputs):
        super().run(inputs, outputs)
        np.divide(outputs[0], len(inputs), out=outputs[0])


@register("SumTo", since=1, domain="edgerun")
class SumTo(Kernel):
    """(G, Like) -> G summed down to Like's shape, which must broadcast to G's; the gradient of a
    broadcasting op with respect to an operand shaped like Like. Only Like's shape is read, so
    the backward pass does not keep a forward activation alive just for its shape."""

    min_inputs = max_inputs = 2
    shape_only_inputs = (1,)

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        grad, like = inputs
        require_kind(self, grad, NUMERIC_KINDS, "G")
        check_broadcasts_to(self, like.shape, grad.shape, "Like")
        return [TensorSpec(grad.dtype, like.shape)]

    def run(self, inputs, outputs):
        sum_to(inputs[0], outputs[0])
