"""ONNX import: an `onnx.ModelProto` (or a file / bytes holding one) -> `runtime.graph.Graph`.

    graph = from_onnx("mlp.onnx")

The conversion is structural: each ONNX node becomes one `Node` with the same
op type, domain and opset version (ONNX semantics, NCHW), initializers and
`Constant` nodes become constant `Value`s, and graph inputs/outputs keep their
ONNX names so the default signature maps them one to one. Sequence and optional
types (of tensors, and optionals of sequences) become the `kind` of their Value, and so does a
sequence of maps (int64 or string keys; ZipMap's output), which may be a graph output but no
graph input. Ops that no runtime kernel implements are refused up front, all of them in one error;
the training-preview op Gradient needs none: it is rewritten into ordinary ops (converters.gradient_op).

`onnx` is imported inside the functions, so importing this module is cheap and
works without it.
"""

from __future__ import annotations

import os
from collections import ChainMap
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from edgerun.converters.gradient_op import GRADIENT_OP, expand_gradients
from edgerun.runtime import dtypes
from edgerun.runtime.errors import ConversionError
from edgerun.runtime.extras import require
from edgerun.runtime.graph import Graph, Node, Value, ValueKind

if TYPE_CHECKING:
    import onnx

_ONNX_DOMAINS = ("", "ai.onnx")
_CONSTANT_ATTRS = ("value", "value_float", "value_floats", "value_int", "value_ints")
# Ops edgerun refuses with a reason and a way out, rather than as merely unsupported
# ("domain:op" -> why and what to do instead). None at present.
_REFUSED_OPS: dict[str, str] = {}
# Ops the importer rewrites into ordinary ops ("domain:op"; see converters.gradient_op): they need no kernel.
REWRITTEN_OPS = frozenset({GRADIENT_OP})


def from_onnx(
    model: onnx.ModelProto | str | os.PathLike[str] | bytes, check: bool = True, optimize: bool = True
) -> Graph:
    """Convert an ONNX model to an edgerun `Graph`.

    `model` is a ModelProto, a path to an .onnx file (external data is read from
    beside it) or the serialized bytes. Returns a graph whose `serving_default`
    signature maps the ONNX input/output names to values, with ONNX/producer
    metadata copied to `graph.metadata`.

    `check` runs `onnx.checker` first: invalid ONNX is refused with the checker's
    message (graph inputs/outputs without a declared shape are accepted, as
    onnxruntime accepts them). `optimize` runs the graph optimizer
    (`converters.optimize`: constant and shape folding, BatchNormalization folding,
    activation fusion, dead-code elimination); pass False for the graph exactly
    as imported (the training converter does: it differentiates the original ops).

    Raises ConversionError when the model cannot be read or parsed, uses ops no
    kernel implements (one error listing every such op with its node names),
    lacks an opset for a node's domain, or holds types/attributes edgerun cannot
    represent.
    """
    proto = _load(model)
    opsets = _opsets(proto)
    _check_supported(proto.graph, opsets)  # first: every unsupported op in one error
    graph = _GraphConverter(opsets).convert(proto.graph, ChainMap(), top_level=True)
    if check:
        _check_valid(proto, model)
    graph.metadata.update(_metadata(proto))
    if optimize:
        from edgerun.converters.optimize import optimize as run_optimizer

        run_optimizer(graph)
    return graph


def _load(model: Any) -> onnx.ModelProto:
    """Parse `model` into a ModelProto; ConversionError for unreadable or non-ONNX input,
    MissingExtra without onnx (the `onnx` extra)."""
    from google.protobuf.message import DecodeError

    onnx = require("onnx", "onnx", "converting an ONNX model")

    if isinstance(model, onnx.ModelProto):
        proto = model
    elif isinstance(model, (bytes, bytearray, memoryview)):
        try:
            proto = onnx.load_from_string(bytes(model))
        except (DecodeError, ValueError) as exc:
            raise ConversionError(f"cannot parse ONNX model from bytes: {exc}") from None
    elif isinstance(model, (str, os.PathLike)):
        try:
            proto = onnx.load(os.fspath(model))
        except OSError as exc:
            raise ConversionError(f"cannot read ONNX model {os.fspath(model)!r}: "
                                  f"{exc.strerror or exc}") from None
        except (DecodeError, ValueError, onnx.checker.ValidationError) as exc:
            raise ConversionError(f"cannot parse ONNX model {os.fspath(model)!r}: {exc}") from None
    else:
        raise ConversionError(f"expected an onnx.ModelProto, a path or bytes, "
                              f"got {type(model).__name__}")
    if not proto.HasField("graph") or not proto.graph.output:
        raise ConversionError("not an ONNX model: it has no graph (or a graph without outputs)")
    return proto


