"""TFLite import: a .tflite file (path or bytes) -> an edgerun `Graph`.

    graph = from_tflite("model.tflite")
    save_model(graph, "model.erm")      # or Interpreter("model.tflite") directly

The file is read and checked first (converters.tflite.reader). Then every operator of
every subgraph is looked up in the converter registry (converters.tflite.registry): an
operator edgerun cannot convert is reported together with all the others in one
ConversionError that lists each with its subgraph and operator index, as ONNX import does.
Each operator becomes ONNX-semantics nodes (NCHW spatial ops between transposes that the
optimizer's sink_transposes pass cancels), quantized integer operators become integer nodes
with TFLite's arithmetic (converters.tflite.ops.quantized).

Inputs and outputs keep their TFLite tensor names; dimensions the shape signature marks -1
stay dynamic. SignatureDefs become named signatures with their own input and output names
(a signature over another subgraph brings that subgraph's nodes into the same graph); the
main subgraph is always also reachable as `serving_default`.

Converting an untrusted file takes work and memory in proportion to the file: control-flow
subgraphs nest at most MAX_NESTING deep, and all the operator conversions together may not
pass WORK_FACTOR times the model's operators (plus WORK_SLACK). A subgraph becomes a graph
of its own (or is inlined) for every operator that uses it, so a chain of subgraphs that
each use the next twice would double the work per level; the allowance refuses it. (The
copies are not shared: graph passes that walk nested graphs once per use would repeat
that doubling on shared ones.) Constant tensors that read the same buffer with the same type,
shape and quantization become one constant, and the constants the graph holds (sparse ones
made dense, copies in nested graphs) may not add up to more than CONSTANT_FACTOR times the
file size (plus CONSTANT_SLACK bytes): a small file cannot make a huge graph to save. A
converter that fails other than with a ConversionError or ModelError (a bug, or input it did
not foresee) is reported as a ConversionError naming the operator.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from edgerun.converters.tflite.context import INTEGER_TYPES, OpContext
from edgerun.converters.tflite.reader import TFLiteModel, TFLiteOperator, TFLiteSubGraph, read_tflite, short
from edgerun.converters.tflite.registry import lookup
from edgerun.runtime import dtypes
from edgerun.runtime.errors import ConversionError, EdgerunError, ModelError
from edgerun.runtime.graph import Graph, GraphBuilder, Quantization, Signature, Value

DEFAULT_SIGNATURE = "serving_default"
MAX_NESTING = 16   # subgraphs inside subgraphs (IF branches, loop bodies, inlined conditions)
WORK_FACTOR = 8    # operator conversions allowed per operator of the model...
WORK_SLACK = 4096  # ...plus this many
CONSTANT_FACTOR = 64  # bytes of constants (densified, copied) allowed per byte of the file...
CONSTANT_SLACK = 16 << 20  # ...plus this many
MAX_KINDS, MAX_PLACES = 20, 8  # what the unconvertible-operators error lists
# Operators that handle quantized tensors themselves (they convert between the domains).
_DOMAIN_CHANGERS = ("QUANTIZE", "DEQUANTIZE")


def from_tflite(model: str | os.PathLike[str] | bytes | TFLiteModel, optimize: bool = True) -> Graph:
    """Convert a TFLite model to an edgerun `Graph`.

    `optimize` runs the graph optimizer (transpose sinking, constant folding, fusion,
    dead-code elimination); pass False for the graph exactly as converted.

    Raises ModelError for a malformed file (see converters.tflite.reader), ConversionError
    when operators cannot be converted (one error listing all of them) or an operator's
    inputs are not what edgerun can convert (for example a filter computed at run time),
    OSError when the path cannot be read.
    """
    if not isinstance(model, TFLiteModel):
        model = read_tflite(model)
    _check_supported(model)
    graph = _ModelConverter(model).convert()
    if optimize:
        from edgerun.converters.optimize import optimize as run_optimizer

        run_optimizer(graph)
    return graph


def _check_supported(model: TFLiteModel) -> None:
    """One ConversionError naming every operator kind edgerun cannot convert, where it is
    used (the first MAX_PLACES places of each, MAX_KINDS kinds; long custom codes cut), so
    that the message stays small however many operators a file repeats."""
    missing: dict[str, list[str]] = {}
    count = 0
    for graph in model.subgraphs:
        for op in graph.operators:
            quantized = _is_quantized(graph, op)
            if lookup(op.opcode, op.custom_code, quantized) is None:
                kind = "custom op" if op.opcode == "CUSTOM" else "builtin"
                suffix = " on quantized tensors" if quantized else ""
                places = missing.setdefault(f"{kind} {short(op.name)}{suffix}", [])
                places.append(f"subgraph {graph.index}, operator {op.index}")
                count += 1
    if missing:
        listed = []
        for what, places in list(missing.items())[:MAX_KINDS]:
            more = f"; {len(places) - MAX_PLACES} more" if len(places) > MAX_PLACES else ""
            listed.append(f"{what} ({'; '.join(places[:MAX_PLACES])}{more})")
        if len(missing) > MAX_KINDS:
            listed.append(f"{len(missing) - MAX_KINDS} more kinds")
        raise ConversionError(
            f"the model uses {count} operator(s) edgerun cannot convert: " + "; ".join(listed)
            + ". Custom ops can be taught with edgerun.converters.tflite.register_custom_op.")


def _is_quantized(graph: TFLiteSubGraph, op: TFLiteOperator) -> bool:
    if op.opcode in _DOMAIN_CHANGERS:
        return False
    for index in (*op.inputs, *op.outputs):
        if index == -1:
            continue
        tensor = graph.tensors[index]
        if tensor.type in INTEGER_TYPES and tensor.quantization is not None and tensor.data is None:
            return True
    return False


class _ModelConverter:
    def __init__(self, model: TFLiteModel) -> None:
        self.model = model
        self.builder = GraphBuilder("main")
        self.converted: dict[int, SubgraphConverter] = {}
        self.constants: dict[tuple, Value] = {}  # (builder, data, type, quantization) -> its constant
        self.work = 0
        self.max_work = WORK_FACTOR * sum(len(g.operators) for g in model.subgraphs) + WORK_SLACK
        self.constant_bytes = 0
        size = model.size or sum(t.data.nbytes for g in model.subgraphs for t in g.tensors if t.data is not None)
        self.max_constant_bytes = CONSTANT_FACTOR * size + CONSTANT_SLACK  # (size: a model made, not read)

    def count(self, ctx: OpContext) -> None:
        """Count one operator conversion against the model's allowance."""
        self.work += 1
        if self.work > self.max_work:
            raise ctx.fail(f"converting the model takes more than {self.max_work:,} operator conversions "
                           f"({WORK_FACTOR} per operator of the model plus {WORK_SLACK}): its subgraphs are "
                           "used as bodies or conditions too many times")

    def dense(self, tensor: Any) -> np.ndarray:
        """Sparse constant `tensor` made dense, within what the constant allowance has left."""
        from edgerun.converters.tflite.sparsity import densify

        return densify(tensor, self.max_constant_bytes - self.constant_bytes)

    def spend(self, nbytes: int, what: str) -> None:
        """Count a new constant of `nbytes` against the model's allowance."""
        self.constant_bytes += nbytes
        if self.constant_bytes > self.max_constant_bytes:
            raise ModelError(f"{what}: the converted graph's constants would take more than "
                             f"{self.max_constant_bytes:,} bytes ({CONSTANT_FACTOR} per byte of the "
                             f"{self.model.size:,}-byte file plus {CONSTANT_SLACK:,})")

    def convert(self) -> Graph:
        main = self.subgraph(0)
        b = self.builder
        b.name = self.model.subgraphs[0].name or "main"
        for v in main.inputs():
            b._inputs.append(v)
        for v in main.outputs():
            b._outputs.append(v)
        signatures: dict[str, Signature] = {}
        inputs, outputs = {id(v) for v in b._inputs}, {id(v) for v in b._outputs}
        for sig in self.model.signatures:
            conv = self.subgraph(sig.subgraph)
            if sig.subgraph != 0 and not any(id(v) in inputs for v in conv.inputs()):
                # Another subgraph's values live in the same graph: its inputs and outputs
                # join the graph's (the default signature keeps the main subgraph's only).
                b._inputs.extend(conv.inputs())
                inputs.update(id(v) for v in conv.inputs())
                for v in conv.outputs():
                    if id(v) not in outputs:
                        b._outputs.append(v)
                        outputs.add(id(v))
            signatures[sig.key] = Signature(
                {name: conv.signature_input(index, sig.key, name) for name, index in sig.inputs.items()},
                {name: conv.value(index) for name, index in sig.outputs.items()})
        if DEFAULT_SIGNATURE not in signatures:
            signatures[DEFAULT_SIGNATURE] = Signature({v.name: v for v in main.inputs()},
                                                      {v.name: v for v in main.outputs()})
        b._signatures = signatures
        b.metadata.update({"producer": "tflite", "tflite_description": self.model.description})
        return b.build()

    def subgraph(self, index: int) -> SubgraphConverter:
        """A subgraph converted into the top-level graph (the main one, or a signature's)."""
        if index not in self.converted:
            conv = SubgraphConverter(self, self.model.subgraphs[index], self.builder)
            conv.convert()
            self.converted[index] = conv
        return self.converted[index]


