"""KServe v2 datatypes <-> numpy, and the raw little-endian byte encoding of tensors.

BYTES tensors are numpy object arrays of `bytes`; on the wire each element is a 4-byte
little-endian length followed by the bytes (as tritonclient writes them).
"""

from __future__ import annotations

import struct

import numpy as np

from edgerun.serving.errors import invalid, quote

# v2 datatype -> numpy dtype (little-endian); BYTES is an object array
DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_), "UINT8": np.dtype("<u1"), "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"), "UINT64": np.dtype("<u8"), "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"), "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}
_NAMES = {np.dtype(d).newbyteorder("="): name for name, d in DTYPES.items() if name != "BYTES"}
# v2 datatype -> Triton model_config DataType enum value
CONFIG_TYPES = {"BOOL": 1, "UINT8": 2, "UINT16": 3, "UINT32": 4, "UINT64": 5, "INT8": 6, "INT16": 7,
                "INT32": 8, "INT64": 9, "FP16": 10, "FP32": 11, "FP64": 12, "BYTES": 13}
# the most elements or dimensions one tensor may declare, whatever the message size allows
MAX_ELEMENTS = 1 << 31
MAX_RANK = 16


def datatype_of(dtype: np.dtype) -> str:
    """The v2 name of a numpy dtype ('FP32'); object/str/bytes arrays are 'BYTES'.
    Raises ValueError for dtypes the protocol cannot carry (complex, datetime)."""
    name = _NAMES.get(dtype)
    if name is not None:
        return name
    dtype = np.dtype(dtype)
    if dtype.kind in "OSU":
        return "BYTES"
    try:
        return _NAMES[dtype.newbyteorder("=")]
    except KeyError:
        raise ValueError(f"dtype {dtype} has no v2 datatype") from None


def element_count(name: str, shape: list[int] | tuple[int, ...]) -> int:
    """The number of elements of `shape`; InvalidArgument naming input `name` if a dimension is
    not an int64, negative or above MAX_ELEMENTS, the rank exceeds MAX_RANK or the product of the
    non-zero dimensions exceeds MAX_ELEMENTS (so a zero dimension cannot hide a huge other one)."""
    if len(shape) > MAX_RANK:
        raise invalid(f"input {quote(name)}: rank {len(shape)} exceeds the limit of {MAX_RANK}")
    count, nonzero = 1, 1
    for dim in shape:
        if isinstance(dim, bool) or not isinstance(dim, int | np.integer) or not -(1 << 63) <= dim < (1 << 63):
            raise invalid(f"input {quote(name)}: shape dimensions must be int64 values")
        if dim < 0:
            raise invalid(f"input {quote(name)}: shape {list(shape)} has a negative dimension")
        if dim > MAX_ELEMENTS:
            raise invalid(f"input {quote(name)}: shape {list(shape)} has more than {MAX_ELEMENTS} elements")
        count *= dim
        if dim:
            nonzero *= dim
        if nonzero > MAX_ELEMENTS:
            raise invalid(f"input {quote(name)}: shape {list(shape)} has more than {MAX_ELEMENTS} elements")
    return int(count)


def from_raw(name: str, datatype: str, shape: list[int], raw: bytes | memoryview) -> np.ndarray:
    """Decode raw little-endian bytes into an array of `shape`. InvalidArgument if the datatype is
    unknown or the byte length does not match shape x datatype (message names both)."""
    dtype = _dtype(name, datatype)
    count = element_count(name, shape)
    if datatype == "BYTES":
        return _bytes_from_raw(name, shape, count, raw)
    want = count * dtype.itemsize
    if len(raw) != want:
        raise invalid(f"input {quote(name)}: expected {want} bytes for {datatype} {list(shape)}, got {len(raw)}")
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def to_raw(array: np.ndarray) -> bytes:
    """The raw little-endian encoding of `array` (BYTES: length-prefixed elements)."""
    if datatype_of(array.dtype) == "BYTES":
        parts = []
        for item in array.ravel():
            data = item if isinstance(item, bytes) else str(item).encode()
            parts.append(struct.pack("<I", len(data)))
            parts.append(data)
        return b"".join(parts)
    array = np.ascontiguousarray(array)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    return array.tobytes()


def from_list(name: str, datatype: str, shape: list[int], values: list) -> np.ndarray:
    """An array of `shape` from a flat (or nested) list of values, as typed contents or JSON
    `data` carry them. InvalidArgument if the count or the values do not fit the datatype."""
    dtype = _dtype(name, datatype)
    count = element_count(name, shape)
    if datatype == "BYTES":
        items = []
        for v in _flatten(values, name):
            if isinstance(v, str):
                items.append(v.encode())
            elif isinstance(v, bytes):
                items.append(v)
            else:
                raise invalid(f"input {quote(name)}: BYTES values must be strings (REST) or bytes (gRPC), "
                              f"got {type(v).__name__}")
            if len(items) > count:
                raise invalid(f"input {quote(name)}: expected {count} values for shape {list(shape)}, got more")
        array = np.empty(len(items), dtype=object)
        array[:] = items
    else:
        try:
            array = np.asarray(values, dtype=dtype).ravel()
        except (ValueError, TypeError, OverflowError) as exc:
            raise invalid(f"input {quote(name)}: values do not fit datatype {datatype}: {quote(exc)}") from None
    if array.size != count:
        raise invalid(f"input {quote(name)}: expected {count} values for shape {list(shape)}, got {array.size}")
    return array.reshape(shape)


def _flatten(values: object, name: str = "") -> list:
    """The leaves of nested lists, depth-first; InvalidArgument if nested deeper than MAX_RANK."""
    out: list = []
    stack = [(iter([values]), 0)]
    while stack:
        items, depth = stack[-1]
        for item in items:
            if isinstance(item, list | tuple):
                if depth >= MAX_RANK:
                    raise invalid(f"input {quote(name)}: values nested deeper than {MAX_RANK} levels")
                stack.append((iter(item), depth + 1))
                break
            out.append(item)
        else:
            stack.pop()
    return out


def _dtype(name: str, datatype: str) -> np.dtype:
    try:
        return DTYPES[datatype]
    except KeyError:
        raise invalid(f"input {quote(name)}: unknown datatype {quote(datatype)}; expected one of "
                      + ", ".join(DTYPES)) from None


def _bytes_from_raw(name: str, shape: list[int], count: int, raw: bytes | memoryview) -> np.ndarray:
    view = memoryview(raw)
    if len(view) < 4 * count:
        raise invalid(f"input {quote(name)}: truncated BYTES data: expected {count} BYTES elements for shape "
                      f"{list(shape)}, but {len(view)} bytes cannot hold them (4-byte length each)")
    items, offset = [], 0
    while offset < len(view):
        if len(items) >= count:
            raise invalid(f"input {quote(name)}: expected {count} BYTES elements for shape {list(shape)}, got more")
        if offset + 4 > len(view):
            raise invalid(f"input {quote(name)}: truncated BYTES element length at byte {offset}")
        (size,) = struct.unpack_from("<I", view, offset)
        offset += 4
        if offset + size > len(view):
            raise invalid(f"input {quote(name)}: BYTES element of {size} bytes overruns the data")
        items.append(bytes(view[offset:offset + size]))
        offset += size
    if len(items) != count:
        raise invalid(f"input {quote(name)}: expected {count} BYTES elements for shape {list(shape)}, got {len(items)}")
    array = np.empty(count, dtype=object)
    array[:] = items
    return array.reshape(shape)
