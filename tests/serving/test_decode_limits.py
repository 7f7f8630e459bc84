"""Request decoding limits (serving.datatypes / serving.validate): shapes that overflow or hide
huge dimensions, BYTES lengths and counts checked before parsing, deeply nested JSON values."""

from __future__ import annotations

import pytest

from edgerun.serving.datatypes import from_list, from_raw
from tests.serving.requests import assert_invalid


@pytest.mark.parametrize("shape,words", [
    ([0, 2**28 + 2**31], ["input 't'", "more than"]),  # a zero dimension used to hide a huge one
    ([0, 2**62], ["input 't'", "more than"]),
    ([2**63], ["input 't'", "int64"]),
    ([2**64, 0], ["input 't'", "int64"]),
    ([1.5, 2], ["input 't'", "int64"]),
    ([True, 2], ["input 't'", "int64"]),
    ([0, -1], ["input 't'", "negative"]),
    ([2**16, 2**16, 0, 2**16], ["input 't'", "more than"]),
])
def test_shape_limits(shape, words) -> None:
    assert_invalid(lambda: from_raw("t", "FP32", shape, b""), *words)
    assert_invalid(lambda: from_list("t", "FP32", shape, []), *words)


def test_zero_dimension_with_sane_other_dims_is_fine() -> None:
    assert from_raw("t", "FP32", [0, 64], b"").shape == (0, 64)


# --- 3. BYTES ------------------------------------------------------------------------------

def test_bytes_raw_length_is_checked_before_parsing() -> None:
    assert_invalid(lambda: from_raw("t", "BYTES", [1000], b"\x00" * 3999),
                   "input 't'", "expected 1000 BYTES elements")
    # more elements than the shape holds: refused as soon as the count is exceeded
    assert_invalid(lambda: from_raw("t", "BYTES", [2], b"\x00\x00\x00\x00" * 100000), "input 't'", "got more")
    assert from_raw("t", "BYTES", [2], b"\x01\x00\x00\x00a\x00\x00\x00\x00").tolist() == [b"a", b""]


@pytest.mark.parametrize("value", [5, 10**9, 1.5, None, True, {"a": 1}])
def test_bytes_typed_values_must_be_str_or_bytes(value) -> None:
    assert_invalid(lambda: from_list("t", "BYTES", [1], [value]), "input 't'", "BYTES values must be")


def test_bytes_typed_count_is_checked_while_decoding() -> None:
    assert_invalid(lambda: from_list("t", "BYTES", [2], ["a"] * 100000), "input 't'", "expected 2 values")
    assert from_list("t", "BYTES", [2], ["a", b"b"]).tolist() == [b"a", b"b"]


def test_deeply_nested_values_are_invalid_not_recursion_errors() -> None:
    nested: list = [1.0]
    for _ in range(5000):
        nested = [nested]
    assert_invalid(lambda: from_list("t", "BYTES", [1], nested), "input 't'", "nested deeper")
    assert_invalid(lambda: from_list("t", "FP32", [1], nested), "input 't'")


# --- 6. model control follower survives anything ------------------------------------------------
