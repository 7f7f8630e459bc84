"""Element types of .erm tensors, their numpy equivalents, and how the 4- and 2-bit ones
and strings are stored in a file (see runtime/schema/edgerun.fbs).

String tensors are numpy arrays of dtype object holding one Python `str` per element (what
`onnx.numpy_helper.to_array` gives for an ONNX STRING tensor). A file stores them as a buffer
of length-prefixed UTF-8 (`encode_strings` / `decode_strings`).
"""

from __future__ import annotations

import struct
from typing import Any

import ml_dtypes
import numpy as np

from edgerun.runtime.schema.fb.DType import DType

# Every dtype a tensor may have, in the schema's numbering. bfloat16 and the 8-, 4- and
# 2-bit types are numpy extension types from ml_dtypes (as in JAX and TensorFlow), which
# hold every element in one byte.
_TO_NUMPY: dict[int, np.dtype] = {
    DType.FLOAT32: np.dtype(np.float32),
    DType.FLOAT16: np.dtype(np.float16),
    DType.FLOAT64: np.dtype(np.float64),
    DType.BFLOAT16: np.dtype(ml_dtypes.bfloat16),
    DType.INT8: np.dtype(np.int8),
    DType.INT16: np.dtype(np.int16),
    DType.INT32: np.dtype(np.int32),
    DType.INT64: np.dtype(np.int64),
    DType.UINT8: np.dtype(np.uint8),
    DType.UINT16: np.dtype(np.uint16),
    DType.UINT32: np.dtype(np.uint32),
    DType.UINT64: np.dtype(np.uint64),
    DType.BOOL: np.dtype(np.bool_),
    DType.FLOAT8E4M3FN: np.dtype(ml_dtypes.float8_e4m3fn),
    DType.FLOAT8E4M3FNUZ: np.dtype(ml_dtypes.float8_e4m3fnuz),
    DType.FLOAT8E5M2: np.dtype(ml_dtypes.float8_e5m2),
    DType.FLOAT8E5M2FNUZ: np.dtype(ml_dtypes.float8_e5m2fnuz),
    DType.FLOAT8E8M0: np.dtype(ml_dtypes.float8_e8m0fnu),
    DType.FLOAT4E2M1: np.dtype(ml_dtypes.float4_e2m1fn),
    DType.INT4: np.dtype(ml_dtypes.int4),
    DType.UINT4: np.dtype(ml_dtypes.uint4),
    DType.INT2: np.dtype(ml_dtypes.int2),
    DType.UINT2: np.dtype(ml_dtypes.uint2),
    DType.STRING: np.dtype(object),
}
STRING = np.dtype(object)  # in memory: an object array of Python str
_MAX_STRING_BYTES = 0xFFFFFFFF  # a length prefix is a uint32
# Types narrower than a byte: bits per element. Files pack them (two or four per byte),
# memory holds one per byte in the low bits.
PACKED_BITS: dict[np.dtype, int] = {
    np.dtype(ml_dtypes.float4_e2m1fn): 4,
    np.dtype(ml_dtypes.int4): 4,
    np.dtype(ml_dtypes.uint4): 4,
    np.dtype(ml_dtypes.int2): 2,
    np.dtype(ml_dtypes.uint2): 2,
}
_FROM_NUMPY: dict[np.dtype, int] = {v: k for k, v in _TO_NUMPY.items()}
_NAMES = {v: k for k, v in vars(DType).items() if not k.startswith("_")}


def dtype_name(code: int) -> str:
    """The schema's name for a dtype code, e.g. 'FLOAT32' (or 'code N')."""
    return _NAMES.get(code, f"code {code}")


def to_numpy(code: int) -> np.dtype:
    """numpy dtype for a schema dtype code; KeyError if numpy has none."""
    return _TO_NUMPY[code]


def from_numpy(dtype: np.dtype | type | str) -> int:
    """Schema dtype code for a numpy dtype; KeyError for types .erm cannot hold."""
    return _FROM_NUMPY[np.dtype(dtype).newbyteorder("=")]


def is_supported(dtype: np.dtype | type | str) -> bool:
    try:
        from_numpy(dtype)
    except (KeyError, TypeError):
        return False
    return True


def bit_width(dtype: np.dtype | type | str) -> int:
    """Bits of one element as ONNX counts them: 4 for int4, 8 for bool and float8, ..."""
    dtype = np.dtype(dtype)
    return PACKED_BITS.get(dtype, dtype.itemsize * 8)


