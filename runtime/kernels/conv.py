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
"""

from __future__ import annotations

import numpy as np

from edgerun.runtime.kernels.attrs import FLOAT_KINDS, int_attr, ints_attr, prod, require_kind, require_rank, str_attr
from edgerun.runtime.kernels.base import Kernel, TensorSpec
from edgerun.runtime.kernels.fused import apply_activation, fused_activation
from edgerun.runtime.kernels.registry import register
from edgerun.runtime.kernels.spatial import (
    AUTO_PADS,
    MAX_TAPS,
    MIN_PADDED_LIMIT,
    PADDING_FACTOR,
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


@register("Conv", since=1)
class Conv(Kernel):
    """Y = conv(X, W) + B. X (N, C, *in), W (M, C/group, *kernel), B (M,) optional.
    Honours a fused activation (runtime.kernels.fused)."""

    min_inputs, max_inputs = 2, 3

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        return [self._prepare_conv(inputs[0], inputs[1], inputs[2] if len(inputs) > 2 else None)]

    def _prepare_conv(self, x: TensorSpec, w: TensorSpec, bias: TensorSpec | None) -> TensorSpec:
        """Validate and precompute for X, W, B; the output spec."""
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
        self.activation = fused_activation(self.attrs, f"node {self.name!r} ({self.op_type})")
        return TensorSpec(x.dtype, (x.shape[0], w.shape[0]) + window.out_shape)

    def run(self, inputs, outputs):
        x, w, out = inputs[0], inputs[1], outputs[0]
        self._convolve(x, w, out)
        if self.has_bias:
            b = inputs[2]
            np.add(out, b.reshape(b.shape + (1,) * (out.ndim - 2)), out=out)
        apply_activation(out, self.activation)

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


@register("ConvTranspose", since=1)
class ConvTranspose(Kernel):
    """Y = the transpose (gradient) of a convolution, + B. X (N, C, *in), W (C, M/group, *kernel),
    B (M,) optional; Y (N, M, *out). Honours a fused activation (runtime.kernels.fused).

    Every input position i scatters X[i] * W[k] to the full output position i * stride +
    k * dilation; the full extent is (in - 1) * stride + (kernel - 1) * dilation + 1. Y is that
    cropped by `pads` (begin, end) and extended by `output_padding` (zeros past the full extent).
    With `output_shape` (or auto_pad SAME_*, which targets in * stride), pads are derived from it
    as the spec gives: total = full + output_padding - output_shape, begin = total // 2 for
    SAME_UPPER, else total - total // 2 (floor division, so a total of -1 extends Y at the end,
    as the ONNX reference does; onnxruntime truncates instead and extends at the start).
    """

    min_inputs, max_inputs = 2, 3

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x, w = inputs[0], inputs[1]
        bias = inputs[2] if len(inputs) > 2 else None
        require_kind(self, x, FLOAT_KINDS, "X")
        require_rank(self, x, 3, what="X (N, C, *spatial)")
        group = int_attr(self, "group", 1)
        if len(w.shape) != len(x.shape) or group < 1 or x.shape[1] % group or w.shape[0] != x.shape[1]:
            raise self.fail(f"W shape {w.shape} does not fit X shape {x.shape} with group {group}")
        m = w.shape[1] * group
        for name, spec in (("W", w), ("B", bias)):
            if spec is not None and spec.dtype != x.dtype:
                raise self.fail(f"{name} dtype {spec.dtype} differs from X dtype {x.dtype}")
        if bias is not None and bias.shape != (m,):
            raise self.fail(f"B shape {bias.shape} must be ({m},)")
        self.group, self.has_bias = group, bias is not None
        in_shape, kernel = x.shape[2:], w.shape[2:]
        self.window, out_shape, self.begin = self._geometry(in_shape, kernel)
        self.taps = self.window.taps()
        self.activation = fused_activation(self.attrs, f"node {self.name!r} (ConvTranspose)")
        return [TensorSpec(x.dtype, (x.shape[0], m) + out_shape)]

    def _geometry(self, in_shape, kernel) -> tuple[Window, tuple[int, ...], tuple[int, ...]]:
        """(the scatter window over the full output, Y's spatial shape, crop start per axis)."""
        n = len(in_shape)
        strides = ints_attr(self, "strides") or (1,) * n
        dilations = ints_attr(self, "dilations") or (1,) * n
        out_pad = ints_attr(self, "output_padding") or (0,) * n
        kshape = ints_attr(self, "kernel_shape") or kernel
        if tuple(kshape) != tuple(kernel):
            raise self.fail(f"kernel_shape {kshape} does not match W's {kernel}")
        if any(len(v) != n for v in (strides, dilations)) or len(out_pad) not in (n, 2 * n):
            raise self.fail(f"strides {strides}, dilations {dilations}, output_padding {out_pad}: need {n} each")
        if min(strides + dilations) < 1 or min(out_pad) < 0:
            raise self.fail(f"strides {strides} and dilations {dilations} must be >= 1, output_padding >= 0")
        full = tuple((i - 1) * s + (k - 1) * d + 1
                     for i, s, k, d in zip(in_shape, strides, kernel, dilations, strict=True))
        natural = tuple(f + p for f, p in zip(full, out_pad[:n], strict=True))
        auto_pad = str_attr(self, "auto_pad", "NOTSET")
        if auto_pad not in AUTO_PADS:
            raise self.fail(f"auto_pad {auto_pad!r} is not one of {', '.join(AUTO_PADS)}")
        target = ints_attr(self, "output_shape")
        if target is not None and len(target) == n + 2:
            target = target[2:]
        if target is not None and len(target) != n:
            raise self.fail(f"output_shape {target} invalid: need {n} values")
        pads = ints_attr(self, "pads")
        same = auto_pad in ("SAME_UPPER", "SAME_LOWER") and pads is None
        if same or target is not None:
            target = target or tuple(i * s for i, s in zip(in_shape, strides, strict=True))
            total = [nat - t for nat, t in zip(natural, target, strict=True)]  # < 0: Y extends past the full extent
            begin = tuple(t // 2 if auto_pad == "SAME_UPPER" else t - t // 2 for t in total)
        else:
            pads = pads or (0,) * (2 * n)
            if len(pads) != 2 * n or min(pads) < 0:
                raise self.fail(f"pads {pads} invalid: need {2 * n} values >= 0")
            begin = pads[:n]
            target = tuple(nat - b - e for nat, b, e in zip(natural, pads[:n], pads[n:], strict=True))
        limit = max(MIN_PADDED_LIMIT, PADDING_FACTOR * prod(in_shape) * prod(kernel))
        if min(target) < 1 or max(prod(target), prod(full)) > limit or prod(kernel) > MAX_TAPS:
            raise self.fail(f"output shape {tuple(target)} (full extent {full}) is invalid or too large "
                            f"for input {in_shape} and kernel {kernel}")
        window = Window(full, tuple(kernel), tuple(strides), tuple(dilations), (0,) * n, (0,) * n, tuple(in_shape))
        return window, tuple(target), tuple(begin)

    def run(self, inputs, outputs):
        x, w, out = inputs[0], inputs[1], outputs[0]
        (n, c), g = x.shape[:2], self.group
        k = len(self.taps)
        weights = w.reshape(g, c // g, prod(w.shape[1:])).swapaxes(1, 2)  # (G, M/G * K, C/G)
        cols = np.matmul(weights, x.reshape(n, g, c // g, prod(x.shape[2:])))  # (N, G, M/G * K, positions)
        cols = cols.reshape((n, out.shape[1], k) + x.shape[2:])
        full = scratch("convt.full", (n, out.shape[1]) + self.window.in_shape, x.dtype)
        full.fill(0)
        for i, tap in enumerate(self.taps):
            view = full[tap]
            np.add(view, cols[:, :, i], out=view)
        out.fill(0)
        src, dst = [Ellipsis], [Ellipsis]
        for b, size, f in zip(self.begin, out.shape[2:], self.window.in_shape, strict=True):
            lo, hi = max(0, b), min(f, b + size)  # the full positions Y keeps
            src.append(slice(lo, max(lo, hi)))
            dst.append(slice(lo - b, max(lo, hi) - b))
        np.copyto(out[tuple(dst)], full[tuple(src)])
        if self.has_bias:
            b = inputs[2]
            np.add(out, b.reshape(b.shape + (1,) * (out.ndim - 2)), out=out)
        apply_activation(out, self.activation)


@register("ConvInteger", since=10)
class ConvInteger(Conv):
    """Y (int32) = conv(X - x_zero_point, W - w_zero_point) for 8-bit X and W; w_zero_point may
    be per output channel. Computed exactly in float64 (sums stay far below 2**53)."""

    min_inputs, max_inputs = 2, 4

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x, w = inputs[0], inputs[1]
        for name, spec in (("X", x), ("W", w)):
            require_kind(self, spec, "iu", name)
        spec = self._prepare_conv(*(TensorSpec(np.dtype(np.float64), s.shape) for s in (x, w)), None)
        return [TensorSpec(np.dtype(np.int32), spec.shape)]

    def run(self, inputs, outputs):
        x, w = integer_operands(inputs[0], inputs[1], _at(inputs, 2), _at(inputs, 3))
        out = scratch("convint.out", outputs[0].shape, np.float64)
        self._convolve(x, w, out)
        np.copyto(outputs[0], np.rint(out), casting="unsafe")


def integer_operands(x, w, x_zero, w_zero) -> tuple[np.ndarray, np.ndarray]:
    """(X - x_zero, W - w_zero) in float64; w_zero is a scalar or per output channel (axis 0)."""
    xf = x.astype(np.float64)
    wf = w.astype(np.float64)
    if x_zero is not None:
        xf -= x_zero.astype(np.float64).reshape(())
    if w_zero is not None:
        wz = w_zero.astype(np.float64)
        wf -= wz.reshape(()) if wz.size == 1 else wz.reshape((-1,) + (1,) * (w.ndim - 1))
    return xf, wf


def _at(inputs: list, i: int):
    return inputs[i] if len(inputs) > i else None


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
