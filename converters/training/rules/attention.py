"""Gradient rule of Attention (opset 23+): one edgerun AttentionGrad node (runtime/kernels/
attention_grad.py) that carries the forward node's attributes and recomputes the softmax
probabilities from Q and K. No training-forward rule is needed: nothing is saved from the forward."""

from __future__ import annotations

from edgerun.converters.training.rules import GradContext, gradient
from edgerun.runtime.errors import ConversionError
from edgerun.runtime.graph import Node, Value

FORWARD_SLOTS = 7  # Q, K, V, attn_mask, past_key, past_value, nonpad_kv_seqlen
MASK, NONPAD = 3, 6
QK_OUTPUT = 3  # qk_matmul_output


@gradient("Attention")
def attention(ctx: GradContext, node: Node, grads: list[Value | None]) -> list[Value | None]:
    """dQ, dK, dV, d attn_mask (unless the mask is known to be bool), d past_key and
    d past_value from AttentionGrad, which takes the forward's input slots (omitted ones None)
    and the gradients of Y, present_key and present_value. nonpad_kv_seqlen takes none; an
    input that needs none (`ctx.needs_grad`) gets None. ConversionError when a gradient reaches
    qk_matmul_output (output 3, any qk_matmul_output_mode): that output is not differentiated."""
    if len(grads) > QK_OUTPUT and grads[QK_OUTPUT] is not None:
        mode = node.attrs.get("qk_matmul_output_mode", 0)
        raise ConversionError(f"node {node.name!r} (Attention): the gradient of qk_matmul_output (output 3, "
                              f"qk_matmul_output_mode {mode}) is not supported; train through Y, "
                              f"present_key and present_value only")
    out_grads = (list(grads) + [None] * QK_OUTPUT)[:QK_OUTPUT]
    if all(g is None for g in out_grads):
        return [None] * len(node.inputs)
    inputs = (list(node.inputs) + [None] * FORWARD_SLOTS)[:FORWARD_SLOTS]
    made = ctx.op("AttentionGrad", inputs + out_grads, num_outputs=6, **node.attrs)
    results: list[Value | None] = [None] * len(node.inputs)
    for slot, (value, grad) in enumerate(zip(node.inputs, made, strict=False)):
        if value is None or not ctx.needs_grad(value) or slot == NONPAD:
            continue
        if slot == MASK and value.dtype is not None and value.dtype.kind != "f":
            continue
        results[slot] = grad
    return results
