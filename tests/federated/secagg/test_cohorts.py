"""Hierarchical secure aggregation: a round split into cohorts, each unmasked on its own, sums
to exactly what one cohort of everyone sums to; a cohort that aborts is dropped, the round
goes on with the others, and it fails only when every cohort aborted."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from edgerun.converters.training import make_trainable
from edgerun.federated.auth import KeyPair
from edgerun.federated.coordinator import Coordinator, CoordinatorConfig
from edgerun.federated.privacy import DpOptions
from edgerun.federated.rounds import _cohorts
from edgerun.federated.secagg.client import SecAggClient
from edgerun.federated.secagg.cohorts import CohortedRound, cohort_sizes, split_cohorts
from edgerun.federated.secagg.device import respond
from edgerun.federated.secagg.errors import ConfigurationError, RoundAborted, SecAggError
from edgerun.federated.secagg.messages import SecAggParams
from edgerun.federated.secagg.options import SecAggOptions
from edgerun.federated.secagg.session import SecureRound
from edgerun.federated.secagg.update import decode_sum, encode_update
from edgerun.federated.secagg.workflow import drive_round, run_round
from edgerun.federated.stages import Stage
from edgerun.federated.store import Store
from edgerun.federated.strategies import FedAvg
from edgerun.runtime import save_model
from tests.converters.training.models import mlp
from tests.federated.secagg.helpers import device_keys, plain_sum

SHAPES = [(3, 4), (5,)]
LONG = 60.0  # a deadline no test may wait for


# ---------------------------------------------------------------- splitting


@pytest.mark.parametrize(("n", "max_cohort", "sizes"), [
    (10, 200, [10]),
    (200, 200, [200]),
    (201, 200, [101, 100]),
    (1000, 200, [200, 200, 200, 200, 200]),
    (1001, 200, [167, 167, 167, 167, 167, 166]),
    (7, None, [7]),
])
def test_cohort_sizes_are_near_equal_and_bounded(n, max_cohort, sizes):
    assert cohort_sizes(n, max_cohort) == sizes


def test_split_is_a_deterministic_partition_into_sorted_cohorts():
    ids = [f"d{i:03d}" for i in range(23)]
    cohorts = split_cohorts(ids[::-1], 8, np.random.default_rng(5))
    assert [len(c) for c in cohorts] == [8, 8, 7]
    assert sorted(c for cohort in cohorts for c in cohort) == ids  # every id once
    assert all(cohort == sorted(cohort) for cohort in cohorts)
    assert cohorts == split_cohorts(ids, 8, np.random.default_rng(5))  # same RNG state, same cohorts
    assert cohorts != split_cohorts(ids, 8, np.random.default_rng(6))
    assert cohorts[0] != ids[:8]  # shuffled, not cut in id order


def test_one_cohort_leaves_the_rng_untouched():
    rng = np.random.default_rng(9)
    assert split_cohorts(["b", "a", "c"], 4, rng) == [["a", "b", "c"]]
    assert rng.random() == np.random.default_rng(9).random()


def test_max_cohort_must_leave_every_cohort_min_clients():
    with pytest.raises(ConfigurationError, match="max_cohort must be None or an integer >= 2 \\* min_clients = 4"):
        SecAggOptions(max_cohort=3)
    assert SecAggOptions(max_cohort=None).max_cohort is None


# ---------------------------------------------------------------- sums


def cohort_round(ids, max_cohort, options, seed=0) -> tuple[CohortedRound, list[list[str]]]:
    """A CohortedRound over `ids` (cohorts from `split_cohorts`), quantized for all of them."""
    keys = device_keys(len(ids))
    members = split_cohorts(ids, max_cohort, np.random.default_rng(seed))
    params = [SecAggParams.from_config(options.round_config(1, len(m), SHAPES, 1.0, planned_for=len(ids)))
              for m in members]
    protocol = CohortedRound.open(params, members, {c: keys[c].public_bytes for c in ids}, len(ids),
                                  time.time() + LONG, LONG)
    return protocol, members


def encoded_inputs(ids, params: SecAggParams, seed: int):
    """Ring vectors of weighted float deltas (what clients upload), and their weights."""
    rng = np.random.default_rng(seed)
    deltas = {c: [rng.uniform(-1, 1, s) for s in SHAPES] for c in ids}
    weights = {c: float(rng.uniform(0.1, 1.0)) for c in ids}
    return {c: encode_update(deltas[c], weights[c], params.quantization) for c in ids}, deltas, weights


@pytest.mark.parametrize("drops", [{}, {"c001": "share", "c009": "masked", "c017": "unmask", "c020": "advertise"}],
                         ids=["no dropouts", "dropouts"])
def test_combined_cohort_sums_equal_the_flat_sum_exactly(drops):
    n = 24
    ids = sorted(device_keys(n))
    options = SecAggOptions(max_cohort=8)
    flat = SecAggParams.from_config(options.round_config(1, n, SHAPES, 1.0))
    protocol, members = cohort_round(ids, 8, options)
    assert len(members) == 3 and all(protocol.params_of(c).quantization == flat.quantization for c in ids)
    assert len({protocol.params_of(m[0]).graph_seed for m in members}) == 3  # each cohort its own round seed
    inputs, deltas, weights = encoded_inputs(ids, flat, seed=len(drops))

    flat_outcome = run_round(flat, inputs, device_keys(n), drops)
    split_outcome = drive_round(protocol, inputs, device_keys(n), drops)

    counted = [c for c in ids if drops.get(c) not in ("advertise", "share", "masked")]
    assert split_outcome.survivors == flat_outcome.survivors == counted
    assert np.array_equal(split_outcome.total, flat_outcome.total)
    assert np.array_equal(split_outcome.total, plain_sum(inputs, counted, 32))
    sums, weight = decode_sum(split_outcome.total, flat.quantization, len(counted), SHAPES)
    step = flat.quantization.step
    assert weight == pytest.approx(sum(weights[c] for c in counted), abs=len(counted) * step)
    for i in range(len(SHAPES)):
        want = sum(weights[c] * deltas[c][i] for c in counted)
        np.testing.assert_allclose(sums[i], want, atol=len(counted) * step)
    assert protocol.metrics() == {"cohorts": 3.0, "cohorts_dropped": 0.0}


def test_a_cohort_that_aborts_is_dropped_and_the_others_sum_their_survivors():
    ids = sorted(device_keys(18))
    options = SecAggOptions(max_cohort=6)
    protocol, members = cohort_round(ids, 6, options, seed=1)
    inputs = {c: np.full(protocol.params_of(c).length, i + 1, dtype=np.uint32) for i, c in enumerate(ids)}
    # 2 of 6 left in cohort 1: each needs 4 signatures on the survivor list, so that cohort aborts
    drops = {c: "masked" for c in members[1][:4]}
    outcome = drive_round(protocol, inputs, device_keys(18), drops)
    kept = members[0] + members[2]
    assert outcome.survivors == sorted(kept)
    assert np.array_equal(outcome.total, plain_sum(inputs, kept, 32))
    assert list(protocol.failures) == [1] and "signatures" in protocol.failures[1]
    assert protocol.metrics() == {"cohorts": 3.0, "cohorts_dropped": 1.0}
    assert protocol.handle(members[1][5], Stage.POLL, None).stage is Stage.ABORTED


def test_every_cohort_aborting_aborts_the_round():
    ids = sorted(device_keys(12))
    protocol, members = cohort_round(ids, 6, SecAggOptions(max_cohort=6))
    inputs = {c: np.zeros(protocol.params_of(c).length, dtype=np.uint32) for c in ids}
    drops = {c: "advertise" for m in members for c in m[1:]}  # one client left per cohort
    with pytest.raises(RoundAborted, match="every cohort aborted.*cohort 0: .*cohort 1: "):
        drive_round(protocol, inputs, device_keys(12), drops)


def test_a_client_in_no_cohort_is_refused():
    protocol, _ = cohort_round(sorted(device_keys(8)), 4, SecAggOptions(max_cohort=4))
    with pytest.raises(SecAggError, match="'stranger' is in no cohort"):
        protocol.handle("stranger", Stage.POLL, None)
    protocol.withdraw("stranger")  # ignored


# ---------------------------------------------------------------- through the coordinator

TOKEN = "t"


@pytest.fixture
def model_path(tmp_path):
    graph = make_trainable(mlp((4, 3, 2), seed=0), optimizer=("sgd", {"lr": 0.1}))
    return save_model(graph, tmp_path / "mlp.train.erm")


def secure_coordinator(model_path, tmp_path, clients: int, secagg: SecAggOptions, **config):
    keys = {f"d{i:02d}": KeyPair.generate() for i in range(clients)}
    strategy = FedAvg(fraction_fit=1.0, min_fit_clients=2, min_available_clients=clients)
    config = {"rounds": 1, "enrol_token": TOKEN, "round_timeout": LONG, "over_selection": 0.0,
              "max_update_norm": None, **config}
    coordinator = Coordinator(model_path, Store(tmp_path / "c.db"), strategy,
                              CoordinatorConfig(secagg=secagg, **config), KeyPair.generate())
    for cid, key in keys.items():
        coordinator.enrol(cid, key.public_bytes, TOKEN, {})
        coordinator.mark_seen([cid])
    return coordinator, keys


def open_secure(coordinator, stop=None):
    runner = threading.Thread(target=coordinator.run, args=(stop,), daemon=True)
    runner.start()
    deadline = time.time() + 10
    while coordinator.round_state is None or coordinator.round_state.secure is None:
        assert time.time() < deadline, "the round did not open"
        time.sleep(0.01)
    return runner, coordinator.store.current_round()


def drive_clients(coordinator, runner, keys, record, values, examples=None):
    """Every client in `values` takes part through the coordinator's handlers, with the
    config round_config_for gives it, until the round is over (weight 1 without `examples`)."""
    max_weight = coordinator.config.secagg.max_weight
    clients, inputs = {}, {}
    for cid, value in values.items():
        params = SecAggParams.from_config(coordinator.round_config_for(cid, record.config)["secagg"])
        clients[cid] = SecAggClient(cid, keys[cid], params)
        delta = [np.full(np.shape(p), value) for p in coordinator.parameter_list()]
        weight = 1.0 if examples is None else min(examples[cid], max_weight) / max_weight
        inputs[cid] = encode_update(delta, weight, params.quantization)
    deadline = time.time() + 20
    while runner.is_alive():
        assert time.time() < deadline, "the secure round did not finish"
        for cid, client in clients.items():
            reply = coordinator.secure_step(cid, record.round, Stage.POLL, None)
            if not reply.expects_you:
                continue
            message = respond(client, reply, inputs[cid])
            if reply.stage == Stage.MASKED:
                coordinator.submit_masked(cid, record.round, client.params.quantization.bits, message)
            else:
                coordinator.secure_step(cid, record.round, reply.stage, message)
        time.sleep(0.005)


def test_round_config_for_gives_each_client_its_cohort_and_the_shared_quantization(model_path, tmp_path):
    coordinator, _ = secure_coordinator(model_path, tmp_path, 12, SecAggOptions(max_cohort=4, stage_timeout=LONG))
    stop = threading.Event()
    runner, record = open_secure(coordinator, stop)
    try:
        protocol = coordinator.round_state.secure
        assert isinstance(protocol, CohortedRound) and record.config["secagg"]["cohorts"] == 3
        entries = {cid: coordinator.round_config_for(cid, record.config)["secagg"] for cid in record.selected}
        by_cohort = {}
        for cid, entry in entries.items():
            by_cohort.setdefault(protocol.cohort_of[cid], []).append(entry)
        assert sorted(by_cohort) == [0, 1, 2]
        seeds = {i: {e["graph_seed"] for e in group} for i, group in by_cohort.items()}
        assert all(len(s) == 1 for s in seeds.values()) and len(set.union(*seeds.values())) == 3
        assert {e["cohort"] for e in entries.values()} == {4}
        levels = ((1 << 31) - 1) // 12  # the whole round's 12 clients cannot wrap the 32-bit ring
        assert {(e["bits"], e["clip_range"], e["levels"]) for e in entries.values()} == {(32, 1.0, levels)}
        assert record.config["secagg"]["levels"] == levels and record.config["secagg"]["cohort"] == 12
        other = {"round": 1, "epochs": 1}
        assert coordinator.round_config_for(record.selected[0], other) is other  # a plain round's config
        assert coordinator.round_config_for("stranger", record.config) is record.config
    finally:
        stop.set()
        runner.join(10)
    assert not runner.is_alive()


def test_a_round_within_max_cohort_is_one_secure_round(model_path, tmp_path):
    coordinator, _ = secure_coordinator(model_path, tmp_path, 6, SecAggOptions(max_cohort=6, stage_timeout=LONG))
    stop = threading.Event()
    runner, record = open_secure(coordinator, stop)
    try:
        assert isinstance(coordinator.round_state.secure, SecureRound) and "cohorts" not in record.config["secagg"]
        assert coordinator.round_config_for(record.selected[0], record.config) is record.config
    finally:
        stop.set()
        runner.join(10)
    assert not runner.is_alive()


def test_a_split_round_drops_a_failed_cohort_and_aggregates_the_rest(model_path, tmp_path):
    coordinator, keys = secure_coordinator(model_path, tmp_path, 12, SecAggOptions(max_cohort=4, stage_timeout=LONG))
    before = [p.copy() for p in coordinator.parameter_list()]
    runner, record = open_secure(coordinator)
    protocol = coordinator.round_state.secure
    lost = [cid for cid in record.selected if protocol.cohort_of[cid] == 1][:3]  # one left: cohort 1 aborts
    for cid in lost:
        coordinator.withdraw(cid, record.round)
    values = {cid: 0.05 * (i + 1) for i, cid in enumerate(record.selected) if cid not in lost}
    examples = {cid: 100 * (i % 4 + 1) for i, cid in enumerate(values)}
    drive_clients(coordinator, runner, keys, record, values, examples)
    runner.join(10)
    result = coordinator.store.history()[0]
    assert result.status == "aggregated", result
    counted = [cid for cid in values if protocol.cohort_of[cid] != 1]
    assert result.metrics["reports"] == 8 and result.metrics["cohorts"] == 3
    assert result.metrics["cohorts_dropped"] == 1
    mean = sum(values[c] * examples[c] for c in counted) / sum(examples[c] for c in counted)
    for new, old in zip(coordinator.parameter_list(), before, strict=True):
        np.testing.assert_allclose(new, old + mean, atol=1e-6)


def test_central_dp_rounds_run_in_cohorts(model_path, tmp_path):
    coordinator, keys = secure_coordinator(model_path, tmp_path, 8, SecAggOptions(max_cohort=4, stage_timeout=LONG),
                                           dp=DpOptions(0.5, 1.0, mode="central"))
    runner, record = open_secure(coordinator)
    assert isinstance(coordinator.round_state.secure, CohortedRound)
    drive_clients(coordinator, runner, keys, record, dict.fromkeys(record.selected, 0.05))
    runner.join(10)
    result = coordinator.store.history()[0]
    assert result.status == "aggregated", result
    assert result.metrics["reports"] == 8 and result.metrics["cohorts"] == 2 and result.metrics["epsilon"] > 0


def test_distributed_dp_is_never_split_into_cohorts(model_path, tmp_path):
    coordinator, _ = secure_coordinator(model_path, tmp_path, 8, SecAggOptions(max_cohort=4, stage_timeout=LONG),
                                        dp=DpOptions(1.0, 1.0, mode="distributed"))
    # each cohort's sum would carry only its share of the noise: the coordinator runs one cohort a round
    assert coordinator.config.secagg.max_cohort is None
    ids = [f"c{i}" for i in range(8)]
    assert _cohorts(coordinator, 1, ids, {"dp": {"mode": "distributed"}}) == [ids]


def test_an_in_process_simulation_in_cohorts_tracks_the_plain_run(tmp_path, monkeypatch):
    from edgerun.federated.demo import digits_setup
    from edgerun.federated.secagg import simulate
    from edgerun.federated.secagg.simulate import InProcessConfig, run

    opened, original = [], CohortedRound.open
    monkeypatch.setattr(simulate.CohortedRound, "open",
                        lambda params, members, *rest: opened.append(len(members)) or original(params, members, *rest))
    model, x, y, x_test, y_test = digits_setup(tmp_path)
    config = InProcessConfig(num_clients=24, fraction_fit=1.0, drop_probability=0.0, rounds=2, epochs=1, seed=1)
    plain = run(model, x[:480], y[:480], x_test, y_test, config, secagg=None)
    split = run(model, x[:480], y[:480], x_test, y_test, config, secagg=SecAggOptions(max_cohort=8))
    assert [r["status"] for r in split] == ["aggregated", "aggregated"] and opened == [3, 3]
    gap = [abs(a["test_accuracy"] - b["test_accuracy"]) for a, b in zip(split, plain, strict=True)]
    assert max(gap) <= 0.01, gap
