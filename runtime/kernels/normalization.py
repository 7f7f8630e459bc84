"""Normalization and regularization kernels: BatchNormalization (and, for training, its
training-mode forms and gradients)."""

from __future__ import annotations

import numpy as np

from runtime.kernels.attrs import (
    FLOAT_KINDS,
    float_attr,
    int_attr,
    require_kind,
    require_rank,
)
from runtime.kernels.base import Kernel
from runtime.kernels.registry import register


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
