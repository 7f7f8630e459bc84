"""Simulation engines: how `edgerun federated simulate` plays its devices.

    grpc    one FederatedClient thread per device against the coordinator over loopback
            gRPC (federated.simulation; the whole stack, up to about a hundred devices)
    thread  virtual clients driven in process (federated.engines.driver), trained by a
            pool of threads (federated.engines.thread_pool): thousands of clients
    ray     the same driver, trained by Ray actors (federated.engines.ray_actors) on a
            local Ray or a Ray cluster, for simulations that outgrow one machine

The thread and ray engines give equal histories and bit-identical global parameters for
the same seed (see federated.engines.driver for what is decided where).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from typing import Any

import numpy as np

from edgerun.federated.auth import KeyPair
from edgerun.federated.availability import Fleet
from edgerun.federated.coordinator import Coordinator
from edgerun.federated.engines.driver import DROP_CHOICES, Behaviour, ClientState, Driver, Workers
from edgerun.federated.engines.ray_actors import RAY_MISSING, EngineUnavailable, RayWorkers, import_ray
from edgerun.federated.engines.thread_pool import ThreadWorkers

__all__ = ["ENGINES", "RAY_MISSING", "EngineUnavailable", "check_engine", "client_ids", "enrol_fleet",
           "run_virtual"]

ENGINES = ("grpc", "thread", "ray")
VIRTUAL = ("thread", "ray")


def check_engine(engine: str, drop_stage: str = "start") -> None:
    """ValueError for an unknown engine, or (thread and ray engines) an unknown drop stage;
    EngineUnavailable for "ray" without Ray installed."""
    if engine not in ENGINES:
        raise ValueError(f"unknown simulation engine {engine!r}; use one of {', '.join(ENGINES)}")
    stages = (*DROP_CHOICES, "random")
    if engine in VIRTUAL and drop_stage not in stages:
        raise ValueError(f"unknown drop stage {drop_stage!r}; use one of {', '.join(stages)}")
    if engine == "ray":
        import_ray()


def client_ids(count: int) -> list[str]:
    """The ids of a fleet of `count` virtual clients: device-0000, device-0001, ... (as the
    grpc engine names its devices; wider numbers above 10,000, so ids sort as they count)."""
    width = max(4, len(str(count - 1)))
    return [f"device-{i:0{width}d}" for i in range(count)]


def enrol_fleet(coordinator: Coordinator, ids: Sequence[str]) -> dict[str, ClientState]:
    """Enrol `ids` in the coordinator's store in one transaction, each with a fresh Ed25519
    key (secure aggregation signs with it); client i gets partition i. AlreadyEnrolled (from
    the store) when an id is enrolled already."""
    states = {cid: ClientState(i, KeyPair.generate()) for i, cid in enumerate(ids)}
    coordinator.store.enrol_many((cid, s.key.public_bytes, {"virtual": "true"}) for cid, s in states.items())
    return states


def run_virtual(coordinator: Coordinator, x: Any, y: np.ndarray, partitions: Sequence[np.ndarray],
                behaviours: Sequence[Behaviour], engine: str = "thread", seed: int = 0, drop_stage: str = "start",
                ray_address: str | None = None, workers: int | None = None, fleet: Fleet | None = None,
                report_drops: bool = True) -> dict[str, ClientState]:
    """Run `coordinator` to its last round with len(partitions) virtual clients; client i
    holds (x[partitions[i]], y[partitions[i]]) and behaves as `behaviours[i]` (its delay
    orders arrivals, its drop_probability drops it, at `drop_stage`: "start", a secure-
    aggregation stage or "random"). `engine` "thread" trains in `workers` threads (default
    one per CPU), "ray" on Ray actors (a local Ray, or the cluster at `ray_address`).
    `fleet`: device conditions on a simulated clock (federated.availability; None: every
    device always available, no clock); `report_drops` False: drops are not told to the
    coordinator (rounds wait for their deadline, as for a real fleet).
    Returns each client's state (rounds done, dropped, evaluated). ValueError for an unknown
    engine or drop stage or mismatched lengths; EngineUnavailable when Ray is missing or
    does not start."""
    if engine not in VIRTUAL:
        raise ValueError(f"unknown virtual-client engine {engine!r}; use one of {', '.join(VIRTUAL)}")
    if len(behaviours) != len(partitions) or not partitions:
        raise ValueError(f"{len(partitions)} partitions and {len(behaviours)} behaviours: expected one of each "
                         "per client, at least one client")
    check_engine(engine, drop_stage)
    with ExitStack() as stack:
        pool = _workers(engine, coordinator.model_bytes, x, y, partitions, ray_address, workers)
        stack.callback(pool.close)
        clients = enrol_fleet(coordinator, client_ids(len(partitions)))
        Driver(coordinator, pool, clients, behaviours, seed, drop_stage, fleet, report_drops).run()
    return clients


def _workers(engine: str, model: bytes, x: Any, y: np.ndarray, partitions: Sequence[np.ndarray],
             ray_address: str | None, count: int | None) -> Workers:
    if engine == "ray":
        return RayWorkers(model, x, y, partitions, ray_address, count)
    return ThreadWorkers(model, x, y, partitions, count)
