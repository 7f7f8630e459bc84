"""The client's driver of one secure round over the network (no gRPC here).

`secure_upload` runs a SecAggClient through the stages by sending each stage's message
through a `Transport` (the FederatedClient implements it over gRPC) and polling while
the coordinator waits for others. A client may be told to drop at a stage (simulation).
"""

from __future__ import annotations

import time
from typing import Any, Protocol

import numpy as np

from edgerun.federated.auth import KeyPair
from edgerun.federated.secagg.client import SecAggClient
from edgerun.federated.secagg.errors import RoundAborted, SecAggError
from edgerun.federated.secagg.messages import SecAggParams
from edgerun.federated.secagg.session import StageReply


class Transport(Protocol):
    def send(self, stage: str, payload: Any) -> StageReply: ...

    def upload_masked(self, vector: np.ndarray) -> None: ...


def secure_upload(client_id: str, key: KeyPair, params: SecAggParams, ring_input: np.ndarray,
                  transport: Transport, deadline: float, drop_at: str | None = None) -> str:
    """Take part in the round until it ends for this client. Returns "done" after revealing
    shares, "dropped" when told to drop at a stage, or "left" when the coordinator moved on
    without it (deadline). RoundAborted when the round aborted; SecAggError when a message
    from the coordinator is refused (the client then sends nothing more)."""
    client = SecAggClient(client_id, key, params)
    if drop_at == "advertise":
        return "dropped"
    reply = transport.send("advertise", client.advertise())
    acted = {"advertise"}
    while time.time() < deadline:
        stage = reply.stage
        if stage == "aborted":
            raise RoundAborted(f"round {params.round} aborted: {reply.message}")
        if stage == "done":
            return "done" if "unmask" in acted else "left"
        if not reply.expects_you:
            if _passed(stage, acted):
                return "left"  # a stage this client had to act in closed without it
            time.sleep(reply.retry_after)
            reply = transport.send("poll", None)
            continue
        if stage == drop_at:
            return "dropped"
        acted.add(stage)
        if stage == "share":
            roster = {keys.client_id: keys for keys, _ in reply.roster}
            device = {keys.client_id: device_key for keys, device_key in reply.roster}
            reply = transport.send("share", client.share_keys(roster, device))
        elif stage == "masked":
            transport.upload_masked(client.mask(reply.inbox, ring_input))
            reply = transport.send("poll", None)
        elif stage == "consistency":
            reply = transport.send("consistency", client.consistency(reply.survivors))
        elif stage == "unmask":
            transport.send("unmask", client.unmask(reply.survivors, reply.proofs))
            return "done"
        else:
            raise SecAggError(f"unexpected stage {stage!r} from the coordinator")
    return "left"


_ORDER = ("advertise", "share", "masked", "consistency", "unmask", "done")


def _passed(stage: str, acted: set[str]) -> bool:
    """True when the open stage is past one this client has not acted in (it was left out)."""
    if stage not in _ORDER:
        return False
    index = _ORDER.index(stage)
    return any(s not in acted for s in _ORDER[:index])
