"""Conv followed by a Mul by a constant per-channel scale: the scale joins the Conv's weights
and bias (W[m] * s[m], B[m] * s[m]), as Caffe-era exports write a Scale layer after a
BatchNormalization folded into the Conv. The constant must broadcast as (C, 1, ..., 1) or be a
scalar, have the weights' dtype, and the Conv's output must be read by the Mul alone.
"""

from __future__ import annotations

import numpy as np

from edgerun.converters.optimize import rewrite
from edgerun.converters.optimize.manager import Pass
from edgerun.runtime.graph import Graph, Node


class FoldConvMul(Pass):
    name = "fold_conv_mul"

    def run(self, graph: Graph) -> dict[str, int]:
        fed, keep = rewrite.feeds(graph), rewrite.pinned(graph)
        users, made = rewrite.consumers(graph), rewrite.producers(graph)
        names = rewrite.Names(graph)
        folded = 0
        for mul in list(graph.nodes):
            if mul.op_type != "Mul" or mul.domain != "" or mul.version < 7 or len(mul.inputs) != 2:
                continue
            for x, c in (mul.inputs, mul.inputs[::-1]):
                conv = made.get(x)
                if (conv is not None and conv.op_type == "Conv" and conv.domain == ""
                        and "activation" not in conv.attrs
                        and rewrite.sole_consumer(x, users, keep) is mul
                        and _scale(conv, rewrite.constant_data(c, fed), fed, names)):
                    conv.outputs = [mul.outputs[0]]
                    graph.nodes.remove(mul)
                    folded += 1
                    break
        return {"Mul into Conv weights": folded} if folded else {}


def _scale(conv: Node, c: np.ndarray | None, fed: set, names: rewrite.Names) -> bool:
    """Scale the Conv's weights and bias by `c` per output channel; False when it does not fit."""
    w = rewrite.constant_data(conv.inputs[1] if len(conv.inputs) > 1 else None, fed)
    if c is None or w is None or c.dtype != w.dtype or c.ndim > w.ndim:
        return False
    shape = (1,) * (w.ndim - c.ndim) + c.shape
    if any(d != 1 for i, d in enumerate(shape) if i != 1) or shape[1] not in (1, w.shape[0]):
        return False
    b_value = conv.inputs[2] if len(conv.inputs) > 2 else None
    b = rewrite.constant_data(b_value, fed)
    if b_value is not None and b is None:
        return False
    s = np.broadcast_to(c.reshape(-1).astype(np.float64), (w.shape[0],))
    new_w = (w.astype(np.float64) * s.reshape((-1,) + (1,) * (w.ndim - 1))).astype(w.dtype)
    inputs = [conv.inputs[0], names.constant(f"{conv.inputs[1].name}_mul", new_w)]
    if b is not None:
        inputs.append(names.constant(f"{conv.name}_bias_mul", (b.astype(np.float64) * s).astype(w.dtype)))
    conv.inputs = inputs
    return True
