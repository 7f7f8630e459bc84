"""Regression tests of the DP / secure-aggregation review at the coordinator: weight-slot
bounds, distributed DP needs secure aggregation, dropouts and failed rounds are charged,
the cohort is drawn from `secrets`, and clipping leaves room for rounding."""

from __future__ import annotations

import math
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from edgerun.federated.auth import KeyPair
from edgerun.federated.compression import compress
from edgerun.federated.coordinator import Coordinator, CoordinatorConfig
from edgerun.federated.privacy import DpOptions
from edgerun.federated.rounds import RoundState, aggregate_sum, aggregate_updates
from edgerun.federated.secagg.errors import ConfigurationError
from edgerun.federated.secagg.messages import SecAggParams
from edgerun.federated.secagg.options import SecAggOptions, dp_clip_bound
from edgerun.federated.secagg.quantize import add, dequantize_sum, quantize
from edgerun.federated.secagg.update import encode_update
from edgerun.federated.store import Store
from edgerun.federated.strategies import FedAvg
from tests.federated.test_rounds import model_path  # noqa: F401 - fixture

__all__ = ["model_path"]
IDS = ["a", "b", "c"]
KEYS = {i: KeyPair.generate() for i in IDS}


def coordinator(model_path, tmp_path, name="c", **config):  # noqa: F811
    strategy = FedAvg(fraction_fit=1.0, min_fit_clients=2, min_available_clients=2)
    store = Store(tmp_path / f"{name}.db")
    for i in IDS:
        store.enrol(i, KEYS[i].public_bytes, {})
    return Coordinator(model_path, store, strategy, CoordinatorConfig(rounds=1, **config), KeyPair.generate())


def shapes(c):
    return [tuple(c.spec[n][1]) for n in c.spec]


def open_secure_round(c, dp_mode=None):
    config = {}
    if dp_mode:
        config["dp"] = {"noise_multiplier": c.config.dp.noise_multiplier, "clip_norm": c.config.dp.clip_norm,
                        "mode": dp_mode, "expected_clients": len(IDS), "sampling_probability": 0.5,
                        "available": 2 * len(IDS)}
    config["secagg"] = c.config.secagg.round_config(1, len(IDS), shapes(c), 1.0)
    c.store.open_round(1, c.version, IDS, config, time.time() + 60)
    return c.store.current_round(), SecAggParams.from_config(config["secagg"])


def finish_with(c, current, params, vectors):
    """Run the coordinator's end of a secure round whose unmasked sum is that of `vectors`."""
    total = np.zeros(params.length, np.uint32)
    for v in vectors:
        total = add(total, v, params.quantization.bits)
    state = RoundState(current.round, current, total=total, survivors=IDS[: len(vectors)])
    aggregate_sum(c, state, threading.Event())
    return c.store.round(1)


def deltas(c, value=0.01):
    return [np.full(s, value) for s in shapes(c)]


@pytest.mark.parametrize("slot", [3.0, 2.5, -1.0, -1.5])  # the honest two add up to a weight of 1
def test_a_weight_slot_outside_0_1_fails_the_round_and_keeps_the_model(model_path, tmp_path, slot):  # noqa: F811
    c = coordinator(model_path, tmp_path)
    before = {k: v.copy() for k, v in c.parameters.items()}
    current, params = open_secure_round(c)
    q = params.quantization
    honest = [encode_update(deltas(c), 0.5, q) for _ in IDS[:2]]
    evil = encode_update(deltas(c), 1.0, q)
    evil[-1] = np.uint32(int(round(slot * q.levels)) % (1 << q.bits))  # weight slot = slot (masks hide it)
    record = finish_with(c, current, params, [*honest, evil])
    assert record.status == "failed" and "ImplausibleWeight" in record.reason
    assert all(np.array_equal(c.parameters[k], v) for k, v in before.items())


def test_weights_in_range_aggregate(model_path, tmp_path):  # noqa: F811
    c = coordinator(model_path, tmp_path)
    current, params = open_secure_round(c)
    vectors = [encode_update(deltas(c), w, params.quantization) for w in (0.001, 0.5, 1.0)]
    assert finish_with(c, current, params, vectors).status == "aggregated"


def test_distributed_dp_without_secure_aggregation_is_refused(model_path, tmp_path):  # noqa: F811
    with pytest.raises(ValueError, match="distributed DP needs secure aggregation"):
        coordinator(model_path, tmp_path, secagg=None, dp=DpOptions(1.0, 1.0, mode="distributed"))
    coordinator(model_path, tmp_path, name="ok", secagg=None, dp=DpOptions(1.0, 1.0, mode="central"))


