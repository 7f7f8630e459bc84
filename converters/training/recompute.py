"""Recompute cheap activations in the backward pass instead of keeping them: memory for time.

A train signature keeps every forward value that a backward node reads alive in the arena
from the forward pass until that read. In a MobileNetV2 block, Conv -> Clip (Relu6) ->
depthwise Conv, the backward reads the first Conv's output (ClipGrad's X) and the Clip's
output (the depthwise ConvGrad's X): two tensors of the same size stay alive across the
backward of every later layer. Recomputing the Clip right before the depthwise ConvGrad,
from the Conv output the backward keeps anyway, leaves one of the two alive (the
"recompute cheap pointwise ops" rule of activation checkpointing; cf. Chen et al. 2016,
"Training Deep Nets with Sublinear Memory Cost", which recomputes whole segments).

    nodes, names = recompute_activations(forward_nodes, backward_nodes, free=signature_inputs)

A forward node is recomputed when it is cheap (one elementwise pass: an activation, Clip,
an Add/Sub/Mul/Div, an inference-mode BatchNormalization), has one output that a backward
node reads, and every input it reads is a constant, a variable, a signature input or a value
the backward keeps alive at that point anyway. The copy then never extends another value's
life, so the arena never grows; the forward value dies after its last forward reader.
"""

from __future__ import annotations

from collections.abc import Iterable

from edgerun.runtime.errors import EdgerunError
from edgerun.runtime.graph import Node, Value

# One pass over the elements each, reading tensors the backward may hold anyway.
RECOMPUTABLE_OPS = frozenset({
    "Relu", "Clip", "LeakyRelu", "HardSwish", "HardSigmoid", "Sigmoid", "Tanh", "Elu", "Selu", "Celu",
    "Softplus", "Softsign", "Gelu", "Erf", "Neg", "Abs", "Add", "Sub", "Mul", "Div", "PRelu",
    "BatchNormalization",
})


def recompute_activations(
    forward: list[Node], backward: list[Node], free: Iterable[Value] = ()
) -> tuple[list[Node], list[str]]:
    """The backward nodes with cheap forward values recomputed just before their first reader,
    and the names of the forward values so recomputed (in forward order).

    `forward` and `backward` are node lists in execution order (backward runs after forward);
    `free` are values available throughout (the signature's inputs). Backward nodes that read a
    recomputed value are rewired to its copy in place; `forward` is not changed. A value made
    by a node that is not cheap, or whose inputs the backward would have to keep longer for
    it, is kept as before.
    """
    free = set(free)
    readers: dict[Value, list[int]] = {}
    for position, node in enumerate(backward):
        shape_only = _shape_only_inputs(node)
        for i, v in enumerate(node.inputs):
            if v is not None and i not in shape_only:  # (a read of its shape alone keeps no bytes alive)
                readers.setdefault(v, []).append(position)
    copies: dict[Value, Value] = {}  # forward value -> its recomputed copy
    made_at: dict[Value, int] = {}  # recomputed copy -> the backward position it is made before
    inserts: dict[int, list[Node]] = {}
    recomputed: list[str] = []

    def alive_at(value: Value | None, position: int) -> bool:
        if value is None or value.is_constant or value.is_variable or value in free:
            return True
        value = copies.get(value, value)
        later = [p for p in readers.get(value, ()) if p >= position]
        return bool(later) and made_at.get(value, -1) <= position

    for node in forward:
        if not _cheap(node):
            continue
        out = node.outputs[0]
        positions = readers.get(out)
        if not positions:
            continue
        first = min(positions)
        if not all(alive_at(v, first) for v in node.inputs):
            continue
        copy = Value(f"{out.name}/recomputed", out.dtype, out.shape)
        inputs = [None if v is None else copies.get(v, v) for v in node.inputs]
        inserts.setdefault(first, []).append(
            Node(node.op_type, inputs, [copy], dict(node.attrs), f"{node.name}/recomputed", node.domain,
                 node.version))
        for v in inputs:
            if v is not None:
                readers.setdefault(v, []).append(first)
        for position in positions:
            reader = backward[position]
            reader.inputs = [copy if v is out else v for v in reader.inputs]
        readers[copy], readers[out] = positions, []
        copies[out], made_at[copy] = copy, first
        recomputed.append(out.name)
    nodes: list[Node] = []
    for position, node in enumerate(backward):
        nodes.extend(inserts.get(position, ()))
        nodes.append(node)
    return nodes, recomputed


def _shape_only_inputs(node: Node) -> tuple[int, ...]:
    """The inputs whose contents `node`'s kernel never reads (runtime.kernels.base.Kernel)."""
    from edgerun.runtime.kernels import resolve

    try:
        return resolve(node.domain, node.op_type, node.version, node.name).shape_only_inputs
    except EdgerunError:  # an op the runtime lacks fails when the model loads, not here
        return ()


def _cheap(node: Node) -> bool:
    """One output, an elementwise op (BatchNormalization only in inference mode)."""
    if node.op_type not in RECOMPUTABLE_OPS or node.domain not in ("", "ai.onnx"):
        return False
    if len([v for v in node.outputs if v is not None]) != 1 or node.outputs[0] is None:
        return False
    if node.op_type == "BatchNormalization" and (len(node.outputs) != 1 or node.attrs.get("training_mode", 0)):
        return False
    return True


__all__ = ["RECOMPUTABLE_OPS", "recompute_activations"]
