"""The coordinator's driver of one secure round over the network (no gRPC here).

`SecureRound` wraps a SecAggServer with stage deadlines and answers every client
message with a `StageReply` (the open stage, whether it waits for this client, and
what the client needs for it). The coordinator's secure workflow (federated.rounds)
runs one step per protocol stage, in the order of federated.stages.SECAGG; each calls
`run_stage` (holding the coordinator's condition lock, which handlers also take), which
closes the stage when every expected client answered or its deadline passed. A round
split into cohorts runs several of these under one federated.secagg.cohorts.CohortedRound
(which waits on `ready` and closes with `end_stage`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from edgerun.federated.secagg import graph
from edgerun.federated.secagg.errors import RoundAborted, StageError
from edgerun.federated.secagg.messages import SecAggParams, StageReply
from edgerun.federated.secagg.server import SecAggServer
from edgerun.federated.stages import Stage

__all__ = ["SecureRound", "StageReply"]


def advertise_goal(params: SecAggParams, goal: int) -> int:
    """Advertisements that close the first stage early: `goal`, but never fewer than the
    roster every client of the cohort requires before it shares keys (client.share_keys:
    more than threshold_fraction of the cohort, at least min_clients); closing below that
    would abort the round however many clients were still coming."""
    need = graph.threshold(params.cohort - 1, params.threshold_fraction) if params.cohort else 0
    return max(goal, params.min_clients, need)


class SecureRound:
    """One round: `goal` advertisements close the first stage early (else `advertise_deadline`,
    an absolute time); each later stage gets `stage_timeout` seconds."""

    def __init__(self, params: SecAggParams, selected: Sequence[str], device_keys: Mapping[str, bytes],
                 goal: int, advertise_deadline: float, stage_timeout: float) -> None:
        self.server = SecAggServer(params, selected, device_keys)
        self.goal = advertise_goal(params, goal)
        self.stage_deadline, self.stage_timeout = advertise_deadline, stage_timeout

    @property
    def params(self) -> SecAggParams:
        return self.server.params

    @property
    def round(self) -> int:
        return self.server.params.round

    def params_of(self, client_id: str) -> SecAggParams:
        """The parameters `client_id` runs the protocol with (one cohort: the round's)."""
        return self.server.params

    def accepting(self, client_id: str) -> bool:
        """Whether `client_id` can still join: the first stage is open and waits for it (not
        advertised yet, not withdrawn or excluded). A client that cannot is told to wait
        instead of training for a round it can no longer enter."""
        return self.server.stage is Stage.ADVERTISE and client_id in self.server.expected()

    def advertised(self, client_id: str) -> bool:
        """Whether `client_id` advertised its keys (it is past the point where it trains)."""
        return client_id in self.server.roster

    def survivor_list(self) -> list[str]:
        """The clients whose masked input is in the sum, sorted."""
        return self.server.survivor_list()

    def metrics(self) -> dict[str, float]:
        """What the round's metrics say about the protocol (one cohort: nothing more)."""
        return {}

    def handle(self, client_id: str, stage: str, payload: Any) -> StageReply:
        """Apply one client message (a poll carries none) and return the reply for it.
        SecAggError (from the server) says why a message was refused."""
        if stage == Stage.MASKED:
            raise StageError(f"client {client_id!r}: masked inputs come by UploadMasked, not as a stage message")
        if stage != Stage.POLL:
            self.server.receive(stage, client_id, payload)
        return self.server.reply(client_id)

    def withdraw(self, client_id: str) -> None:
        """Stop waiting for `client_id` (it dropped out); its messages are still accepted."""
        self.server.withdrawn.add(client_id)

    def receive_masked(self, client_id: str, vector: np.ndarray) -> None:
        self.server.receive(Stage.MASKED, client_id, vector)

    def ready(self) -> bool:
        """Whether the open stage can close before its deadline: every expected client
        answered (the first stage: `goal` advertised)."""
        s = self.server
        if s.stage is Stage.ADVERTISE:
            return len(s.roster) >= self.goal or not s.expected()
        return not s.expected()

    def check_stage(self, stage: Stage) -> None:
        """StageError unless `stage` is the open one."""
        if self.server.stage != stage:
            raise StageError(f"round {self.params.round}: cannot run stage {stage!r} while in {self.server.stage!r}")

    def end_stage(self, stage: Stage, next_deadline: float) -> np.ndarray | None:
        """Close the open stage `stage` (the next one's deadline: `next_deadline`); after
        UNMASK, return the ring sum (else None). RoundAborted as SecAggServer.close / finish."""
        if stage is Stage.UNMASK:
            return self.server.finish()
        self.server.close()
        self.stage_deadline = next_deadline
        return None

    def run_stage(self, stage: Stage, condition: threading.Condition, stop: threading.Event) -> np.ndarray | None:
        """Wait (with `condition` held) until every expected client answered `stage` or its
        deadline passed, then close it; after UNMASK, return the ring sum (else None).
        RoundAborted when the stage ends with too few clients, `stop` is set before the
        last stage, or unmasking fails; StageError when `stage` is not the open one."""
        self.check_stage(stage)
        while not stop.is_set() and not self.ready() and time.time() < self.stage_deadline:
            condition.wait(min(0.05, max(0.0, self.stage_deadline - time.time())))
        if stage is not Stage.UNMASK and stop.is_set():
            raise RoundAborted("the coordinator is stopping")
        try:
            return self.end_stage(stage, time.time() + self.stage_timeout)
        finally:
            condition.notify_all()
