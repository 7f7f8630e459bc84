"""The driver of virtual clients: the real Coordinator, in process, and no network.

`Driver.run` runs `Coordinator.run` in a thread (its rounds, strategy, store, secure
aggregation, over-selection and report goal, unchanged) and plays every enrolled client:
clients are enrolled in one transaction (Store.enrol_many) and kept available
(Coordinator.mark_seen). When a round opens, each selected client's work comes from
`Coordinator.work_for` (its config is its own: the cohorts of hierarchical secure
aggregation get different "secagg" entries) and the driver:

1. decides, from (seed, client, round) alone, whether the client drops out ("start", or
   under secure aggregation a protocol stage, as federated.client does) and when it would
   report (`Plan`: its behaviour's delay plus a jitter in [0, 1) simulated seconds);
   a client that drops out is withdrawn (`Coordinator.withdraw`): nobody waits for it;
2. trains the clients that would report first, in the order of those simulated arrivals,
   through the workers (a thread pool or Ray actors: federated.engines.trainer), until the
   round's `reports_needed` have reported: a round closes at its report goal, so who gets
   in depends on the order of arrival, which is decided here and not by thread timing;
3. submits in process: plain rounds `Coordinator.submit` in arrival order (stopping at the
   goal), secure rounds `secure_upload` (federated.secagg.device) for each admitted client
   in its own thread, over an in-process transport (`Coordinator.secure_step` and
   `submit_masked`); in arrival order, each cohort admits the advertisers that make its
   share of `reports_needed` (a round of one cohort: the first `reports_needed`).

Evaluation rounds go to the workers the same way (`Coordinator.submit_evaluation`).

Equal seeds give equal histories and bit-identical global parameters whatever the
workers: plain rounds aggregate in client order, secure sums are exact integers. Not under
differential privacy (the coordinator draws cohorts, clients draw noise, from the OS's
CSPRNG), and a secure round whose stages reach their `stage_timeout` leaves out who was
late, which depends on the machine's speed.

Device conditions (a `fleet`, federated.availability): only the devices eligible on the
simulated clock are kept available (the others are marked last seen at t = 0, outside the
coordinator's window); a selected device reports at the round's opening plus its work time
(the model's, plus the plan's arrival) and drops out, withdrawn like any other drop, when
its eligible session ends before that; the clock moves to when the round closes
(federated.availability.round_end: the goal-th report) before anything is submitted, so the
next round selects from the devices eligible then; and while the coordinator cannot select
(too few eligible) the clock moves on to the next device that becomes eligible.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from edgerun.federated.auth import KeyPair
from edgerun.federated.availability import Fleet, RoundLog, round_end
from edgerun.federated.codec import decode_arrays
from edgerun.federated.coordinator import Action, Coordinator, Work
from edgerun.federated.engines.trainer import Arrays, Job, Outcome
from edgerun.federated.errors import Rejected
from edgerun.federated.secagg.device import secure_upload
from edgerun.federated.secagg.errors import SecAggError
from edgerun.federated.secagg.messages import SecAggParams, StageReply
from edgerun.federated.secagg.session import advertise_goal
from edgerun.federated.secagg.workflow import DROP_STAGES
from edgerun.federated.stages import Stage
from edgerun.federated.typing import EvaluateRes
from edgerun.runtime.errors import EdgerunError

log = logging.getLogger("edgerun.federated.engines")
DROP_CHOICES = ("start", *DROP_STAGES)  # where a dropping client goes away under drop_stage="random"
SEEN_EVERY = 5.0  # seconds between marking every client seen (the coordinator's window is a minute)
NEEDS_INPUT = (None, Stage.CONSISTENCY, Stage.UNMASK)  # drop stages after the masked input is sent
STUCK_SELECTING = 0.3  # seconds the coordinator selects in vain before the simulated clock moves on
FAILED_IN_A_ROW = 20  # finished rounds that all failed before a simulated run gives up (RoundsKeepFailing)
PROGRESS_EVERY = 0.5  # seconds between those checks


class RoundsKeepFailing(EdgerunError):
    """The last FAILED_IN_A_ROW rounds of a simulated run all failed: it cannot make progress."""


class Workers(Protocol):
    """Runs jobs on the fleet's data: federated.engines.thread_pool or .ray_actors."""

    name: str

    def run(self, parameters: Arrays, jobs: Sequence[Job]) -> list[Outcome]: ...

    def close(self) -> None: ...


