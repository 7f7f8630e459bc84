"""Conv followed by an Add of a constant per-channel bias: the constant joins the Conv's
bias. The constant must broadcast as (C, 1, ..., 1) or be a scalar (so the Add neither
changes the Conv's output shape nor differs within a channel), have the weights' dtype,
and the Conv's output must be read by the Add alone.

`fold_after_conv` and `channel_operands` are shared with conv_mul.py (the same fold for a
per-channel Mul), `per_channel` with batchnorm.py's fold of such constants into a BN.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edgerun.converters.optimize import rewrite
from edgerun.converters.optimize.manager import Pass
from edgerun.runtime.graph import Graph, Node

# (conv, constant, feeds, names) -> whether the constant was folded into the Conv
Fold = Callable[[Node, np.ndarray | None, set, rewrite.Names], bool]


class FoldConvAdd(Pass):
    name = "fold_conv_add"

    def run(self, graph: Graph) -> dict[str, int]:
        folded = fold_after_conv(graph, "Add", _add_bias)
        return {"Add into Conv bias": folded} if folded else {}


def fold_after_conv(graph: Graph, op_type: str, fold: Fold) -> int:
    """For each binary `op_type` node (opset >= 7) with one operand made by a plain Conv (no
    fused activation) that nothing else reads: `fold` the other operand's constant value (None
    when it is not constant) into the Conv, which then writes the node's output in its place.
    Returns how many nodes were folded away."""
    fed, keep = rewrite.feeds(graph), rewrite.pinned(graph)
    users, made = rewrite.consumers(graph), rewrite.producers(graph)
    names = rewrite.Names(graph)
    folded = 0
    for op in list(graph.nodes):
        if op.op_type != op_type or op.domain != "" or op.version < 7 or len(op.inputs) != 2:
            continue
        for x, c in (op.inputs, op.inputs[::-1]):
            conv = made.get(x)
            if (conv is not None and conv.op_type == "Conv" and conv.domain == ""
                    and "activation" not in conv.attrs
                    and rewrite.sole_consumer(x, users, keep) is op
                    and fold(conv, rewrite.constant_data(c, fed), fed, names)):
                conv.outputs = [op.outputs[0]]
                graph.nodes.remove(op)
                folded += 1
                break
    return folded


def channel_operands(conv: Node, c: np.ndarray | None, fed: set) -> tuple[np.ndarray, np.ndarray | None] | None:
    """(W, B or None) of the Conv when `c` is a per-channel constant for it (shape (C, 1, ...,
    1) or scalar, the weights' dtype) and its weights and bias are constants; else None."""
    w = rewrite.constant_data(conv.inputs[1] if len(conv.inputs) > 1 else None, fed)
    if c is None or w is None or c.dtype != w.dtype or not per_channel(c, w.ndim, w.shape[0]):
        return None
    b_value = conv.inputs[2] if len(conv.inputs) > 2 else None
    b = rewrite.constant_data(b_value, fed)
    if b_value is not None and b is None:
        return None
    return w, b


def per_channel(c: np.ndarray, rank: int, channels: int) -> bool:
    """Whether `c` broadcasts against an (N, C, ...) tensor of `rank` dims with C = `channels`
    as one value per channel or one in all (shape (C, 1, ..., 1), (1, C, 1, ...), a scalar),
    so that the result keeps the tensor's shape and is constant within each channel."""
    if rank < 2 or c.ndim > rank:
        return False
    shape = (1,) * (rank - c.ndim) + c.shape
    return all(d == 1 for i, d in enumerate(shape) if i != 1) and shape[1] in (1, channels)


def _add_bias(conv: Node, c: np.ndarray | None, fed: set, names: rewrite.Names) -> bool:
    """Add `c` to the Conv's bias (creating one if absent); False when it does not fit."""
    operands = channel_operands(conv, c, fed)
    if operands is None:
        return False
    w, b = operands
    base = np.zeros(w.shape[0], w.dtype) if b is None else b
    bias = (base + c.reshape(-1)).astype(w.dtype)
    conv.inputs = [conv.inputs[0], conv.inputs[1], names.constant(f"{conv.name}_bias_add", bias)]
    return True
