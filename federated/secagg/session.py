"""The coordinator's driver of one secure round over the network (no gRPC here).

`SecureRound` wraps a SecAggServer with stage deadlines and answers every client
message with a `StageReply`: the open stage, whether it waits for this client, and
what the client needs for it. The coordinator's round thread calls `drive` (holding
the coordinator's condition lock, which handlers also take), which closes each stage
when every expected client answered or its deadline passed, and returns the sum.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgerun.federated.secagg.errors import RoundAborted, StageError
from edgerun.federated.secagg.messages import AdvertiseKeys, ConsistencyProof, EncryptedShare, SecAggParams
from edgerun.federated.secagg.server import SecAggServer


@dataclass
class StageReply:
    stage: str
    expects_you: bool = False
    roster: list[tuple[AdvertiseKeys, bytes]] = field(default_factory=list)  # (keys, device key)
    inbox: list[EncryptedShare] = field(default_factory=list)
    survivors: list[str] = field(default_factory=list)
    proofs: list[ConsistencyProof] = field(default_factory=list)
    message: str = ""
    retry_after: float = 0.05


class SecureRound:
    """One round: `goal` advertisements close the first stage early (else `advertise_deadline`,
    an absolute time); each later stage gets `stage_timeout` seconds."""

    def __init__(self, params: SecAggParams, selected: Sequence[str], device_keys: Mapping[str, bytes],
                 goal: int, advertise_deadline: float, stage_timeout: float) -> None:
        self.server = SecAggServer(params, selected, device_keys)
        self.device_keys = dict(device_keys)
        self.goal, self.stage_deadline, self.stage_timeout = goal, advertise_deadline, stage_timeout

    @property
    def params(self) -> SecAggParams:
        return self.server.params

    def handle(self, client_id: str, stage: str, payload: Any) -> StageReply:
        """Apply one client message ("poll" carries none) and return the reply for it.
        SecAggError (from the server) says why a message was refused."""
        s = self.server
        if stage == "advertise":
            s.receive_keys(client_id, payload)
        elif stage == "share":
            s.receive_shares(client_id, payload)
        elif stage == "consistency":
            s.receive_consistency(client_id, payload)
        elif stage == "unmask":
            s.receive_unmask(client_id, payload)
        elif stage != "poll":
            raise StageError(f"unknown secure-aggregation stage {stage!r}")
        return self.reply(client_id)

    def receive_masked(self, client_id: str, vector: np.ndarray) -> None:
        self.server.receive_masked(client_id, vector)

    def reply(self, client_id: str) -> StageReply:
        s = self.server
        stage = s.stage
        reply = StageReply(stage, client_id in s.expected(), message=s.failure or "")
        if not reply.expects_you:
            return reply
        if stage == "share":
            reply.roster = [(s.roster[c], self.device_keys[c]) for c in sorted(s.roster)]
        elif stage == "masked":
            reply.inbox = s.inbox(client_id)
        elif stage in ("consistency", "unmask"):
            reply.survivors = s.survivor_list()
            reply.proofs = s.proof_list() if stage == "unmask" else []
        return reply

    def _stage_done(self) -> bool:
        s = self.server
        if s.stage == "advertise":
            return len(s.roster) >= self.goal or not s.expected()
        return not s.expected()

    def drive(self, condition: threading.Condition, stop: threading.Event,
              on_stage: Callable[[str], None] | None = None) -> np.ndarray:
        """Run the stages to the end; call with `condition` held. Returns the ring sum;
        RoundAborted when a stage ends with too few clients, `stop` is set, or unmasking fails."""
        s = self.server
        while s.stage not in ("unmask", "done", "aborted"):
            while not stop.is_set() and not self._stage_done() and time.time() < self.stage_deadline:
                condition.wait(min(0.05, max(0.0, self.stage_deadline - time.time())))
            if stop.is_set():
                raise RoundAborted("the coordinator is stopping")
            s.close()
            self.stage_deadline = time.time() + self.stage_timeout
            if on_stage is not None:
                on_stage(s.stage)
            condition.notify_all()
        while not stop.is_set() and s.expected() and time.time() < self.stage_deadline:
            condition.wait(min(0.05, max(0.0, self.stage_deadline - time.time())))
        total = s.finish()
        condition.notify_all()
        return total

