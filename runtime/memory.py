"""What one run of a signature holds in memory: its arena, the weights it reads and the state.

    report = Interpreter("mnv2.train.erm").memory_report("train")
    report.total_bytes    # arena + constant weights + variables
    print(report)         # "train: 97.4 MiB (arena 73.5, weights 13.3, variables 5.3, optimizer state 5.3)"

The arena is the activation memory `runtime.arena` planned for the signature's prepared
input shapes (resize an input first to ask about another batch size). Weights are the
constants its nodes (and the bodies of its control-flow nodes) read, each counted once
(memory-mapped from the file when the model was loaded from one). Variables are the interpreter's writable
state (trained parameters, running statistics); the optimizer's share of it (momentum,
Adam moments), named by the model's training metadata, is reported apart as well.
"""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1 << 20


@dataclass(frozen=True)
class MemoryReport:
    """Bytes of one signature's run: `arena_bytes` + `weight_bytes` + `variable_bytes` in all.

    `optimizer_state_bytes` is the part of `variable_bytes` that is optimizer state (0 for a
    model that was not made trainable)."""

    signature: str
    arena_bytes: int
    weight_bytes: int
    variable_bytes: int
    optimizer_state_bytes: int = 0

    @property
    def total_bytes(self) -> int:
        return self.arena_bytes + self.weight_bytes + self.variable_bytes

    def fits(self, budget_bytes: int) -> bool:
        """Whether the whole run (arena, weights and variables) fits `budget_bytes`."""
        return self.total_bytes <= budget_bytes

    def __str__(self) -> str:
        parts = [f"arena {self.arena_bytes / MiB:.1f}", f"weights {self.weight_bytes / MiB:.1f}",
                 f"variables {self.variable_bytes / MiB:.1f}"]
        if self.optimizer_state_bytes:
            parts.append(f"optimizer state {self.optimizer_state_bytes / MiB:.1f}")
        return f"{self.signature}: {self.total_bytes / MiB:.1f} MiB ({', '.join(parts)})"


__all__ = ["MemoryReport"]