def test_dropouts_in_distributed_dp_are_charged_at_the_lower_effective_multiplier(model_path, tmp_path):  # noqa: F811
    epsilons = {}
    for n in (3, 2):
        c = coordinator(model_path, tmp_path, name=f"n{n}", dp=DpOptions(1.0, 1.0, mode="distributed"))
        current, params = open_secure_round(c, "distributed")
        record = finish_with(c, current, params, [encode_update(deltas(c), 1.0, params.quantization)] * n)
        assert record.status == "aggregated"
        assert math.isclose(c.strategy.accountant.history[0][2], math.sqrt(n / 3))
        epsilons[n] = c.strategy.accountant.epsilon
        assert math.isclose(record.metrics["epsilon"], epsilons[n])
    assert epsilons[2] > epsilons[3]


def test_a_dp_round_is_charged_once_the_sum_is_revealed_even_if_it_then_fails(model_path, tmp_path):  # noqa: F811
    c = coordinator(model_path, tmp_path, dp=DpOptions(1.0, 1.0, mode="central"))
    current, params = open_secure_round(c, "central")
    vectors = [encode_update(deltas(c), 1.0, params.quantization) for _ in IDS]
    vectors[0][-1] = np.uint32(params.quantization.levels // 2)  # a DP client must send weight exactly 1
    record = finish_with(c, current, params, vectors)
    assert record.status == "failed"
    assert len(c.strategy.accountant.history) == 1 and c.strategy.accountant.epsilon > 0
    assert c.store.get_state("privacy") == {"rounds": c.strategy.accountant.history}


def test_under_dp_the_cohort_is_not_drawn_from_the_configured_seed(model_path, tmp_path):  # noqa: F811
    plain = [coordinator(model_path, tmp_path, name=f"p{i}").rng.integers(1 << 62) for i in range(2)]
    assert plain[0] == plain[1]  # reproducible without DP
    dp = [coordinator(model_path, tmp_path, name=f"d{i}", dp=DpOptions(1.0, 1.0)).rng.integers(1 << 62)
          for i in range(2)]
    assert dp[0] != dp[1]


def test_dp_clip_bound_leaves_room_for_rounding_and_refuses_coarse_rings(model_path, tmp_path):  # noqa: F811
    c = coordinator(model_path, tmp_path, dp=DpOptions(1.0, 1.0))
    s = 0.5
    config = SecAggOptions(bits=16).round_config(1, 3, shapes(c), s)
    params = SecAggParams.from_config(config)
    bound = dp_clip_bound(params, s)
    d = params.length - 1
    assert math.isclose(bound, s - math.sqrt(d) * params.quantization.step / 2)
    rng = np.random.default_rng(0)
    for _ in range(20):  # the worst case for rounding: every value just below a half step
        x = rng.normal(size=d)
        x = np.sign(x) * (np.floor(np.abs(x) / params.quantization.step * 8) + 0.499) * params.quantization.step / 8
        x *= bound / np.linalg.norm(x)
        ring = quantize(np.concatenate([x, [0.0]]), params.quantization)
        assert np.linalg.norm(dequantize_sum(ring, params.quantization, 1)[:-1]) <= s
    with pytest.raises(ConfigurationError, match="clip_norm"):
        coordinator(model_path, tmp_path, name="coarse", secagg=SecAggOptions(bits=8), dp=DpOptions(1.0, 1.0))


def test_plain_dp_rounds_clip_each_delta_on_the_coordinator(model_path, tmp_path, monkeypatch):  # noqa: F811
    import edgerun.federated.strategies.dp as dp

    monkeypatch.setattr(dp, "gaussian_noise", lambda shapes, stddev: [np.zeros(s) for s in shapes])
    c = coordinator(model_path, tmp_path, secagg=None, dp=DpOptions(1.0, 0.5, mode="central"))
    before = {k: v.astype(np.float64) for k, v in c.parameters.items()}
    config = {"dp": {"noise_multiplier": 1.0, "clip_norm": 0.5, "mode": "central", "expected_clients": 2,
                     "sampling_probability": 1.0, "available": 2}}
    c.store.open_round(1, c.version, IDS[:2], config, time.time() + 60)
    big = {n: np.full(c.spec[n][1], 3.0, np.float32) for n in c.spec}  # norm far above S = 0.5
    updates = [SimpleNamespace(client_id=i, blob=compress(big, "none"), num_examples=10, metrics={}) for i in IDS[:2]]
    current = c.store.current_round()
    aggregate_updates(c, RoundState(current.round, current, updates=updates), threading.Event())
    assert c.store.round(1).status == "aggregated"
    moved = math.sqrt(sum(float(np.sum((c.parameters[k] - before[k]) ** 2)) for k in c.spec))
    assert moved == pytest.approx(0.5, rel=1e-4)  # (2 clipped deltas of norm S) / 2 expected clients