def _check_valid(proto: onnx.ModelProto, source: Any) -> None:
    """ConversionError carrying onnx.checker's message when the model is not valid ONNX.

    One rule is relaxed, as onnxruntime relaxes it: graph inputs and outputs may
    declare a tensor type without a shape (edgerun infers shapes itself). Models
    over protobuf's 2 GiB limit are checked from their path.
    """
    import onnx

    def check(model: Any) -> None:
        if not isinstance(model, onnx.ModelProto) or model.ByteSize() < (1 << 31) - 1:
            onnx.checker.check_model(model)
        elif isinstance(source, (str, os.PathLike)):
            onnx.checker.check_model(os.fspath(source))

    try:
        check(proto)
    except onnx.checker.ValidationError as exc:
        message = str(exc)
        if "Field 'shape' of 'type' is required" in message:
            relaxed = onnx.ModelProto()
            relaxed.CopyFrom(proto)
            for info in (*relaxed.graph.input, *relaxed.graph.output):
                if info.type.HasField("tensor_type") and not info.type.tensor_type.HasField("shape"):
                    info.type.tensor_type.shape.SetInParent()
            try:
                check(relaxed)
                return
            except onnx.checker.ValidationError as again:
                message = str(again)
        raise ConversionError(f"invalid ONNX model (onnx.checker): {message}") from None


def _opsets(proto: onnx.ModelProto) -> dict[str, int]:
    """Opset version per domain, with 'ai.onnx' folded into ''."""
    return {_domain(o.domain): int(o.version) for o in proto.opset_import}


def _domain(domain: str) -> str:
    return "" if domain in _ONNX_DOMAINS else domain


def _metadata(proto: onnx.ModelProto) -> dict[str, str]:
    """Producer, doc string, versions and metadata_props of the model, as str -> str."""
    meta = {
        "producer": proto.producer_name,
        "producer_version": proto.producer_version,
        "onnx.doc_string": proto.doc_string,
        "onnx.domain": proto.domain,
        "onnx.model_version": str(proto.model_version) if proto.model_version else "",
        "onnx.ir_version": str(proto.ir_version),
        "onnx.opset_import": ",".join(
            f"{o.domain or 'ai.onnx'}:{o.version}" for o in proto.opset_import),
    }
    meta = {key: value for key, value in meta.items() if value}
    meta.update({p.key: p.value for p in proto.metadata_props})
    return meta


def _node_names(graph: onnx.GraphProto) -> list[str]:
    """One unique name per node: its own, or '{op_type}_{i}' when empty or already taken."""
    names: list[str] = []
    taken: set[str] = set()
    for i, node in enumerate(graph.node):
        name = node.name
        if not name or name in taken:
            base = name = f"{node.op_type}_{i}"
            k = 0
            while name in taken:
                k += 1
                name = f"{base}_{k}"
        taken.add(name)
        names.append(name)
    return names


