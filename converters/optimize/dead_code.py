"""Dead-node and unused-constant elimination: keeps only the nodes that some signature
output or variable update depends on (through node inputs and through everything the
node's nested graphs refer to). Constants no remaining node reads disappear with them:
a graph holds the values its nodes, inputs and signatures refer to.
"""

from __future__ import annotations

from edgerun.converters.optimize import rewrite
from edgerun.converters.optimize.manager import Pass, count_constants
from edgerun.runtime.graph import Graph, reachable_nodes


class EliminateDeadCode(Pass):
    name = "eliminate_dead_code"

    def run(self, graph: Graph) -> dict[str, int]:
        needed = reachable_nodes(graph, rewrite.roots(graph), reads=rewrite.used_values)
        dead = len(graph.nodes) - len(needed)
        if not dead:
            return {}
        constants = count_constants(graph)
        graph.nodes = needed
        changes = {"nodes removed": dead}
        if count_constants(graph) < constants:
            changes["constants removed"] = constants - count_constants(graph)
        return changes
