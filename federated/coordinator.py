"""The coordinator: enrolment, the request handlers, the run of rounds, the global model.

Plain Python, no gRPC (federated.service adapts it). One background thread runs rounds,
each as a workflow of named stages over a RoundState (federated.rounds); request handlers
(called from gRPC threads) read shared state under a lock and record updates in the store,
which makes every transition durable and atomic (a restarted coordinator resumes the open
round from SQLite).

Round r: wait for enough available clients -> the strategy selects clients and the round
config -> open the round (deadline) -> selected clients download the signed global
parameters, train, upload their deltas (or take part in secure aggregation) -> when
`report_goal` of them reported (or the deadline passed) the strategy aggregates -> the new
global parameters are published as the next model version in the same transaction that
closes the round. Too few reports: the round fails and the global model is unchanged.
Differential privacy wraps the strategy (federated.strategies.dp).
"""

from __future__ import annotations

import dataclasses
import enum
import hmac
import logging
import math
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgerun.federated.auth import KeyPair, payload_message, sha256
from edgerun.federated.codec import PayloadError, decode_arrays, decode_state, encode_arrays
from edgerun.federated.compression import decompress
from edgerun.federated.compression import parse as parse_compression
from edgerun.federated.errors import Rejected
from edgerun.federated.local import parameter_spec
from edgerun.federated.privacy import DpOptions, PrivacyAccountant
from edgerun.federated.rounds import PLAIN_ROUND, SECURE_ROUND, RoundState, run_round, workflow_for
from edgerun.federated.secagg.cohorts import SecureProtocol
from edgerun.federated.secagg.errors import SecAggError, StageError
from edgerun.federated.secagg.messages import StageReply
from edgerun.federated.secagg.options import SecAggOptions
from edgerun.federated.stages import Stage
from edgerun.federated.store import AlreadyEnrolled, RoundRecord, Store
from edgerun.federated.strategies.base import Strategy
from edgerun.federated.strategies.dp import DpFixedClipping
from edgerun.federated.typing import EvaluateRes, NDArrays
from edgerun.runtime.errors import ErrorCode
from edgerun.runtime.interpreter import Interpreter

log = logging.getLogger("edgerun.federated")
UNKNOWN_TTL = 10.0  # seconds an id found not enrolled is answered from memory
MAX_UNKNOWN_IDS = 4096  # ids remembered as not enrolled

Arrays = dict[str, np.ndarray]
Evaluator = Callable[[Arrays], dict[str, float]]
WorkListener = Callable[[int, frozenset[str] | None], None]  # (work generation, client ids with work or None: all)


@dataclass
class CoordinatorConfig:
    """Round settings, paced as production fleets are (Bonawitz et al. 2019, "Towards
    Federated Learning at Scale"): the strategy picks a target number of clients, the
    coordinator selects `over_selection` more (30 % by default, as far as enough are
    available) because some always drop out, and the round closes as soon as
    `report_goal` of the target (a fraction, 1.0 = the whole target) reported; late
    reports are refused. At `round_timeout` seconds the round closes with what it has
    (it fails below the strategy's min_fit_results). What clients do in a round
    (epochs, batch size, learning rate, clipping) is the strategy's config."""

    rounds: int = 10
    round_timeout: float = 60.0
    report_goal: float = 1.0
    over_selection: float = 0.3
    available_window: float = 60.0  # a client seen this recently counts as available
    wait_for_clients: float = 60.0  # how long a round waits for enough available clients
    evaluate_every: int = 0  # an evaluation round after every k-th training round (0: never)
    evaluation_timeout: float = 30.0
    enrol_token: str | None = None
    allowed_keys: set[bytes] = field(default_factory=set)
    seed: int = 0
    # Secure aggregation (on by default): the coordinator only learns the sum of the updates.
    secagg: SecAggOptions | None = field(default_factory=SecAggOptions)
    # Differential privacy (DP-FedAvg with accounting); None: off.
    dp: DpOptions | None = None
    # Plain uploads only: "none", "int8" (stochastic rounding) or "topk:F" (sparse).
    compression: str = "none"
    # One bad client (see federated.rounds): every update's L2 norm is bounded by max_update_norm
    # (plain rounds: the coordinator clips it; secure rounds: clients are told to clip to it and
    # the coordinator checks the norm of the sum); None: no bound. An update weighs
    # min(num_examples, max_examples), the same cap as SecAggOptions.max_weight.
    max_update_norm: float | None = 10.0
    max_examples: int = 1000
    # Status with this token (gRPC metadata "authorization: Bearer <token>") reports rounds and
    # clients; without it Status only says the coordinator is alive. None: liveness only.
    operator_token: str | None = None

    # Where the latest global model is written as a loadable .erm after every round (None: nowhere).
    export_path: Path | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.over_selection) and 0 <= self.over_selection <= 10):
            raise ValueError(f"over_selection must be a fraction in [0, 10], got {self.over_selection!r}")
        if not (math.isfinite(self.report_goal) and 0 < self.report_goal <= 1):
            raise ValueError(f"report_goal must be a fraction in (0, 1], got {self.report_goal!r}")
        if self.max_update_norm is not None and not (math.isfinite(self.max_update_norm)
                                                     and self.max_update_norm > 0):
            raise ValueError(f"max_update_norm must be a finite number > 0 or None, got {self.max_update_norm!r}")
        if isinstance(self.max_examples, bool) or not isinstance(self.max_examples, int) or self.max_examples < 1:
            raise ValueError(f"max_examples must be an integer >= 1, got {self.max_examples!r}")


