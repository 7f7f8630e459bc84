"""Gradient rules of the shape ops: Reshape, Flatten, Transpose, Concat, Identity.

Reshape and Flatten reshape dY back to the input's shape (ReshapeLike), Transpose applies the
inverse permutation and Concat splits dY by the inputs' sizes (ConcatGrad).
"""

from __future__ import annotations

import numpy as np

from edgerun.converters.training.rules import GradContext, gradient
from edgerun.converters.training.rules.elementwise import one_output
from edgerun.runtime.graph import Node, Value


@gradient("Reshape")
@one_output
def reshape(ctx: GradContext, node: Node, dy: Value) -> list[Value | None]:
    """The shape input takes no gradient."""
    return [ctx.op("ReshapeLike", [dy, node.inputs[0]]), None]


@gradient("Flatten")
@one_output
def flatten(ctx: GradContext, node: Node, dy: Value) -> list[Value | None]:
    return [ctx.op("ReshapeLike", [dy, node.inputs[0]])]


@gradient("Transpose")
@one_output
def transpose(ctx: GradContext, node: Node, dy: Value) -> list[Value | None]:
    """The inverse permutation; without `perm` the forward reverses the axes, and so does its
    inverse."""
    perm = node.attrs.get("perm")
    if perm is None:
        return [ctx.onnx("Transpose", [dy])]
    return [ctx.onnx("Transpose", [dy], perm=[int(p) for p in np.argsort(perm)])]


@gradient("Concat")
@one_output
def concat(ctx: GradContext, node: Node, dy: Value) -> list[Value | None]:
    """ConcatGrad with the forward axis (default 1, as before opset 4; required from 4)."""
    axis = int(node.attrs.get("axis", 1))
    grads = ctx.op("ConcatGrad", [dy, *node.inputs], num_outputs=len(node.inputs), axis=axis)
    return grads if isinstance(grads, list) else [grads]


@gradient("Identity")
@one_output
def identity(ctx: GradContext, node: Node, dy: Value) -> list[Value | None]:
    return [dy]
