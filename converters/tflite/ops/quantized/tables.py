"""Elementwise functions of one 8-bit input, tabulated: RELU, RELU6, RELU_N1_TO_1,
RELU_0_TO_1, LOGISTIC, TANH, LEAKY_RELU and HARD_SWISH each become a TableLookup of 256
entries computed here with TFLite's exact formulas.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgerun.converters.tflite.context import OpContext
from edgerun.converters.tflite.ops.quantized.common import RANGES, emit, per_tensor, same_type
from edgerun.converters.tflite.registry import converts
from edgerun.runtime.kernels.fixed_point import (
    multiply_by_quantized_multiplier,
    quantize_multiplier,
    round_half_away,
    rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
    truncating_shift,
)


def _table_op(ctx: OpContext, table_of: Any) -> None:
    """Bind TableLookup(x, table), table[i] = what TFLite computes for the i-th value of the
    input type: `table_of(values, (in_scale, in_zero), (out_scale, out_zero), out_type)`."""
    ctx.need_inputs(1)
    x, out = ctx.tensor(0), ctx.output_tensor(0)
    kind = same_type(ctx, x, out)
    low, high = RANGES[kind]
    values = np.arange(low, high + 1, dtype=np.int64)
    table = table_of(values, per_tensor(ctx, x, "input"), per_tensor(ctx, out, "output"), kind)
    table = ctx.const("table", np.clip(table, low, high).astype(x.dtype))
    ctx.bind(0, emit(ctx, "TableLookup", [ctx.input(0), table]))


def _relu_table(bottom: float, top: float | None):
    """TFLite's QuantizedReluX: requantize by float32(s_in / s_out), then clamp to
    [zp + roundf(bottom / s_out), zp + roundf(top / s_out)] (no upper bound for RELU)."""

    def table(values, inp, out, kind):
        (s_in, z_in), (s_out, z_out) = inp, out
        m, s = quantize_multiplier(float(np.float32(s_in) / np.float32(s_out)))
        low, high = RANGES[kind]
        low = max(low, z_out + int(round_half_away(np.float32(bottom) / np.float32(s_out))))
        if top is not None:
            high = min(high, z_out + int(round_half_away(np.float32(top) / np.float32(s_out))))
        return np.clip(z_out + multiply_by_quantized_multiplier(values - z_in, m, s), low, high)

    return table


@converts("RELU", "RELU6", "RELU_N1_TO_1", "RELU_0_TO_1", quantized=True)
def relu(ctx: OpContext) -> None:
    """Quantized RELU / RELU6 / RELU_N1_TO_1 / RELU_0_TO_1: requantization to the output's
    scale and a clamp, as TFLite's QuantizedReluX computes them (tabulated)."""
    bounds = {"RELU": (0.0, None), "RELU6": (0.0, 6.0), "RELU_N1_TO_1": (-1.0, 1.0), "RELU_0_TO_1": (0.0, 1.0)}
    _table_op(ctx, _relu_table(*bounds[ctx.op.opcode]))


def _lut_table(fn):
    """TFLite's LUTPopulate for int8/uint8: float32 dequantize, fn in float32, multiply by
    float32(1 / s_out), round half away from zero, add the zero point in float32, truncate."""

    def table(values, inp, out, kind):
        (s_in, z_in), (s_out, z_out) = inp, out
        dequantized = np.float32(s_in) * (values - z_in).astype(np.float32)
        rescaled = round_half_away(fn(dequantized) * (np.float32(1.0) / np.float32(s_out)))
        return np.trunc(rescaled + np.float32(z_out)).astype(np.int64)

    return table


def _sigmoid(x: np.ndarray) -> np.ndarray:   # 1.0f / (1.0f + expf(-x)), expf correctly rounded
    return np.float32(1.0) / (np.float32(1.0) + np.exp(-x.astype(np.float64)).astype(np.float32))


def _tanh(x: np.ndarray) -> np.ndarray:
    return np.tanh(x.astype(np.float64)).astype(np.float32)


@converts("LOGISTIC", quantized=True)
def logistic(ctx: OpContext) -> None:
    """Quantized LOGISTIC: TFLite's 256-entry table of the float sigmoid; the output scale
    must be 1/256, as TFLite requires."""
    if float(per_tensor(ctx, ctx.output_tensor(0), "output")[0]) != 1.0 / 256:
        raise ctx.fail("the output scale of a quantized LOGISTIC must be 1/256")
    _table_op(ctx, _lut_table(_sigmoid))


