"""Simulation: N virtual devices (threads) against a real coordinator over loopback gRPC.

Each device gets a partition of the data (IID, Dirichlet(alpha) or k-label
shards) and may drop out of a round it was selected for. The coordinator
evaluates every new global model on a held-out set, so the history shows
accuracy per round.

Device conditions (`SimulationConfig.availability`, thread and ray engines): devices are
eligible only while charging, idle and unmetered, following a daily pattern per time zone,
and drop out when that ends mid-round (federated.availability). A round then takes, on a
simulated clock, the work time of the device whose report reached the round's goal (each
device's fixed work estimate times its speed factor, from the model); `selection=
"availability"` weights selection by past availability (federated.strategies.by_availability).
"""

from __future__ import annotations

import json
import logging
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgerun.federated import partition
from edgerun.federated.auth import KeyPair
from edgerun.federated.availability import Fleet, NoEligibleDevices, fleet_for
from edgerun.federated.client import ClientOptions, FederatedClient, channel
from edgerun.federated.coordinator import Coordinator, CoordinatorConfig
from edgerun.federated.engines.driver import RoundsKeepFailing
from edgerun.federated.local import local_evaluate
from edgerun.federated.privacy import DpOptions
from edgerun.federated.secagg.options import SecAggOptions
from edgerun.federated.service import serve
from edgerun.federated.store import Store
from edgerun.federated.strategies import FedAvg
from edgerun.federated.strategies.by_availability import AvailabilityWeighted
from edgerun.runtime.errors import EdgerunError
from edgerun.runtime.extras import require
from edgerun.runtime.interpreter import Interpreter

log = logging.getLogger("edgerun.federated.simulation")
TOKEN = "simulation"


@dataclass(frozen=True)
class DeviceBehaviour:
    """A kind of simulated device: its share of the fleet, how long a round takes it
    beyond training (slow hardware, slow network) and how often it drops out."""

    name: str
    share: float
    delay_seconds: float = 0.0
    drop_probability: float = 0.0


