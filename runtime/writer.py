"""IR -> .erm: serialize a Graph (and its nested graphs) to bytes or a file.

Layout: the flatbuffer, then each external buffer at a 64-byte aligned offset
from the file start (string tensors are always inline, as length-prefixed UTF-8).
The flatbuffer is built twice: once to learn its size (every scalar field is
forced, so offsets do not change its size), once with the final absolute offsets.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import flatbuffers
import numpy as np

from edgerun.runtime import dtypes
from edgerun.runtime.errors import ModelError
from edgerun.runtime.format import (
    BUFFER_ALIGNMENT,
    DEFAULT_INLINE_LIMIT,
    FILE_IDENTIFIER,
    INLINE_ALIGNMENT,
    MAX_FLATBUFFER_BYTES,
    SCHEMA_VERSION,
    VALUE_KINDS,
)
from edgerun.runtime.graph import MAP_KEY_DTYPES, Graph, Node, Value, ValueKind
from edgerun.runtime.schema.fb import (
    Attribute,
    Buffer,
    KeyValue,
    Model,
    Operator,
    Quantization,
    Signature,
    SubGraph,
    Tensor,
    TensorRef,
    VariableUpdate,
)
from edgerun.runtime.schema.fb.AttributeType import AttributeType

_ZERO_CHUNK = 16 << 20  # bytes compared at a time when writing sparse zero runs


def serialize(graph: Graph, inline_limit: int = DEFAULT_INLINE_LIMIT) -> bytes:
    """The complete .erm file for `graph` as bytes (weights included)."""
    import io

    stream = io.BytesIO()
    _write(graph, stream, inline_limit, sparse=False)
    return stream.getvalue()


def save_model(
    graph: Graph, path: str | os.PathLike, inline_limit: int = DEFAULT_INLINE_LIMIT
) -> Path:
    """Write `graph` to `path` atomically (temp file + rename); returns the path.

    Runs of zero bytes in large buffers become holes of a sparse file.
    Raises ModelError when the graph cannot be represented.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as stream:
            _write(graph, stream, inline_limit, sparse=True)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _write(graph: Graph, stream: BinaryIO, inline_limit: int, sparse: bool) -> None:
    try:
        tables = _Tables.collect(graph, inline_limit)
        probe = _build(tables, data_start=0)
        data_start = _align(len(probe), BUFFER_ALIGNMENT)
        flat = _build(tables, data_start=data_start)
    except (TypeError, ValueError, OverflowError, UnicodeError, struct.error) as exc:
        raise ModelError(f"graph {graph.name!r} cannot be serialized: {exc}") from exc
    if len(flat) != len(probe):
        raise AssertionError("flatbuffer size changed between passes")
    if len(flat) > MAX_FLATBUFFER_BYTES:
        raise ModelError(f"flatbuffer part is {len(flat)} bytes, over the 2 GiB limit")
    stream.write(flat)
    position = len(flat)
    for array, offset in zip(tables.external, tables.external_offsets(data_start), strict=True):
        if offset > position:
            stream.write(b"\0" * (offset - position))
        position = offset + _write_array(stream, array, sparse)
    if sparse:
        stream.truncate(position)


def _write_array(stream: BinaryIO, array: np.ndarray, sparse: bool) -> int:
    raw = memoryview(np.ascontiguousarray(array).reshape(-1).view(np.uint8))
    if not sparse:
        stream.write(raw)
        return len(raw)
    for start in range(0, len(raw), _ZERO_CHUNK):
        chunk = raw[start : start + _ZERO_CHUNK]
        if np.frombuffer(chunk, np.uint8).any():
            stream.write(chunk)
        else:
            stream.seek(len(chunk), os.SEEK_CUR)
    return len(raw)


def _align(n: int, alignment: int) -> int:
    return (n + alignment - 1) // alignment * alignment


@dataclass
class _SubgraphTables:
    graph: Graph
    values: list[Value]
    index: dict[int, int]  # id(Value) -> tensor index
    buffer_of: dict[int, int]  # tensor index -> buffer index