def _check_supported(graph: onnx.GraphProto, opsets: dict[str, int]) -> None:
    """ConversionError listing every op (with node names) that no kernel implements at
    the model's opset version.

    Nested graphs (control-flow bodies) are checked too; `Constant` nodes are
    folded into constants, so they need no kernel.
    """
    import edgerun.runtime.kernels  # noqa: F401  (registers the kernels)
    from edgerun.runtime.errors import UnsupportedOpError
    from edgerun.runtime.kernels import registry

    missing: dict[str, list[str]] = {}
    too_old: dict[str, list[str]] = {}
    refused: dict[str, list[str]] = {}
    for node, name in _walk_nodes(graph):
        domain = _domain(node.domain)
        if node.op_type == "Constant" and domain == "":
            continue
        op = node.op_type if not domain else f"{domain}:{node.op_type}"
        if op in REWRITTEN_OPS:
            continue
        if op in _REFUSED_OPS:
            refused.setdefault(op, []).append(name)
        elif not registry.is_supported(domain, node.op_type):
            missing.setdefault(op, []).append(name)
        elif domain in opsets:
            try:
                registry.resolve(domain, node.op_type, opsets[domain], name)
            except UnsupportedOpError:
                too_old.setdefault(f"{op} version {opsets[domain]}", []).append(name)
    if missing or too_old or refused:
        problems = [f"{op} ({', '.join(n)}) is not supported: {_REFUSED_OPS[op]}" for op, n in refused.items()]
        if missing:
            problems.append("unsupported ops: " + ", ".join(f"{op} ({', '.join(n)})" for op, n in missing.items()))
        if too_old:
            problems.append("unsupported op versions: " + ", ".join(
                f"{op} ({', '.join(n)})" for op, n in too_old.items()))
        supported = f"; supported: {', '.join(registry.supported_ops())}" if missing or too_old else ""
        raise ConversionError(f"{'; '.join(problems)}{supported}")


def _walk_nodes(graph: onnx.GraphProto) -> list[tuple[onnx.NodeProto, str]]:
    """(node, name) for every node of `graph` and of the graphs nested in its attributes."""
    found = []
    for node, name in zip(graph.node, _node_names(graph), strict=True):
        found.append((node, name))
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                found.extend(_walk_nodes(sub))
    return found


