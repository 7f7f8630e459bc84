"""Elementwise kernels: Relu, LeakyRelu, Sigmoid, Tanh and Neg, each activation followed by its
gradient kernel (edgerun domain); SumTo, the gradient of broadcasting; the broadcasting binary ops
(arithmetic, Pow, Mod, bit shifts and bitwise ops, logical ops and comparisons), Where, and the
variadic Max/Min/Sum/Mean. Other unary math and activations live in activations.py."""

from __future__ import annotations

import numpy as np

from edgerun.runtime.kernels.attrs import (
    FLOAT_KINDS,
    NUMERIC_KINDS,
    flag_attr,
    float_attr,
    int_attr,
    normalize_axis,
    require_kind,
    require_same_dtype,
    str_attr,
)
from edgerun.runtime.kernels.base import Kernel, TensorSpec
from edgerun.runtime.kernels.registry import register


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


# --- broadcasting binary ops ------------------------------------------------------------------


class _Binary(Kernel):
    """(A, B) -> C: A's dtype kind in `kinds`, B of A's dtype, numpy broadcasting from opset
    `legacy_until` on. Before it (the opset 1/6 forms) B is broadcast onto A only when attribute
    `broadcast` is 1, aligned with A's dimension `axis` (default: A's trailing dimensions), and C
    has A's shape; with `broadcast` 0 the shapes must be equal."""

    min_inputs = max_inputs = 2
    kinds: str = NUMERIC_KINDS
    legacy_until: int = 7
    ufunc: np.ufunc

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        a, b = inputs
        self.check_dtypes(a, b)
        return [TensorSpec(self.out_dtype(a, b), self.out_shape(a.shape, b.shape))]

    def check_dtypes(self, a: TensorSpec, b: TensorSpec) -> None:
        if a.dtype != b.dtype:
            raise self.fail(f"input dtypes differ: {a.dtype} and {b.dtype}")
        require_kind(self, a, self.kinds, "input 0")

    def out_dtype(self, a: TensorSpec, b: TensorSpec) -> np.dtype:
        return a.dtype

    def out_shape(self, a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
        self.b_shape: tuple[int, ...] | None = None  # B's shape aligned to A's (legacy form)
        if self.version >= self.legacy_until:
            return broadcast_shape(self, [a, b])
        if not flag_attr(self, "broadcast"):
            if a != b:
                raise self.fail(f"shapes {a} and {b} differ and attribute 'broadcast' is 0")
            return a
        aligned = b
        if self.attr("axis") is not None:
            axis = normalize_axis(self, int_attr(self, "axis"), len(a))
            if axis + len(b) > len(a):
                raise self.fail(f"B shape {b} does not fit A shape {a} from axis {axis}")
            aligned = b + (1,) * (len(a) - axis - len(b))
        check_broadcasts_to(self, aligned, a, "B")
        self.b_shape = aligned
        return a

    def operands(self, inputs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        a, b = inputs
        return a, b if self.b_shape is None else b.reshape(self.b_shape)

    def run(self, inputs, outputs):
        a, b = self.operands(inputs)
        self.ufunc(a, b, out=outputs[0])


@register("Add", since=1)
class Add(_Binary):
    ufunc = np.add


@register("Sub", since=1)
class Sub(_Binary):
    ufunc = np.subtract


@register("Mul", since=1)
class Mul(_Binary):
    ufunc = np.multiply


@register("Div", since=1)
class Div(_Binary):
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
class Pow(_Binary):
    """Z = X ** Y with Z of X's dtype (float or signed int); from opset 12 Y may be any numeric
    type. An integer power is exact (it wraps on overflow); a negative integer exponent gives the
    truncated quotient 1 / X**-Y (0 unless |X| is 1)."""

    def check_dtypes(self, a, b):
        require_kind(self, a, FLOAT_KINDS + "i", "X")
        require_kind(self, b, NUMERIC_KINDS, "Y")
        if self.version < 12 and a.dtype != b.dtype:
            raise self.fail(f"input dtypes differ: {a.dtype} and {b.dtype} (allowed from opset 12)")

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
class Mod(_Binary):
    """fmod=0: the remainder has the divisor's sign (Python's %); fmod=1: the dividend's sign
    (C fmod). Integer x mod 0 gives 0; float x mod 0 and inf mod y give nan."""

    def prepare(self, inputs, values):
        self.fmod = flag_attr(self, "fmod")
        return super().prepare(inputs, values)

    def run(self, inputs, outputs):
        with np.errstate(all="ignore"):
            (np.fmod if self.fmod else np.mod)(inputs[0], inputs[1], out=outputs[0])


@register("BitShift", since=11)
class BitShift(_Binary):
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


@register("BitwiseAnd", since=18)
class BitwiseAnd(_Binary):
    kinds = "iu"
    ufunc = np.bitwise_and


@register("BitwiseOr", since=18)
class BitwiseOr(_Binary):
    kinds = "iu"
    ufunc = np.bitwise_or


@register("BitwiseXor", since=18)
class BitwiseXor(_Binary):
    kinds = "iu"
    ufunc = np.bitwise_xor


# --- logical and comparison ops: bool results -------------------------------------------------


class _Logical(_Binary):
    """Bool results; inputs of one dtype, kind in `kinds`."""

    kinds = "b"

    def out_dtype(self, a, b):
        return np.dtype(np.bool_)


@register("And", since=1)
class And(_Logical):
    ufunc = np.logical_and


@register("Or", since=1)
class Or(_Logical):
    ufunc = np.logical_or


@register("Xor", since=1)
class Xor(_Logical):
    ufunc = np.logical_xor


@register("Equal", since=1)
class Equal(_Logical):
    kinds = NUMERIC_KINDS + "b"
    ufunc = np.equal


@register("Greater", since=1)
class Greater(_Logical):
    kinds = NUMERIC_KINDS
    ufunc = np.greater


@register("Less", since=1)
class Less(_Logical):
    kinds = NUMERIC_KINDS
    ufunc = np.less


@register("GreaterOrEqual", since=12)
class GreaterOrEqual(_Logical):
    kinds = NUMERIC_KINDS
    ufunc = np.greater_equal


@register("LessOrEqual", since=12)
class LessOrEqual(_Logical):
    kinds = NUMERIC_KINDS
    ufunc = np.less_equal


@register("Where", since=9)
class Where(Kernel):
    """(Condition, X, Y) -> X where Condition else Y, all three broadcast; X and Y share a dtype."""

    min_inputs = max_inputs = 3

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        cond, x, y = inputs
        require_kind(self, cond, "b", "condition")
        require_same_dtype(self, [x, y], "X and Y")
        return [TensorSpec(x.dtype, broadcast_shape(self, [cond.shape, x.shape, y.shape]))]

    def run(self, inputs, outputs):
        cond, x, y = inputs
        np.copyto(outputs[0], y)
        np.copyto(outputs[0], x, where=cond)


# --- variadic ops: any number of inputs, broadcast together ----------------------------------


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