@dataclass
class SimulationConfig:
    num_clients: int = 10
    rounds: int = 10
    fraction_fit: float = 0.5
    partition: str = "iid"  # "iid", "dirichlet" or "shards"
    alpha: float = 0.5  # Dirichlet concentration
    shards_per_client: int = 2
    drop_probability: float = 0.0
    report_goal: float = 1.0  # of the target; rounds select over_selection more (CoordinatorConfig)
    over_selection: float = 0.3
    round_timeout: float = 30.0
    epochs: int = 5  # McMahan et al.'s E and B; the digits MLP reaches ~0.94 with them
    batch_size: int = 10
    lr: float | None = None  # None: the learning rate stored in the model (make_trainable's lr)
    seed: int = 0
    # Device kinds by share of the fleet; empty: every device drops with drop_probability.
    behaviours: tuple[DeviceBehaviour, ...] = ()
    # Secure aggregation (None: off, plain deltas) and where dropping devices go away.
    secagg: SecAggOptions | None = field(default_factory=SecAggOptions)
    drop_stage: str = "start"
    dp: DpOptions | None = None
    compression: str = "none"  # plain uploads only (secagg=None)
    # How devices are played (federated.engines): "grpc" (a thread per device over loopback gRPC),
    # "thread" or "ray" (virtual clients in process, trained by threads or Ray actors).
    engine: str = "grpc"
    ray_address: str | None = None  # the ray engine: a Ray cluster to use (None: a local Ray)
    # The simulator tells the coordinator when a device drops out of a round, so no round waits
    # for its deadline; False plays a real fleet, whose vanished devices say nothing.
    report_drops: bool = True
    # Device conditions (federated.availability; thread and ray engines): None (every device always
    # available, no simulated clock), "daily", "always", a model, or a Fleet (read its `rounds`, `now`
    # and `idle` afterwards; one Fleet per run).
    availability: Any = None
    # "uniform" (the strategy's draw) or "availability": weighted by past availability (needs `availability`).
    selection: str = "uniform"


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
             config: SimulationConfig, strategy: Any = None, store_path: str | Path | None = None,
             on_round: Callable[[Any], None] | None = None, engine: str | None = None) -> list[Any]:
    """Run a whole federated training; returns the store's round history. `on_round` is
    called with each finished round's record (for progress display). `engine` (default
    config.engine) plays the devices: "grpc", "thread" or "ray" (federated.engines).
    ValueError for an unknown engine; EngineUnavailable for "ray" without Ray (before
    anything is written)."""
    from edgerun.federated.engines import check_engine, run_virtual

    engine = engine or config.engine
    check_engine(engine, config.drop_stage)
    fleet = _fleet(config, engine)
    if engine != "grpc":  # bad partition or behaviour settings fail before any file is made
        parts, kinds = partitions(y, config), assign_behaviours(config)
    fewest = 1 if config.secagg is None else config.secagg.min_clients  # a secure round of one always fails
    strategy = strategy or FedAvg(
        fraction_fit=config.fraction_fit, min_fit_clients=fewest,
        min_available_clients=max(fewest, int(config.fraction_fit * config.num_clients)),
        local_epochs=config.epochs, batch_size=config.batch_size, client_lr=config.lr)
    if config.selection == "availability":
        strategy = AvailabilityWeighted(strategy, lambda cid: fleet.weight(int(cid.rsplit("-", 1)[1])))
    evaluator_model = Interpreter(Path(model_path), device="auto")
    lock = threading.Lock()

    def evaluate(parameters: dict[str, np.ndarray]) -> dict[str, float]:
        """test_accuracy for a classifier, test_mse for a regression model."""
        with lock:
            result = local_evaluate(evaluator_model, parameters, x_test, y_test)
        return {f"test_{k}": result[k] for k in ("accuracy", "mse") if k in result}

    with tempfile.TemporaryDirectory() as tmp:
        store = Store(store_path or Path(tmp) / "coordinator.db")
        coordinator = Coordinator(
            model_path, store, strategy,
            CoordinatorConfig(rounds=config.rounds, round_timeout=config.round_timeout,
                              report_goal=config.report_goal, over_selection=config.over_selection,
                              enrol_token=TOKEN, seed=config.seed,
                              secagg=config.secagg, dp=config.dp, compression=config.compression),
            KeyPair.generate(), evaluator=evaluate, on_round=on_round)
        if engine != "grpc":
            try:
                run_virtual(coordinator, x, y, parts, kinds, engine=engine, seed=config.seed,
                            drop_stage=config.drop_stage, ray_address=config.ray_address, fleet=fleet,
                            report_drops=config.report_drops)
            except (NoEligibleDevices, RoundsKeepFailing) as exc:
                raise SimulationStalled(f"{exc}; the rounds so far are in the store") from exc
            return store.history()
        server, port = serve(coordinator)
        stop = threading.Event()
        threads = _start_clients(f"127.0.0.1:{port}", x, y, config, stop,
                                 coordinator.withdraw if config.report_drops else None)
        gone = threading.Event()  # set when every device thread has ended before the run did
        watchdog = threading.Thread(target=_watch_devices, args=(threads, gone, stop), daemon=True)
        watchdog.start()
        try:
            coordinator.run(gone)
            if gone.is_set() and not coordinator.finished:
                raise SimulationStalled("every simulated device stopped before the run finished (see the "
                                        "warnings above); the rounds so far are in the store")
            coordinator.wait_until_clients_stopped(timeout=5)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=30)
            server.stop(grace=1).wait()
        return store.history()


class SimulationStalled(EdgerunError):
    """A simulation cannot go on: no simulated device is left to train (or eligible to)."""


def _fleet(config: SimulationConfig, engine: str) -> Fleet | None:
    """The run's Fleet (None without device conditions). ValueError for settings that
    cannot work: conditions under the grpc engine (real time, no simulated clock), weighted
    selection without conditions or under differential privacy (uniform cohorts)."""
    if config.selection not in ("uniform", "availability"):
        raise ValueError(f"unknown selection {config.selection!r}; use uniform or availability")
    if config.availability is None:
        if config.selection != "uniform":
            raise ValueError("selection='availability' needs device conditions (SimulationConfig.availability)")
        return None
    if engine == "grpc":
        raise ValueError("device conditions (availability) need a simulated clock: use engine 'thread' or 'ray'")
    if config.selection != "uniform" and config.dp is not None:
        raise ValueError("selection='availability' cannot run under differential privacy (its accounting "
                         "assumes a uniform cohort)")
    return fleet_for(config.availability, config.seed)


