"""Gradient rules of MatMul, Gemm, Softmax and LogSoftmax, through the gradient kernels in
runtime/kernels/linalg.py (MatMulGrad, GemmGrad) and softmax.py (SoftmaxGrad, LogSoftmaxGrad)."""

from __future__ import annotations

from typing import Any

from edgerun.converters.training.rules import GradContext, gradient
from edgerun.converters.training.rules.elementwise import one_output
from edgerun.runtime.graph import Node, Value

GEMM_ATTRS = ("alpha", "beta", "transA", "transB")


@gradient("MatMul")
@one_output
def matmul(ctx: GradContext, node: Node, dy: Value) -> list[Value | None]:
    return ctx.op("MatMulGrad", [dy, *node.inputs], num_outputs=2)


@gradient("Gemm")
@one_output
def gemm(ctx: GradContext, node: Node, dy: Value) -> list[Value | None]:
    """GemmGrad with the forward attributes; three outputs when C is given, else two (and None
    for an omitted C slot)."""
    a, b = node.inputs[:2]
    c = node.inputs[2] if len(node.inputs) > 2 else None
    inputs = [dy, a, b] + ([c] if c is not None else [])
    attrs = {key: node.attrs[key] for key in GEMM_ATTRS if key in node.attrs}
    grads = ctx.op("GemmGrad", inputs, num_outputs=len(inputs) - 1, **attrs)
    return grads + [None] * (len(node.inputs) - len(grads))


def softmax_attrs(node: Node) -> dict[str, Any]:
    """The axis semantics of a Softmax/LogSoftmax node as SoftmaxGrad attributes: before opset 13
    the 2-D view at `axis` (default 1, flatten=1), from 13 one axis (default -1, flatten=0)."""
    if node.version < 13:
        return {"axis": int(node.attrs.get("axis", 1)), "flatten": 1}
    return {"axis": int(node.attrs.get("axis", -1)), "flatten": 0}


@gradient("Softmax")
@one_output
def softmax(ctx: GradContext, node: Node, dy: Value) -> list[Value | None]:
    return [ctx.op("SoftmaxGrad", [dy, node.outputs[0]], **softmax_attrs(node))]


@gradient("LogSoftmax")
@one_output
def log_softmax(ctx: GradContext, node: Node, dy: Value) -> list[Value | None]:
    return [ctx.op("LogSoftmaxGrad", [dy, node.outputs[0]], **softmax_attrs(node))]
