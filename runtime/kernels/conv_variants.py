"""Convolutions beyond Conv's im2col: DeformConv (2-D, taps displaced by offsets and scaled by
a mask) and CausalConvWithState (depthwise, causal 1-D, with carried state for streaming).
"""

from __future__ import annotations

import numpy as np

from edgerun.runtime.kernels.attrs import FLOAT_KINDS, int_attr, prod, require_kind, require_rank, str_attr
from edgerun.runtime.kernels.base import Kernel, TensorSpec
from edgerun.runtime.kernels.conv import conv_window
from edgerun.runtime.kernels.fused import apply_activation, fused_activation
from edgerun.runtime.kernels.registry import register


@register("CausalConvWithState", since=27)
class CausalConvWithState(Kernel):
    """Depthwise causal 1-D convolution with carried state, as in the ONNX reference.

    input (batch, C, length), weight (C, 1, k), optional bias (C,) and past_state (batch, C, k - 1)
    (zeros when absent). The input is prefixed with the state, so out[t] = sum_j w[j] *
    padded[t + j] (+ bias); activation "none" (default) or "silu"/"swish" (x * sigmoid(x)) follows.
    Outputs the result (batch, C, length) and present_state, the last k - 1 padded positions."""

    min_inputs, max_inputs = 2, 4
    ACTIVATIONS = ("none", "silu", "swish")

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x, w = inputs[0], inputs[1]
        bias, past = (inputs[i] if len(inputs) > i else None for i in (2, 3))
        require_kind(self, x, FLOAT_KINDS, "input")
        require_rank(self, x, 3, 3, what="input (batch, C, length)")
        self.activation = str_attr(self, "activation", "none")
        if self.activation not in self.ACTIVATIONS:
            raise self.fail(f"activation {self.activation!r} is not one of {', '.join(self.ACTIVATIONS)}")
        (b, c, _), k = x.shape, w.shape[2] if len(w.shape) == 3 else 0
        want = {"weight": (w, (c, 1, k)), "bias": (bias, (c,)), "past_state": (past, (b, c, k - 1))}
        for name, (spec, shape) in want.items():
            if spec is not None and (spec.shape != shape or spec.dtype != x.dtype or k < 1):
                raise self.fail(f"{name} {spec.dtype} {spec.shape} must be {x.dtype} {shape} for input {x.shape}")
        return [x, TensorSpec(x.dtype, (b, c, k - 1))]

    def run(self, inputs, outputs):
        x, w = inputs[0], inputs[1]
        bias, past = (inputs[i] if len(inputs) > i else None for i in (2, 3))
        (b, c, length), k = x.shape, w.shape[2]
        state = np.zeros((b, c, k - 1), x.dtype) if past is None else past
        padded = np.concatenate([state, x], axis=2).astype(np.float32)
        out = np.zeros((b, c, length), np.float32)
        for j in range(k):
            out += w[:, 0, j].astype(np.float32)[:, None] * padded[:, :, j : j + length]
        if bias is not None:
            out += bias.astype(np.float32)[:, None]
        if self.activation != "none":
            out = out.astype(x.dtype).astype(np.float32)
            out = out / (1 + np.exp(-out))
        np.copyto(outputs[0], out, casting="unsafe")
        if len(outputs) > 1:
            np.copyto(outputs[1], padded[:, :, padded.shape[2] - (k - 1) :], casting="unsafe")


