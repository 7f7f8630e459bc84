"""The client's driver of one secure round over the network (no gRPC here).

`secure_upload` runs a SecAggClient through the stages by sending each stage's message
through a `Transport` (the FederatedClient implements it over gRPC) and polling while
the coordinator waits for others. A client may be told to drop at a stage (simulation).
`respond` (what a client sends in a stage, given the coordinator's reply) also serves
the in-process round of federated.secagg.workflow.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

import numpy as np

from edgerun.federated.auth import KeyPair
from edgerun.federated.secagg.client import SecAggClient
from edgerun.federated.secagg.errors import RoundAborted, SecAggError
from edgerun.federated.secagg.messages import SecAggParams, StageReply
from edgerun.federated.stages import Stage, passed


class Transport(Protocol):
    def send(self, stage: Stage, payload: Any) -> StageReply: ...

    def upload_masked(self, vector: np.ndarray) -> None: ...


def respond(client: SecAggClient, reply: StageReply, ring_input: np.ndarray) -> Any:
    """The message `client` sends in the open stage of `reply` (a stage that expects it):
    its keys, its encrypted shares, its masked input, its consistency proof or its revealed
    shares. SecAggError when the client refuses what it got, or for an unknown stage."""
    stage = reply.stage
    if stage == Stage.ADVERTISE:
        return client.advertise()
    if stage == Stage.SHARE:
        roster = {keys.client_id: keys for keys, _ in reply.roster}
        device = {keys.client_id: device_key for keys, device_key in reply.roster}
        return client.share_keys(roster, device)
    if stage == Stage.MASKED:
        return client.mask(reply.inbox, ring_input)
    if stage == Stage.CONSISTENCY:
        return client.consistency(reply.survivors)
    if stage == Stage.UNMASK:
        return client.unmask(reply.survivors, reply.proofs)
    raise SecAggError(f"unexpected stage {stage!r} from the coordinator")


def secure_upload(client_id: str, key: KeyPair, params: SecAggParams, ring_input: np.ndarray,
                  transport: Transport, deadline: float, drop_at: str | None = None) -> str:
    """Take part in the round until it ends for this client. Returns "done" after revealing
    shares, "dropped" when told to drop at a stage, or "left" when the coordinator moved on
    without it (deadline). RoundAborted when the round aborted; SecAggError when a message
    from the coordinator is refused (the client then sends nothing more)."""
    client = SecAggClient(client_id, key, params)
    reply = StageReply(Stage.ADVERTISE, expects_you=True)  # every selected client advertises first
    acted: set[Stage] = set()
    while time.time() < deadline:
        stage = reply.stage
        if stage == Stage.ABORTED:
            raise RoundAborted(f"round {params.round} aborted: {reply.message}")
        if stage == Stage.DONE:
            return "done" if Stage.UNMASK in acted else "left"
        if not reply.expects_you:
            if passed(stage, acted):
                return "left"  # a stage this client had to act in closed without it
            time.sleep(reply.retry_after)
            reply = transport.send(Stage.POLL, None)
            continue
        if stage == drop_at:
            return "dropped"
        acted.add(stage)
        message = respond(client, reply, ring_input)
        if stage == Stage.MASKED:
            transport.upload_masked(message)
            reply = transport.send(Stage.POLL, None)
        elif stage == Stage.UNMASK:
            transport.send(stage, message)
            return "done"
        else:
            reply = transport.send(stage, message)
    return "left"