@converts("TANH", quantized=True)
def tanh(ctx: OpContext) -> None:
    """Quantized TANH: TFLite's 256-entry table of the float tanh."""
    _table_op(ctx, _lut_table(_tanh))


@converts("LEAKY_RELU", quantized=True)
def leaky_relu(ctx: OpContext) -> None:
    """Quantized LEAKY_RELU: x >= zp rescaled by float32(s_in / s_out), below by
    float32(s_in * alpha / s_out) (a negative alpha negates the product), as TFLite does."""
    alpha = np.float32(ctx.options.get("alpha", 0.0))

    def table(values, inp, out, kind):
        (s_in, z_in), (s_out, z_out) = inp, out
        m_id, s_id = quantize_multiplier(float(np.float32(s_in) / np.float32(s_out)))
        m_a, s_a = quantize_multiplier(float(np.float32(np.float32(s_in) * alpha) / np.float32(s_out)))
        diff = values - z_in
        identity = multiply_by_quantized_multiplier(diff, m_id, s_id)
        scaled = np.sign(m_a) * multiply_by_quantized_multiplier(diff, abs(m_a), s_a)
        return z_out + np.where(diff >= 0, identity, scaled)

    _table_op(ctx, table)


def _int16_multiplier(real: float) -> tuple[int, int]:
    """QuantizeMultiplier then DownScaleInt32ToInt16Multiplier: a Q15 multiplier, exponent."""
    m, exponent = quantize_multiplier(real)
    return (32767 if m >= (1 << 31) - 1 - (1 << 15) else (m + (1 << 15)) >> 16), exponent


def _saturate16(x: np.ndarray) -> np.ndarray:
    return np.clip(x, -(1 << 15), (1 << 15) - 1)


def _hard_swish_table(values, inp, out, kind):
    """TFLite's reference 8-bit HardSwish, in int16 fixed point: x * relu6(x + 3) / 6 with the
    'reluish' factor rescaled to [-1, 1] (multiplier s_in / 128 / (3 / 32768)) and the output
    multiplier s_in / 128 / s_out, both float32 then Q15."""
    (s_in, z_in), (s_out, z_out) = inp, out
    hires = np.float32(1.0 / 128.0) * np.float32(s_in)
    out_m, out_exp = _int16_multiplier(float(hires / np.float32(s_out)))
    relu_m, relu_exp = _int16_multiplier(float(hires / np.float32(3.0 / 32768.0)))
    x = (values - z_in) * 128
    preshift = saturating_rounding_doubling_high_mul(x, out_m, bits=16)
    reluish = x
    if relu_exp > 0:
        reluish = _saturate16(reluish << (relu_exp - 1))
    reluish = saturating_rounding_doubling_high_mul(reluish, relu_m, bits=16)
    if relu_exp > 0:
        reluish = _saturate16(reluish << 1)
    if relu_exp < 0:
        reluish = rounding_divide_by_pot(reluish, -relu_exp)
    reluish = (reluish + (1 << 15)) >> 1
    product = reluish * preshift                  # SaturatingDoublingHighMul: truncating
    product = np.where((reluish == -(1 << 15)) & (preshift == -(1 << 15)), (1 << 15) - 1,
                       truncating_shift(product, 15))
    y = rounding_divide_by_pot(product, -out_exp) + z_out
    return (y + (1 << 15) & 0xFFFF) - (1 << 15)   # int16 arithmetic wraps


@converts("HARD_SWISH", quantized=True)
def hard_swish(ctx: OpContext) -> None:
    """Quantized HARD_SWISH: TFLite's reference int16 fixed-point formula, tabulated; its
    output multiplier must be below 1 (TFLite's requirement)."""
    s_in = per_tensor(ctx, ctx.tensor(0), "input")[0]
    s_out = per_tensor(ctx, ctx.output_tensor(0), "output")[0]
    if _int16_multiplier(float(np.float32(1.0 / 128.0) * np.float32(s_in) / np.float32(s_out)))[1] > 0:
        raise ctx.fail(f"the output scale {s_out} is too small for the input scale {s_in}")
    _table_op(ctx, _hard_swish_table)