@register("DeformConv", since=19)
class DeformConv(Kernel):
    """Deformable 2-D convolution: Conv whose kernel taps are displaced by `offset` and scaled by
    `mask`. X (N, C, H, W), W (M, C/group, kh, kw), offset (N, offset_group * kh * kw * 2, oh, ow)
    ((dy, dx) per tap), optional B (M,) and mask (N, offset_group * kh * kw, oh, ow).
    Tap (a, b) of output (i, j) samples X bilinearly at (i * sh - ph + a * dh + dy,
    j * sw - pw + b * dw + dx); positions off the input read 0. The sampled columns are then
    multiplied by the weights per group, as Conv's im2col does."""

    min_inputs, max_inputs = 3, 5

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x, w, offset = inputs[:3]
        bias, mask = (inputs[i] if len(inputs) > i else None for i in (3, 4))
        if len(x.shape) != 4:
            raise self.fail(f"X shape {x.shape}: only 2-D deformable convolution is supported")
        self.group, window = conv_window(self, x, w, bias)
        self.window, self.has_bias = window, bias is not None
        self.offset_group = int_attr(self, "offset_group", 1)
        taps, (oh, ow) = prod(window.kernel), window.out_shape
        og = self.offset_group
        if og < 1 or x.shape[1] % og:
            raise self.fail(f"offset_group {og} must divide the {x.shape[1]} input channels")
        for name, spec, per in (("offset", offset, 2), ("mask", mask, 1)):
            want = (x.shape[0], og * taps * per, oh, ow)
            if spec is not None and (spec.shape != want or spec.dtype != x.dtype):
                raise self.fail(f"{name} {spec.dtype} {spec.shape} must be {x.dtype} {want}")
        self.activation = fused_activation(self.attrs, f"node {self.name!r} (DeformConv)")
        return [TensorSpec(x.dtype, (x.shape[0], w.shape[0], oh, ow))]

    def run(self, inputs, outputs):
        x, w, offset = inputs[:3]
        bias, mask = (inputs[i] if len(inputs) > i else None for i in (3, 4))
        cols = self._columns(x, offset, mask)  # (N, C, K, oh * ow)
        n, c, k, positions = cols.shape
        g, m = self.group, w.shape[0]
        result = np.matmul(w.reshape(g, m // g, c // g * k), cols.reshape(n, g, c // g * k, positions))
        y = result.reshape(outputs[0].shape)
        if bias is not None:
            y = y + bias.reshape(-1, 1, 1)
        np.copyto(outputs[0], y, casting="unsafe")
        apply_activation(outputs[0], self.activation)

    def _columns(self, x: np.ndarray, offset: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        """Bilinear samples (N, C, K, positions) of X at every displaced tap."""
        win, og = self.window, self.offset_group
        (n, c, h, wd), (kh, kw), (oh, ow) = x.shape, win.kernel, win.out_shape
        base_h = (np.arange(oh) * win.strides[0] - win.pads_begin[0])[:, None]  # (oh, 1)
        base_w = (np.arange(ow) * win.strides[1] - win.pads_begin[1])[None, :]  # (1, ow)
        tap_h = np.repeat(np.arange(kh) * win.dilations[0], kw)
        tap_w = np.tile(np.arange(kw) * win.dilations[1], kh)
        off = offset.reshape(n, og, kh * kw, 2, oh, ow).astype(np.float64)
        ph = base_h + tap_h[:, None, None] + off[:, :, :, 0]  # (N, OG, K, oh, ow)
        pw = base_w + tap_w[:, None, None] + off[:, :, :, 1]
        grouped = x.reshape(n, og, c // og, h, wd)
        ni, gi = np.arange(n)[:, None, None, None, None], np.arange(og)[None, :, None, None, None]
        h0, w0 = np.floor(ph), np.floor(pw)
        sampled = 0.0
        for dh in (0, 1):
            for dw in (0, 1):
                hc, wc = h0 + dh, w0 + dw
                weight = (1 - np.abs(ph - hc)) * (1 - np.abs(pw - wc))
                inside = (hc >= 0) & (hc < h) & (wc >= 0) & (wc < wd)
                hi, wi = np.clip(hc, 0, h - 1).astype(np.int64), np.clip(wc, 0, wd - 1).astype(np.int64)
                values = grouped[ni, gi, :, hi, wi]  # (N, OG, K, oh, ow, C/OG)
                sampled = sampled + values * np.where(inside, weight, 0)[..., None]
        if mask is not None:
            sampled = sampled * mask.reshape(n, og, kh * kw, oh, ow)[..., None]
        cols = np.moveaxis(sampled, -1, 2)  # (N, OG, C/OG, K, oh, ow)
        return cols.reshape(n, c, kh * kw, oh * ow).astype(x.dtype)
