"""Gradient rules of GlobalMaxPool, Resize and ConvTranspose, through the gradient kernels in
runtime/kernels/spatial_grad.py, which carry the forward node's attributes."""

from __future__ import annotations

from edgerun.converters.training.rules import GradContext, gradient
from edgerun.runtime.graph import Node, Value


@gradient("GlobalMaxPool")
def global_max_pool(ctx: GradContext, node: Node, grads: list[Value | None]) -> list[Value | None]:
    """dX = GlobalMaxPoolGrad(dY, X): dY goes to the first maximum of each plane."""
    if grads[0] is None:
        return [None]
    return [ctx.op("GlobalMaxPoolGrad", [grads[0], node.inputs[0]])]


@gradient("Resize")
def resize(ctx: GradContext, node: Node, grads: list[Value | None]) -> list[Value | None]:
    """dX = ResizeGrad(dY, X, *roi/scales/sizes) with the forward attributes and opset; roi,
    scales and sizes take no gradient."""
    if grads[0] is None:
        return [None] * len(node.inputs)
    dx = ctx.op("ResizeGrad", [grads[0], *node.inputs], resize_version=node.version, **node.attrs)
    return [dx] + [None] * (len(node.inputs) - 1)


@gradient("ConvTranspose")
def conv_transpose(ctx: GradContext, node: Node, grads: list[Value | None]) -> list[Value | None]:
    """dX and dW, and dB when the node has a bias, from one ConvTransposeGrad(dY, X, W) node
    with the forward attributes. When X needs no gradient (`ctx.needs_grad`) the node gets
    compute_dx=0, which drops its dX output, and X gets None."""
    if grads[0] is None:
        return [None] * len(node.inputs)
    has_bias = len(node.inputs) > 2 and node.inputs[2] is not None
    inputs = [grads[0], node.inputs[0], node.inputs[1]]
    count = 2 if has_bias else 1
    if ctx.needs_grad(node.inputs[0]):
        results = ctx.op("ConvTransposeGrad", inputs, num_outputs=count + 1, **node.attrs)
    else:
        made = ctx.op("ConvTransposeGrad", inputs, num_outputs=count, compute_dx=0, **node.attrs)
        results = [None, *(made if has_bias else [made])]
    return results + [None] * (len(node.inputs) - len(results))
