"""Normalization and regularization kernels: BatchNormalization and Dropout for inference, and
for training (edgerun domain) their training-mode forms, each followed by its gradient."""

from __future__ import annotations

import numpy as np

from edgerun.runtime.errors import InputError
from edgerun.runtime.kernels.attrs import (
    FLOAT_KINDS,
    flag_attr,
    float_attr,
    int_attr,
    ints_attr,
    normalize_axis,
    prod,
    require_kind,
    require_rank,
)
from edgerun.runtime.kernels.base import Kernel, TensorSpec
from edgerun.runtime.kernels.registry import register
from edgerun.runtime.kernels.spatial import scratch


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


@register("Dropout", since=1)
class Dropout(Kernel):
    """Inference: Y = X, and the optional mask is all kept (bool from opset 10, X's dtype before),
    as in the ONNX reference evaluator (onnxruntime's opset 7-11 kernel writes zeros instead).
    Opsets 1-11 give `ratio` as an attribute, which inference ignores but type-checks; opsets
    1-6 `is_test` is ignored too."""

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
    """Opsets 12 and 13: ratio (float scalar, default 0.5) and training_mode (bool scalar, default
    false) are optional inputs. In training mode with ratio > 0, each element is kept where a
    uniform [0, 1) draw is >= ratio and scaled by 1 / (1 - ratio). The draws come from
    numpy's legacy MT19937 (RandomState) seeded with the `seed` attribute, as the ONNX test
    generator draws them, created at prepare and advanced by each run; without `seed` the
    generator is seeded from the OS, so the mask differs between runs."""

    min_inputs, max_inputs = 1, 3
    deterministic = False  # until prepare shows training mode is off: a random mask must not be folded

    def _check_options(self, inputs, values) -> None:
        for i, name, kinds in ((1, "ratio", FLOAT_KINDS), (2, "training_mode", "b")):
            spec = inputs[i] if i < len(inputs) else None
            if spec is not None:
                require_kind(self, spec, kinds, name)
                if spec.size != 1:
                    raise self.fail(f"{name} must be a scalar, got shape {spec.shape}")
        training = values[2] if len(values) > 2 else None
        off = len(inputs) < 3 or inputs[2] is None or (training is not None and not bool(training.reshape(())))
        self.deterministic = off
        seed = self.attr("seed")
        self.rng = np.random.RandomState(None if seed is None else int_attr(self, "seed") % (1 << 32))

    def run(self, inputs, outputs):
        training = len(inputs) > 2 and inputs[2] is not None and bool(inputs[2].reshape(()))
        ratio = float(inputs[1].reshape(())) if len(inputs) > 1 and inputs[1] is not None else 0.5
        if not training or ratio == 0:
            super().run(inputs, outputs)
            return
        if not 0 <= ratio < 1:
            raise InputError(f"node {self.name!r} (Dropout): ratio {ratio} must be in [0, 1)")
        x, y = inputs[0], outputs[0]
        mask = self.rng.uniform(0, 1.0, x.shape) >= ratio
        np.multiply(x, mask, out=y)
        np.multiply(y, x.dtype.type(1 / (1 - ratio)), out=y)
        if len(outputs) > 1:
            np.copyto(outputs[1], mask)


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


# ------------------------------------------------------------------ normalizations over axes
def _standardize(x: np.ndarray, axes: tuple[int, ...], epsilon: float) -> tuple[np.ndarray, ...]:
    """(X - mean) / sqrt(var + epsilon) over `axes` in float64, with the mean and 1/std (keepdims)."""
    x64 = x.astype(np.float64)
    mean = np.mean(x64, axis=axes, keepdims=True)
    centred = x64 - mean
    inv_std = 1.0 / np.sqrt(np.mean(centred * centred, axis=axes, keepdims=True) + epsilon)
    return centred * inv_std, mean, inv_std


def _stash_dtype(kernel: Kernel) -> None:
    """stash_type must be 1 (float32 statistics; we use float64, which is at least as exact)."""
    stash = int_attr(kernel, "stash_type", 1)
    if stash not in (1, 11, 16):
        raise kernel.fail(f"stash_type {stash} is not a float type")


def _require_broadcast(kernel: Kernel, spec: TensorSpec | None, shape: tuple[int, ...], name: str) -> None:
    if spec is None:
        return
    if len(spec.shape) > len(shape) or any(
        d not in (1, t) for d, t in zip(spec.shape[::-1], shape[::-1], strict=False)
    ):
        raise kernel.fail(f"{name} shape {spec.shape} does not broadcast to {shape}")


