"""TFLite's integer arithmetic (gemmlowp fixed point), emulated exactly with numpy int64.

TFLite's quantized kernels hold values in int32 and rescale them by a real multiplier given
as a Q31 fixed-point number and a power-of-two shift (`quantize_multiplier`). These helpers
compute in int64 and reproduce every int32 step bit for bit: C++ division truncates toward
zero where numpy's `//` floors, int32 products wrap, std::round rounds halves away from zero
where np.round rounds them to even, and a float->int32 cast of an out-of-range value gives
INT32_MIN on x86 (cvttss2si). Arrays in, int64 arrays out; every value returned lies in the
int32 range unless a docstring says otherwise.

The double-rounding variant is the one TFLite's CPU kernels build with (TFLITE_SINGLE_ROUNDING
off): MultiplyByQuantizedMultiplier(x, m, s) = RoundingDivideByPOT(
SaturatingRoundingDoublingHighMul(x << max(s, 0), m), max(-s, 0)).
"""

from __future__ import annotations

import math

import numpy as np

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1


def wrap_int32(x: np.ndarray) -> np.ndarray:
    """`x` (integers) reduced to int32 with two's-complement wraparound, as int64."""
    return np.asarray(x).astype(np.int32).astype(np.int64)


def quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLite's QuantizeMultiplier: (q, shift) with real ~= q * 2**(shift - 31), q a Q31
    significand in [2**30, 2**31) (0 for real == 0). frexp, then std::round (half away from
    zero) of q * 2**31; a significand that rounds up to 2**31 halves and bumps the shift; a
    shift below -31 flushes to (0, 0). ValueError for a NaN or infinite multiplier."""
    real = float(real)
    if not math.isfinite(real):
        raise ValueError(f"quantized multiplier {real} is not finite")
    if real == 0.0:
        return 0, 0
    significand, shift = math.frexp(real)
    scaled = significand * (1 << 31)              # exact: a power-of-two scaling
    q = int(math.copysign(math.floor(abs(scaled) + 0.5), scaled))  # exact: |scaled| < 2**31
    if q == 1 << 31:
        q //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return q, shift


def saturating_rounding_doubling_high_mul(a: np.ndarray, b: np.ndarray | int, bits: int = 32) -> np.ndarray:
    """gemmlowp's SaturatingRoundingDoublingHighMul on int32 values (int16 with bits=16): the
    high half of 2*a*b rounded to nearest, ties toward +infinity; a == b == the type's minimum
    saturates to its maximum.

    gemmlowp adds a nudge of +2**(bits-2) (ab >= 0) or 1 - 2**(bits-2) (ab < 0) and divides by
    2**(bits-1) truncating toward zero; for ab < 0, trunc((ab + 1 - h) / 2h) = floor((ab + h) /
    2h) with h = 2**(bits-2), so both cases are one arithmetic shift of ab + h."""
    ab = np.asarray(np.multiply(a, b, dtype=np.int64))   # |ab| <= 2**62: no int64 overflow
    ab += 1 << (bits - 2)
    ab >>= bits - 1
    return np.minimum(ab, (1 << (bits - 1)) - 1, out=ab)   # only a == b == min exceeds the maximum


def truncating_shift(x: np.ndarray, exponent: int) -> np.ndarray:
    """C's x / 2**exponent on integers: the quotient truncated toward zero (>> floors)."""
    x = np.asarray(x, np.int64)
    return (x + np.where(x < 0, (1 << exponent) - 1, 0)) >> exponent


def rounding_divide_by_pot(x: np.ndarray, exponent: np.ndarray | int) -> np.ndarray:
    """gemmlowp's RoundingDivideByPOT: x / 2**exponent rounded to nearest, ties away from
    zero (exponent >= 0, scalar or broadcasting against x): (x + 2**(e-1) - [x < 0]) >> e."""
    x = np.asarray(x, np.int64)
    exponent = np.asarray(exponent, np.int64)
    half = (np.int64(1) << exponent) >> 1         # 0 when exponent == 0
    negative = (x >> 63) & np.minimum(half, 1)    # 1 for x < 0 (when exponent > 0)
    return (x + half - negative) >> exponent


def multiply_by_quantized_multiplier(x: np.ndarray, multiplier: np.ndarray | int,
                                     shift: np.ndarray | int) -> np.ndarray:
    """TFLite's MultiplyByQuantizedMultiplier(int32 x, multiplier, shift): x * real where
    (multiplier, shift) = quantize_multiplier(real). A positive shift multiplies x by
    2**shift in int32 first (wrapping on overflow, as the C++ does); multiplier and shift
    may be per-channel arrays broadcasting against x."""
    shift = np.asarray(shift, np.int64)
    x = np.asarray(x, np.int64)
    if np.any(shift > 0):
        x = wrap_int32(x << np.maximum(shift, 0))
    high = saturating_rounding_doubling_high_mul(x, multiplier)
    return rounding_divide_by_pot(high, np.maximum(-shift, 0))


