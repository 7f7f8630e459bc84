"""Reverse-mode differentiation over forward nodes: the one loop that turns the gradient rules
(converters.training.rules) into backward nodes.

make_trainable's train signature and the ONNX Gradient op (converters.gradient_op) both build
their backward graphs with `backpropagate`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from edgerun.converters.training.rules import GradContext, gradient_rule
from edgerun.runtime.errors import ConversionError
from edgerun.runtime.graph import Node, Value


def dependents(nodes: Iterable[Node], wrt: Iterable[Value]) -> set[Value]:
    """`wrt` and every value that `nodes` (in topological order) compute from them."""
    found = set(wrt)
    for node in nodes:
        if any(v in found for v in node.inputs if v is not None):
            found.update(v for v in node.outputs if v is not None)
    return found


def backpropagate(
    ctx: GradContext, nodes: list[Node], seeds: Mapping[Value, Value], wrt: Iterable[Value]
) -> dict[Value, Value]:
    """Gradients of the seeded values, built as nodes in `ctx` by the gradient rules.

    `nodes` are the forward nodes in topological order; `seeds` maps each differentiated value
    to its incoming gradient (ones for a loss). Returns value -> gradient for the seeds, for
    every value of `wrt` a gradient reaches and for the values between them; a value of `wrt`
    no gradient reaches is absent. Sets `ctx.needs_grad` to "depends on `wrt`".

    Raises ConversionError naming the node and its op when a gradient must flow back through
    an op that has no gradient rule.
    """
    depends = dependents(nodes, wrt)
    ctx.needs_grad = lambda v: v in depends
    grads: dict[Value, Value] = dict(seeds)
    for node in reversed(nodes):
        out_grads = [None if v is None else grads.get(v) for v in node.outputs]
        if all(g is None for g in out_grads) or not depends.intersection(node.inputs):
            continue
        rule = gradient_rule(node.op_type)
        if rule is None:
            raise ConversionError(f"node {node.name!r}: op {node.op_type!r} has no gradient")
        in_grads = rule(ctx, node, out_grads)
        for value, grad in zip(node.inputs, in_grads, strict=True):
            if value is None or grad is None or value not in depends:
                continue
            previous = grads.get(value)
            grads[value] = grad if previous is None else ctx.onnx("Add", [previous, grad])
    return grads
