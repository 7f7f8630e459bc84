"""A verifying flatbuffer reader for the .erm schema.

The flatbuffers Python runtime follows offsets without checking them, so a
malformed file could make it read anywhere (or fail deep inside `struct`).
This module decodes the whole model itself and checks, before every read, that
the bytes it is about to read lie inside the buffer: table and vtable
positions and sizes, every field against its table, every offset target,
string and vector lengths. It returns plain Python values: dicts for tables,
str for strings, lists for vectors of tables or strings, and numpy arrays
(read-only views into the buffer, no copy) for vectors of scalars.

Any violation raises ModelError naming the table, field and byte position.
The schema description below mirrors runtime/schema/edgerun.fbs field by field
(tests/runtime/test_flatread.py checks that they agree). Other formats (TFLite:
converters/tflite/layout.py) pass their own description, with unions and
default values, and may let objects be shared (each is then decoded once).

Work is bounded by the file size, for this reader and for whoever walks what it returns:
the decoded values count in 4-byte words (a table 1, a vector or string 1 plus its
elements' bytes / 4, a vector of offsets 1 plus one per element), a shared object counts
again, in full, each time it is referenced, and the total may not pass a quarter of the
file size (plus a little). A file without shared or overlapping objects stays within that
by construction (each counted word is a word of the file); one that references a big table
or vector many times, or lays many vectors over the same bytes, is refused before its
consumers multiply the work.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from edgerun.runtime.errors import ModelError

# Scalar kinds: struct format and size. Vector element kinds use numpy dtypes.
_SCALARS = {
    "bool": ("<?", 1), "i8": ("<b", 1), "u8": ("<B", 1), "i16": ("<h", 2), "u16": ("<H", 2),
    "i32": ("<i", 4), "u32": ("<I", 4), "i64": ("<q", 8), "u64": ("<Q", 8), "f32": ("<f", 4),
    "f64": ("<d", 8),
}
_VECTORS = {
    "[u8]": np.dtype("<u1"), "[i8]": np.dtype("<i1"), "[bool]": np.dtype("<u1"),
    "[i16]": np.dtype("<i2"), "[u16]": np.dtype("<u2"), "[i32]": np.dtype("<i4"),
    "[u32]": np.dtype("<u4"), "[i64]": np.dtype("<i8"), "[u64]": np.dtype("<u8"),
    "[f32]": np.dtype("<f4"), "[f64]": np.dtype("<f8"),
}
# A union field's kind: "union:<Union>"; its type code is the field before it ("<name>_type").
UNION_PREFIX = "union:"

# table -> [(field, kind)], in declaration order (= vtable slot order).
# Kinds: a scalar name, "string", "[string]", a vector kind, "Table" or "[Table]".
SCHEMA: dict[str, list[tuple[str, str]]] = {
    "Quantization": [("scale", "[f32]"), ("zero_point", "[i64]"), ("axis", "i32")],
    "Buffer": [("data", "[u8]"), ("offset", "u64"), ("size", "u64")],
    "Tensor": [
        ("name", "string"), ("dtype", "i8"), ("shape", "[i64]"), ("buffer", "u32"),
        ("quantization", "Quantization"), ("is_variable", "bool"), ("kind", "i8"),
        ("key_dtype", "i8"),
    ],
    "Attribute": [
        ("name", "string"), ("type", "i8"), ("f", "f64"), ("i", "i64"), ("s", "[u8]"),
        ("floats", "[f64]"), ("ints", "[i64]"), ("strings", "[string]"),
        ("tensors", "[i32]"), ("graphs", "[i32]"),
    ],
    "Operator": [
        ("name", "string"), ("domain", "string"), ("op_type", "string"), ("version", "i32"),
        ("inputs", "[i32]"), ("outputs", "[i32]"), ("attributes", "[Attribute]"),
    ],
    "SubGraph": [
        ("name", "string"), ("tensors", "[Tensor]"), ("inputs", "[i32]"),
        ("outputs", "[i32]"), ("operators", "[Operator]"),
    ],
    "TensorRef": [("name", "string"), ("tensor", "u32")],
    "Signature": [
        ("name", "string"), ("subgraph", "u32"), ("inputs", "[TensorRef]"),
        ("outputs", "[TensorRef]"), ("updates", "[VariableUpdate]"),
    ],
    "VariableUpdate": [("variable", "u32"), ("value", "u32")],
    "KeyValue": [("key", "string"), ("value", "string")],
    "Model": [
        ("schema_version", "u32"), ("producer", "string"), ("description", "string"),
        ("subgraphs", "[SubGraph]"), ("buffers", "[Buffer]"), ("signatures", "[Signature]"),
        ("metadata", "[KeyValue]"),
    ],
}

_DEFAULTS = {"string": "", "[string]": []}


class FlatReader:
    """Decodes one flatbuffer, verifying as it goes; work is bounded by the buffer size.

    `schema` maps table names to their fields in slot order: (field, kind) or
    (field, kind, default); `unions` maps a union's name to its member tables (type code
    i is member i - 1; 0 is none, and a code past the members, from a newer schema, reads
    as None too). With `shared` False every table, string and vector may be reached
    once (our writer never shares them); with it True an object reached again is the
    object decoded the first time (decoded once), and it counts its whole decoded size
    again towards the limit on the decoded words (see the module docstring), so that code
    walking the result does no more work than for a file without sharing.
    """

    def __init__(
        self,
        buf: Any,
        schema: dict[str, list[tuple]] | None = None,
        unions: dict[str, list[str]] | None = None,
        shared: bool = False,
    ) -> None:
        self.buf = buf
        self.view = memoryview(buf)
        self.size = len(self.view)
        self.schema = SCHEMA if schema is None else schema
        self.unions = unions or {}
        self.shared = shared
        # Each counted word is a word of the file unless objects are shared or overlap:
        # those must not multiply the work a small file causes (see the module docstring).
        self.max_words = self.size // 4 + 64
        self.seen: set[int] = set()
        self.decoded: dict[tuple[int, str], tuple[Any, int]] = {}  # (value, words it counted)
        self.words = 0

    def read_root(
        self, identifier: bytes, root: str = "Model", format_name: str = ".erm"
    ) -> dict[str, Any]:
        if self.size < 8:
            raise ModelError(f"file is {self.size} bytes, too short for a model header")
        found = bytes(self.view[4:8])
        if found != identifier:
            raise ModelError(f"file identifier is {found!r}, expected {identifier!r}: "
                             f"not a{'n' if format_name[1] in 'aeiou' else ''} {format_name} file")
        return self._table(self._uoffset(0, f"{root} root offset"), root)

    def _fail(self, what: str, pos: int, message: str) -> ModelError:
        return ModelError(f"malformed flatbuffer: {what} at byte {pos}: {message}")

    def _need(self, pos: int, length: int, what: str) -> None:
        if pos < 0 or length < 0 or pos + length > self.size:
            raise self._fail(what, pos, f"{length} bytes needed but the file has {self.size}")

    def _scalar(self, pos: int, kind: str, what: str) -> Any:
        fmt, width = _SCALARS[kind]
        self._need(pos, width, what)
        return struct.unpack_from(fmt, self.view, pos)[0]

    def _uoffset(self, pos: int, what: str) -> int:
        target = pos + self._scalar(pos, "u32", what)
        if target == pos or target >= self.size:
            raise self._fail(what, pos, f"offset points to byte {target}, outside the file")
        return target

    def _claim(self, pos: int, what: str) -> None:
        """Each table, string and vector may be reached once, unless `shared`: our writer
        never shares them, and sharing would let a small file cause unbounded work (a
        shared object is decoded once, see `_once`)."""
        if pos in self.seen:
            raise self._fail(what, pos, "object is referenced more than once")
        self.seen.add(pos)

    def _once(self, pos: int, kind: str, what: str, decode: Any) -> Any:
        """`decode()` the object at `pos` the first time; with `shared`, later references
        get that same result (without it, a second reference is refused by `_claim`)."""
        if not self.shared:
            self._claim(pos, what)
            return decode()
        key = (pos, kind)
        if key in self.decoded:
            value, words = self.decoded[key]
            self._count(words)  # a repeated reference costs its consumers the whole object again
            return value
        start = self.words
        value = decode()
        self.decoded[key] = (value, self.words - start)
        return value

    def _count(self, n: int = 1) -> None:
        self.words += n
        if self.words > self.max_words:
            raise ModelError(f"the model decodes to more than {self.max_words:,} words of flatbuffer data "
                             "(objects referenced more than once count each time), more than its "
                             f"{self.size:,} bytes hold")

    def _table(self, pos: int, name: str) -> dict[str, Any]:
        return self._once(pos, name, f"table {name}", lambda: self._decode_table(pos, name))

    def _decode_table(self, pos: int, name: str) -> dict[str, Any]:
        self._count()
        what = f"table {name}"
        if pos % 4:
            raise self._fail(what, pos, "table is not 4-byte aligned")
        vtable = pos - self._scalar(pos, "i32", what)
        vt_size = self._scalar(vtable, "u16", f"{what} vtable")
        table_size = self._scalar(vtable + 2, "u16", f"{what} vtable")
        if vt_size < 4 or vt_size % 2:
            raise self._fail(what, vtable, f"vtable size {vt_size} is invalid")
        self._need(vtable, vt_size, f"{what} vtable")
        if table_size < 4:
            raise self._fail(what, pos, f"table size {table_size} is invalid")
        self._need(pos, table_size, what)
        result: dict[str, Any] = {}
        for slot, (field, kind, *default) in enumerate(self.schema[name]):
            entry = 4 + 2 * slot
            voffset = 0
            if entry + 2 <= vt_size:
                voffset = struct.unpack_from("<H", self.view, vtable + entry)[0]
            if kind.startswith(UNION_PREFIX):
                kind = self._union_member(kind, result.get(f"{field}_type", 0))
                if kind is None:
                    result[field] = None
                    continue
            result[field] = self._field(pos, table_size, voffset, f"{name}.{field}", kind, default)
        return result

    def _union_member(self, kind: str, code: int) -> str | None:
        """The table a union field holds for type `code`; None for none or an unknown code."""
        members = self.unions[kind[len(UNION_PREFIX):]]
        return members[code - 1] if 0 < code <= len(members) else None

    def _field(
        self, table: int, table_size: int, voffset: int, what: str, kind: str, default: list
    ) -> Any:
        if voffset == 0:
            return default[0] if default else self._default(kind)
        width = _SCALARS[kind][1] if kind in _SCALARS else 4
        if voffset < 4 or voffset + width > table_size:
            raise self._fail(what, table, f"field offset {voffset} is outside the table")
        pos = table + voffset
        if kind in _SCALARS:
            return self._scalar(pos, kind, what)
        target = self._uoffset(pos, what)
        if kind == "string":
            return self._string(target, what)
        if kind in _VECTORS:
            return self._vector(target, _VECTORS[kind], what)
        if kind.startswith("["):
            return self._offset_vector(target, kind[1:-1], what)
        return self._table(target, kind)

    @staticmethod
    def _default(kind: str) -> Any:
        if kind in _SCALARS:
            return False if kind == "bool" else 0
        return _DEFAULTS.get(kind)

    def _string(self, pos: int, what: str) -> str:
        return self._once(pos, "string", what, lambda: self._decode_string(pos, what))

    def _decode_string(self, pos: int, what: str) -> str:
        length = self._scalar(pos, "u32", what)
        self._need(pos + 4, length + 1, what)
        self._count(1 + length // 4)
        if self.view[pos + 4 + length] != 0:
            raise self._fail(what, pos, "string is not null-terminated")
        try:
            return bytes(self.view[pos + 4 : pos + 4 + length]).decode("utf-8")
        except UnicodeDecodeError:
            raise self._fail(what, pos, "string is not valid UTF-8") from None

    def _vector(self, pos: int, dtype: np.dtype, what: str) -> np.ndarray:
        return self._once(pos, dtype.str, what, lambda: self._decode_vector(pos, dtype, what))

    def _decode_vector(self, pos: int, dtype: np.dtype, what: str) -> np.ndarray:
        count = self._scalar(pos, "u32", what)
        self._need(pos + 4, count * dtype.itemsize, what)
        self._count(1 + count * dtype.itemsize // 4)
        array = np.frombuffer(self.buf, dtype=dtype, count=count, offset=pos + 4)
        array.flags.writeable = False
        return array

    def _offset_vector(self, pos: int, element: str, what: str) -> list[Any]:
        return self._once(pos, f"[{element}]", what, lambda: self._decode_offsets(pos, element, what))

    def _decode_offsets(self, pos: int, element: str, what: str) -> list[Any]:
        count = self._scalar(pos, "u32", what)
        self._need(pos + 4, count * 4, what)
        self._count(1 + count)
        items = []
        for i in range(count):
            slot = pos + 4 + 4 * i
            target = self._uoffset(slot, f"{what}[{i}]")
            items.append(
                self._string(target, f"{what}[{i}]") if element == "string"
                else self._table(target, element)
            )
        return items
