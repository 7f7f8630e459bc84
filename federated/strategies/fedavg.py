"""FedAvg (McMahan et al. 2017): the new global model is the example-weighted mean of the
clients' models, i.e. the global model plus the example-weighted mean delta."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgerun.federated.aggregate import apply_delta, check_like, weighted_sum
from edgerun.federated.strategies.base import RoundFailed, Strategy
from edgerun.federated.typing import FitRes, Metrics, NDArrays


@dataclass(kw_only=True)
class FedAvg(Strategy):
    """Example-weighted averaging of deltas; the base of the strategies that only need the
    weighted sum of deltas (so they run under secure aggregation).

    Subclasses change what is done with the average delta by overriding `server_update`."""

    def aggregate_updates(
        self, round: int, parameters: NDArrays, results: list[tuple[str, FitRes]]
    ) -> tuple[NDArrays, Metrics]:
        """The same as `aggregate_sum` of sum_i num_examples_i * delta_i over `results`."""
        weights = [res.num_examples for _, res in results]
        total = weighted_sum([res.delta for _, res in results], weights)
        return self._apply_sum(parameters, total, sum(weights))

    def aggregate_sum(
        self, round: int, parameters: NDArrays, weighted_delta_sum: NDArrays, total_examples: int,
        num_results: int, failures: int = 0,
    ) -> tuple[NDArrays, Metrics]:
        """New global parameters from S = sum_i n_i * delta_i and N = sum_i n_i: the server
        update of the average delta S / N, identical to `aggregate_fit` on the same results.

        RoundFailed when num_results is below the strategy's minimum (as `aggregate_fit`),
        total_examples is not > 0 or S has NaN/Inf (one bad client spoils a sum, and it
        cannot be dropped); ValueError when S does not match the parameters' count and shapes."""
        self.last_rejected = {}
        self._check_enough(round, num_results, 0, failures)
        check_like("weighted_delta_sum", weighted_delta_sum, parameters)
        if total_examples <= 0:
            raise RoundFailed(f"round {round}: total_examples must be > 0, got {total_examples}")
        if not all(np.all(np.isfinite(s)) for s in weighted_delta_sum):
            raise RoundFailed(f"round {round}: the weighted delta sum has NaN or Inf values")
        total = [np.asarray(s, dtype=np.float64) for s in weighted_delta_sum]
        new_parameters, metrics = self._apply_sum(parameters, total, total_examples)
        return new_parameters, {**metrics, "accepted": float(num_results), "rejected": 0.0,
                                "failures": float(failures), "num_examples": float(total_examples)}

    def _apply_sum(
        self, parameters: NDArrays, total: NDArrays, total_examples: int
    ) -> tuple[NDArrays, Metrics]:
        avg_delta = [s / total_examples for s in total]
        return self.server_update(parameters, avg_delta), {}

    def server_update(self, parameters: NDArrays, avg_delta: NDArrays) -> NDArrays:
        """New global parameters from the (float64) example-weighted average delta: x + avg_delta."""
        return apply_delta(parameters, avg_delta)