class _GraphConverter:
    """Converts GraphProtos (and the graphs nested in their attributes) under one opset map."""

    def __init__(self, opsets: dict[str, int]) -> None:
        self.opsets = opsets
        self.local_values: dict[int, set[int]] = {}  # id(graph) -> ids of the Values it defines

    def convert(self, proto: onnx.GraphProto, outer: ChainMap, top_level: bool = False) -> Graph:
        """A Graph for `proto`. Names it does not define resolve in `outer` (the enclosing
        graphs' values), so nested bodies share outer-scope Values by object.
        ConversionError for dangling or duplicate names and unrepresentable types."""
        scope: ChainMap = outer.new_child()
        inputs = _define_inputs(proto, scope, required=top_level)
        hints = {info.name: info for info in proto.value_info}
        nodes = []
        for node, name in zip(proto.node, _node_names(proto), strict=True):
            converted = self._node(node, name, scope)
            if converted is not None:
                nodes.append(converted)
                _apply_hints(converted.outputs, hints)
        outputs = [self._output(info, scope) for info in proto.output]
        nodes = expand_gradients(nodes, scope, self.opsets)
        graph = Graph(proto.name or "main", nodes, inputs, outputs)
        self.local_values[id(graph)] = {id(v) for v in scope.maps[0].values()}
        return graph

    def _node(self, proto: onnx.NodeProto, name: str, scope: ChainMap) -> Node | None:
        """The Node for `proto`, or None for a `Constant` (whose output joins `scope`)."""
        domain = _domain(proto.domain)
        where = f"node {name!r} ({proto.op_type})"
        if domain not in self.opsets:
            raise ConversionError(f"{where}: the model imports no opset for domain "
                                  f"{domain or 'ai.onnx'!r}")
        if proto.op_type == "Constant" and domain == "":
            _define(scope, _constant_value(proto, where), where)
            return None
        inputs = [_lookup(scope, n, where) if n else None for n in proto.input]
        attrs = {a.name: self._attribute(a, f"{where} attribute {a.name!r}", scope)
                 for a in proto.attribute}
        outputs: list[Value | None] = []
        for out in proto.output:
            value = Value(out, None, None) if out else None
            if value is not None:
                _define(scope, value, where)
            outputs.append(value)
        node = Node(proto.op_type, inputs, outputs, attrs, name, domain, self.opsets[domain])
        self._capture_outer_values(node)
        return node

    def _capture_outer_values(self, node: Node) -> None:
        """Make a control-flow node's outer-scope references explicit.

        ONNX bodies (If branches, Loop/Scan bodies) may read any value of the
        enclosing graphs by name. In .erm every subgraph is self-contained, so
        each outer value a body reads becomes a *capture*: appended to the node's
        inputs and, in the same order, to every body's inputs (after the formal
        ones), with the count in the node's `captures` attribute. Bodies nested
        deeper pass their captures up the same way, level by level.
        """
        graphs = [g for v in node.attrs.values() for g in (v if isinstance(v, list) else [v])
                  if isinstance(g, Graph)]
        if not graphs:
            return
        captured: dict[int, Value] = {}
        for graph in graphs:
            for value in _free_values(graph, self.local_values[id(graph)]):
                captured.setdefault(id(value), value)
        outer = list(captured.values())
        for graph in graphs:
            local = {id(v): Value(v.name, v.dtype, v.shape, kind=v.kind, key_dtype=v.key_dtype) for v in outer}
            for inner in graph.nodes:
                inner.inputs = [local.get(id(v), v) if v is not None else None for v in inner.inputs]
            graph.outputs = [local.get(id(v), v) for v in graph.outputs]
            graph.inputs = [*graph.inputs, *(local[id(v)] for v in outer)]
        node.inputs = [*node.inputs, *outer]
        node.attrs["captures"] = len(outer)

    def _attribute(self, attr: onnx.AttributeProto, where: str, scope: ChainMap) -> Any:
        """The Python value of an attribute; ConversionError for kinds edgerun cannot hold."""
        import onnx

        kind = onnx.AttributeProto
        if attr.ref_attr_name:
            raise ConversionError(f"{where}: references function attribute "
                                  f"{attr.ref_attr_name!r}; functions are not supported")
        readers: dict[int, Callable[[], Any]] = {
            kind.FLOAT: lambda: float(attr.f),
            kind.INT: lambda: int(attr.i),
            kind.STRING: lambda: _decode(attr.s, where),
            kind.FLOATS: lambda: [float(f) for f in attr.floats],
            kind.INTS: lambda: [int(i) for i in attr.ints],
            kind.STRINGS: lambda: [_decode(s, where) for s in attr.strings],
            kind.TENSOR: lambda: _to_array(attr.t, where),
            kind.TENSORS: lambda: [_to_array(t, where) for t in attr.tensors],
            kind.GRAPH: lambda: self.convert(attr.g, scope),
            kind.GRAPHS: lambda: [self.convert(g, scope) for g in attr.graphs],
            kind.TYPE_PROTO: lambda: _type_string(attr.tp, where),
        }
        if attr.type not in readers:
            raise ConversionError(f"{where}: attribute type "
                                  f"{kind.AttributeType.Name(attr.type)} is not supported")
        return readers[attr.type]()

    def _output(self, info: onnx.ValueInfoProto, scope: ChainMap) -> Value:
        """The Value behind a graph output, given the output's declared type if it had none."""
        where = f"graph output {info.name!r}"
        value = _lookup(scope, info.name, where)
        declared = _value_from_info(info, where, required=False)
        if value.dtype is None:
            value.dtype = declared.dtype
        if value.shape is None:
            value.shape = declared.shape
        if value.kind is ValueKind.TENSOR:
            value.kind, value.key_dtype = declared.kind, declared.key_dtype
        return value


def _free_values(graph: Graph, local: set[int]) -> list[Value]:
    """The values `graph` reads (node inputs and graph outputs) that it does not define."""
    free: dict[int, Value] = {}
    produced = {id(v) for node in graph.nodes for v in node.outputs if v is not None}
    for value in [v for node in graph.nodes for v in node.inputs] + list(graph.outputs):
        if value is not None and id(value) not in local and id(value) not in produced:
            free.setdefault(id(value), value)
    return list(free.values())


def _define_inputs(proto: onnx.GraphProto, scope: ChainMap, required: bool) -> list[Value]:
    """Define the initializers (as constants) and the graph inputs in `scope`; return the
    inputs that are not initializers. `required`: inputs must declare a tensor type."""
    if proto.sparse_initializer:
        raise ConversionError(f"graph {proto.name!r}: sparse initializers are not supported")
    for init in proto.initializer:
        array = _to_array(init, f"initializer {init.name!r}")
        _define(scope, Value(init.name, array.dtype, array.shape, data=array), "initializer")
    inputs = []
    for info in proto.input:
        if info.name in scope.maps[0]:
            continue  # older exporters list initializers as inputs too: they are constants
        value = _value_from_info(info, f"graph input {info.name!r}", required=required)
        if value.kind is ValueKind.SEQUENCE_MAP:
            raise ConversionError(f"graph input {info.name!r}: a sequence of maps is supported as a graph "
                                  "output only (ZipMap's), not as an input")
        _define(scope, value, "graph input")
        inputs.append(value)
    return inputs


