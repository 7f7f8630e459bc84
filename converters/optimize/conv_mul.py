"""Conv followed by a Mul by a constant per-channel scale: the scale joins the Conv's weights
and bias (W[m] * s[m], B[m] * s[m]), as Caffe-era exports write a Scale layer after a
BatchNormalization folded into the Conv. The constant must broadcast as (C, 1, ..., 1) or be a
scalar, have the weights' dtype, and the Conv's output must be read by the Mul alone (the
matching and checks are conv_add.py's).
"""

from __future__ import annotations

import numpy as np

from edgerun.converters.optimize import rewrite
from edgerun.converters.optimize.conv_add import channel_operands, fold_after_conv
from edgerun.converters.optimize.manager import Pass
from edgerun.runtime.graph import Graph, Node


class FoldConvMul(Pass):
    name = "fold_conv_mul"

    def run(self, graph: Graph) -> dict[str, int]:
        folded = fold_after_conv(graph, "Mul", _scale)
        return {"Mul into Conv weights": folded} if folded else {}


def _scale(conv: Node, c: np.ndarray | None, fed: set, names: rewrite.Names) -> bool:
    """Scale the Conv's weights and bias by `c` per output channel; False when it does not fit."""
    operands = channel_operands(conv, c, fed)
    if operands is None:
        return False
    w, b = operands
    s = np.broadcast_to(c.reshape(-1).astype(np.float64), (w.shape[0],))
    new_w = (w.astype(np.float64) * s.reshape((-1,) + (1,) * (w.ndim - 1))).astype(w.dtype)
    inputs = [conv.inputs[0], names.constant(f"{conv.inputs[1].name}_mul", new_w)]
    if b is not None:
        inputs.append(names.constant(f"{conv.name}_bias_mul", (b.astype(np.float64) * s).astype(w.dtype)))
    conv.inputs = inputs
    return True
