"""Neural-network kernels: MatMul, Gemm, Softmax.

Conv lives in conv.py, the pools in pool.py, normalization in normalization.py.
"""

from __future__ import annotations

import numpy as np

from runtime.kernels.attrs import (
    FLOAT_KINDS,
    NUMERIC_KINDS,
    flag_attr,
    float_attr,
    int_attr,
    normalize_axis,
    prod,
    require_kind,
    require_rank,
    require_same_dtype,
)
from runtime.kernels.base import Kernel, TensorSpec
from runtime.kernels.elementwise import broadcast_shape
from runtime.kernels.registry import register


@register("MatMul", since=1)
class MatMul(Kernel):
    """numpy.matmul: 1-D operands are promoted and the added axis dropped; batch axes broadcast."""

    min_inputs = max_inputs = 2

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        a, b = inputs
        require_same_dtype(self, [a, b], "A and B")
        require_kind(self, a, NUMERIC_KINDS, "A")
        return [TensorSpec(a.dtype, matmul_shape(self, a.shape, b.shape))]

    def run(self, inputs, outputs):
        np.matmul(inputs[0], inputs[1], out=outputs[0])


def matmul_shape(kernel: Kernel, a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    """Result shape of numpy.matmul(a, b); the node's ModelError when they do not multiply."""
    if not a or not b:
        raise kernel.fail(f"MatMul needs inputs of rank >= 1, got shapes {a} and {b}")
    a2 = (1,) + a if len(a) == 1 else a
    b2 = b + (1,) if len(b) == 1 else b
    if a2[-1] != b2[-2]:
        raise kernel.fail(f"inner dimensions differ: A shape {a}, B shape {b}")
    batch = broadcast_shape(kernel, [a2[:-2], b2[:-2]])
    rows = a2[-2:-1] if len(a) > 1 else ()
    cols = b2[-1:] if len(b) > 1 else ()
    return batch + rows + cols


@register("Gemm", since=7)
class Gemm(Kernel):
    """Y = alpha * A' @ B' + beta * C with A' = A.T when transA (B' likewise); A', B' are 2-D
    and C broadcasts to Y's (M, N). C is required before opset 11."""

    min_inputs, max_inputs = 3, 3

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        a, b = inputs[0], inputs[1]
        c = inputs[2] if len(inputs) > 2 else None
        require_same_dtype(self, [s for s in (a, b, c) if s is not None], "A, B and C")
        require_kind(self, a, NUMERIC_KINDS, "A")
        require_rank(self, a, 2, 2, what="A")
        require_rank(self, b, 2, 2, what="B")
        self.trans_a, self.trans_b = flag_attr(self, "transA"), flag_attr(self, "transB")
        m, k = a.shape[::-1] if self.trans_a else a.shape
        k2, n = b.shape[::-1] if self.trans_b else b.shape
        if k != k2:
            raise self.fail(f"inner dimensions differ: A' is ({m}, {k}), B' is ({k2}, {n})")
        self.alpha, self.beta = self._scalar("alpha", a.dtype), self._scalar("beta", a.dtype)
        self.use_c = c is not None and self.beta != 0
        if c is not None:
            self._check_c(c.shape, (m, n))
        self.c_term = self._constant_term(values[2] if len(values) > 2 else None)
        return [TensorSpec(a.dtype, (m, n))]

    def _constant_term(self, c: np.ndarray | None) -> np.ndarray | None:
        """beta * C computed once when C is a constant; None when C is absent or not constant."""
        if not self.use_c or c is None or self.beta == 1:
            return c if self.use_c else None
        with np.errstate(all="ignore"):
            return c * self.beta

    def _scalar(self, key: str, dtype: np.dtype) -> np.generic:
        value = float_attr(self, key, 1.0)
        if dtype.kind == "f":
            with np.errstate(over="ignore"):  # a huge alpha becomes inf, as in ONNX Runtime
                return dtype.type(value)
        info = np.iinfo(dtype)
        if not value.is_integer() or not info.min <= value <= info.max:
            raise self.fail(f"{key}={value} is not representable in the inputs' {dtype}")
        return dtype.type(int(value))

    def _check_c(self, c: tuple[int, ...], y: tuple[int, int]) -> None:
        if len(c) > 2 or any(dc not in (1, dy) for dc, dy in zip(c[::-1], y[::-1], strict=False)):
            raise self.fail(f"C shape {c} does not broadcast to the output shape {y}")

    def run(self, inputs, outputs):
        a, b, out = inputs[0], inputs[1], outputs[0]
        np.matmul(a.T if self.trans_a else a, b.T if self.trans_b else b, out=out)
        if self.alpha != 1:
            np.multiply(out, self.alpha, out=out)
        if self.use_c:
            c = self.c_term if self.c_term is not None else inputs[2] * self.beta
            np.add(out, c, out=out)


@register("Gemm", since=11)
class Gemm11(Gemm):
    """Gemm-11 makes C optional."""

    min_inputs = 2


@register("Softmax", since=1)
class Softmax(Kernel):
    """Before opset 13: X viewed as 2-D (prod(shape[:axis]), prod(shape[axis:])), softmax over
    each row; axis defaults to 1 and may be negative from opset 11."""

    default_axis = 1
    negative_axis = False

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = inputs[0]
        require_kind(self, x, FLOAT_KINDS, "input")
        self.axis = normalize_axis(
            self, int_attr(self, "axis", self.default_axis), len(x.shape), negative=self.negative_axis
        )
        self.rows = (prod(x.shape[: self.axis]), prod(x.shape[self.axis :]))
        return [x]

    def run(self, inputs, outputs):
        out = outputs[0].reshape(self.rows, copy=False)
        softmax(inputs[0].reshape(self.rows), out, axis=1)


@register("Softmax", since=11)
class Softmax11(Softmax):
    negative_axis = True


@register("Softmax", since=13)
class Softmax13(Softmax11):
    """From opset 13: softmax along one axis (default -1), other axes independent."""

    default_axis = -1

    def run(self, inputs, outputs):
        softmax(inputs[0], outputs[0], axis=self.axis)


def softmax(x: np.ndarray, out: np.ndarray, axis: int) -> None:
    """out = exp(x - max) / sum(exp(x - max)) along `axis`; out may not alias x."""
    if out.size == 0:
        return
    np.subtract(x, np.max(x, axis=axis, keepdims=True), out=out)
    np.exp(out, out=out)
    np.divide(out, np.sum(out, axis=axis, keepdims=True), out=out)
