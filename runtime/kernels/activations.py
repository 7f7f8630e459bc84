"""Activation kernels: elementwise, one float tensor in and one of its shape out (Relu and
LeakyRelu also take ints from their later opsets), plus PRelu (a broadcast slope), SwiGLU (a
Swish gate times a second tensor) and Clip (bounds as attributes or inputs). Relu, LeakyRelu,
Sigmoid and Tanh are each followed by their gradient kernel (edgerun domain). Softmax,
LogSoftmax and Hardmax, which normalize along an axis, live in softmax.py; Erf and the other
unary math in unary_math.py.
"""

from __future__ import annotations

import math

import numpy as np

from edgerun.runtime.kernels.attrs import (
    FLOAT_KINDS,
    NUMERIC_KINDS,
    float_attr,
    require_kind,
    require_same_dtype,
    str_attr,
)
from edgerun.runtime.kernels.base import Kernel
from edgerun.runtime.kernels.elementwise import Unary, check_broadcasts_to
from edgerun.runtime.kernels.registry import register
from edgerun.runtime.kernels.unary_math import erf


@register("Relu", since=6)
class Relu(Unary):
    def run(self, inputs, outputs):
        np.maximum(inputs[0], 0, out=outputs[0])


@register("Relu", since=14)
class Relu14(Relu):
    """Relu-14 adds signed integer types."""

    kinds = FLOAT_KINDS + "i"


class _ActivationGrad(Kernel):
    """(dY, T) -> dX where T is the forward input or output: float, same shape and dtype as dY."""

    min_inputs = max_inputs = 2

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        dy, t = inputs
        require_kind(self, dy, FLOAT_KINDS, "dY")
        require_same_dtype(self, [dy, t], "dY and the forward tensor")
        if dy.shape != t.shape:
            raise self.fail(f"dY shape {dy.shape} differs from the forward tensor's shape {t.shape}")
        return [dy]


@register("ReluGrad", since=1, domain="edgerun")
class ReluGrad(_ActivationGrad):
    """(dY, X) -> dX = dY where X > 0, else 0."""

    def run(self, inputs, outputs):
        dy, x = inputs
        outputs[0].fill(0)
        np.copyto(outputs[0], dy, where=x > 0)


@register("LeakyRelu", since=6)
class LeakyRelu(Unary):
    """Y = X where X >= 0, else alpha * X (alpha default 0.01)."""

    def prepare(self, inputs, values):
        specs = super().prepare(inputs, values)
        self.alpha = float_attr(self, "alpha", 0.01)
        return specs

    def run(self, inputs, outputs):
        x = inputs[0]
        np.multiply(x, self.alpha, out=outputs[0])
        np.copyto(outputs[0], x, where=x >= 0)


@register("LeakyRelu", since=16)
class LeakyRelu16(LeakyRelu):
    """LeakyRelu-16 adds bfloat16, which numpy lacks: same kernel."""


@register("LeakyReluGrad", since=1, domain="edgerun")
class LeakyReluGrad(_ActivationGrad):
    """(dY, X; alpha=0.01) -> dX = dY where X > 0, else alpha * dY."""

    def prepare(self, inputs, values):
        specs = super().prepare(inputs, values)
        self.alpha = float_attr(self, "alpha", 0.01)
        return specs

    def run(self, inputs, outputs):
        dy, x = inputs
        np.multiply(dy, self.alpha, out=outputs[0])
        np.copyto(outputs[0], dy, where=x > 0)


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


@register("ThresholdedRelu", since=10)
class ThresholdedRelu(Unary):
    """Y = X where X > alpha (default 1), else 0."""

    def prepare(self, inputs, values):
        self.alpha = float_attr(self, "alpha", 1.0)
        return super().prepare(inputs, values)

    def fn(self, x, out):
        np.copyto(out, np.where(x > self.alpha, x, 0), casting="unsafe")


@register("Elu", since=1)
class Elu(Unary):
    """Y = X for X >= 0, else alpha * (exp(X) - 1); alpha defaults to 1."""

    def prepare(self, inputs, values):
        self.alpha = float_attr(self, "alpha", 1.0)
        return super().prepare(inputs, values)

    def fn(self, x, out):
        np.copyto(out, np.where(x >= 0, x, self.alpha * np.expm1(x)), casting="unsafe")


@register("Celu", since=12)
class Celu(Unary):
    """Y = max(0, X) + min(0, alpha * (exp(X / alpha) - 1)); alpha defaults to 1."""

    def prepare(self, inputs, values):
        self.alpha = float_attr(self, "alpha", 1.0)
        if self.alpha == 0:
            raise self.fail("attribute 'alpha' must not be 0")
        return super().prepare(inputs, values)

    def fn(self, x, out):
        np.copyto(out, np.where(x >= 0, x, self.alpha * np.expm1(x / self.alpha)), casting="unsafe")


@register("Selu", since=1)
class Selu(Unary):
    """Y = gamma * X for X > 0, else gamma * alpha * (exp(X) - 1) (defaults: the SELU constants
    rounded to float32, as in the ONNX spec)."""

    def prepare(self, inputs, values):
        self.alpha = float_attr(self, "alpha", 1.67326319217681884765625)
        self.gamma = float_attr(self, "gamma", 1.05070102214813232421875)
        return super().prepare(inputs, values)

    def fn(self, x, out):
        np.copyto(out, self.gamma * np.where(x > 0, x, self.alpha * np.expm1(x)), casting="unsafe")


