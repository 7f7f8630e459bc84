"""Elementwise kernels: unary math/activations and broadcasting binary ops, each activation
followed by its gradient kernel (edgerun domain), and SumTo, the gradient of broadcasting."""

from __future__ import annotations

import numpy as np

from runtime.kernels.attrs import FLOAT_KINDS, NUMERIC_KINDS, float_attr, require_kind, require_same_dtype
from runtime.kernels.base import Kernel, TensorSpec
from runtime.kernels.registry import register


class _Unary(Kernel):
    """One input, one output of the same shape and dtype, dtype kind in `kinds`."""

    kinds: str = FLOAT_KINDS

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        require_kind(self, inputs[0], self.kinds, "input 0")
        return [inputs[0]]


@register("Relu", since=6)
class Relu(_Unary):
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
class LeakyRelu(_Unary):
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


@register("Sigmoid", since=6)
class Sigmoid(_Unary):
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


@register("Tanh", since=6)
class Tanh(_Unary):
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


@register("Neg", since=6)
class Neg(_Unary):
    """Y = -X for floats and signed ints (a signed int's minimum wraps to itself)."""

    kinds = FLOAT_KINDS + "i"

    def run(self, inputs, outputs):
        np.negative(inputs[0], out=outputs[0])


@register("Neg", since=13)
class Neg13(Neg):
    """Neg-13 adds bfloat16, which numpy lacks: same kernel."""


def broadcast_shape(kernel: Kernel, shapes: list[tuple[int, ...]]) -> tuple[int, ...]:
    """numpy/ONNX multidirectional broadcasting; ModelError naming the node if impossible."""
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        raise kernel.fail(f"shapes {', '.join(map(str, shapes))} do not broadcast") from None


def check_broadcasts_to(kernel: Kernel, shape: tuple[int, ...], target: tuple[int, ...], what: str) -> None:
    """ModelError unless `shape` broadcasts to exactly `target` (numpy rules, one direction)."""
    trailing = zip(shape[::-1], target[::-1], strict=False)
    if len(shape) > len(target) or any(d not in (1, t) for d, t in trailing):
        raise kernel.fail(f"{what} shape {shape} does not broadcast to {target}")


def sum_to(x: np.ndarray, out: np.ndarray) -> None:
    """out = x summed over the axes along which out's shape broadcasts to x's: x's extra leading
    axes and the axes where out has 1 and x has not (the caller checks that it broadcasts)."""
    lead = x.ndim - out.ndim
    axes = tuple(range(lead)) + tuple(
        lead + i for i, d in enumerate(out.shape) if d == 1 and x.shape[lead + i] != 1
    )
    if not axes:
        np.copyto(out, x)
        return
    np.sum(x, axis=axes, keepdims=True, out=out.reshape((1,) * lead + out.shape, copy=False))


@register("SumTo", since=1, domain="edgerun")
class SumTo(Kernel):
    """(G, Like) -> G summed down to Like's shape, which must broadcast to G's; the gradient of a
    broadcasting op with respect to an operand shaped like Like. Only Like's shape is read."""

    min_inputs = max_inputs = 2

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        grad, like = inputs
        require_kind(self, grad, NUMERIC_KINDS, "G")
        check_broadcasts_to(self, like.shape, grad.shape, "Like")
        return [TensorSpec(grad.dtype, like.shape)]

    def run(self, inputs, outputs):
        sum_to(inputs[0], outputs[0])


class _Binary(Kernel):
    min_inputs = max_inputs = 2
    ufunc: np.ufunc

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        a, b = inputs
        if a.dtype != b.dtype:
            raise self.fail(f"input dtypes differ: {a.dtype} and {b.dtype}")
        require_kind(self, a, NUMERIC_KINDS, "input 0")
        return [TensorSpec(a.dtype, broadcast_shape(self, [a.shape, b.shape]))]

    def run(self, inputs, outputs):
        self.ufunc(inputs[0], inputs[1], out=outputs[0])


@register("Add", since=7)
class Add(_Binary):
    ufunc = np.add


@register("Sub", since=7)
class Sub(_Binary):
    ufunc = np.subtract


@register("Mul", since=7)
class Mul(_Binary):
    ufunc = np.multiply


@register("Div", since=7)
class Div(_Binary):
    """Float division is IEEE (x/0 is ±inf or nan). Integer division truncates
    toward zero as in C and ONNX Runtime, and x/0 gives 0 instead of trapping."""

    def prepare(self, inputs, values):
        specs = super().prepare(inputs, values)
        self.kind = specs[0].dtype.kind
        return specs

    def run(self, inputs, outputs):
        a, b = inputs
        out = outputs[0]
        if self.kind == "f":
            np.divide(a, b, out=out)
            return
        with np.errstate(all="ignore"):  # numpy yields 0 for x // 0; INT_MIN // -1 wraps
            np.floor_divide(a, b, out=out)
            if self.kind == "u":
                return
            # floor and truncation differ when the division is inexact and the signs differ
            inexact = np.remainder(a, b) != 0
        np.add(out, inexact & ((a < 0) != (b < 0)), out=out)