# Enrolment and upload fields a client chooses, bounded (INVALID_ARGUMENT beyond).
CLIENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")
MAX_INFO_ENTRIES, MAX_INFO_KEY, MAX_INFO_VALUE = 32, 64, 1024
MAX_METRICS, MAX_METRIC_NAME = 32, 64
MAX_REASON = 512  # characters of a Decline's reason kept (one line)
MAX_DECLINES = 1000  # declines remembered (the most recent), for status and tests


def check_enrolment(client_id: str, info: dict[str, str]) -> None:
    """Rejected(INVALID_ARGUMENT) unless the id is 1-128 characters of [A-Za-z0-9._:@-]
    (starting with a letter or digit) and `info` has at most MAX_INFO_ENTRIES entries with
    keys up to MAX_INFO_KEY and values up to MAX_INFO_VALUE characters."""
    if not CLIENT_ID.fullmatch(client_id):
        shown = client_id if len(client_id) <= 40 else f"{client_id[:40]}... ({len(client_id)} characters)"
        raise Rejected(ErrorCode.INVALID_ARGUMENT, f"client id {shown!r}: expected 1-128 characters of "
                       "[A-Za-z0-9._:@-], starting with a letter or digit")
    if len(info) > MAX_INFO_ENTRIES:
        raise Rejected(ErrorCode.INVALID_ARGUMENT, f"client {client_id!r}: info has {len(info)} entries, "
                       f"at most {MAX_INFO_ENTRIES} are accepted")
    for key, value in info.items():
        if len(key) > MAX_INFO_KEY or len(value) > MAX_INFO_VALUE:
            raise Rejected(ErrorCode.INVALID_ARGUMENT, f"client {client_id!r}: info entry {key[:40]!r} has a "
                           f"{len(key)}-character key and a {len(value)}-character value, at most "
                           f"{MAX_INFO_KEY} and {MAX_INFO_VALUE} are accepted")


def check_metrics(client_id: str, metrics: dict[str, float]) -> None:
    """Rejected(INVALID_ARGUMENT) unless `metrics` has at most MAX_METRICS entries, names up
    to MAX_METRIC_NAME characters and finite values (they are stored as strict JSON)."""
    if len(metrics) > MAX_METRICS:
        raise Rejected(ErrorCode.INVALID_ARGUMENT, f"client {client_id!r}: {len(metrics)} metrics, at most "
                       f"{MAX_METRICS} are accepted")
    for name, value in metrics.items():
        if len(name) > MAX_METRIC_NAME:
            raise Rejected(ErrorCode.INVALID_ARGUMENT, f"client {client_id!r}: metric name {name[:40]!r}... is "
                           f"{len(name)} characters, at most {MAX_METRIC_NAME} are accepted")
        if not math.isfinite(value):
            raise Rejected(ErrorCode.INVALID_ARGUMENT, f"client {client_id!r}: metric {name!r} is {value}; "
                           "metrics must be finite numbers")


