"""The "ray" engine's workers: Trainer actors on a local Ray or on a Ray cluster.

One actor per CPU of the cluster (each reserves one), created once with the model bytes
and the fleet's data, both put in Ray's object store once (actors on one node read the
same shared-memory copy); each round's global parameters are put once and every job batch
refers to them. Jobs go out in batches (a few per actor, so faster actors take more) and
come back in the order of the jobs.

Ray itself (the `simulation` extra) is imported only here and only when the engine is
used; without it `import_ray` raises RayMissing (an EngineUnavailable and a MissingExtra) with
the one line to fix it.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import numpy as np

from edgerun.federated.engines.trainer import Arrays, Job, Outcome, Trainer
from edgerun.runtime.errors import EdgerunError
from edgerun.runtime.extras import MissingExtra, require

RAY_MISSING = "the ray engine needs Ray: pip install 'edgerun[simulation]'"
BATCHES_PER_ACTOR = 4
CONNECT_TIMEOUT = 5.0  # seconds to reach a Ray cluster's address
# Ray reads these when it starts: no usage statistics, no warning about accelerator variables.
QUIET_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0"}


class EngineUnavailable(EdgerunError):
    """A simulation engine that cannot run here (Ray missing, a Ray cluster unreachable)."""


class RayMissing(EngineUnavailable, MissingExtra):
    """The ray engine without Ray installed (RAY_MISSING: the `simulation` extra)."""


def import_ray() -> Any:
    """The `ray` module; RayMissing (message RAY_MISSING) when it is not installed."""
    return require("ray", "simulation", "the ray engine", "Ray", RayMissing)


@contextmanager
def ray_session(address: str | None = None) -> Iterator[Any]:
    """Ray for the length of the block (yields the `ray` module). A Ray this process already
    runs is used as it is and left running. Otherwise: `address` None starts a local Ray
    (quiet: no dashboard, no usage statistics, no worker output, its files in a temporary
    folder removed afterwards), else connects to the cluster at `address` (e.g.
    "ray://head:10001" or "auto"); either is shut down at the end. EngineUnavailable when
    Ray is missing or does not start or connect."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    if address is not None:
        _check_reachable(address)
    temp = tempfile.mkdtemp(prefix="edgerun-ray-") if address is None else None
    saved = {k: os.environ.get(k) for k in QUIET_ENV}
    os.environ.update(QUIET_ENV)
    try:
        if temp is not None:
            ray.init(address="local", include_dashboard=False, log_to_driver=False,
                     logging_level=logging.ERROR, _temp_dir=temp)
        else:
            ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
    except Exception as exc:  # noqa: BLE001 - Ray raises many kinds; the user gets one line
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
        where = "a local Ray" if address is None else f"the Ray cluster at {address!r}"
        raise EngineUnavailable(f"cannot start {where}: {type(exc).__name__}: {exc}") from None
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    try:
        yield ray
    finally:
        ray.shutdown()
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)


def _check_reachable(address: str) -> None:
    """EngineUnavailable unless a "host:port" (or "ray://host:port") address accepts a TCP
    connection within CONNECT_TIMEOUT seconds (Ray itself retries a dead address for minutes)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # "auto" and other forms: Ray finds the cluster itself
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT).close()
    except OSError as exc:
        raise EngineUnavailable(f"cannot reach the Ray cluster at {address!r}: {exc.strerror or exc}") from None


class RayWorkers:
    """Trainer actors, `actors` of them (default: one per CPU of the cluster)."""

    name = "ray"

    def __init__(self, model: bytes, x: Any, y: np.ndarray, partitions: Sequence[np.ndarray],
                 address: str | None = None, actors: int | None = None) -> None:
        self._stack = ExitStack()
        ray = self.ray = self._stack.enter_context(ray_session(address))
        try:
            count = actors or max(1, int(ray.cluster_resources().get("CPU", 1)))
            actor = ray.remote(num_cpus=1)(Trainer)
            shared = [ray.put(v) for v in (model, x, y, list(partitions))]
            self.actors = [actor.remote(*shared) for _ in range(count)]
            ray.get([a.run.remote({}, []) for a in self.actors])  # started: a failing start shows here
        except BaseException:
            self._stack.close()
            raise

    def run(self, parameters: Arrays, jobs: Sequence[Job]) -> list[Outcome]:
        """The outcome of each job, in the order of `jobs`."""
        if not jobs:
            return []
        from ray.util import ActorPool

        ref = self.ray.put(parameters)
        count = min(len(jobs), len(self.actors) * BATCHES_PER_ACTOR)
        size = -(-len(jobs) // count)
        batches = [list(jobs[i : i + size]) for i in range(0, len(jobs), size)]
        pool = ActorPool(self.actors)
        done = pool.map(lambda actor, batch: actor.run.remote(ref, batch), batches)
        return [outcome for batch in done for outcome in batch]

    def close(self) -> None:
        try:
            for actor in self.actors:
                self.ray.kill(actor)
        finally:
            self._stack.close()
