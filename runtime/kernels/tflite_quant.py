"""TFLite's quantized integer kernels (domain ai.edgerun.tflite), NHWC like TFLite.

What the TFLite importer emits for full-integer models (converters/tflite/ops/quantized.py):
each kernel reproduces the arithmetic of TFLite's reference kernels (BUILTIN_REF) bit for
bit, with the fixed-point helpers of runtime.kernels.fixed_point. The converter works out
TFLite's multipliers from the tensors' scales (the policy: which scales, multiplied in float
or double); the kernels take integers, except where TFLite itself rescales in floating point
(FullyConnected's `scale`, RescaleFloat, Quantize, uint8 ResizeBilinear).

Kernels: Quantize (float32 -> int), Requantize (int -> int), RescaleFloat (CONCATENATION's
input rescale), Conv2D, DepthwiseConv2D, FullyConnected, TransposeConv2D, AveragePool2D,
MaxPool2D, Mean, Add, Sub, Mul, TableLookup (any elementwise function of an 8-bit value,
tabulated by the converter: RELU*, LOGISTIC, TANH, HARD_SWISH, LEAKY_RELU), Softmax and
ResizeBilinear.

The output stage most kernels share (`_OutputStage`): y = clamp(MultiplyByQuantizedMultiplier(
acc, multiplier[c], shift[c]) + output_zero_point, activation_min, activation_max), with one
(multiplier, shift) pair or one per output channel (the last axis). Activations are int8 or
uint8 (Quantize / Requantize also int16); accumulators are int32 and wrap as TFLite's do
(products run through BLAS in float32 or float64, whichever holds every partial sum exactly).
Spatial kernels take NHWC inputs, OHWI filters (depthwise: 1HW(C*M)), `padding` SAME
(TFLite's: the smaller half before) or VALID, `strides` and `dilations` as [h, w]. Every
kernel fails with a ModelError naming the node for a wrong dtype, rank or attribute.
"""

from __future__ import annotations

import numpy as np

from edgerun.runtime.kernels.attrs import int_attr, ints_attr, str_attr
from edgerun.runtime.kernels.base import Kernel, TensorSpec
from edgerun.runtime.kernels.fixed_point import (
    exp_on_negative_values,
    float_to_int32,
    integer_range,
    multiply_by_quantized_multiplier,
    reciprocal,
    round_half_away,
    rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
    wrap_int32,
)
from edgerun.runtime.kernels.registry import register

DOMAIN = "ai.edgerun.tflite"
INT8, UINT8, INT16, INT32 = (np.dtype(t) for t in (np.int8, np.uint8, np.int16, np.int32))
EIGHT_BIT = (INT8, UINT8)
QUANTIZED = (INT8, UINT8, INT16)
_DTYPES = {"int8": INT8, "uint8": UINT8, "int16": INT16}


# --- attribute readers ------------------------------------------------------------------------


def _floats_attr(kernel: Kernel, key: str) -> np.ndarray:
    value = kernel.attr(key)
    if value is None:
        raise kernel.fail(f"attribute {key!r} is required")
    array = np.atleast_1d(np.asarray(value))
    if array.ndim != 1 or array.dtype.kind not in "fiu" or array.size == 0:
        raise kernel.fail(f"attribute {key!r}: expected a non-empty list of floats, got {value!r}")
    return array.astype(np.float64)


def _ints(kernel: Kernel, key: str, default: tuple[int, ...] | None = None) -> tuple[int, ...]:
    value = ints_attr(kernel, key)
    if value is None:
        if default is None:
            raise kernel.fail(f"attribute {key!r} is required")
        return default
    return value


def _dtype_attr(kernel: Kernel) -> np.dtype:
    name = str_attr(kernel, "dtype", "")
    if name not in _DTYPES:
        raise kernel.fail(f"attribute 'dtype' must be one of {sorted(_DTYPES)}, got {name!r}")
    return _DTYPES[name]


