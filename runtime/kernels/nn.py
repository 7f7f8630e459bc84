"""Neural-network kernels: MatMul, Gemm, Softmax, BatchNormalization.

Conv lives in conv.py and the pools in pool.py.
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


@register("BatchNormalization", since=7)
class BatchNormalization(Kernel):
    """Inference only: Y = (X - mean) / sqrt(var + epsilon) * scale + B along axis 1. Opset 7-8
    `spatial=0` takes (C, *spatial)-shaped parameters; opset 14 refuses training_mode=1."""

    min_inputs = max_inputs = 5

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = inputs[0]
        require_kind(self, x, FLOAT_KINDS, "X")
        require_rank(self, x, 2, what="X (N, C, ...)")
        param_shape = self._param_shape(x.shape)
        for name, spec in zip(("scale", "B", "mean", "var"), inputs[1:], strict=True):
            require_kind(self, spec, FLOAT_KINDS, name)
            if spec.shape != param_shape:
                raise self.fail(f"{name} shape {spec.shape} must be {param_shape} for X {x.shape}")
        self.epsilon = float_attr(self, "epsilon", 1e-5)
        self.param_shape = param_shape + (1,) * (len(x.shape) - 1 - len(param_shape))
        params = values[1:5]
        self.coeffs = None
        if all(p is not None for p in params):
            self.coeffs = self._coefficients(params, x.dtype)
        return [x]

    def _param_shape(self, x: tuple[int, ...]) -> tuple[int, ...]:
        spatial = int_attr(self, "spatial", 1)
        if spatial not in (0, 1):
            raise self.fail(f"attribute 'spatial' must be 0 or 1, got {spatial}")
        return x[1:2] if spatial else x[1:]

    def _coefficients(self, params, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
        """(mul, add) with Y = X * mul + add, computed in float64, shaped to broadcast."""
        scale, bias, mean, var = (np.asarray(p, np.float64) for p in params)
        with np.errstate(all="ignore"):  # negative variances give nan, as they would in ORT
            mul = scale / np.sqrt(var + self.epsilon)
            add = bias - mean * mul
            return (mul.astype(dtype).reshape(self.param_shape),
                    add.astype(dtype).reshape(self.param_shape))

    def run(self, inputs, outputs):
        x, out = inputs[0], outputs[0]
        mul, add = self.coeffs or self._coefficients(inputs[1:5], x.dtype)
        np.multiply(x, mul, out=out)
        np.add(out, add, out=out)


@register("BatchNormalization", since=9)
class BatchNormalization9(BatchNormalization):
    """Opset 9 drops `spatial`: parameters are always per channel."""

    def _param_shape(self, x: tuple[int, ...]) -> tuple[int, ...]:
        return x[1:2]


@register("BatchNormalization", since=14)
class BatchNormalization14(BatchNormalization9):
    """Opset 14 adds training_mode; only inference (0) is supported."""

    def _param_shape(self, x: tuple[int, ...]) -> tuple[int, ...]:
        if int_attr(self, "training_mode", 0) != 0:
            raise self.fail("training_mode=1 is not supported (inference kernels only)")
        return x[1:2]
