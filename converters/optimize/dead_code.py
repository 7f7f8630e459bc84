"""Dead-node and unused-constant elimination: keeps only the nodes that some signature
output or variable update depends on (through node inputs and through everything the
node's nested graphs refer to). Constants no remaining node reads disappear with them:
a graph holds the values its nodes, inputs and signatures refer to.
"""

from __future__ import annotations

from edgerun.converters.optimize import rewrite
from edgerun.converters.optimize.manager import Pass, count_constants
from edgerun.runtime.graph import Graph


class EliminateDeadCode(Pass):
    name = "eliminate_dead_code"

    def run(self, graph: Graph) -> dict[str, int]:
        made = rewrite.producers(graph)
        needed: set[int] = set()
        stack = [made[v] for v in rewrite.roots(graph) if v in made]
        while stack:
            node = stack.pop()
            if id(node) in needed:
                continue
            needed.add(id(node))
            stack.extend(made[v] for v in rewrite.used_values(node) if v in made)
        dead = len(graph.nodes) - len(needed)
        if not dead:
            return {}
        constants = count_constants(graph)
        graph.nodes = [n for n in graph.nodes if id(n) in needed]
        changes = {"nodes removed": dead}
        if count_constants(graph) < constants:
            changes["constants removed"] = constants - count_constants(graph)
        return changes
