"""Identity and inference-mode Dropout removal: their output is their input.

A removed node's consumers read its input directly. When the output is pinned (a
graph/signature output), the node producing the input is made to produce the output
Value itself, so the output keeps its name; when that is impossible (the input is a
graph input, a constant or pinned too) the node stays.
"""

from __future__ import annotations

import numpy as np

from edgerun.converters.optimize import rewrite
from edgerun.converters.optimize.manager import Pass
from edgerun.runtime.graph import Graph, Node


class RemoveIdentity(Pass):
    name = "remove_identity"

    def run(self, graph: Graph) -> dict[str, int]:
        fed, keep = rewrite.feeds(graph), rewrite.pinned(graph)
        users = rewrite.consumers(graph)
        removed: dict[str, int] = {}
        for node in list(graph.nodes):
            if _is_pass_through(node, fed, users, keep) and _bypass(graph, node, keep):
                graph.nodes.remove(node)
                removed[f"{node.op_type} removed"] = removed.get(f"{node.op_type} removed", 0) + 1
        return removed


def _is_pass_through(node: Node, fed: set, users: dict, keep: set) -> bool:
    """An ONNX Identity, or a Dropout that cannot be in training mode and whose mask
    output nobody reads."""
    if node.domain != "" or not node.inputs or node.inputs[0] is None or node.outputs[0] is None:
        return False
    if node.op_type == "Identity":
        return len(node.inputs) == 1 and len(node.outputs) == 1
    if node.op_type != "Dropout" or node.version < 7:
        return False
    if len(node.inputs) > 2 and node.inputs[2] is not None:
        mode = rewrite.constant_data(node.inputs[2], fed)
        if mode is None or mode.size != 1 or bool(np.asarray(mode).reshape(())):
            return False
    return all(m is None or (not users.get(m) and m not in keep) for m in node.outputs[1:])


def _bypass(graph: Graph, node: Node, keep: set) -> bool:
    """Rewire the graph around `node`; False (nothing changed) when it must stay."""
    source, result = node.inputs[0], node.outputs[0]
    if result not in keep:
        rewrite.replace_value(graph, result, source)
        return True
    producer = rewrite.producers(graph).get(source)
    if producer is None or source in keep:
        return False
    producer.outputs = [result if v is source else v for v in producer.outputs]
    rewrite.replace_value(graph, source, result)
    if result.dtype is None:
        result.dtype, result.shape = source.dtype, source.shape
    return True
