"""The raw and list encodings of every v2 datatype, against tritonclient's own encoders."""

from __future__ import annotations

import numpy as np
import pytest
from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor

from edgerun.runtime.errors import ErrorCode
from edgerun.serving.datatypes import DTYPES, datatype_of, from_list, from_raw, to_raw
from edgerun.serving.errors import ServingError

NUMERIC = [name for name in DTYPES if name != "BYTES"]


@pytest.mark.parametrize("datatype", NUMERIC)
def test_raw_round_trip(datatype: str) -> None:
    array = (np.arange(12) % 2 if datatype == "BOOL" else np.arange(12) * 3).astype(DTYPES[datatype]).reshape(3, 4)
    assert datatype_of(array.dtype) == datatype
    raw = to_raw(array)
    assert raw == array.astype(array.dtype.newbyteorder("<")).tobytes()
    back = from_raw("t", datatype, [3, 4], raw)
    assert back.dtype == array.dtype and np.array_equal(back, array)


@pytest.mark.parametrize("datatype", NUMERIC)
def test_list_round_trip(datatype: str) -> None:
    values = [1, 0, 1, 1] if datatype == "BOOL" else [1, 2, 3, 4]
    array = from_list("t", datatype, [2, 2], values)
    assert array.dtype == DTYPES[datatype] and array.shape == (2, 2)
    assert np.array_equal(array.ravel(), np.array(values).astype(DTYPES[datatype]))
    assert from_raw("t", datatype, [2, 2], to_raw(array)).tolist() == array.tolist()


def test_bytes_match_tritonclient() -> None:
    array = np.array([[b"a", b""], [b"\x00\xff", "h\u00e9".encode()]], dtype=object)
    raw = to_raw(array)
    assert raw == serialize_byte_tensor(array).item()
    back = from_raw("s", "BYTES", [2, 2], raw)
    assert back.tolist() == array.tolist()
    assert deserialize_bytes_tensor(raw).tolist() == array.ravel().tolist()
    assert from_list("s", "BYTES", [2], ["x", "yz"]).tolist() == [b"x", b"yz"]


def test_big_endian_arrays_are_sent_little_endian() -> None:
    array = np.arange(4, dtype=">i4")
    assert to_raw(array) == np.arange(4, dtype="<i4").tobytes()


@pytest.mark.parametrize("datatype,shape,raw,words", [
    ("FP32", [2], b"\x00" * 7, "expected 8 bytes for FP32 [2], got 7"),
    ("BYTES", [2], b"\x01\x00\x00\x00a", "expected 2 BYTES elements"),
    ("BYTES", [1], b"\x09\x00\x00\x00a", "overruns"),
    ("BYTES", [1], b"\x01\x00", "truncated"),
    ("FP32", [-1], b"", "negative dimension"),
    ("FP32", [1 << 20, 1 << 20], b"", "more than"),
    ("FP32", [1] * 17, b"", "rank 17"),
    ("COMPLEX", [1], b"", "unknown datatype 'COMPLEX'"),
])
def test_bad_raw_data(datatype: str, shape: list[int], raw: bytes, words: str) -> None:
    with pytest.raises(ServingError) as info:
        from_raw("t", datatype, shape, raw)
    assert info.value.status is ErrorCode.INVALID_ARGUMENT and words in info.value.message
    assert "'t'" in info.value.message


def test_values_that_do_not_fit() -> None:
    with pytest.raises(ServingError, match="do not fit datatype UINT8"):
        from_list("t", "UINT8", [1], [-1])
    with pytest.raises(ServingError, match="expected 3 values"):
        from_list("t", "INT32", [3], [1, 2])