def _watch_devices(threads: list[threading.Thread], gone: threading.Event, stop: threading.Event) -> None:
    """Set `gone` when every device thread has ended while the run goes on (`stop` unset)."""
    while not stop.wait(0.2):
        if not any(t.is_alive() for t in threads):
            if not stop.is_set():
                gone.set()
            return


def _start_clients(target: str, x: np.ndarray, y: np.ndarray, config: SimulationConfig,
                   stop: threading.Event, on_drop: Callable[[str, int], None] | None) -> list[threading.Thread]:
    """One thread per device; a device that drops out of a round says so through `on_drop`
    (the simulator knows, so the coordinator need not wait for its deadline)."""
    threads = []
    kinds = assign_behaviours(config)
    for i, index in enumerate(partitions(y, config)):
        kind = kinds[i]
        options = ClientOptions(token=TOKEN, drop_probability=kind.drop_probability, delay_seconds=kind.delay_seconds,
                                seed=config.seed + i, drop_stage=config.drop_stage, on_drop=on_drop)
        client = FederatedClient(channel(target), f"device-{i:04d}", KeyPair.generate(), (x[index], y[index]),
                                 options)
        thread = threading.Thread(target=_run_client, args=(client, stop), name=client.client_id, daemon=True)
        thread.start()
        threads.append(thread)
    return threads


def assign_behaviours(config: SimulationConfig) -> list[DeviceBehaviour]:
    """One behaviour per client, in proportion to the shares (deterministic for a seed)."""
    if not config.behaviours:
        return [DeviceBehaviour("default", 1.0, 0.0, config.drop_probability)] * config.num_clients
    shares = np.array([b.share for b in config.behaviours], dtype=np.float64)
    if np.any(shares < 0) or shares.sum() <= 0:
        raise ValueError("device behaviour shares must be >= 0 and not all 0")
    counts = np.floor(shares / shares.sum() * config.num_clients).astype(int)
    counts[np.argmax(shares)] += config.num_clients - counts.sum()
    kinds = [b for b, n in zip(config.behaviours, counts, strict=True) for _ in range(n)]
    order = np.random.default_rng(config.seed).permutation(len(kinds))
    return [kinds[i] for i in order]


def write_metrics(history: list[Any], path: Path) -> None:
    """Per-round metrics as JSON, or CSV when `path` ends in .csv."""
    rows = [{"round": r.round, "status": r.status,
             "seconds": None if r.finished_at is None else r.finished_at - r.opened_at, **r.metrics} for r in history]
    if path.suffix == ".csv":
        import csv

        columns = list(dict.fromkeys(k for row in rows for k in row))
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
    else:
        path.write_text(json.dumps(rows, indent=2))


def plot_history(history: list[Any], path: Path) -> None:
    """A PNG of test accuracy and training loss per round (needs matplotlib: the `plot` extra).
    Under secure aggregation clients report no loss in the clear: the plot then shows accuracy
    and the number of masked inputs aggregated per round. MissingExtra without matplotlib."""
    matplotlib = require("matplotlib", "plot", "plotting the rounds")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in history if r.status == "aggregated"]
    rounds = [r.round for r in done]
    fig, left = plt.subplots(figsize=(7, 4))
    left.plot(rounds, [r.metrics.get("test_accuracy", float("nan")) for r in done], "o-", label="test accuracy")
    left.set_xlabel("round")
    left.set_ylabel("test accuracy")
    right = left.twinx()
    if any(r.metrics.get("loss") is not None for r in done):
        right.plot(rounds, [r.metrics.get("loss", float("nan")) for r in done], "s--", color="tab:red", label="loss")
        right.set_ylabel("client training loss")
    else:
        right.bar(rounds, [r.metrics.get("reports", 0) for r in done], color="tab:gray", alpha=0.3,
                  label="masked inputs aggregated")
        right.set_ylabel("devices in the masked sum")
        left.set_zorder(right.get_zorder() + 1)  # the accuracy line in front of the bars
        left.patch.set_visible(False)
    fig.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _run_client(client: FederatedClient, stop: threading.Event) -> None:
    try:
        client.run(stop)
    except Exception:  # noqa: BLE001 - a simulated device failing is part of the simulation
        log.exception("device %s stopped with an error", client.client_id)
