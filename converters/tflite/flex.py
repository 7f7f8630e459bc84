"""A verifying FlexBuffer reader: how TFLite custom ops store their attributes.

    read_flex_map(op.custom_options)   # {"max_detections": 10, "nms_iou_threshold": 0.6, ...}

FlexBuffers are schemaless: the last byte of the buffer is the root's byte width, the
one before it the root's packed type (type << 2 | log2 of its own width), and every
non-inline value is an offset pointing backwards from where it is stored. Custom options
come from an untrusted file, so nothing is read before it is checked: every offset stays
inside the buffer (offsets are unsigned and point backwards), every width is 1, 2, 4 or 8, every
length fits the bytes that follow, strings are UTF-8, map keys are strictly sorted (the
C++ reader looks them up by binary search, so an unsorted map reads differently there),
nesting is at most MAX_DEPTH deep, and the work is bounded by the buffer's size (at most
ITEMS_PER_BYTE values and BYTES_PER_BYTE bytes of strings per byte of the buffer, plus a
little, and never more than MAX_ITEMS and MAX_BYTES: a buffer whose vectors share children
cannot expand exponentially, nor a few bytes make a million values). Anything malformed is
a ValueError saying what and where.

Values come back as Python objects: None, int, float, bool, str (keys and strings),
bytes (blobs), list (untyped and typed vectors), dict (maps).
"""

from __future__ import annotations

import struct
from typing import Any

MAX_DEPTH = 32
MAX_ITEMS = 1 << 20
MAX_BYTES = 1 << 24
MAX_KEY_LENGTH = 1024
# Unshared, every value takes at least a byte of the buffer (and counts twice: in its
# vector's length and itself), every string byte a byte: what a buffer may decode to.
ITEMS_PER_BYTE = 4
BYTES_PER_BYTE = 4
SLACK = 1024

# Type codes (the upper six bits of a packed type).
NULL, INT, UINT, FLOAT, KEY, STRING = 0, 1, 2, 3, 4, 5
INDIRECT_INT, INDIRECT_UINT, INDIRECT_FLOAT, MAP, VECTOR = 6, 7, 8, 9, 10
VECTOR_INT, VECTOR_UINT, VECTOR_FLOAT, VECTOR_KEY, VECTOR_STRING_DEPRECATED = 11, 12, 13, 14, 15
BLOB, BOOL, VECTOR_BOOL = 25, 26, 36
_TYPED = {VECTOR_INT: INT, VECTOR_UINT: UINT, VECTOR_FLOAT: FLOAT, VECTOR_KEY: KEY, VECTOR_BOOL: BOOL}
# VECTOR_INT2 .. VECTOR_FLOAT4: fixed-length typed vectors without a size field.
_FIXED = {16 + 3 * (n - 2) + k: (element, n) for n in (2, 3, 4) for k, element in enumerate((INT, UINT, FLOAT))}
_WIDTHS = (1, 2, 4, 8)
_FLOATS = {4: "<f", 8: "<d"}


def read_flex(data: bytes) -> Any:
    """The root value of a FlexBuffer; ValueError when `data` is not a well-formed one."""
    return _Reader(bytes(data)).root()


def read_flex_map(data: bytes) -> dict[str, Any]:
    """The root map of a FlexBuffer (how custom options are stored) as a dict; ValueError
    when `data` is malformed or its root is not a map."""
    reader = _Reader(bytes(data))
    root = reader.root()
    if not isinstance(root, dict):
        raise ValueError(f"the root is {_type_name(reader.root_type)}, not a map")
    return root


def _type_name(code: int) -> str:
    names = {NULL: "null", INT: "an int", UINT: "an unsigned int", FLOAT: "a float", KEY: "a key",
             STRING: "a string", MAP: "a map", VECTOR: "a vector", BLOB: "a blob", BOOL: "a bool"}
    return names.get(code, f"type {code}")


