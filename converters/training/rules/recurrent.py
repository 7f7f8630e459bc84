"""Gradient rules of RNN, GRU and LSTM: each is one edgerun gradient kernel (RNNGrad, GRUGrad,
LSTMGrad in runtime/kernels/recurrent_grad.py) that carries the forward node's attributes,
reruns the forward pass from its inputs and backpropagates through time. No training-forward
rule is needed: nothing is saved from the forward pass."""

from __future__ import annotations

from edgerun.converters.training.rules import GradContext, gradient
from edgerun.runtime.graph import Node, Value

SEQUENCE_LENS = 4  # the forward input slot that takes no gradient (integer lengths)


def _recurrent(ctx: GradContext, node: Node, grads: list[Value | None], op: str,
               forward_inputs: int, outputs: int) -> list[Value | None]:
    """The node's input gradients from one `op` node. Its inputs are the forward's inputs padded
    with None to `forward_inputs` slots, then the gradients of the forward's `outputs` outputs
    (None where none flows or the node lacks that output). Its outputs are the gradients of the
    forward's float inputs in order, sequence_lens skipped; an omitted input, sequence_lens and
    an input that needs none (`ctx.needs_grad`) get None."""
    if all(g is None for g in grads):
        return [None] * len(node.inputs)
    inputs = list(node.inputs) + [None] * (forward_inputs - len(node.inputs))
    out_grads = list(grads) + [None] * (outputs - len(grads))
    made = ctx.op(op, inputs + out_grads, num_outputs=forward_inputs - 1, **node.attrs)
    slots = [s for s in range(forward_inputs) if s != SEQUENCE_LENS]
    results: list[Value | None] = [None] * len(node.inputs)
    for slot, grad in zip(slots, made, strict=True):
        if slot < len(node.inputs) and node.inputs[slot] is not None and ctx.needs_grad(node.inputs[slot]):
            results[slot] = grad
    return results


@gradient("RNN")
def rnn(ctx: GradContext, node: Node, grads: list[Value | None]) -> list[Value | None]:
    """dX, dW, dR, dB and d initial_h from RNNGrad."""
    return _recurrent(ctx, node, grads, "RNNGrad", forward_inputs=6, outputs=2)


@gradient("GRU")
def gru(ctx: GradContext, node: Node, grads: list[Value | None]) -> list[Value | None]:
    """dX, dW, dR, dB and d initial_h from GRUGrad."""
    return _recurrent(ctx, node, grads, "GRUGrad", forward_inputs=6, outputs=2)


@gradient("LSTM")
def lstm(ctx: GradContext, node: Node, grads: list[Value | None]) -> list[Value | None]:
    """dX, dW, dR, dB, d initial_h, d initial_c and dP from LSTMGrad."""
    return _recurrent(ctx, node, grads, "LSTMGrad", forward_inputs=8, outputs=3)
