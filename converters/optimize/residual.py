"""A Conv whose output is added to another tensor of the same shape (a residual connection:
ResNet, MobileNetV2, ShuffleNet) becomes one edgerun:FusedConv(X, W, B, Z): the kernel adds Z
while its output is still in cache, and a Relu after the Add then fuses into it too
(fuse_activations runs after this pass). An Add or a two-input Sum qualifies when one operand
is made by a Conv without a fused activation that nothing else reads, and the optimizer's
shape inference finds both operands the same shape (a dimension that follows the inputs must
follow them alike). FusedConv re-checks at prepare time that Z broadcasts to its output.
"""

from __future__ import annotations

from edgerun.converters.optimize import rewrite
from edgerun.converters.optimize.infer import infer
from edgerun.converters.optimize.manager import Pass
from edgerun.runtime.graph import Graph, Node

FUSED_DOMAIN, FUSED_OP = "edgerun", "FusedConv"


class FuseResidualAdd(Pass):
    name = "fuse_residual_add"

    def run(self, graph: Graph) -> dict[str, int]:
        keep = rewrite.pinned(graph)
        users, made = rewrite.consumers(graph), rewrite.producers(graph)
        facts = None
        fused = 0
        for add in list(graph.nodes):
            if not _is_binary_add(add):
                continue
            facts = infer(graph) if facts is None else facts
            for x, z in (add.inputs, add.inputs[::-1]):
                conv = made.get(x)
                if (conv is None or conv.op_type != "Conv" or conv.domain != "" or "activation" in conv.attrs
                        or len(conv.outputs) != 1 or rewrite.sole_consumer(x, users, keep) is not add
                        or z is x):
                    continue
                fx, fz = facts.get(x), facts.get(z)
                if fx is None or fz is None or fx.dtype.kind != "f" or fx != fz:
                    continue
                _fuse(graph, conv, add, z)
                fused += 1
                break
        return {"Add into Conv (FusedConv)": fused} if fused else {}


def _is_binary_add(node: Node) -> bool:
    return (node.domain == "" and len(node.inputs) == 2 and None not in node.inputs
            and ((node.op_type == "Add" and node.version >= 7) or (node.op_type == "Sum" and node.version >= 8)))


def _fuse(graph: Graph, conv: Node, add: Node, z) -> None:  # noqa: ANN001 - a graph Value
    """Turn `conv` into a FusedConv that adds `z` and writes `add`'s output, in `add`'s place
    (z may be made after the Conv: ResNet's shortcut branch); drop `add`."""
    inputs = list(conv.inputs) + [None] * (3 - len(conv.inputs))
    conv.op_type, conv.domain, conv.version = FUSED_OP, FUSED_DOMAIN, 1
    conv.inputs = [*inputs[:3], z]
    conv.outputs = [add.outputs[0]]
    graph.nodes.remove(conv)
    graph.nodes[graph.nodes.index(add)] = conv
