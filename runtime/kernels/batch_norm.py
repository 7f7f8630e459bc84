"""Batch normalization: BatchNormalization (inference, and opset 14's training mode), and for
training (edgerun domain) BatchNormTraining followed by its gradient BatchNormGrad.
"""

from __future__ import annotations

import numpy as np

from edgerun.runtime.errors import InputError
from edgerun.runtime.kernels.attrs import FLOAT_KINDS, flag_attr, float_attr, int_attr, prod, require_kind, require_rank
from edgerun.runtime.kernels.base import Kernel, TensorSpec
from edgerun.runtime.kernels.registry import register


@register("BatchNormalization", since=1)
class BatchNormalization(Kernel):
    """Inference: Y = (X - mean) / sqrt(var + epsilon) * scale + B along axis 1. Opsets 1-8:
    `spatial=0` takes (C, *spatial)-shaped parameters; opsets 1-6 `is_test` and the extra
    training outputs are ignored (inference always)."""

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
    """Opset 14 adds training_mode. With training_mode=1, Y normalizes with the batch's own mean
    and (biased) variance over every axis but 1, and the outputs running_mean and running_var are
    input_mean * momentum + batch_mean * (1 - momentum) (the variance likewise), as the spec's
    reference computes. Statistics accumulate in float64."""

    def prepare(self, inputs, values):
        specs = super().prepare(inputs, values)
        self.training = flag_attr(self, "training_mode")
        self.momentum = float_attr(self, "momentum", 0.9)
        if self.training and 0 in inputs[0].shape[:1] + inputs[0].shape[2:]:
            raise self.fail(f"X shape {inputs[0].shape} has no values to take statistics of")
        channels = TensorSpec(inputs[3].dtype, inputs[3].shape)
        return specs + ([channels, channels] if self.training else [])

    def run(self, inputs, outputs):
        if not self.training:
            super().run(inputs, outputs)
            return
        x, scale, bias, mean, var = inputs
        axes = (0,) + tuple(range(2, x.ndim))
        batch_mean = np.mean(x, axis=axes, dtype=np.float64)
        batch_var = np.var(x, axis=axes, dtype=np.float64)
        mul, add = self._coefficients((scale, bias, batch_mean, batch_var), x.dtype)
        np.multiply(x, mul, out=outputs[0])
        np.add(outputs[0], add, out=outputs[0])
        keep = self.momentum
        for out, old, new in zip(outputs[1:], (mean, var), (batch_mean, batch_var), strict=False):
            np.copyto(out, old * keep + new * (1 - keep), casting="unsafe")


@register("BatchNormTraining", since=1, domain="edgerun")
class BatchNormTraining(Kernel):
    """Training-mode batch normalization over axis 1, with batch statistics.

    Inputs X (N, C, *spatial), scale, B, running_mean, running_var (each (C,)); attributes
    epsilon (1e-5) and momentum (0.9, in [0, 1]). Outputs Y, new_running_mean,
    new_running_var, saved_mean, saved_inv_std (each (C,) but Y):
        mean, var = per-channel mean and biased variance over every axis but 1
        Y = (X - mean) / sqrt(var + epsilon) * scale + B
        new_running_mean = running_mean * momentum + mean * (1 - momentum)
        new_running_var = running_var * momentum + var * m / (m - 1) * (1 - momentum)
    where m is the count per channel: the running variance takes the unbiased batch
    variance, as PyTorch does (ONNX leaves this open). Statistics accumulate in float64.
    ModelError when a channel has fewer than two values (no unbiased variance).
    """

    min_inputs = max_inputs = 5

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = inputs[0]
        _check_channel_params(self, x, inputs[1:], ("scale", "B", "running_mean", "running_var"))
        self.epsilon = float_attr(self, "epsilon", 1e-5)
        self.momentum = float_attr(self, "momentum", 0.9)
        if not self.epsilon >= 0 or not 0 <= self.momentum <= 1:
            raise self.fail(f"epsilon {self.epsilon} must be >= 0 and momentum {self.momentum} in [0, 1]")
        # Fewer than 2 values per channel is an input problem (a batch of 1 sample
        # after a Gemm), refused at run time: a dynamic batch prepares with 1 first.
        self.count = prod(x.shape[:1] + x.shape[2:])
        channels = TensorSpec(x.dtype, x.shape[1:2])
        return [x, channels, channels, channels, channels]

    def run(self, inputs, outputs):
        x, scale, bias, running_mean, running_var = inputs
        if self.count < 2:
            raise InputError(f"node {self.name!r} (BatchNormTraining): X shape {x.shape} has {self.count} "
                             "value(s) per channel; training needs at least 2 (use a larger batch)")
        y = outputs[0]
        shape = _channel_shape(x)
        mean = np.einsum("ncs->c", _planes(x), dtype=np.float64) / self.count
        np.subtract(x, mean.astype(x.dtype).reshape(shape), out=y)
        centred = _planes(y)
        var = np.einsum("ncs,ncs->c", centred, centred, dtype=np.float64) / self.count
        inv_std = 1.0 / np.sqrt(var + self.epsilon)
        np.multiply(y, (inv_std * scale).astype(x.dtype).reshape(shape), out=y)
        np.add(y, bias.reshape(shape), out=y)
        keep = self.momentum
        unbiased = var * self.count / (self.count - 1)
        results = (running_mean * keep + mean * (1 - keep), running_var * keep + unbiased * (1 - keep),
                   mean, inv_std)
        for out, result in zip(outputs[1:], results, strict=False):
            np.copyto(out, result, casting="same_kind")


