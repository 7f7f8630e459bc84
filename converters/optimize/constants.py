"""Constant folding at convert time: a node whose inputs are all constants is evaluated
with the runtime kernel (prepare, then run) and its outputs become constants.

Not folded: nodes with nested graphs, non-deterministic kernels (random draws), nodes
that write variables, and nodes whose results are much bigger than their inputs (a
ConstantOfShape making a large weight stays a node, so the file stays small). A node
that fails to prepare or run is left for the runtime to report.
"""

from __future__ import annotations

import numpy as np

from edgerun.converters.optimize import rewrite
from edgerun.converters.optimize.manager import Pass
from edgerun.runtime.graph import Graph, Node
from edgerun.runtime.kernels import TensorSpec, resolve

GROWTH = 2  # a result may be this many times its inputs' bytes...
SMALL_BYTES = 1024  # ...or this big, whichever is larger


class FoldConstants(Pass):
    name = "fold_constants"

    def __init__(self, growth: float = GROWTH, small_bytes: int = SMALL_BYTES) -> None:
        self.growth = growth
        self.small_bytes = small_bytes

    def run(self, graph: Graph) -> dict[str, int]:
        fed = rewrite.feeds(graph)
        folded = 0
        for node in list(graph.nodes):
            inputs = [None if v is None else rewrite.constant_data(v, fed) for v in node.inputs]
            if any(v is not None and a is None for v, a in zip(node.inputs, inputs, strict=True)):
                continue
            results = self._evaluate(node, inputs)
            if results is None:
                continue
            for value, array in zip(node.outputs, results, strict=False):
                if value is not None:
                    rewrite.make_constant(value, array)
            graph.nodes.remove(node)
            folded += 1
        return {"nodes folded": folded} if folded else {}

    def _evaluate(self, node: Node, inputs: list[np.ndarray | None]) -> list[np.ndarray] | None:
        """The node's outputs, or None when it must not (or cannot) be folded."""
        if not any(a is not None for a in inputs) or rewrite.nested_graphs(node):
            return None
        if any(v is not None and v.is_variable for v in node.outputs):
            return None
        try:
            cls = resolve(node.domain, node.op_type, node.version, node.name)
            kernel = cls.for_node(node)
            if not kernel.deterministic:
                return None
            specs = [None if a is None else TensorSpec(a.dtype, a.shape) for a in inputs]
            out_specs = list(kernel.prepare(specs, list(inputs)))[: len(node.outputs)]
            if len(out_specs) < len(node.outputs):
                return None
            in_bytes = sum(a.nbytes for a in inputs if a is not None)
            if sum(s.nbytes for s in out_specs) > max(self.growth * in_bytes, self.small_bytes):
                return None
            outs = [np.empty(s.shape, s.dtype) for s in out_specs]
            kernel.run(list(inputs), outs)
        except Exception:  # noqa: BLE001 - the runtime reports it when the model runs
            return None
        return outs
