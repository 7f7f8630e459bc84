"""Conv (ONNX semantics, NCHW and any number of spatial axes) as im2col + matmul.

The input is padded into scratch, gathered tap by tap into a column buffer
(batch, G, C/G * K, out) and multiplied by the weights viewed as (G, M/G, C/G * K)
straight into the output, a few samples at a time so the column buffer stays
bounded; unpadded 1x1 stride-1 convolutions multiply the input directly.
Depthwise convolutions take the same path (G batched (1, K) @ (K, out)
products), which measured faster than accumulating one multiply per tap.

ConvGrad (edgerun domain, for training) reuses the window: dW multiplies dY by the
same columns (laid out (G, C/G * K, batch * out)), and dX scatters W^T @ dY back tap
by tap (col2im, `spatial.TapGradient`).
"""

from __future__ import annotations

import numpy as np

from runtime.kernels.attrs import FLOAT_KINDS, int_attr, ints_attr, prod, require_kind, require_rank
from runtime.kernels.base import Kernel, TensorSpec
from runtime.kernels.registry import register
from runtime.kernels.spatial import (
    PaddedInput,
    TapGradient,
    Window,
    require_output_grad,
    scratch,
    window_from_attrs,
)

COLUMN_BUDGET = 1 << 24  # elements of the column buffer a batch chunk aims for
MAX_COLUMNS_PER_SAMPLE = 1 << 28  # beyond this a single sample is refused


def conv_window(
    kernel: Kernel, x: TensorSpec, w: TensorSpec, bias: TensorSpec | None
) -> tuple[int, Window]:
    """(group, window) of a Conv node over X and W (shared by Conv and ConvGrad); ModelError
    for mismatched tensors, groups or kernel_shape, or bad window attributes."""
    _check_tensors(kernel, x, w, bias)
    group = _group(kernel, x.shape[1], w.shape)
    kernel_shape = ints_attr(kernel, "kernel_shape") or w.shape[2:]
    if kernel_shape != w.shape[2:]:
        raise kernel.fail(f"kernel_shape {kernel_shape} does not match W shape {w.shape}")
    return group, window_from_attrs(kernel, x.shape, kernel_shape)


def _check_tensors(kernel: Kernel, x: TensorSpec, w: TensorSpec, bias: TensorSpec | None) -> None:
    require_kind(kernel, x, FLOAT_KINDS, "X")
    require_rank(kernel, x, 3, what="X (N, C, *spatial)")
    if len(w.shape) != len(x.shape):
        raise kernel.fail(f"W shape {w.shape} must have the rank of X shape {x.shape}")
    for name, spec in (("W", w), ("B", bias)):
        if spec is not None and spec.dtype != x.dtype:
            raise kernel.fail(f"{name} dtype {spec.dtype} differs from X dtype {x.dtype}")
    if bias is not None and bias.shape != w.shape[:1]:
        raise kernel.fail(f"B shape {bias.shape} must be ({w.shape[0]},) for W shape {w.shape}")


def _group(kernel: Kernel, channels: int, w: tuple[int, ...]) -> int:
    group = int_attr(kernel, "group", 1)
    if group < 1 or w[0] % group or w[1] * group != channels:
        raise kernel.fail(
            f"group {group}: input channels {channels} and output channels {w[0]} must "
            f"split into {group} groups of W.shape[1]={w[1]} input channels"
        )
    return group