@register("Sigmoid", since=6)
class Sigmoid(Unary):
    def run(self, inputs, outputs):
        out = outputs[0]
        # 1 / (1 + exp(-x)): exp overflows to inf for very negative x, giving the exact 0.
        with np.errstate(over="ignore"):
            np.negative(inputs[0], out=out)
            np.exp(out, out=out)
        np.add(out, 1, out=out)
        np.reciprocal(out, out=out)


@register("SigmoidGrad", since=1, domain="edgerun")
class SigmoidGrad(_ActivationGrad):
    """(dY, Y) -> dX = dY * Y * (1 - Y), with Y the Sigmoid output."""

    def run(self, inputs, outputs):
        dy, y = inputs
        out = outputs[0]
        np.subtract(1, y, out=out)
        np.multiply(out, y, out=out)
        np.multiply(out, dy, out=out)


@register("HardSigmoid", since=1)
class HardSigmoid(Unary):
    """Y = clip(alpha * X + beta, 0, 1); alpha defaults to 0.2, beta to 0.5."""

    def prepare(self, inputs, values):
        self.alpha = float_attr(self, "alpha", 0.2)
        self.beta = float_attr(self, "beta", 0.5)
        return super().prepare(inputs, values)

    def fn(self, x, out):
        np.copyto(out, np.clip(self.alpha * x + self.beta, 0, 1), casting="unsafe")


@register("Tanh", since=6)
class Tanh(Unary):
    def run(self, inputs, outputs):
        np.tanh(inputs[0], out=outputs[0])


@register("TanhGrad", since=1, domain="edgerun")
class TanhGrad(_ActivationGrad):
    """(dY, Y) -> dX = dY * (1 - Y^2), with Y the Tanh output."""

    def run(self, inputs, outputs):
        dy, y = inputs
        out = outputs[0]
        np.multiply(y, y, out=out)
        np.subtract(1, out, out=out)
        np.multiply(out, dy, out=out)


@register("Softplus", since=1)
class Softplus(Unary):
    """Y = log(1 + exp(X)), computed without overflow."""

    def fn(self, x, out):
        np.logaddexp(0, x, out=out)


@register("Softsign", since=1)
class Softsign(Unary):
    """Y = X / (1 + |X|)."""

    def fn(self, x, out):
        np.copyto(out, x / (1 + np.abs(x)), casting="unsafe")


@register("HardSwish", since=14)
class HardSwish(Unary):
    """Y = X * clip(X / 6 + 1/2, 0, 1)."""

    def fn(self, x, out):
        np.copyto(out, x * np.clip(x / 6 + 0.5, 0, 1), casting="unsafe")


@register("Mish", since=18)
class Mish(Unary):
    """Y = X * tanh(softplus(X))."""

    def fn(self, x, out):
        np.copyto(out, x * np.tanh(np.logaddexp(0, x)), casting="unsafe")


@register("Swish", since=24)
class Swish(Unary):
    """Y = X * sigmoid(alpha * X); alpha defaults to 1."""

    def prepare(self, inputs, values):
        self.alpha = float_attr(self, "alpha", 1.0)
        return super().prepare(inputs, values)

    def fn(self, x, out):
        np.copyto(out, x / (1 + np.exp(-self.alpha * x)), casting="unsafe")


@register("SwiGLU", since=28)
class SwiGLU(Kernel):
    """(A, B) -> Y = Swish_alpha(A) * B = A * sigmoid(alpha * A) * B (alpha default 1): a gate
    A and a value B of one float dtype and one shape (no broadcasting), Y of both. float16
    and bfloat16 are computed in float32 and rounded once."""

    min_inputs = max_inputs = 2

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        a, b = inputs
        require_kind(self, a, FLOAT_KINDS, "A")
        require_same_dtype(self, [a, b], "A and B")
        if a.shape != b.shape:
            raise self.fail(f"A shape {a.shape} and B shape {b.shape} must be equal (no broadcasting)")
        self.alpha = float_attr(self, "alpha", 1.0)
        return [a]

    def run(self, inputs, outputs):
        a, b = inputs
        if a.dtype.itemsize < 4:
            a, b = a.astype(np.float32), b.astype(np.float32)
        with np.errstate(all="ignore"):
            np.copyto(outputs[0], a / (1 + np.exp(-self.alpha * a)) * b, casting="unsafe")


@register("Gelu", since=20)
class Gelu(Unary):
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
class Shrink(Unary):
    """Y = X + bias where X < -lambd, X - bias where X > lambd, else 0 (bias 0, lambd 0.5)."""

    kinds = NUMERIC_KINDS

    def prepare(self, inputs, values):
        self.bias = float_attr(self, "bias", 0.0)
        self.lambd = float_attr(self, "lambd", 0.5)
        return super().prepare(inputs, values)

    def fn(self, x, out):
        y = np.where(x < -self.lambd, x + self.bias, np.where(x > self.lambd, x - self.bias, 0))
        np.copyto(out, y, casting="unsafe")


@register("Clip", since=1)
class Clip(Unary):
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
