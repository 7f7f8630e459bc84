"""Byzantine-robust strategies: coordinate-wise median, trimmed mean and (multi-)Krum.

They look at each client's delta, so they cannot run under secure aggregation
(`needs_individual_updates`; `aggregate_sum` raises SumAggregationUnsupported). They are
unweighted on purpose: weighting by the self-reported num_examples would let one
attacker claim a huge count and dominate the aggregate.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgerun.federated.aggregate import apply_delta, coordinate_median, krum, trimmed_mean
from edgerun.federated.strategies.base import Strategy, require_int, require_range
from edgerun.federated.typing import FitRes, Metrics, NDArrays


@dataclass(kw_only=True)
class FedMedian(Strategy):
    """x <- x + coordinate-wise median of the deltas (Yin et al. 2018)."""

    needs_individual_updates = True

    def aggregate_updates(
        self, round: int, parameters: NDArrays, results: list[tuple[str, FitRes]]
    ) -> tuple[NDArrays, Metrics]:
        return apply_delta(parameters, coordinate_median([res.delta for _, res in results])), {}


@dataclass(kw_only=True)
class FedTrimmedAvg(Strategy):
    """x <- x + coordinate-wise mean of the deltas after dropping floor(beta * n) of the
    smallest and of the largest values (Yin et al. 2018); beta in [0, 0.5)."""

    needs_individual_updates = True
    beta: float = 0.2

    def __post_init__(self) -> None:
        super().__post_init__()
        require_range("beta", self.beta, 0.0, 0.5, high_open=True)

    def aggregate_updates(
        self, round: int, parameters: NDArrays, results: list[tuple[str, FitRes]]
    ) -> tuple[NDArrays, Metrics]:
        return apply_delta(parameters, trimmed_mean([res.delta for _, res in results], self.beta)), {}


@dataclass(kw_only=True)
class Krum(Strategy):
    """x <- x + the delta with the lowest Krum score (Blanchard et al. 2017), or the mean of
    the `num_selected` lowest (multi-Krum), tolerating `num_byzantine` = f attackers.

    Krum needs n > 2f + 2 usable results, so `required_results()` is at least 2f + 3 and
    fewer raise RoundFailed. num_selected must be in [1, n - f] for the n results aggregated
    (ValueError otherwise). Metrics hold "krum_selected", the number of deltas averaged."""

    needs_individual_updates = True
    num_byzantine: int = 0
    num_selected: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        require_int("num_byzantine", self.num_byzantine, 0)
        require_int("num_selected", self.num_selected, 1)

    def required_results(self) -> int:
        return max(self.min_fit_results, 2 * self.num_byzantine + 3)

    def aggregate_updates(
        self, round: int, parameters: NDArrays, results: list[tuple[str, FitRes]]
    ) -> tuple[NDArrays, Metrics]:
        delta, chosen = krum([res.delta for _, res in results], self.num_byzantine, self.num_selected)
        return apply_delta(parameters, delta), {"krum_selected": float(len(chosen))}