@register("Conv", since=1)
class Conv(Kernel):
    """Y = conv(X, W) + B. X (N, C, *in), W (M, C/group, *kernel), B (M,) optional."""

    min_inputs, max_inputs = 2, 3

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x, w = inputs[0], inputs[1]
        bias = inputs[2] if len(inputs) > 2 else None
        self.group, window = conv_window(self, x, w, bias)
        self.taps, self.out_size = window.taps(), prod(window.out_shape)
        self.pad = PaddedInput(window, 0.0, "conv.pad")
        self.has_bias = bias is not None
        self.pointwise = (
            len(self.taps) == 1 and not window.needs_padding and set(window.strides) == {1}
        )
        columns = x.shape[1] * len(self.taps) * self.out_size
        if not self.pointwise and columns > MAX_COLUMNS_PER_SAMPLE:
            raise self.fail(f"im2col of one sample needs {columns} elements, over the limit")
        self.chunk = max(1, COLUMN_BUDGET // max(1, columns))
        return [TensorSpec(x.dtype, (x.shape[0], w.shape[0]) + window.out_shape)]

    def run(self, inputs, outputs):
        x, w, out = inputs[0], inputs[1], outputs[0]
        self._convolve(x, w, out)
        if self.has_bias:
            b = inputs[2]
            np.add(out, b.reshape(b.shape + (1,) * (out.ndim - 2)), out=out)

    def _convolve(self, x: np.ndarray, w: np.ndarray, out: np.ndarray) -> None:
        (n, c), g, m = x.shape[:2], self.group, w.shape[0]
        weights = w.reshape(g, m // g, c // g * len(self.taps))
        result = out.reshape(n, g, m // g, self.out_size, copy=False)
        if self.pointwise:
            np.matmul(weights, x.reshape(n, g, c // g, self.out_size), out=result)
            return
        buf = self.pad(x)
        buf = buf.reshape((n, g, c // g) + buf.shape[2:])
        for start in range(0, n, self.chunk):
            part = buf[start : start + self.chunk]
            np.matmul(weights, self._gather(part, out.shape[2:]), out=result[start : start + self.chunk])

    def _gather(self, buf: np.ndarray, out_shape: tuple[int, ...]) -> np.ndarray:
        """Columns (batch, G, C/G * K, out) of a grouped padded input (batch, G, C/G, *padded)."""
        b, g, cg = buf.shape[:3]
        gathered = scratch("conv.col", (b, g, cg, len(self.taps)) + out_shape, buf.dtype)
        for k, tap in enumerate(self.taps):
            np.copyto(gathered[:, :, :, k], buf[tap])
        return gathered.reshape(b, g, cg * len(self.taps), self.out_size)


@register("ConvGrad", since=1, domain="edgerun")
class ConvGrad(Kernel):
    """(dX, dW, dB) of Y = Conv(X, W, B) from dY; the node carries the forward Conv's attributes.

    Inputs dY (N, M, *out), X (N, C, *in), W (M, C/group, *kernel). Per group, with the
    im2col columns of X laid out (C/G * K, batch * out) and dY as (M/G, batch * out):
    dW = dY @ columns^T, and dX is the col2im (tap-by-tap scatter-add) of W^T @ dY.
    dB = dY summed over batch and space; it is skipped when the node has two outputs.
    Samples are processed a few at a time so the column buffers stay bounded, as in Conv.
    """

    min_inputs = max_inputs = 3

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        dy, x, w = inputs
        self.group, window = conv_window(self, x, w, None)
        require_output_grad(self, dy, x, (x.shape[0], w.shape[0]) + window.out_shape)
        self.taps, self.out_shape = window.taps(), window.out_shape
        self.pad = PaddedInput(window, 0.0, "convgrad.pad")
        self.scatter = TapGradient(window, "convgrad.dpad")
        columns = x.shape[1] * len(self.taps) * prod(window.out_shape)
        if columns > MAX_COLUMNS_PER_SAMPLE:
            raise self.fail(f"im2col of one sample needs {columns} elements, over the limit")
        self.chunk = max(1, COLUMN_BUDGET // max(1, columns))
        return [x, w, TensorSpec(x.dtype, w.shape[:1])]

    def run(self, inputs, outputs):
        dy, x, w = inputs
        dx, dw = outputs[0], outputs[1]
        g, m = self.group, w.shape[0]
        weights = w.reshape(g, m // g, -1)  # (G, M/G, C/G * K)
        dw_groups = dw.reshape(weights.shape, copy=False)
        dw_groups.fill(0)
        buf = self.pad(x)
        for start in range(0, x.shape[0], self.chunk):
            part = slice(start, start + self.chunk)
            grads = self._by_group(dy[part])
            dw_groups += np.matmul(grads, self._columns(buf[part]).swapaxes(1, 2))
            dcols = scratch("convgrad.dcol", (g, weights.shape[2], grads.shape[2]), x.dtype)
            product = np.multiply if grads.shape[1] == 1 else np.matmul  # depthwise: an outer product
            product(weights.swapaxes(1, 2), grads, out=dcols)
            self._col2im(dcols, dx[part])
        if len(outputs) > 2:
            np.sum(dy, axis=(0,) + tuple(range(2, dy.ndim)), out=outputs[2])

    def _by_group(self, dy: np.ndarray) -> np.ndarray:
        """dY (batch, M, *out) as (G, M/G, batch * out)."""
        moved = scratch("convgrad.dy", (dy.shape[1], dy.shape[0]) + self.out_shape, dy.dtype)
        np.copyto(moved, np.moveaxis(dy, 0, 1))
        return moved.reshape(self.group, dy.shape[1] // self.group, -1)

    def _columns(self, buf: np.ndarray) -> np.ndarray:
        """Columns (G, C/G * K, batch * out) of a padded input (batch, C, *padded)."""
        b, c = buf.shape[:2]
        cols = scratch("convgrad.col", (c, len(self.taps), b) + self.out_shape, buf.dtype)
        for k, tap in enumerate(self.taps):
            np.copyto(cols[:, k], np.moveaxis(buf[tap], 0, 1))
        return cols.reshape(self.group, c // self.group * len(self.taps), -1)

    def _col2im(self, dcols: np.ndarray, dx: np.ndarray) -> None:
        """dX (batch, C, *in) from column gradients (G, C/G * K, batch * out)."""
        b, c = dx.shape[:2]
        per_tap = dcols.reshape((c, len(self.taps), b) + self.out_shape)
        acc = self.scatter.start(dx)
        for k in range(len(self.taps)):
            self.scatter.add(acc, k, np.moveaxis(per_tap[:, k], 0, 1))
        self.scatter.finish(acc, dx)