@register("BatchNormGrad", since=1, domain="edgerun")
class BatchNormGrad(Kernel):
    """(dX, dscale, dB) of BatchNormTraining's Y from (dY, X, scale, saved_mean, saved_inv_std).

    With xhat = (X - mean) * inv_std and m values per channel:
        dB = sum(dY), dscale = sum(dY * xhat), dX = scale * inv_std * (dY - dB/m - xhat * dscale/m)
    (sums per channel over every axis but 1, accumulated in float64). The running statistics
    take no gradient. Missing trailing outputs are skipped.
    """

    min_inputs = max_inputs = 5

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        dy, x = inputs[0], inputs[1]
        _check_channel_params(self, x, inputs[2:], ("scale", "saved_mean", "saved_inv_std"))
        if dy.dtype != x.dtype or dy.shape != x.shape:
            raise self.fail(f"dY is {dy.dtype} {dy.shape}; Y is {x.dtype} {x.shape}")
        self.count = prod(x.shape[:1] + x.shape[2:])
        channels = TensorSpec(x.dtype, x.shape[1:2])
        return [x, channels, channels]

    def run(self, inputs, outputs):
        dy, x, scale, mean, inv_std = inputs
        dx = outputs[0]
        shape, m = _channel_shape(x), self.count
        db = np.einsum("ncs->c", _planes(dy), dtype=np.float64)
        np.subtract(x, mean.reshape(shape), out=dx)  # dx holds X - mean = xhat / inv_std for now
        dscale = np.einsum("ncs,ncs->c", _planes(dy), _planes(dx), dtype=np.float64) * inv_std
        # dX = scale * inv_std * (dY - (X - mean) * inv_std * dscale / m - dB / m)
        np.multiply(dx, (inv_std * dscale / m).astype(x.dtype).reshape(shape), out=dx)
        np.add(dx, (db / m).astype(x.dtype).reshape(shape), out=dx)
        np.subtract(dy, dx, out=dx)
        np.multiply(dx, (scale * inv_std).reshape(shape), out=dx)
        for out, result in zip(outputs[1:], (dscale, db), strict=False):
            np.copyto(out, result, casting="same_kind")


def _check_channel_params(kernel: Kernel, x: TensorSpec, params: list, names: tuple[str, ...]) -> None:
    """X is a float (N, C, ...) tensor and each named parameter is (C,) of X's dtype."""
    require_kind(kernel, x, FLOAT_KINDS, "X")
    require_rank(kernel, x, 2, what="X (N, C, ...)")
    for name, spec in zip(names, params, strict=True):
        if spec is None or spec.dtype != x.dtype or spec.shape != x.shape[1:2]:
            got = "nothing" if spec is None else f"{spec.dtype} {spec.shape}"
            raise kernel.fail(f"{name} must be {x.dtype} {x.shape[1:2]} for X {x.shape}, got {got}")


def _planes(x: np.ndarray) -> np.ndarray:
    """(N, C, *spatial) viewed (N, C, S) for per-channel sums (a copy if the strides need it)."""
    return x.reshape(x.shape[0], x.shape[1], prod(x.shape[2:]))


def _channel_shape(x: np.ndarray) -> tuple[int, ...]:
    return (x.shape[1],) + (1,) * (x.ndim - 2)
