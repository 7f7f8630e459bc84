"""Conv followed by an Add of a constant per-channel bias: the constant joins the Conv's
bias. The constant must broadcast as (C, 1, ..., 1) or be a scalar (so the Add neither
changes the Conv's output shape nor differs within a channel), have the weights' dtype,
and the Conv's output must be read by the Add alone.
"""

from __future__ import annotations

import numpy as np

from edgerun.converters.optimize import rewrite
from edgerun.converters.optimize.manager import Pass
from edgerun.runtime.graph import Graph, Node


class FoldConvAdd(Pass):
    name = "fold_conv_add"

    def run(self, graph: Graph) -> dict[str, int]:
        fed, keep = rewrite.feeds(graph), rewrite.pinned(graph)
        users, made = rewrite.consumers(graph), rewrite.producers(graph)
        names = rewrite.Names(graph)
        folded = 0
        for add in list(graph.nodes):
            if add.op_type != "Add" or add.domain != "" or add.version < 7 or len(add.inputs) != 2:
                continue
            for x, c in (add.inputs, add.inputs[::-1]):
                conv = made.get(x)
                if (conv is not None and conv.op_type == "Conv" and conv.domain == ""
                        and "activation" not in conv.attrs
                        and rewrite.sole_consumer(x, users, keep) is add
                        and _add_bias(conv, rewrite.constant_data(c, fed), fed, names)):
                    conv.outputs = [add.outputs[0]]
                    graph.nodes.remove(add)
                    folded += 1
                    break
        return {"Add into Conv bias": folded} if folded else {}


def _add_bias(conv: Node, c: np.ndarray | None, fed: set, names: rewrite.Names) -> bool:
    """Add `c` to the Conv's bias (creating one if absent); False when it does not fit."""
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
    base = np.zeros(w.shape[0], w.dtype) if b is None else b
    bias = (base + c.reshape(-1)).astype(w.dtype)
    conv.inputs = [conv.inputs[0], conv.inputs[1], names.constant(f"{conv.name}_bias_add", bias)]
    return True
