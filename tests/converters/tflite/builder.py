"""Writing small .tflite models in tests, with the builder code generated from our schema.

    b = TFLiteBuilder()
    x = b.input("x", (1, 8, 8, 3))
    w = b.constant("w", weights)                       # float32 unless the array says otherwise
    y = b.tensor("y", (1, 8, 8, 4))
    b.op("CONV_2D", [x, w, -1], [y], "Conv2DOptions", padding=0, stride_w=1, stride_h=1)
    b.output(y)
    data = b.build()                                   # bytes of a .tflite file

Several subgraphs: `b.subgraph("body")` returns a builder for another subgraph of the same
model (its index is `.index`); signatures: `b.signature("key", {"x": x}, {"y": y})`.
The oracle for such files is LiteRT's interpreter (`litert_run`).
"""

from __future__ import annotations

import importlib
from typing import Any

import flatbuffers
import numpy as np

from edgerun.converters.tflite import layout

FB = "edgerun.converters.tflite.schema.fb"
_TYPES = {v: k for k, v in layout.TENSOR_TYPES.items()}
_OPS = {v: k for k, v in layout.BUILTIN_OPERATORS.items()}
_NUMPY_TYPES = {
    "float32": "FLOAT32", "float16": "FLOAT16", "float64": "FLOAT64", "int8": "INT8", "uint8": "UINT8",
    "int16": "INT16", "int32": "INT32", "int64": "INT64", "bool": "BOOL", "uint32": "UINT32",
}
_VECTOR_DTYPES = {"[i32]": np.int32, "[i64]": np.int64, "[f32]": np.float32, "[u8]": np.uint8,
                  "[bool]": np.bool_, "[i8]": np.int8, "[u16]": np.uint16}


def _fb(table: str) -> Any:
    return importlib.import_module(f"{FB}.{table}")


def _camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.split("_"))


class _Graph:
    def __init__(self, model: TFLiteBuilder, index: int, name: str) -> None:
        self.model, self.index, self.name = model, index, name
        self.tensors: list[dict[str, Any]] = []
        self.inputs: list[int] = []
        self.outputs: list[int] = []
        self.ops: list[dict[str, Any]] = []

    def tensor(self, name: str, shape: Any, type: str = "FLOAT32", *, data: Any = None,
               quant: dict[str, Any] | None = None, signature: Any = None,
               is_variable: bool = False, sparsity: dict[str, Any] | None = None) -> int:
        """A tensor; `data` (bytes or array) makes it a constant; `quant` holds scale,
        zero_point and optionally axis; `signature` is shape_signature (-1 = dynamic).
        `sparsity` makes `data` the stored values of a sparse tensor: {"traversal_order": [...],
        "block_map": [...] (optional), "dim_metadata": [{"format": 0, "dense_size": n} or
        {"format": 1, "segments": array, "indices": array}]}, the index arrays' dtype
        (int32, uint16, uint8) choosing the SparseIndexVector member."""
        buffer = 0
        if data is not None:
            raw = data if isinstance(data, bytes) else np.ascontiguousarray(data).tobytes()
            self.model.buffers.append(raw)
            buffer = len(self.model.buffers) - 1
        self.tensors.append(dict(name=name, shape=list(shape), type=type, buffer=buffer, quant=quant,
                                 signature=None if signature is None else list(signature),
                                 is_variable=is_variable, sparsity=sparsity))
        return len(self.tensors) - 1

    def constant(self, name: str, array: Any, type: str | None = None, quant: dict | None = None) -> int:
        array = np.asarray(array)
        if type is None:
            array = array.astype(np.float32) if array.dtype == np.float64 else array
            type = _NUMPY_TYPES[array.dtype.name]
        return self.tensor(name, array.shape, type, data=array, quant=quant)

    def input(self, name: str, shape: Any, type: str = "FLOAT32", **kw: Any) -> int:
        index = self.tensor(name, shape, type, **kw)
        self.inputs.append(index)
        return index

    def output(self, index: int) -> int:
        self.outputs.append(index)
        return index

    def op(self, opcode: str, inputs: list[int], outputs: list[int], options_type: str | None = None,
           *, custom_code: str = "", custom_options: bytes | None = None, version: int = 1,
           **options: Any) -> None:
        self.ops.append(dict(opcode=self.model.opcode(opcode, custom_code, version), inputs=inputs,
                             outputs=outputs, options_type=options_type, options=options,
                             custom_options=custom_options))