@register("LayerNormalization", since=17)
class LayerNormalization(Kernel):
    """Y = (X - mean) / sqrt(var + epsilon) * Scale + B, statistics over the axes from `axis`
    (default -1) on; Scale and B broadcast to X's trailing axes. Optional outputs Mean and
    InvStdDev, shaped X.shape[:axis] + (1,) * (rank - axis), in X's dtype."""

    min_inputs, max_inputs = 2, 3

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = inputs[0]
        require_kind(self, x, FLOAT_KINDS, "X")
        rank = len(x.shape)
        axis = normalize_axis(self, int_attr(self, "axis", -1), rank)
        self.axes = tuple(range(axis, rank))
        self.epsilon = float_attr(self, "epsilon", 1e-5)
        _stash_dtype(self)
        for i, name in ((1, "Scale"), (2, "B")):
            _require_broadcast(self, inputs[i] if len(inputs) > i else None, x.shape, name)
        stats = TensorSpec(x.dtype, x.shape[:axis] + (1,) * (rank - axis))
        return [x, stats, stats]

    def run(self, inputs, outputs):
        x = inputs[0]
        y, mean, inv_std = _standardize(x, self.axes, self.epsilon)
        y = y * inputs[1]
        if len(inputs) > 2 and inputs[2] is not None:
            y = y + inputs[2]
        for out, result in zip(outputs, (y, mean, inv_std), strict=False):
            np.copyto(out, result, casting="unsafe")


@register("RMSNormalization", since=23)
class RMSNormalization(Kernel):
    """Y = X / sqrt(mean(X^2) + epsilon) * Scale, the mean over the axes from `axis` (default -1)."""

    min_inputs = max_inputs = 2

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = inputs[0]
        require_kind(self, x, FLOAT_KINDS, "X")
        rank = len(x.shape)
        self.axes = tuple(range(normalize_axis(self, int_attr(self, "axis", -1), rank), rank))
        self.epsilon = float_attr(self, "epsilon", 1e-5)
        _stash_dtype(self)
        _require_broadcast(self, inputs[1], x.shape, "scale")
        return [x]

    def run(self, inputs, outputs):
        x64 = inputs[0].astype(np.float64)
        rms = np.sqrt(np.mean(x64 * x64, axis=self.axes, keepdims=True) + self.epsilon)
        np.copyto(outputs[0], x64 / rms * inputs[1], casting="unsafe")


def _check_float_nc(kernel: Kernel, x: TensorSpec) -> None:
    require_kind(kernel, x, FLOAT_KINDS, "X")
    require_rank(kernel, x, 2, what="X (N, C, ...)")


class _ChannelNorm(Kernel):
    """X (N, C, *spatial) with per-channel scale and bias, each (C,)."""

    min_inputs = max_inputs = 3

    def _check(self, inputs, params: int) -> TensorSpec:
        """X and the parameters (each holding `params` values); sets epsilon."""
        x = inputs[0]
        for name, spec in zip(("scale", "B"), inputs[1:3], strict=True):
            if spec.size != params:
                raise self.fail(f"{name} shape {spec.shape} must hold {params} values for X {x.shape}")
        self.epsilon = float_attr(self, "epsilon", 1e-5)
        return x


@register("InstanceNormalization", since=1)
class InstanceNormalization(_ChannelNorm):
    """Y = (X - mean) / sqrt(var + epsilon) * scale + B, statistics per sample and channel."""

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        _check_float_nc(self, inputs[0])
        x = self._check(inputs, inputs[0].shape[1])
        self.axes = tuple(range(2, len(x.shape)))
        return [x]

    def run(self, inputs, outputs):
        x, scale, bias = inputs
        shape = _channel_shape(x)
        y = _standardize(x, self.axes, self.epsilon)[0] * scale.reshape(shape) + bias.reshape(shape)
        np.copyto(outputs[0], y, casting="unsafe")


