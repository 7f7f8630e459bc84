"""Reading a .tflite file: verified decoding, then a semantic check, into plain objects.

    model = read_tflite("model.tflite")        # or bytes
    model.subgraphs[0].operators[0].opcode      # "CONV_2D"

A .tflite file is untrusted input exactly like an .erm file. The flatbuffer is decoded by
the same verifying reader (runtime.flatread: every offset, vtable, string and vector is
checked before it is read; work is bounded by the file size; shared objects are decoded
once). The semantic check then refuses what would make a converter or kernel misbehave:
indices out of range, buffers whose size is not what dtype x shape needs, buffers past the
end of the file (models over 2 GiB keep them after the flatbuffer), a first buffer that is
not the empty sentinel, tensors read before any operator writes them, written twice, both
input and output of one operator, constants or subgraph inputs overwritten. Every failure is
a ModelError that names the subgraph, operator or tensor and what is wrong; LiteRT itself
crashes the process on some of these files, edgerun must not.

What reading allocates stays within a small multiple of the file size, however the file
shares: the flatbuffer reader bounds the decoded tables and vectors (an object referenced
again counts again); a buffer that several tensors use is decoded once per type and shape
(INT4 unpacked and strings decoded once per buffer), so those tensors share one read-only
array; and data kept after the flatbuffer (buffers and large custom options found by
offset and size) may not add up to more than the file holds, so regions cannot be reused.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgerun.converters.tflite.layout import (
    BUILTIN_OPERATORS,
    FILE_IDENTIFIER,
    SCHEMA_VERSION,
    TABLES,
    TENSOR_TYPES,
    UNIONS,
)
from edgerun.runtime.errors import ModelError
from edgerun.runtime.flatread import FlatReader

# TFLite tensor type -> numpy dtype (None: no array representation edgerun converts).
NUMPY_TYPES: dict[str, np.dtype | None] = {
    "FLOAT32": np.dtype("<f4"), "FLOAT16": np.dtype("<f2"), "FLOAT64": np.dtype("<f8"),
    "INT8": np.dtype("i1"), "UINT8": np.dtype("u1"), "INT16": np.dtype("<i2"),
    "UINT16": np.dtype("<u2"), "INT32": np.dtype("<i4"), "UINT32": np.dtype("<u4"),
    "INT64": np.dtype("<i8"), "UINT64": np.dtype("<u8"), "BOOL": np.dtype("?"),
    "COMPLEX64": np.dtype("<c8"), "COMPLEX128": np.dtype("<c16"),
    "STRING": np.dtype(object), "INT4": np.dtype("i1"),
}
# The most elements one tensor may declare (TFLite's own limit is what fits in size_t;
# this keeps byte counts exact in int64 and refuses absurd shapes before any allocation).
MAX_ELEMENTS = 1 << 40
MAX_RANK = 16


@dataclass
class TFLiteQuantization:
    """real = scale * (q - zero_point), per tensor (one scale) or along `axis`."""

    scale: np.ndarray
    zero_point: np.ndarray
    axis: int = 0

    @property
    def per_axis(self) -> bool:
        return self.scale.size > 1


@dataclass
class TFLiteTensor:
    index: int
    name: str
    type: str                          # "FLOAT32", "INT8", ...
    shape: tuple[int, ...]
    signature: tuple[int, ...]         # shape with -1 for dynamic dims (shape_signature or shape)
    data: np.ndarray | None = None     # constants: dense contents, read-only (sparse: see `sparsity`)
    quantization: TFLiteQuantization | None = None
    is_variable: bool = False
    sparsity: dict[str, Any] | None = None
    raw: bytes | None = None           # a sparse constant's stored values

    @property
    def dtype(self) -> np.dtype | None:
        return NUMPY_TYPES.get(self.type)

    @property
    def is_constant(self) -> bool:
        return self.data is not None or self.sparsity is not None


@dataclass
class TFLiteOperator:
    index: int
    opcode: str                        # builtin name ("CONV_2D"), or "CUSTOM"
    custom_code: str
    version: int
    inputs: list[int]                  # -1: omitted optional input
    outputs: list[int]
    options: dict[str, Any] | None     # the builtin options table, None when absent
    options_type: str                  # its table name ("Conv2DOptions"), "" when absent
    custom_options: bytes

    @property
    def name(self) -> str:
        """How messages name the operator: its builtin or custom code."""
        return self.custom_code if self.opcode == "CUSTOM" else self.opcode


@dataclass
class TFLiteSubGraph:
    index: int
    name: str
    tensors: list[TFLiteTensor]
    inputs: list[int]
    outputs: list[int]
    operators: list[TFLiteOperator]


@dataclass
class TFLiteSignature:
    key: str
    subgraph: int
    inputs: dict[str, int]
    outputs: dict[str, int]


@dataclass
class TFLiteModel:
    version: int
    description: str
    subgraphs: list[TFLiteSubGraph]
    signatures: list[TFLiteSignature] = field(default_factory=list)
    metadata: dict[str, bytes] = field(default_factory=dict)
    size: int = 0                      # bytes of the file (what converting it may spend scales with it)


def read_tflite(source: str | os.PathLike[str] | bytes | bytearray | memoryview) -> TFLiteModel:
    """Decode and check a .tflite model from a path or its bytes.

    Raises ModelError for a file that is not a TFLite model or is malformed (see the module
    docstring for what is checked), OSError when the path cannot be read.
    """
    buf = Path(source).read_bytes() if isinstance(source, str | os.PathLike) else bytes(source)
    raw = FlatReader(buf, TABLES, UNIONS, shared=True).read_root(FILE_IDENTIFIER, "Model", ".tflite")
    model = _Checker(raw, buf).model()
    model.size = len(buf)
    return model


class _Checker:
    """Turns the decoded tables into TFLite* objects, checking as it goes."""

    def __init__(self, raw: dict[str, Any], buf: bytes) -> None:
        self.raw = raw
        self.buf = buf
        self.external = 0  # bytes of buffers and custom options found by offset, in all
        # Decoded once per buffer, whichever tensors use it: (buffer, type, shape) -> array,
        # (buffer, "INT4") -> unpacked nibbles, (buffer, "STRING") -> strings, (buffer, "raw") -> bytes.
        self.decoded: dict[tuple, Any] = {}
        self.custom: dict[tuple[int, int], bytes] = {}

    def model(self) -> TFLiteModel:
        raw = self.raw
        if raw["version"] != SCHEMA_VERSION:
            raise ModelError(f"TFLite schema version {raw['version']} is not supported "
                             f"(edgerun reads version {SCHEMA_VERSION})")
        self.buffers = [self._buffer(i, b) for i, b in enumerate(raw["buffers"] or [])]
        if self.buffers and len(self.buffers[0]):
            raise ModelError("buffer 0 must be the empty sentinel, but it holds "
                             f"{len(self.buffers[0])} bytes")
        self.codes = [self._opcode(i, c) for i, c in enumerate(raw["operator_codes"] or [])]
        subgraphs = raw["subgraphs"] or []
        if not subgraphs:
            raise ModelError("the model has no subgraphs")
        model = TFLiteModel(raw["version"], raw["description"] or "",
                            [self._subgraph(i, s) for i, s in enumerate(subgraphs)])
        model.signatures = [self._signature(i, s, model) for i, s in enumerate(raw["signature_defs"] or [])]
        for entry in raw["metadata"] or []:
            index = entry["buffer"]
            if index >= len(self.buffers):
                raise ModelError(f"metadata {entry['name']!r} refers to buffer {index}, "
                                 f"but the model has {len(self.buffers)}")
            model.metadata[entry["name"] or ""] = self.buffers[index]
        return model

    def _buffer(self, index: int, raw: dict[str, Any] | None) -> bytes | memoryview:
        if raw is None:
            return b""
        offset, size = raw["offset"], raw["size"]
        if offset > 1:
            # Data kept after the flatbuffer (models over 2 GiB); Python ints cannot overflow.
            if offset + size > len(self.buf):
                raise ModelError(f"buffer {index}: {size} bytes at offset {offset} run past the end "
                                 f"of the file ({len(self.buf)} bytes)")
            self._external(size, f"buffer {index}")
            return memoryview(self.buf)[offset:offset + size]
        data = raw["data"]
        return b"" if data is None else data.data

    def _external(self, size: int, what: str) -> None:
        """Count `size` bytes found by offset: together they may not pass the file size (a
        region named by many buffers or operators would multiply what converting it costs)."""
        self.external += size
        if self.external > len(self.buf):
            raise ModelError(f"{what}: the buffers and custom options kept by offset add up to more than the "
                             f"{len(self.buf):,} bytes of the file (regions are used more than once)")

    def _opcode(self, index: int, raw: dict[str, Any]) -> tuple[str, str, int]:
        code = max(raw["builtin_code"], raw["deprecated_builtin_code"])
        name = BUILTIN_OPERATORS.get(code, f"UNKNOWN_BUILTIN_{code}")
        return name, raw["custom_code"] or "", raw["version"]

    def _subgraph(self, index: int, raw: dict[str, Any]) -> TFLiteSubGraph:
        where = f"subgraph {index}"
        tensors = [self._tensor(where, i, t) for i, t in enumerate(raw["tensors"] or [])]
        count = len(tensors)

        def indices(values: Any, what: str, optional: bool = False) -> list[int]:
            result = [] if values is None else [int(v) for v in values]
            for v in result:
                if not (0 <= v < count or (optional and v == -1)):
                    raise ModelError(f"{where}: {what} refers to tensor {v}, but the subgraph has {count}")
            return result

        inputs = indices(raw["inputs"], "an input")
        outputs = indices(raw["outputs"], "an output")
        operators = []
        for i, op in enumerate(raw["operators"] or []):
            if op is None:
                raise ModelError(f"{where}: operator {i} is missing")
            if op["opcode_index"] >= len(self.codes):
                raise ModelError(f"{where}, operator {i}: opcode index {op['opcode_index']} is out of "
                                 f"range (the model has {len(self.codes)} operator codes)")
            opcode, custom_code, version = self.codes[op["opcode_index"]]
            what = f"operator {i} ({short(custom_code) if opcode == 'CUSTOM' else opcode})"
            operators.append(TFLiteOperator(
                i, opcode, custom_code, version,
                indices(op["inputs"], f"{what}: an input", optional=True),
                indices(op["outputs"], f"{what}: an output"),
                op["builtin_options"],
                self._options_type(op),
                self._custom_options(where, what, op),
            ))
        graph = TFLiteSubGraph(index, raw["name"] or "", tensors, inputs, outputs, operators)
        _check_dataflow(graph)
        return graph

    @staticmethod
    def _options_type(op: dict[str, Any]) -> str:
        code = op["builtin_options_type"]
        members = UNIONS["BuiltinOptions"]
        return members[code - 1] if 0 < code <= len(members) else ""

    def _custom_options(self, where: str, what: str, op: dict[str, Any]) -> bytes:
        offset, size = op["large_custom_options_offset"], op["large_custom_options_size"]
        if offset > 1:
            if offset + size > len(self.buf):
                raise ModelError(f"{where}, {what}: custom options of {size} bytes at offset {offset} "
                                 f"run past the end of the file ({len(self.buf)} bytes)")
            self._external(size, f"{where}, {what}: custom options")
            return bytes(self.buf[offset:offset + size])
        options = op["custom_options"]
        return b"" if options is None else options.tobytes()

    def _tensor(self, where: str, index: int, raw: dict[str, Any]) -> TFLiteTensor:
        name = raw["name"] or f"tensor_{index}"
        what = f"{where}, tensor {index} ({name!r})"
        type_name = TENSOR_TYPES.get(raw["type"])
        if type_name is None:
            raise ModelError(f"{what}: unknown tensor type code {raw['type']}")
        shape = tuple(int(d) for d in (raw["shape"] if raw["shape"] is not None else ()))
        if len(shape) > MAX_RANK:
            raise ModelError(f"{what}: rank {len(shape)} is over the limit of {MAX_RANK}")
        if any(d < 0 for d in shape):
            raise ModelError(f"{what}: shape {list(shape)} has a negative dimension")
        elements = 1
        for d in shape:
            elements *= d
        if elements > MAX_ELEMENTS:
            raise ModelError(f"{what}: shape {list(shape)} has {elements:,} elements, over the "
                             f"limit of {MAX_ELEMENTS:,}")
        signature = shape
        if raw["shape_signature"] is not None and len(raw["shape_signature"]):
            signature = tuple(int(d) for d in raw["shape_signature"])
            if len(signature) != len(shape) or any(
                    s != d and s != -1 for s, d in zip(signature, shape, strict=True)):
                raise ModelError(f"{what}: shape signature {list(signature)} does not agree with "
                                 f"shape {list(shape)}")
        tensor = TFLiteTensor(index, name, type_name, shape, signature,
                              quantization=self._quantization(what, raw["quantization"], shape),
                              is_variable=bool(raw["is_variable"]), sparsity=raw["sparsity"])
        buffer_index = raw["buffer"]
        if buffer_index >= max(len(self.buffers), 1):
            raise ModelError(f"{what}: buffer index {buffer_index} is out of range "
                             f"(the model has {len(self.buffers)} buffers)")
        data = self.buffers[buffer_index] if buffer_index else b""
        if len(data):
            if tensor.sparsity is not None:
                tensor.raw = self._once((buffer_index, "raw"), lambda: bytes(data))
            else:
                tensor.data = self._constant(what, buffer_index, type_name, shape, elements)
        elif tensor.sparsity is not None:
            raise ModelError(f"{what}: a sparse tensor without data")
        return tensor

    def _once(self, key: tuple, make: Any) -> Any:
        if key not in self.decoded:
            self.decoded[key] = make()
        return self.decoded[key]

    def _constant(self, what: str, index: int, type_name: str, shape: tuple[int, ...], elements: int) -> np.ndarray:
        """Buffer `index` as a constant of `type_name` and `shape`, decoded once for all the
        tensors that read it so (the arrays are read-only)."""
        data = self.buffers[index]
        if type_name == "INT4":
            _check_int4_size(what, shape, elements, data)
            nibbles = self._once((index, "INT4"), lambda: _unpack_int4(data))
            return self._once((index, type_name, shape), lambda: nibbles[:elements].reshape(shape))
        if type_name == "STRING":
            strings = self._once((index, "STRING"), lambda: _decode_strings(what, bytes(data)))
            if strings.size != elements:
                raise ModelError(f"{what}: a string buffer of {strings.size} strings does not fit shape {list(shape)}")
            return self._once((index, type_name, shape), lambda: strings.reshape(shape))
        # Checked once per buffer and type: tensors of other shapes get views of the same array.
        flat = self._once((index, type_name), lambda: _decode(what, type_name, shape, elements, data).reshape(-1))
        if flat.size != elements:
            raise ModelError(f"{what}: a {type_name} buffer of shape {list(shape)} needs "
                             f"{elements * flat.itemsize} bytes, the file holds {len(data)}")
        return self._once((index, type_name, shape), lambda: flat.reshape(shape))

    @staticmethod
    def _quantization(what: str, raw: dict[str, Any] | None, shape: tuple[int, ...]) -> TFLiteQuantization | None:
        if raw is None or raw["scale"] is None or not len(raw["scale"]):
            return None
        scale = np.array(raw["scale"], dtype=np.float32)
        zero_point = (np.zeros(scale.size, np.int64) if raw["zero_point"] is None or not len(raw["zero_point"])
                      else np.array(raw["zero_point"], dtype=np.int64))
        axis = int(raw["quantized_dimension"])
        if zero_point.size != scale.size:
            raise ModelError(f"{what}: {scale.size} quantization scales but {zero_point.size} zero points")
        if not np.all(np.isfinite(scale)) or np.any(scale < 0):
            raise ModelError(f"{what}: quantization scales must be finite and >= 0")
        if scale.size > 1 and not (0 <= axis < len(shape) and shape[axis] == scale.size):
            raise ModelError(f"{what}: {scale.size} per-channel scales do not fit dimension {axis} of "
                             f"shape {list(shape)}")
        return TFLiteQuantization(scale, zero_point, axis)

    def _signature(self, index: int, raw: dict[str, Any], model: TFLiteModel) -> TFLiteSignature:
        key = raw["signature_key"] or f"signature_{index}"
        if raw["subgraph_index"] >= len(model.subgraphs):
            raise ModelError(f"signature {key!r} refers to subgraph {raw['subgraph_index']}, but the model "
                             f"has {len(model.subgraphs)}")
        graph = model.subgraphs[raw["subgraph_index"]]

        def names(entries: Any, what: str) -> dict[str, int]:
            mapping = {}
            for entry in entries or []:
                if entry["tensor_index"] >= len(graph.tensors):
                    raise ModelError(f"signature {key!r}: {what} {entry['name']!r} refers to tensor "
                                     f"{entry['tensor_index']}, but subgraph {graph.index} has {len(graph.tensors)}")
                mapping[entry["name"] or f"{what}_{len(mapping)}"] = int(entry["tensor_index"])
            return mapping

        return TFLiteSignature(key, graph.index, names(raw["inputs"], "input"), names(raw["outputs"], "output"))


def short(name: str, limit: int = 100) -> str:
    """`name` for a message: cut to `limit` characters (a file's custom code can be huge)."""
    return name if len(name) <= limit else f"{name[:limit]}... ({len(name):,} characters)"


def _check_int4_size(what: str, shape: tuple[int, ...], elements: int, data: Any) -> None:
    expected = (elements + 1) // 2
    if len(data) != expected:
        raise ModelError(f"{what}: an INT4 buffer of shape {list(shape)} needs {expected} bytes, "
                         f"the file holds {len(data)}")


def _unpack_int4(data: Any) -> np.ndarray:
    """Two signed 4-bit values per byte, element 2i in the low nibble, as read-only int8."""
    packed = np.frombuffer(data, np.uint8)
    nibbles = np.empty(packed.size * 2, np.uint8)
    nibbles[0::2], nibbles[1::2] = packed & 0x0F, packed >> 4
    values = ((nibbles.astype(np.int8) ^ 8) - 8).astype(np.int8)
    values.flags.writeable = False
    return values


def _decode(what: str, type_name: str, shape: tuple[int, ...], elements: int, data: Any) -> np.ndarray:
    """A constant's contents as a read-only array of `shape`; ModelError when the buffer
    is not exactly what the type and shape need (INT4 and STRING: see _Checker._constant)."""
    dtype = NUMPY_TYPES.get(type_name)
    if dtype is None or type_name in ("INT4", "STRING"):
        raise ModelError(f"{what}: constant tensors of type {type_name} are not supported")
    expected = elements * dtype.itemsize
    if len(data) != expected:
        raise ModelError(f"{what}: a {type_name} buffer of shape {list(shape)} needs {expected} bytes, "
                         f"the file holds {len(data)}")
    array = np.frombuffer(data, dtype, count=elements).reshape(shape)
    if type_name == "BOOL" and np.any(array.view(np.uint8) > 1):
        raise ModelError(f"{what}: a BOOL buffer holds bytes other than 0 and 1")
    return array


def _decode_strings(what: str, data: bytes) -> np.ndarray:
    """TFLite's string buffer: int32 count, count + 1 int32 offsets, then the bytes; a
    read-only 1-D object array of str."""
    if len(data) < 4:
        raise ModelError(f"{what}: a string buffer of {len(data)} bytes has no header")
    count = int(np.frombuffer(data, "<i4", count=1)[0])
    if count < 0 or 4 * (count + 2) > len(data):
        raise ModelError(f"{what}: a string buffer of {count} strings does not fit in {len(data)} bytes")
    offsets = np.frombuffer(data, "<i4", count=count + 1, offset=4).astype(np.int64)
    if offsets[0] != 4 * (count + 2) or np.any(np.diff(offsets) < 0) or offsets[-1] > len(data):
        raise ModelError(f"{what}: string offsets are out of order or out of the buffer")
    strings = np.empty(count, dtype=object)
    for i in range(count):
        try:
            strings[i] = data[offsets[i]:offsets[i + 1]].decode("utf-8")
        except UnicodeDecodeError:
            raise ModelError(f"{what}: string {i} is not valid UTF-8") from None
    strings.flags.writeable = False
    return strings


def _empty_constant(tensor: TFLiteTensor) -> bool:
    """A zero-element tensor no operator writes: a constant whose buffer is empty (writers
    store no bytes for it), such as an empty axes list."""
    return 0 in tensor.shape and tensor.data is None and tensor.sparsity is None


def _check_dataflow(graph: TFLiteSubGraph) -> None:
    """Every tensor an operator reads exists by then; none is written twice, written when
    it is a constant or a subgraph input, or both read and written by one operator."""
    where = f"subgraph {graph.index}"
    available = set(graph.inputs)
    available.update(t.index for t in graph.tensors if t.is_constant or t.is_variable)
    written: set[int] = set()
    inputs = set(graph.inputs)
    for op in graph.operators:
        what = f"{where}, operator {op.index} ({op.name})"
        for i in op.inputs:
            if i != -1 and i not in available and not _empty_constant(graph.tensors[i]):
                raise ModelError(f"{what}: reads tensor {i} ({graph.tensors[i].name!r}) before any "
                                 "operator writes it")
        reads = set(op.inputs)
        for o in op.outputs:
            tensor = graph.tensors[o]
            if o in reads:
                raise ModelError(f"{what}: tensor {o} ({tensor.name!r}) is both an input and an output")
            if o in written:
                raise ModelError(f"{what}: tensor {o} ({tensor.name!r}) is written by two operators")
            if tensor.is_constant or o in inputs:  # (a zero-element output is written, not constant)
                kind = "a constant" if tensor.is_constant else "a subgraph input"
                raise ModelError(f"{what}: writes tensor {o} ({tensor.name!r}), which is {kind}")
            written.add(o)
            available.add(o)
    for o in graph.outputs:
        if o not in available:
            raise ModelError(f"{where}: output tensor {o} ({graph.tensors[o].name!r}) is never written")
