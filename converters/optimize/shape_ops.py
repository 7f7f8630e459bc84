"""Shape-op folding: `Shape` and `Size` of a value whose shape is static (the same for
every input shape, see `infer`) become constants. Constant folding then finishes the
Shape -> Gather -> Concat -> Reshape chains that read them.
"""

from __future__ import annotations

import numpy as np

from edgerun.converters.optimize import rewrite
from edgerun.converters.optimize.infer import Facts, infer
from edgerun.converters.optimize.manager import Pass
from edgerun.runtime.graph import Graph, Node

_OPS = ("Shape", "Size")


class FoldShapeOps(Pass):
    name = "fold_shape_ops"

    def run(self, graph: Graph) -> dict[str, int]:
        candidates = [n for n in graph.nodes if n.op_type in _OPS and n.domain == "" and n.inputs
                      and n.inputs[0] is not None and n.outputs[0] is not None]
        if not candidates:
            return {}
        facts = infer(graph)
        keep = rewrite.pinned(graph)
        folded: dict[str, int] = {}
        for node in candidates:
            fact = facts.get(node.inputs[0])
            if fact is None or not fact.static or any(v in keep for v in node.outputs[1:]):
                continue
            rewrite.make_constant(node.outputs[0], _evaluate(node, fact))
            graph.nodes.remove(node)
            folded[f"{node.op_type} folded"] = folded.get(f"{node.op_type} folded", 0) + 1
        return folded


def _evaluate(node: Node, fact: Facts) -> np.ndarray:
    """The int64 result of Shape (with opset-15 start/end) or Size of a static shape."""
    shape = fact.shape
    if node.op_type == "Size":
        return np.array(int(np.prod(shape, dtype=np.int64)), dtype=np.int64)
    rank = len(shape)
    start, end = int(node.attrs.get("start", 0)), int(node.attrs.get("end", rank))
    start, end = (min(max(i + rank if i < 0 else i, 0), rank) for i in (start, end))
    return np.array(shape[start:end], dtype=np.int64)
