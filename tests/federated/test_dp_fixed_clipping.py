"""DpFixedClipping: differential privacy as a wrapper around a strategy (federated.strategies.dp)."""

from __future__ import annotations

import numpy as np
import pytest

from edgerun.federated.privacy import DpOptions, PrivacyAccountant
from edgerun.federated.strategies import FedAvg, StrategyError
from edgerun.federated.strategies.dp import DpFixedClipping, PrivacyBudgetExhausted
from edgerun.federated.typing import FitRes

IDS = ["a", "b", "c", "d"]
PARAMETERS = [np.zeros(3)]


def wrapped(budget=float("inf"), mode="central"):
    options = DpOptions(noise_multiplier=1.0, clip_norm=0.5, epsilon_budget=budget, mode=mode)
    saved = []
    strategy = DpFixedClipping(FedAvg(fraction_fit=0.5, min_fit_clients=2, min_available_clients=2), options,
                               PrivacyAccountant(options), saved.append)
    return strategy, saved


def test_configure_fit_selects_as_the_strategy_and_asks_clients_to_clip():
    strategy, _ = wrapped()
    selected, ins = strategy.configure_fit(1, PARAMETERS, IDS, np.random.default_rng(0))
    plain, _ = FedAvg(fraction_fit=0.5, min_fit_clients=2).configure_fit(1, PARAMETERS, IDS, np.random.default_rng(0))
    assert selected == plain and ins.config["clip_norm"] == 0.5
    assert ins.config["dp"] == {"noise_multiplier": 1.0, "clip_norm": 0.5, "mode": "central", "expected_clients": 2,
                                "sampling_probability": 0.5, "available": 4}


def test_a_round_over_the_budget_is_not_started():
    strategy, _ = wrapped(budget=0.01)
    selected, _ = strategy.configure_fit(1, PARAMETERS, IDS, np.random.default_rng(0))
    with pytest.raises(PrivacyBudgetExhausted, match="privacy budget"):
        strategy.admit(1, len(IDS), len(selected))
    wrapped()[0].admit(1, len(IDS), len(selected))  # the default budget allows a round


def test_the_round_is_charged_before_aggregation_and_only_then_aggregated():
    strategy, saved = wrapped()
    _, ins = strategy.configure_fit(1, PARAMETERS, IDS, np.random.default_rng(0))
    results = [(c, FitRes([np.full(3, 10.0)], 5)) for c in ("a", "b")]
    with pytest.raises(StrategyError, match="before begin_aggregation"):
        strategy.aggregate_fit(1, PARAMETERS, results, 0)
    strategy.begin_aggregation(1, ins.config, len(results))
    assert saved == [strategy.accountant.history] and len(strategy.accountant.history) == 1
    _, metrics = strategy.aggregate_fit(1, PARAMETERS, results, 0)
    assert metrics["epsilon"] == strategy.accountant.epsilon > 0
