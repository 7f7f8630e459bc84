"""Conv (ONNX semantics, NCHW and any number of spatial axes) as im2col + matmul.

The input is padded into scratch, gathered tap by tap into a column buffer
(N, G, C/G * K, out) and multiplied by the weights viewed as (G, M/G, C/G * K)
straight into the output. Depthwise convolutions skip the gather and
accumulate one multiply per kernel tap instead; unpadded 1x1 stride-1
convolutions multiply the input directly.
"""

from __future__ import annotations

import numpy as np

from runtime.kernels.attrs import FLOAT_KINDS, int_attr, ints_attr, prod, require_kind, require_rank
from runtime.kernels.base import Kernel, TensorSpec
from runtime.kernels.registry import register
from runtime.kernels.spatial import PaddedInput, scratch, window_from_attrs


@register("Conv", since=1)
class Conv(Kernel):
    """Y = conv(X, W) + B. X (N, C, *in), W (M, C/group, *kernel), B (M,) optional."""

    min_inputs, max_inputs = 2, 3

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x, w = inputs[0], inputs[1]
        bias = inputs[2] if len(inputs) > 2 else None
        self._check_tensors(x, w, bias)
        n, c = x.shape[:2]
        m, cg = w.shape[:2]
        group = int_attr(self, "group", 1)
        if group < 1 or c % group or m % group or cg * group != c:
            raise self.fail(
                f"group {group}: input channels {c} and output channels {m} must split into "
                f"{group} groups of W.shape[1]={cg} input channels"
            )
        kernel_shape = ints_attr(self, "kernel_shape") or w.shape[2:]
        if kernel_shape != w.shape[2:]:
            raise self.fail(f"kernel_shape {kernel_shape} does not match W shape {w.shape}")
        window = window_from_attrs(self, x.shape[2:], kernel_shape)
        self.group, self.taps, self.out_size = group, window.taps(), prod(window.out_shape)
        self.pad = PaddedInput(window, 0.0, "conv.pad")
        self.has_bias = bias is not None
        self.mode = self._choose_mode(window, c, m, group)
        self.depthwise_w = None
        if self.mode == "depthwise" and values[1] is not None:
            self.depthwise_w = self._depthwise_weights(values[1])
        return [TensorSpec(x.dtype, (n, m) + window.out_shape)]

    def _check_tensors(self, x: TensorSpec, w: TensorSpec, bias: TensorSpec | None) -> None:
        require_kind(self, x, FLOAT_KINDS, "X")
        require_rank(self, x, 3, what="X (N, C, *spatial)")
        if len(w.shape) != len(x.shape):
            raise self.fail(f"W shape {w.shape} must have the rank of X shape {x.shape}")
        for name, spec in (("W", w), ("B", bias)):
            if spec is not None and spec.dtype != x.dtype:
                raise self.fail(f"{name} dtype {spec.dtype} differs from X dtype {x.dtype}")
        if bias is not None and bias.shape != w.shape[:1]:
            raise self.fail(f"B shape {bias.shape} must be ({w.shape[0]},) for W shape {w.shape}")

    @staticmethod
    def _choose_mode(window, channels: int, out_channels: int, group: int) -> str:
        if group == channels == out_channels and group > 1:
            return "depthwise"
        if prod(window.kernel) == 1 and not window.needs_padding and all(
            s == 1 for s in window.strides
        ):
            return "pointwise"
        return "im2col"

    def _depthwise_weights(self, w: np.ndarray) -> np.ndarray:
        """W (C, 1, *kernel) as (K, C, 1, ..., 1): one per-channel weight vector per tap."""
        c, k = w.shape[0], prod(w.shape[2:])
        spatial_ones = (1,) * (w.ndim - 2)
        return np.ascontiguousarray(w.reshape(c, k).T).reshape((k, c) + spatial_ones)

    def run(self, inputs, outputs):
        x, w, out = inputs[0], inputs[1], outputs[0]
        if self.mode == "depthwise":
            self._run_depthwise(x, w, out)
        else:
            self._run_matmul(x, w, out)
        if self.has_bias:
            b = inputs[2]
            np.add(out, b.reshape(b.shape + (1,) * (out.ndim - 2)), out=out)

    def _run_matmul(self, x: np.ndarray, w: np.ndarray, out: np.ndarray) -> None:
        n, c = x.shape[:2]
        g, m = self.group, w.shape[0]
        if self.mode == "pointwise":
            col = x.reshape(n, g, c // g, self.out_size)
        else:
            buf = self.pad(x)
            buf = buf.reshape((n, g, c // g) + buf.shape[2:])
            gathered = scratch("conv.col", (n, g, c // g, len(self.taps)) + out.shape[2:], x.dtype)
            for k, tap in enumerate(self.taps):
                np.copyto(gathered[:, :, :, k], buf[tap])
            col = gathered.reshape(n, g, c // g * len(self.taps), self.out_size)
        weights = w.reshape(g, m // g, c // g * len(self.taps))
        np.matmul(weights, col, out=out.reshape(n, g, m // g, self.out_size, copy=False))

    def _run_depthwise(self, x: np.ndarray, w: np.ndarray, out: np.ndarray) -> None:
        weights = self.depthwise_w if self.depthwise_w is not None else self._depthwise_weights(w)
        buf = self.pad(x)
        product = scratch("conv.tap", out.shape, out.dtype)
        np.multiply(buf[self.taps[0]], weights[0], out=out)
        for tap, weight in zip(self.taps[1:], weights[1:], strict=True):
            np.multiply(buf[tap], weight, out=product)
            np.add(out, product, out=out)
