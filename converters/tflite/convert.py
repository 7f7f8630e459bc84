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
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from edgerun.converters.tflite.context import INTEGER_TYPES, OpContext
from edgerun.converters.tflite.reader import TFLiteModel, TFLiteOperator, TFLiteSubGraph, read_tflite
from edgerun.converters.tflite.registry import lookup
from edgerun.runtime import dtypes
from edgerun.runtime.errors import ConversionError, ModelError
from edgerun.runtime.graph import Graph, GraphBuilder, Quantization, Signature, Value

DEFAULT_SIGNATURE = "serving_default"
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
    missing = []
    for graph in model.subgraphs:
        for op in graph.operators:
            quantized = _is_quantized(graph, op)
            if lookup(op.opcode, op.custom_code, quantized) is None:
                kind = "custom op" if op.opcode == "CUSTOM" else "builtin"
                suffix = " on quantized tensors" if quantized else ""
                missing.append(f"{kind} {op.name}{suffix} (subgraph {graph.index}, operator {op.index})")
    if missing:
        raise ConversionError(
            f"the model uses {len(missing)} operator(s) edgerun cannot convert: " + "; ".join(missing)
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

    def convert(self) -> Graph:
        main = self.subgraph(0)
        b = self.builder
        b.name = self.model.subgraphs[0].name or "main"
        for v in main.inputs():
            b._inputs.append(v)
        for v in main.outputs():
            b._outputs.append(v)
        signatures: dict[str, Signature] = {}
        for sig in self.model.signatures:
            conv = self.subgraph(sig.subgraph)
            if sig.subgraph != 0 and not any(v in b._inputs for v in conv.inputs()):
                # Another subgraph's values live in the same graph: its inputs and outputs
                # join the graph's (the default signature keeps the main subgraph's only).
                b._inputs.extend(conv.inputs())
                b._outputs.extend(v for v in conv.outputs() if v not in b._outputs)
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
        entry.convert(ctx)
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
            # Sparse weights read directly (FULLY_CONNECTED's sparse kernel): made dense here.
            from edgerun.converters.tflite.sparsity import densify

            tensor.data = densify(tensor)
        if tensor.data is None:
            raise ModelError(f"subgraph {self.graph.index}: tensor {index} ({tensor.name!r}) is read but "
                             "never written")
        data = tensor.data
        if not dtypes.is_supported(data.dtype):
            raise ConversionError(f"subgraph {self.graph.index}: constant {tensor.name!r} has type "
                                  f"{tensor.type}, which edgerun cannot hold")
        value = self.builder.constant(self._name(tensor.name), data)
        value.quantization = self._quantization(tensor)
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
