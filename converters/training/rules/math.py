"""Gradient rules of elementwise math and activations: Exp, Log, Sqrt, Erf, Pow, Clip,
HardSigmoid, HardSwish and Gelu.

Exp, Log and Sqrt are one or two ONNX ops. Pow, Erf, Clip, HardSigmoid, HardSwish and Gelu use
their gradient kernels in runtime/kernels/math_grad.py. Piecewise ops give the gradient of the flat piece at
their kinks: Clip passes dY only where min < X < max (so Relu6 = Clip(0, 6) gives 0 at 0 and at
6, like ReluGrad at 0), HardSigmoid where 0 < alpha * X + beta < 1, HardSwish 0 at -3 and dY at 3.
"""

from __future__ import annotations

import numpy as np

from edgerun.converters.training.rules import GradContext, gradient
from edgerun.converters.training.rules.elementwise import one_output, unbroadcast
from edgerun.runtime.graph import Node, Value

# Clip-6's bound when its attribute is absent (the forward kernel clamps to float32's range).
FLOAT32_MAX = 3.4028234663852886e38


@gradient("Exp")
@one_output
def exp(ctx: GradContext, node: Node, dy: Value) -> list[Value | None]:
    """dX = dY * Y."""
    return [ctx.onnx("Mul", [dy, node.outputs[0]])]


@gradient("Log")
@one_output
def log(ctx: GradContext, node: Node, dy: Value) -> list[Value | None]:
    """dX = dY / X."""
    return [ctx.onnx("Div", [dy, node.inputs[0]])]


@gradient("Sqrt")
@one_output
def sqrt(ctx: GradContext, node: Node, dy: Value) -> list[Value | None]:
    """dX = dY / (2 Y), written dY / (Y + Y) (no constant); inf at X = 0."""
    y = node.outputs[0]
    return [ctx.onnx("Div", [dy, ctx.onnx("Add", [y, y])])]


@gradient("Erf")
@one_output
def erf(ctx: GradContext, node: Node, dy: Value) -> list[Value | None]:
    """dX = dY * 2 / sqrt(pi) * exp(-X^2), as ErfGrad (its constant needs X's dtype, which the
    graph may not record)."""
    return [ctx.op("ErfGrad", [dy, node.inputs[0]])]


def _sum_to(ctx: GradContext, grad: Value, like: Value, node: Node) -> Value:
    """`grad` (shaped like the binary `node`'s output) summed down to `like`'s shape; no SumTo
    when both operands' static shapes are known and `like`'s is already the output's."""
    a, b = node.inputs[0].shape, node.inputs[1].shape
    if a is not None and b is not None and all(d >= 0 for d in (*a, *b)):
        if tuple(np.broadcast_shapes(a, b)) == tuple(like.shape):
            return grad
    return unbroadcast(ctx, grad, like, node)


@gradient("Pow")
@one_output
def pow_(ctx: GradContext, node: Node, dy: Value) -> list[Value | None]:
    """PowGrad, each gradient summed down to its operand's shape. The exponent gets a gradient
    (0 where the base is <= 0) when it is float (or its dtype is unknown) and needs one; an
    integer exponent gets None."""
    a, b = node.inputs
    float_exponent = b.dtype is None or np.dtype(b.dtype).kind == "f"
    if not (float_exponent and ctx.needs_grad(b)):
        return [_sum_to(ctx, ctx.op("PowGrad", [dy, a, b], compute_db=0), a, node), None]
    da, db = ctx.op("PowGrad", [dy, a, b], num_outputs=2)
    return [_sum_to(ctx, da, a, node), _sum_to(ctx, db, b, node)]


@gradient("Clip")
@one_output
def clip(ctx: GradContext, node: Node, dy: Value) -> list[Value | None]:
    """ClipGrad(dY, X[, min][, max]); the bounds take no gradient. Clip-1/6 bounds are
    attributes: ClipGrad gets them as attributes, an absent one as Clip-6's float32 extreme
    (Clip-1: unbounded)."""
    x = node.inputs[0]
    if node.version < 11:
        attrs = {key: float(node.attrs[key]) for key in ("min", "max") if node.attrs.get(key) is not None}
        if node.version >= 6:
            attrs = {"min": -FLOAT32_MAX, "max": FLOAT32_MAX, **attrs}
        return [ctx.op("ClipGrad", [dy, x], **attrs)]
    bounds = list(node.inputs[1:3])
    inputs = [dy, x, *bounds]
    while inputs[-1] is None:
        inputs.pop()
    return [ctx.op("ClipGrad", inputs)] + [None] * len(bounds)


@gradient("HardSigmoid")
@one_output
def hard_sigmoid(ctx: GradContext, node: Node, dy: Value) -> list[Value | None]:
    alpha, beta = float(node.attrs.get("alpha", 0.2)), float(node.attrs.get("beta", 0.5))
    return [ctx.op("HardSigmoidGrad", [dy, node.inputs[0]], alpha=alpha, beta=beta)]


@gradient("HardSwish")
@one_output
def hard_swish(ctx: GradContext, node: Node, dy: Value) -> list[Value | None]:
    return [ctx.op("HardSwishGrad", [dy, node.inputs[0]])]


@gradient("Gelu")
@one_output
def gelu(ctx: GradContext, node: Node, dy: Value) -> list[Value | None]:
    approximate = node.attrs.get("approximate", "none")
    approximate = approximate.decode() if isinstance(approximate, bytes) else str(approximate)
    return [ctx.op("GeluGrad", [dy, node.inputs[0]], approximate=approximate)]
