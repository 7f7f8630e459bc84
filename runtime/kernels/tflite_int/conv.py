"""Quantized convolutions and dense layers: Conv2D, DepthwiseConv2D, FullyConnected and
TransposeConv2D (NHWC inputs, OHWI filters, depthwise 1HW(C*M), int32 bias). Accumulators are
int32 and wrap as TFLite's do; the products run through BLAS in float32 or float64, whichever
holds every partial sum exactly (`_exact_float`).
"""

from __future__ import annotations

import numpy as np

from edgerun.runtime.kernels.attrs import int_attr, str_attr
from edgerun.runtime.kernels.base import Kernel, TensorSpec
from edgerun.runtime.kernels.fixed_point import float_to_int32, integer_range, round_half_away, wrap_int32
from edgerun.runtime.kernels.registry import register
from edgerun.runtime.kernels.tflite_int.common import (
    DOMAIN,
    EIGHT_BIT,
    INT32,
    OutputStage,
    Spatial,
    activation_range,
    floats_attr,
    pad_nhwc,
    pair_attr,
    require,
    size_input,
    window_geometry,
)


def _bias(kernel: Kernel, inputs: list, index: int, channels: int) -> None:
    spec = inputs[index] if len(inputs) > index else None
    if spec is None:
        return
    require(kernel, spec, (INT32,), "bias")
    if spec.shape != (channels,):
        raise kernel.fail(f"bias: expected shape ({channels},), got {spec.shape}")


def _exact_float(x: np.ndarray, input_zero: int, weights: np.ndarray, axis: int | tuple) -> type:
    """float32 when every partial sum of (x - input_zero) * weights over `axis` of the weights
    (the reduced axes) stays below 2**24 in magnitude, so float32 products and sums are exact
    integers whatever order BLAS adds them in; float64 otherwise (exact below 2**53)."""
    low, high = integer_range(x.dtype)
    largest = max(high - input_zero, input_zero - low)
    bound = float(np.abs(weights).sum(axis=axis, dtype=np.float64).max(initial=0)) * largest
    return np.float32 if bound < 2 ** 24 else np.float64


def _weights_kind(kernel: Kernel, x: TensorSpec, w: TensorSpec) -> None:
    if x.dtype != w.dtype:
        raise kernel.fail(f"filter: {w.dtype} weights with {x.dtype} activations (TFLite pairs int8 with int8, "
                          "uint8 with uint8)")


