"""The virtual-client engines (federated.engines): the real coordinator in process, clients
trained by a thread pool or Ray actors.

Oracles: a numpy FedAvg of the same MLP (tests/federated/test_rounds.py), numpy forward
passes for evaluation, the closed-form order of arrivals (a device 100 s slower never
beats a fast one), and the thread engine for the ray engine (same seed: same history,
bit-identical parameters). Ray starts once for the module (a local Ray).
"""

from __future__ import annotations

import json
import math
import os
import socket
import sys
import time

import numpy as np
import pytest

from edgerun.cli import main
from edgerun.converters.training import make_trainable
from edgerun.federated import partition
from edgerun.federated.auth import KeyPair
from edgerun.federated.codec import decode_arrays
from edgerun.federated.coordinator import Coordinator, CoordinatorConfig
from edgerun.federated.engines import RAY_MISSING, EngineUnavailable, client_ids, run_virtual
from edgerun.federated.engines.ray_actors import ray_session
from edgerun.federated.local import parameter_spec
from edgerun.federated.secagg.options import SecAggOptions
from edgerun.federated.simulation import DeviceBehaviour, SimulationConfig, assign_behaviours, simulate
from edgerun.federated.store import AlreadyEnrolled, Store
from edgerun.federated.strategies import FedAvg
from edgerun.runtime import save_model
from edgerun.runtime.interpreter import Interpreter
from tests.converters.training.models import digits, mlp
from tests.federated.test_rounds import numpy_fedavg

