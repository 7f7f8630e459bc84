"""The recurrent layer (float): UNIDIRECTIONAL_SEQUENCE_LSTM, unrolled over its static time
steps into elementwise nodes as LiteRT computes it (see `unidirectional_sequence_lstm`).
"""

from __future__ import annotations

import numpy as np

from edgerun.converters.tflite.context import OpContext
from edgerun.converters.tflite.layout import ACTIVATIONS
from edgerun.converters.tflite.ops.nhwc import filter_tensor
from edgerun.converters.tflite.registry import converts
from edgerun.runtime.graph import Value

LSTM_OPTIONAL = (1, 5, 9, 10, 11, 12, 16, 17, 20, 21, 22, 23)  # CIFG, peepholes, projection, layer norm
MAX_TIME_STEPS = 1024  # unrolled: about 14 nodes per step


def lstm_activation(ctx: OpContext, value: Value) -> Value:
    """The LSTM's cell activation, applied for real (TANH too, unlike the clamp of other
    kernels). NONE is refused: LiteRT's kernel then computes h = o * g instead of o * c (its
    activation step leaves the scratch holding the cell gate), and SIGN_BIT is not supported."""
    name = ACTIVATIONS.get(ctx.options["fused_activation_function"])
    if name in ("RELU", "RELU6", "RELU_N1_TO_1"):
        return ctx.activation(value)
    if name == "NONE":
        raise ctx.fail("cell activation NONE is not supported (LiteRT computes h = output gate * cell gate with it)")
    if name != "TANH":
        raise ctx.fail(f"cell activation {name} is not supported")
    return ctx.emit("Tanh", [value])


def lstm_state(ctx: OpContext, i: int) -> Value | None:
    """Initial state input `i`; None for a variable tensor without contents (zeros)."""
    tensor = ctx.tensor(i)
    if tensor.is_variable and tensor.data is None:
        return None
    return ctx.input(i)


def clipped(ctx: OpContext, value: Value, limit: float) -> Value:
    if limit <= 0:
        return value
    return ctx.emit("Clip", [value, ctx.const("low", np.float32(-limit)), ctx.const("high", np.float32(limit))])


@converts("UNIDIRECTIONAL_SEQUENCE_LSTM", optional=LSTM_OPTIONAL)
def unidirectional_sequence_lstm(ctx: OpContext) -> None:
    """TFLite's float LSTM unrolled over its (static) time steps into elementwise nodes, as
    LiteRT computes it: gates i, f, g, o from x W^T + h R^T + b (+ peepholes c * p for i, f
    from the previous and o from the new cell state), i = 1 - f with CIFG (no input gate),
    c = f * c + i * act(g) clipped to cell_clip, h = o * act(c) (then projected and clipped
    to proj_clip). ONNX LSTM is not used: its `clip` bounds the gates' inputs, not the cell
    state. Each run starts from the state tensors' contents (zeros for variable ones); LiteRT
    carries the state over to the next invocation, edgerun's graph does not. Layer
    normalization and diagonal recurrent weights are refused, and so are more than
    MAX_TIME_STEPS time steps (the unrolled graph grows with them)."""
    ctx.need_inputs(20, 24)
    if any(ctx.has_input(i) for i in (20, 21, 22, 23)):
        raise ctx.fail("layer normalization is not supported")
    if ctx.options["diagonal_recurrent_tensors"]:
        raise ctx.fail("diagonal recurrent weights are not supported")
    shape = ctx.tensor(0).signature
    time_axis = 0 if ctx.options["time_major"] else 1
    if len(shape) != 3 or shape[time_axis] < 1:
        raise ctx.fail(f"the input must be 3-D with a static number of time steps, got shape {list(shape)}")
    if shape[time_axis] > MAX_TIME_STEPS:
        raise ctx.fail(f"{shape[time_axis]} time steps are more than the {MAX_TIME_STEPS} this converter unrolls")
    gates = [g for g in range(4) if g or ctx.has_input(1)]  # input, forget, cell, output; CIFG: no input
    for g in gates:
        filter_tensor(ctx, 1 + g, 2, "[cells, inputs]")
        if not (ctx.has_input(5 + g) and ctx.has_input(12 + g)):
            raise ctx.fail(f"gate {g} has input weights but lacks its recurrent weights or bias")
    n_cell = ctx.tensor(2).shape[0]
    w_x = ctx.emit("Concat", [ctx.input(1 + g) for g in gates], axis=0)
    w_h = ctx.emit("Transpose", [ctx.emit("Concat", [ctx.input(5 + g) for g in gates], axis=0)], perm=[1, 0])
    bias = ctx.emit("Concat", [ctx.input(12 + g) for g in gates], axis=0)
    xw = ctx.emit("Add", [ctx.emit("MatMul", [ctx.input(0), ctx.emit("Transpose", [w_x], perm=[1, 0])]), bias])
    split = ctx.const("split", np.full(len(gates), n_cell, np.int64))
    h, c = lstm_state(ctx, 18), lstm_state(ctx, 19)
    projection = ctx.emit("Transpose", [ctx.input(16)], perm=[1, 0]) if ctx.has_input(16) else None
    outputs = []
    for t in range(shape[time_axis]):
        z = ctx.emit("Gather", [xw, ctx.const("t", np.int64(t))], axis=time_axis)
        if h is not None:
            z = ctx.emit("Add", [z, ctx.emit("MatMul", [h, w_h])])
        pre = dict(zip(gates, ctx.emit("Split", [z, split], axis=1, num_outputs=len(gates)), strict=True))
        h, c = lstm_step(ctx, pre, c, projection)
        outputs.append(ctx.emit("Unsqueeze", [h, ctx.const("axis", np.array([time_axis], np.int64))]))
    ctx.bind(0, outputs[0] if len(outputs) == 1 else ctx.emit("Concat", outputs, axis=time_axis))


def lstm_step(ctx: OpContext, pre: dict[int, Value], c: Value | None,
              projection: Value | None) -> tuple[Value, Value]:
    """One time step from the gates' pre-activations and the previous cell state (None:
    zeros): the new (h, c). `projection`: the transposed projection weights."""

    def peephole(gate: int, state: Value | None) -> Value:
        if state is None or not ctx.has_input(9 + min(gate, 2)):
            return pre[gate]
        return ctx.emit("Add", [pre[gate], ctx.emit("Mul", [state, ctx.input(9 + min(gate, 2))])])

    forget = ctx.emit("Sigmoid", [peephole(1, c)])
    if 0 in pre:
        gate_in = ctx.emit("Sigmoid", [peephole(0, c)])
    else:
        gate_in = ctx.emit("Sub", [ctx.const("one", np.float32(1.0)), forget])
    new_c = ctx.emit("Mul", [gate_in, lstm_activation(ctx, pre[2])])
    if c is not None:
        new_c = ctx.emit("Add", [ctx.emit("Mul", [forget, c]), new_c])
    new_c = clipped(ctx, new_c, float(ctx.options["cell_clip"]))
    h = ctx.emit("Mul", [ctx.emit("Sigmoid", [peephole(3, new_c)]), lstm_activation(ctx, new_c)])
    if projection is not None:
        h = ctx.emit("MatMul", [h, projection])
        if ctx.has_input(17):
            h = ctx.emit("Add", [h, ctx.input(17)])
        h = clipped(ctx, h, float(ctx.options["proj_clip"]))
    return h, new_c