@register("GroupNormalization", since=18)
class GroupNormalization(_ChannelNorm):
    """Y = per (sample, group of C / num_groups channels) standardization * scale + bias.
    Opset 18 gives scale and bias per group; opset 21 per channel."""

    per_channel = False

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = inputs[0]
        _check_float_nc(self, x)
        self.groups = int_attr(self, "num_groups")
        if self.groups < 1 or x.shape[1] % self.groups:
            raise self.fail(f"num_groups {self.groups} must divide the channels of X {x.shape}")
        self._check(inputs, x.shape[1] if self.per_channel else self.groups)
        _stash_dtype(self)
        return [x]

    def run(self, inputs, outputs):
        x, scale, bias = inputs
        n, c = x.shape[:2]
        grouped = x.reshape(n, self.groups, prod(x.shape[1:]) // self.groups)
        y = _standardize(grouped, (2,), self.epsilon)[0]
        if self.per_channel:
            y = y.reshape(x.shape)
        else:
            y = y.reshape((n, self.groups, c // self.groups) + x.shape[2:])
        shape = (1, -1) + (1,) * (y.ndim - 2)
        y = y * scale.reshape(shape) + bias.reshape(shape)
        np.copyto(outputs[0], y.reshape(x.shape), casting="unsafe")


@register("GroupNormalization", since=21)
class GroupNormalization21(GroupNormalization):
    per_channel = True


@register("LRN", since=1)
class LRN(Kernel):
    """Local response normalization across channels: Y = X / (bias + alpha / size * square_sum)^beta,
    square_sum over channels c - floor((size - 1) / 2) .. c + ceil((size - 1) / 2)."""

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = inputs[0]
        require_kind(self, x, FLOAT_KINDS, "X")
        require_rank(self, x, 3, what="X (N, C, *spatial)")
        self.size = int_attr(self, "size")
        if self.size < 1:
            raise self.fail(f"size {self.size} must be >= 1")
        self.alpha = float_attr(self, "alpha", 1e-4)
        self.beta = float_attr(self, "beta", 0.75)
        self.bias = float_attr(self, "bias", 1.0)
        return [x]

    def run(self, inputs, outputs):
        x = inputs[0].astype(np.float64)
        c = x.shape[1]
        before, after = (self.size - 1) // 2, self.size - 1 - (self.size - 1) // 2
        cumulative = np.concatenate([np.zeros_like(x[:, :1]), np.cumsum(x * x, axis=1)], axis=1)
        hi = np.minimum(np.arange(c) + after + 1, c)
        lo = np.maximum(np.arange(c) - before, 0)
        square_sum = cumulative[:, hi] - cumulative[:, lo]
        y = x / (self.bias + self.alpha / self.size * square_sum) ** self.beta
        np.copyto(outputs[0], y, casting="unsafe")


@register("LpNormalization", since=1)
class LpNormalization(Kernel):
    """Y = X / ||X||_p along `axis` (default -1), p 1 or 2 (default 2); 0 where the norm is 0."""

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = inputs[0]
        require_kind(self, x, FLOAT_KINDS, "input")
        self.axis = normalize_axis(self, int_attr(self, "axis", -1), len(x.shape))
        self.p = int_attr(self, "p", 2)
        if self.p not in (1, 2):
            raise self.fail(f"p {self.p} must be 1 or 2")
        return [x]

    def run(self, inputs, outputs):
        x = inputs[0].astype(np.float64)
        if self.p == 1:
            norm = np.sum(np.abs(x), axis=self.axis, keepdims=True)
        else:
            norm = np.sqrt(np.sum(x * x, axis=self.axis, keepdims=True))
        with np.errstate(divide="ignore", invalid="ignore"):
            y = np.where(norm == 0, 0, x / norm)
        np.copyto(outputs[0], y, casting="unsafe")


@register("MeanVarianceNormalization", since=9)
class MeanVarianceNormalization(Kernel):
    """Y = (X - mean) / (sqrt(mean(X^2) - mean^2) + 1e-9) over `axes` (default [0, 2, 3])."""

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = inputs[0]
        require_kind(self, x, FLOAT_KINDS, "X")
        axes = ints_attr(self, "axes") or (0, 2, 3)
        self.axes = tuple(sorted({normalize_axis(self, a, len(x.shape)) for a in axes}))
        return [x]

    def run(self, inputs, outputs):
        x = inputs[0].astype(np.float64)
        mean = np.mean(x, axis=self.axes, keepdims=True)
        std = np.sqrt(np.maximum(np.mean(x * x, axis=self.axes, keepdims=True) - mean * mean, 0))
        np.copyto(outputs[0], (x - mean) / (std + 1e-9), casting="unsafe")