@dataclass
class _Tables:
    """Everything the flatbuffer needs, flattened to indices."""

    subgraphs: list[_SubgraphTables] = field(default_factory=list)
    subgraph_index: dict[int, int] = field(default_factory=dict)  # id(Graph) -> index
    inline: dict[int, np.ndarray] = field(default_factory=dict)  # buffer index -> data
    external: list[np.ndarray] = field(default_factory=list)
    external_buffer: list[int] = field(default_factory=list)  # buffer index of each external
    num_buffers: int = 1  # buffer 0 is the empty sentinel

    @classmethod
    def collect(cls, graph: Graph, inline_limit: int) -> _Tables:
        tables = cls()
        unique = list({id(g): g for g in [graph, *graph.subgraphs()]}.values())  # shared bodies once
        for index, g in enumerate(unique):
            tables.subgraph_index[id(g)] = index
            tables.subgraphs.append(tables._collect_subgraph(g, inline_limit))
        return tables

    def _collect_subgraph(self, graph: Graph, inline_limit: int) -> _SubgraphTables:
        values = graph.values() + _attribute_tensors(graph)
        names: set[str] = set()
        for v in values:
            if v.name in names:
                raise ModelError(f"graph {graph.name!r}: two tensors are named {v.name!r}")
            names.add(v.name)
        sub = _SubgraphTables(graph, values, {id(v): i for i, v in enumerate(values)}, {})
        for i, v in enumerate(values):
            if v.data is not None:
                sub.buffer_of[i] = self._add_buffer(v, inline_limit)
        return sub

    def _add_buffer(self, value: Value, inline_limit: int) -> int:
        data = value.data
        if value.dtype is None or data.dtype != value.dtype or data.shape != value.shape:
            raise ModelError(
                f"tensor {value.name!r}: data is {data.dtype}{list(data.shape)} but the value "
                f"says {value.dtype}{list(value.shape or ())}"
            )
        string = dtypes.is_string(data.dtype)
        if string:  # length-prefixed UTF-8, always inline (see edgerun.fbs)
            try:
                data = dtypes.encode_strings(data)
            except (TypeError, ValueError) as exc:
                raise ModelError(f"tensor {value.name!r}: cannot store as strings: {exc}") from None
        else:
            data = dtypes.pack(data)  # 4- and 2-bit types: two / four per byte
        index = self.num_buffers
        self.num_buffers += 1
        if string or data.nbytes <= inline_limit:
            self.inline[index] = data
        else:
            self.external.append(data)
            self.external_buffer.append(index)
        return index

    def external_offsets(self, data_start: int) -> list[int]:
        offsets, position = [], data_start
        for array in self.external:
            position = _align(position, BUFFER_ALIGNMENT)
            offsets.append(position)
            position += array.nbytes
        return offsets


def _attribute_tensors(graph: Graph) -> list[Value]:
    """Values made for tensor-typed node attributes, named after node and attribute."""
    made = []
    for node in graph.nodes:
        for key, value in node.attrs.items():
            arrays = value if _is_array_list(value) else [value]
            for j, item in enumerate(arrays):
                if isinstance(item, np.ndarray):
                    name = f"{node.name}.{key}" + (f".{j}" if arrays is value else "")
                    made.append(Value(name, item.dtype, item.shape, data=item))
    return made


def _is_array_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and isinstance(value[0], np.ndarray)


def _build(tables: _Tables, data_start: int) -> bytes:
    builder = flatbuffers.Builder(1024)
    builder.ForceDefaults(True)
    subgraphs = [_build_subgraph(builder, tables, sub) for sub in tables.subgraphs]
    buffers = _build_buffers(builder, tables, data_start)
    main = tables.subgraphs[0]
    signatures = [
        _build_signature(builder, name, sig, main) for name, sig in main.graph.signatures.items()
    ]
    metadata = [_build_key_value(builder, k, v) for k, v in main.graph.metadata.items()]
    producer = builder.CreateString("edgerun")
    description = builder.CreateString(main.graph.name)
    subgraph_vec = _table_vector(builder, subgraphs)
    buffer_vec = _table_vector(builder, buffers)
    signature_vec = _table_vector(builder, signatures)
    metadata_vec = _table_vector(builder, metadata)
    Model.Start(builder)
    Model.AddSchemaVersion(builder, SCHEMA_VERSION)
    Model.AddProducer(builder, producer)
    Model.AddDescription(builder, description)
    Model.AddSubgraphs(builder, subgraph_vec)
    Model.AddBuffers(builder, buffer_vec)
    Model.AddSignatures(builder, signature_vec)
    Model.AddMetadata(builder, metadata_vec)
    builder.Finish(Model.End(builder), file_identifier=FILE_IDENTIFIER)
    return bytes(builder.Output())