def _require(kernel: Kernel, spec: TensorSpec | None, dtypes: tuple[np.dtype, ...], what: str,
             rank: int | None = None) -> TensorSpec:
    if spec is None:
        raise kernel.fail(f"{what} is missing")
    if spec.dtype not in dtypes:
        raise kernel.fail(f"{what}: expected a {'/'.join(map(str, dtypes))} tensor, got {spec.dtype}")
    if rank is not None and len(spec.shape) != rank:
        raise kernel.fail(f"{what}: expected rank {rank}, got shape {spec.shape}")
    return spec


def _pair(kernel: Kernel, key: str) -> tuple[int, int]:
    value = _ints(kernel, key, (1, 1))
    if len(value) != 2 or min(value) < 1:
        raise kernel.fail(f"attribute {key!r} must be two ints >= 1, got {list(value)}")
    return value[0], value[1]


def _window(kernel: Kernel, size: int, extent: int, stride: int, dilation: int, padding: str) -> tuple[int, int]:
    """(output size, padding before) along one spatial axis, as TFLite's padding.h works them out."""
    effective = (extent - 1) * dilation + 1
    if padding == "SAME":
        out = (size + stride - 1) // stride
        return out, max((out - 1) * stride + effective - size, 0) // 2
    if padding == "VALID":
        numerator = size + stride - effective
        if numerator <= -stride:
            raise kernel.fail(f"input size {size} is smaller than the window ({effective}) for VALID padding")
        return max(numerator, 0) // stride, 0
    raise kernel.fail(f"attribute 'padding' must be 'SAME' or 'VALID', got {padding!r}")


def _activation_range(kernel: Kernel, dtype: np.dtype) -> tuple[int, int]:
    """[activation_min, activation_max] within the range of `dtype` (default: all of it)."""
    low, high = integer_range(dtype)
    low, high = max(low, int_attr(kernel, "activation_min", low)), min(high, int_attr(kernel, "activation_max", high))
    if low > high:
        raise kernel.fail(f"activation range [{low}, {high}] is empty")
    return low, high


class _OutputStage:
    """The requantization every accumulating kernel ends with (see the module docstring)."""

    def __init__(self, kernel: Kernel, dtype: np.dtype, channels: int | None) -> None:
        self.multiplier = np.asarray(_ints(kernel, "multiplier"), np.int64)
        self.shift = np.asarray(_ints(kernel, "shift"), np.int64)
        if self.multiplier.size != self.shift.size:
            raise kernel.fail(f"{self.multiplier.size} multipliers but {self.shift.size} shifts")
        if self.multiplier.size != 1 and self.multiplier.size != channels:
            raise kernel.fail(f"{self.multiplier.size} multipliers for {channels} output channels")
        if np.any(self.multiplier < 0) or np.any(self.multiplier >= 1 << 31) or np.any(np.abs(self.shift) > 31):
            raise kernel.fail("multipliers must be Q31 values in [0, 2**31) and shifts in [-31, 31]")
        self.zero_point = int_attr(kernel, "output_zero_point", 0)
        self.low, self.high = _activation_range(kernel, dtype)

    def __call__(self, acc: np.ndarray, out: np.ndarray) -> None:
        scaled = multiply_by_quantized_multiplier(acc, self.multiplier, self.shift) + self.zero_point
        np.copyto(out, np.clip(scaled, self.low, self.high), casting="unsafe")


def _padded(x: np.ndarray, pads: tuple[int, int, int, int], fill: float, dtype: type) -> np.ndarray:
    """x (NHWC) as `dtype`, padded with `fill` (top, bottom, left, right)."""
    top, bottom, left, right = pads
    n, h, w, c = x.shape
    out = np.full((n, h + top + bottom, w + left + right, c), fill, dtype)
    out[:, top:top + h, left:left + w, :] = x
    return out


