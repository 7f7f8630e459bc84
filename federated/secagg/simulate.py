"""A deterministic in-process federated run, with or without secure aggregation.

Same seed -> same client selection, same dropouts (each dropping client leaves at a
random point: before training or at one of the protocol stages) and the same local
training; the only difference between a secure and a plain run is the secure path's
fixed-point quantization (and, in a round of more than SecAggOptions.max_cohort clients,
a cohort that aborts). Used by the acceptance test to compare the two round by round.
Selection and dropout draws use numpy's RNG: they are simulation, not protocol secrets.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgerun.federated import partition
from edgerun.federated.auth import KeyPair
from edgerun.federated.local import local_evaluate, local_update, parameter_spec
from edgerun.federated.secagg.cohorts import CohortedRound, split_cohorts
from edgerun.federated.secagg.errors import RoundAborted
from edgerun.federated.secagg.messages import SecAggParams
from edgerun.federated.secagg.options import SecAggOptions, client_weight
from edgerun.federated.secagg.update import decode_sum, encode_update
from edgerun.federated.secagg.workflow import DROP_STAGES, drive_round, run_round
from edgerun.federated.stages import Stage
from edgerun.federated.strategies import FedAvg
from edgerun.federated.typing import FitRes
from edgerun.runtime.interpreter import Interpreter

COUNTED_AFTER = (Stage.CONSISTENCY, Stage.UNMASK)  # dropping here still delivered the masked input


@dataclass
class InProcessConfig:
    num_clients: int = 50
    shards_per_client: int = 2
    fraction_fit: float = 0.5
    drop_probability: float = 0.2
    rounds: int = 100
    epochs: int = 5
    batch_size: int = 10
    lr: float = 0.1
    seed: int = 0


def run(model_path: str | Path, x: np.ndarray, y: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
        config: InProcessConfig, secagg: SecAggOptions | None,
        on_round: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Per-round records {"round", "status", "test_accuracy", "counted", "selected"}."""
    interpreter = Interpreter(Path(model_path), device="cpu")
    spec = parameter_spec(interpreter)
    order, shapes = list(spec), [tuple(spec[n][1]) for n in spec]
    parameters = interpreter.run({}, signature="save")
    parts = partition.label_shards(y, config.num_clients, config.shards_per_client, config.seed)
    ids = [f"device-{i:04d}" for i in range(config.num_clients)]
    keys = {c: KeyPair.generate() for c in ids}
    strategy = FedAvg(min_fit_clients=1, min_available_clients=1)
    rng = np.random.default_rng(config.seed)
    history = []
    for r in range(1, config.rounds + 1):
        chosen = sorted(rng.choice(config.num_clients, int(config.fraction_fit * config.num_clients), replace=False))
        drops = {ids[i]: str(rng.choice(("start", *DROP_STAGES))) for i in chosen
                 if rng.random() < config.drop_probability}
        trained = {}
        for i in chosen:
            if drops.get(ids[i]) in (None, *COUNTED_AFTER):  # its update reaches the coordinator
                result = local_update(interpreter, parameters, x[parts[i]], y[parts[i]],
                                      {"epochs": config.epochs, "batch_size": config.batch_size, "lr": config.lr,
                                       "seed": r})
                trained[ids[i]] = result
        global_list = [parameters[n] for n in order]
        status = "aggregated"
        try:
            if secagg is None:
                results = [(c, FitRes([res.delta[n] for n in order], res.num_examples)) for c, res in trained.items()]
                new, _ = strategy.aggregate_fit(r, global_list, results, len(chosen) - len(results))
            else:
                new = _secure_round(r, strategy, global_list, shapes, order, trained, keys,
                                    [ids[i] for i in chosen], drops, secagg,
                                    np.random.default_rng((config.seed, r)))  # not `rng`: plain runs draw the same
            parameters = dict(zip(order, [np.asarray(a, dtype=np.float32) for a in new], strict=True))
        except RoundAborted:
            status = "failed"
        record = {"round": r, "status": status, "selected": len(chosen), "counted": len(trained),
                  "test_accuracy": local_evaluate(interpreter, parameters, x_test, y_test)["accuracy"]}
        history.append(record)
        if on_round is not None:
            on_round(record)
    return history


def _secure_round(r: int, strategy: FedAvg, global_list: list, shapes: list, order: list, trained: dict,
                  keys: dict, chosen: list[str], drops: dict[str, str], options: SecAggOptions,
                  rng: np.random.Generator) -> list:
    """One secure round (in cohorts, as the coordinator runs it, when more than
    options.max_cohort clients were chosen): dropping clients leave at their stage; returns
    the new parameters. RoundAborted when the protocol (every cohort) aborts."""
    cohorts = split_cohorts(chosen, options.max_cohort, rng)
    params = [SecAggParams.from_config(options.round_config(r, len(m), shapes, 0.0, planned_for=len(chosen)))
              for m in cohorts]
    q, length = params[0].quantization, params[0].length  # every cohort's
    online = [c for c in chosen if drops.get(c) != "start"]
    inputs = {}
    for c in online:
        res = trained.get(c)
        if res is not None:
            weight = client_weight(res.num_examples, options.max_weight)
            inputs[c] = encode_update([res.delta[n] for n in order], weight, q)
        else:  # drops before sending its masked input: its vector is never used
            inputs[c] = np.zeros(length, dtype=np.uint32)
    leaving = {c: s for c, s in drops.items() if c in inputs and s != "start"}
    if len(cohorts) == 1:
        outcome = run_round(params[0], inputs, {c: keys[c] for c in online}, leaving)
    else:
        present = [[c for c in m if c in inputs] for m in cohorts]
        protocol = CohortedRound.open(params, present, {c: keys[c].public_bytes for c in online}, len(online),
                                      time.time() + 3600.0, 3600.0)
        outcome = drive_round(protocol, inputs, keys, leaving)
    sums, weight = decode_sum(outcome.total, q, len(outcome.survivors), shapes)
    scale = float(options.max_weight)
    new, _ = strategy.aggregate_sum(r, global_list, [s * scale for s in sums], weight * scale,
                                    len(outcome.survivors), len(chosen) - len(outcome.survivors))
    return new
