"""Conv (ONNX semantics, NCHW and any number of spatial axes) as im2col + matmul.

The input is padded into scratch, gathered tap by tap into a column buffer
(batch, G, C/G * K, out) and multiplied by the weights viewed as (G, M/G, C/G * K)
straight into the output, a few samples at a time so the column buffer stays
bounded; unpadded 1x1 stride-1 convolutions multiply the input directly.
Depthwise convolutions take the same path (G batched (1, K) @ (K, out)
products), which measured faster than accumulating one multiply per tap.

ConvGrad (edgerun domain, for training) multiplies dY by columns of X laid out
(G, C/G * K, positions) for dW, and scatters W^T @ dY back tap by tap for dX (col2im).
With stride 1 the positions are whole rows of the padded input, so every tap is one
contiguous shift of it (`ShiftedColumns`); other strides gather strided slices
(`TapColumns`), which took 1.2-1.9x as long on the stride-1 shapes we measured.

ConvTranspose and Col2Im live in conv_transpose.py, DeformConv and CausalConvWithState in
conv_variants.py, ConvInteger and QLinearConv in quantize.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgerun.runtime.kernels.attrs import FLOAT_KINDS, int_attr, ints_attr, prod, require_kind, require_rank
from edgerun.runtime.kernels.base import Kernel, TensorSpec
from edgerun.runtime.kernels.fused import Activation, apply_activation, check_channels, fused_activation
from edgerun.runtime.kernels.registry import register
from edgerun.runtime.kernels.spatial import (
    Index,
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


@dataclass(frozen=True)
class ConvParams:
    """What Conv's prepare works out for the input shapes, read by Conv.run (and ConvInteger's,
    QLinearConv's) and the numba fast path (devices/numba_spatial.py)."""

    group: int
    window: Window  # the sliding-window geometry over X's spatial axes
    taps: tuple[Index, ...]  # per kernel tap, its strided slice of the padded input (Window.taps)
    out_size: int  # positions per output plane, prod(window.out_shape)
    pointwise: bool  # one tap, no padding, stride 1: X multiplies as it is, no im2col
    chunk: int  # samples per im2col batch, so the column buffer stays near COLUMN_BUDGET
    has_bias: bool
    activation: Activation | None  # a fused activation (runtime.kernels.fused)