@register("Conv2D", since=1, domain=DOMAIN)
class Conv2D(Spatial):
    """(X (N,H,W,C), W (O,KH,KW,C/groups), B int32 (O,)?) -> Y (N,OH,OW,O), X's type: TFLite's
    quantized CONV_2D. acc = sum (x - input_zero_point) * (w - weight_zero_point) over the
    window (taps in the padding add nothing) + b, then the output stage per output channel.
    groups = C / W's last dimension."""

    min_inputs, max_inputs = 2, 3

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = require(self, inputs[0], EIGHT_BIT, "X", 4)
        w = require(self, inputs[1], EIGHT_BIT, "filter", 4)
        _weights_kind(self, x, w)
        o, kh, kw, cg = w.shape
        if cg == 0 or x.shape[3] % cg or o % (x.shape[3] // cg or 1):
            raise self.fail(f"filter {w.shape} does not fit input channels {x.shape[3]}")
        self.groups = x.shape[3] // cg
        _bias(self, inputs, 2, o)
        self.stage = OutputStage(self, x.dtype, o)
        self.zeros = (int_attr(self, "input_zero_point", 0), int_attr(self, "weight_zero_point", 0))
        oh, ow = self._geometry(x, kh, kw)
        return [TensorSpec(x.dtype, (x.shape[0], oh, ow, o))]

    def run(self, inputs, outputs):
        x, w, out = inputs[0], inputs[1], outputs[0]
        if out.size == 0:
            return
        o, kh, kw, cg = w.shape
        n, oh, ow = out.shape[:3]
        weights = w.astype(np.int64) - self.zeros[1]
        dtype = _exact_float(x, self.zeros[0], weights, (1, 2, 3))
        weights = weights.astype(dtype)
        padded = pad_nhwc(x.astype(dtype) - dtype(self.zeros[0]), self.pads, 0.0, dtype)
        cols = np.empty((n, oh, ow, kh * kw, x.shape[3]), dtype)
        for t, tap in enumerate(self._taps(padded)):
            cols[:, :, :, t, :] = tap
        per_group = o // self.groups
        acc = np.empty((n * oh * ow, o), dtype)
        for g in range(self.groups):   # exact (see _exact_float)
            lhs = cols[..., g * cg:(g + 1) * cg].reshape(n * oh * ow, kh * kw * cg)
            rhs = weights[g * per_group:(g + 1) * per_group].reshape(per_group, -1)
            acc[:, g * per_group:(g + 1) * per_group] = lhs @ rhs.T
        total = acc.astype(np.int64)
        if len(inputs) > 2 and inputs[2] is not None:
            total += inputs[2]
        self.stage(wrap_int32(total).reshape(out.shape), out)


@register("DepthwiseConv2D", since=1, domain=DOMAIN)
class DepthwiseConv2D(Spatial):
    """(X (N,H,W,C), W (1,KH,KW,C*M), B int32 (C*M,)?) -> Y (N,OH,OW,C*M): TFLite's quantized
    DEPTHWISE_CONV_2D; output channel c*M + m reads input channel c (M = depth multiplier,
    from the shapes). Arithmetic as Conv2D's."""

    min_inputs, max_inputs = 2, 3

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = require(self, inputs[0], EIGHT_BIT, "X", 4)
        w = require(self, inputs[1], EIGHT_BIT, "filter", 4)
        _weights_kind(self, x, w)
        one, kh, kw, channels = w.shape
        if one != 1 or x.shape[3] == 0 or channels % x.shape[3]:
            raise self.fail(f"filter {w.shape} must be (1, KH, KW, C*M) for {x.shape[3]} input channels")
        _bias(self, inputs, 2, channels)
        self.stage = OutputStage(self, x.dtype, channels)
        self.zeros = (int_attr(self, "input_zero_point", 0), int_attr(self, "weight_zero_point", 0))
        oh, ow = self._geometry(x, kh, kw)
        return [TensorSpec(x.dtype, (x.shape[0], oh, ow, channels))]

    def run(self, inputs, outputs):
        x, w, out = inputs[0], inputs[1], outputs[0]
        if out.size == 0:
            return
        c = x.shape[3]
        m = w.shape[3] // c
        weights = (w.astype(np.int64) - self.zeros[1])[0].reshape(w.shape[1] * w.shape[2], c, m)
        dtype = _exact_float(x, self.zeros[0], weights, 0)
        padded = pad_nhwc(x.astype(dtype) - dtype(self.zeros[0]), self.pads, 0, dtype)
        weights = weights.astype(dtype)
        acc = np.zeros(out.shape[:3] + (c, m), dtype)
        for t, tap in enumerate(self._taps(padded)):
            acc += tap[..., None] * weights[t]
        acc = acc.reshape(out.shape).astype(np.int64)
        if len(inputs) > 2 and inputs[2] is not None:
            acc += inputs[2]
        self.stage(wrap_int32(acc), out)


@register("FullyConnected", since=1, domain=DOMAIN)
class FullyConnected(Kernel):
    """(X, W (O,K), B int32 (O,)?) -> Y: TFLite's quantized FULLY_CONNECTED as its reference
    kernel computes it. X is read as (X.size / K, K) rows; Y is (rows, O), or X's shape with
    the last dimension O when keep_num_dims (then X's last dimension must be K).
    acc = (x - input_zero_point) . (w - weight_zero_point) + b (int32), then
    y = clamp(int32(round(double(acc) * scale[o])) + output_zero_point, activation range):
    a double-precision rescale with halves away from zero, `scale` one or per output channel."""

    min_inputs, max_inputs = 2, 3

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = require(self, inputs[0], EIGHT_BIT, "X")
        w = require(self, inputs[1], EIGHT_BIT, "weights", 2)
        _weights_kind(self, x, w)
        o, k = w.shape
        _bias(self, inputs, 2, o)
        size = int(np.prod(x.shape, dtype=np.int64))
        keep = bool(int_attr(self, "keep_num_dims", 0))
        if k == 0 or size % k or (keep and (not x.shape or x.shape[-1] != k)):
            raise self.fail(f"X {x.shape} does not split into rows of the weights' depth {k}")
        self.scale = floats_attr(self, "scale")
        if self.scale.size not in (1, o):
            raise self.fail(f"{self.scale.size} scales for {o} output channels")
        self.zeros = (int_attr(self, "input_zero_point", 0), int_attr(self, "weight_zero_point", 0),
                      int_attr(self, "output_zero_point", 0))
        self.range = activation_range(self, x.dtype)
        shape = x.shape[:-1] + (o,) if keep else (size // k, o)
        return [TensorSpec(x.dtype, shape)]

    def run(self, inputs, outputs):
        x, w, out = inputs[0], inputs[1], outputs[0]
        weights = w.astype(np.int64) - self.zeros[1]
        dtype = _exact_float(x, self.zeros[0], weights, 1)
        rows = x.reshape(-1, w.shape[1]).astype(dtype) - dtype(self.zeros[0])
        acc = (rows @ weights.astype(dtype).T).astype(np.int64)
        if len(inputs) > 2 and inputs[2] is not None:
            acc += inputs[2]
        scaled = float_to_int32(round_half_away(wrap_int32(acc).astype(np.float64) * self.scale))
        y = np.clip(wrap_int32(scaled + self.zeros[2]), *self.range)
        np.copyto(out, y.reshape(out.shape), casting="unsafe")


@register("TransposeConv2D", since=1, domain=DOMAIN)
class TransposeConv2D(Kernel):
    """(output_shape int32 [N, OH, OW, O], W (O,KH,KW,C), X (N,H,W,C), B int32 (O,)?) -> Y:
    TFLite's quantized TRANSPOSE_CONV. Each input pixel scatters (x - input_zero_point) *
    (w - weight_zero_point) onto the output at in * stride - pad + tap, where pad is the
    SAME/VALID padding of a convolution from the output size back to the input size (which
    must reproduce X's size); then the bias and the output stage per output channel."""

    min_inputs, max_inputs = 3, 4

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        shape = size_input(self, values, 0, "output_shape")
        w = require(self, inputs[1], EIGHT_BIT, "filter", 4)
        x = require(self, inputs[2], EIGHT_BIT, "X", 4)
        _weights_kind(self, x, w)
        o, kh, kw, c = w.shape
        if len(shape) != 4 or shape[0] != x.shape[0] or shape[3] != o or min(shape[1:3]) < 1 or c != x.shape[3]:
            raise self.fail(f"output_shape {list(shape)}, filter {w.shape} and X {x.shape} do not agree")
        _bias(self, inputs, 3, o)
        self.stage = OutputStage(self, x.dtype, o)
        self.zeros = (int_attr(self, "input_zero_point", 0), int_attr(self, "weight_zero_point", 0))
        self.strides = pair_attr(self, "strides")
        padding = str_attr(self, "padding", "VALID")
        geometry = [window_geometry(self, size, k, s, 1, padding)
                    for size, k, s in zip(shape[1:3], (kh, kw), self.strides, strict=True)]
        if tuple(g[0] for g in geometry) != x.shape[1:3]:
            raise self.fail(f"output size {shape[1:3]} does not convolve back to X's {x.shape[1:3]} "
                            f"with strides {list(self.strides)} and {padding} padding")
        self.pads = tuple(g[1] for g in geometry)
        return [TensorSpec(x.dtype, shape)]

    def run(self, inputs, outputs):
        w, x, out = inputs[1], inputs[2], outputs[0]
        if out.size == 0:
            return
        n, h, wd, c = x.shape
        o, kh, kw, _ = w.shape
        (sh, sw), (ph, pw) = self.strides, self.pads
        oh, ow = out.shape[1:3]
        canvas = np.zeros((n, max((h - 1) * sh + kh, ph + oh), max((wd - 1) * sw + kw, pw + ow), o), np.int64)
        weights = w.astype(np.int64) - self.zeros[1]
        dtype = _exact_float(x, self.zeros[0], weights, 3)
        rows = (x.astype(dtype) - dtype(self.zeros[0])).reshape(-1, c)
        weights = weights.astype(dtype)
        for ky in range(kh):
            for kx in range(kw):
                tap = (rows @ weights[:, ky, kx, :].T).astype(np.int64).reshape(n, h, wd, o)
                canvas[:, ky:ky + (h - 1) * sh + 1:sh, kx:kx + (wd - 1) * sw + 1:sw, :] += tap
        acc = canvas[:, ph:ph + oh, pw:pw + ow, :]
        if len(inputs) > 3 and inputs[3] is not None:
            acc = acc + inputs[3]
        self.stage(wrap_int32(acc), out)
