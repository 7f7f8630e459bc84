"""Gradient rules of Conv and the pools: each is one edgerun gradient kernel that carries the
forward node's window attributes (kernels in runtime/kernels/conv.py, pool.py and global_pool.py)."""

from __future__ import annotations

from typing import Any

from edgerun.converters.training.rules import GradContext, gradient
from edgerun.runtime.errors import ConversionError
from edgerun.runtime.graph import Node, Value

WINDOW_ATTRS = ("auto_pad", "dilations", "kernel_shape", "pads", "strides")
CONV_ATTRS = WINDOW_ATTRS + ("group",)
MAX_POOL_ATTRS = WINDOW_ATTRS + ("ceil_mode",)
AVERAGE_POOL_ATTRS = WINDOW_ATTRS + ("ceil_mode", "count_include_pad")


def _attrs(node: Node, keys: tuple[str, ...]) -> dict[str, Any]:
    return {key: node.attrs[key] for key in keys if key in node.attrs}


@gradient("Conv")
def conv(ctx: GradContext, node: Node, grads: list[Value | None]) -> list[Value | None]:
    """dX and dW, and dB when the node has a bias, from one ConvGrad(dY, X, W) node. When X
    needs no gradient (`ctx.needs_grad`), ConvGrad gets compute_dx=0, which drops its dX
    output (its outputs are then dW[, dB]), and X gets None."""
    if grads[0] is None:
        return [None] * len(node.inputs)
    has_bias = len(node.inputs) > 2 and node.inputs[2] is not None
    inputs, attrs = [grads[0], node.inputs[0], node.inputs[1]], _attrs(node, CONV_ATTRS)
    if ctx.needs_grad(node.inputs[0]):
        results = ctx.op("ConvGrad", inputs, num_outputs=3 if has_bias else 2, **attrs)
    elif has_bias:
        results = [None, *ctx.op("ConvGrad", inputs, num_outputs=2, compute_dx=0, **attrs)]
    else:
        results = [None, ctx.op("ConvGrad", inputs, compute_dx=0, **attrs)]
    return results + [None] * (len(node.inputs) - len(results))


@gradient("FusedConv")
def fused_conv(ctx: GradContext, node: Node, grads: list[Value | None]) -> list[Value | None]:
    """edgerun:FusedConv(X, W, B, Z) = Conv(X, W, B) + Z, the optimizer's residual fusion
    (converters/optimize/residual.py; make_trainable splits off a fused activation first):
    Conv's gradients for X, W and B, and dZ = dY summed to Z's shape. The forward keeps the
    fused kernel."""
    if grads[0] is None:
        return [None] * len(node.inputs)
    if node.attrs.get("activation"):
        raise ConversionError(f"node {node.name!r}: a FusedConv with a fused activation has no gradient; "
                              "split it first (converters.optimize.unfuse_activations)")
    conv_node = Node("Conv", list(node.inputs[:3]), node.outputs, node.attrs, node.name)
    results = conv(ctx, conv_node, grads)
    if len(node.inputs) < 4:
        return results
    z, out = node.inputs[3], node.outputs[0]
    if z is None:
        return [*results, None]
    same = z.shape is not None and z.shape == out.shape and all(d >= 0 for d in z.shape)
    return [*results, grads[0] if same else ctx.sum_to(grads[0], z)]


@gradient("MaxPool")
def max_pool(ctx: GradContext, node: Node, grads: list[Value | None]) -> list[Value | None]:
    """dX = MaxPoolGrad(dY, X); the Indices output takes no gradient."""
    if grads[0] is None:
        return [None]
    return [ctx.op("MaxPoolGrad", [grads[0], node.inputs[0]], **_attrs(node, MAX_POOL_ATTRS))]


@gradient("AveragePool")
def average_pool(ctx: GradContext, node: Node, grads: list[Value | None]) -> list[Value | None]:
    """dX = AveragePoolGrad(dY, X)."""
    if grads[0] is None:
        return [None]
    return [ctx.op("AveragePoolGrad", [grads[0], node.inputs[0]], **_attrs(node, AVERAGE_POOL_ATTRS))]


@gradient("GlobalAveragePool")
def global_average_pool(ctx: GradContext, node: Node, grads: list[Value | None]) -> list[Value | None]:
    """dX = GlobalAveragePoolGrad(dY, X)."""
    if grads[0] is None:
        return [None]
    return [ctx.op("GlobalAveragePoolGrad", [grads[0], node.inputs[0]])]