def _build_signature(
    builder: flatbuffers.Builder, name: str, signature: Any, main: _SubgraphTables
) -> int:
    def refs(mapping: dict[str, Value]) -> int:
        made = []
        for ref_name, value in mapping.items():
            if id(value) not in main.index:
                raise ModelError(f"signature {name!r}: {ref_name!r} is not a value of the graph")
            text = builder.CreateString(ref_name)
            TensorRef.Start(builder)
            TensorRef.AddName(builder, text)
            TensorRef.AddTensor(builder, main.index[id(value)])
            made.append(TensorRef.End(builder))
        return _table_vector(builder, made)

    inputs, outputs = refs(signature.inputs), refs(signature.outputs)
    updates = []
    for variable, value in signature.updates.items():
        VariableUpdate.Start(builder)
        VariableUpdate.AddVariable(builder, main.index[id(variable)])
        VariableUpdate.AddValue(builder, main.index[id(value)])
        updates.append(VariableUpdate.End(builder))
    updates = _table_vector(builder, updates)
    text = builder.CreateString(name)
    Signature.Start(builder)
    Signature.AddName(builder, text)
    Signature.AddSubgraph(builder, 0)
    Signature.AddInputs(builder, inputs)
    Signature.AddOutputs(builder, outputs)
    Signature.AddUpdates(builder, updates)
    return Signature.End(builder)


def _build_key_value(builder: flatbuffers.Builder, key: str, value: str) -> int:
    k, v = builder.CreateString(str(key)), builder.CreateString(str(value))
    KeyValue.Start(builder)
    KeyValue.AddKey(builder, k)
    KeyValue.AddValue(builder, v)
    return KeyValue.End(builder)


def _table_vector(builder: flatbuffers.Builder, offsets: list[int]) -> int:
    builder.StartVector(4, len(offsets), 4)
    for off in reversed(offsets):
        builder.PrependUOffsetTRelative(off)
    return builder.EndVector()


def _int_vector(builder: flatbuffers.Builder, values: list[int], dtype: Any) -> int:
    return builder.CreateNumpyVector(np.asarray(values, dtype=dtype).reshape(-1))


def _aligned_bytes(builder: flatbuffers.Builder, data: np.ndarray) -> int:
    payload = np.ascontiguousarray(data).reshape(-1).view(np.uint8).tobytes()
    builder.StartVector(1, len(payload), INLINE_ALIGNMENT)
    builder.head -= len(payload)
    builder.Bytes[builder.head : builder.head + len(payload)] = payload
    builder.vectorNumElems = len(payload)
    return builder.EndVector()


def _build_buffers(builder: flatbuffers.Builder, tables: _Tables, data_start: int) -> list[int]:
    external = dict(zip(tables.external_buffer, tables.external_offsets(data_start), strict=True))
    sizes = dict(zip(tables.external_buffer, (a.nbytes for a in tables.external), strict=True))
    offsets = []
    for index in range(tables.num_buffers):
        data = _aligned_bytes(builder, tables.inline[index]) if index in tables.inline else None
        Buffer.Start(builder)
        if data is not None:
            Buffer.AddData(builder, data)
        Buffer.AddOffset(builder, external.get(index, 0))
        Buffer.AddSize(builder, sizes.get(index, 0))
        offsets.append(Buffer.End(builder))
    return offsets


