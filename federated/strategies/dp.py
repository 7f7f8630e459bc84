"""Differential privacy as a wrapper around a strategy (DP-FedAvg with fixed clipping, as
Flower's DifferentialPrivacy*FixedClipping wrappers; the math and the accounting are
federated.privacy's).

`DpFixedClipping(strategy, ...)` selects as the wrapped strategy does, then refuses a
round that would exceed the privacy budget and tells clients to clip their deltas to S
(and, in distributed mode, to add their share of the noise). Once the coordinator holds
a round's results it charges the accountant (`begin_aggregation`, whatever happens
next); it aggregates the sum of clipped deltas plus Gaussian noise (central mode) over
the expected number of clients with the wrapped strategy's `aggregate_sum`.
"""

from __future__ import annotations

import builtins  # the strategy API names its round parameter `round`, shadowing the builtin
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from edgerun.federated.aggregate import clip_by_global_norm
from edgerun.federated.privacy import DpOptions, PrivacyAccountant, effective_multiplier, gaussian_noise
from edgerun.federated.secagg.errors import ImplausibleWeight
from edgerun.federated.secagg.messages import SecAggParams
from edgerun.federated.secagg.options import SecAggOptions, dp_clip_bound
from edgerun.federated.strategies.base import Strategy, StrategyError, StrategyState
from edgerun.federated.typing import Config, EvaluateIns, EvaluateRes, FitIns, FitRes, Metrics, NDArrays

log = logging.getLogger(__name__)


class PrivacyBudgetExhausted(StrategyError):
    """One more round would spend more than the privacy budget: training stops."""


@dataclass(frozen=True)
class _Charged:
    """A round whose results the coordinator holds: its "dp" config and epsilon so far."""

    round: int
    config: Config
    epsilon: float


