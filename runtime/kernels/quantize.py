"""Linear quantization kernels (ONNX semantics): QuantizeLinear, DequantizeLinear,
DynamicQuantizeLinear, and the integer and quantized products: MatMulInteger,
QLinearMatMul, ConvInteger and QLinearConv.

QuantizeLinear / DequantizeLinear quantize to int8/uint8/int16/uint16, int4/uint4, int2/uint2,
float8 (e4m3fn, e4m3fnuz, e5m2, e5m2fnuz) and float4 e2m1 (int32 is a further DequantizeLinear
input); the integer products take int8/uint8. A scale (and zero point) is per tensor (a scalar
or one value), per axis (1-D along `axis`) or blocked (X's rank, `block_size` consecutive values
along `axis` sharing one). Integer types round half to even, then saturate to the type's range;
float types convert as Cast does (`saturate` chooses max-finite or inf/NaN for float8), as in
ONNX.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

from edgerun.runtime.kernels.attrs import FLOAT_KINDS, flag_attr, int_attr, normalize_axis, require_kind
from edgerun.runtime.kernels.base import Kernel, TensorSpec
from edgerun.runtime.kernels.cast import FLOAT4, FLOAT8, SMALL_INTS, cast_into, onnx_dtype
from edgerun.runtime.kernels.conv import Conv
from edgerun.runtime.kernels.linalg import matmul_shape
from edgerun.runtime.kernels.registry import register
from edgerun.runtime.kernels.spatial import scratch

QUANTIZED = tuple(np.dtype(t) for t in (np.uint8, np.int8, np.uint16, np.int16))
LOW_BIT_FLOATS = (*FLOAT8, FLOAT4)
# QuantizeLinear's output / DequantizeLinear's input types
QUANTIZED_TYPES = (*QUANTIZED, *SMALL_INTS, *LOW_BIT_FLOATS)
_QUANTIZED_NAMES = "uint8/int8/uint16/int16/uint4/int4/uint2/int2/float8/float4e2m1"
# what the precision (QuantizeLinear) and output_dtype (DequantizeLinear) attributes may name
_WIDE_FLOATS = tuple(np.dtype(t) for t in (np.float16, np.float32, np.float64, ml_dtypes.bfloat16))


def saturate(values: np.ndarray, dtype: np.dtype, out: np.ndarray) -> None:
    """out = values rounded half to even and clipped to integer `dtype`'s range (int4 too)."""
    info = ml_dtypes.iinfo(dtype)
    cast_into(out, np.clip(np.rint(values), info.min, info.max))