class _Spatial(Kernel):
    """Shared geometry of the NHWC windowed kernels: window (kh, kw) over x (N, H, W, C)."""

    def _geometry(self, x: TensorSpec, kh: int, kw: int) -> tuple[int, int]:
        self.strides = _pair(self, "strides")
        self.dilations = _pair(self, "dilations")
        padding = str_attr(self, "padding", "VALID")
        oh, top = _window(self, x.shape[1], kh, self.strides[0], self.dilations[0], padding)
        ow, left = _window(self, x.shape[2], kw, self.strides[1], self.dilations[1], padding)
        need_h = (oh - 1) * self.strides[0] + (kh - 1) * self.dilations[0] + 1 if oh else 0
        need_w = (ow - 1) * self.strides[1] + (kw - 1) * self.dilations[1] + 1 if ow else 0
        self.pads = (top, max(need_h - x.shape[1] - top, 0), left, max(need_w - x.shape[2] - left, 0))
        self.window = (kh, kw, oh, ow)
        return oh, ow

    def _taps(self, padded: np.ndarray):
        """Per window tap (ky, kx): the strided (N, OH, OW, C) view of the padded input."""
        kh, kw, oh, ow = self.window
        (sh, sw), (dh, dw) = self.strides, self.dilations
        for ky in range(kh):
            for kx in range(kw):
                y, x = ky * dh, kx * dw
                yield padded[:, y:y + (oh - 1) * sh + 1:sh, x:x + (ow - 1) * sw + 1:sw, :]


# --- domain changers --------------------------------------------------------------------------


@register("Quantize", since=1, domain=DOMAIN)
class Quantize(Kernel):
    """X float32 -> `dtype` (int8/uint8/int16): q = clamp(int32(round(x / scale)) + zero_point)
    as TFLite's reference AffineQuantize computes it: x / scale in float32, rounded half away
    from zero, an out-of-range or NaN quotient becoming INT32_MIN (x86's conversion). `scale`
    and `zero_point` hold one value, or one per index of `axis` (per-channel)."""

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = _require(self, inputs[0], (np.dtype(np.float32),), "X")
        self.dtype = _dtype_attr(self)
        scale = _floats_attr(self, "scale").astype(np.float32)
        zero = np.asarray(_ints(self, "zero_point", (0,)), np.int64)
        if zero.size not in (1, scale.size):
            raise self.fail(f"{zero.size} zero points for {scale.size} scales")
        if np.any(scale <= 0):
            raise self.fail("scales must be > 0")
        shape: list[int] = []                      # per tensor: scalars
        if scale.size > 1:
            axis = int_attr(self, "axis", 0)
            if not 0 <= axis < len(x.shape) or x.shape[axis] != scale.size:
                raise self.fail(f"{scale.size} scales do not fit axis {axis} of X {x.shape}")
            shape = [-1 if i == axis else 1 for i in range(len(x.shape))]
        self.scale = scale.reshape(shape)
        self.zero = np.broadcast_to(zero, scale.shape).reshape(shape)
        return [TensorSpec(self.dtype, x.shape)]

    def run(self, inputs, outputs):
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            q = float_to_int32(round_half_away(inputs[0] / self.scale))
        low, high = integer_range(self.dtype)
        np.copyto(outputs[0], np.clip(wrap_int32(q + self.zero), low, high), casting="unsafe")


@register("Requantize", since=1, domain=DOMAIN)
class Requantize(Kernel):
    """X int8/uint8/int16 -> `dtype`: clamp(MultiplyByQuantizedMultiplier(x - input_zero_point,
    multiplier, shift) + output_zero_point) to the type's range (TFLite's QUANTIZE between
    integer types; an int8<->uint8 flip with equal scales is the same formula)."""

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = _require(self, inputs[0], QUANTIZED, "X")
        self.dtype = _dtype_attr(self)
        self.stage = _OutputStage(self, self.dtype, None)
        self.input_zero = int_attr(self, "input_zero_point", 0)
        return [TensorSpec(self.dtype, x.shape)]

    def run(self, inputs, outputs):
        self.stage(inputs[0].astype(np.int64) - self.input_zero, outputs[0])


