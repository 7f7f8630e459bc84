"""Unary math kernels: Abs, Neg, Sign, Reciprocal, rounding, Sqrt, Exp, Log, the trigonometric
and hyperbolic functions and their inverses, Erf, and the float tests IsNaN and IsInf.
One input, one output of its shape (bool for IsNaN/IsInf); floats unless a docstring says
otherwise. Activations (Relu, Sigmoid, ...) live in activations.py.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np

from edgerun.runtime.kernels.attrs import FLOAT_KINDS, NUMERIC_KINDS, int_attr
from edgerun.runtime.kernels.base import TensorSpec
from edgerun.runtime.kernels.elementwise import Unary
from edgerun.runtime.kernels.registry import register


@cache
def _erf_ufunc():
    """scipy's vectorized erf, imported on first use (scipy.special takes 0.25 s to import, a
    cost every process would pay at start); math.erf per element, exact but slow, without it."""
    try:
        from scipy.special import erf as scipy_erf
    except ImportError:  # pragma: no cover - scipy is optional
        return np.vectorize(math.erf, otypes=[np.float64])
    return scipy_erf


def erf(x: np.ndarray) -> np.ndarray:
    """The error function, elementwise; float16 and integers are computed in float32 (as the ONNX
    reference does: an integer result is the float32 value truncated, so erf(5) gives 1)."""
    return _erf_ufunc()(x if x.dtype in (np.float32, np.float64) else x.astype(np.float32))


class _Ufunc(Unary):
    """Y = ufunc(X), a numpy ufunc writing straight into Y."""

    ufunc: np.ufunc

    def fn(self, x, out):
        self.ufunc(x, out=out)


@register("Abs", since=1)
class Abs(_Ufunc):
    """|X| for every numeric type (a signed int's minimum wraps to itself)."""

    kinds = NUMERIC_KINDS
    ufunc = np.abs


@register("Neg", since=6)
class Neg(Unary):
    """Y = -X for floats and signed ints (a signed int's minimum wraps to itself)."""

    kinds = FLOAT_KINDS + "i"

    def run(self, inputs, outputs):
        np.negative(inputs[0], out=outputs[0])


@register("Neg", since=13)
class Neg13(Neg):
    """Neg-13 adds bfloat16, which numpy lacks: same kernel."""


@register("Sign", since=9)
class Sign(_Ufunc):
    """-1, 0 or 1 by the sign of X (nan stays nan)."""

    kinds = NUMERIC_KINDS
    ufunc = np.sign


@register("Reciprocal", since=1)
class Reciprocal(_Ufunc):
    ufunc = np.reciprocal


@register("Floor", since=1)
class Floor(_Ufunc):
    ufunc = np.floor


@register("Ceil", since=1)
class Ceil(_Ufunc):
    ufunc = np.ceil


@register("Round", since=11)
class Round(_Ufunc):
    """Round half to even, as numpy and ONNX do."""

    ufunc = np.rint


@register("Sqrt", since=1)
class Sqrt(_Ufunc):
    ufunc = np.sqrt


@register("Exp", since=1)
class Exp(_Ufunc):
    ufunc = np.exp


@register("Log", since=1)
class Log(_Ufunc):
    ufunc = np.log


@register("Sin", since=7)
class Sin(_Ufunc):
    ufunc = np.sin


@register("Cos", since=7)
class Cos(_Ufunc):
    ufunc = np.cos


@register("Tan", since=7)
class Tan(_Ufunc):
    ufunc = np.tan


@register("Asin", since=7)
class Asin(_Ufunc):
    ufunc = np.arcsin


@register("Acos", since=7)
class Acos(_Ufunc):
    ufunc = np.arccos


@register("Atan", since=7)
class Atan(_Ufunc):
    ufunc = np.arctan


@register("Sinh", since=9)
class Sinh(_Ufunc):
    ufunc = np.sinh


@register("Cosh", since=9)
class Cosh(_Ufunc):
    ufunc = np.cosh


@register("Asinh", since=9)
class Asinh(_Ufunc):
    ufunc = np.arcsinh


@register("Acosh", since=9)
class Acosh(_Ufunc):
    ufunc = np.arccosh


@register("Atanh", since=9)
class Atanh(_Ufunc):
    ufunc = np.arctanh


@register("Erf", since=9)
class Erf(Unary):
    kinds = NUMERIC_KINDS

    def fn(self, x, out):
        np.copyto(out, erf(x), casting="unsafe")


@register("IsNaN", since=9)
class IsNaN(Unary):
    def prepare(self, inputs, values):
        (spec,) = super().prepare(inputs, values)
        return [TensorSpec(np.dtype(np.bool_), spec.shape)]

    def fn(self, x, out):
        np.isnan(x, out=out)


@register("IsInf", since=10)
class IsInf(IsNaN):
    """True at +inf when detect_positive (default 1), at -inf when detect_negative (default 1)."""

    def prepare(self, inputs, values):
        self.positive = int_attr(self, "detect_positive", 1) != 0
        self.negative = int_attr(self, "detect_negative", 1) != 0
        return super().prepare(inputs, values)

    def fn(self, x, out):
        np.isinf(x, out=out)
        if not self.positive:
            out &= x < 0
        if not self.negative:
            out &= x > 0
