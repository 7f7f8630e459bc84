"""What an operator converter sees: `OpContext`, one per TFLite operator.

    @converts("ADD")
    def add(ctx):
        y = ctx.emit("Add", [ctx.input(0), ctx.input(1)])
        ctx.bind(0, ctx.activation(y))

Inputs are edgerun `Value`s (constants become constant Values on first use); `ctx.constant(i)`
gives a constant input's array and fails clearly when the model feeds a run-time tensor
there. TFLite is NHWC; edgerun's spatial kernels follow ONNX (NCHW), so a spatial converter
wraps its node as `ctx.nhwc(node(ctx.nchw(x)))`; the optimizer's sink_transposes pass
removes the pairs that meet. Every failure is `ctx.fail(...)`: a ConversionError that names
the operator by index and code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from edgerun.converters.tflite.layout import ACTIVATIONS, TABLES
from edgerun.converters.tflite.reader import TFLiteOperator, TFLiteSubGraph, TFLiteTensor
from edgerun.runtime.errors import ConversionError
from edgerun.runtime.graph import GraphBuilder, Value

if TYPE_CHECKING:
    from edgerun.converters.tflite.convert import SubgraphConverter

TO_NCHW = (0, 3, 1, 2)
# Fused activation -> the clamp range LiteRT's kernels apply (None: unbounded on that side)
_CLAMPS = {"NONE": (None, None), "RELU": (0, None), "RELU6": (0, 6), "RELU_N1_TO_1": (-1, 1),
           "TANH": (None, None), "SIGN_BIT": (None, None)}
TO_NHWC = (0, 2, 3, 1)
INTEGER_TYPES = ("INT8", "UINT8", "INT16")


class OpContext:
    def __init__(self, converter: SubgraphConverter, op: TFLiteOperator) -> None:
        self.converter = converter
        self.op = op
        self.graph: TFLiteSubGraph = converter.graph
        self.builder: GraphBuilder = converter.builder
        self.prefix = f"op{op.index}_{op.name.lower()}"
        defaults = {f: d for f, _k, d in TABLES.get(op.options_type, [])}
        self.options: dict[str, Any] = _Options(self, {**defaults, **(op.options or {})})

    # --- reading the operator -------------------------------------------------------

    @property
    def custom_options(self) -> bytes:
        return self.op.custom_options

    def flex_options(self) -> dict[str, Any]:
        """The custom options as a FlexBuffer map (how most custom ops store attributes)."""
        from edgerun.converters.tflite.flex import read_flex_map

        try:
            return read_flex_map(self.op.custom_options)
        except ValueError as exc:
            raise self.fail(f"custom options are not a valid FlexBuffer map: {exc}") from None

    @property
    def num_inputs(self) -> int:
        return len(self.op.inputs)

    @property
    def num_outputs(self) -> int:
        return len(self.op.outputs)

    def has_input(self, i: int) -> bool:
        return i < len(self.op.inputs) and self.op.inputs[i] != -1

    def tensor(self, i: int) -> TFLiteTensor | None:
        """Input `i`'s TFLite tensor; None when omitted (-1) or past the inputs."""
        return self.graph.tensors[self.op.inputs[i]] if self.has_input(i) else None

    def output_tensor(self, i: int) -> TFLiteTensor:
        return self.graph.tensors[self.op.outputs[i]]

    def input(self, i: int) -> Value | None:
        """Input `i` as an edgerun value; None when omitted."""
        return self.converter.value(self.op.inputs[i]) if self.has_input(i) else None

    def constant(self, i: int, what: str = "") -> np.ndarray:
        """The contents of constant input `i`; fails when it is computed at run time."""
        tensor = self.tensor(i)
        if tensor is None or tensor.data is None:
            name = what or f"input {i}"
            raise self.fail(f"{name} must be a constant tensor in the model")
        return tensor.data

    def is_constant(self, i: int) -> bool:
        tensor = self.tensor(i)
        return tensor is not None and tensor.data is not None

    def need_inputs(self, low: int, high: int | None = None) -> None:
        """Fail unless the operator has between `low` and `high` (default: `low`) inputs."""
        high = low if high is None else high
        if not low <= self.num_inputs <= high:
            expected = str(low) if low == high else f"{low} to {high}"
            raise self.fail(f"expects {expected} inputs, has {self.num_inputs}")

    # --- emitting nodes -------------------------------------------------------------

    def emit(self, op_type: str, inputs: list[Value | None], *, num_outputs: int = 1,
             domain: str | None = None, version: int | None = None, **attrs: Any) -> Any:
        """Append an edgerun node (ONNX semantics unless `domain` says otherwise)."""
        return self.builder.op(op_type, inputs, num_outputs=num_outputs, name=self.prefix,
                               domain=domain, version=version, **attrs)

    def const(self, name: str, data: Any, dtype: Any = None) -> Value:
        return self.builder.constant(f"{self.prefix}_{name}", data, dtype)

    def bind(self, i: int, value: Value) -> None:
        """Output `i` of the TFLite operator is `value`."""
        self.converter.bind(self.op.outputs[i], value)

    def nchw(self, value: Value) -> Value:
        return self.emit("Transpose", [value], perm=list(TO_NCHW))

    def nhwc(self, value: Value) -> Value:
        return self.emit("Transpose", [value], perm=list(TO_NHWC))

    def activation(self, value: Value, code: int | None = None, dtype: Any = np.float32) -> Value:
        """`value` (of `dtype`) through the operator's fused activation, as LiteRT's kernels apply
        it: a clamp (RELU, RELU6, RELU_N1_TO_1, for float and integer tensors alike); TANH and
        SIGN_BIT leave the value as it is, since the kernels turn the code into a clamp range
        and these two have none."""
        code = self.options.get("fused_activation_function", 0) if code is None else code
        name = ACTIVATIONS.get(code)
        if name not in _CLAMPS:
            raise self.fail(f"unknown fused activation code {code}")
        low, high = _CLAMPS[name]
        dtype = np.dtype(dtype)
        if low is None and high is None:
            return value
        if dtype.kind == "f" and high is None:
            return self.emit("Relu", [value])
        bounds = [None if b is None else self.const(key, np.asarray(b, dtype))
                  for key, b in (("min", low), ("max", high))]
        return self.emit("Clip", [value, *bounds])

    def subgraph(self, index: int, what: str) -> Any:
        """Subgraph `index` of the model as a nested edgerun Graph (WHILE, IF bodies)."""
        return self.converter.nested(index, self, what)

    # --- quantization facts ---------------------------------------------------------

    def is_quantized(self) -> bool:
        """True when the operator reads or writes quantized integer tensors."""
        return self.converter.is_quantized(self.op)

    def fail(self, message: str) -> ConversionError:
        return ConversionError(f"subgraph {self.graph.index}, operator {self.op.index} ({self.op.name}): {message}")


class _Options(dict):
    """An operator's options; a field its table lacks (a file that gives CONV_2D the options
    of another operator) fails with the operator's name rather than a KeyError."""

    def __init__(self, ctx: OpContext, values: dict[str, Any]) -> None:
        super().__init__(values)
        self.ctx = ctx

    def __missing__(self, key: str) -> Any:
        table = self.ctx.op.options_type or "none"
        raise self.ctx.fail(f"its options have no field {key!r} (the file gives it options table {table})")
