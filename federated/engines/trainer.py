"""What a virtual client computes, on whichever worker runs it: a round of training (or an
evaluation) on the client's own partition of the fleet's data.

A `Trainer` holds one interpreter of the model, the fleet's data and every client's
partition (index arrays), so any trainer can run any client: a job names the client and
its partition, and brings the client's round config. Training does what a device does
(federated.client): `local_update` from the global parameters (the config's "seed"
defaulting to the round), its share of distributed DP noise, then the upload a device
would send: the compressed delta (plain rounds) or the secure-aggregation ring vector of
the weighted, quantized delta. The secure protocol itself runs on the driver.

Pure computation: no coordinator, no network, no state kept between jobs but the
interpreter, so the thread pool and Ray's actors give the same bytes for the same job.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgerun.federated.compression import compress
from edgerun.federated.local import local_evaluate, local_update, parameter_spec
from edgerun.federated.privacy import gaussian_noise
from edgerun.federated.secagg.messages import SecAggParams
from edgerun.federated.secagg.options import client_weight
from edgerun.federated.secagg.update import encode_update
from edgerun.runtime.interpreter import Interpreter

Arrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class Job:
    """One client's work in one round: train (or evaluate, `evaluate`) with `config` on
    partition `partition`. `seed` drives the stochastic rounding of compressed uploads."""

    client_id: str
    partition: int
    round: int
    config: dict[str, Any] = field(default_factory=dict)
    evaluate: bool = False
    seed: int = 0


@dataclass(frozen=True)
class Outcome:
    """What a job gives back. Training: `upload` is the compressed delta (bytes) or, under
    secure aggregation, the ring vector. Evaluation: `loss` and no upload. `error` says why
    the job failed (then nothing else is set)."""

    client_id: str
    num_examples: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    upload: bytes | np.ndarray | None = None
    loss: float = 0.0
    error: str | None = None


class Trainer:
    """The model and the fleet's data, on one worker (a thread or a Ray actor)."""

    def __init__(self, model: bytes, x: Any, y: np.ndarray, partitions: Sequence[np.ndarray]) -> None:
        self.interpreter = Interpreter(model)
        self.spec = parameter_spec(self.interpreter)
        self.x, self.y, self.partitions = x, y, partitions

    def run(self, parameters: Arrays, jobs: Sequence[Job]) -> list[Outcome]:
        """The outcome of each job, in order; a job that raises gives an Outcome with `error`
        (a failing device is part of a simulation, not the end of it)."""
        return [self.run_one(parameters, job) for job in jobs]

    def run_one(self, parameters: Arrays, job: Job) -> Outcome:
        try:
            return self._evaluate(parameters, job) if job.evaluate else self._train(parameters, job)
        except Exception as exc:  # noqa: BLE001 - reported to the driver, which withdraws the client
            return Outcome(job.client_id, error=f"{type(exc).__name__}: {exc}")

    def _data(self, job: Job) -> tuple[Any, np.ndarray]:
        index = self.partitions[job.partition]
        return self.x[index], self.y[index]

    def _train(self, parameters: Arrays, job: Job) -> Outcome:
        x, y = self._data(job)
        config = dict(job.config)
        config.setdefault("seed", job.round)
        result = local_update(self.interpreter, parameters, x, y, config)
        delta = _with_dp_noise([result.delta[n] for n in self.spec], config)
        metrics = {k: float(v) for k, v in result.metrics.items()}
        if "secagg" in config:
            return Outcome(job.client_id, result.num_examples, metrics, _ring_input(delta, config,
                                                                                    result.num_examples))
        blob = compress(dict(zip(self.spec, delta, strict=True)), config.get("compression", "none"),
                        rng=np.random.default_rng(job.seed))
        return Outcome(job.client_id, result.num_examples, metrics, blob)

    def _evaluate(self, parameters: Arrays, job: Job) -> Outcome:
        x, y = self._data(job)
        result = local_evaluate(self.interpreter, parameters, x, y)
        metrics = {k: result[k] for k in ("accuracy", "mse") if k in result}
        return Outcome(job.client_id, len(y), metrics, loss=result["loss"])


def _with_dp_noise(delta: list[np.ndarray], config: dict[str, Any]) -> list[np.ndarray]:
    """Distributed DP: the client's share of the noise (drawn from the OS's CSPRNG, as a
    device draws it), else `delta` unchanged."""
    dp = config.get("dp") or {}
    if dp.get("mode") != "distributed":
        return delta
    stddev = dp["noise_multiplier"] * dp["clip_norm"] / math.sqrt(dp["expected_clients"])
    noise = gaussian_noise([d.shape for d in delta], stddev)
    return [d + z.astype(d.dtype) for d, z in zip(delta, noise, strict=True)]


def _ring_input(delta: list[np.ndarray], config: dict[str, Any], num_examples: int) -> np.ndarray:
    """The client's secure-aggregation input: its delta weighted (1 under DP) and quantized."""
    secagg = config["secagg"]
    params = SecAggParams.from_config(secagg)
    weight = 1.0 if "dp" in config else client_weight(num_examples, int(secagg["max_weight"]))
    return encode_update(delta, weight, params.quantization)
