"""Constant folding at convert time: a node whose inputs are all constants is evaluated
with the runtime kernel (prepare, then run) and its outputs become constants.

Not folded: nodes with nested graphs, non-deterministic kernels (random draws), nodes
that write variables, and nodes whose results are much bigger than what they derive from
(a ConstantOfShape making a large weight stays a node, so the file stays small). A node
that fails to prepare or run is left for the runtime to report.

"What they derive from" is the set of original constants a folded value was computed
from, not its immediate inputs: a result may take at most `growth` times the bytes of
those originals (or `small_bytes`), so a chain of Concat(c, c), Concat(k, Neg(k)) or Tile
nodes stops folding after a few steps instead of doubling c at every node. Past
MAX_SOURCES originals the set is not kept and their bytes are summed over the inputs,
which can count one original many times; so all results folded by one pass object on one
graph together may also take at most `budget_bytes` plus `budget_growth` times the graph's
constant bytes when folding began. What is not folded runs at run time, under the memory
budget.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgerun.converters.optimize import rewrite
from edgerun.converters.optimize.manager import Pass
from edgerun.runtime.graph import Graph, Node, Value
from edgerun.runtime.kernels import TensorSpec, resolve

GROWTH = 2  # a result may be this many times the bytes of the original constants it derives from...
SMALL_BYTES = 1024  # ...or this big, whichever is larger
BUDGET_BYTES = 64 << 20  # all folded results together: this many bytes...
BUDGET_GROWTH = 4  # ...plus this many times the graph's constant bytes before folding
MAX_SOURCES = 64  # original constants tracked per folded value


@dataclass(frozen=True)
class Origin:
    """The original constants a value derives from (`sources`; None when there were more
    than MAX_SOURCES) and their bytes (with sources None, a sum that may count one twice)."""

    sources: frozenset[Value] | None
    nbytes: int


class FoldConstants(Pass):
    """Folds constant nodes; one object keeps, per graph, where each folded value came from
    and how many bytes folding has added (optimize() makes one per call)."""

    name = "fold_constants"

    def __init__(self, growth: float = GROWTH, small_bytes: int = SMALL_BYTES,
                 budget_bytes: int = BUDGET_BYTES, budget_growth: float = BUDGET_GROWTH) -> None:
        self.growth = growth
        self.small_bytes = small_bytes
        self.budget_bytes = budget_bytes
        self.budget_growth = budget_growth
        self._graph: Graph | None = None
        self._origin: dict[Value, Origin] = {}  # folded value -> the original constants behind it
        self._sizes: dict[Value, int] = {}  # original constant -> its bytes
        self._left = 0  # bytes folding may still add to this graph

    def run(self, graph: Graph) -> dict[str, int]:
        if graph is not self._graph:
            self._start(graph)
        fed = rewrite.feeds(graph)
        folded = 0
        for node in list(graph.nodes):
            inputs = [None if v is None else rewrite.constant_data(v, fed) for v in node.inputs]
            if any(v is not None and a is None for v, a in zip(node.inputs, inputs, strict=True)):
                continue
            origin = self._origin_of(node, inputs)
            results = self._evaluate(node, inputs, origin.nbytes)
            if results is None:
                continue
            for value, array in zip(node.outputs, results, strict=False):
                if value is not None:
                    rewrite.make_constant(value, array)
                    self._origin[value] = origin
            graph.nodes.remove(node)
            folded += 1
        return {"nodes folded": folded} if folded else {}

    def _start(self, graph: Graph) -> None:
        self._graph, self._origin, self._sizes = graph, {}, {}
        held = sum(v.data.nbytes for v in graph.values() if v.is_constant)
        self._left = int(self.budget_bytes + self.budget_growth * held)

    def _origin_of(self, node: Node, inputs: list[np.ndarray | None]) -> Origin:
        """The original constants behind the node's constant inputs, and their bytes."""
        parts: dict[Value, Origin] = {}
        for value, array in zip(node.inputs, inputs, strict=True):
            if value is None or array is None or value in parts:
                continue
            if value not in self._origin:
                self._sizes.setdefault(value, array.nbytes)
                parts[value] = Origin(frozenset((value,)), self._sizes[value])
            else:
                parts[value] = self._origin[value]
        if all(p.sources is not None for p in parts.values()):
            sources = frozenset().union(*(p.sources for p in parts.values()))
            if len(sources) <= MAX_SOURCES:
                return Origin(sources, sum(self._sizes[v] for v in sources))
        return Origin(None, sum(p.nbytes for p in parts.values()))

    def _evaluate(self, node: Node, inputs: list[np.ndarray | None], origin: int) -> list[np.ndarray] | None:
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
            out_bytes = sum(s.nbytes for s in out_specs)
            if out_bytes > max(self.growth * origin, self.small_bytes) or out_bytes > self._left:
                return None
            outs = [np.empty(s.shape, s.dtype) for s in out_specs]
            kernel.run(list(inputs), outs)
        except Exception:  # noqa: BLE001 - the runtime reports it when the model runs
            return None
        self._left -= out_bytes
        return outs
