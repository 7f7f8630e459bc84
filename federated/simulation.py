"""Simulation: N virtual devices (threads) against a real coordinator over loopback gRPC.

Each device gets a partition of the data (IID, Dirichlet(alpha) or k-label
shards) and may drop out of a round it was selected for. The coordinator
evaluates every new global model on a held-out set, so the history shows
accuracy per round.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from federated import partition
from federated.auth import KeyPair
from federated.client import ClientOptions, FederatedClient, channel
from federated.coordinator import Coordinator, CoordinatorConfig
from federated.local import local_evaluate
from federated.service import serve
from federated.store import Store
from federated.strategies import FedAvg
from runtime.interpreter import Interpreter

log = logging.getLogger("edgerun.federated.simulation")
TOKEN = "simulation"


@dataclass
class SimulationConfig:
    num_clients: int = 10
    rounds: int = 10
    fraction_fit: float = 0.5
    partition: str = "iid"  # "iid", "dirichlet" or "shards"
    alpha: float = 0.5  # Dirichlet concentration
    shards_per_client: int = 2
    drop_probability: float = 0.0
    report_goal: float = 1.0
    round_timeout: float = 30.0
    epochs: int = 1
    batch_size: int = 32
    lr: float = 0.01
    seed: int = 0


def partitions(y: np.ndarray, config: SimulationConfig) -> list[np.ndarray]:
    """Index arrays, one per client, for the configured partition scheme."""
    if config.partition == "iid":
        return partition.iid(len(y), config.num_clients, config.seed)
    if config.partition == "dirichlet":
        return partition.dirichlet(y, config.num_clients, config.alpha, config.seed)
    if config.partition == "shards":
        return partition.label_shards(y, config.num_clients, config.shards_per_client, config.seed)
    raise ValueError(f"unknown partition {config.partition!r}; use iid, dirichlet or shards")


def simulate(model_path: str | Path, x: np.ndarray, y: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
             config: SimulationConfig, strategy: Any = None, store_path: str | Path | None = None) -> list[Any]:
    """Run a whole federated training; returns the store's round history."""
    strategy = strategy or FedAvg(
        fraction_fit=config.fraction_fit, min_fit_clients=1,
        min_available_clients=max(1, int(config.fraction_fit * config.num_clients)),
        local_epochs=config.epochs, batch_size=config.batch_size, client_lr=config.lr)
    evaluator_model = Interpreter(Path(model_path), device="auto")
    lock = threading.Lock()

    def evaluate(parameters: dict[str, np.ndarray]) -> dict[str, float]:
        with lock:
            return {"test_accuracy": local_evaluate(evaluator_model, parameters, x_test, y_test)["accuracy"]}

    with tempfile.TemporaryDirectory() as tmp:
        store = Store(store_path or Path(tmp) / "coordinator.db")
        coordinator = Coordinator(
            model_path, store, strategy,
            CoordinatorConfig(rounds=config.rounds, round_timeout=config.round_timeout,
                              report_goal=config.report_goal, enrol_token=TOKEN, seed=config.seed),
            KeyPair.generate(), evaluator=evaluate)
        server, port = serve(coordinator)
        stop = threading.Event()
        threads = _start_clients(f"127.0.0.1:{port}", x, y, config, stop)
        try:
            coordinator.run()
            coordinator.wait_until_clients_stopped(timeout=5)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=30)
            server.stop(grace=1).wait()
        return store.history()


def _start_clients(target: str, x: np.ndarray, y: np.ndarray, config: SimulationConfig,
                   stop: threading.Event) -> list[threading.Thread]:
    threads = []
    for i, index in enumerate(partitions(y, config)):
        options = ClientOptions(token=TOKEN, drop_probability=config.drop_probability, seed=config.seed + i)
        client = FederatedClient(channel(target), f"device-{i:04d}", KeyPair.generate(), (x[index], y[index]),
                                 options)
        thread = threading.Thread(target=_run_client, args=(client, stop), name=client.client_id, daemon=True)
        thread.start()
        threads.append(thread)
    return threads


def _run_client(client: FederatedClient, stop: threading.Event) -> None:
    try:
        client.run(stop)
    except Exception:  # noqa: BLE001 - a simulated device failing is part of the simulation
        log.exception("device %s stopped with an error", client.client_id)