class SubgraphConverter:
    """Converts one TFLite subgraph's operators into a GraphBuilder."""

    def __init__(self, model: _ModelConverter, graph: TFLiteSubGraph, builder: GraphBuilder,
                 stack: tuple[int, ...] = ()) -> None:
        self.model = model
        self.graph = graph
        self.builder = builder
        self.values: dict[int, Value] = {}
        self.bound: set[int] = set()  # ids of the values already standing for a tensor
        self.declared: dict[int, Value] = {}
        self.stack = (*stack, graph.index)  # subgraphs being converted (nested calls)
        if len(self.stack) > MAX_NESTING:
            raise ConversionError(f"subgraphs nest more than {MAX_NESTING} deep: "
                                  f"{' -> '.join(str(i) for i in self.stack)}")

    def convert(self) -> None:
        for index in self.graph.inputs:
            self.declared[index] = self._input_value(index)
        for op in self.graph.operators:
            self._convert_op(op)

    def _input_value(self, index: int) -> Value:
        tensor = self.graph.tensors[index]
        dtype = tensor.dtype
        if dtype is None or not dtypes.is_supported(dtype):
            raise ConversionError(f"subgraph {self.graph.index}: input {tensor.name!r} has type "
                                  f"{tensor.type}, which edgerun cannot take as an input")
        name = self.builder._unique(self._name(tensor.name))
        value = Value(name, dtype, tensor.signature)
        value.quantization = self._quantization(tensor)
        self.values[index] = value
        self.bound.add(id(value))
        return value

    def _name(self, name: str) -> str:
        # Signatures of other subgraphs share the top-level graph: keep their names apart.
        if self.graph.index == 0 or len(self.stack) > 1:
            return name
        return f"{self.graph.name or 'subgraph'}_{self.graph.index}/{name}"

    def inputs(self) -> list[Value]:
        return [self.declared[i] for i in self.graph.inputs]

    def outputs(self) -> list[Value]:
        return [self.value(i) for i in self.graph.outputs]

    def signature_input(self, index: int, key: str, name: str) -> Value:
        if index not in self.declared:
            raise ModelError(f"signature {key!r}: input {name!r} is tensor {index}, which is not an input "
                             f"of subgraph {self.graph.index}")
        return self.declared[index]

    def _convert_op(self, op: TFLiteOperator) -> None:
        quantized = self.is_quantized(op)
        entry = lookup(op.opcode, op.custom_code, quantized)
        if entry is None:  # (checked for the whole model up front; nested calls land here)
            raise ConversionError(f"subgraph {self.graph.index}, operator {op.index}: {op.name} is not supported")
        for position, index in enumerate(op.inputs):
            if index == -1 and position not in entry.optional:
                raise ModelError(f"subgraph {self.graph.index}, operator {op.index} ({op.name}): input "
                                 f"{position} is omitted (-1), but it is not optional")
        ctx = OpContext(self, op)
        self.model.count(ctx)
        try:
            entry.convert(ctx)
        except EdgerunError:
            raise
        except RecursionError:
            raise ctx.fail("its subgraphs nest too deeply to convert") from None
        except Exception as exc:  # noqa: BLE001 - a converter's bug or unforeseen input, named
            raise ctx.fail(f"cannot be converted ({type(exc).__name__}: {exc})") from exc
        for position, index in enumerate(op.outputs):
            if index not in self.values:
                raise ctx.fail(f"the converter left output {position} unbound")

    def is_quantized(self, op: TFLiteOperator) -> bool:
        return _is_quantized(self.graph, op)

    def value(self, index: int) -> Value:
        """The edgerun value of tensor `index` (constants are made on first use)."""
        if index in self.values:
            return self.values[index]
        tensor = self.graph.tensors[index]
        if tensor.data is None and 0 in tensor.shape and tensor.sparsity is None and tensor.dtype is not None:
            tensor.data = np.empty(tensor.shape, tensor.dtype)  # an empty constant (see reader._empty_constant)
        if tensor.data is None and tensor.sparsity is not None:
            # Sparse weights (DENSIFY's input, FULLY_CONNECTED's sparse kernel): made dense here.
            tensor.data = self.model.dense(tensor)
        if tensor.data is None:
            raise ModelError(f"subgraph {self.graph.index}: tensor {index} ({tensor.name!r}) is read but "
                             "never written")
        data = tensor.data
        if not dtypes.is_supported(data.dtype):
            raise ConversionError(f"subgraph {self.graph.index}: constant {tensor.name!r} has type "
                                  f"{tensor.type}, which edgerun cannot hold")
        quantization = self._quantization(tensor)
        # Tensors reading one buffer share its array (reader): one constant serves them all.
        key = (id(self.builder), id(data), tensor.type, None if quantization is None else
               (quantization.scale.tobytes(), quantization.zero_point.tobytes(), quantization.axis))
        value = self.model.constants.get(key)
        if value is None:
            self.model.spend(data.nbytes, f"subgraph {self.graph.index}: constant {tensor.name!r}")
            value = self.model.constants[key] = self.builder.constant(self._name(tensor.name), data)
            value.quantization = quantization
        self.values[index] = value
        self.bound.add(id(value))
        return value

    def bind(self, index: int, value: Value) -> None:
        if index in self.values:
            raise ModelError(f"subgraph {self.graph.index}: tensor {index} is written twice")
        tensor = self.graph.tensors[index]
        if value.data is None and id(value) not in self.bound:
            # Name the node's result after the TFLite tensor (outputs keep their names).
            self.builder._names.discard(value.name)
            value.name = self.builder._unique(self._name(tensor.name))
        else:  # an existing value (a no-op operator): route it through Identity under the new name
            name = self.builder._unique(self._name(tensor.name))
            self.builder._names.discard(name)  # (claimed again by op())
            value = self.builder.op("Identity", [value], name=f"{tensor.name}_identity", output_names=[name])
        quantization = self._quantization(tensor)
        if quantization is not None and quantization.scale.size > 1 and value.shape is None:
            quantization = None  # per-axis facts need a known shape (kernels take theirs as attributes)
        value.quantization = quantization
        self.values[index] = value
        self.bound.add(id(value))

    @staticmethod
    def _quantization(tensor: Any) -> Quantization | None:
        q = tensor.quantization
        if q is None or tensor.type not in INTEGER_TYPES:
            return None
        return Quantization(q.scale.astype(np.float32), q.zero_point.astype(np.int64), q.axis)

    def nested(self, index: int, ctx: OpContext, what: str) -> Graph:
        """Subgraph `index` as a graph of its own (a control-flow body)."""
        if not 0 <= index < len(self.model.model.subgraphs):
            raise ctx.fail(f"{what} subgraph {index} does not exist (the model has "
                           f"{len(self.model.model.subgraphs)})")
        if index in self.stack:
            raise ctx.fail(f"{what} subgraph {index} calls itself (recursion is not allowed)")
        builder = GraphBuilder(self.model.model.subgraphs[index].name or f"subgraph_{index}")
        conv = SubgraphConverter(self.model, self.model.model.subgraphs[index], builder, self.stack)
        conv.convert()
        builder._inputs.extend(conv.inputs())
        builder._outputs.extend(conv.outputs())
        return builder.build()
