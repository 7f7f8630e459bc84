"""Normalization and regularization kernels: BatchNormalization and Dropout for inference, and
for training (edgerun domain) their training-mode forms, each followed by its gradient."""

from __future__ import annotations

import numpy as np

from runtime.errors import InputError, ModelError
from runtime.kernels.attrs import (
    FLOAT_KINDS,
    float_attr,
    int_attr,
    prod,
    require_kind,
    require_rank,
)
from runtime.kernels.base import Kernel, TensorSpec
from runtime.kernels.registry import register
from runtime.kernels.spatial import scratch


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


@register("Dropout", since=7)
class Dropout(Kernel):
    """Inference: Y = X, and the optional mask is all kept (bool from opset 10, X's dtype before),
    as in the ONNX reference evaluator (onnxruntime's opset 7-11 kernel writes zeros instead).
    Opsets 7-11 give `ratio` as an attribute, which inference ignores but type-checks."""

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = inputs[0]
        require_kind(self, x, FLOAT_KINDS, "X")
        self._check_options(inputs, values)
        mask = np.dtype(bool) if self.version >= 10 else x.dtype
        return [x, TensorSpec(mask, x.shape)]

    def _check_options(self, inputs, values) -> None:
        float_attr(self, "ratio", 0.5)

    def run(self, inputs, outputs):
        np.copyto(outputs[0], inputs[0])
        if len(outputs) > 1:
            outputs[1].fill(1)


@register("Dropout", since=12)
@register("Dropout", since=13)
class Dropout12(Dropout):
    """Opsets 12 and 13: ratio (float scalar) and training_mode (bool scalar) are optional inputs.
    training_mode true is refused (training graphs use the edgerun DropoutTraining op): at
    prepare when it is a constant, else at run."""

    min_inputs, max_inputs = 1, 3

    def _check_options(self, inputs, values) -> None:
        for i, name, kinds in ((1, "ratio", FLOAT_KINDS), (2, "training_mode", "b")):
            spec = inputs[i] if i < len(inputs) else None
            if spec is not None:
                require_kind(self, spec, kinds, name)
                if spec.size != 1:
                    raise self.fail(f"{name} must be a scalar, got shape {spec.shape}")
        if len(values) > 2 and values[2] is not None and bool(np.asarray(values[2]).reshape(())):
            raise self._training_mode()

    def _training_mode(self) -> ModelError:
        return self.fail("training_mode=True is not supported (use the training converter's DropoutTraining)")

    def run(self, inputs, outputs):
        if len(inputs) > 2 and inputs[2] is not None and bool(inputs[2].reshape(())):
            raise self._training_mode()
        super().run(inputs, outputs)


@register("DropoutTraining", since=1, domain="edgerun")
class DropoutTraining(Kernel):
    """Inverted dropout: outputs Y = X * mask / (1 - ratio) and mask (bool, True = kept).

    Attributes ratio (0.5; the drop probability, in [0, 1)) and seed (0; >= 0). Each element
    is kept when a uniform [0, 1) draw is >= ratio. The draws come from
    np.random.default_rng(seed), made in prepare and advanced by every run: a sequence of
    runs is reproducible from `seed`, and preparing again (a resize, a new plan) restarts it.
    """

    deterministic = False

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = inputs[0]
        require_kind(self, x, FLOAT_KINDS, "X")
        self.ratio = _ratio(self)
        seed = int_attr(self, "seed", 0)
        if seed < 0:
            raise self.fail(f"seed {seed} must be >= 0")
        self.rng = np.random.default_rng(seed)
        return [x, TensorSpec(np.dtype(bool), x.shape)]

    def run(self, inputs, outputs):
        x, y = inputs[0], outputs[0]
        mask = outputs[1] if len(outputs) > 1 else np.empty(x.shape, bool)
        draws = self.rng.random(out=scratch("dropout.draws", x.shape, np.float64))
        np.greater_equal(draws, self.ratio, out=mask)
        np.multiply(x, mask, out=y)
        np.multiply(y, x.dtype.type(1 / (1 - self.ratio)), out=y)


@register("DropoutGrad", since=1, domain="edgerun")
class DropoutGrad(Kernel):
    """dX = dY * mask / (1 - ratio) from (dY, mask), with DropoutTraining's `ratio` attribute."""

    min_inputs = max_inputs = 2

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        dy, mask = inputs
        require_kind(self, dy, FLOAT_KINDS, "dY")
        require_kind(self, mask, "b", "mask")
        if mask.shape != dy.shape:
            raise self.fail(f"mask shape {mask.shape} differs from dY shape {dy.shape}")
        self.ratio = _ratio(self)
        return [dy]

    def run(self, inputs, outputs):
        dy, mask = inputs
        np.multiply(dy, mask, out=outputs[0])
        np.multiply(outputs[0], dy.dtype.type(1 / (1 - self.ratio)), out=outputs[0])


def _ratio(kernel: Kernel) -> float:
    ratio = float_attr(kernel, "ratio", 0.5)
    if not 0 <= ratio < 1:
        raise kernel.fail(f"ratio {ratio} must be in [0, 1)")
    return ratio