LONG = 60.0  # a deadline no test may wait for


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray for the module (the engines use a Ray that is running and leave it)."""
    with ray_session() as ray:
        yield ray


@pytest.fixture
def model_path(tmp_path):
    graph = make_trainable(mlp((64, 32, 10), seed=0), optimizer=("sgd", {"lr": 0.1}))
    return save_model(graph, tmp_path / "mlp.train.erm")


def run(model_path, tmp_path, config, name, n=400):
    """simulate() on the first n digits; (history, the final global parameters, the store)."""
    x, y, x_test, y_test = digits()
    store_path = tmp_path / f"{name}.db"
    history = simulate(model_path, x[:n], y[:n], x_test, y_test, config, store_path=store_path)
    store = Store(store_path)
    spec = parameter_spec(Interpreter(model_path))
    return history, decode_arrays(store.latest_model()[1], spec), store


# ---------------------------------------------------------------- enrolment


def test_enrol_many_enrols_a_fleet_at_once_and_all_or_nothing(tmp_path):
    store = Store(tmp_path / "c.db")
    keys = [os.urandom(32) for _ in range(10_001)]
    ids = client_ids(10_000)
    assert ids[0] == "device-0000" and ids[-1] == "device-9999" and client_ids(10_001)[-1] == "device-10000"
    assert store.enrol_many((cid, key, {"i": i}) for i, (cid, key) in enumerate(zip(ids, keys, strict=False))) == 10_000
    assert store.client_count() == 10_000
    record = store.client("device-5000")
    assert record.public_key == keys[5000] and record.info == {"i": 5000}
    with pytest.raises(AlreadyEnrolled, match="'device-0007' is already enrolled"):
        store.enrol_many([("new-1", os.urandom(32), {}), ("device-0007", os.urandom(32), {})])
    with pytest.raises(AlreadyEnrolled, match="already enrolled as 'device-0003'"):
        store.enrol_many([("new-2", keys[3], {})])
    with pytest.raises(AlreadyEnrolled, match="'new-3' is given twice"):
        store.enrol_many([("new-3", os.urandom(32), {}), ("new-3", os.urandom(32), {})])
    with pytest.raises(AlreadyEnrolled, match="also given for 'new-4'"):
        store.enrol_many([("new-4", keys[10_000], {}), ("new-5", keys[10_000], {})])
    with pytest.raises(ValueError, match="public_key"):
        store.enrol_many([("new-6", os.urandom(32), {}), ("new-7", b"", {})])
    assert store.client_count() == 10_000 and store.client("new-1") is None  # nothing of a refused batch


# ---------------------------------------------------------------- training


def test_the_thread_engine_equals_a_numpy_fedavg(model_path, tmp_path):
    x, y, _, _ = digits()
    config = SimulationConfig(num_clients=3, rounds=3, fraction_fit=1.0, epochs=2, batch_size=16, lr=0.1, seed=1,
                              round_timeout=LONG, secagg=None, engine="thread")
    initial = Interpreter(model_path).run({}, signature="save")
    history, parameters, _ = run(model_path, tmp_path, config, "thread", n=240)
    shards = [(x[i], y[i]) for i in partition.iid(240, 3, seed=1)]
    want = numpy_fedavg(initial, shards, rounds=3, epochs=2, batch_size=16, lr=0.1)
    assert [r.status for r in history] == ["aggregated"] * 3
    for name, value in want.items():
        np.testing.assert_allclose(parameters[name], value, rtol=0, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("secure", [False, True], ids=["plain", "secure"])
def test_the_ray_engine_gives_the_thread_engines_results(ray_local, model_path, tmp_path, secure):
    config = dict(num_clients=12, rounds=3, fraction_fit=0.5, drop_probability=0.3, epochs=1, batch_size=16,
                  lr=0.1, seed=5, round_timeout=LONG, drop_stage="random" if secure else "start",
                  secagg=SecAggOptions(stage_timeout=LONG) if secure else None)
    runs = {engine: run(model_path, tmp_path, SimulationConfig(**config, engine=engine), engine)
            for engine in ("thread", "ray")}
    (thread, thread_parameters, thread_store), (ray, ray_parameters, ray_store) = runs["thread"], runs["ray"]
    assert [r.status for r in thread] == ["aggregated"] * 3
    assert any(r.metrics["reports"] < r.metrics["selected"] for r in thread)  # dropouts happened
    assert [(r.round, r.status, r.selected, r.metrics) for r in ray] == \
        [(r.round, r.status, r.selected, r.metrics) for r in thread]
    if not secure:
        assert [ray_store.reported(r.round) for r in ray] == [thread_store.reported(r.round) for r in thread]
    for name, value in thread_parameters.items():
        assert np.array_equal(ray_parameters[name], value), name


@pytest.mark.parametrize(("report_goal", "goal"), [(1.0, 4), (0.5, 2)])
def test_over_selection_and_the_report_goal_take_the_first_arrivals(model_path, tmp_path, report_goal, goal):
    behaviours = (DeviceBehaviour("fast", 0.5), DeviceBehaviour("slow", 0.5, delay_seconds=100.0))
    config = SimulationConfig(num_clients=10, rounds=3, fraction_fit=0.4, over_selection=0.5, report_goal=report_goal,
                              epochs=1, batch_size=16, lr=0.1, round_timeout=LONG, secagg=None, engine="thread",
                              behaviours=behaviours, seed=2)
    started = time.monotonic()
    history, _, store = run(model_path, tmp_path, config, "goal")
    assert time.monotonic() - started < LONG / 2
    fast = {cid for cid, kind in zip(client_ids(10), assign_behaviours(config), strict=True) if kind.name == "fast"}
    for record in history:
        reported = set(store.reported(record.round))
        assert len(record.selected) == 6 and len(reported) == goal == record.metrics["reports"]
        assert reported <= set(record.selected)
        chosen_fast = fast & set(record.selected)
        assert reported <= chosen_fast if len(chosen_fast) >= goal else chosen_fast <= reported


@pytest.mark.parametrize("stage", ["share", "masked"])
def test_a_client_leaving_mid_protocol_is_withdrawn_and_not_waited_for(model_path, tmp_path, stage):
    behaviours = (DeviceBehaviour("steady", 0.75), DeviceBehaviour("flaky", 0.25, drop_probability=1.0))
    config = SimulationConfig(num_clients=8, rounds=2, fraction_fit=1.0, over_selection=0.0, epochs=1, batch_size=16,
                              lr=0.1, round_timeout=LONG, secagg=SecAggOptions(stage_timeout=LONG), drop_stage=stage,
                              behaviours=behaviours, engine="thread")
    started = time.monotonic()
    history, _, _ = run(model_path, tmp_path, config, "secure")
    assert time.monotonic() - started < LONG / 2, "a stage waited for its deadline"
    assert [r.status for r in history] == ["aggregated"] * 2
    assert [(r.metrics["selected"], r.metrics["reports"]) for r in history] == [(8, 6)] * 2  # 2 flaky of 8


def test_each_secure_aggregation_cohort_admits_its_share_of_the_goal(model_path, tmp_path):
    config = SimulationConfig(num_clients=16, rounds=2, fraction_fit=0.75, epochs=1, batch_size=16, lr=0.1,
                              round_timeout=LONG, secagg=SecAggOptions(stage_timeout=LONG, max_cohort=6),
                              engine="thread")
    started = time.monotonic()
    history, _, _ = run(model_path, tmp_path, config, "cohorts")
    assert time.monotonic() - started < LONG / 2, "a cohort waited for its deadline"
    # target 12 plus ceil(0.3 x 12) = 16 selected, in cohorts of 6, 5 and 5; each closes its first
    # stage at its share ceil(12 x size / 16) of the goal: 5 + 4 + 4 masked inputs
    assert [(r.status, r.metrics["selected"], r.metrics["cohorts"], r.metrics["reports"]) for r in history] == \
        [("aggregated", 16, 3, 13)] * 2


# ---------------------------------------------------------------- evaluation


def test_evaluation_rounds_report_each_clients_evaluation(model_path, tmp_path):
    x, y, _, _ = digits()
    x, y = x[:200], y[:200]
    strategy = FedAvg(fraction_fit=1.0, fraction_evaluate=1.0, min_fit_clients=1, min_evaluate_clients=1,
                      min_available_clients=4, local_epochs=1, batch_size=16, client_lr=0.1)
    store = Store(tmp_path / "c.db")
    coordinator = Coordinator(model_path, store, strategy, CoordinatorConfig(rounds=1, evaluate_every=1, secagg=None,
                                                                             round_timeout=LONG), KeyPair.generate())
    clients = run_virtual(coordinator, x, y, partition.iid(200, 4, seed=0), [DeviceBehaviour("d", 1.0)] * 4)
    assert [c.evaluations_done for c in clients.values()] == [[1]] * 4
    p = decode_arrays(store.model(1), coordinator.spec)  # the model the clients evaluated: every example once
    h = np.maximum(x @ p["fc0.weight"].T.astype(np.float64) + p["fc0.bias"], 0)
    z = h @ p["fc1.weight"].T.astype(np.float64) + p["fc1.bias"]
    log_p = z - z.max(1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
    summary = store.get_state("evaluation/1")
    assert summary["accuracy"] == pytest.approx(np.mean(z.argmax(1) == y), abs=1e-9)
    assert summary["loss"] == pytest.approx(-np.mean(log_p[np.arange(len(y)), y]), rel=1e-5)


# ---------------------------------------------------------------- wiring


def test_without_ray_the_ray_engine_says_how_to_get_it_in_one_line(model_path, tmp_path, monkeypatch, capsys):
    x, y, xt, yt = digits()
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if it were not installed
    with pytest.raises(EngineUnavailable) as missing:
        simulate(model_path, x[:40], y[:40], xt, yt, SimulationConfig(num_clients=2, engine="ray"))
    assert str(missing.value) == RAY_MISSING == "the ray engine needs Ray: pip install 'edgerun[simulation]'"
    with pytest.raises(ValueError, match="unknown simulation engine 'mpi'"):
        simulate(model_path, x[:40], y[:40], xt, yt, SimulationConfig(num_clients=2), engine="mpi")
    np.savez(tmp_path / "data.npz", x=x[:40], y=y[:40])
    state = tmp_path / "state.db"
    assert main(["federated", "simulate", "--model", str(model_path), "--data", str(tmp_path / "data.npz"),
                 "--engine", "ray", "--state", str(state)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"edgerun: error: {RAY_MISSING}"]
    assert not state.exists()


def test_an_unreachable_ray_cluster_is_one_error(monkeypatch):
    import ray

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # as in a process without Ray running
    with pytest.raises(EngineUnavailable, match=f"cannot reach the Ray cluster at '{address}'"):
        with ray_session(address):
            pass


@pytest.mark.parametrize(("settings", "message"), [
    ({"drop_stage": "lunch"}, "unknown drop stage 'lunch'"),
    ({"num_clients": 41}, r"num_clients \(41\) must not exceed the number of examples \(40\)"),
])
def test_bad_virtual_engine_settings_fail_before_any_file_is_made(model_path, tmp_path, settings, message):
    x, y, xt, yt = digits()
    config = SimulationConfig(**{"num_clients": 4, "engine": "thread", **settings})
    with pytest.raises(ValueError, match=message):
        simulate(model_path, x[:40], y[:40], xt, yt, config, store_path=tmp_path / "state.db")
    assert not (tmp_path / "state.db").exists()


def test_simulate_runs_the_thread_engine_from_the_command_line(model_path, tmp_path, capsys):
    x, y, xt, yt = digits()
    np.savez(tmp_path / "data.npz", x=x[:300], y=y[:300], x_test=xt, y_test=yt)
    assert main(["federated", "simulate", "--model", str(model_path), "--data", str(tmp_path / "data.npz"),
                 "--engine", "thread", "--clients", "30", "--rounds", "2", "--fraction-fit", "0.2", "--epochs", "1",
                 "--lr", "0.1", "--drop", "0.2", "--secure-aggregation", "off",
                 "--metrics", str(tmp_path / "rounds.json")]) == 0
    rows = json.loads((tmp_path / "rounds.json").read_text())
    assert [r["status"] for r in rows] == ["aggregated"] * 2
    assert all(r["selected"] == 6 + math.ceil(0.3 * 6) for r in rows)  # target 6 plus 30 % over-selection