def _build_subgraph(builder: flatbuffers.Builder, tables: _Tables, sub: _SubgraphTables) -> int:
    graph = sub.graph
    tensors = [_build_tensor(builder, v, sub.buffer_of.get(i, 0)) for i, v in enumerate(sub.values)]
    operators = [_build_operator(builder, tables, sub, node) for node in graph.nodes]
    name = builder.CreateString(graph.name)
    tensor_vec = _table_vector(builder, tensors)
    inputs = _int_vector(builder, [sub.index[id(v)] for v in graph.inputs], np.int32)
    outputs = _int_vector(builder, [sub.index[id(v)] for v in graph.outputs], np.int32)
    operator_vec = _table_vector(builder, operators)
    SubGraph.Start(builder)
    SubGraph.AddName(builder, name)
    SubGraph.AddTensors(builder, tensor_vec)
    SubGraph.AddInputs(builder, inputs)
    SubGraph.AddOutputs(builder, outputs)
    SubGraph.AddOperators(builder, operator_vec)
    return SubGraph.End(builder)


def _build_tensor(builder: flatbuffers.Builder, value: Value, buffer: int) -> int:
    name = builder.CreateString(value.name)
    shape = None if value.shape is None else _int_vector(builder, list(value.shape), np.int64)
    quant = None
    if value.quantization is not None:
        q = value.quantization
        scale = builder.CreateNumpyVector(np.asarray(q.scale, np.float32).reshape(-1))
        zero = builder.CreateNumpyVector(np.asarray(q.zero_point, np.int64).reshape(-1))
        Quantization.Start(builder)
        Quantization.AddScale(builder, scale)
        Quantization.AddZeroPoint(builder, zero)
        Quantization.AddAxis(builder, q.axis)
        quant = Quantization.End(builder)
    try:
        code = 0 if value.dtype is None else dtypes.from_numpy(value.dtype)
    except KeyError:
        raise ModelError(f"tensor {value.name!r}: dtype {value.dtype} cannot be stored") from None
    Tensor.Start(builder)
    Tensor.AddName(builder, name)
    Tensor.AddDtype(builder, code)
    if shape is not None:
        Tensor.AddShape(builder, shape)
    Tensor.AddBuffer(builder, buffer)
    if quant is not None:
        Tensor.AddQuantization(builder, quant)
    Tensor.AddIsVariable(builder, value.is_variable)
    Tensor.AddKind(builder, VALUE_KINDS.index(value.kind))
    Tensor.AddKeyDtype(builder, _key_code(value))
    return Tensor.End(builder)


def _key_code(value: Value) -> int:
    """Tensor.key_dtype of `value`: its keys' DType for a sequence of maps, else 0 (UNDEFINED).
    ModelError naming the value for a map without an int64 or string key type, or a key type
    on any other kind."""
    key = None if value.key_dtype is None else np.dtype(value.key_dtype)
    if value.kind != ValueKind.SEQUENCE_MAP:
        if key is not None:
            raise ModelError(f"tensor {value.name!r}: a {value.kind} value has no key type, got {key}")
        return 0
    if key is None or key not in MAP_KEY_DTYPES:
        raise ModelError(f"tensor {value.name!r}: a sequence of maps needs an int64 or string key type, got {key}")
    return dtypes.from_numpy(key)


def _slot(sub: _SubgraphTables, value: Value | None, node: Node) -> int:
    if value is None:
        return -1
    try:
        return sub.index[id(value)]
    except KeyError:
        raise ModelError(f"node {node.name!r}: value {value.name!r} is not in the graph") from None


def _build_operator(
    builder: flatbuffers.Builder, tables: _Tables, sub: _SubgraphTables, node: Node
) -> int:
    attributes = [
        _build_attribute(builder, tables, sub, node, key, value)
        for key, value in node.attrs.items()
    ]
    name = builder.CreateString(node.name)
    domain = builder.CreateString(node.domain)
    op_type = builder.CreateString(node.op_type)
    inputs = _int_vector(builder, [_slot(sub, v, node) for v in node.inputs], np.int32)
    outputs = _int_vector(builder, [_slot(sub, v, node) for v in node.outputs], np.int32)
    attribute_vec = _table_vector(builder, attributes)
    Operator.Start(builder)
    Operator.AddName(builder, name)
    Operator.AddDomain(builder, domain)
    Operator.AddOpType(builder, op_type)
    Operator.AddVersion(builder, node.version)
    Operator.AddInputs(builder, inputs)
    Operator.AddOutputs(builder, outputs)
    Operator.AddAttributes(builder, attribute_vec)
    return Operator.End(builder)


