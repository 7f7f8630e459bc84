"""Gradient rules of elementwise ops: Add, Sub, Mul, Div, Neg and the activations.

Binary ops broadcast, so each operand's gradient is summed back to the operand's shape with
SumTo (see `unbroadcast`). The activations use their gradient kernels in runtime/kernels/
activations.py: ReluGrad and LeakyReluGrad read the forward input X, SigmoidGrad and TanhGrad
the forward output Y.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from edgerun.converters.training.rules import GradContext, GradientRule, gradient
from edgerun.runtime.graph import Node, Value

# The rule of a one-output op: gets dY itself (never None), returns one entry per input.
OneOutputRule = Callable[[GradContext, Node, Value], list[Value | None]]


def one_output(rule: OneOutputRule) -> GradientRule:
    """Adapt the rule of a one-output op to the GradientRule signature: it is called with dY,
    and when no gradient reaches the output every input gets None without calling it."""

    @wraps(rule)
    def adapted(ctx: GradContext, node: Node, grads: list[Value | None]) -> list[Value | None]:
        if not grads or grads[0] is None:
            return [None] * len(node.inputs)
        return rule(ctx, node, grads[0])

    return adapted


def unbroadcast(ctx: GradContext, grad: Value, like: Value, node: Node) -> Value:
    """`grad` (shaped like the output of the binary `node`) summed down to `like`'s shape.

    No SumTo is emitted when both operands are declared with the same static shape: then
    neither was broadcast and `grad` already has `like`'s shape.
    """
    a, b = node.inputs[0].shape, node.inputs[1].shape
    if a is not None and a == b and all(d >= 0 for d in a):
        return grad
    return ctx.sum_to(grad, like)


@gradient("Add")
@one_output
def add(ctx: GradContext, node: Node, dy: Value) -> list[Value | None]:
    a, b = node.inputs
    return [unbroadcast(ctx, dy, a, node), unbroadcast(ctx, dy, b, node)]


@gradient("Sub")
@one_output
def sub(ctx: GradContext, node: Node, dy: Value) -> list[Value | None]:
    a, b = node.inputs
    return [unbroadcast(ctx, dy, a, node), ctx.onnx("Neg", [unbroadcast(ctx, dy, b, node)])]


@gradient("Mul")
@one_output
def mul(ctx: GradContext, node: Node, dy: Value) -> list[Value | None]:
    a, b = node.inputs
    da = unbroadcast(ctx, ctx.onnx("Mul", [dy, b]), a, node)
    db = unbroadcast(ctx, ctx.onnx("Mul", [dy, a]), b, node)
    return [da, db]


@gradient("Div")
@one_output
def div(ctx: GradContext, node: Node, dy: Value) -> list[Value | None]:
    """Y = A / B: dA = dY / B and dB = -dY * A / B^2 = -(dY / B) * Y."""
    a, b = node.inputs
    dy_over_b = ctx.onnx("Div", [dy, b])
    db = unbroadcast(ctx, ctx.onnx("Mul", [dy_over_b, node.outputs[0]]), b, node)
    return [unbroadcast(ctx, dy_over_b, a, node), ctx.onnx("Neg", [db])]


@gradient("Neg")
@one_output
def neg(ctx: GradContext, node: Node, dy: Value) -> list[Value | None]:
    return [ctx.onnx("Neg", [dy])]


@gradient("Relu")
@one_output
def relu(ctx: GradContext, node: Node, dy: Value) -> list[Value | None]:
    return [ctx.op("ReluGrad", [dy, node.inputs[0]])]


@gradient("LeakyRelu")
@one_output
def leaky_relu(ctx: GradContext, node: Node, dy: Value) -> list[Value | None]:
    alpha = float(node.attrs.get("alpha", 0.01))
    return [ctx.op("LeakyReluGrad", [dy, node.inputs[0]], alpha=alpha)]


@gradient("Sigmoid")
@one_output
def sigmoid(ctx: GradContext, node: Node, dy: Value) -> list[Value | None]:
    return [ctx.op("SigmoidGrad", [dy, node.outputs[0]])]


@gradient("Tanh")
@one_output
def tanh(ctx: GradContext, node: Node, dy: Value) -> list[Value | None]:
    return [ctx.op("TanhGrad", [dy, node.outputs[0]])]
