"""The pass manager: runs graph passes in order, round after round, until a round changes
nothing (or `max_rounds` is reached), and reports what each pass did.

    report = optimize(graph)          # in place; the default passes
    print("\\n".join(report.lines()))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from edgerun.runtime.graph import Graph

MAX_ROUNDS = 8


class Pass:
    """One graph transformation. Subclasses set `name` and override `run`, which edits
    the top-level graph in place (nested bodies are left alone) and returns what it
    changed as {what: count}, empty when it changed nothing. A pass must keep every
    signature's outputs and variable updates equal, and pinned values (see
    `rewrite.pinned`) by object and name."""

    name: str = "pass"

    def run(self, graph: Graph) -> dict[str, int]:
        raise NotImplementedError


@dataclass
class PassSummary:
    """What one pass did over all rounds: nodes before its first run, nodes it removed in
    all, and its change counts summed over rounds."""

    name: str
    nodes_before: int
    nodes_removed: int = 0
    changes: dict[str, int] = field(default_factory=dict)

    @property
    def nodes_after(self) -> int:
        return self.nodes_before - self.nodes_removed

    def line(self) -> str:
        done = ", ".join(f"{what}: {n}" for what, n in self.changes.items()) or "no change"
        return f"{self.name}: {self.nodes_before} -> {self.nodes_after} nodes ({done})"


@dataclass
class OptimizeReport:
    """Node and constant counts of the top-level graph before and after, the rounds run,
    and one summary per pass in the order they ran."""

    nodes_before: int
    nodes_after: int = 0
    constants_before: int = 0
    constants_after: int = 0
    rounds: int = 0
    passes: list[PassSummary] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any(p.changes for p in self.passes)

    def lines(self) -> list[str]:
        """A header line, then one line per pass."""
        head = (f"optimized: {self.nodes_before} nodes -> {self.nodes_after} nodes, "
                f"{self.constants_before} -> {self.constants_after} constants in {self.rounds} round(s)")
        return [head, *("  " + p.line() for p in self.passes)]


def count_constants(graph: Graph) -> int:
    return sum(1 for v in graph.values() if v.is_constant)


def run_passes(graph: Graph, passes: Sequence[Pass], max_rounds: int = MAX_ROUNDS) -> OptimizeReport:
    """Run `passes` in order, round after round, until a round changes nothing or
    `max_rounds` rounds have run. Edits `graph` in place."""
    report = OptimizeReport(len(graph.nodes), constants_before=count_constants(graph))
    summaries = {p.name: PassSummary(p.name, len(graph.nodes)) for p in passes}
    for _ in range(max_rounds):
        report.rounds += 1
        changed = False
        for p in passes:
            summary, before = summaries[p.name], len(graph.nodes)
            if report.rounds == 1:
                summary.nodes_before = before
            changes = p.run(graph)
            summary.nodes_removed += before - len(graph.nodes)
            for what, n in changes.items():
                summary.changes[what] = summary.changes.get(what, 0) + n
            changed = changed or bool(changes)
        if not changed:
            break
    report.nodes_after = len(graph.nodes)
    report.constants_after = count_constants(graph)
    report.passes = list(summaries.values())
    return report
