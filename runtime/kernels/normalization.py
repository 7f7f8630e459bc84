"""Normalization kernels other than batch normalization (batch_norm.py): LayerNormalization,
RMSNormalization, InstanceNormalization, GroupNormalization, LRN, LpNormalization and
MeanVarianceNormalization. Statistics are computed in float64.
"""

from __future__ import annotations

import numpy as np

from edgerun.runtime.kernels.attrs import (
    FLOAT_KINDS,
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
        shape = (x.shape[1],) + (1,) * (x.ndim - 2)
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
