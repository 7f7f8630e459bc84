"""Hierarchical secure aggregation: a round too large for one protocol instance runs as
several cohorts of bounded size (as the aggregators of Bonawitz et al. 2019, "Towards
Federated Learning at Scale", each run one instance over their devices).

`split_cohorts` cuts the selected clients into ceil(n / max_cohort) cohorts whose sizes
differ by at most one. Each cohort is a `SecureRound` with its own SecAggParams (graph
seed, cohort size, threshold), but all share one quantization planned for the whole
round's client count, so the cohorts' ring sums add modulo 2^bits into exactly the sum
one cohort of everyone would have produced; it is decoded once. `CohortedRound` routes
each client's messages to its cohort and runs each stage across all of them (one shared
deadline per stage, as SecureRound's). A cohort that aborts (too few clients, a failed
reconstruction) is dropped and the round goes on with the others; RoundAborted only when
no cohort is left.

What the coordinator learns: the sum of each surviving cohort (not only their total),
each over at least min_clients of that cohort's survivors. Distributed DP does not
survive that (each cohort sum carries only its clients' share of the noise), so
federated.rounds refuses to split a distributed-DP round.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from edgerun.federated.secagg.errors import ConfigurationError, RoundAborted, StageError
from edgerun.federated.secagg.messages import SecAggParams, StageReply
from edgerun.federated.secagg.quantize import add
from edgerun.federated.secagg.session import SecureRound
from edgerun.federated.stages import Stage

__all__ = ["CohortedRound", "SecureProtocol", "cohort_sizes", "split_cohorts"]


def cohort_sizes(n: int, max_cohort: int | None) -> list[int]:
    """The sizes of the ceil(n / max_cohort) cohorts of n clients: near-equal (they differ by
    at most one), larger first; [n] when n <= max_cohort or max_cohort is None. ValueError
    for n < 1 or max_cohort < 1."""
    if n < 1:
        raise ValueError(f"a round needs at least one client, got {n}")
    if max_cohort is None or n <= max_cohort:
        return [n]
    if max_cohort < 1:
        raise ValueError(f"max_cohort must be >= 1, got {max_cohort}")
    count = math.ceil(n / max_cohort)
    base, extra = divmod(n, count)
    return [base + 1] * extra + [base] * (count - extra)


def split_cohorts(ids: Sequence[str], max_cohort: int | None, rng: np.random.Generator) -> list[list[str]]:
    """`ids` (distinct) in cohorts of `cohort_sizes`: the sorted ids shuffled with `rng` and
    cut in order, each cohort sorted. One cohort (all ids, sorted) draws nothing from `rng`,
    so an unsplit round leaves the coordinator's RNG as it was. ValueError for duplicates."""
    ordered = sorted(ids)
    if len(set(ordered)) != len(ordered):
        raise ValueError("client ids must be distinct")
    sizes = cohort_sizes(len(ordered), max_cohort)
    if len(sizes) == 1:
        return [ordered]
    shuffled = [ordered[i] for i in rng.permutation(len(ordered))]
    bounds = np.cumsum([0, *sizes])
    return [sorted(shuffled[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


class CohortedRound:
    """One secure round as several cohorts (`SecureRound`s) that share a quantization and the
    stage deadlines: the first stage ends at `advertise_deadline` (or when every cohort has
    its share of the goal), each later one `stage_timeout` seconds after the last closed.
    ConfigurationError when the cohorts differ in round, quantization or length, or share
    a client."""

    def __init__(self, cohorts: Sequence[SecureRound], advertise_deadline: float, stage_timeout: float) -> None:
        if not cohorts:
            raise ConfigurationError("a cohorted round needs at least one cohort")
        first = cohorts[0].params
        for c in cohorts:
            p = c.params
            if (p.round, p.quantization, p.length) != (first.round, first.quantization, first.length):
                raise ConfigurationError(f"round {first.round}: cohorts must share the round, quantization and "
                                         f"length, got {(p.round, p.quantization, p.length)}")
        self.cohorts = list(cohorts)
        self.cohort_of: dict[str, int] = {}
        for i, c in enumerate(self.cohorts):
            for cid in c.server.selected:
                if cid in self.cohort_of:
                    raise ConfigurationError(f"round {first.round}: client {cid!r} is in two cohorts")
                self.cohort_of[cid] = i
        self.live = list(range(len(self.cohorts)))  # cohorts not aborted
        self.failures: dict[int, str] = {}  # cohort index -> why it was dropped
        self.stage_deadline, self.stage_timeout = advertise_deadline, stage_timeout
        self.totals: dict[int, np.ndarray] = {}  # cohort index -> its unmasked ring sum

    @classmethod
    def open(cls, params: Sequence[SecAggParams], members: Sequence[Sequence[str]],
             device_keys: Mapping[str, bytes], goal: int, advertise_deadline: float,
             stage_timeout: float) -> CohortedRound:
        """Cohort i over `members[i]` with `params[i]`; `goal` advertisements of the whole
        round close the first stage early, each cohort needing its proportional share."""
        total = max(1, sum(len(m) for m in members))
        rounds = [SecureRound(p, m, {c: device_keys[c] for c in m}, math.ceil(goal * len(m) / total),
                              advertise_deadline, stage_timeout) for p, m in zip(params, members, strict=True)]
        return cls(rounds, advertise_deadline, stage_timeout)

    # ------------------------------------------------------------ routing
    @property
    def round(self) -> int:
        return self.cohorts[0].params.round

    def _cohort(self, client_id: str) -> SecureRound:
        index = self.cohort_of.get(client_id)
        if index is None:
            raise StageError(f"round {self.round}: client {client_id!r} is in no cohort of this round")
        return self.cohorts[index]

    def params_of(self, client_id: str) -> SecAggParams:
        """The parameters of `client_id`'s cohort. StageError for a client in no cohort."""
        return self._cohort(client_id).params

    def accepting(self, client_id: str) -> bool:
        """As SecureRound.accepting, in `client_id`'s cohort (a dropped cohort accepts no one)."""
        index = self.cohort_of.get(client_id)
        return index is not None and index in self.live and self.cohorts[index].accepting(client_id)

    def advertised(self, client_id: str) -> bool:
        index = self.cohort_of.get(client_id)
        return index is not None and self.cohorts[index].advertised(client_id)

    def handle(self, client_id: str, stage: str, payload: Any) -> StageReply:
        """As SecureRound.handle, in `client_id`'s cohort (an aborted cohort answers ABORTED
        with its reason). StageError for a client in no cohort."""
        return self._cohort(client_id).handle(client_id, stage, payload)

    def receive_masked(self, client_id: str, vector: np.ndarray) -> None:
        self._cohort(client_id).receive_masked(client_id, vector)

    def withdraw(self, client_id: str) -> None:
        """Stop waiting for `client_id` in its cohort; a client in no cohort is ignored."""
        index = self.cohort_of.get(client_id)
        if index is not None:
            self.cohorts[index].withdraw(client_id)

    # ------------------------------------------------------------ stages
    def run_stage(self, stage: Stage, condition: threading.Condition, stop: threading.Event) -> np.ndarray | None:
        """Wait (with `condition` held) until every live cohort is ready for `stage` or its
        deadline passed, then close it in each; a cohort that aborts is dropped. After UNMASK,
        the sum mod 2^b of the live cohorts' sums (else None). RoundAborted when no cohort is
        left or `stop` is set before the last stage; StageError when `stage` is not open."""
        for i in self.live:
            self.cohorts[i].check_stage(stage)
        while not stop.is_set() and time.time() < self.stage_deadline and not all(
                self.cohorts[i].ready() for i in self.live):
            condition.wait(min(0.05, max(0.0, self.stage_deadline - time.time())))
        if stage is not Stage.UNMASK and stop.is_set():
            raise RoundAborted("the coordinator is stopping")
        next_deadline = time.time() + self.stage_timeout
        try:
            for i in list(self.live):
                try:
                    total = self.cohorts[i].end_stage(stage, next_deadline)
                except RoundAborted as exc:
                    self.live.remove(i)
                    self.failures[i] = str(exc)
                    continue
                if total is not None:
                    self.totals[i] = total
        finally:
            condition.notify_all()
        if not self.live:
            reasons = "; ".join(f"cohort {i}: {why}" for i, why in sorted(self.failures.items()))
            raise RoundAborted(f"round {self.round}: every cohort aborted ({reasons})")
        self.stage_deadline = next_deadline
        return self._combined() if stage is Stage.UNMASK else None

    def _combined(self) -> np.ndarray:
        bits = self.cohorts[0].params.quantization.bits
        total = np.zeros(self.cohorts[0].params.length, dtype=np.uint32)
        for i in self.live:
            total = add(total, self.totals[i], bits)
        return total

    def survivor_list(self) -> list[str]:
        """The clients whose masked input is in the combined sum (live cohorts only), sorted."""
        return sorted(c for i in self.live for c in self.cohorts[i].survivor_list())

    def metrics(self) -> dict[str, float]:
        """The cohorts the round ran and how many were dropped (for the round's metrics)."""
        return {"cohorts": float(len(self.cohorts)), "cohorts_dropped": float(len(self.failures))}



SecureProtocol = SecureRound | CohortedRound  # what RoundState.secure holds: one cohort, or several
