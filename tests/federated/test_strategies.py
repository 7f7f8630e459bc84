"""Strategy stages other than the aggregation math: selection, configs, failed rounds,
evaluation and persisted server state."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgerun.federated.strategies import (
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedMedian,
    FedProx,
    FedYogi,
    NotEnoughClients,
    RoundFailed,
    StrategyError,
)
from edgerun.federated.typing import EvaluateRes, FitRes
from edgerun.runtime.errors import EdgerunError

CLIENTS = [f"client-{i:02d}" for i in range(10)]


def one(value: float) -> list[np.ndarray]:
    return [np.array([value])]


# ---------------------------------------------------------------- selection


@pytest.mark.parametrize(("fraction", "minimum", "count"), [
    (1.0, 2, 10), (0.3, 2, 3), (0.35, 2, 3), (0.1, 2, 2), (0.0, 4, 4), (0.5, 7, 7),
])
def test_fit_selection_respects_fraction_and_minimum(fraction, minimum, count):
    strategy = FedAvg(fraction_fit=fraction, min_fit_clients=minimum)

    chosen, _ = strategy.configure_fit(1, one(0.0), CLIENTS, np.random.default_rng(0))

    assert len(chosen) == count == len(set(chosen)) and set(chosen) <= set(CLIENTS)
    assert chosen == sorted(chosen)


def test_selection_is_reproducible_and_independent_of_order():
    strategy = FedAvg(fraction_fit=0.4)

    first, _ = strategy.configure_fit(1, one(0.0), CLIENTS, np.random.default_rng(7))
    again, _ = strategy.configure_fit(1, one(0.0), CLIENTS[::-1], np.random.default_rng(7))
    draws = {tuple(strategy.configure_fit(1, one(0.0), CLIENTS, np.random.default_rng(s))[0]) for s in range(20)}

    assert first == again
    assert len(draws) > 1  # the rng does choose


def test_evaluate_selection_uses_its_own_fraction_and_minimum():
    strategy = FedAvg(fraction_fit=1.0, fraction_evaluate=0.2, min_evaluate_clients=3)

    chosen, ins = strategy.configure_evaluate(1, one(5.0), CLIENTS, np.random.default_rng(0))

    assert len(chosen) == 3 and ins.parameters[0][0] == 5.0


def test_evaluation_off_selects_nobody():
    chosen, _ = FedAvg(fraction_evaluate=0.0).configure_evaluate(1, one(0.0), CLIENTS[:1], np.random.default_rng(0))

    assert chosen == []


@pytest.mark.parametrize(("kwargs", "available", "need"), [
    ({}, 1, 2),
    ({"min_available_clients": 5}, 4, 5),
    ({"min_fit_clients": 6, "min_available_clients": 2}, 5, 6),
])
def test_too_few_available_clients_raise(kwargs, available, need):
    strategy = FedAvg(**kwargs)

    with pytest.raises(NotEnoughClients, match=f"{available} clients available for fit, need at least {need}"):
        strategy.configure_fit(3, one(0.0), CLIENTS[:available], np.random.default_rng(0))
    assert issubclass(NotEnoughClients, StrategyError) and issubclass(StrategyError, EdgerunError)


def test_too_few_clients_for_evaluation_raise():
    with pytest.raises(NotEnoughClients, match="for evaluate, need at least 4"):
        FedAvg(min_evaluate_clients=4).configure_evaluate(1, one(0.0), CLIENTS[:3], np.random.default_rng(0))


def test_duplicate_available_ids_are_an_error():
    with pytest.raises(ValueError, match="duplicate client ids"):
        FedAvg().configure_fit(1, one(0.0), ["a", "b", "a"], np.random.default_rng(0))


# ---------------------------------------------------------------- configs


def test_fit_config_carries_the_round_settings():
    strategy = FedAvg(local_epochs=3, batch_size=16, client_lr=0.05, clip_norm=1.5)

    _, ins = strategy.configure_fit(4, one(2.0), CLIENTS, np.random.default_rng(0))

    assert ins.config == {"round": 4, "epochs": 3, "batch_size": 16, "lr": 0.05, "clip_norm": 1.5}
    assert ins.parameters[0][0] == 2.0


def test_fedprox_sends_proximal_mu_and_aggregates_like_fedavg():
    prox, avg = FedProx(proximal_mu=0.1), FedAvg()
    results = [("a", FitRes(one(1.0), 1)), ("b", FitRes(one(4.0), 2))]

    _, ins = prox.configure_fit(1, one(0.0), CLIENTS, np.random.default_rng(0))

    assert ins.config["proximal_mu"] == 0.1 and "proximal_mu" not in avg.fit_config(1)
    assert prox.aggregate_fit(1, one(0.0), results, 0)[0][0][0] == avg.aggregate_fit(1, one(0.0), results, 0)[0][0][0]


@pytest.mark.parametrize(("make", "match"), [
    (lambda: FedAvg(fraction_fit=1.5), "fraction_fit"),
    (lambda: FedAvg(min_fit_clients=0), "min_fit_clients must be an integer >= 1"),
    (lambda: FedAvg(client_lr=0.0), r"client_lr must be a finite number in \(0.0"),
    (lambda: FedAvg(clip_norm=math.nan), "clip_norm"),
    (lambda: FedProx(proximal_mu=-1.0), "proximal_mu"),
    (lambda: FedAvgM(momentum=1.5), "momentum"),
    (lambda: FedAdam(beta_2=1.0), r"beta_2 must be a finite number in \[0.0, 1.0\)"),
    (lambda: FedYogi(tau=0.0), "tau"),
])
def test_bad_settings_raise_at_construction(make, match):
    with pytest.raises(ValueError, match=match):
        make()


# ---------------------------------------------------------------- failed rounds


def test_round_fails_with_fewer_results_than_required():
    strategy = FedAdam(min_fit_results=3)
    results = [("a", FitRes(one(1.0), 1)), ("b", FitRes(one(1.0), 1))]

    with pytest.raises(RoundFailed, match=r"round 2: 2 usable of 3 asked \(0 rejected, 1 failed\), need at least 3"):
        strategy.aggregate_fit(2, one(0.0), results, failures=1)
    assert strategy.state() == {"m": [], "v": []}  # no server step was taken


def test_round_fails_below_the_completed_fraction():
    strategy = FedAvg(min_completed_fraction=0.5)
    results = [("a", FitRes(one(1.0), 1))]

    assert strategy.aggregate_fit(1, one(0.0), results, failures=1)[0][0][0] == 1.0  # 1 of 2: enough
    with pytest.raises(RoundFailed, match="below min_completed_fraction=0.5"):
        strategy.aggregate_fit(1, one(0.0), results, failures=2)


def test_round_fails_with_no_results():
    with pytest.raises(RoundFailed, match="0 usable of 0 asked"):
        FedMedian().aggregate_fit(1, one(0.0), [], failures=0)


# ---------------------------------------------------------------- evaluation


def test_evaluation_is_weighted_by_examples():
    results = [("a", EvaluateRes(loss=1.0, num_examples=1, metrics={"accuracy": 0.5})),
               ("b", EvaluateRes(loss=4.0, num_examples=3, metrics={"accuracy": 0.9}))]

    loss, metrics = FedAvg().aggregate_evaluate(1, results, failures=1)

    assert loss == pytest.approx((1.0 + 12.0) / 4)
    assert metrics["accuracy"] == pytest.approx((0.5 + 2.7) / 4)
    assert metrics["num_examples"] == 4 and metrics["failures"] == 1 and metrics["rejected"] == 0


@pytest.mark.parametrize("bad", [EvaluateRes(loss=math.nan, num_examples=5), EvaluateRes(loss=1.0, num_examples=0),
                                 EvaluateRes(loss=math.inf, num_examples=2)])
def test_bad_evaluation_results_are_dropped(bad):
    loss, metrics = FedAvg().aggregate_evaluate(1, [("a", EvaluateRes(loss=2.0, num_examples=2)), ("b", bad)])

    assert loss == 2.0 and metrics["rejected"] == 1 and metrics["accepted"] == 1


def test_evaluation_without_usable_results_fails():
    with pytest.raises(RoundFailed, match="no usable evaluation results"):
        FedAvg().aggregate_evaluate(1, [("a", EvaluateRes(loss=math.nan, num_examples=1))])


# ---------------------------------------------------------------- server state


def round_results(r: int) -> list[tuple[str, FitRes]]:
    return [("a", FitRes([np.array([0.1 * r, -0.2]), np.array([[r * 0.05]])], 2)),
            ("b", FitRes([np.array([0.3, 0.1 * r]), np.array([[-0.1]])], 5))]


@pytest.mark.parametrize("make", [lambda: FedAvgM(momentum=0.9), FedAdam, FedYogi, FedAdagrad])
def test_state_round_trip_continues_identically(make):
    original = make()
    x = [np.array([1.0, 2.0]), np.array([[0.5]])]
    for r in (1, 2):
        x, _ = original.aggregate_fit(r, x, round_results(r), failures=0)
    saved = original.state()
    restored, fresh = make(), make()
    restored.load_state(saved)

    want, _ = original.aggregate_fit(3, x, round_results(3), failures=0)
    got, _ = restored.aggregate_fit(3, x, round_results(3), failures=0)
    other, _ = fresh.aggregate_fit(3, x, round_results(3), failures=0)

    for a, b in zip(want, got, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not all(np.array_equal(a, b) for a, b in zip(want, other, strict=True))  # the state mattered


def test_state_is_a_copy():
    strategy = FedAvgM(momentum=0.5)
    strategy.aggregate_fit(1, one(0.0), [("a", FitRes(one(1.0), 1))], failures=0)

    strategy.state()["momentum_buffer"][0][0] = 99.0

    assert strategy.state()["momentum_buffer"][0][0] == -1.0


@pytest.mark.parametrize(("make", "state", "match"), [
    (FedAdam, {"m": []}, r"expected keys \['m', 'v'\]"),
    (FedAdam, {"m": [np.zeros(1)], "v": []}, "m has 1 arrays, v has 0"),
    (FedAvgM, {"momentum_buffer": "x"}, "expected a list of ndarrays"),
    (FedAvg, {"m": []}, r"expected keys \[\]"),
])
def test_load_state_rejects_bad_state(make, state, match):
    with pytest.raises(ValueError, match=match):
        make().load_state(state)


def test_loaded_state_of_another_model_is_an_error_at_the_next_round():
    strategy = FedAdam()
    strategy.load_state({"m": [np.zeros(3)], "v": [np.ones(3)]})

    with pytest.raises(ValueError, match=r"m\[0\]: expected shape \(1,\), got \(3,\)"):
        strategy.aggregate_fit(1, one(0.0), [("a", FitRes(one(1.0), 1))], failures=0)