def round_half_away(x: np.ndarray) -> np.ndarray:
    """std::round on floats: to nearest, halves away from zero; exact for every float
    (never adds 0.5 to a value that cannot hold it). Same dtype as x."""
    x = np.asarray(x)
    whole = np.trunc(x)
    return whole + np.where(np.abs(x - whole) >= 0.5, np.sign(x), 0).astype(x.dtype)


def float_to_int32(x: np.ndarray) -> np.ndarray:
    """static_cast<int32_t> of floats as x86 computes it: truncation toward zero, and
    INT32_MIN for NaN and for values outside the int32 range. int64 result."""
    x = np.asarray(x)
    inside = (x >= INT32_MIN) & (x < 2.0 ** 31)   # NaN compares false
    return np.where(inside, np.trunc(np.where(inside, x, 0)), INT32_MIN).astype(np.int64)


def integer_range(dtype: np.dtype) -> tuple[int, int]:
    """(min, max) of an integer dtype as Python ints."""
    info = np.iinfo(np.dtype(dtype))
    return int(info.min), int(info.max)


# --- gemmlowp's fixed-point transcendentals (FixedPoint<int32, integer_bits> raw values) ---------


def saturating_rounding_multiply_by_pot(x: np.ndarray, exponent: int) -> np.ndarray:
    """gemmlowp's SaturatingRoundingMultiplyByPOT on int32: a saturating left shift for a
    positive exponent, RoundingDivideByPOT for a negative one."""
    x = np.asarray(x, np.int64)
    if exponent <= 0:
        return rounding_divide_by_pot(x, -exponent)
    threshold = (1 << (31 - exponent)) - 1
    return np.where(x > threshold, INT32_MAX, np.where(x < -threshold, INT32_MIN, x << exponent))


def _exp_on_interval_between_negative_one_quarter_and_0_excl(a: np.ndarray) -> np.ndarray:
    """exp(a) for a in [-1/4, 0), Q0.31 in and out: a Taylor expansion around -1/8."""
    srdhm = saturating_rounding_doubling_high_mul
    constant_term, one_third = 1895147668, 715827883          # exp(-1/8), 1/3 in Q0.31
    x = a + (1 << 28)
    x2 = srdhm(x, x)
    x3 = srdhm(x2, x)
    x4 = srdhm(x2, x2)
    x4_over_4 = rounding_divide_by_pot(x4, 2)
    poly = rounding_divide_by_pot(srdhm(x4_over_4 + x3, one_third) + x2, 1)
    return constant_term + srdhm(constant_term, x + poly)


# exp(-2**k) in Q0.31 for k = -2..4, gemmlowp's barrel shifter constants
_EXP_BARREL = ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308), (2, 39332535),
               (3, 720401), (4, 242))


def exp_on_negative_values(a: np.ndarray, integer_bits: int) -> np.ndarray:
    """gemmlowp's exp_on_negative_values: exp(a) for a <= 0 given with `integer_bits` integer
    bits (raw int32), the result in Q0.31 (1.0 as INT32_MAX)."""
    a = np.asarray(a, np.int64)
    fractional = 31 - integer_bits
    one_quarter = 1 << (fractional - 2)
    a_mod = (a & (one_quarter - 1)) - one_quarter
    result = _exp_on_interval_between_negative_one_quarter_and_0_excl(
        saturating_rounding_multiply_by_pot(a_mod, integer_bits))
    remainder = a_mod - a
    for exponent, multiplier in _EXP_BARREL:
        if integer_bits > exponent:
            chosen = (remainder & (1 << (fractional + exponent))) != 0
            result = np.where(chosen, saturating_rounding_doubling_high_mul(result, multiplier), result)
    if integer_bits > 5:
        result = np.where(a < -(1 << (36 - integer_bits)), 0, result)
    return np.where(a == 0, INT32_MAX, result)


def one_over_one_plus_x_for_x_in_0_1(a: np.ndarray) -> np.ndarray:
    """gemmlowp's 1 / (1 + a) for a in [0, 1) in Q0.31: three Newton-Raphson steps in Q2.29."""
    srdhm = saturating_rounding_doubling_high_mul
    a = np.asarray(a, np.int64)
    total = a + INT32_MAX                          # RoundingHalfSum(a, One)
    half_denominator = truncating_shift(total + np.where(total >= 0, 1, -1), 1)
    x = 1515870810 + srdhm(half_denominator, -1010580540)       # 48/17 - 32/17 * d, Q2.29
    for _ in range(3):
        one_minus = (1 << 29) - srdhm(half_denominator, x)
        x = x + saturating_rounding_multiply_by_pot(srdhm(x, one_minus), 2)
    return saturating_rounding_multiply_by_pot(x, 1)


def reciprocal(x: np.ndarray, integer_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """TFLite's GetReciprocal of positive fixed-point values with `integer_bits`: (the
    reciprocal's Q0.31 significand, num_bits_over_unit) per element."""
    x = np.asarray(x, np.int64)
    headroom_plus_one = 32 - np.frexp(x.astype(np.float64))[1]  # count of leading zeros (x < 2**31)
    shifted = ((x << headroom_plus_one) & 0xFFFFFFFF) - (1 << 31)
    return one_over_one_plus_x_for_x_in_0_1(shifted), integer_bits - headroom_plus_one
