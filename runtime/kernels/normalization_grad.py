"""Gradient kernel (edgerun domain) of LayerNormalization (normalization.py): LayerNormalizationGrad.
Like the forward, it works in float64 and recomputes the statistics from X."""

from __future__ import annotations

import numpy as np

from edgerun.runtime.kernels.attrs import prod
from edgerun.runtime.kernels.base import Kernel, TensorSpec
from edgerun.runtime.kernels.elementwise import sum_to
from edgerun.runtime.kernels.normalization import LayerNormalization, _standardize
from edgerun.runtime.kernels.registry import register


@register("LayerNormalizationGrad", since=1, domain="edgerun")
class LayerNormalizationGrad(Kernel):
    """(dY, X, Scale[, B, dMean, dInvStdDev]; axis, epsilon, stash_type) -> (dX, dScale[, dB]) of
    (Y, Mean, InvStdDev) = LayerNormalization(X, Scale[, B]): dB only when B is given. dY, dMean
    and dInvStdDev are the gradients of the three outputs; any may be omitted (no gradient
    reaches that output), but not all. Of B only the shape is read. ModelError unless each
    gradient has its output's shape and X's dtype."""

    min_inputs, max_inputs = 0, 6

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        dy, x, scale, bias, d_mean, d_inv_std = (list(inputs) + [None] * 6)[:6]
        if x is None or scale is None:
            raise self.fail("inputs X (1) and Scale (2) are required")
        if dy is None and d_mean is None and d_inv_std is None:
            raise self.fail("at least one of dY, dMean and dInvStdDev is required")
        forward = LayerNormalization(self.op_type, self.name, self.attrs, 17)
        wants = forward.prepare([x, scale, bias], values[1:4])
        for grad, want, what in zip((dy, d_mean, d_inv_std), wants, ("dY", "dMean", "dInvStdDev"), strict=True):
            if grad is not None and (grad.dtype != want.dtype or grad.shape != want.shape):
                raise self.fail(f"{what} is {grad.dtype} {grad.shape}; the forward output is {want.dtype} {want.shape}")
        self.axes, self.epsilon = forward.axes, forward.epsilon
        self.count = prod([x.shape[a] for a in self.axes])
        return [x, TensorSpec(x.dtype, scale.shape)] + ([TensorSpec(x.dtype, bias.shape)] if bias is not None else [])

    def run(self, inputs, outputs):
        dy, x, scale, _, d_mean, d_inv_std = (list(inputs) + [None] * 6)[:6]
        x_hat, _, inv_std = _standardize(x, self.axes, self.epsilon)
        dx = np.zeros(x.shape)
        if d_mean is not None:  # Mean = sum(X) / count
            dx += d_mean / self.count
        if d_inv_std is not None:  # d(1/std)/dX = -(1/std)^2 * X_hat / count
            dx -= d_inv_std * inv_std * inv_std * x_hat / self.count
        if dy is None:
            np.copyto(outputs[0], dx, casting="unsafe")
            for out in outputs[1:]:
                out[...] = 0
            return
        dy64 = dy.astype(np.float64)
        g = dy64 * scale
        mean_g = np.mean(g, axis=self.axes, keepdims=True)
        mean_gx = np.mean(g * x_hat, axis=self.axes, keepdims=True)
        dx += inv_std * (g - mean_g - x_hat * mean_gx)
        np.copyto(outputs[0], dx, casting="unsafe")
        sum_to(dy64 * x_hat, outputs[1])
        if len(outputs) > 2:
            sum_to(dy64, outputs[2])