def _define(scope: ChainMap, value: Value, where: str) -> None:
    """Add `value` to the innermost scope; ConversionError if its name is already defined there."""
    if value.name in scope.maps[0]:
        raise ConversionError(f"{where}: name {value.name!r} is defined twice")
    scope[value.name] = value


def _lookup(scope: ChainMap, name: str, where: str) -> Value:
    if name not in scope:
        raise ConversionError(f"{where}: {name!r} is not a graph input, initializer or output "
                              f"of an earlier node (nodes must be in topological order)")
    return scope[name]


def _decode(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConversionError(f"{where}: string is not valid UTF-8") from None


def _numpy_dtype(elem_type: int, where: str) -> np.dtype:
    """numpy dtype for an ONNX element type that .erm can store; ConversionError otherwise."""
    import onnx

    try:
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, TypeError, ValueError):
        dtype = None
    if dtype is None or not dtypes.is_supported(dtype):
        name = onnx.TensorProto.DataType.Name(elem_type) if elem_type in \
            onnx.TensorProto.DataType.values() else f"code {elem_type}"
        raise ConversionError(f"{where}: element type {name} is not supported")
    return dtype


def _to_array(tensor: onnx.TensorProto, where: str) -> np.ndarray:
    """A native-order, contiguous numpy copy of a TensorProto; ConversionError if unsupported."""
    from onnx import numpy_helper

    _numpy_dtype(tensor.data_type, where)
    try:
        array = numpy_helper.to_array(tensor)
    except (ValueError, TypeError, OSError) as exc:
        raise ConversionError(f"{where}: cannot read tensor data: {exc}") from None
    return np.require(array, array.dtype.newbyteorder("="), "C")  # keeps 0-d scalars 0-d


def _value_from_info(info: onnx.ValueInfoProto, where: str, required: bool) -> Value:
    """A Value with kind, dtype and shape from a ValueInfoProto: dim_value kept, dim_param
    or missing dims -> -1, no shape -> None. A sequence of tensors, an optional tensor or an
    optional sequence gets its kind and its elements' dtype and shape; a sequence of maps its
    kind, key dtype and the values' dtype. With `required`, a missing type or element type is
    a ConversionError; otherwise it gives dtype None. Other types (a map outside a sequence,
    sequences of sequences) always fail."""
    if info.type.WhichOneof("value") is None and not required:
        return Value(info.name, None, None)
    kind, tensor_type, key_dtype = _tensor_of(info.type, where)
    if tensor_type.elem_type == 0:
        if required:
            raise ConversionError(f"{where}: element type is undefined")
        dtype = None
    else:
        dtype = _numpy_dtype(tensor_type.elem_type, where)
    shape = None
    if tensor_type.HasField("shape"):
        shape = tuple(d.dim_value if d.HasField("dim_value") else -1
                      for d in tensor_type.shape.dim)
    return Value(info.name, dtype, shape, kind=kind, key_dtype=key_dtype)


def _tensor_of(
    type_proto: onnx.TypeProto, where: str
) -> tuple[ValueKind, onnx.TypeProto.Tensor, np.dtype | None]:
    """The kind a TypeProto describes, its (element, or map value) tensor type and, for a
    sequence of maps, the key dtype (else None); ConversionError for types a Value cannot hold."""
    kinds = {"tensor_type": ValueKind.TENSOR, "sequence_type": ValueKind.SEQUENCE}
    kind = type_proto.WhichOneof("value")
    inner = type_proto
    if kind == "optional_type":
        inner = type_proto.optional_type.elem_type
        kind = inner.WhichOneof("value")
        kinds = {"tensor_type": ValueKind.OPTIONAL_TENSOR, "sequence_type": ValueKind.OPTIONAL_SEQUENCE}
    if kind == "sequence_type":
        inner = inner.sequence_type.elem_type
        if inner.WhichOneof("value") == "map_type" and kinds[kind] is ValueKind.SEQUENCE:
            return _map_of(inner.map_type, where)
        if inner.WhichOneof("value") != "tensor_type":
            kind = f"sequence of {inner.WhichOneof('value') or 'no type'}"
    if kind not in kinds:
        raise ConversionError(f"{where}: expected a tensor type, a sequence of tensors or maps, or an optional "
                              f"of a tensor or a sequence, got {kind or 'no type'}")
    return kinds[kind], inner.tensor_type, None


