""".erm -> IR: map the file, verify all of it, and build a Graph whose weights
are read-only numpy views into the mapping (nothing is copied or read ahead), except
4- and 2-bit weights, which the file packs: they are unpacked into read-only arrays; inline
data not aligned for its dtype, copied to aligned memory; and string tensors, decoded into
read-only object arrays of str. Each of these is made once per buffer (per bit width for
unpacking), however many tensors share the buffer, so what loading allocates stays within a
small multiple of the file size (at most 7x: 2x for 4-bit codes, 4x for 2-bit, 1x copied).
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgerun.runtime import dtypes
from edgerun.runtime.errors import ModelError
from edgerun.runtime.flatread import FlatReader
from edgerun.runtime.format import FILE_IDENTIFIER, VALUE_KINDS
from edgerun.runtime.graph import Graph, Node, Quantization, Signature, Value, ValueKind
from edgerun.runtime.schema.fb.AttributeType import AttributeType
from edgerun.runtime.verifier import verify_model

Source = str | os.PathLike | bytes | bytearray | memoryview

# Other model formats a path or bytes may hold, by file identifier (bytes 4-8):
# identifier -> (format name, function source -> Graph). The runtime imports no converter;
# the `edgerun` package registers the TFLite importer here (see `register_model_format`).
_FORMATS: dict[bytes, tuple[str, Callable[[Source], Graph]]] = {}


def register_model_format(identifier: bytes, name: str, to_graph: Callable[[Source], Graph]) -> None:
    """Let `load_model` (and so `Interpreter`) open files of another format: those whose
    file identifier is `identifier` are converted with `to_graph(source)`, which raises
    ModelError / ConversionError for files it cannot take."""
    if len(identifier) != 4:
        raise ValueError(f"a file identifier has 4 bytes, got {identifier!r}")
    _FORMATS[identifier] = (name, to_graph)


def load_model(source: Source) -> Graph:
    """Load and verify a model from a path (memory-mapped) or from bytes.

    A .tflite file (or another registered format, see `register_model_format`) is converted
    on the way in. Raises ModelError for anything malformed, OSError when the file cannot be
    read, ConversionError when another format's model cannot be converted.
    """
    buf = _open(source)
    foreign = _FORMATS.get(bytes(buf[4:8])) if len(buf) >= 8 else None
    if foreign is not None:
        from edgerun.runtime.writer import serialize

        # Through the .erm verifier like every graph the interpreter runs.
        return load_model(serialize(foreign[1](bytes(buf))))
    raw = FlatReader(buf).read_root(FILE_IDENTIFIER)
    verify_model(raw, len(buf))
    return _Builder(raw, buf).graph(0)


def _open(source: Source) -> Any:
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source) if not isinstance(source, bytes) else source
    path = Path(source)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise ModelError(f"{path}: file is empty")
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


class _Builder:
    """Turns a verified raw model into Graph objects, one per subgraph, sharing buffers."""

    def __init__(self, raw: dict[str, Any], buf: Any) -> None:
        self.raw = raw
        self.buf = buf
        self.graphs: dict[int, Graph] = {}
        self.strings: dict[int, np.ndarray] = {}  # buffer index -> its decoded strings
        self.codes: dict[tuple[int, int], np.ndarray] = {}  # (buffer, bits) -> its unpacked codes
        self.aligned: dict[int, np.ndarray] = {}  # buffer index -> an aligned copy of its inline data

    def buffer_array(self, index: int, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
        """Buffer `index` as a read-only `dtype` array of `shape` (which the verifier has
        checked against the buffer's size); tensors sharing a buffer share the memory."""
        if dtypes.is_string(dtype):
            return self.string_array(index).reshape(shape)
        if dtype in dtypes.PACKED_BITS:  # 4- and 2-bit types: a view of the buffer's unpacked codes
            count = int(np.prod(shape, dtype=np.int64))
            return self.unpacked_codes(index, dtypes.PACKED_BITS[dtype])[:count].view(dtype).reshape(shape)
        entry = self.raw["buffers"][index]
        if entry["offset"]:
            count = entry["size"] // dtype.itemsize
            array = np.frombuffer(self.buf, dtype=dtype, count=count, offset=entry["offset"])
        else:
            data = entry["data"] if entry["data"] is not None else np.zeros(0, np.uint8)
            # Inline data is 16-byte aligned by our writer; a crafted file's may not be.
            array = (data if data.ctypes.data % dtype.alignment == 0 else self.aligned_copy(index)).view(dtype)
        array = array.reshape(shape)
        array.flags.writeable = False
        return array

    def unpacked_codes(self, index: int, bits: int) -> np.ndarray:
        """Buffer `index` unpacked to one uint8 code per `bits`-bit element (padding included),
        read-only, made once per (buffer, bits)."""
        key = (index, bits)
        if key not in self.codes:
            packed = self.buffer_array(index, np.dtype(np.uint8), (-1,))
            any_dtype = next(d for d, width in dtypes.PACKED_BITS.items() if width == bits)  # all 1-byte
            codes = dtypes.unpack(packed, any_dtype, (packed.size * (8 // bits),)).view(np.uint8)
            codes.flags.writeable = False
            self.codes[key] = codes
        return self.codes[key]

    def aligned_copy(self, index: int) -> np.ndarray:
        """Inline buffer `index` copied to 64-byte aligned, read-only memory, once per buffer."""
        if index not in self.aligned:
            data = self.raw["buffers"][index]["data"]
            block = np.empty(data.size + 64, np.uint8)
            start = -block.ctypes.data % 64
            copy = block[start : start + data.size]
            copy[...] = data
            copy.flags.writeable = False
            self.aligned[index] = copy
        return self.aligned[index]

    def string_array(self, index: int) -> np.ndarray:
        """Buffer `index` decoded to a flat read-only object array of str, once per buffer
        (the verifier has checked that it decodes)."""
        if index not in self.strings:
            data = self.raw["buffers"][index]["data"]
            items = dtypes.decode_strings(b"" if data is None else data)
            array = np.empty(len(items), dtype=object)
            array[:] = items
            array.flags.writeable = False
            self.strings[index] = array
        return self.strings[index]

    def value(self, tensor: dict[str, Any]) -> Value:
        dtype = dtypes.to_numpy(tensor["dtype"]) if tensor["dtype"] else None
        shape = None if tensor["shape"] is None else tuple(int(d) for d in tensor["shape"])
        data = self.buffer_array(tensor["buffer"], dtype, shape) if tensor["buffer"] else None
        quant = None
        if tensor["quantization"] is not None:
            q = tensor["quantization"]
            quant = Quantization(np.array(q["scale"]), np.array(q["zero_point"]), q["axis"])
        key = dtypes.to_numpy(tensor["key_dtype"]) if tensor["key_dtype"] else None  # a sequence of maps
        return Value(tensor["name"], dtype, shape, data=data, is_variable=bool(tensor["is_variable"]),
                     quantization=quant, kind=ValueKind(VALUE_KINDS[tensor["kind"]]), key_dtype=key)

    def graph(self, index: int) -> Graph:
        if index in self.graphs:
            return self.graphs[index]
        sub = self.raw["subgraphs"][index]
        values = [self.value(t) for t in sub["tensors"] or []]

        def pick(indices: Any) -> list[Value | None]:
            return [values[i] if i >= 0 else None for i in ([] if indices is None else indices.tolist())]

        nodes = [
            Node(op["op_type"], pick(op["inputs"]), pick(op["outputs"]),
                 self.attributes(op, values), op["name"], op["domain"], op["version"])
            for op in sub["operators"] or []
        ]
        graph = Graph(sub["name"], nodes, pick(sub["inputs"]), pick(sub["outputs"]))
        if index == 0:
            graph.signatures = self.signatures(values) or graph.signatures
            graph.metadata = {kv["key"]: kv["value"] for kv in self.raw["metadata"] or []}
        self.graphs[index] = graph
        return graph

    def signatures(self, values: list[Value]) -> dict[str, Signature]:
        result = {}
        for sig in self.raw["signatures"] or []:
            if sig["subgraph"] != 0:
                raise ModelError(f"signature {sig['name']!r}: only subgraph 0 may have signatures")
            result[sig["name"]] = Signature(
                {r["name"]: values[r["tensor"]] for r in sig["inputs"] or []},
                {r["name"]: values[r["tensor"]] for r in sig["outputs"] or []},
                {values[u["variable"]]: values[u["value"]] for u in sig["updates"] or []},
            )
        return result

    def attributes(self, op: dict[str, Any], values: list[Value]) -> dict[str, Any]:
        return {a["name"]: self.attribute(a, values) for a in op["attributes"] or []}

    def attribute(self, attr: dict[str, Any], values: list[Value]) -> Any:
        kind = attr["type"]

        def listed(key: str) -> list:
            return [] if attr[key] is None else attr[key].tolist()

        if kind == AttributeType.FLOAT:
            return float(attr["f"])
        if kind == AttributeType.INT:
            return int(attr["i"])
        if kind == AttributeType.STRING:
            return "" if attr["s"] is None else bytes(attr["s"]).decode("utf-8")
        if kind == AttributeType.FLOATS:
            return listed("floats")
        if kind == AttributeType.INTS:
            return listed("ints")
        if kind == AttributeType.STRINGS:
            return list(attr["strings"] or [])
        if kind == AttributeType.TENSOR:
            return values[listed("tensors")[0]].data
        if kind == AttributeType.TENSORS:
            return [values[i].data for i in listed("tensors")]
        if kind == AttributeType.GRAPH:
            return self.graph(listed("graphs")[0])
        return [self.graph(i) for i in listed("graphs")]