def stored_nbytes(dtype: np.dtype | type | str, count: int) -> int:
    """Bytes that `count` elements of `dtype` take in a file (packed for 4- and 2-bit types)."""
    return -(-count * bit_width(dtype) // 8)


def pack(array: np.ndarray) -> np.ndarray:
    """The bytes a file holds for `array`: 4- and 2-bit elements packed into uint8, first
    element in the lowest bits, padding bits zero; other dtypes unchanged."""
    bits = PACKED_BITS.get(array.dtype)
    if bits is None:
        return array
    per_byte = 8 // bits
    codes = np.ascontiguousarray(array).reshape(-1).view(np.uint8) & np.uint8((1 << bits) - 1)
    padded = np.zeros(-(-codes.size // per_byte) * per_byte, np.uint8)
    padded[: codes.size] = codes
    lanes = padded.reshape(-1, per_byte)
    packed = np.zeros(lanes.shape[0], np.uint8)
    for k in range(per_byte):
        packed |= lanes[:, k] << np.uint8(k * bits)
    return packed


def unpack(raw: np.ndarray, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of `pack`: `shape`-shaped `dtype` elements from packed uint8 `raw`, which
    holds exactly stored_nbytes(dtype, count) bytes (padding bits are ignored)."""
    bits = PACKED_BITS[np.dtype(dtype)]
    raw = np.asarray(raw, np.uint8).reshape(-1, 1)
    shifts = np.arange(0, 8, bits, dtype=np.uint8)
    codes = (raw >> shifts) & np.uint8((1 << bits) - 1)
    count = int(np.prod(shape, dtype=np.int64))
    return codes.reshape(-1)[:count].view(dtype).reshape(shape)


def is_string(dtype: np.dtype | type | str | None) -> bool:
    """Whether `dtype` is the string dtype (numpy object)."""
    return dtype is not None and np.dtype(dtype) == STRING


def encode_strings(array: np.ndarray) -> np.ndarray:
    """The bytes a file holds for a string tensor, as uint8: each element in row-major order
    as a little-endian uint32 byte count and its UTF-8. TypeError for an element that is not
    a str, ValueError for one UTF-8 cannot encode (a lone surrogate) or longer than 4 GiB."""
    parts = []
    for i, item in enumerate(np.asarray(array, dtype=object).reshape(-1)):
        if not isinstance(item, str):
            raise TypeError(f"element {i} is a {type(item).__name__}, not a str")
        try:
            raw = item.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"element {i} cannot be encoded as UTF-8: {exc.reason}") from None
        if len(raw) > _MAX_STRING_BYTES:
            raise ValueError(f"element {i} is {len(raw)} bytes, over the 4 GiB limit of one string")
        parts += (struct.pack("<I", len(raw)), raw)
    return np.frombuffer(b"".join(parts), np.uint8)


def decode_strings(raw: Any) -> list[str]:
    """Inverse of `encode_strings`: the str elements of a buffer (bytes-like). ValueError,
    naming the element and byte position, when a length prefix is cut off or runs past the
    end, or an element is not valid UTF-8. Work and memory are linear in len(raw): each
    element takes at least its 4-byte prefix."""
    data = bytes(raw)
    items: list[str] = []
    pos, end = 0, len(data)
    while pos < end:
        if end - pos < 4:
            raise ValueError(f"element {len(items)}: its length prefix at byte {pos} is cut off "
                             f"(buffer of {end} bytes)")
        (length,) = struct.unpack_from("<I", data, pos)
        pos += 4
        if length > end - pos:
            raise ValueError(f"element {len(items)}: length {length} at byte {pos - 4} runs past the end "
                             f"of the {end}-byte buffer")
        try:
            items.append(data[pos : pos + length].decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise ValueError(f"element {len(items)} is not valid UTF-8 ({exc.reason} at byte "
                             f"{pos + exc.start})") from None
        pos += length
    return items


def to_strings(data: Any) -> np.ndarray:
    """`data` (a numpy str, bytes or object array, or nested lists) as an object array of
    str; bytes elements are decoded as UTF-8. TypeError for any other element or dtype,
    ValueError for bytes that are not UTF-8 or ragged lists."""
    array = data if isinstance(data, np.ndarray) else np.asarray(data, dtype=object)
    if array.dtype.kind == "U":
        return array.astype(object)
    if array.dtype.kind not in "OS":
        raise TypeError(f"expected strings, got an array of {array.dtype}")
    if array.dtype == STRING and all(type(x) is str for x in array.flat):
        return array
    out = np.empty(array.shape, dtype=object)
    for i, item in enumerate(array.flat):
        if isinstance(item, bytes):
            try:
                item = item.decode("utf-8")
            except UnicodeDecodeError:
                raise ValueError(f"element {i}: bytes are not valid UTF-8") from None
        elif not isinstance(item, str):
            raise TypeError(f"element {i} is a {type(item).__name__}, expected str or UTF-8 bytes")
        out.flat[i] = str(item)
    return out