class _Reader:
    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.items = 0
        self.bytes = 0
        self.keys: dict[int, str] = {}
        self.root_type = NULL
        self.max_items = min(MAX_ITEMS, ITEMS_PER_BYTE * len(buf) + SLACK)
        self.max_bytes = min(MAX_BYTES, BYTES_PER_BYTE * len(buf) + SLACK)

    def root(self) -> Any:
        buf = self.buf
        if len(buf) < 3:
            raise ValueError(f"{len(buf)} bytes are too few for a FlexBuffer (at least 3)")
        width, packed = buf[-1], buf[-2]
        if width not in _WIDTHS:
            raise ValueError(f"the root byte width {width} is not 1, 2, 4 or 8")
        offset = len(buf) - 2 - width
        if offset < 0:
            raise ValueError(f"a root of width {width} does not fit in {len(buf)} bytes")
        self.root_type = packed >> 2
        return self.value(offset, width, packed, 0)

    # --- bounds and scalars ---------------------------------------------------------

    def _span(self, start: int, size: int, what: str) -> None:
        if start < 0 or size < 0 or start + size > len(self.buf):
            raise ValueError(f"{what}: {size} bytes at offset {start} are outside the {len(self.buf)}-byte buffer")

    def _spend(self, items: int, nbytes: int = 0) -> None:
        self.items += items
        self.bytes += nbytes
        if self.items > self.max_items or self.bytes > self.max_bytes:
            raise ValueError(f"the buffer decodes to more than {self.max_items} values or {self.max_bytes} bytes "
                             f"of strings, more than its {len(self.buf)} bytes hold")

    def uint(self, offset: int, width: int, what: str = "a value") -> int:
        self._span(offset, width, what)
        return int.from_bytes(self.buf[offset:offset + width], "little")

    def read_int(self, offset: int, width: int) -> int:
        self._span(offset, width, "an int")
        return int.from_bytes(self.buf[offset:offset + width], "little", signed=True)

    def read_float(self, offset: int, width: int) -> float:
        if width not in _FLOATS:
            raise ValueError(f"a float at offset {offset} has width {width} (floats are 4 or 8 bytes)")
        self._span(offset, width, "a float")
        return struct.unpack_from(_FLOATS[width], self.buf, offset)[0]

    def target(self, offset: int, width: int, what: str) -> int:
        """Where the offset stored at `offset` points: backwards (offsets are unsigned), inside
        the buffer. (An empty vector or map may start at its own slot: offset 0.)"""
        distance = self.uint(offset, width, f"the offset of {what}")
        if distance > offset:
            raise ValueError(f"{what}: offset {distance} at {offset} points before the start of the buffer")
        return offset - distance

    # --- values ---------------------------------------------------------------------

    def value(self, offset: int, parent_width: int, packed: int, depth: int) -> Any:
        """The value stored at `offset` in a slot `parent_width` wide, of type `packed`."""
        kind, width = packed >> 2, 1 << (packed & 3)
        self._spend(1)
        if kind == NULL:
            return None
        if kind == INT:
            return self.read_int(offset, parent_width)
        if kind == UINT:
            return self.uint(offset, parent_width)
        if kind == FLOAT:
            return self.read_float(offset, parent_width)
        if kind == BOOL:
            return self.uint(offset, parent_width) != 0
        if depth >= MAX_DEPTH:
            raise ValueError(f"values nest deeper than {MAX_DEPTH}")
        target = self.target(offset, parent_width, _type_name(kind))
        if kind == INDIRECT_INT:
            return self.read_int(target, width)
        if kind == INDIRECT_UINT:
            return self.uint(target, width)
        if kind == INDIRECT_FLOAT:
            return self.read_float(target, width)
        if kind == KEY:
            return self.key(target)
        if kind in (STRING, BLOB):
            size = self.uint(target - width, width, "a string length")
            self._span(target, size, "a string" if kind == STRING else "a blob")
            self._spend(0, size)
            raw = self.buf[target:target + size]
            return raw if kind == BLOB else _utf8(raw, target)
        if kind == MAP:
            return self.map(target, width, depth + 1)
        if kind == VECTOR:
            size = self.size(target, width)
            self._span(target + size * width, size, "a vector's type bytes")
            types = self.buf[target + size * width:target + size * width + size]
            return [self.value(target + i * width, width, types[i], depth + 1) for i in range(size)]
        if kind in _TYPED:
            return self.typed(target, width, _TYPED[kind], self.size(target, width), depth + 1)
        if kind in _FIXED:
            element, size = _FIXED[kind]
            return self.typed(target, width, element, size, depth + 1)
        raise ValueError(f"type code {kind} at offset {offset} is not one this reader accepts")

    def size(self, target: int, width: int) -> int:
        """The element count stored just before a vector, checked against the buffer."""
        size = self.uint(target - width, width, "a vector length")
        self._span(target, size * width, "a vector's elements")
        self._spend(size)
        return size

    def typed(self, target: int, width: int, element: int, size: int, depth: int) -> list[Any]:
        self._span(target, size * width, "a typed vector")
        if element == KEY:
            return [self.key(self.target(target + i * width, width, "a key")) for i in range(size)]
        packed = element << 2 | _WIDTHS.index(width)
        return [self.value(target + i * width, width, packed, depth) for i in range(size)]

    def key(self, target: int) -> str:
        """A NUL-terminated key (decoded once per offset; at most MAX_KEY_LENGTH bytes)."""
        if target in self.keys:
            return self.keys[target]
        end = self.buf.find(b"\0", target, target + MAX_KEY_LENGTH + 1)
        if end < 0:
            raise ValueError(f"the key at offset {target} has no terminating NUL within {MAX_KEY_LENGTH} bytes")
        self._spend(0, end - target)
        key = self.keys[target] = _utf8(self.buf[target:end], target)
        return key

    def map(self, target: int, width: int, depth: int) -> dict[str, Any]:
        """A map: its values laid out as a vector, with the keys vector referenced before it."""
        keys_at = self.target(target - 3 * width, width, "a map's keys")
        keys_width = self.uint(target - 2 * width, width, "a map's key width")
        if keys_width not in _WIDTHS:
            raise ValueError(f"a map's key width {keys_width} is not 1, 2, 4 or 8")
        size = self.size(target, width)
        key_count = self.size(keys_at, keys_width)
        if key_count != size:
            raise ValueError(f"a map at offset {target} has {size} values but {key_count} keys")
        keys = self.typed(keys_at, keys_width, KEY, size, depth)
        for before, after in zip(keys, keys[1:], strict=False):
            if before.encode() >= after.encode():
                raise ValueError(f"map keys {before!r} and {after!r} are not in strictly increasing order")
        self._span(target + size * width, size, "a map's type bytes")
        types = self.buf[target + size * width:target + size * width + size]
        return {key: self.value(target + i * width, width, types[i], depth) for i, key in enumerate(keys)}


def _utf8(raw: bytes, offset: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"the string at offset {offset} is not valid UTF-8") from None