class DpFixedClipping:
    """`strategy` with DP-FedAvg: clients clip to S = options.clip_norm; the sum of clipped
    deltas gets N(0, (z S)^2) noise, from the coordinator (central) or as the clients'
    shares (distributed); `accountant` is charged per round and `persist` is called with
    its history right away (the coordinator stores it). `secagg`: the secure-aggregation
    settings when the rounds are secure (with the model's parameter `shapes`).

    ValueError for distributed mode without secure aggregation (the coordinator would see
    each update with 1/sqrt(n) of the noise); ConfigurationError when the secure ring is too
    coarse for S (see secagg.options.dp_clip_bound)."""

    def __init__(self, strategy: Strategy, options: DpOptions, accountant: PrivacyAccountant,
                 persist: Callable[[list[list[float]]], None], secagg: SecAggOptions | None = None,
                 shapes: Sequence[tuple[int, ...]] = ()) -> None:
        if options.mode == "distributed" and secagg is None:
            raise ValueError("distributed DP needs secure aggregation: without it the coordinator sees each "
                             "client's update with only 1/sqrt(n) of the noise (use mode='central' or turn "
                             "secure aggregation on)")
        if secagg is not None:  # refuse a clip margin > 10 % of S now, not at the first round
            cohort = max(2, int(strategy.min_fit_clients))
            sample = secagg.round_config(0, cohort, list(shapes), options.clip_norm)
            dp_clip_bound(SecAggParams.from_config(sample), options.clip_norm)
        self.strategy, self.options, self.accountant, self.persist = strategy, options, accountant, persist
        self._charged: _Charged | None = None

    @property
    def needs_individual_updates(self) -> bool:
        return self.strategy.needs_individual_updates

    # ------------------------------------------------------------ fit
    def configure_fit(self, round: int, parameters: NDArrays, available: Sequence[str],
                      rng: np.random.Generator) -> tuple[list[str], FitIns]:
        """The wrapped strategy's selection, with clip_norm S and the round's "dp" entry in the
        config. Whether the budget allows the round is `admit`'s question."""
        selected, ins = self.strategy.configure_fit(round, parameters, available, rng)
        population = max(len(available), len(selected))
        o = self.options
        dp = {"noise_multiplier": o.noise_multiplier, "clip_norm": o.clip_norm, "mode": o.mode,
              "expected_clients": len(selected), "sampling_probability": len(selected) / population,
              "available": population}
        return selected, FitIns(ins.parameters, {**ins.config, "clip_norm": o.clip_norm, "dp": dp})

    def admit(self, round: int, available: int, selected: int) -> None:
        """PrivacyBudgetExhausted when one more round of `selected` clients out of `available`
        would exceed the budget. The accountant's arithmetic takes up to a second, so the
        coordinator calls this outside its lock."""
        if not self.accountant.allows(max(available, selected), selected):
            raise PrivacyBudgetExhausted(
                f"round {round} not started: it would exceed the privacy budget (epsilon "
                f"{self.accountant.epsilon:.3f} spent of {self.options.epsilon_budget:.3f})")

    def configure_secure_fit(self, config: Config, params: SecAggParams) -> Config:
        """Clients clip to S less the rounding margin of the ring, so that quantizing a clipped
        delta cannot push its norm past S (the sensitivity the accountant assumes)."""
        return {**config, "clip_norm": dp_clip_bound(params, self.options.clip_norm)}

    def begin_aggregation(self, round: int, config: Config, count: int) -> None:
        """Charge the accountant for a round whose results (`count` > 0 of them) the
        coordinator has learnt, at the round's effective noise multiplier."""
        dp = config["dp"]
        epsilon = self.accountant.epsilon
        if count:
            z = effective_multiplier(self.options, dp["mode"], dp["expected_clients"], count)
            available = int(dp.get("available") or builtins.round(dp["expected_clients"] / dp["sampling_probability"]))
            epsilon = self.accountant.record(available, dp["expected_clients"], z)
            self.persist(self.accountant.history)
        self._charged = _Charged(round, config, epsilon)

    def aggregate_fit(self, round: int, parameters: NDArrays, results: Sequence[tuple[str, FitRes]],
                      failures: int) -> tuple[NDArrays, Metrics]:
        """Plain rounds: clip each delta to S here too (a client may not have, and
        decompression may add norm), so the sensitivity the accountant assumes holds."""
        total = [np.zeros(np.shape(p), dtype=np.float64) for p in parameters]
        for _, res in results:
            clipped, _ = clip_by_global_norm([d.astype(np.float64) for d in res.delta], self.options.clip_norm)
            total = [t + d for t, d in zip(total, clipped, strict=True)]
        return self._noisy_sum(round, parameters, total, len(results), failures)

    def aggregate_sum(self, round: int, parameters: NDArrays, weighted_delta_sum: NDArrays, total_examples: float,
                      num_results: int, failures: int = 0) -> tuple[NDArrays, Metrics]:
        """Secure rounds: DP clients send weight 1, so the sum, in units of the ring's
        max_weight, is the plain sum of clipped deltas. ImplausibleWeight otherwise."""
        ring = self._round(round).config["secagg"]
        scale, levels = float(ring["max_weight"]), int(ring["levels"])
        weight = total_examples / scale
        if builtins.round(weight * levels) != num_results * levels:
            raise ImplausibleWeight(f"round {round}: DP clients send weight 1, the total is {weight:.6g} "
                                    f"for {num_results} clients")
        return self._noisy_sum(round, parameters, [s / scale for s in weighted_delta_sum], num_results, failures)

    def _round(self, round: int) -> _Charged:
        if self._charged is None or self._charged.round != round:
            raise StrategyError(f"round {round}: aggregated before begin_aggregation")
        return self._charged

    def _noisy_sum(self, round: int, parameters: NDArrays, total: NDArrays, reports: int,
                   failures: int) -> tuple[NDArrays, Metrics]:
        """The sum of clipped deltas, plus N(0, (z S)^2) in central mode (clients added their
        shares in distributed mode), over the expected number of clients."""
        charged = self._round(round)
        dp = charged.config["dp"]
        if dp["mode"] == "central":
            noise = gaussian_noise([t.shape for t in total], self.options.stddev)
            total = [t + z for t, z in zip(total, noise, strict=True)]
        new, metrics = self.strategy.aggregate_sum(round, parameters, total, dp["expected_clients"], reports,
                                                   failures)
        z = effective_multiplier(self.options, dp["mode"], dp["expected_clients"], reports)
        return new, {**metrics, "epsilon": charged.epsilon, "delta": self.options.delta, "noise_multiplier": z}

    # ------------------------------------------------------------ evaluate and state: the wrapped strategy's
    def configure_evaluate(self, round: int, parameters: NDArrays, available: Sequence[str],
                           rng: np.random.Generator) -> tuple[list[str], EvaluateIns]:
        return self.strategy.configure_evaluate(round, parameters, available, rng)

    def aggregate_evaluate(self, round: int, results: Sequence[tuple[str, EvaluateRes]],
                           failures: int = 0) -> tuple[float, Metrics]:
        return self.strategy.aggregate_evaluate(round, results, failures)

    def state(self) -> StrategyState:
        """The wrapped strategy's state (the accountant's history is persisted on its own)."""
        return self.strategy.state()

    def load_state(self, state: StrategyState) -> None:
        self.strategy.load_state(state)
