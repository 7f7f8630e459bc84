"""Unary math, logical and activation kernels: one input, one output of its shape (IsNaN/IsInf give bool),
plus PRelu (a broadcast slope), Clip (bounds as attributes or inputs) and Hardmax.

Relu, LeakyRelu, Sigmoid, Tanh and Neg live in elementwise.py beside their gradient kernels.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from edgerun.runtime.kernels.attrs import (
    FLOAT_KINDS,
    NUMERIC_KINDS,
    float_attr,
    int_attr,
    normalize_axis,
    prod,
    require_kind,
    str_attr,
)
from edgerun.runtime.kernels.base import Kernel, TensorSpec
from edgerun.runtime.kernels.elementwise import check_broadcasts_to
from edgerun.runtime.kernels.registry import register

try:  # scipy's erf is vectorized; math.erf per element is the exact but slow fallback
    from scipy.special import erf as _erf
except ImportError:  # pragma: no cover - scipy is optional
    _erf = np.vectorize(math.erf, otypes=[np.float64])


def erf(x: np.ndarray) -> np.ndarray:
    """The error function, elementwise; float16 and integers are computed in float32 (as the ONNX
    reference does: an integer result is the float32 value truncated, so erf(5) gives 1)."""
    return _erf(x if x.dtype in (np.float32, np.float64) else x.astype(np.float32))


class _Unary(Kernel):
    """Y = fn(X), X's dtype kind in `kinds`; Y has X's shape and dtype. `fn(x, out)` writes out."""

    kinds: str = FLOAT_KINDS

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        require_kind(self, inputs[0], self.kinds, "input 0")
        return [inputs[0]]

    def run(self, inputs, outputs):
        with np.errstate(all="ignore"):  # domain errors give nan/inf as in IEEE
            self.fn(inputs[0], outputs[0])

    def fn(self, x: np.ndarray, out: np.ndarray) -> None:
        raise NotImplementedError


def _ufunc_kernel(op: str, since: int, ufunc: Callable, kinds: str = FLOAT_KINDS) -> type[Kernel]:
    """Register a `_Unary` whose function is a numpy ufunc."""

    def fn(self: _Unary, x: np.ndarray, out: np.ndarray) -> None:
        ufunc(x, out=out)

    cls = type(op, (_Unary,), {"kinds": kinds, "fn": fn, "__doc__": f"Y = numpy.{ufunc.__name__}(X)."})
    return register(op, since=since)(cls)


for _op, _since, _ufunc in [
    ("Exp", 1, np.exp), ("Log", 1, np.log), ("Sqrt", 1, np.sqrt), ("Reciprocal", 1, np.reciprocal),
    ("Floor", 1, np.floor), ("Ceil", 1, np.ceil), ("Round", 11, np.round),  # round half to even
    ("Sin", 7, np.sin), ("Cos", 7, np.cos), ("Tan", 7, np.tan),
    ("Asin", 7, np.arcsin), ("Acos", 7, np.arccos), ("Atan", 7, np.arctan),
    ("Sinh", 9, np.sinh), ("Cosh", 9, np.cosh),
    ("Asinh", 9, np.arcsinh), ("Acosh", 9, np.arccosh), ("Atanh", 9, np.arctanh),
]:
    _ufunc_kernel(_op, _since, _ufunc)
_ufunc_kernel("Abs", 1, np.abs, NUMERIC_KINDS)  # a signed int's minimum wraps to itself
_ufunc_kernel("Sign", 9, np.sign, NUMERIC_KINDS)


@register("Erf", since=9)
class Erf(_Unary):
    kinds = NUMERIC_KINDS

    def fn(self, x, out):
        np.copyto(out, erf(x), casting="unsafe")


@register("IsNaN", since=9)
class IsNaN(_Unary):
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


@register("Not", since=1)
class Not(_Unary):
    kinds = "b"

    def fn(self, x, out):
        np.logical_not(x, out=out)


@register("BitwiseNot", since=18)
class BitwiseNot(_Unary):
    kinds = "iu"

    def fn(self, x, out):
        np.invert(x, out=out)


# --- activations --------------------------------------------------------------------------------


@register("Elu", since=1)
class Elu(_Unary):
    """Y = X for X >= 0, else alpha * (exp(X) - 1); alpha defaults to 1."""

    def prepare(self, inputs, values):
        self.alpha = float_attr(self, "alpha", 1.0)
        return super().prepare(inputs, values)

    def fn(self, x, out):
        np.copyto(out, np.where(x >= 0, x, self.alpha * np.expm1(x)), casting="unsafe")


@register("Celu", since=12)
class Celu(_Unary):
    """Y = max(0, X) + min(0, alpha * (exp(X / alpha) - 1)); alpha defaults to 1."""

    def prepare(self, inputs, values):
        self.alpha = float_attr(self, "alpha", 1.0)
        if self.alpha == 0:
            raise self.fail("attribute 'alpha' must not be 0")
        return super().prepare(inputs, values)

    def fn(self, x, out):
        np.copyto(out, np.where(x >= 0, x, self.alpha * np.expm1(x / self.alpha)), casting="unsafe")


@register("Selu", since=1)
class Selu(_Unary):
    """Y = gamma * X for X > 0, else gamma * alpha * (exp(X) - 1) (defaults: the SELU constants
    rounded to float32, as in the ONNX spec)."""

    def prepare(self, inputs, values):
        self.alpha = float_attr(self, "alpha", 1.67326319217681884765625)
        self.gamma = float_attr(self, "gamma", 1.05070102214813232421875)
        return super().prepare(inputs, values)

    def fn(self, x, out):
        np.copyto(out, self.gamma * np.where(x > 0, x, self.alpha * np.expm1(x)), casting="unsafe")


@register("ThresholdedRelu", since=10)
class ThresholdedRelu(_Unary):
    """Y = X where X > alpha (default 1), else 0."""

    def prepare(self, inputs, values):
        self.alpha = float_attr(self, "alpha", 1.0)
        return super().prepare(inputs, values)

    def fn(self, x, out):
        np.copyto(out, np.where(x > self.alpha, x, 0), casting="unsafe")


@register("HardSigmoid", since=1)
class HardSigmoid(_Unary):
    """Y = clip(alpha * X + beta, 0, 1); alpha defaults to 0.2, beta to 0.5."""

    def prepare(self, inputs, values):
        self.alpha = float_attr(self, "alpha", 0.2)
        self.beta = float_attr(self, "beta", 0.5)
        return super().prepare(inputs, values)

    def fn(self, x, out):
        np.copyto(out, np.clip(self.alpha * x + self.beta, 0, 1), casting="unsafe")


@register("HardSwish", since=14)
class HardSwish(_Unary):
    """Y = X * clip(X / 6 + 1/2, 0, 1)."""

    def fn(self, x, out):
        np.copyto(out, x * np.clip(x / 6 + 0.5, 0, 1), casting="unsafe")


@register("Softplus", since=1)
class Softplus(_Unary):
    """Y = log(1 + exp(X)), computed without overflow."""

    def fn(self, x, out):
        np.logaddexp(0, x, out=out)


@register("Softsign", since=1)
class Softsign(_Unary):
    """Y = X / (1 + |X|)."""

    def fn(self, x, out):
        np.copyto(out, x / (1 + np.abs(x)), casting="unsafe")


@register("Mish", since=18)
class Mish(_Unary):
    """Y = X * tanh(softplus(X))."""

    def fn(self, x, out):
        np.copyto(out, x * np.tanh(np.logaddexp(0, x)), casting="unsafe")


@register("Swish", since=24)
class Swish(_Unary):
    """Y = X * sigmoid(alpha * X); alpha defaults to 1."""

    def prepare(self, inputs, values):
        self.alpha = float_attr(self, "alpha", 1.0)
        return super().prepare(inputs, values)

    def fn(self, x, out):
        np.copyto(out, x / (1 + np.exp(-self.alpha * x)), casting="unsafe")


@register("Gelu", since=20)
class Gelu(_Unary):
    """Y = X * Phi(X) with Phi the standard normal CDF (approximate="none"), or its tanh
    approximation (approximate="tanh")."""

    def prepare(self, inputs, values):
        self.tanh = str_attr(self, "approximate", "none") == "tanh"
        if not self.tanh and str_attr(self, "approximate", "none") != "none":
            raise self.fail(f"attribute 'approximate' must be 'none' or 'tanh', got {self.attr('approximate')!r}")
        return super().prepare(inputs, values)

    def fn(self, x, out):
        if self.tanh:
            inner = math.sqrt(2 / math.pi) * (x + 0.044715 * x.astype(np.float64) ** 3)
            y = 0.5 * x * (1 + np.tanh(inner))
        else:
            y = 0.5 * x * (1 + erf(x / math.sqrt(2)))
        np.copyto(out, y, casting="unsafe")


@register("Shrink", since=9)
class Shrink(_Unary):
    """Y = X + bias where X < -lambd, X - bias where X > lambd, else 0 (bias 0, lambd 0.5)."""

    kinds = NUMERIC_KINDS

    def prepare(self, inputs, values):
        self.bias = float_attr(self, "bias", 0.0)
        self.lambd = float_attr(self, "lambd", 0.5)
        return super().prepare(inputs, values)

    def fn(self, x, out):
        y = np.where(x < -self.lambd, x + self.bias, np.where(x > self.lambd, x - self.bias, 0))
        np.copyto(out, y, casting="unsafe")


@register("PRelu", since=1)
class PRelu(Kernel):
    """(X, slope) -> X where X >= 0, else slope * X; slope broadcasts to X's shape (before opset 7
    a 1-D slope of X's channel count applies per channel, X's axis 1)."""

    min_inputs = max_inputs = 2

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x, slope = inputs
        require_kind(self, x, FLOAT_KINDS + ("iu" if self.version >= 16 else ""), "X")
        if slope.dtype != x.dtype:
            raise self.fail(f"slope dtype {slope.dtype} differs from X dtype {x.dtype}")
        self.slope_shape = slope.shape
        if self.version < 7 and len(slope.shape) == 1 and len(x.shape) >= 2 and slope.shape[0] == x.shape[1]:
            self.slope_shape = slope.shape + (1,) * (len(x.shape) - 2)  # PRelu-1/6: one slope per channel
        check_broadcasts_to(self, self.slope_shape, x.shape, "slope")
        return [x]

    def run(self, inputs, outputs):
        x, slope = inputs[0], inputs[1].reshape(self.slope_shape)
        np.copyto(outputs[0], np.where(x >= 0, x, x * slope), casting="unsafe")


@register("Clip", since=1)
class Clip(_Unary):
    """Y = min(max(X, min), max). Opsets 1 and 6 take the bounds as attributes, later opsets as
    optional scalar inputs (omitted: unbounded). With min > max every element becomes max."""

    def prepare(self, inputs, values):
        self.max_inputs = 1 if self.version < 11 else 3
        self.check_arity(inputs)
        x = inputs[0]
        if self.version < 11:
            self.bounds = [self._bound_attr("min", -1.0), self._bound_attr("max", 1.0)]
        else:
            for i, what in ((1, "min"), (2, "max")):
                bound = inputs[i] if i < len(inputs) else None
                if bound is not None and (bound.dtype != x.dtype or bound.size != 1):
                    raise self.fail(f"{what}: expected a scalar of X's dtype {x.dtype}, "
                                    f"got {bound.dtype} of shape {bound.shape}")
        require_kind(self, x, FLOAT_KINDS if self.version < 12 else NUMERIC_KINDS, "input 0")
        return [x]

    def _bound_attr(self, key: str, sign: float) -> float | None:
        """Clip-1/6 bound attribute; absent: none for Clip-1, float32's extreme for Clip-6."""
        if self.attr(key) is not None:
            return float_attr(self, key, 0.0)
        return sign * 3.4028234663852886e38 if self.version >= 6 else None

    def run(self, inputs, outputs):
        x = inputs[0]
        if self.version < 11:
            lo, hi = self.bounds
        else:
            lo, hi = (inputs[i].reshape(()) if i < len(inputs) and inputs[i] is not None else None for i in (1, 2))
        out = outputs[0]
        np.copyto(out, x)
        if lo is not None:
            np.maximum(out, lo, out=out, casting="unsafe")
        if hi is not None:
            np.minimum(out, hi, out=out, casting="unsafe")


@register("Hardmax", since=1)
class Hardmax(Kernel):
    """Y = 1 at the first maximum along `axis`, else 0. Before opset 13 the input is viewed as a
    matrix [prod(dims before axis), prod(dims from axis)] (axis default 1) and the maximum taken
    per row; from 13 the maximum is along `axis` alone (default -1)."""

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = inputs[0]
        require_kind(self, x, FLOAT_KINDS, "input 0")
        rank = len(x.shape)
        if self.version >= 13:
            self.axis = normalize_axis(self, int_attr(self, "axis", -1), rank)
            self.view = x.shape
        else:
            axis = normalize_axis(self, int_attr(self, "axis", 1), rank, negative=self.version >= 11)
            self.view = (prod(x.shape[:axis]), prod(x.shape[axis:]))
            self.axis = 1
        return [x]

    def run(self, inputs, outputs):
        x = inputs[0].reshape(self.view)
        out = outputs[0].reshape(self.view)
        out.fill(0)
        if out.size:
            first = np.expand_dims(np.argmax(x, axis=self.axis), self.axis)
            np.put_along_axis(out, first, 1, axis=self.axis)