@register("Conv", since=1)
class Conv(Kernel):
    """Y = conv(X, W) + B. X (N, C, *in), W (M, C/group, *kernel), B (M,) optional.
    Honours a fused activation (runtime.kernels.fused)."""

    min_inputs, max_inputs = 2, 3

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        return [self._prepare_conv(inputs[0], inputs[1], inputs[2] if len(inputs) > 2 else None)]

    def _prepare_conv(self, x: TensorSpec, w: TensorSpec, bias: TensorSpec | None) -> TensorSpec:
        """Validate and precompute for X, W, B (`self.params`); the output spec."""
        group, window = conv_window(self, x, w, bias)
        taps, out_size = tuple(window.taps()), prod(window.out_shape)
        pointwise = len(taps) == 1 and not window.needs_padding and set(window.strides) == {1}
        columns = x.shape[1] * len(taps) * out_size
        if not pointwise and columns > MAX_COLUMNS_PER_SAMPLE:
            raise self.fail(f"im2col of one sample needs {columns} elements, over the limit")
        where = f"node {self.name!r} ({self.op_type})"
        activation = fused_activation(self.attrs, where)
        check_channels(activation, w.shape[0], where)
        self.params = ConvParams(
            group, window, taps, out_size, pointwise, max(1, COLUMN_BUDGET // max(1, columns)), bias is not None,
            activation,
        )
        self.pad = PaddedInput(window, 0.0, "conv.pad")
        return TensorSpec(x.dtype, (x.shape[0], w.shape[0]) + window.out_shape)

    def run(self, inputs, outputs):
        self._convolve_with_bias(inputs, outputs[0])
        apply_activation(outputs[0], self.params.activation)

    def _convolve_with_bias(self, inputs, out: np.ndarray) -> None:
        """out = conv(X, W) + B (when the node has B), before any fused activation."""
        self._convolve(inputs[0], inputs[1], out)
        if self.params.has_bias:
            b = inputs[2]
            np.add(out, b.reshape(b.shape + (1,) * (out.ndim - 2)), out=out)

    def _convolve(self, x: np.ndarray, w: np.ndarray, out: np.ndarray) -> None:
        p = self.params
        (n, c), g, m = x.shape[:2], p.group, w.shape[0]
        weights = w.reshape(g, m // g, c // g * len(p.taps))
        result = out.reshape(n, g, m // g, p.out_size, copy=False)
        if p.pointwise:
            np.matmul(weights, x.reshape(n, g, c // g, p.out_size), out=result)
            return
        buf = self.pad(x)
        buf = buf.reshape((n, g, c // g) + buf.shape[2:])
        for start in range(0, n, p.chunk):
            part = buf[start : start + p.chunk]
            np.matmul(weights, self._gather(part, out.shape[2:]), out=result[start : start + p.chunk])

    def _gather(self, buf: np.ndarray, out_shape: tuple[int, ...]) -> np.ndarray:
        """Columns (batch, G, C/G * K, out) of a grouped padded input (batch, G, C/G, *padded)."""
        b, g, cg = buf.shape[:3]
        taps = self.params.taps
        gathered = scratch("conv.col", (b, g, cg, len(taps)) + out_shape, buf.dtype)
        for k, tap in enumerate(taps):
            np.copyto(gathered[:, :, :, k], buf[tap])
        return gathered.reshape(b, g, cg * len(taps), self.params.out_size)


@register("FusedConv", since=1, domain="edgerun")
class FusedConv(Conv):
    """Y = activation(Conv(X, W, B) + Z): a Conv with a residual Z added before its fused
    activation (the optimizer's fuse_residual_add writes it; ORT's com.microsoft FusedConv is
    the same op). Inputs X, W, B (may be omitted), Z; Z must have X's dtype and broadcast to
    Y's shape without changing it."""

    min_inputs, max_inputs = 4, 4

    def check_arity(self, inputs):
        if len(inputs) != 4 or inputs[0] is None or inputs[1] is None or inputs[3] is None:
            raise self.fail("expects inputs X, W, B (may be omitted) and Z")

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        spec = self._prepare_conv(inputs[0], inputs[1], inputs[2])
        z = inputs[3]
        if z.dtype != spec.dtype:
            raise self.fail(f"Z dtype {z.dtype} differs from X dtype {spec.dtype}")
        try:
            fits = np.broadcast_shapes(z.shape, spec.shape) == spec.shape
        except ValueError:
            fits = False
        if not fits:
            raise self.fail(f"Z shape {z.shape} does not broadcast to the output shape {spec.shape}")
        return [spec]

    def run(self, inputs, outputs):
        out = outputs[0]
        self._convolve_with_bias(inputs, out)
        np.add(out, inputs[3], out=out)
        apply_activation(out, self.params.activation)


@register("ConvGrad", since=1, domain="edgerun")
class ConvGrad(Kernel):
    """(dX, dW, dB) of Y = Conv(X, W, B) from dY; the node carries the forward Conv's attributes.

    Inputs dY (N, M, *out), X (N, C, *in), W (M, C/group, *kernel). dB is skipped when the node
    has one output fewer. Attribute compute_dx (0 or 1, default 1): with 0 there is no dX output
    (the outputs are dW[, dB]), for a Conv whose input needs no gradient (the graph's input).
    Per group, with the im2col columns of X laid out (C/G * K, positions) and dY as
    (M/G, positions): dW = dY @ columns^T, dB = dY summed over positions, and dX is the col2im
    (tap-by-tap scatter-add) of W^T @ dY. Stride-1 convolutions use `ShiftedColumns`, others
    `TapColumns`. Samples are processed a few at a time so the column buffers stay bounded.
    """

    min_inputs = max_inputs = 3

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        dy, x, w = inputs
        self.group, window = conv_window(self, x, w, None)
        require_output_grad(self, dy, x, (x.shape[0], w.shape[0]) + window.out_shape)
        self.compute_dx = int_attr(self, "compute_dx", 1)
        if self.compute_dx not in (0, 1):
            raise self.fail(f"attribute 'compute_dx' must be 0 or 1, got {self.compute_dx}")
        stride_one = set(window.strides) == {1}
        self.columns = ShiftedColumns(window) if stride_one else TapColumns(window)
        columns = x.shape[1] * self.columns.per_sample
        if columns > MAX_COLUMNS_PER_SAMPLE:
            raise self.fail(f"im2col of one sample needs {columns} elements, over the limit")
        self.chunk = max(1, COLUMN_BUDGET // max(1, columns))
        specs = [x, w, TensorSpec(x.dtype, w.shape[:1])]
        return specs if self.compute_dx else specs[1:]

    def run(self, inputs, outputs):
        dy, x, w = inputs
        dx, dw, *db = outputs if self.compute_dx else [None, *outputs]
        g, m = self.group, w.shape[0]
        weights = w.reshape(g, m // g, prod(w.shape[1:]))  # (G, M/G, C/G * K)
        dw_groups = dw.reshape(weights.shape, copy=False)
        dw_groups.fill(0)
        for out in db:
            out.fill(0)
        for start in range(0, x.shape[0], self.chunk):
            part = slice(start, start + self.chunk)
            grads = self.columns.grads(dy[part])  # (M, positions)
            cols = self.columns.gather(x[part])  # (C * K, positions)
            for out in db:
                out += grads.sum(axis=1)
            grads = grads.reshape(g, m // g, grads.shape[1])
            dw_groups += np.matmul(grads, cols.reshape(g, weights.shape[2], cols.shape[1]).swapaxes(1, 2))
            if dx is not None:
                dcols = scratch("convgrad.dcol", (g, weights.shape[2], grads.shape[2]), x.dtype)
                product = np.multiply if grads.shape[1] == 1 else np.matmul  # depthwise: an outer product
                product(weights.swapaxes(1, 2), grads, out=dcols)
                self.columns.col2im(dcols.reshape(-1, grads.shape[2]), dx[part])


class TapColumns:
    """im2col by kernel tap for ConvGrad: positions are (batch, *out), and each tap is one strided
    slice of the padded input (any strides). Buffers live in scratch until the next call."""

    def __init__(self, window: Window) -> None:
        self.taps, self.out_shape = window.taps(), window.out_shape
        self.per_sample = len(self.taps) * prod(window.out_shape)
        self.pad = PaddedInput(window, 0.0, "convgrad.pad")
        self.scatter = TapGradient(window, "convgrad.dpad")

    def grads(self, dy: np.ndarray) -> np.ndarray:
        """dY (batch, M, *out) as (M, batch * out)."""
        moved = scratch("convgrad.dy", (dy.shape[1], dy.shape[0]) + self.out_shape, dy.dtype)
        np.copyto(moved, np.moveaxis(dy, 0, 1))
        return moved.reshape(dy.shape[1], dy.shape[0] * prod(self.out_shape))

    def gather(self, x: np.ndarray) -> np.ndarray:
        """Columns (C * K, batch * out) of an input (batch, C, *in)."""
        buf = self.pad(x)
        b, c = buf.shape[:2]
        cols = scratch("convgrad.col", (c, len(self.taps), b) + self.out_shape, buf.dtype)
        for k, tap in enumerate(self.taps):
            np.copyto(cols[:, k], np.moveaxis(buf[tap], 0, 1))
        return cols.reshape(c * len(self.taps), b * prod(self.out_shape))

    def col2im(self, dcols: np.ndarray, dx: np.ndarray) -> None:
        """dX (batch, C, *in) from column gradients (C * K, batch * out)."""
        b, c = dx.shape[:2]
        per_tap = dcols.reshape((c, len(self.taps), b) + self.out_shape)
        acc = self.scatter.start(dx)
        for k in range(len(self.taps)):
            self.scatter.add(acc, k, np.moveaxis(per_tap[:, k], 0, 1))
        self.scatter.finish(acc, dx)


class ShiftedColumns:
    """im2col for stride 1, where each tap is one contiguous shift of a flattened padded plane.

    Per sample, the positions are the first out[0] rows (along the first spatial axis) of the
    padded plane, whole: (out[0], *padded_shape[1:]), so a tap reads one run of the plane
    starting at its shift. The plane gets one more zero row, which the last taps' runs reach
    into. dY is zero at the positions that hold no output (the overhang of each row), so they
    add nothing to dW, dB or dX. Buffers live in scratch until the next call.
    """

    def __init__(self, window: Window) -> None:
        padded = window.padded_shape
        self.shifts = window.tap_shifts()
        self.plane_shape = (padded[0] + 1,) + padded[1:]
        self.grid = (window.out_shape[0],) + padded[1:]  # the positions of one sample
        self.per_sample = len(self.shifts) * prod(self.grid)
        pad = PaddedInput(window, 0.0, "convgrad.pad")
        self.src, self.dst = pad.src, pad.dst
        self.outputs: Index = (Ellipsis,) + tuple(slice(0, o) for o in window.out_shape)
        self.covers_input = all(s.stop == n for s, n in zip(self.src[1:], window.in_shape, strict=True))

    def grads(self, dy: np.ndarray) -> np.ndarray:
        """dY (batch, M, *out) as (M, positions), zero where no output is."""
        b, m = dy.shape[:2]
        wide = scratch("convgrad.dy", (m, b) + self.grid, dy.dtype)
        wide.fill(0)
        np.copyto(wide[self.outputs], np.moveaxis(dy, 0, 1))
        return wide.reshape(m, b * prod(self.grid))

    def gather(self, x: np.ndarray) -> np.ndarray:
        """Columns (C * K, positions) of an input (batch, C, *in)."""
        b, c = x.shape[:2]
        buf = scratch("convgrad.pad", (c, b) + self.plane_shape, x.dtype)
        buf.fill(0)
        np.copyto(buf[self.dst], np.moveaxis(x, 0, 1)[self.src])
        planes, run = buf.reshape(c, b, prod(self.plane_shape)), prod(self.grid)
        cols = scratch("convgrad.col", (c, len(self.shifts), b, run), x.dtype)
        for k, shift in enumerate(self.shifts):
            np.copyto(cols[:, k], planes[:, :, shift : shift + run])
        return cols.reshape(c * len(self.shifts), b * run)

    def col2im(self, dcols: np.ndarray, dx: np.ndarray) -> None:
        """dX (batch, C, *in) from column gradients (C * K, positions)."""
        b, c = dx.shape[:2]
        run = prod(self.grid)
        acc = scratch("convgrad.dpad", (c, b) + self.plane_shape, dx.dtype)
        acc.fill(0)
        planes = acc.reshape(c, b, prod(self.plane_shape))
        per_tap = dcols.reshape(c, len(self.shifts), b, run)
        for k, shift in enumerate(self.shifts):
            view = planes[:, :, shift : shift + run]
            np.add(view, per_tap[:, k], out=view)
        if not self.covers_input:
            dx.fill(0)
        np.copyto(np.moveaxis(dx, 0, 1)[self.src], acc[self.dst])
