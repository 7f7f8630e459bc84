"""One secure-aggregation round in process: every stage over SecAggClient / SecAggServer
objects, with clients that drop out at a chosen stage (tests, the benchmark and the
in-process simulation; the coordinator runs the same stages over gRPC)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from edgerun.federated.auth import KeyPair
from edgerun.federated.secagg.client import SecAggClient
from edgerun.federated.secagg.errors import SecAggError
from edgerun.federated.secagg.messages import SecAggParams
from edgerun.federated.secagg.server import SecAggServer

DROP_STAGES = ("advertise", "share", "masked", "consistency", "unmask")


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
    drop_at = dict(drop_at or {})
    unknown = set(drop_at.values()) - set(DROP_STAGES)
    if unknown:
        raise ValueError(f"unknown drop stages {sorted(unknown)}; use {DROP_STAGES}")
    ids = sorted(inputs)
    server = SecAggServer(params, ids, {c: keys[c].public_bytes for c in ids})
    clients = {c: SecAggClient(c, keys[c], params) for c in ids}
    seconds: dict[str, float] = {}

    def live(stage: str, members: list[str]) -> list[str]:
        """Members still online at `stage` (a client dropping at a stage sends nothing from it on)."""
        at = DROP_STAGES.index(stage)
        return [c for c in members if c not in drop_at or DROP_STAGES.index(drop_at[c]) > at]

    refusals: dict[str, str] = {}

    def timed(name: str, fn):  # noqa: ANN001, ANN202 - tiny local helper
        start = time.perf_counter()
        try:
            return fn()
        finally:
            seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start

    def attempt(client_id: str, name: str, fn):  # noqa: ANN001, ANN202
        """A client step; a client that refuses (SecAggError) sends nothing, like a dropout."""
        try:
            return timed(name, fn)
        except SecAggError as exc:
            refusals[client_id] = f"{type(exc).__name__}: {exc}"
            return None

    for c in live("advertise", ids):
        keys_msg = attempt(c, "client:advertise", clients[c].advertise)
        if keys_msg is not None:
            timed("server:advertise", lambda c=c, m=keys_msg: server.receive_keys(c, m))
    timed("server:advertise", server.close)
    device = {c: keys[c].public_bytes for c in server.roster}
    for c in live("share", sorted(server.roster)):
        shares = attempt(c, "client:share", lambda c=c: clients[c].share_keys(server.roster, device))
        if shares is not None:
            timed("server:share", lambda c=c, s=shares: server.receive_shares(c, s))
    timed("server:share", server.close)
    for c in live("masked", sorted(server.shares)):
        masked = attempt(c, "client:masked", lambda c=c: clients[c].mask(server.inbox(c), inputs[c]))
        if masked is not None:
            timed("server:masked", lambda c=c, y=masked: server.receive_masked(c, y))
    timed("server:masked", server.close)
    survivors = server.survivor_list()
    for c in live("consistency", survivors):
        proof = attempt(c, "client:consistency", lambda c=c: clients[c].consistency(survivors))
        if proof is not None:
            timed("server:consistency", lambda c=c, p=proof: server.receive_consistency(c, p))
    timed("server:consistency", server.close)
    proofs = server.proof_list()
    for c in live("unmask", sorted(server.proofs)):
        revealed = attempt(c, "client:unmask", lambda c=c: clients[c].unmask(survivors, proofs))
        if revealed is not None:
            timed("server:unmask", lambda c=c, r=revealed: server.receive_unmask(c, r))
    total = timed("server:unmask", server.finish)
    return RoundOutcome(total, survivors, seconds, refusals)
