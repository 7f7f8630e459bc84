"""Gradient rules of the indexing and re-shaping ops: Gather, Slice, Split, Pad, Expand, Squeeze
and Unsqueeze.

Squeeze and Unsqueeze reshape dY back (ReshapeLike), Expand sums it back (SumTo), Split joins
the pieces' gradients (Concat; SplitGrad when a piece has none) and constant-mode Pad crops dY
with the negated pads (Pad). Gather, Slice and the other Pad modes use the gradient kernels of
runtime/kernels/shape_grad.py (GatherGrad, SliceGrad, PadGrad). Indices, bounds, shapes, axes,
split sizes and pads take no gradient; Pad's constant value takes the sum of dY over the padding.
"""

from __future__ import annotations

import numpy as np

from edgerun.converters.training.rules import GradContext, gradient
from edgerun.converters.training.rules.elementwise import one_output
from edgerun.runtime.graph import Node, Value


def _input(node: Node, index: int) -> Value | None:
    return node.inputs[index] if len(node.inputs) > index else None


def _pad(grads: list[Value | None], node: Node) -> list[Value | None]:
    """`grads` followed by None for the node's remaining inputs."""
    return grads + [None] * (len(node.inputs) - len(grads))


def _ints(ctx: GradContext, hint: str, values: list[int] | tuple[int, ...]) -> Value:
    return ctx.constant(hint, np.asarray(values, np.int64))


@gradient("Gather")
@one_output
def gather(ctx: GradContext, node: Node, dy: Value) -> list[Value | None]:
    """dX = GatherGrad(dY, X, indices): dY scatter-added into zeros shaped like X. For a
    trainable table that only Gathers on axis 0 read, make_trainable's sparse_embeddings
    replaces these nodes with one GatherGradSparse (the rows touched) and a sparse update."""
    x, indices = node.inputs
    return [ctx.op("GatherGrad", [dy, x, indices], axis=int(node.attrs.get("axis", 0))), None]


@gradient("Slice")
@one_output
def slice_(ctx: GradContext, node: Node, dy: Value) -> list[Value | None]:
    """dX = SliceGrad(dY, X, starts, ends[, axes, steps]); before opset 10 the bounds are
    attributes, which become constant inputs."""
    x = node.inputs[0]
    if node.version >= 10:
        bounds = list(node.inputs[1:])
    else:
        bounds = [_ints(ctx, key, node.attrs[key]) for key in ("starts", "ends")]
        if "axes" in node.attrs:
            bounds.append(_ints(ctx, "axes", node.attrs["axes"]))
    return _pad([ctx.op("SliceGrad", [dy, x, *bounds])], node)


@gradient("Split")
def split(ctx: GradContext, node: Node, grads: list[Value | None]) -> list[Value | None]:
    """dX = the pieces' gradients joined along the axis: Concat when every piece has one (and
    the axis is one Concat takes), else SplitGrad with zeros for the pieces without. Before
    opset 13 `split` may be an attribute; it becomes a constant input."""
    grads = (list(grads) + [None] * len(node.outputs))[: len(node.outputs)]
    if all(g is None for g in grads):
        return [None] * len(node.inputs)
    axis = int(node.attrs.get("axis", 0))
    if all(g is not None for g in grads) and (axis >= 0 or ctx.opset >= 11):
        dx = grads[0] if len(grads) == 1 else ctx.onnx("Concat", grads, axis=axis)
        return _pad([dx], node)
    sizes = _input(node, 1)
    if node.version < 13 and "split" in node.attrs:
        sizes = _ints(ctx, "split", node.attrs["split"])
    return _pad([ctx.op("SplitGrad", [node.inputs[0], sizes, *grads], axis=axis)], node)


@gradient("Pad")
def pad(ctx: GradContext, node: Node, grads: list[Value | None]) -> list[Value | None]:
    """constant mode: dX = Pad(dY, -pads), which crops what the forward padded and zero-pads
    what it cropped; the constant value (input 2, when given and needing one) gets sum(dY) -
    sum(dX), reshaped like it. reflect, edge, wrap: dX = PadGrad(dY, X, pads[, axes])."""
    if grads[0] is None:
        return [None] * len(node.inputs)
    dy, x = grads[0], node.inputs[0]
    mode = str(node.attrs.get("mode", "constant"))
    pads, axes = _pads(ctx, node), _input(node, 3)
    if mode != "constant":
        return _pad([ctx.op("PadGrad", [dy, x, pads] + ([axes] if axes is not None else []), mode=mode)], node)
    negated = ctx.constant("pads", -pads.data) if pads.is_constant else ctx.onnx("Neg", [pads])
    if ctx.opset >= 11:
        dx = ctx.onnx("Pad", [dy, negated] + ([None, axes] if axes is not None else []))
    else:  # the model's opset takes pads as an attribute (so they were constant)
        key = "pads" if ctx.opset >= 2 else "paddings"
        dx = ctx.onnx("Pad", [dy], **{key: [int(p) for p in negated.data]})
    value = _input(node, 2)
    if value is None or not ctx.needs_grad(value):
        return _pad([dx], node)
    total = ctx.onnx("Sub", [ctx.onnx("ReduceSum", [dy], keepdims=0), ctx.onnx("ReduceSum", [dx], keepdims=0)])
    return _pad([dx, None, ctx.op("ReshapeLike", [total, value])], node)


def _pads(ctx: GradContext, node: Node) -> Value:
    """The pads as a value: input 1 from opset 11, before that a constant made from the
    attribute (`paddings` in opset 1)."""
    if node.version >= 11:
        return node.inputs[1]
    return _ints(ctx, "pads", node.attrs["pads" if node.version >= 2 else "paddings"])


@gradient("Expand")
@one_output
def expand(ctx: GradContext, node: Node, dy: Value) -> list[Value | None]:
    """dX = SumTo(dY, X): summed over the axes Expand broadcast."""
    return [ctx.sum_to(dy, node.inputs[0]), None]


@gradient("Squeeze")
@one_output
def squeeze(ctx: GradContext, node: Node, dy: Value) -> list[Value | None]:
    return _pad([ctx.op("ReshapeLike", [dy, node.inputs[0]])], node)


@gradient("Unsqueeze")
@one_output
def unsqueeze(ctx: GradContext, node: Node, dy: Value) -> list[Value | None]:
    return _pad([ctx.op("ReshapeLike", [dy, node.inputs[0]])], node)
