"""Gradient rules of ReduceSum, ReduceMean and LayerNormalization.

The reductions broadcast dY back over the reduced axes (ReduceSumGrad, ReduceMeanGrad in
runtime/kernels/shape_grad.py), whether the axes are an attribute (ReduceSum before opset 13,
ReduceMean before 18: they become a constant input) or an input, which takes no gradient.
LayerNormalization's gradient is LayerNormalizationGrad (runtime/kernels/normalization_grad.py),
which also takes the gradients reaching its optional Mean and InvStdDev outputs.
"""

from __future__ import annotations

import numpy as np

from edgerun.converters.training.rules import GradContext, GradientRule, gradient
from edgerun.converters.training.rules.elementwise import one_output
from edgerun.runtime.graph import Node, Value

LAYER_NORM_ATTRS = ("axis", "epsilon", "stash_type")


def _reduction(grad_op: str, axes_input_since: int) -> GradientRule:
    """The rule of a reduction whose axes are an attribute before opset `axes_input_since`."""

    @one_output
    def rule(ctx: GradContext, node: Node, dy: Value) -> list[Value | None]:
        attrs = {"keepdims": int(node.attrs.get("keepdims", 1))}
        if node.version >= axes_input_since:
            axes = node.inputs[1] if len(node.inputs) > 1 else None
            attrs["noop_with_empty_axes"] = int(node.attrs.get("noop_with_empty_axes", 0))
        elif "axes" in node.attrs:
            axes = ctx.constant("axes", np.asarray(node.attrs["axes"], np.int64))
        else:
            axes = None
        inputs = [dy, node.inputs[0]] + ([axes] if axes is not None else [])
        return [ctx.op(grad_op, inputs, **attrs)] + [None] * (len(node.inputs) - 1)

    return rule


gradient("ReduceSum")(_reduction("ReduceSumGrad", 13))
gradient("ReduceMean")(_reduction("ReduceMeanGrad", 18))


@gradient("LayerNormalization")
def layer_normalization(ctx: GradContext, node: Node, grads: list[Value | None]) -> list[Value | None]:
    """(dX, dScale[, dB]) from one LayerNormalizationGrad(dY, X, Scale[, B, dMean, dInvStdDev])
    with the forward's axis, epsilon and stash_type; dB only when the node has B."""
    grads = (list(grads) + [None] * 3)[:3]
    if all(g is None for g in grads):
        return [None] * len(node.inputs)
    x, scale = node.inputs[:2]
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    inputs = [grads[0], x, scale, bias, grads[1], grads[2]]
    while inputs[-1] is None:
        inputs.pop()
    attrs = {key: node.attrs[key] for key in LAYER_NORM_ATTRS if key in node.attrs}
    results = ctx.op("LayerNormalizationGrad", inputs, num_outputs=3 if bias is not None else 2, **attrs)
    return results + [None] * (len(node.inputs) - len(results))
