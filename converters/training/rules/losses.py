"""Gradient rules of the losses (runtime/kernels/losses.py): each loss's gradient kernel for its
prediction input; labels and targets take no gradient. Accuracy is a metric and has no rule."""

from __future__ import annotations

import numpy as np

from edgerun.converters.training.rules import GradContext, GradientRule, gradient
from edgerun.runtime.graph import Node, Value


def _first_input_gradient(grad_op: str) -> GradientRule:
    """A rule: [grad_op(dloss, input0, input1), None]; no gradient when dloss is None."""

    def rule(ctx: GradContext, node: Node, grads: list[Value | None]) -> list[Value | None]:
        if grads[0] is None:
            return [None, None]
        return [ctx.op(grad_op, [grads[0], node.inputs[0], node.inputs[1]]), None]

    return rule


gradient("SoftmaxCrossEntropy")(_first_input_gradient("SoftmaxCrossEntropyGrad"))
gradient("MSELoss")(_first_input_gradient("MSELossGrad"))
gradient("BCEWithLogits")(_first_input_gradient("BCEWithLogitsGrad"))


@gradient("SumSquares")
def sum_squares(ctx: GradContext, node: Node, grads: list[Value | None]) -> list[Value | None]:
    """d/dxi sum(x^2) = 2 * dy * xi. The constant 2 takes the inputs' dtype when the graph
    records it, else float32 (SumSquares requires one float dtype for all inputs)."""
    dy = grads[0]
    if dy is None:
        return [None] * len(node.inputs)
    known = [v.dtype for v in node.inputs if v is not None and v.dtype is not None]
    dtype = known[0] if known else np.dtype(np.float32)
    twice_dy = ctx.onnx("Mul", [dy, ctx.constant("two", np.asarray(2, dtype))])
    return [ctx.onnx("Mul", [twice_dy, x]) for x in node.inputs]
