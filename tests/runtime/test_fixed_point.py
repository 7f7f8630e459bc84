"""TFLite's fixed-point helpers (runtime/kernels/fixed_point.py) against closed-form values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgerun.runtime.kernels.fixed_point import (
    INT32_MAX,
    INT32_MIN,
    exp_on_negative_values,
    float_to_int32,
    multiply_by_quantized_multiplier,
    one_over_one_plus_x_for_x_in_0_1,
    quantize_multiplier,
    reciprocal,
    round_half_away,
    rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
    saturating_rounding_multiply_by_pot,
    truncating_shift,
    wrap_int32,
)


@pytest.mark.parametrize("real,expected", [
    (0.5, (1 << 30, 0)),
    (1.0, (1 << 30, 1)),
    (0.75, (3 << 29, 0)),
    (0.1, (1717986918, -3)),            # frexp(0.1) = 0.8 * 2**-3; 0.8 * 2**31 = 1717986918.4
    (3.0, (3 << 29, 2)),
    (-0.5, (-(1 << 30), 0)),
    (0.0, (0, 0)),
    (1 - 2.0 ** -40, (1 << 30, 1)),     # the significand rounds up to 2**31: halved, shift + 1
    (2.0 ** -40, (0, 0)),               # shift below -31 flushes to zero
    (2.0 ** -31, (1 << 30, -30)),
])
def test_quantize_multiplier(real, expected):
    assert quantize_multiplier(real) == expected


def test_quantize_multiplier_rounds_the_significand_half_away_from_zero():
    # 0.5 + 2**-32 has significand 2**30 + 0.5 in Q31: std::round gives 2**30 + 1
    assert quantize_multiplier(0.5 + 2.0 ** -32) == ((1 << 30) + 1, 0)
    assert quantize_multiplier(-(0.5 + 2.0 ** -32)) == (-(1 << 30) - 1, 0)


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_quantize_multiplier_refuses_non_finite(bad):
    with pytest.raises(ValueError, match="not finite"):
        quantize_multiplier(bad)


def test_srdhm_rounds_ties_upward_and_saturates():
    a = np.array([1, -1, 3, -3, 1 << 30, INT32_MIN, INT32_MIN, INT32_MAX])
    b = np.array([1 << 30, 1 << 30, 1 << 30, 1 << 30, 1 << 30, INT32_MIN, INT32_MAX, INT32_MAX])
    # 2ab / 2**32: 0.5 -> 1, -0.5 -> 0, 1.5 -> 2, -1.5 -> -1 (gemmlowp's nudge and C's truncation)
    expected = [1, 0, 2, -1, 1 << 29, INT32_MAX, -INT32_MAX, INT32_MAX - 1]
    np.testing.assert_array_equal(saturating_rounding_doubling_high_mul(a, b), expected)


def test_srdhm_int16():
    a = np.array([1, -1, -(1 << 15), 1 << 14])
    b = np.array([1 << 14, 1 << 14, -(1 << 15), 1 << 14])
    np.testing.assert_array_equal(saturating_rounding_doubling_high_mul(a, b, bits=16), [1, 0, (1 << 15) - 1, 1 << 13])


def test_rounding_divide_by_pot_rounds_halves_away_from_zero():
    x = np.array([5, -5, 3, -3, 1, -1, 4, -4, 7, -7])
    np.testing.assert_array_equal(rounding_divide_by_pot(x, 1), [3, -3, 2, -2, 1, -1, 2, -2, 4, -4])
    np.testing.assert_array_equal(rounding_divide_by_pot(np.array([6, -6, 5, -5]), 2), [2, -2, 1, -1])
    np.testing.assert_array_equal(rounding_divide_by_pot(np.array([12, 12]), np.array([2, 3])), [3, 2])


def test_multiply_by_quantized_multiplier_double_rounding():
    half, quarter = quantize_multiplier(0.5), quantize_multiplier(0.25)
    # 0.5: the high multiply rounds ties upward (-3 * 0.5 = -1.5 -> -1)
    np.testing.assert_array_equal(multiply_by_quantized_multiplier(np.array([100, 3, -3]), *half), [50, 2, -1])
    # 0.25 = 2**30 with shift -1: exact high multiply, then RoundingDivideByPOT (-1.5 -> -2)
    np.testing.assert_array_equal(multiply_by_quantized_multiplier(np.array([6, -6, 10]), *quarter), [2, -2, 3])
    # 3.0: a left shift by 2 first, then * 0.75
    np.testing.assert_array_equal(multiply_by_quantized_multiplier(np.array([7, -7]), *quantize_multiplier(3.0)),
                                  [21, -21])


def test_multiply_by_quantized_multiplier_per_channel_and_wrapping_left_shift():
    m, s = zip(quantize_multiplier(0.5), quantize_multiplier(4.0), strict=True)
    got = multiply_by_quantized_multiplier(np.array([[10, 10], [-9, 1 << 30]]), np.array(m), np.array(s))
    # 1 << 30 shifted left by 3 wraps to 0 in int32, as TFLite's C++ does
    np.testing.assert_array_equal(got, [[5, 40], [-4, 0]])


def test_wrap_and_truncate():
    np.testing.assert_array_equal(wrap_int32(np.array([1 << 31, -(1 << 31) - 1, 5])), [INT32_MIN, INT32_MAX, 5])
    np.testing.assert_array_equal(truncating_shift(np.array([7, -7, -8, -1]), 1), [3, -3, -4, 0])


def test_round_half_away_from_zero():
    x = np.array([-2.5, -1.5, -0.5, -0.0, 0.5, 1.5, 2.5, 0.49999997, 8388609.0, -3.7], np.float32)
    np.testing.assert_array_equal(round_half_away(x), [-3, -2, -1, 0, 1, 2, 3, 0, 8388609, -4])
    assert round_half_away(x).dtype == np.float32
    np.testing.assert_array_equal(round_half_away(np.array([0.49999999999999994, -0.5])), [0.0, -1.0])


def test_float_to_int32_as_x86_converts():
    x = np.array([2.9, -2.9, 1e10, -1e10, np.nan, np.inf, 2.0 ** 31, -(2.0 ** 31)], np.float32)
    np.testing.assert_array_equal(float_to_int32(x), [2, -2, INT32_MIN, INT32_MIN, INT32_MIN, INT32_MIN,
                                                      INT32_MIN, INT32_MIN])


def test_saturating_rounding_multiply_by_pot():
    x = np.array([3, -3, (1 << 29), -(1 << 29), 6])
    np.testing.assert_array_equal(saturating_rounding_multiply_by_pot(x, 2),
                                  [12, -12, INT32_MAX, INT32_MIN, 24])
    np.testing.assert_array_equal(saturating_rounding_multiply_by_pot(x[[0, 1, 4]], -1), [2, -2, 3])


@pytest.mark.parametrize("integer_bits", [0, 2, 5, 12])
def test_exp_on_negative_values_approximates_exp(integer_bits):
    fractional = 31 - integer_bits
    reals = -np.linspace(0, min(2 ** integer_bits - 1e-6, 15), 301)
    raw = np.round(reals * 2.0 ** fractional).astype(np.int64)
    got = exp_on_negative_values(raw, integer_bits) / 2.0 ** 31
    np.testing.assert_allclose(got, np.exp(raw / 2.0 ** fractional), rtol=0, atol=3e-7)   # gemmlowp: ~1e-7
    assert exp_on_negative_values(np.array([0]), integer_bits)[0] == INT32_MAX


def test_exp_of_minus_one_and_the_barrel_constants():
    # -1.0 in Q5.26 takes the exp(-1/4) interval value and the exp(-1/4), exp(-1/2) barrel steps
    value = int(exp_on_negative_values(np.array([-(1 << 26)]), 5)[0])
    assert abs(value - round(math.exp(-1) * 2 ** 31)) <= 300     # 1.4e-7: the Taylor expansion's error


def test_one_over_one_plus_x_and_reciprocal():
    x = np.array([0, 1 << 30, (3 << 29), INT32_MAX])          # 0, 0.5, 0.75, ~1 in Q0.31
    got = one_over_one_plus_x_for_x_in_0_1(x) / 2.0 ** 31
    np.testing.assert_allclose(got, 1 / (1 + x / 2.0 ** 31), atol=2e-9)
    # 3.0 in Q12.19: 1/3 = 0.666.. * 2**-1, num_bits_over_unit = 12 - (32 - 2) + ... = 2 - 1
    significand, bits_over_unit = reciprocal(np.array([3 << 19]), 12)
    assert bits_over_unit[0] == 1
    assert abs(significand[0] / 2.0 ** 31 - 2 / 3) < 2e-9