class _Linear(Kernel):
    """Shared checks of QuantizeLinear / DequantizeLinear: X, scale, optional zero point."""

    min_inputs, max_inputs = 2, 3

    def _params(self, inputs) -> None:
        """Check scale and zero point against X and record how they broadcast (self.expand)."""
        x, scale = inputs[0], inputs[1]
        zero = inputs[2] if len(inputs) > 2 else None
        require_kind(self, scale, FLOAT_KINDS, "scale")
        per_tensor = {(), (1,)}  # both shapes mean one scale for the whole tensor
        if zero is not None and zero.shape != scale.shape and not {zero.shape, scale.shape} <= per_tensor:
            raise self.fail(f"zero point shape {zero.shape} differs from scale shape {scale.shape}")
        self.block = int_attr(self, "block_size", 0)
        if scale.size == 1 and len(scale.shape) <= 1 and self.block == 0:
            self.expand = lambda p: p.reshape(())
            return
        self.axis = normalize_axis(self, int_attr(self, "axis", 1), len(x.shape))
        if self.block > 0:
            want = tuple(-(-d // self.block) if i == self.axis else d for i, d in enumerate(x.shape))
            if scale.shape != want:
                raise self.fail(f"blocked scale shape {scale.shape} must be {want} for X {x.shape}")
            size = x.shape[self.axis]
            self.expand = lambda p: np.repeat(p, self.block, axis=self.axis).take(range(size), axis=self.axis)
            return
        if scale.shape != (x.shape[self.axis],):
            raise self.fail(f"scale shape {scale.shape} must be () or ({x.shape[self.axis]},) for X {x.shape} "
                            f"along axis {self.axis}")
        shape = tuple(-1 if i == self.axis else 1 for i in range(len(x.shape)))
        self.expand = lambda p: p.reshape(shape)


@register("QuantizeLinear", since=10)
class QuantizeLinear(_Linear):
    """Y = saturate(round(X / scale) + zero_point) for integer Y; Y = cast(X / scale + zero_point)
    for float8/float4 Y (`saturate`, default 1: out of range -> +-max, else inf/NaN as Cast).
    Y's type is the zero point's, else the output_dtype attribute's (opset 21), else uint8.
    X / scale is computed in scale's type, or in `precision`'s (opset 23) when given."""

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = inputs[0]
        require_kind(self, x, FLOAT_KINDS + "i", "X")
        self._params(inputs)
        self.saturate = flag_attr(self, "saturate", 1)
        self.precision = onnx_dtype(self, "precision") if int_attr(self, "precision", 0) else None
        if self.precision is not None and self.precision not in _WIDE_FLOATS:
            raise self.fail(f"precision {self.precision} is not float16/float32/float64/bfloat16")
        zero = inputs[2] if len(inputs) > 2 else None
        named = onnx_dtype(self, "output_dtype") if int_attr(self, "output_dtype", 0) else None
        dtype = zero.dtype if zero is not None else named or np.dtype(np.uint8)
        if dtype not in QUANTIZED_TYPES or (named is not None and named != dtype):
            raise self.fail(f"quantized type {dtype} (output_dtype {named}) is not one of {_QUANTIZED_NAMES} "
                            "or differs from the zero point's")
        return [TensorSpec(dtype, x.shape)]

    def run(self, inputs, outputs):
        x, scale, out = inputs[0], inputs[1], outputs[0]
        if self.precision is not None:
            x, scale = x.astype(self.precision), scale.astype(self.precision)
        scaled = x / self.expand(scale)
        zero = inputs[2] if len(inputs) > 2 else None
        if out.dtype in LOW_BIT_FLOATS:
            if zero is not None:
                scaled = scaled + self.expand(zero.astype(np.float32))
            cast_into(out, scaled, self.saturate)
            return
        if zero is not None:
            scaled = np.rint(scaled) + self.expand(zero.astype(np.int64))
        saturate(scaled, out.dtype, out)


@register("DequantizeLinear", since=10)
class DequantizeLinear(_Linear):
    """Y = (X - zero_point) * scale with X - zero_point in float32, stored in the output_dtype
    attribute's type (opset 23) or else the scale's. X is one of QuantizeLinear's output types
    or int32."""

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = inputs[0]
        if x.dtype not in QUANTIZED_TYPES + (np.dtype(np.int32),):
            raise self.fail(f"X: expected a {_QUANTIZED_NAMES} or int32 tensor, got {x.dtype}")
        zero = inputs[2] if len(inputs) > 2 else None
        if zero is not None and zero.dtype != x.dtype:
            raise self.fail(f"zero point dtype {zero.dtype} differs from X dtype {x.dtype}")
        self._params(inputs)
        dtype = onnx_dtype(self, "output_dtype") if int_attr(self, "output_dtype", 0) else inputs[1].dtype
        if dtype not in _WIDE_FLOATS:
            raise self.fail(f"output type {dtype} (output_dtype, else the scale's) is not "
                            "float16/float32/float64/bfloat16")
        return [TensorSpec(dtype, x.shape)]

    def run(self, inputs, outputs):
        x = inputs[0].astype(np.float32)
        if len(inputs) > 2 and inputs[2] is not None:
            x -= self.expand(inputs[2].astype(np.float32))
        np.multiply(x, self.expand(inputs[1]), out=outputs[0], casting="unsafe")


@register("DynamicQuantizeLinear", since=11)
class DynamicQuantizeLinear(Kernel):
    """(X float32) -> (Y uint8, scale float32 (), zero point uint8 ()): the range [min(X, 0),
    max(X, 0)] maps onto [0, 255]; scale = range / 255 (1/255 when the range is empty),
    zero point = saturate(round(-min / scale)), Y = saturate(round(X / scale) + zero point)."""

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = inputs[0]
        require_kind(self, x, "f", "X")
        u8 = np.dtype(np.uint8)
        return [TensorSpec(u8, x.shape), TensorSpec(x.dtype, ()), TensorSpec(u8, ())]

    def run(self, inputs, outputs):
        x = inputs[0]
        hi = np.float32(max(0.0, float(np.max(x)))) if x.size else np.float32(0)
        lo = np.float32(min(0.0, float(np.min(x)))) if x.size else np.float32(0)
        scale = np.float32(1.0 if hi == lo else hi - lo) / np.float32(255)
        zero = np.rint(np.clip(np.float32(0) - lo / scale, 0, 255))
        saturate(np.rint(x / scale) + zero, outputs[0].dtype, outputs[0])
        outputs[1][...] = scale
        if len(outputs) > 2:
            outputs[2][...] = zero


def _integer(kernel: Kernel, spec: TensorSpec | None, what: str) -> None:
    if spec is not None and spec.dtype not in QUANTIZED[:2]:
        raise kernel.fail(f"{what}: expected an int8/uint8 tensor, got {spec.dtype}")


def _along(v: np.ndarray | None, axis_from_end: int, dtype: type) -> np.ndarray | int:
    """A zero point or scale (a scalar, or per row of A (-2) / per column of B (-1)) as `dtype`,
    shaped to broadcast against the matmul operand; 0 when absent."""
    if v is None:
        return 0
    v = v.astype(dtype)
    if v.size == 1:
        return v.reshape(())
    return v.reshape(-1, 1) if axis_from_end == -2 else v.reshape(-1)


@register("MatMulInteger", since=10)
class MatMulInteger(Kernel):
    """Y (int32) = (A - a_zero_point) @ (B - b_zero_point), numpy.matmul semantics; a_zero_point
    is a scalar or per row of A, b_zero_point a scalar or per column of B."""

    min_inputs, max_inputs = 2, 4

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        for i, name in enumerate(("A", "B", "a_zero_point", "b_zero_point")):
            _integer(self, inputs[i] if len(inputs) > i else None, name)
        return [TensorSpec(np.dtype(np.int32), matmul_shape(self, inputs[0].shape, inputs[1].shape))]

    def run(self, inputs, outputs):
        a = inputs[0].astype(np.int64) - _along(inputs[2] if len(inputs) > 2 else None, -2, np.int64)
        b = inputs[1].astype(np.int64) - _along(inputs[3] if len(inputs) > 3 else None, -1, np.int64)
        np.copyto(outputs[0], np.matmul(a, b), casting="unsafe")


@register("QLinearMatMul", since=10)
class QLinearMatMul(Kernel):
    """Y = saturate(round((A - a_zp) @ (B - b_zp) * a_scale * b_scale / y_scale) + y_zp), in
    y_zp's type; scales per tensor (or per row of A / column of B, as the zero points)."""

    min_inputs = max_inputs = 8

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        a, a_scale, a_zero, b, b_scale, b_zero, y_scale, y_zero = inputs
        for spec, name in ((a, "A"), (b, "B"), (a_zero, "a_zero_point"), (b_zero, "b_zero_point"),
                           (y_zero, "y_zero_point")):
            _integer(self, spec, name)
        for spec, name in ((a_scale, "a_scale"), (b_scale, "b_scale"), (y_scale, "y_scale")):
            require_kind(self, spec, FLOAT_KINDS, name)
        return [TensorSpec(y_zero.dtype, matmul_shape(self, a.shape, b.shape))]

    def run(self, inputs, outputs):
        a, a_scale, a_zero, b, b_scale, b_zero, y_scale, y_zero = inputs
        product = np.matmul(a.astype(np.int64) - _along(a_zero, -2, np.int64),
                            b.astype(np.int64) - _along(b_zero, -1, np.int64))
        multiplier = _along(a_scale, -2, np.float64) * _along(b_scale, -1, np.float64)
        scaled = product * (multiplier / y_scale.astype(np.float64).reshape(()))
        saturate(np.rint(scaled) + y_zero.astype(np.int64).reshape(()), y_zero.dtype, outputs[0])


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


@register("QLinearConv", since=10)
class QLinearConv(Conv):
    """Y = saturate(round((conv(X - x_zp, W - w_zp) + B) * x_scale * w_scale / y_scale) + y_zp),
    in y_zp's type; w_scale and w_zp are per tensor or per output channel, B is int32."""

    min_inputs, max_inputs = 8, 9

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x, w, y_zero = inputs[0], inputs[3], inputs[7]
        for spec, name in ((x, "x"), (w, "w"), (inputs[2], "x_zero_point"), (inputs[5], "w_zero_point"),
                           (y_zero, "y_zero_point")):
            _integer(self, spec, name)
        bias = inputs[8] if len(inputs) > 8 else None
        if bias is not None and (bias.dtype != np.int32 or bias.shape != w.shape[:1]):
            raise self.fail(f"B must be int32 ({w.shape[0]},), got {bias.dtype} {bias.shape}")
        spec = self._prepare_conv(*(TensorSpec(np.dtype(np.float64), s.shape) for s in (x, w)), None)
        return [TensorSpec(y_zero.dtype, spec.shape)]

    def run(self, inputs, outputs):
        x, x_scale, x_zero, w, w_scale, w_zero, y_scale, y_zero = inputs[:8]
        xf, wf = integer_operands(x, w, x_zero, w_zero)
        out = scratch("qconv.out", outputs[0].shape, np.float64)
        self._convolve(xf, wf, out)
        channel = (-1,) + (1,) * (out.ndim - 2)
        if len(inputs) > 8 and inputs[8] is not None:
            out += inputs[8].astype(np.float64).reshape(channel)
        w_scale = w_scale.astype(np.float64)
        multiplier = x_scale.astype(np.float64).reshape(()) / y_scale.astype(np.float64).reshape(())
        out *= multiplier * (w_scale.reshape(()) if w_scale.size == 1 else w_scale.reshape(channel))
        saturate(np.rint(out) + y_zero.astype(np.int64).reshape(()), y_zero.dtype, outputs[0])
