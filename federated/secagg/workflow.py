"""One secure-aggregation round in process: every stage over SecAggClient / SecAggServer
objects, with clients that drop out at a chosen stage (tests, the benchmark and the
in-process simulation; the coordinator runs the same stages over gRPC).

`run_round` drives a SecAggServer directly; `drive_round` drives the coordinator's
protocol object (a SecureRound, or a CohortedRound of several cohorts) through the calls
the coordinator's handlers and round steps make."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from edgerun.federated.auth import KeyPair
from edgerun.federated.secagg.client import SecAggClient
from edgerun.federated.secagg.cohorts import SecureProtocol
from edgerun.federated.secagg.device import respond
from edgerun.federated.secagg.errors import SecAggError
from edgerun.federated.secagg.messages import SecAggParams
from edgerun.federated.secagg.server import SecAggServer
from edgerun.federated.stages import SECAGG, Stage

DROP_STAGES = SECAGG  # a client may drop at any stage of the protocol


@dataclass
class RoundOutcome:
    """The unmasked sum (mod 2^b), the survivors, seconds spent per stage by all clients
    together ("client:<stage>") and by the server ("server:<stage>"), and the clients that
    refused a step (they then send nothing more, as if they had dropped)."""

    total: np.ndarray
    survivors: list[str]
    seconds: dict[str, float] = field(default_factory=dict)
    refusals: dict[str, str] = field(default_factory=dict)  # client id -> the SecAggError it raised


def run_round(params: SecAggParams, inputs: Mapping[str, np.ndarray], keys: Mapping[str, KeyPair],
              drop_at: Mapping[str, str] | None = None) -> RoundOutcome:
    """Run all stages for the clients in `inputs` (ring vectors); a client in `drop_at` sends
    nothing from that stage on. Raises RoundAborted (from the server) when too few remain."""
    leaves_at = _leaving(drop_at)
    ids = sorted(inputs)
    server = SecAggServer(params, ids, {c: keys[c].public_bytes for c in ids})
    clients = {c: SecAggClient(c, keys[c], params) for c in ids}
    outcome = RoundOutcome(np.zeros(0, dtype=np.uint32), [])

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        try:
            return fn()
        finally:
            outcome.seconds[name] = outcome.seconds.get(name, 0.0) + time.perf_counter() - start

    for stage in SECAGG:
        at = DROP_STAGES.index(stage)
        online = [c for c in sorted(server.expected()) if leaves_at.get(c, len(DROP_STAGES)) > at]
        for c in online:
            reply = timed(f"server:{stage}", partial(server.reply, c))
            try:  # a client that refuses (SecAggError) sends nothing, like a dropout
                message = timed(f"client:{stage}", partial(respond, clients[c], reply, inputs[c]))
            except SecAggError as exc:
                outcome.refusals[c] = f"{type(exc).__name__}: {exc}"
                continue
            timed(f"server:{stage}", partial(server.receive, stage, c, message))
        if stage == Stage.UNMASK:
            outcome.total = timed(f"server:{stage}", server.finish)
        else:
            timed(f"server:{stage}", server.close)
    outcome.survivors = server.survivor_list()
    return outcome


def _leaving(drop_at: Mapping[str, str] | None) -> dict[str, int]:
    """client -> index in DROP_STAGES of the stage it leaves at. ValueError for an unknown stage."""
    unknown = set((drop_at or {}).values()) - set(DROP_STAGES)
    if unknown:
        raise ValueError(f"unknown drop stages {sorted(unknown)}; use {[str(s) for s in DROP_STAGES]}")
    return {c: DROP_STAGES.index(s) for c, s in (drop_at or {}).items()}


def drive_round(protocol: SecureProtocol, inputs: Mapping[str, np.ndarray], keys: Mapping[str, KeyPair],
                drop_at: Mapping[str, str] | None = None) -> RoundOutcome:
    """Run every stage of `protocol` in process for the clients in `inputs` (ring vectors),
    each with the parameters of its cohort: a client the open stage expects polls, answers
    and is answered as through the coordinator's handlers; a client in `drop_at` is withdrawn
    from that stage on, and one that refuses a step is withdrawn then (so no stage waits for
    them); each stage is closed by `protocol.run_stage`. `seconds` are CPU seconds
    (time.process_time) of this process. RoundAborted when the protocol aborts (for a
    CohortedRound: every cohort); a SecAggError of the protocol refusing a message propagates."""
    leaves_at = _leaving(drop_at)
    clients = {c: SecAggClient(c, keys[c], protocol.params_of(c)) for c in sorted(inputs)}
    condition, stop = threading.Condition(), threading.Event()
    outcome = RoundOutcome(np.zeros(0, dtype=np.uint32), [])

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        start = time.process_time()
        try:
            return fn()
        finally:
            outcome.seconds[name] = outcome.seconds.get(name, 0.0) + time.process_time() - start

    for at, stage in enumerate(DROP_STAGES):
        for c, client in clients.items():
            if leaves_at.get(c, len(DROP_STAGES)) <= at or c in outcome.refusals:
                protocol.withdraw(c)
                continue
            reply = timed(f"server:{stage}", partial(protocol.handle, c, Stage.POLL, None))
            if reply.stage != stage or not reply.expects_you:
                continue
            try:
                message = timed(f"client:{stage}", partial(respond, client, reply, inputs[c]))
            except SecAggError as exc:
                outcome.refusals[c] = f"{type(exc).__name__}: {exc}"
                protocol.withdraw(c)
                continue
            if stage == Stage.MASKED:
                timed(f"server:{stage}", partial(protocol.receive_masked, c, message))
            else:
                timed(f"server:{stage}", partial(protocol.handle, c, stage, message))
        with condition:
            total = timed(f"server:{stage}", partial(protocol.run_stage, stage, condition, stop))
    outcome.total, outcome.survivors = total, protocol.survivor_list()
    return outcome
