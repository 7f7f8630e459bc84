"""What the quantized converters share: a tensor's quantization parameters and their checks
(`scales`, `per_tensor`, `same_type`, `same_quantization`), TFLite's QuantizeMultiplier
(`fixed_point`), kernel_util's Quantize (`quantize_value`), the clamp range of a fused
activation (`activation_range`, TFLite's CalculateActivationRangeQuantized), the options of a
windowed operator (`window_options`) and `emit` for the nodes of domain ai.edgerun.tflite.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgerun.converters.tflite.context import OpContext
from edgerun.converters.tflite.layout import ACTIVATIONS, PADDINGS
from edgerun.converters.tflite.reader import TFLiteTensor
from edgerun.runtime.kernels.fixed_point import quantize_multiplier, round_half_away

DOMAIN = "ai.edgerun.tflite"
EIGHT_BIT = ("INT8", "UINT8")
RANGES = {"INT8": (-128, 127), "UINT8": (0, 255), "INT16": (-32768, 32767)}
DTYPE_NAMES = {"INT8": "int8", "UINT8": "uint8", "INT16": "int16"}


def scales(ctx: OpContext, tensor: TFLiteTensor | None, what: str) -> tuple[np.ndarray, np.ndarray, int]:
    """(scales float32, zero points int64, axis) of a quantized tensor; ConversionError when it
    has no quantization or a scale is not > 0."""
    if tensor is None:
        raise ctx.fail(f"{what} is missing")
    q = tensor.quantization
    if q is None:
        raise ctx.fail(f"{what} {tensor.name!r} ({tensor.type}) has no quantization parameters")
    if np.any(q.scale <= 0):
        raise ctx.fail(f"{what} {tensor.name!r}: quantization scales must be > 0, got {q.scale.tolist()}")
    return q.scale.astype(np.float32), q.zero_point.astype(np.int64), q.axis


def per_tensor(ctx: OpContext, tensor: TFLiteTensor | None, what: str,
               types: tuple[str, ...] = EIGHT_BIT) -> tuple[np.float32, int]:
    """(scale, zero point) of a per-tensor quantized `types` tensor."""
    if tensor is not None and tensor.type not in types:
        raise ctx.fail(f"{what} {tensor.name!r} is {tensor.type}; expected {'/'.join(types)}")
    scale, zero, _ = scales(ctx, tensor, what)
    if scale.size != 1:
        raise ctx.fail(f"{what} {tensor.name!r} must be quantized per tensor, has {scale.size} scales")
    low, high = RANGES[tensor.type]
    if not low <= zero[0] <= high:
        raise ctx.fail(f"{what} {tensor.name!r}: zero point {int(zero[0])} is outside the {tensor.type} range")
    return scale[0], int(zero[0])


def fixed_point(ctx: OpContext, real: float | np.ndarray, what: str) -> tuple[list[int], list[int]]:
    """TFLite's QuantizeMultiplier of one or more real multipliers: (multipliers, shifts)."""
    values = np.atleast_1d(np.asarray(real, np.float64))
    if not np.all(np.isfinite(values)):
        raise ctx.fail(f"the {what} multiplier is not finite ({values.tolist()})")
    pairs = [quantize_multiplier(v) for v in values]
    return [m for m, _ in pairs], [s for _, s in pairs]


def quantize_value(ctx: OpContext, value: float, scale: np.float32, zero: int) -> int:
    """kernel_util's Quantize: zero + int(round(value / scale)) in float32, halves away from 0."""
    q = round_half_away(np.float32(value) / np.float32(scale))
    if not -(2.0 ** 31) <= q <= 2.0 ** 31 - 1:
        raise ctx.fail(f"{value} does not quantize into int32 with scale {scale}")
    return zero + int(q)


def activation_range(ctx: OpContext, output: TFLiteTensor) -> dict[str, int]:
    """The fused activation as an integer clamp range on the output (TFLite's
    CalculateActivationRangeQuantized), as kernel attributes."""
    scale, zero = per_tensor(ctx, output, "output")
    low, high = RANGES[output.type]
    code = ctx.options.get("fused_activation_function", 0)
    name = ACTIVATIONS.get(code)
    if name == "RELU":
        low = max(low, quantize_value(ctx, 0.0, scale, zero))
    elif name in ("RELU6", "RELU_N1_TO_1"):
        bottom, top = (0.0, 6.0) if name == "RELU6" else (-1.0, 1.0)
        low = max(low, quantize_value(ctx, bottom, scale, zero))
        high = min(high, quantize_value(ctx, top, scale, zero))
    elif name != "NONE":
        raise ctx.fail(f"fused activation {name or code} is not supported on quantized tensors")
    return {"activation_min": low, "activation_max": high, "output_zero_point": zero}


def same_type(ctx: OpContext, *tensors: TFLiteTensor | None) -> str:
    """The common int8/uint8 type of `tensors` (the operator's activations)."""
    kinds = {t.type for t in tensors if t is not None}
    if len(kinds) != 1 or not kinds <= set(EIGHT_BIT):
        raise ctx.fail(f"expects int8 or uint8 activations of one type, got {sorted(kinds)}")
    return kinds.pop()


def emit(ctx: OpContext, op_type: str, inputs: list, **attrs: Any) -> Any:
    return ctx.emit(op_type, inputs, domain=DOMAIN, version=1, **attrs)


def window_options(ctx: OpContext, dilated: bool = True) -> dict[str, Any]:
    """padding, strides [h, w] (and dilations [h, w]) of a windowed operator, checked >= 1."""
    padding = PADDINGS.get(ctx.options.get("padding", 0))
    if padding not in ("SAME", "VALID"):
        raise ctx.fail(f"unknown padding code {ctx.options.get('padding')}")
    strides = [int(ctx.options.get("stride_h", 0)), int(ctx.options.get("stride_w", 0))]
    attrs: dict[str, Any] = {"padding": padding, "strides": strides}
    if dilated:
        attrs["dilations"] = [int(ctx.options.get(f"dilation_{axis}_factor", 1)) for axis in "hw"]
    if min(v for values in attrs.values() if isinstance(values, list) for v in values) < 1:
        raise ctx.fail(f"strides and dilations must be >= 1, got {ctx.options}")
    return attrs


def same_quantization(ctx: OpContext, what: str) -> None:
    (s_in, z_in), (s_out, z_out) = (per_tensor(ctx, t, n) for t, n in ((ctx.tensor(0), "input"),
                                                                       (ctx.output_tensor(0), "output")))
    if abs(float(s_in) - float(s_out)) > 1e-6 or z_in != z_out:
        raise ctx.fail(f"{what} needs the same input and output quantization, got scale {s_in} / zero point "
                       f"{z_in} in and {s_out} / {z_out} out")