class TFLiteBuilder(_Graph):
    """The model and its first (main) subgraph."""

    def __init__(self, description: str = "edgerun test model") -> None:
        self.buffers: list[bytes] = [b""]
        self.opcodes: list[tuple[str, str, int]] = []
        self.graphs: list[_Graph] = []
        self.signatures: list[tuple[str, int, dict[str, int], dict[str, int]]] = []
        self.description = description
        self.version = 3
        super().__init__(self, 0, "main")
        self.graphs.append(self)

    def subgraph(self, name: str) -> _Graph:
        graph = _Graph(self, len(self.graphs), name)
        self.graphs.append(graph)
        return graph

    def signature(self, key: str, inputs: dict[str, int], outputs: dict[str, int], subgraph: int = 0) -> None:
        self.signatures.append((key, subgraph, dict(inputs), dict(outputs)))

    def opcode(self, opcode: str, custom_code: str = "", version: int = 1) -> int:
        key = (opcode, custom_code, version)
        if key not in self.opcodes:
            self.opcodes.append(key)
        return self.opcodes.index(key)

    # --- serialization -------------------------------------------------------------

    def build(self, external: bool = False) -> bytes:
        """The model's bytes. `external`: buffer data after the flatbuffer, each 16-byte aligned,
        referenced by offset and size from the start of the file (as writers store models over
        2 GiB)."""
        if not external:
            return self._build({})
        # Offsets depend on the flatbuffer's size: build with placeholders of the same width,
        # then again with the real offsets (the layout does not change).
        placeholders = {i: (2**40, len(raw)) for i, raw in enumerate(self.buffers) if raw}
        size = len(self._build(placeholders))
        placed, position = {}, (size + 15) // 16 * 16
        for i, raw in enumerate(self.buffers):
            if raw:
                placed[i] = (position, len(raw))
                position = (position + len(raw) + 15) // 16 * 16
        data = bytearray(self._build(placed))
        assert len(data) == size
        for i, (offset, _length) in placed.items():
            data.extend(b"\0" * (offset - len(data)))
            data.extend(self.buffers[i])
        return bytes(data)

    def _build(self, external: dict[int, tuple[int, int]]) -> bytes:
        b = flatbuffers.Builder(1024)
        buffers = [self._buffer(b, raw, external.get(i)) for i, raw in enumerate(self.buffers)]
        codes = [self._opcode(b, *code) for code in self.opcodes]
        graphs = [self._graph(b, g) for g in self.graphs]
        signatures = [self._signature(b, *s) for s in self.signatures]
        description = b.CreateString(self.description)
        M = _fb("Model")
        vectors = {"OperatorCodes": codes, "Subgraphs": graphs, "Buffers": buffers,
                   "SignatureDefs": signatures}
        made = {k: self._offsets(b, M, f"Start{k}Vector", v) for k, v in vectors.items()}
        M.Start(b)
        M.AddVersion(b, self.version)
        M.AddDescription(b, description)
        for k, v in made.items():
            getattr(M, f"Add{k}")(b, v)
        b.Finish(M.End(b), b"TFL3")
        return bytes(b.Output())

    @staticmethod
    def _offsets(b: flatbuffers.Builder, module: Any, start: str, offsets: list[int]) -> int:
        getattr(module, start)(b, len(offsets))
        for o in reversed(offsets):
            b.PrependUOffsetTRelative(o)
        return b.EndVector()

    @staticmethod
    def _buffer(b: flatbuffers.Builder, raw: bytes, external: tuple[int, int] | None = None) -> int:
        B = _fb("Buffer")
        data = None
        if external is not None:
            B.Start(b)
            B.AddOffset(b, external[0])
            B.AddSize(b, external[1])
            return B.End(b)
        if raw:
            b.StartVector(1, len(raw), 16)
            b.head -= len(raw)
            b.Bytes[b.head:b.head + len(raw)] = raw
            data = b.EndVector()
        B.Start(b)
        if data is not None:
            B.AddData(b, data)
        return B.End(b)

    @staticmethod
    def _opcode(b: flatbuffers.Builder, opcode: str, custom_code: str, version: int) -> int:
        C = _fb("OperatorCode")
        custom = b.CreateString(custom_code) if custom_code else None
        code = _OPS[opcode]
        C.Start(b)
        C.AddDeprecatedBuiltinCode(b, min(code, 127))
        C.AddBuiltinCode(b, code)
        C.AddVersion(b, version)
        if custom is not None:
            C.AddCustomCode(b, custom)
        return C.End(b)

    def _graph(self, b: flatbuffers.Builder, g: _Graph) -> int:
        tensors = [self._tensor(b, t) for t in g.tensors]
        ops = [self._operator(b, op) for op in g.ops]
        S = _fb("SubGraph")
        name = b.CreateString(g.name)
        tv = self._offsets(b, S, "StartTensorsVector", tensors)
        ov = self._offsets(b, S, "StartOperatorsVector", ops)
        iv = b.CreateNumpyVector(np.array(g.inputs, np.int32))
        outv = b.CreateNumpyVector(np.array(g.outputs, np.int32))
        S.Start(b)
        S.AddTensors(b, tv)
        S.AddInputs(b, iv)
        S.AddOutputs(b, outv)
        S.AddOperators(b, ov)
        S.AddName(b, name)
        return S.End(b)

    @staticmethod
    def _tensor(b: flatbuffers.Builder, t: dict[str, Any]) -> int:
        T = _fb("Tensor")
        name = b.CreateString(t["name"])
        shape = b.CreateNumpyVector(np.array(t["shape"], np.int32))
        signature = None if t["signature"] is None else b.CreateNumpyVector(np.array(t["signature"], np.int32))
        quant = None
        if t["quant"] is not None:
            Q = _fb("QuantizationParameters")
            scale = b.CreateNumpyVector(np.atleast_1d(np.asarray(t["quant"]["scale"], np.float32)))
            zp = b.CreateNumpyVector(np.atleast_1d(np.asarray(t["quant"].get("zero_point", 0), np.int64)))
            Q.Start(b)
            Q.AddScale(b, scale)
            Q.AddZeroPoint(b, zp)
            Q.AddQuantizedDimension(b, int(t["quant"].get("axis", 0)))
            quant = Q.End(b)
        sparsity = None if t.get("sparsity") is None else TFLiteBuilder._sparsity(b, t["sparsity"])
        T.Start(b)
        T.AddShape(b, shape)
        T.AddType(b, _TYPES[t["type"]])
        T.AddBuffer(b, t["buffer"])
        T.AddName(b, name)
        if quant is not None:
            T.AddQuantization(b, quant)
        if signature is not None:
            T.AddShapeSignature(b, signature)
        T.AddIsVariable(b, t["is_variable"])
        if sparsity is not None:
            T.AddSparsity(b, sparsity)
        return T.End(b)

    @staticmethod
    def _sparsity(b: flatbuffers.Builder, sparsity: dict[str, Any]) -> int:
        S, D = _fb("SparsityParameters"), _fb("DimensionMetadata")
        members = {"int32": "Int32Vector", "uint16": "Uint16Vector", "uint8": "Uint8Vector"}

        def index_vector(values: Any) -> tuple[int, int]:
            values = np.asarray(values)
            table = members[values.dtype.name]
            vector = b.CreateNumpyVector(values)
            module = _fb(table)
            module.Start(b)
            module.AddValues(b, vector)
            return layout.UNIONS["SparseIndexVector"].index(table) + 1, module.End(b)

        dims = []
        for meta in sparsity["dim_metadata"]:
            segments = indices = None
            if "segments" in meta:
                segments, indices = index_vector(meta["segments"]), index_vector(meta["indices"])
            D.Start(b)
            D.AddFormat(b, meta["format"])
            D.AddDenseSize(b, meta.get("dense_size", 0))
            if segments is not None:
                D.AddArraySegmentsType(b, segments[0])
                D.AddArraySegments(b, segments[1])
                D.AddArrayIndicesType(b, indices[0])
                D.AddArrayIndices(b, indices[1])
            dims.append(D.End(b))
        order = b.CreateNumpyVector(np.array(sparsity["traversal_order"], np.int32))
        block_map = None
        if sparsity.get("block_map") is not None:
            block_map = b.CreateNumpyVector(np.array(sparsity["block_map"], np.int32))
        dim_vector = TFLiteBuilder._offsets(b, S, "StartDimMetadataVector", dims)
        S.Start(b)
        S.AddTraversalOrder(b, order)
        if block_map is not None:
            S.AddBlockMap(b, block_map)
        S.AddDimMetadata(b, dim_vector)
        return S.End(b)

    @staticmethod
    def _options(b: flatbuffers.Builder, table: str, options: dict[str, Any]) -> int:
        module = _fb(table)
        kinds = {f: k for f, k, *_ in layout.TABLES[table]}
        vectors = {}
        for field, value in options.items():
            if field not in kinds:
                raise KeyError(f"{table} has no field {field!r}")
            if kinds[field].startswith("["):
                vectors[field] = b.CreateNumpyVector(np.array(value, _VECTOR_DTYPES[kinds[field]]))
        module.Start(b)
        for field, value in options.items():
            getattr(module, f"Add{_camel(field)}")(b, vectors.get(field, value))
        return module.End(b)

    def _operator(self, b: flatbuffers.Builder, op: dict[str, Any]) -> int:
        Op = _fb("Operator")
        options = None
        if op["options_type"] is not None:
            options = self._options(b, op["options_type"], op["options"])
        custom = None
        if op["custom_options"] is not None:
            custom = b.CreateNumpyVector(np.frombuffer(op["custom_options"], np.uint8))
        iv = b.CreateNumpyVector(np.array(op["inputs"], np.int32))
        ov = b.CreateNumpyVector(np.array(op["outputs"], np.int32))
        Op.Start(b)
        Op.AddOpcodeIndex(b, op["opcode"])
        Op.AddInputs(b, iv)
        Op.AddOutputs(b, ov)
        if options is not None:
            Op.AddBuiltinOptionsType(b, layout.UNIONS["BuiltinOptions"].index(op["options_type"]) + 1)
            Op.AddBuiltinOptions(b, options)
        if custom is not None:
            Op.AddCustomOptions(b, custom)
        return Op.End(b)

    @staticmethod
    def _signature(b: flatbuffers.Builder, key: str, subgraph: int, inputs: dict, outputs: dict) -> int:
        M, D = _fb("TensorMap"), _fb("SignatureDef")

        def maps(entries: dict[str, int]) -> list[int]:
            made = []
            for name, index in entries.items():
                n = b.CreateString(name)
                M.Start(b)
                M.AddName(b, n)
                M.AddTensorIndex(b, index)
                made.append(M.End(b))
            return made

        iv = TFLiteBuilder._offsets(b, D, "StartInputsVector", maps(inputs))
        ov = TFLiteBuilder._offsets(b, D, "StartOutputsVector", maps(outputs))
        k = b.CreateString(key)
        D.Start(b)
        D.AddInputs(b, iv)
        D.AddOutputs(b, ov)
        D.AddSignatureKey(b, k)
        D.AddSubgraphIndex(b, subgraph)
        return D.End(b)


def litert_run(model: bytes, inputs: list[np.ndarray], reference: bool = False,
               num_threads: int = 1) -> list[np.ndarray]:
    """LiteRT's outputs for `inputs` (in the model's input order). `reference`: TFLite's
    reference kernels (BUILTIN_REF: the integer arithmetic the spec describes) instead of
    the default optimized kernels with XNNPACK."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.BUILTIN_REF if reference else OpResolverType.AUTO
    it = Interpreter(model_content=model, experimental_op_resolver_type=resolver, num_threads=num_threads)
    for detail, value in zip(it.get_input_details(), inputs, strict=True):
        if tuple(detail["shape"]) != value.shape:
            it.resize_tensor_input(detail["index"], value.shape)
    it.allocate_tensors()
    for detail, value in zip(it.get_input_details(), inputs, strict=True):
        it.set_tensor(detail["index"], value)
    it.invoke()
    return [it.get_tensor(d["index"]) for d in it.get_output_details()]