@register("RescaleFloat", since=1, domain=DOMAIN)
class RescaleFloat(Kernel):
    """X int8/uint8 -> `dtype`: clamp(int32(round(x * scale + bias)) + output_zero_point), in
    float32 with halves away from zero: how TFLite's CONCATENATION requantizes an input whose
    scale or zero point differ from the output's (scale = in_scale * (1 / out_scale), bias =
    -in_zero_point * scale, both float32)."""

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = _require(self, inputs[0], EIGHT_BIT, "X")
        self.dtype = _dtype_attr(self)
        self.scale = np.float32(_floats_attr(self, "scale")[0])
        self.bias = np.float32(_floats_attr(self, "bias")[0])
        self.zero = int_attr(self, "output_zero_point", 0)
        return [TensorSpec(self.dtype, x.shape)]

    def run(self, inputs, outputs):
        value = inputs[0].astype(np.float32) * self.scale + self.bias
        low, high = integer_range(self.dtype)
        q = float_to_int32(round_half_away(value)) + self.zero
        np.copyto(outputs[0], np.clip(q, low, high), casting="unsafe")


# --- convolutions and fully connected ----------------------------------------------------------


def _bias(kernel: Kernel, inputs: list, index: int, channels: int) -> None:
    spec = inputs[index] if len(inputs) > index else None
    if spec is None:
        return
    _require(kernel, spec, (INT32,), "bias")
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
class Conv2D(_Spatial):
    """(X (N,H,W,C), W (O,KH,KW,C/groups), B int32 (O,)?) -> Y (N,OH,OW,O), X's type: TFLite's
    quantized CONV_2D. acc = sum (x - input_zero_point) * (w - weight_zero_point) over the
    window (taps in the padding add nothing) + b, then the output stage per output channel.
    groups = C / W's last dimension."""

    min_inputs, max_inputs = 2, 3

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = _require(self, inputs[0], EIGHT_BIT, "X", 4)
        w = _require(self, inputs[1], EIGHT_BIT, "filter", 4)
        _weights_kind(self, x, w)
        o, kh, kw, cg = w.shape
        if cg == 0 or x.shape[3] % cg or o % (x.shape[3] // cg or 1):
            raise self.fail(f"filter {w.shape} does not fit input channels {x.shape[3]}")
        self.groups = x.shape[3] // cg
        _bias(self, inputs, 2, o)
        self.stage = _OutputStage(self, x.dtype, o)
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
        padded = _padded(x.astype(dtype) - dtype(self.zeros[0]), self.pads, 0.0, dtype)
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
class DepthwiseConv2D(_Spatial):
    """(X (N,H,W,C), W (1,KH,KW,C*M), B int32 (C*M,)?) -> Y (N,OH,OW,C*M): TFLite's quantized
    DEPTHWISE_CONV_2D; output channel c*M + m reads input channel c (M = depth multiplier,
    from the shapes). Arithmetic as Conv2D's."""

    min_inputs, max_inputs = 2, 3

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = _require(self, inputs[0], EIGHT_BIT, "X", 4)
        w = _require(self, inputs[1], EIGHT_BIT, "filter", 4)
        _weights_kind(self, x, w)
        one, kh, kw, channels = w.shape
        if one != 1 or x.shape[3] == 0 or channels % x.shape[3]:
            raise self.fail(f"filter {w.shape} must be (1, KH, KW, C*M) for {x.shape[3]} input channels")
        _bias(self, inputs, 2, channels)
        self.stage = _OutputStage(self, x.dtype, channels)
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
        padded = _padded(x.astype(dtype) - dtype(self.zeros[0]), self.pads, 0, dtype)
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
        x = _require(self, inputs[0], EIGHT_BIT, "X")
        w = _require(self, inputs[1], EIGHT_BIT, "weights", 2)
        _weights_kind(self, x, w)
        o, k = w.shape
        _bias(self, inputs, 2, o)
        size = int(np.prod(x.shape, dtype=np.int64))
        keep = bool(int_attr(self, "keep_num_dims", 0))
        if k == 0 or size % k or (keep and (not x.shape or x.shape[-1] != k)):
            raise self.fail(f"X {x.shape} does not split into rows of the weights' depth {k}")
        self.scale = _floats_attr(self, "scale")
        if self.scale.size not in (1, o):
            raise self.fail(f"{self.scale.size} scales for {o} output channels")
        self.zeros = (int_attr(self, "input_zero_point", 0), int_attr(self, "weight_zero_point", 0),
                      int_attr(self, "output_zero_point", 0))
        self.range = _activation_range(self, x.dtype)
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


# --- pooling and reductions --------------------------------------------------------------------


class _Pool(_Spatial):
    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = _require(self, inputs[0], EIGHT_BIT, "X", 4)
        kh, kw = _pair(self, "kernel_shape")
        if self.attr("dilations") is not None:
            raise self.fail("pooling takes no dilations")
        oh, ow = self._geometry(x, kh, kw)
        low, high = integer_range(x.dtype)
        self.range = _activation_range(self, x.dtype)
        return [TensorSpec(x.dtype, (x.shape[0], oh, ow, x.shape[3]))]


@register("AveragePool2D", since=1, domain=DOMAIN)
class AveragePool2D(_Pool):
    """X (N,H,W,C) int8/uint8 -> Y (N,OH,OW,C): TFLite's quantized AVERAGE_POOL_2D, the sum of
    the window's taps inside the input divided by their count, rounded half away from zero,
    then clamped to the activation range (input and output share scale and zero point)."""

    def run(self, inputs, outputs):
        x, out = inputs[0], outputs[0]
        if out.size == 0:
            return
        total = np.zeros(out.shape, np.int64)
        inside = np.zeros(out.shape[1:3], np.int64)
        ones = _padded(np.ones((1,) + x.shape[1:3] + (1,), np.int64), self.pads, 0, np.int64)
        for tap, valid in zip(self._taps(_padded(x, self.pads, 0, np.int64)), self._taps(ones), strict=True):
            total += tap
            inside += valid[0, :, :, 0]
        count = np.maximum(inside, 1)[None, :, :, None]
        half = count // 2
        mean = np.where(total > 0, (total + half) // count, -((half - total) // count))
        np.copyto(out, np.clip(mean, *self.range), casting="unsafe")


@register("MaxPool2D", since=1, domain=DOMAIN)
class MaxPool2D(_Pool):
    """X (N,H,W,C) int8/uint8 -> Y (N,OH,OW,C): TFLite's quantized MAX_POOL_2D, the largest
    tap inside the input, clamped to the activation range."""

    def run(self, inputs, outputs):
        x, out = inputs[0], outputs[0]
        if out.size == 0:
            return
        best = np.full(out.shape, np.iinfo(np.int64).min, np.int64)
        for tap in self._taps(_padded(x, self.pads, np.iinfo(np.int64).min, np.int64)):
            np.maximum(best, tap, out=best)
        np.copyto(out, np.clip(best, *self.range), casting="unsafe")


@register("Mean", since=1, domain=DOMAIN)
class Mean(Kernel):
    """X int8/uint8 -> the mean over `axes` (kept as size 1 when keepdims): TFLite's
    reference quantized MEAN. n = the reduced count; the input-to-output multiplier (attrs
    multiplier/shift) is divided by n in fixed point (multiplier << s / n, shift - s with
    s = min(floor(log2 n), 32, 31 + shift)), then y = clamp(MultiplyByQuantizedMultiplier(
    sum(x) - input_zero_point * n) + output_zero_point)."""

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = _require(self, inputs[0], EIGHT_BIT, "X")
        rank = len(x.shape)
        axes = _ints(self, "axes")
        if any(not -rank <= a < rank for a in axes):
            raise self.fail(f"axes {list(axes)} are out of range for rank {rank}")
        self.axes = tuple(sorted({a % rank for a in axes}))
        keep = int_attr(self, "keepdims", 0)
        shape = tuple(1 if i in self.axes else d for i, d in enumerate(x.shape) if keep or i not in self.axes)
        count = int(np.prod([x.shape[a] for a in self.axes], dtype=np.int64))
        stage = _OutputStage(self, x.dtype, None)
        multiplier, shift = int(stage.multiplier[0]), int(stage.shift[0])
        if count > 0:
            s = min(count.bit_length() - 1, 32, 31 + shift)
            multiplier, shift = (multiplier << s) // count, shift - s
        stage.multiplier, stage.shift = np.int64(multiplier), np.int64(shift)
        self.stage, self.count = stage, count
        self.input_zero = int_attr(self, "input_zero_point", 0)
        return [TensorSpec(x.dtype, shape)]

    def run(self, inputs, outputs):
        out = outputs[0]
        if self.count == 0 or inputs[0].size == 0:
            out[...] = 0
            return
        total = inputs[0].astype(np.int64).sum(axis=self.axes)
        self.stage(wrap_int32(total - self.input_zero * self.count).reshape(out.shape), out)


# --- elementwise -------------------------------------------------------------------------------


class _Binary(Kernel):
    min_inputs = max_inputs = 2

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        a = _require(self, inputs[0], EIGHT_BIT, "A")
        b = _require(self, inputs[1], EIGHT_BIT, "B")
        if a.dtype != b.dtype:
            raise self.fail(f"A is {a.dtype} but B is {b.dtype}")
        try:
            shape = np.broadcast_shapes(a.shape, b.shape)
        except ValueError:
            raise self.fail(f"shapes {a.shape} and {b.shape} do not broadcast") from None
        self.zeros = (int_attr(self, "input1_zero_point", 0), int_attr(self, "input2_zero_point", 0))
        self.stage = _OutputStage(self, a.dtype, None)
        self._prepare_inputs()
        return [TensorSpec(a.dtype, shape)]

    def _prepare_inputs(self) -> None:
        pass


class _AddSub(_Binary):
    """Both inputs are shifted left by `left_shift` and rescaled to a common scale
    (input1_multiplier/shift, input2_multiplier/shift), combined, then through the output
    stage: TFLite's quantized ADD / SUB (left_shift 20 for 8-bit)."""

    sign = 1

    def _prepare_inputs(self) -> None:
        self.left_shift = int_attr(self, "left_shift", 20)
        if not 0 <= self.left_shift <= 22:
            raise self.fail(f"left_shift {self.left_shift} is out of range [0, 22]")
        self.scales = [(int_attr(self, f"input{i}_multiplier"), int_attr(self, f"input{i}_shift")) for i in (1, 2)]
        if any(not 0 <= m < 1 << 31 or not -31 <= s <= 0 for m, s in self.scales):
            raise self.fail("input multipliers must be Q31 values with shifts in [-31, 0]")

    def run(self, inputs, outputs):
        scaled = [multiply_by_quantized_multiplier((x.astype(np.int64) - zero) << self.left_shift, m, s)
                  for x, zero, (m, s) in zip(inputs, self.zeros, self.scales, strict=True)]
        self.stage(wrap_int32(scaled[0] + self.sign * scaled[1]), outputs[0])


@register("Add", since=1, domain=DOMAIN)
class Add(_AddSub):
    __doc__ = "A + B (broadcasting), int8/uint8. " + _AddSub.__doc__


@register("Sub", since=1, domain=DOMAIN)
class Sub(_AddSub):
    __doc__ = "A - B (broadcasting), int8/uint8. " + _AddSub.__doc__
    sign = -1


@register("Mul", since=1, domain=DOMAIN)
class Mul(_Binary):
    """A * B (broadcasting), int8/uint8: the output stage applied to (a - input1_zero_point)
    * (b - input2_zero_point), TFLite's quantized MUL."""

    def run(self, inputs, outputs):
        a = inputs[0].astype(np.int64) - self.zeros[0]
        b = inputs[1].astype(np.int64) - self.zeros[1]
        self.stage(a * b, outputs[0])


@register("TableLookup", since=1, domain=DOMAIN)
class TableLookup(Kernel):
    """(X int8/uint8, table (256,) int8/uint8) -> Y of the table's type, y = table[x - min]
    (min = -128 for int8, 0 for uint8): an elementwise function of 8-bit values, tabulated by
    the converter with TFLite's exact arithmetic (LOGISTIC, TANH, HARD_SWISH, LEAKY_RELU,
    RELU and friends)."""

    min_inputs = max_inputs = 2

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = _require(self, inputs[0], EIGHT_BIT, "X")
        table = _require(self, inputs[1], EIGHT_BIT, "table", 1)
        if table.shape != (256,):
            raise self.fail(f"table: expected 256 entries, got shape {table.shape}")
        self.low = integer_range(x.dtype)[0]
        return [TensorSpec(table.dtype, x.shape)]

    def run(self, inputs, outputs):
        np.take(inputs[1], inputs[0].astype(np.intp) - self.low, out=outputs[0])


@register("Softmax", since=1, domain=DOMAIN)
class Softmax(Kernel):
    """X int8/uint8 -> softmax over the last axis, Y of X's type with scale 1/256 and zero
    point the type's minimum: TFLite's reference quantized SOFTMAX in gemmlowp fixed point.
    d = x - max(row); entries with d < diff_min give the minimum; the others exp(d * beta *
    s_in) with d rescaled by (input_multiplier, input_left_shift) into Q5.26, exps summed in
    Q12.19, y = exp * reciprocal(sum) / 2**(bits over unit + 23) + minimum."""

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = _require(self, inputs[0], EIGHT_BIT, "X")
        if not x.shape:
            raise self.fail("X must have at least one dimension")
        self.multiplier = int_attr(self, "input_multiplier")
        self.left_shift = int_attr(self, "input_left_shift")
        self.diff_min = int_attr(self, "diff_min")
        if not 0 <= self.multiplier < 1 << 31 or not 0 <= self.left_shift <= 31 or self.diff_min > 0:
            raise self.fail("input_multiplier must be Q31, input_left_shift in [0, 31], diff_min <= 0")
        return [TensorSpec(x.dtype, x.shape)]

    def run(self, inputs, outputs):
        x, out = inputs[0].astype(np.int64), outputs[0]
        low, high = integer_range(out.dtype)
        diff = x - x.max(axis=-1, keepdims=True, initial=low)
        inside = diff >= self.diff_min
        scaled = saturating_rounding_doubling_high_mul(np.where(inside, diff, 0) << self.left_shift, self.multiplier)
        exps = exp_on_negative_values(scaled, 5)
        total = wrap_int32(np.where(inside, rounding_divide_by_pot(exps, 12), 0).sum(axis=-1, keepdims=True))
        scale, bits_over_unit = reciprocal(total, 12)
        unsaturated = rounding_divide_by_pot(saturating_rounding_doubling_high_mul(scale, exps),
                                             bits_over_unit + 31 - 8)
        y = np.where(inside, np.clip(unsaturated + low, low, high), low)
        np.copyto(out, y, casting="unsafe")


# --- resampling and transposed convolution ------------------------------------------------------


def _size_input(kernel: Kernel, values: list, index: int, what: str) -> tuple[int, ...]:
    array = kernel.value_of(values, index)
    if array.dtype.kind not in "iu" or array.ndim != 1:
        raise kernel.fail(f"{what}: expected a 1-D int tensor, got {array.dtype} of shape {array.shape}")
    return tuple(int(v) for v in array)


@register("ResizeBilinear", since=1, domain=DOMAIN)
class ResizeBilinear(Kernel):
    """(X (N,H,W,C) int8/uint8, size int32 [h, w]) -> Y (N,h,w,C): TFLite's reference quantized
    RESIZE_BILINEAR (align_corners, half_pixel_centers; input and output share quantization).
    int8 interpolates in 10-bit fixed point, rounding halves away from zero
    (ResizeBilinearInteger); uint8 interpolates in float32 and adds 0.5 before truncating."""

    min_inputs = max_inputs = 2

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = _require(self, inputs[0], EIGHT_BIT, "X", 4)
        size = _size_input(self, values, 1, "size")
        if len(size) != 2 or min(size) < 1:
            raise self.fail(f"size must be two positive ints, got {list(size)}")
        self.align = bool(int_attr(self, "align_corners", 0))
        self.half = bool(int_attr(self, "half_pixel_centers", 0))
        if self.align and self.half:
            raise self.fail("align_corners and half_pixel_centers cannot both be set")
        if x.dtype == INT8:
            self.axes = [self._integer_axis(n, out) for n, out in zip(x.shape[1:3], size, strict=True)]
        else:
            self.axes = [self._float_axis(n, out) for n, out in zip(x.shape[1:3], size, strict=True)]
        return [TensorSpec(x.dtype, (x.shape[0], *size, x.shape[3]))]

    def _integer_axis(self, size: int, out: int):
        """(low index, high index, weight of high in 1/1024, 1024 * position - 1024 * low)."""
        scale = ((1 << 10) * size + out // 2) // out
        if self.align and out > 1:
            scale = ((1 << 10) * (size - 1) + (out - 1) // 2) // (out - 1)
        i = np.arange(out, dtype=np.int64)
        scaled = i * scale + (scale // 2 - (1 << 9) if self.half else 0)
        low = np.maximum(np.trunc(scaled / 1024).astype(np.int64), 0)
        high = np.minimum(np.trunc((scaled + 1023) / 1024).astype(np.int64), size - 1)
        return low, high, scaled - 1024 * low

    def _float_axis(self, size: int, out: int):
        scale = np.float32(size) / np.float32(out)
        if self.align and out > 1:
            scale = np.float32(size - 1) / np.float32(out - 1)
        i = np.arange(out, dtype=np.float32)
        scaled = (i + np.float32(0.5)) * scale - np.float32(0.5) if self.half else i * scale
        low = np.maximum(np.floor(scaled).astype(np.int64), 0)
        high = np.minimum(np.ceil(scaled).astype(np.int64), size - 1)
        return low, high, scaled - low.astype(np.float32)

    def run(self, inputs, outputs):
        x, out = inputs[0], outputs[0]
        (y0, y1, dy), (x0, x1, dx) = self.axes
        dy, dx = dy[None, :, None, None], dx[None, None, :, None]
        corners = [x[:, ya][:, :, xa] for ya in (y0, y1) for xa in (x0, x1)]   # ll, lr, ul... by (y, x)
        if x.dtype == INT8:
            v00, v01, v10, v11 = (c.astype(np.int64) for c in corners)
            total = (v00 * (1024 - dy) * (1024 - dx) + v10 * dy * (1024 - dx) + v01 * (1024 - dy) * dx
                     + v11 * dy * dx)
            value = truncating_divide(total + np.where(total > 0, 1 << 19, -(1 << 19)), 1 << 20)
        else:
            v00, v01, v10, v11 = (c.astype(np.float32) for c in corners)
            one = np.float32(1)
            value = v00 * (one - dy) * (one - dx) + v10 * dy * (one - dx) + v01 * (one - dy) * dx + v11 * dy * dx
            value = np.trunc(value + np.float32(0.5))
        np.copyto(out, value, casting="unsafe")


def truncating_divide(x: np.ndarray, divisor: int) -> np.ndarray:
    """C's x / divisor for int64 x and a positive divisor: the quotient truncated toward zero."""
    quotient = np.abs(x) // divisor
    return np.where(x < 0, -quotient, quotient)


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
        shape = _size_input(self, values, 0, "output_shape")
        w = _require(self, inputs[1], EIGHT_BIT, "filter", 4)
        x = _require(self, inputs[2], EIGHT_BIT, "X", 4)
        _weights_kind(self, x, w)
        o, kh, kw, c = w.shape
        if len(shape) != 4 or shape[0] != x.shape[0] or shape[3] != o or min(shape[1:3]) < 1 or c != x.shape[3]:
            raise self.fail(f"output_shape {list(shape)}, filter {w.shape} and X {x.shape} do not agree")
        _bias(self, inputs, 3, o)
        self.stage = _OutputStage(self, x.dtype, o)
        self.zeros = (int_attr(self, "input_zero_point", 0), int_attr(self, "weight_zero_point", 0))
        self.strides = _pair(self, "strides")
        padding = str_attr(self, "padding", "VALID")
        geometry = [_window(self, size, k, s, 1, padding) for size, k, s in zip(shape[1:3], (kh, kw), self.strides,
                                                                                   strict=True)]
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
