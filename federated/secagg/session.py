"""The coordinator's driver of one secure round over the network (no gRPC here).

`SecureRound` wraps a SecAggServer with stage deadlines and answers every client
message with a `StageReply` (the open stage, whether it waits for this client, and
what the client needs for it). The coordinator's secure workflow (federated.rounds)
runs one step per protocol stage, in the order of federated.stages.SECAGG; each calls
`run_stage` (holding the coordinator's condition lock, which handlers also take), which
closes the stage when every expected client answered or its deadline passed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from edgerun.federated.secagg.errors import RoundAborted, StageError
from edgerun.federated.secagg.messages import SecAggParams, StageReply
from edgerun.federated.secagg.server import SecAggServer
from edgerun.federated.stages import Stage

__all__ = ["SecureRound", "StageReply"]


class SecureRound:
    """One round: `goal` advertisements close the first stage early (else `advertise_deadline`,
    an absolute time); each later stage gets `stage_timeout` seconds."""

    def __init__(self, params: SecAggParams, selected: Sequence[str], device_keys: Mapping[str, bytes],
                 goal: int, advertise_deadline: float, stage_timeout: float) -> None:
        self.server = SecAggServer(params, selected, device_keys)
        self.goal, self.stage_deadline, self.stage_timeout = goal, advertise_deadline, stage_timeout

    @property
    def params(self) -> SecAggParams:
        return self.server.params

    def handle(self, client_id: str, stage: str, payload: Any) -> StageReply:
        """Apply one client message (a poll carries none) and return the reply for it.
        SecAggError (from the server) says why a message was refused."""
        if stage == Stage.MASKED:
            raise StageError(f"client {client_id!r}: masked inputs come by UploadMasked, not as a stage message")
        if stage != Stage.POLL:
            self.server.receive(stage, client_id, payload)
        return self.server.reply(client_id)

    def receive_masked(self, client_id: str, vector: np.ndarray) -> None:
        self.server.receive(Stage.MASKED, client_id, vector)

    def _stage_done(self) -> bool:
        s = self.server
        if s.stage is Stage.ADVERTISE:
            return len(s.roster) >= self.goal or not s.expected()
        return not s.expected()

    def run_stage(self, stage: Stage, condition: threading.Condition, stop: threading.Event) -> np.ndarray | None:
        """Wait (with `condition` held) until every expected client answered `stage` or its
        deadline passed, then close it; after UNMASK, return the ring sum (else None).
        RoundAborted when the stage ends with too few clients, `stop` is set before the
        last stage, or unmasking fails; StageError when `stage` is not the open one."""
        s = self.server
        if s.stage != stage:
            raise StageError(f"round {self.params.round}: cannot run stage {stage!r} while in {s.stage!r}")
        while not stop.is_set() and not self._stage_done() and time.time() < self.stage_deadline:
            condition.wait(min(0.05, max(0.0, self.stage_deadline - time.time())))
        if stage is Stage.UNMASK:
            total = s.finish()
            condition.notify_all()
            return total
        if stop.is_set():
            raise RoundAborted("the coordinator is stopping")
        s.close()
        self.stage_deadline = time.time() + self.stage_timeout
        condition.notify_all()
        return None