class Behaviour(Protocol):
    """A kind of device (federated.simulation.DeviceBehaviour)."""

    @property
    def delay_seconds(self) -> float: ...

    @property
    def drop_probability(self) -> float: ...


@dataclass(frozen=True)
class Plan:
    """What one client does in one round: `drop_at` None (it takes part), "start" or a
    protocol stage; `arrival` when it would report, in simulated seconds; `seed` for its
    upload's stochastic rounding."""

    drop_at: str | None
    arrival: float
    seed: int


def plan(seed: int, client: int, round_number: int, behaviour: Behaviour, drop_stage: str, secure: bool) -> Plan:
    """A client's Plan for a round, a function of (seed, client index, round) alone (numpy
    SeedSequence): the same in every engine and whichever rounds the client was in before.
    Without secure aggregation every drop is at "start"."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, client, round_number]))
    drops = rng.random() < behaviour.drop_probability
    stage = DROP_CHOICES[int(rng.integers(len(DROP_CHOICES)))] if drop_stage == "random" else drop_stage
    arrival = behaviour.delay_seconds + rng.random()
    upload_seed = int(rng.integers(2**63))
    if not drops:
        return Plan(None, arrival, upload_seed)
    return Plan(stage if secure else "start", arrival, upload_seed)


@dataclass
class ClientState:
    """What the driver keeps for one virtual client between rounds."""

    index: int  # its partition of the data and its place in the fleet
    key: KeyPair
    rounds_done: list[int] = field(default_factory=list)  # rounds it reported in (or took part in, secure)
    dropped: list[int] = field(default_factory=list)  # rounds it dropped out of
    evaluations_done: list[int] = field(default_factory=list)


class Driver:
    """Virtual clients for `coordinator` (see the module docstring). `clients` maps each
    enrolled id to its state; `behaviours[i]` is client i's kind of device."""

    def __init__(self, coordinator: Coordinator, workers: Workers, clients: dict[str, ClientState],
                 behaviours: Sequence[Behaviour], seed: int, drop_stage: str, fleet: Fleet | None = None,
                 report_drops: bool = True) -> None:
        self.coordinator, self.workers, self.clients = coordinator, workers, clients
        self.behaviours, self.seed, self.drop_stage = behaviours, seed, drop_stage
        self.fleet, self.report_drops = fleet, report_drops  # device conditions; tell the coordinator of drops
        self._selecting: tuple[Any, float] | None = None  # (a round state seen selecting, since when)
        self._ids = sorted(clients)
        self._parameters: tuple[int, Arrays] | None = None  # (model version, its parameters)
        self._last_seen = 0.0
        self._served: set[tuple[Action, int]] = set()  # (work, round) already done
        self._last_progress_check = 0.0

    # ------------------------------------------------------------- the run
    def run(self) -> None:
        """Run the coordinator to the end, serving every round; re-raises what the
        coordinator's thread raised."""
        c = self.coordinator
        events: queue.SimpleQueue[frozenset[str] | None] = queue.SimpleQueue()
        stop, failure = threading.Event(), []
        unsubscribe = c.subscribe_work(lambda _generation, due: events.put(due))
        self._mark_seen(force=True)
        runner = threading.Thread(target=self._run_coordinator, args=(stop, failure), name="coordinator", daemon=True)
        runner.start()
        try:
            while runner.is_alive():
                try:
                    due = events.get(timeout=0.2)
                except queue.Empty:  # the watcher may have taken the open round as its starting point
                    record = c.store.current_round()
                    due = frozenset(record.selected) if record is not None else frozenset()
                self._mark_seen()
                if due:
                    self._serve(due)
                if self.fleet is not None:
                    self._wait_for_eligible()
                self._check_progress()
        finally:
            stop.set()
            runner.join()
            unsubscribe()
        if failure:
            raise failure[0]

    def _check_progress(self) -> None:
        """RoundsKeepFailing when the last FAILED_IN_A_ROW finished rounds all failed (every
        selected device dropping, say): a simulated run would otherwise open rounds forever."""
        now = time.monotonic()
        if now - self._last_progress_check < PROGRESS_EVERY:
            return
        self._last_progress_check = now
        recent = self.coordinator.store.history(last=FAILED_IN_A_ROW)
        if len(recent) == FAILED_IN_A_ROW and all(r.status == "failed" for r in recent):
            raise RoundsKeepFailing(f"the last {FAILED_IN_A_ROW} rounds all failed (rounds {recent[0].round}-"
                                    f"{recent[-1].round}): the simulated devices cannot finish a round")

    def _run_coordinator(self, stop: threading.Event, failure: list[BaseException]) -> None:
        try:
            self.coordinator.run(stop)
        except BaseException as exc:  # noqa: BLE001 - handed to the driver's thread
            failure.append(exc)

    def _mark_seen(self, force: bool = False) -> None:
        now = time.time()
        if force or now - self._last_seen >= SEEN_EVERY:
            if self.fleet is None:
                self.coordinator.mark_seen(self._ids, now)
            else:
                on = set(self.fleet.eligible(self.clients[cid].index for cid in self._ids))
                self.coordinator.mark_seen((cid for cid in self._ids if self.clients[cid].index in on), now)
                self.coordinator.mark_seen((cid for cid in self._ids if self.clients[cid].index not in on), 0.0)
            self._last_seen = now

    def _wait_for_eligible(self) -> None:
        """When the coordinator has been selecting for STUCK_SELECTING seconds (too few
        eligible devices), move the simulated clock to the next device that becomes
        eligible (NoEligibleDevices after the fleet's max_wait)."""
        state = self.coordinator.round_state
        if state is None or state.record is not None or state.stage is not Stage.SELECT:
            self._selecting = None
            return
        if self._selecting is None or self._selecting[0] is not state:
            self._selecting = (state, time.monotonic())
        elif time.monotonic() - self._selecting[1] >= STUCK_SELECTING:
            self.fleet.wait_for_more(c.index for c in self.clients.values())
            self._selecting = (state, time.monotonic())
            self._mark_seen(force=True)

    def _serve(self, due: frozenset[str]) -> None:
        """Do what the clients in `due` were given to do."""
        works = {cid: self.coordinator.work_for(cid) for cid in sorted(due) if cid in self.clients}
        evaluations = {cid: w for cid, w in works.items() if w.action is Action.EVALUATE
                       and (Action.EVALUATE, w.round) not in self._served}
        training = {cid: w for cid, w in works.items() if w.action is Action.TRAIN
                    and (Action.TRAIN, w.round) not in self._served}
        if evaluations:
            self._served.update((Action.EVALUATE, w.round) for w in evaluations.values())
            self._evaluate(evaluations)
        for round_number in sorted({w.round for w in training.values()}):
            self._served.add((Action.TRAIN, round_number))
            self._train({cid: w for cid, w in training.items() if w.round == round_number}, round_number)

    def _global(self, version: int) -> Arrays:
        """The global parameters of `version`, as a device downloads them (from the store)."""
        if self._parameters is None or self._parameters[0] != version:
            blob = self.coordinator.store.model(version)
            self._parameters = (version, decode_arrays(blob, self.coordinator.spec))
        return self._parameters[1]

    def _job(self, cid: str, work: Work, seed: int = 0, evaluate: bool = False) -> Job:
        return Job(cid, self.clients[cid].index, work.round, dict(work.config), evaluate, seed)

    # ------------------------------------------------------------ training
    def _train(self, works: dict[str, Work], round_number: int) -> None:
        """One training round for the selected clients in `works` (all of one round)."""
        secure = any("secagg" in w.config for w in works.values())
        plans = {cid: plan(self.seed, self.clients[cid].index, round_number,
                           self.behaviours[self.clients[cid].index], self.drop_stage, secure) for cid in works}
        if self.fleet is not None:
            plans = self._conditions(plans, works, round_number, secure)
        for cid, p in plans.items():
            if p.drop_at == "start":
                self._withdraw(cid, round_number)
        arriving = sorted((cid for cid, p in plans.items() if p.drop_at != "start"),
                          key=lambda cid: (plans[cid].arrival, cid))
        if secure:
            self._secure_round(works, plans, arriving, round_number)
        else:
            self._plain_round(works, plans, arriving, round_number)

    def _conditions(self, plans: dict[str, Plan], works: dict[str, Work], round_number: int,
                    secure: bool) -> dict[str, Plan]:
        """`plans` under the fleet's device conditions (see the module docstring): arrivals
        moved by each device's work time, a device whose session ends first dropped (plain:
        at "start"; secure: before its masked input); then the clock moves to the round's
        close and the devices eligible then are offered."""
        fleet, opened = self.fleet, self.fleet.now
        eligible = len(fleet.eligible(c.index for c in self.clients.values()))
        out, leaves, dropped = {}, [], 0
        for cid, p in plans.items():
            index = self.clients[cid].index
            arrival = p.arrival + fleet.model.work_seconds(index)
            ends = fleet.model.session_end(index, opened)
            if p.drop_at is None and ends < opened + arrival:
                out[cid], dropped = Plan(Stage.MASKED if secure else "start", arrival, p.seed), dropped + 1
                leaves.append(ends)
            else:
                out[cid] = Plan(p.drop_at, arrival, p.seed)
                if p.drop_at is not None:
                    leaves.append(opened)
        arrivals = [opened + p.arrival for p in out.values() if p.drop_at is None]
        closed = round_end(opened, arrivals, leaves, _reports_needed(works), self.report_drops, fleet.deadline)
        fleet.record(RoundLog(round_number, opened, closed, eligible, len(works), dropped))
        self._mark_seen(force=True)
        return out

    def _withdraw(self, cid: str, round_number: int) -> None:
        """Count `cid` as dropped; tell the coordinator unless drops go unreported (a real fleet)."""
        self.clients[cid].dropped.append(round_number)
        if self.report_drops:
            self.coordinator.withdraw(cid, round_number)

    def _plain_round(self, works: dict[str, Work], plans: dict[str, Plan], arriving: list[str],
                     round_number: int) -> None:
        """Train and submit in arrival order until the round's goal have reported (or
        the round closed); a client whose training fails is withdrawn."""
        goal = _reports_needed(works)
        parameters = self._global(works[arriving[0]].model_version) if arriving else {}
        accepted, waiting = 0, list(arriving)
        while waiting and accepted < goal:
            batch, waiting = waiting[: goal - accepted], waiting[goal - accepted :]
            jobs = [self._job(cid, works[cid], plans[cid].seed) for cid in batch]
            for outcome in self.workers.run(parameters, jobs):
                cid = outcome.client_id
                if outcome.error is not None:
                    log.warning("%s: round %d training failed: %s", cid, round_number, outcome.error)
                    self._withdraw(cid, round_number)
                    continue
                try:
                    self.coordinator.submit(cid, round_number, outcome.upload, outcome.num_examples,
                                            outcome.metrics)
                except Rejected as exc:
                    log.warning("%s: round %d upload refused: %s", cid, round_number, exc)
                    continue
                self.clients[cid].rounds_done.append(round_number)
                accepted += 1

    def _secure_round(self, works: dict[str, Work], plans: dict[str, Plan], arriving: list[str],
                      round_number: int) -> None:
        """Admit the first advertisers of each cohort in arrival order, up to its share of
        the round's goal (ceil(goal x cohort / selected): when a cohort's advertise stage
        closes, federated.secagg.cohorts), train those that send a masked input, then run
        the protocol with one thread per admitted client."""
        parameters = self._global(works[arriving[0]].model_version) if arriving else {}
        goal = _reports_needed(works)
        cohorts: dict[str, list[str]] = {}  # clients by their "secagg" entry: one per cohort
        for cid in sorted(works):
            cohorts.setdefault(json.dumps(works[cid].config["secagg"], sort_keys=True), []).append(cid)
        rank = {cid: i for i, cid in enumerate(arriving)}
        inputs: dict[str, np.ndarray] = {}
        for members in cohorts.values():
            params = SecAggParams.from_config(works[members[0]].config["secagg"])
            share = advertise_goal(params, math.ceil(goal * len(members) / len(works)))
            present = sorted((cid for cid in members if cid in rank), key=rank.__getitem__)
            inputs.update(self._admit(present, works, plans, share, parameters, round_number))
        threads = [threading.Thread(target=self._secure_client, args=(cid, works[cid], inputs[cid],
                                                                      plans[cid].drop_at),
                                    name=f"secagg-{cid}", daemon=True) for cid in sorted(inputs)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def _admit(self, members: list[str], works: dict[str, Work], plans: dict[str, Plan], goal: int,
               parameters: Arrays, round_number: int) -> dict[str, np.ndarray]:
        """{client: its ring input} for the first `goal` advertisers of `members` (in arrival
        order): those that drop at advertise are withdrawn, those that drop before masking
        get an empty input (never sent), the rest are trained; a client whose training
        fails is withdrawn and the next arrival takes its place."""
        admitted: dict[str, np.ndarray] = {}
        waiting = list(members)
        while waiting and len(admitted) < goal:
            chosen = []
            while waiting and len(admitted) + len(chosen) < goal:
                cid = waiting.pop(0)
                if plans[cid].drop_at == Stage.ADVERTISE:
                    self._withdraw(cid, round_number)
                elif plans[cid].drop_at in NEEDS_INPUT:
                    chosen.append(cid)
                else:
                    admitted[cid] = np.zeros(0, np.uint32)  # it leaves before it would mask an input
            jobs = [self._job(cid, works[cid], plans[cid].seed) for cid in chosen]
            for outcome in self.workers.run(parameters, jobs):
                if outcome.error is None:
                    admitted[outcome.client_id] = outcome.upload
                    continue
                log.warning("%s: round %d training failed: %s", outcome.client_id, round_number, outcome.error)
                self._withdraw(outcome.client_id, round_number)
        return admitted

    def _secure_client(self, cid: str, work: Work, ring: np.ndarray, drop_at: str | None) -> None:
        """One client's part in the secure protocol (its thread)."""
        secagg = work.config["secagg"]
        params = SecAggParams.from_config(secagg)
        transport = InProcessTransport(self.coordinator, cid, work.round, params.quantization.bits)
        deadline = work.deadline + 5 * float(secagg.get("stage_timeout", 10.0)) + 5.0
        try:
            outcome = secure_upload(cid, self.clients[cid].key, params, ring, transport, deadline, drop_at=drop_at)
        except (SecAggError, Rejected) as exc:
            log.warning("%s: round %d secure aggregation ended: %s", cid, work.round, exc)
            return
        if outcome == "dropped":
            self._withdraw(cid, work.round)
        elif outcome == "done":
            self.clients[cid].rounds_done.append(work.round)

    # ---------------------------------------------------------- evaluation
    def _evaluate(self, works: dict[str, Work]) -> None:
        """Evaluate the global model on each client's partition and report it."""
        for version in sorted({w.model_version for w in works.values()}):
            chosen = [cid for cid, w in works.items() if w.model_version == version]
            jobs = [self._job(cid, works[cid], evaluate=True) for cid in chosen]
            for outcome in self.workers.run(self._global(version), jobs):
                cid, round_number = outcome.client_id, works[outcome.client_id].round
                if outcome.error is not None:
                    log.warning("%s: round %d evaluation failed: %s", cid, round_number, outcome.error)
                    continue
                try:
                    self.coordinator.submit_evaluation(cid, round_number, EvaluateRes(
                        outcome.loss, outcome.num_examples, outcome.metrics))
                except Rejected as exc:
                    log.warning("%s: round %d evaluation refused: %s", cid, round_number, exc)
                    continue
                self.clients[cid].evaluations_done.append(round_number)


def _reports_needed(works: dict[str, Work]) -> int:
    """The reports that close the round (its config's reports_needed; all selected if none)."""
    return min(int(w.config.get("reports_needed", len(works))) for w in works.values())


class InProcessTransport:
    """federated.secagg.device.Transport straight into the coordinator's handlers (no gRPC,
    no signatures: the driver is every client)."""

    def __init__(self, coordinator: Coordinator, client_id: str, round_number: int, bits: int) -> None:
        self.coordinator, self.client_id, self.round, self.bits = coordinator, client_id, round_number, bits

    def send(self, stage: Stage, payload: Any) -> StageReply:
        return self.coordinator.secure_step(self.client_id, self.round, stage, payload)

    def upload_masked(self, vector: np.ndarray) -> None:
        self.coordinator.submit_masked(self.client_id, self.round, self.bits, vector)