class Action(enum.StrEnum):
    """What a polling client is told to do."""

    WAIT = "wait"
    TRAIN = "train"
    EVALUATE = "evaluate"
    STOP = "stop"


@dataclass(frozen=True)
class Work:
    action: Action
    round: int = 0
    model_version: int = 0
    config: dict[str, Any] = field(default_factory=dict)
    deadline: float = 0.0
    retry_after: float = 1.0


class Coordinator:
    """State and handlers of one federated training run (see the module docstring).

    ValueError for settings that cannot work together (compression under secure
    aggregation, a strategy that needs each update under secure aggregation, distributed
    DP without secure aggregation); ConfigurationError for a ring too coarse for DP."""

    def __init__(self, model_path: str | Path, store: Store, strategy: Strategy, config: CoordinatorConfig,
                 key: KeyPair, evaluator: Evaluator | None = None,
                 on_round: Callable[[RoundRecord | None], None] | None = None) -> None:
        self.model_bytes = Path(model_path).read_bytes()
        if (config.dp is not None and config.dp.mode == "distributed" and config.secagg is not None
                and config.secagg.max_cohort is not None):
            # each cohort's sum would carry only its share of the clients' noise: one cohort per round
            log.info("distributed DP: secure aggregation runs every round as one cohort (max_cohort ignored)")
            config = dataclasses.replace(config, secagg=dataclasses.replace(config.secagg, max_cohort=None))
        self.store, self.config, self.key = store, config, key
        self.evaluator = evaluator
        self.on_round = on_round  # called with each finished round's record (progress display)
        interpreter = Interpreter(self.model_bytes, device="cpu")
        self.spec = parameter_spec(interpreter)
        self.lock = threading.Condition()
        self.last_seen: dict[str, float] = {}
        # Under DP the cohort must be a fresh uniform draw (the accounting assumes it): the
        # selection RNG is seeded from the OS's CSPRNG instead of the configured seed.
        self.rng = np.random.default_rng(secrets.randbits(128) if config.dp is not None else config.seed)
        self.finished = False
        self.stopped: set[str] = set()  # clients told that the run is over
        self._keys: dict[str, bytes] = {}
        # Ids looked up and not enrolled (id -> when), so a flood of requests naming unknown
        # ids does not read SQLite each time: bounded (LRU), forgotten after UNKNOWN_TTL
        # seconds (an enrolment made outside this process shows up by then) and at once when
        # the id enrols here; `_enrolments` keeps a lookup racing an enrolment from caching.
        self._unknown: OrderedDict[str, float] = OrderedDict()
        self._unknown_lock = threading.Lock()
        self._enrolments = 0
        self.round_state: RoundState | None = None  # the round in progress, if any
        # (round, client id) -> the reason a selected client gave for not training (Decline)
        self.declines: OrderedDict[tuple[int, str], str] = OrderedDict()
        self.budget_exhausted = False
        if config.secagg is not None and config.compression != "none":
            raise ValueError("compression applies to plain uploads; under secure aggregation use "
                             "SecAggOptions(bits=...) for reduced-bit fixed point")
        parse_compression(config.compression)

        if config.secagg is not None and strategy.needs_individual_updates:
            raise ValueError(f"{type(strategy).__name__} needs each client's update; it cannot run with secure "
                             "aggregation (turn it off to use it)")
        self.strategy: Strategy | DpFixedClipping = strategy if config.dp is None else self._private(strategy)
        self.workflow = PLAIN_ROUND if config.secagg is None else SECURE_ROUND
        saved = store.get_state("strategy")
        if saved:
            self.strategy.load_state(decode_state(saved))  # server-optimizer state survives restarts
        latest = store.latest_model()
        if latest is None:
            self.version, self.parameters = 0, interpreter.run({}, signature="save")
            store.publish_model(0, encode_arrays(self.parameters), {})
        else:
            self.version = latest[0]
            self.parameters = decode_arrays(latest[1], self.spec)

    def _private(self, strategy: Strategy) -> DpFixedClipping:
        """`strategy` wrapped in DP, its accountant restored from (and persisted to) the store."""
        dp = self.config.dp
        saved = self.store.get_state("privacy") or {}
        accountant = PrivacyAccountant(dp, saved.get("rounds", saved.get("sampling_probabilities", [])))
        return DpFixedClipping(strategy, dp, accountant, self._persist_privacy, self.config.secagg, self.shapes)

    def _persist_privacy(self, rounds: list[list[float]]) -> None:
        self.store.put_state("privacy", {"rounds": rounds})

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        """The shapes of the exchanged parameters, in order."""
        return [tuple(shape) for _, shape in self.spec.values()]

    def parameter_list(self) -> NDArrays:
        """The global parameters in the order of `spec`."""
        return [self.parameters[n] for n in self.spec]

    # ------------------------------------------------------------ enrolment
    def enrol(self, client_id: str, public_key: bytes, token: str, info: dict[str, str]) -> bytes:
        """Register a device key; returns the coordinator's public key. The same id with the
        same key again (a restarted device) is answered as the first time. Rejected: fields out
        of bounds (check_enrolment), a bad token for a key not allowed, an id enrolled with
        another key, a key enrolled under another id."""
        check_enrolment(client_id, info)
        allowed = public_key in self.config.allowed_keys
        expected = self.config.enrol_token
        if not allowed and (expected is None or not hmac.compare_digest(token.encode(), expected.encode())):
            raise Rejected(ErrorCode.PERMISSION_DENIED,
                           f"client {client_id!r}: bad enrolment token and key not allowed")
        try:
            self.store.enrol(client_id, public_key, dict(info))
        except AlreadyEnrolled:
            record = self.store.client(client_id)
            if record is not None and hmac.compare_digest(record.public_key, public_key):
                log.info("client %s enrolled again with its key (a restarted device)", client_id)
                return self.key.public_bytes
            raise Rejected(ErrorCode.ALREADY_EXISTS, f"client {client_id!r} or its key is already enrolled "
                           "(each device needs its own id and key file)") from None
        with self._unknown_lock:
            self._enrolments += 1
            self._unknown.pop(client_id, None)
        log.info("enrolled client %s", client_id)
        return self.key.public_bytes

    def public_key_of(self, client_id: str) -> bytes | None:
        """The enrolled key of a client (cached: keys never change once enrolled)."""
        key = self._keys.get(client_id)
        if key is not None:
            return key
        now = time.monotonic()
        with self._unknown_lock:
            seen = self._unknown.get(client_id)
            if seen is not None and now - seen < UNKNOWN_TTL:
                self._unknown.move_to_end(client_id)
                return None
            generation = self._enrolments
        record = self.store.client(client_id)
        if record is not None:
            key = self._keys[client_id] = record.public_key
            return key
        with self._unknown_lock:
            if self._enrolments == generation:  # no enrolment since the lookup began
                self._unknown[client_id] = now
                self._unknown.move_to_end(client_id)
                while len(self._unknown) > MAX_UNKNOWN_IDS:
                    self._unknown.popitem(last=False)
        return None

    # ----------------------------------------------------------------- work
    # Long-polling clients (federated.service holds their GetWork calls) are woken through
    # `subscribe_work`: one watcher thread, running while anyone subscribes, waits on the lock
    # (so it runs after every notify_all, and at least every WAKE_TICK seconds) and compares
    # what gives clients work: the open round, the open evaluation and the end of the run.
    WAKE_TICK = 0.05  # seconds: a round that opens reaches waiting clients at most this late
    _work_listeners: tuple[WorkListener, ...] = ()
    _work_generation = 0
    _work_watcher: threading.Thread | None = None
    _selected_sets: tuple[Any, frozenset[str]] = (None, frozenset())  # (round record, its selected ids)

    def work_for(self, client_id: str, now: float | None = None) -> Work:
        """What `client_id` should do now (and it counts as seen): STOP once the run is over,
        EVALUATE while an evaluation waits for it, TRAIN while the open round selected it and
        has not got its report, WAIT otherwise. Reads only memory (the round in progress),
        except SQLite's reports of the open round for a client it selected."""
        return self.poll_work(client_id, now)[0]

    def poll_work(self, client_id: str, now: float | None = None) -> tuple[Work, int]:
        """(work_for(client_id), the work generation it was decided in): a change that gives
        clients work after this answer comes to `subscribe_work`'s listeners with a higher
        generation, so a long-poll compares generations to know it missed none."""
        now = time.time() if now is None else now
        with self.lock:
            self.last_seen[client_id] = now
            return self._work(client_id, now), self._work_generation

    def poll_work_nowait(self, client_id: str, now: float | None = None) -> tuple[Work, int] | None:
        """poll_work(client_id) when it can be answered at once from memory: None (nothing
        done) while the lock is held elsewhere, no round runs here, or the open round selected
        `client_id` (its report is in the store). For an event loop: this never waits."""
        now = time.time() if now is None else now
        if not self.lock.acquire(blocking=False):
            return None
        try:
            if not self.finished:
                state = self.round_state
                if state is None:
                    return None
                record = self._open_round(state)
                secure = state.secure
                if (record is not None and client_id in self._selected_set(record) and now <= record.deadline
                        and (secure is None or secure.accepting(client_id))):
                    return None
            self.last_seen[client_id] = now
            return self._work(client_id, now), self._work_generation
        finally:
            self.lock.release()

    def known_key(self, client_id: str) -> bytes | None:
        """The enrolled key of `client_id` if this process holds it in memory (public_key_of
        caches it), else None; never reads the store, so an event loop may call it."""
        return self._keys.get(client_id)

    def _work(self, client_id: str, now: float) -> Work:
        """work_for's answer (call with the lock held)."""
        if self.finished:
            self.stopped.add(client_id)
            self.lock.notify_all()
            return Work(Action.STOP)
        state = self.round_state
        evaluation = state.evaluation if state is not None else None
        if evaluation and client_id in evaluation.selected and client_id not in evaluation.results:
            return Work(Action.EVALUATE, evaluation.round, evaluation.version, {}, evaluation.deadline)
        current = self._open_round(state)
        secure = state.secure if state is not None else None
        if (current is None or client_id not in self._selected_set(current) or now > current.deadline
                or (secure is not None and not secure.accepting(client_id))  # in the protocol, or too late
                or client_id in self.store.reported(current.round)):
            # Not needed in the open round: nothing to do before it ends, so poll less.
            busy = current is not None and client_id not in self._selected_set(current)
            return Work(Action.WAIT, retry_after=0.5 if busy else 0.2)
        config = dict(self.round_config_for(client_id, current.config))  # its cohort's, under secure aggregation
        return Work(Action.TRAIN, current.round, current.model_version, config, current.deadline)

    def _open_round(self, state: RoundState | None) -> RoundRecord | None:
        """The round that takes uploads, from memory while `run` runs one (opened and not yet
        closing, aggregated or failed); from the store when no round runs here (a stored round
        before `run` resumes it). Call with the lock held."""
        if state is None:
            return self.store.current_round()
        record = state.record
        if record is None or state.closing or self.version != record.model_version:
            return None  # selecting, or closed: its aggregate is published as version model_version + 1
        return record

    def _selected_set(self, record: RoundRecord) -> frozenset[str]:
        """The ids `record` selected, as a set made once per round (call with the lock held)."""
        cached, ids = self._selected_sets
        if cached is not record:
            ids = frozenset(record.selected)
            self._selected_sets = (record, ids)
        return ids

    def subscribe_work(self, listener: WorkListener) -> Callable[[], None]:
        """Call `listener(generation, due)` whenever clients may have got work: a round opened
        (`due`: the ids it selected), an evaluation opened (its selected ids) or the run ended
        (`due` None: every client). It runs on the watcher thread, at most WAKE_TICK seconds
        after the change, and must return quickly without taking the lock (e.g. hand over to an
        event loop with call_soon_threadsafe); what it raises is logged. Returns the function
        that unsubscribes it."""
        with self.lock:
            self._work_listeners = (*self._work_listeners, listener)
            if self._work_watcher is None:
                self._work_watcher = threading.Thread(target=self._watch_work, name="coordinator-work-watcher",
                                                      daemon=True)
                self._work_watcher.start()

        def unsubscribe() -> None:
            with self.lock:
                self._work_listeners = tuple(x for x in self._work_listeners if x is not listener)
        return unsubscribe

    def _work_state(self) -> tuple[bool, RoundRecord | None, Any]:
        """What gives clients work, from memory: (run over, open round, open evaluation)."""
        state = self.round_state
        if state is None:
            return self.finished, None, None
        return self.finished, self._open_round(state), state.evaluation

    def _watch_work(self) -> None:
        """The watcher thread: tells the listeners of every change in `_work_state`; ends
        once none is left."""
        with self.lock:
            seen = self._work_state()
            while self._work_listeners:
                self.lock.wait(self.WAKE_TICK)
                now = self._work_state()
                changed = [new is not old for new, old in zip(now, seen, strict=True)]
                seen = now
                if not any(changed):
                    continue
                finished, record, evaluation = now
                due: set[str] | None = None if finished and changed[0] else set()
                if due is not None and changed[1] and record is not None:
                    due.update(record.selected)
                if due is not None and changed[2] and evaluation is not None:
                    due.update(evaluation.selected)
                self._work_generation += 1
                generation, listeners = self._work_generation, self._work_listeners
                self.lock.release()  # listeners run without the lock
                try:
                    for listener in listeners:
                        try:
                            listener(generation, None if due is None else frozenset(due))
                        except Exception:  # noqa: BLE001 - one listener's failure must not stop the others
                            log.exception("work listener %r failed", listener)
                finally:
                    self.lock.acquire()
            self._work_watcher = None

    def mark_seen(self, client_ids: Iterable[str], now: float | None = None) -> None:
        """Count `client_ids` as seen now (available for selection): the clients whose
        long-poll the service holds are connected although they ask nothing."""
        now = time.time() if now is None else now
        with self.lock:
            for client_id in client_ids:
                self.last_seen[client_id] = now

    def payload(self, kind: str, version: int) -> tuple[bytes, bytes, bytes]:
        """(payload, sha256, coordinator signature) of the model file or a parameter version."""
        if kind == "model":
            blob = self.model_bytes
        else:
            blob = self.store.model(version)
            if blob is None:
                raise Rejected(ErrorCode.NOT_FOUND, f"model version {version} does not exist")
        digest = sha256(blob)
        return blob, digest, self.key.sign(payload_message(kind, version, digest))

    # --------------------------------------------------------------- upload
    def submit(self, client_id: str, round_number: int, blob: bytes, num_examples: int,
               metrics: dict[str, float]) -> None:
        """Validate and durably record one client's delta; Rejected says why not."""
        if num_examples <= 0:
            raise Rejected(ErrorCode.INVALID_ARGUMENT, f"client {client_id!r}: num_examples must be positive")
        check_metrics(client_id, metrics)
        current = self.store.current_round()
        method = current.config.get("compression", "none") if current is not None else "none"
        try:
            decompress(blob, self.spec, method)
        except PayloadError as exc:
            log.warning("rejected update from %s for round %d: %s", client_id, round_number, exc)
            raise Rejected(ErrorCode.INVALID_ARGUMENT, f"client {client_id!r}: {exc}") from None
        with self.lock:
            current, state = self.store.current_round(), self.round_state
            closing = state is not None and state.closing and state.number == round_number
            if current is None or current.round != round_number or closing or time.time() > current.deadline:
                raise Rejected(ErrorCode.FAILED_PRECONDITION,
                               f"round {round_number} is not open (or past its deadline)")
            if "secagg" in current.config:
                raise Rejected(ErrorCode.FAILED_PRECONDITION,
                               f"round {round_number} uses secure aggregation: only masked inputs are accepted")
            if not self.store.record_update(round_number, client_id, blob, num_examples, dict(metrics)):
                raise Rejected(ErrorCode.FAILED_PRECONDITION,
                               f"client {client_id!r} is not selected for round {round_number} or already reported")
            self.lock.notify_all()
        log.info("round %d: update from %s (%d examples)", round_number, client_id, num_examples)

    def _secure(self, round_number: int) -> SecureProtocol | None:
        """The open secure-aggregation protocol of `round_number`: a SecureRound, or a
        CohortedRound when the round is split into cohorts (call with the lock held)."""
        secure = self.round_state.secure if self.round_state is not None else None
        return secure if secure is not None and secure.round == round_number else None

    def round_config_for(self, client_id: str, config: dict[str, Any]) -> dict[str, Any]:
        """`config` (an open round's stored config) as `client_id` must get it: in a round split
        into secure-aggregation cohorts, with the "secagg" entry of its own cohort (its graph
        seed and cohort size; the quantization is the round's); else `config` itself (a plain
        round, a one-cohort round, a client in no cohort, a round whose protocol is over)."""
        entry = config.get("secagg")
        if not entry or "cohorts" not in entry:
            return config
        with self.lock:
            secure = self._secure(int(entry["round"]))
            if secure is None:
                return config
            try:
                params = secure.params_of(client_id)
            except SecAggError:
                return config
        return {**config, "secagg": {**entry, **params.to_config()}}

    def secure_step(self, client_id: str, round_number: int, stage: str, payload: Any) -> StageReply:
        """One secure-aggregation message (or poll) from a client; Rejected says why not."""
        with self.lock:
            secure = self._secure(round_number)
            if secure is None:
                return StageReply(Stage.ABORTED, message=f"no secure aggregation is open for round {round_number}")
            try:
                reply = secure.handle(client_id, stage, payload)
            except SecAggError as exc:
                # keys advertised after the first stage closed: an over-selected client that came too late
                late = isinstance(exc, StageError) and stage == Stage.ADVERTISE
                (log.info if late else log.warning)("round %d: %s from %s refused: %s", round_number, stage,
                                                    client_id, exc)
                raise Rejected(ErrorCode.FAILED_PRECONDITION, f"{type(exc).__name__}: {exc}", routine=late) from None
            self.lock.notify_all()
            return reply

    def submit_masked(self, client_id: str, round_number: int, bits: int, vector: np.ndarray) -> None:
        """Add one masked input into the round's running sum; Rejected says why not."""
        with self.lock:
            secure = self._secure(round_number)
            if secure is None:
                raise Rejected(ErrorCode.FAILED_PRECONDITION,
                               f"no secure aggregation is open for round {round_number}")
            try:
                want = secure.params_of(client_id).quantization.bits
                if bits != want:
                    raise Rejected(ErrorCode.INVALID_ARGUMENT, f"masked input in Z_2^{bits}, the round uses Z_2^{want}")
                secure.receive_masked(client_id, vector)
            except SecAggError as exc:
                raise Rejected(ErrorCode.INVALID_ARGUMENT, f"{type(exc).__name__}: {exc}") from None
            self.lock.notify_all()

    def withdraw(self, client_id: str, round_number: int) -> bool:
        """`client_id` will not report in `round_number` (it dropped out, or declined): the
        round stops waiting for it. A simulator knows this of its dropouts (a real device that
        vanishes says nothing); a device that declines says so (`decline`). An id not
        selected, or a round not open, is ignored (False)."""
        with self.lock:
            state = self.round_state
            if state is None or state.number != round_number or state.record is None:
                return False
            if client_id not in state.record.selected:
                return False
            state.withdrawn.add(client_id)
            if state.secure is not None:  # in its cohort, when the round runs in cohorts
                state.secure.withdraw(client_id)
            self.lock.notify_all()
            return True

    def decline(self, client_id: str, round_number: int, reason: str) -> bool:
        """`client_id` says it will not train in `round_number` and why (its device profile's
        memory budget cannot hold the train step, say): logged, kept in `declines` (the first
        line, at most MAX_REASON characters) and the round goes on without it. True when the
        client was selected in that open round; otherwise the reason is only logged."""
        reason = (reason.strip().splitlines() or ["no reason given"])[0][:MAX_REASON]
        reason = "".join(ch if ch.isprintable() else "?" for ch in reason)  # no terminal escapes into logs
        counted = self.withdraw(client_id, round_number)
        log.warning("round %d: %s declined to train%s: %s", round_number, client_id,
                    "" if counted else " (not selected in an open round: ignored)", reason)
        if counted:
            with self.lock:
                self.declines[(round_number, client_id)] = reason
                while len(self.declines) > MAX_DECLINES:
                    self.declines.popitem(last=False)
        return counted

    def submit_evaluation(self, client_id: str, round_number: int, result: EvaluateRes) -> None:
        """Record one client's evaluation of the global model; Rejected says why not."""
        check_metrics(client_id, dict(result.metrics))
        with self.lock:
            evaluation = self.round_state.evaluation if self.round_state is not None else None
            if evaluation is None or evaluation.round != round_number:
                raise Rejected(ErrorCode.FAILED_PRECONDITION, f"no evaluation is open for round {round_number}")
            if client_id not in evaluation.selected or client_id in evaluation.results:
                raise Rejected(ErrorCode.FAILED_PRECONDITION,
                               f"client {client_id!r} is not asked to evaluate round {round_number} or already did")
            evaluation.results[client_id] = result
            self.lock.notify_all()

    # --------------------------------------------------------------- status
    def wait_until_clients_stopped(self, timeout: float) -> bool:
        """After `run`: keep answering until every enrolled client was told to stop
        (or `timeout` seconds passed); True if all were."""
        deadline = time.time() + timeout
        with self.lock:
            while time.time() < deadline:
                if set(self.store.client_ids()) <= self.stopped:
                    return True
                self.lock.wait(0.1)
        return False

    def liveness(self) -> dict[str, Any]:
        """What anyone may learn (Status without the operator token): the coordinator answers."""
        return {"alive": True, "finished": self.finished}

    def status(self, recent: int = 10) -> dict[str, Any]:
        """Rounds, clients and metrics for operators (JSON-able): counts come from SQL and only
        the last `recent` finished rounds are read, so a call costs the same with 10 or
        100,000 clients enrolled."""
        now, window = time.time(), self.config.available_window
        current = self.store.current_round()
        return {
            "model_version": self.version,
            "finished": self.finished,
            "current_round": None if current is None else current.round,
            "clients": self.store.client_count(),
            "available": sum(1 for seen in list(self.last_seen.values()) if now - seen <= window),
            "rounds": self.store.round_counts(),
            "history": [{"round": r.round, "status": r.status, "metrics": r.metrics}
                        for r in self.store.history(last=recent)],
            "declined": [{"round": r, "client": c, "reason": why}
                         for (r, c), why in list(self.declines.items())[len(self.declines) - max(recent, 0):]],
        }

    def available(self, now: float) -> list[str]:
        """Clients seen within the last `available_window` seconds, sorted."""
        window = self.config.available_window
        return sorted(c for c, seen in self.last_seen.items() if now - seen <= window)

    def announce(self, round_number: int) -> None:
        """Tell `on_round` that a round finished (aggregated or failed)."""
        if self.on_round is not None:
            self.on_round(self.store.round(round_number))

    # --------------------------------------------------------------- rounds
    def run(self, stop: threading.Event | None = None) -> None:
        """Run rounds until `config.rounds` have finished (or `stop` is set); a round a
        restart interrupted is resumed first."""
        stop = stop or threading.Event()
        while not stop.is_set():
            history = self.store.history()
            done = sum(1 for r in history if r.status == "aggregated")
            if done >= self.config.rounds or self.budget_exhausted:
                break
            current = self.store.current_round()
            if current is not None:
                run_round(self, workflow_for(current.config), RoundState.resumed(current), stop)
            else:
                run_round(self, self.workflow, RoundState(1 + max((r.round for r in history), default=0)), stop)
        with self.lock:
            self.finished = not stop.is_set()
            self.lock.notify_all()