def _build_attribute(builder, tables, sub, node, key, value) -> int:  # noqa: ANN001
    kind, payload = _attribute_payload(tables, sub, node, key, value)
    name = builder.CreateString(key)
    vector = None
    if kind == AttributeType.STRING:
        vector = builder.CreateByteVector(payload.encode("utf-8"))
    elif kind == AttributeType.STRINGS:
        strings = [builder.CreateString(s) for s in payload]
        vector = _table_vector(builder, strings)
    elif kind in _VECTOR_DTYPES:
        vector = _int_vector(builder, payload, _VECTOR_DTYPES[kind])
    Attribute.Start(builder)
    Attribute.AddName(builder, name)
    Attribute.AddType(builder, kind)
    if kind == AttributeType.FLOAT:
        Attribute.AddF(builder, payload)
    elif kind == AttributeType.INT:
        Attribute.AddI(builder, payload)
    elif vector is not None:
        _VECTOR_ADDERS[kind](builder, vector)
    return Attribute.End(builder)


_VECTOR_DTYPES = {
    AttributeType.FLOATS: np.float64,
    AttributeType.INTS: np.int64,
    AttributeType.TENSOR: np.int32,
    AttributeType.TENSORS: np.int32,
    AttributeType.GRAPH: np.int32,
    AttributeType.GRAPHS: np.int32,
}
_VECTOR_ADDERS = {
    AttributeType.STRING: Attribute.AddS,
    AttributeType.STRINGS: Attribute.AddStrings,
    AttributeType.FLOATS: Attribute.AddFloats,
    AttributeType.INTS: Attribute.AddInts,
    AttributeType.TENSOR: Attribute.AddTensors,
    AttributeType.TENSORS: Attribute.AddTensors,
    AttributeType.GRAPH: Attribute.AddGraphs,
    AttributeType.GRAPHS: Attribute.AddGraphs,
}


def _attribute_payload(tables, sub, node, key, value) -> tuple[int, Any]:  # noqa: ANN001
    """(attribute type, payload) for an IR attribute value; ModelError if unsupported."""
    if isinstance(value, bool | int | np.integer):
        return AttributeType.INT, int(value)
    if isinstance(value, float | np.floating):
        return AttributeType.FLOAT, float(value)
    if isinstance(value, str):
        return AttributeType.STRING, value
    if isinstance(value, np.ndarray):
        return AttributeType.TENSOR, [_attribute_tensor_index(sub, node, key, value)]
    if isinstance(value, Graph):
        return AttributeType.GRAPH, [tables.subgraph_index[id(value)]]
    if isinstance(value, list | tuple):
        items = list(value)
        if all(isinstance(x, bool | int | np.integer) for x in items):
            return AttributeType.INTS, [int(x) for x in items]
        if all(isinstance(x, int | float | np.number) for x in items):
            return AttributeType.FLOATS, [float(x) for x in items]
        if all(isinstance(x, str) for x in items):
            return AttributeType.STRINGS, items
        if all(isinstance(x, np.ndarray) for x in items):
            return AttributeType.TENSORS, [
                _attribute_tensor_index(sub, node, key, x) for x in items
            ]
        if all(isinstance(x, Graph) for x in items):
            return AttributeType.GRAPHS, [tables.subgraph_index[id(x)] for x in items]
    kind = type(value).__name__
    raise ModelError(f"node {node.name!r}: attribute {key!r} has a type .erm cannot store: {kind}")


def _attribute_tensor_index(sub: _SubgraphTables, node: Node, key: str, array: np.ndarray) -> int:
    for i, v in enumerate(sub.values):
        if v.data is array and v.name.startswith(f"{node.name}.{key}"):
            return i
    raise AssertionError("attribute tensor was not collected")
