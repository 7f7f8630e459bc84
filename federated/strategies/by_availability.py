"""Selection weighted by past availability: a strategy wrapper.

`AvailabilityWeighted(strategy, weight)` selects as many clients as `strategy` would, drawn
without replacement with probability proportional to `weight(client_id)` (in the simulator:
federated.availability.Fleet.weight, the share of a device's past sessions long enough to
finish its round's work), so devices whose conditions tend to outlast a round are asked
first and fewer drop out mid-round. Everything else is the wrapped strategy's. Not for
differential privacy, whose accounting assumes a uniform cohort; the coordinator's
over-selected extras stay uniform (federated.rounds).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from edgerun.federated.strategies.base import Strategy
from edgerun.federated.typing import FitIns, NDArrays


class AvailabilityWeighted:
    """`strategy` with its fit selection weighted by `weight` (see the module docstring)."""

    def __init__(self, strategy: Strategy, weight: Callable[[str], float]) -> None:
        self.strategy, self.weight = strategy, weight

    def __getattr__(self, name: str) -> Any:  # every other stage and setting: the wrapped strategy's
        return getattr(self.strategy, name)

    def configure_fit(self, round: int, parameters: NDArrays, available: Sequence[str],
                      rng: np.random.Generator) -> tuple[list[str], FitIns]:
        """The wrapped strategy's cohort size and FitIns (NotEnoughClients as it raises it),
        with the clients redrawn from sorted(available) by weight. ValueError for a weight
        that is negative or not finite, or all weights 0."""
        chosen, ins = self.strategy.configure_fit(round, parameters, available, rng)
        pool = sorted(available)
        weights = np.array([self.weight(cid) for cid in pool], dtype=np.float64)
        if not np.all(np.isfinite(weights)) or np.any(weights < 0) or weights.sum() <= 0:
            raise ValueError(f"round {round}: selection weights must be finite, >= 0 and not all 0")
        picked = rng.choice(len(pool), size=len(chosen), replace=False, p=weights / weights.sum())
        return sorted(pool[i] for i in picked), ins
