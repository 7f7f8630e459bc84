"""Rounds paced as production fleets are: over-selection, a report goal of the target, and
no wait on a deadline for a device the simulator knows has dropped out.

The coordinator is driven in-process through its plain handlers (what the gRPC servicer
calls); the simulation tests run the whole stack over loopback gRPC.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from edgerun.converters.training import make_trainable
from edgerun.federated.auth import KeyPair
from edgerun.federated.codec import encode_arrays
from edgerun.federated.coordinator import Coordinator, CoordinatorConfig
from edgerun.federated.errors import Rejected
from edgerun.federated.secagg.messages import SecAggParams
from edgerun.federated.secagg.options import SecAggOptions
from edgerun.federated.secagg.server import SecAggServer
from edgerun.federated.simulation import SimulationConfig, simulate
from edgerun.federated.stages import Stage
from edgerun.federated.store import Store
from edgerun.federated.strategies import FedAvg
from edgerun.runtime import save_model
from edgerun.runtime.errors import ErrorCode
from tests.converters.training.models import digits, mlp

TOKEN = "t"
LONG = 60.0  # a deadline no test may wait for


@pytest.fixture
def model_path(tmp_path):
    graph = make_trainable(mlp((64, 8, 10), seed=0), optimizer=("sgd", {"lr": 0.1}))
    return save_model(graph, tmp_path / "mlp.train.erm")


def coordinator_with(model_path, tmp_path, clients: int, fraction: float, **config) -> Coordinator:
    config.setdefault("max_update_norm", None)  # the constant deltas below are not clipped
    strategy = FedAvg(fraction_fit=fraction, min_fit_clients=1, min_available_clients=clients)
    coordinator = Coordinator(model_path, Store(tmp_path / "c.db"), strategy,
                              CoordinatorConfig(rounds=1, enrol_token=TOKEN, secagg=None, round_timeout=LONG,
                                                **config), KeyPair.generate())
    for i in range(clients):
        coordinator.enrol(f"d{i}", KeyPair.generate().public_bytes, TOKEN, {})
        coordinator.work_for(f"d{i}")  # seen: available
    return coordinator


def open_round(coordinator: Coordinator) -> tuple[threading.Thread, list[str]]:
    runner = threading.Thread(target=coordinator.run, daemon=True)
    runner.start()
    deadline = time.time() + 10
    while coordinator.store.current_round() is None:
        assert time.time() < deadline, "the round did not open"
        time.sleep(0.01)
    return runner, list(coordinator.store.current_round().selected)


def constant_delta(coordinator: Coordinator, value: float) -> bytes:
    return encode_arrays({k: np.full_like(v, value) for k, v in coordinator.parameters.items()})


def test_over_selection_selects_more_and_the_round_closes_at_the_target(model_path, tmp_path):
    coordinator = coordinator_with(model_path, tmp_path, clients=10, fraction=0.4, over_selection=0.5)
    before = {k: v.copy() for k, v in coordinator.parameters.items()}
    runner, selected = open_round(coordinator)
    assert len(selected) == 6 and len(set(selected)) == 6  # target 4, plus ceil(0.5 x 4)
    assert coordinator.store.current_round().config["reports_needed"] == 4
    values, examples = [1.0, 2.0, 3.0, 4.0], [10, 30, 20, 40]
    started = time.monotonic()
    for cid, value, n in zip(selected, values, examples, strict=False):
        coordinator.submit(cid, 1, constant_delta(coordinator, value), n, {})
    runner.join(10)
    assert not runner.is_alive() and time.monotonic() - started < LONG / 4
    with pytest.raises(Rejected) as late:
        coordinator.submit(selected[4], 1, constant_delta(coordinator, 100.0), 10, {})
    assert late.value.code == ErrorCode.FAILED_PRECONDITION
    record = coordinator.store.history()[0]
    assert record.status == "aggregated"
    assert record.metrics["reports"] == 4 and record.metrics["selected"] == 6
    mean = sum(v * n for v, n in zip(values, examples, strict=True)) / sum(examples)  # 2.9
    for name, value in coordinator.parameters.items():
        np.testing.assert_allclose(value, before[name] + mean, rtol=1e-6)


def test_without_over_selection_the_strategy_cohort_is_the_round(model_path, tmp_path):
    coordinator = coordinator_with(model_path, tmp_path, clients=10, fraction=0.4, over_selection=0.0)
    runner, selected = open_round(coordinator)
    assert len(selected) == 4
    for cid in selected:
        coordinator.submit(cid, 1, constant_delta(coordinator, 0.0), 5, {})
    runner.join(10)
    assert coordinator.store.history()[0].metrics["selected"] == 4


def test_over_selection_takes_only_the_clients_that_are_available(model_path, tmp_path):
    coordinator = coordinator_with(model_path, tmp_path, clients=5, fraction=0.8, over_selection=1.0)
    runner, selected = open_round(coordinator)
    assert sorted(selected) == [f"d{i}" for i in range(5)]  # target 4, only one more available
    assert coordinator.store.current_round().config["reports_needed"] == 4
    for cid in selected[:4]:
        coordinator.submit(cid, 1, constant_delta(coordinator, 0.0), 5, {})
    runner.join(10)
    assert not runner.is_alive()


def test_a_report_goal_below_one_closes_the_round_early(model_path, tmp_path):
    coordinator = coordinator_with(model_path, tmp_path, clients=10, fraction=1.0, over_selection=0.0,
                                   report_goal=0.5)
    runner, selected = open_round(coordinator)
    assert coordinator.store.current_round().config["reports_needed"] == 5
    for cid in selected[:5]:
        coordinator.submit(cid, 1, constant_delta(coordinator, 0.0), 5, {})
    runner.join(10)
    assert not runner.is_alive() and coordinator.store.history()[0].metrics["reports"] == 5


def test_withdrawn_clients_are_not_waited_for(model_path, tmp_path):
    coordinator = coordinator_with(model_path, tmp_path, clients=6, fraction=1.0, over_selection=0.0)
    runner, selected = open_round(coordinator)
    started = time.monotonic()
    coordinator.withdraw("stranger", 1)  # not selected: ignored
    coordinator.withdraw(selected[0], 7)  # not the open round: ignored
    for cid in selected[:3]:
        coordinator.submit(cid, 1, constant_delta(coordinator, 1.0), 5, {})
    coordinator.withdraw(selected[3], 1)
    coordinator.withdraw(selected[4], 1)
    runner.join(0.5)
    assert runner.is_alive()  # one selected client may still report
    coordinator.withdraw(selected[5], 1)
    runner.join(10)
    assert not runner.is_alive() and time.monotonic() - started < LONG / 4
    record = coordinator.store.history()[0]
    assert record.status == "aggregated" and record.metrics["reports"] == 3


def test_the_report_goal_must_be_a_fraction():
    with pytest.raises(ValueError, match="report_goal"):
        CoordinatorConfig(report_goal=0.0)
    with pytest.raises(ValueError, match="over_selection"):
        CoordinatorConfig(over_selection=-0.1)
    with pytest.raises(ValueError, match="over_selection"):
        CoordinatorConfig(over_selection=float("nan"))


def test_a_withdrawn_client_is_expected_in_no_secure_aggregation_stage():
    keys = {c: KeyPair.generate().public_bytes for c in ("a", "b", "c")}
    params = SecAggParams.from_config(SecAggOptions().round_config(1, 3, [(3,)], 1.0))
    server = SecAggServer(params, list(keys), keys)
    assert server.expected() == {"a", "b", "c"}
    server.withdrawn.add("b")
    assert server.stage is Stage.ADVERTISE and server.expected() == {"a", "c"}


@pytest.mark.parametrize("secure", [False, True], ids=["plain", "secure"])
def test_a_simulation_with_dropouts_never_waits_for_a_deadline(model_path, secure):
    x, y, x_test, y_test = digits()
    config = SimulationConfig(num_clients=8, rounds=3, fraction_fit=0.5, drop_probability=0.3,
                              drop_stage="random" if secure else "start", round_timeout=LONG, epochs=1,
                              batch_size=16, lr=0.1, seed=3,
                              secagg=SecAggOptions(stage_timeout=LONG) if secure else None)
    started = time.monotonic()
    history = simulate(model_path, x[:400], y[:400], x_test, y_test, config)
    took = time.monotonic() - started
    assert [r.status for r in history].count("aggregated") == 3
    assert took < LONG / 2, f"{took:.1f} s: a round waited for its deadline"


def test_every_aggregated_round_writes_the_global_model_as_a_loadable_erm(model_path, tmp_path):
    from edgerun.runtime.interpreter import Interpreter

    exported = tmp_path / "global.erm"
    coordinator = coordinator_with(model_path, tmp_path, clients=3, fraction=1.0, over_selection=0.0,
                                   export_path=exported)
    before = {k: v.copy() for k, v in coordinator.parameters.items()}
    runner, selected = open_round(coordinator)
    for cid in selected:
        coordinator.submit(cid, 1, constant_delta(coordinator, 0.5), 5, {})
    runner.join(10)
    saved = Interpreter(exported).run({}, signature="save")
    assert saved.keys() == before.keys()
    for name, value in saved.items():
        np.testing.assert_allclose(value, before[name] + 0.5, rtol=1e-6)


def test_a_simulation_whose_devices_all_stopped_ends_with_an_error_not_a_hang(model_path):
    from edgerun.federated.simulation import SimulationStalled

    x, y, x_test, y_test = digits()
    wrong = np.zeros((200, 63), np.float32)  # the model takes 64 features: every device fails in round 1
    config = SimulationConfig(num_clients=4, rounds=2, fraction_fit=1.0, round_timeout=LONG, secagg=None, seed=1)
    started = time.monotonic()
    with pytest.raises(SimulationStalled, match="every simulated device stopped"):
        simulate(model_path, wrong, y[:200], x_test, y_test, config)
    assert time.monotonic() - started < LONG / 2


def test_over_selected_clients_beyond_the_goal_are_not_counted_as_failures(model_path, tmp_path):
    strategy = FedAvg(fraction_fit=0.5, min_fit_clients=1, min_available_clients=20, min_completed_fraction=0.8)
    coordinator = Coordinator(model_path, Store(tmp_path / "c.db"), strategy,
                              CoordinatorConfig(rounds=1, enrol_token=TOKEN, secagg=None, round_timeout=LONG,
                                                max_update_norm=None), KeyPair.generate())
    for i in range(20):
        coordinator.enrol(f"d{i}", KeyPair.generate().public_bytes, TOKEN, {})
        coordinator.work_for(f"d{i}")
    runner, selected = open_round(coordinator)
    assert len(selected) == 13  # target 10, 30 % more
    for cid in selected[:10]:
        coordinator.submit(cid, 1, constant_delta(coordinator, 0.0), 5, {})
    runner.join(10)
    record = coordinator.store.history()[0]
    assert record.status == "aggregated", record.reason  # 10 of the 10 needed: complete
    assert record.metrics["failures"] == 0


def test_the_advertise_goal_never_falls_below_the_roster_clients_require():
    from edgerun.federated.secagg.session import SecureRound, advertise_goal

    keys = {f"c{i:02d}": KeyPair.generate().public_bytes for i in range(13)}
    params = SecAggParams.from_config(SecAggOptions().round_config(1, 13, [(3,)], 1.0))
    assert advertise_goal(params, 6) == 7  # a strict majority of the 13 selected: clients refuse fewer
    assert advertise_goal(params, 10) == 10
    secure = SecureRound(params, list(keys), keys, 6, time.time() + LONG, LONG)
    assert secure.goal == 7 and secure.accepting("c00")
    secure.withdraw("c01")
    assert not secure.accepting("c01")  # withdrawn: told to wait, not to train


def test_keys_advertised_after_the_first_stage_closed_are_a_routine_refusal(model_path, tmp_path, caplog):
    from edgerun.federated.errors import LATE

    strategy = FedAvg(fraction_fit=1.0, min_fit_clients=3, min_available_clients=3)
    coordinator = Coordinator(model_path, Store(tmp_path / "c.db"), strategy,
                              CoordinatorConfig(rounds=1, enrol_token=TOKEN, round_timeout=LONG,
                                                secagg=SecAggOptions(stage_timeout=LONG)), KeyPair.generate())
    keys = {f"d{i}": KeyPair.generate() for i in range(3)}
    for cid, key in keys.items():
        coordinator.enrol(cid, key.public_bytes, TOKEN, {})
        coordinator.work_for(cid)
    stop = threading.Event()
    runner = threading.Thread(target=coordinator.run, args=(stop,), daemon=True)
    runner.start()
    deadline = time.time() + 10
    while coordinator.round_state is None or coordinator.round_state.secure is None:
        assert time.time() < deadline, "the round did not open"
        time.sleep(0.01)
    with coordinator.lock:
        coordinator.round_state.secure.server.stage = Stage.SHARE  # the first stage closed without d0
    with caplog.at_level("INFO", logger="edgerun.federated"), pytest.raises(Rejected) as late:
        coordinator.secure_step("d0", 1, Stage.ADVERTISE, object())
    assert late.value.routine and str(late.value).startswith(LATE) and "StageError" in str(late.value)
    assert [r.levelname for r in caplog.records if "refused" in r.getMessage()] == ["INFO"]
    stop.set()
    runner.join(10)
    assert not runner.is_alive()
