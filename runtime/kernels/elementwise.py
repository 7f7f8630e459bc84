"""Elementwise kernels: unary math/activations and broadcasting binary ops."""

from __future__ import annotations

import numpy as np

from runtime.kernels.attrs import FLOAT_KINDS, NUMERIC_KINDS, require_kind
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


@register("Tanh", since=6)
class Tanh(_Unary):
    def run(self, inputs, outputs):
        np.tanh(inputs[0], out=outputs[0])


def broadcast_shape(kernel: Kernel, shapes: list[tuple[int, ...]]) -> tuple[int, ...]:
    """numpy/ONNX multidirectional broadcasting; ModelError naming the node if impossible."""
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        raise kernel.fail(f"shapes {', '.join(map(str, shapes))} do not broadcast") from None


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