def _map_of(map_type: onnx.TypeProto.Map, where: str) -> tuple[ValueKind, onnx.TypeProto.Tensor, np.dtype]:
    """(SEQUENCE_MAP, the map values' tensor type, the key dtype) of a sequence's map element
    type: keys int64 or string, values tensors; ConversionError for anything else."""
    import onnx

    keys = {onnx.TensorProto.INT64: np.dtype(np.int64), onnx.TensorProto.STRING: dtypes.STRING}
    if map_type.key_type not in keys:
        name = onnx.TensorProto.DataType.Name(map_type.key_type) if map_type.key_type in \
            onnx.TensorProto.DataType.values() else f"code {map_type.key_type}"
        raise ConversionError(f"{where}: a sequence of maps with {name} keys is not supported (INT64 or STRING)")
    if map_type.value_type.WhichOneof("value") != "tensor_type":
        raise ConversionError(f"{where}: a sequence of maps whose values are "
                              f"{map_type.value_type.WhichOneof('value') or 'of no type'} is not supported "
                              "(tensor elements only)")
    return ValueKind.SEQUENCE_MAP, map_type.value_type.tensor_type, keys[map_type.key_type]


def _type_string(type_proto: onnx.TypeProto, where: str) -> str:
    """A type attribute (Optional's `type`: a tensor or a sequence) in ONNX's notation with
    TensorProto element names: 'tensor(FLOAT)', 'seq(tensor(INT64))'; ConversionError for
    other types."""
    import onnx

    kind, tensor_type, _ = _tensor_of(type_proto, where)
    if kind not in (ValueKind.TENSOR, ValueKind.SEQUENCE):
        got = "a sequence of maps" if kind is ValueKind.SEQUENCE_MAP else "an optional"
        raise ConversionError(f"{where}: expected a tensor or a sequence type, got {got}")
    _numpy_dtype(tensor_type.elem_type, where)
    element = f"tensor({onnx.TensorProto.DataType.Name(tensor_type.elem_type)})"
    return element if kind is ValueKind.TENSOR else f"seq({element})"


def _apply_hints(outputs: list[Value | None], hints: dict[str, onnx.ValueInfoProto]) -> None:
    """Give node outputs the dtype/shape their value_info declares (hints, no failures)."""
    for value in outputs:
        if value is None or value.name not in hints:
            continue
        try:
            hinted = _value_from_info(hints[value.name], value.name, required=False)
        except ConversionError:
            continue
        value.dtype, value.shape, value.kind, value.key_dtype = hinted.dtype, hinted.shape, hinted.kind, \
            hinted.key_dtype


def _constant_value(node: onnx.NodeProto, where: str) -> Value:
    """The constant Value a `Constant` node defines; ConversionError for other attributes."""
    if len(node.output) != 1 or len(node.attribute) != 1:
        raise ConversionError(f"{where}: expected one output and one attribute")
    attr = node.attribute[0]
    if attr.name not in _CONSTANT_ATTRS:
        raise ConversionError(f"{where}: Constant attribute {attr.name!r} is not supported "
                              f"(supported: {', '.join(_CONSTANT_ATTRS)})")
    array = {
        "value": lambda: _to_array(attr.t, where),
        "value_float": lambda: np.array(attr.f, dtype=np.float32),
        "value_floats": lambda: np.array(attr.floats, dtype=np.float32),
        "value_int": lambda: np.array(attr.i, dtype=np.int64),
        "value_ints": lambda: np.array(attr.ints, dtype=np.int64),
    }[attr.name]()
    return Value(node.output[0], array.dtype, array.shape, data=array)
