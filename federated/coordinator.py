"""The coordinator: enrolment, the round state machine, model publication.

Plain Python, no gRPC (federated.service adapts it). One background thread runs
rounds; request handlers (called from gRPC threads) read shared state under a
lock and record updates in the store, which makes every transition durable and
atomic (a restarted coordinator resumes the open round from SQLite).

Round r: wait for enough available clients -> the strategy selects clients and
the round config -> open the round (deadline) -> selected clients download the
signed global parameters, train, upload their deltas -> when `report_goal` of
them reported (or the deadline passed) the strategy aggregates -> the new
global parameters are published as the next model version in the same
transaction that closes the round. Too few reports: the round fails and the
global model is unchanged.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import math
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgerun.federated.auth import KeyPair, payload_message, sha256
from edgerun.federated.codec import PayloadError, decode_arrays, encode_arrays
from edgerun.federated.compression import decompress
from edgerun.federated.compression import parse as parse_compression
from edgerun.federated.errors import Rejected
from edgerun.federated.local import parameter_spec
from edgerun.federated.privacy import DpOptions, PrivacyAccountant
from edgerun.federated.secagg.messages import SecAggParams
from edgerun.federated.secagg.options import SecAggOptions, dp_clip_bound
from edgerun.federated.secagg.session import SecureRound
from edgerun.federated.secure_rounds import SecureRoundsMixin
from edgerun.federated.store import AlreadyEnrolled
from edgerun.federated.typing import EvaluateRes, FitRes
from edgerun.runtime.errors import EdgerunError
from edgerun.runtime.interpreter import Interpreter

log = logging.getLogger("edgerun.federated")

Arrays = dict[str, np.ndarray]
Evaluator = Callable[[Arrays], dict[str, float]]


@dataclass
class CoordinatorConfig:
    """Round settings. `report_goal`: fraction of the selected clients whose updates
    close a round early (stragglers past the deadline are ignored). What clients do
    in a round (epochs, batch size, learning rate, clipping) is the strategy's config."""

    rounds: int = 10
    round_timeout: float = 60.0
    report_goal: float = 1.0
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


@dataclass(frozen=True)
class Work:
    action: str  # "wait", "train" or "stop"
    round: int = 0
    model_version: int = 0
    config: dict[str, Any] = field(default_factory=dict)
    deadline: float = 0.0
    retry_after: float = 1.0


class Coordinator(SecureRoundsMixin):
    """State and handlers of one federated training run (see the module docstring)."""

    def __init__(self, model_path: str | Path, store: Any, strategy: Any, config: CoordinatorConfig,
                 key: KeyPair, evaluator: Evaluator | None = None,
                 on_round: Callable[[Any], None] | None = None) -> None:
        self.model_bytes = Path(model_path).read_bytes()
        self.store, self.strategy, self.config, self.key = store, strategy, config, key
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
        self.closing: int | None = None  # the round being aggregated
        self.evaluation: dict[str, Any] | None = None  # the open evaluation round, if any
        self.secure: SecureRound | None = None  # the open secure-aggregation round, if any
        self.accountant: PrivacyAccountant | None = None
        self.budget_exhausted = False
        self.upload_bytes = 0.0  # mean update payload per reporting client in the last round
        if config.secagg is not None and config.compression != "none":
            raise ValueError("compression applies to plain uploads; under secure aggregation use "
                             "SecAggOptions(bits=...) for reduced-bit fixed point")
        parse_compression(config.compression)
        if config.dp is not None:
            if config.dp.mode == "distributed" and config.secagg is None:
                raise ValueError("distributed DP needs secure aggregation: without it the coordinator sees each "
                                 "client's update with only 1/sqrt(n) of the noise (use mode='central' or turn "
                                 "secure aggregation on)")
            saved = store.get_state("privacy") or {}
            spent = saved.get("rounds", saved.get("sampling_probabilities", []))
            self.accountant = PrivacyAccountant(config.dp, spent)
        if config.dp is not None and config.secagg is not None:  # refuse a clip margin > 10 % of S now
            order = list(self.spec)
            cohort = max(2, int(getattr(strategy, "min_fit_clients", 2)))
            sample = config.secagg.round_config(0, cohort, [tuple(self.spec[n][1]) for n in order],
                                                config.dp.clip_norm)
            dp_clip_bound(SecAggParams.from_config(sample), config.dp.clip_norm)
        if config.secagg is not None and getattr(strategy, "needs_individual_updates", False):
            raise ValueError(f"{type(strategy).__name__} needs each client's update; it cannot run with secure "
                             "aggregation (turn it off to use it)")
        saved = store.get_state("strategy")
        if saved:
            strategy.load_state(_decode_state(saved))  # server-optimizer state survives restarts
        latest = store.latest_model()
        if latest is None:
            self.version, self.parameters = 0, interpreter.run({}, signature="save")
            store.publish_model(0, encode_arrays(self.parameters), {})
        else:
            self.version = latest[0]
            self.parameters = decode_arrays(latest[1], self.spec)

    # ------------------------------------------------------------ enrolment
    def enrol(self, client_id: str, public_key: bytes, token: str, info: dict[str, str]) -> bytes:
        """Register a device key; returns the coordinator's public key."""
        allowed = public_key in self.config.allowed_keys
        if not allowed and (self.config.enrol_token is None or token != self.config.enrol_token):
            raise Rejected("permission_denied", f"client {client_id!r}: bad enrolment token and key not allowed")
        try:
            self.store.enrol(client_id, public_key, dict(info))
        except AlreadyEnrolled:
            raise Rejected("already_exists", f"client {client_id!r} or its key is already enrolled") from None
        log.info("enrolled client %s", client_id)
        return self.key.public_bytes

    def public_key_of(self, client_id: str) -> bytes | None:
        """The enrolled key of a client (cached: keys never change once enrolled)."""
        key = self._keys.get(client_id)
        if key is None:
            record = self.store.client(client_id)
            if record is not None:
                key = self._keys[client_id] = record.public_key
        return key

    # ----------------------------------------------------------------- work
    def work_for(self, client_id: str, now: float | None = None) -> Work:
        now = time.time() if now is None else now
        with self.lock:
            self.last_seen[client_id] = now
            if self.finished:
                self.stopped.add(client_id)
                self.lock.notify_all()
                return Work("stop")
            evaluation = self.evaluation
            if evaluation and client_id in evaluation["selected"] and client_id not in evaluation["results"]:
                return Work("evaluate", evaluation["round"], evaluation["version"], {}, evaluation["deadline"])
            current = self.store.current_round()
            secure = self.secure
            if (current is None or client_id not in current.selected or now > current.deadline
                    or self._reported(current.round, client_id)
                    or (secure is not None and client_id in secure.server.roster)):
                # Not needed in the open round: nothing to do before it ends, so poll less.
                busy = current is not None and client_id not in current.selected
                return Work("wait", retry_after=0.5 if busy else 0.2)
            return Work("train", current.round, current.model_version, dict(current.config), current.deadline)

    def _reported(self, round_number: int, client_id: str) -> bool:
        return client_id in self.store.reported(round_number)

    def payload(self, kind: str, version: int) -> tuple[bytes, bytes, bytes]:
        """(payload, sha256, coordinator signature) of the model file or a parameter version."""
        if kind == "model":
            blob = self.model_bytes
        else:
            blob = self.store.model(version)
            if blob is None:
                raise Rejected("not_found", f"model version {version} does not exist")
        digest = sha256(blob)
        return blob, digest, self.key.sign(payload_message(kind, version, digest))

    # --------------------------------------------------------------- upload
    def submit(self, client_id: str, round_number: int, blob: bytes, num_examples: int,
               metrics: dict[str, float]) -> None:
        """Validate and durably record one client's delta; Rejected says why not."""
        if num_examples <= 0:
            raise Rejected("invalid_argument", f"client {client_id!r}: num_examples must be positive")
        current = self.store.current_round()
        method = current.config.get("compression", "none") if current is not None else "none"
        try:
            decompress(blob, self.spec, method)
        except PayloadError as exc:
            log.warning("rejected update from %s for round %d: %s", client_id, round_number, exc)
            raise Rejected("invalid_argument", f"client {client_id!r}: {exc}") from None
        with self.lock:
            current = self.store.current_round()
            if (current is None or current.round != round_number or self.closing == round_number
                    or time.time() > current.deadline):
                raise Rejected("failed_precondition", f"round {round_number} is not open (or past its deadline)")
            if "secagg" in current.config:
                raise Rejected("failed_precondition",
                               f"round {round_number} uses secure aggregation: only masked inputs are accepted")
            if not self.store.record_update(round_number, client_id, blob, num_examples, dict(metrics)):
                raise Rejected("failed_precondition",
                               f"client {client_id!r} is not selected for round {round_number} or already reported")
            self.lock.notify_all()
        log.info("round %d: update from %s (%d examples)", round_number, client_id, num_examples)

    def wait_until_clients_stopped(self, timeout: float) -> bool:
        """After `run`: keep answering until every enrolled client was told to stop
        (or `timeout` seconds passed); True if all were."""
        deadline = time.time() + timeout
        with self.lock:
            while time.time() < deadline:
                if {c.client_id for c in self.store.clients()} <= self.stopped:
                    return True
                self.lock.wait(0.1)
        return False

    def status(self) -> dict[str, Any]:
        """Rounds, clients and metrics for operators (JSON-able)."""
        with self.lock:
            current = self.store.current_round()
            return {
                "model_version": self.version,
                "finished": self.finished,
                "current_round": None if current is None else current.round,
                "clients": len(self.store.clients()),
                "available": len(self._available(time.time())),
                "history": [{"round": r.round, "status": r.status, "metrics": r.metrics}
                            for r in self.store.history()],
            }

    def submit_evaluation(self, client_id: str, round_number: int, result: EvaluateRes) -> None:
        """Record one client's evaluation of the global model; Rejected says why not."""
        with self.lock:
            evaluation = self.evaluation
            if evaluation is None or evaluation["round"] != round_number:
                raise Rejected("failed_precondition", f"no evaluation is open for round {round_number}")
            if client_id not in evaluation["selected"] or client_id in evaluation["results"]:
                raise Rejected("failed_precondition",
                               f"client {client_id!r} is not asked to evaluate round {round_number} or already did")
            evaluation["results"][client_id] = result
            self.lock.notify_all()

    def _announce(self, round_number: int) -> None:
        if self.on_round is not None:
            self.on_round(self.store.round(round_number))

    def _evaluate(self, round_number: int, stop: threading.Event) -> None:
        """Ask clients to evaluate the new global model on their held-out data; store the
        example-weighted result as state "evaluation/<round>"."""
        order = list(self.spec)
        with self.lock:
            try:
                selected, _ = self.strategy.configure_evaluate(
                    round_number, [self.parameters[n] for n in order], self._available(time.time()), self.rng)
            except EdgerunError as exc:
                log.warning("round %d: no evaluation: %s", round_number, exc)
                return
            if not selected:
                return
            deadline = time.time() + self.config.evaluation_timeout
            self.evaluation = {"round": round_number, "version": self.version, "selected": set(selected),
                               "results": {}, "deadline": deadline}
            while not stop.is_set() and time.time() < deadline and len(self.evaluation["results"]) < len(selected):
                self.lock.wait(0.05)
            results, self.evaluation = list(self.evaluation["results"].items()), None
        try:
            loss, metrics = self.strategy.aggregate_evaluate(round_number, results, len(selected) - len(results))
            summary = {"loss": loss, **metrics}
        except EdgerunError as exc:
            summary = {"failed": str(exc)}
        self.store.put_state(f"evaluation/{round_number}", json.loads(json.dumps(summary, default=float)))
        log.info("round %d evaluation: %s", round_number, summary)

    # --------------------------------------------------------------- rounds
    def run(self, stop: threading.Event | None = None) -> None:
        """Run rounds until `config.rounds` have finished (or `stop` is set)."""
        stop = stop or threading.Event()
        self._stop = stop
        while not stop.is_set():
            history = self.store.history()
            done = sum(1 for r in history if r.status == "aggregated")
            if done >= self.config.rounds or self.budget_exhausted:
                break
            current = self.store.current_round()
            if current is not None:
                self._finish(current.round, stop)  # resume a round a restart interrupted
            else:
                self._run_round(1 + max((r.round for r in history), default=0), stop)
        with self.lock:
            self.finished = not stop.is_set()
            self.lock.notify_all()

    def _available(self, now: float) -> list[str]:
        window = self.config.available_window
        return sorted(c for c, seen in self.last_seen.items() if now - seen <= window)

    def _run_round(self, round_number: int, stop: threading.Event) -> None:
        order = list(self.spec)
        deadline_for_clients = time.time() + self.config.wait_for_clients
        while not stop.is_set():
            with self.lock:
                available = self._available(time.time())
                try:
                    selected, fit_ins = self.strategy.configure_fit(
                        round_number, [self.parameters[n] for n in order], available, self.rng)
                    break
                except EdgerunError as exc:
                    if time.time() > deadline_for_clients:
                        log.warning("round %d: %s", round_number, exc)
                        deadline_for_clients = time.time() + self.config.wait_for_clients
                    self.lock.wait(0.1)
        else:
            return
        config = dict(fit_ins.config)
        if self.accountant is not None:
            population = max(len(available), len(selected))
            q = len(selected) / population
            if not self.accountant.allows(population, len(selected)):
                log.info("round %d not started: it would exceed the privacy budget (epsilon %.3f spent of %.3f)",
                         round_number, self.accountant.epsilon, self.accountant.options.epsilon_budget)
                self.budget_exhausted = True
                return
            dp = self.config.dp
            config["clip_norm"] = dp.clip_norm  # clients clip their deltas to S
            config["dp"] = {"noise_multiplier": dp.noise_multiplier, "clip_norm": dp.clip_norm, "mode": dp.mode,
                            "expected_clients": len(selected), "sampling_probability": q,
                            "available": population}
        if self.config.compression != "none":
            config["compression"] = self.config.compression
        deadline = time.time() + self.config.round_timeout
        options = self.config.secagg
        if options is not None:
            shapes = [tuple(self.spec[n][1]) for n in order]
            config["secagg"] = options.round_config(round_number, len(selected), shapes,
                                                    float(config.get("clip_norm") or 0.0))
            if "dp" in config:  # rounding must not push a clipped delta's norm past S
                config["clip_norm"] = dp_clip_bound(SecAggParams.from_config(config["secagg"]),
                                                    self.config.dp.clip_norm)
        with self.lock:
            self.store.open_round(round_number, self.version, list(selected), config, deadline)
            if options is not None:
                goal = max(1, math.ceil(self.config.report_goal * len(selected)))
                keys = {c: self.public_key_of(c) for c in selected}
                self.secure = SecureRound(SecAggParams.from_config(config["secagg"]), selected, keys, goal,
                                          deadline, options.stage_timeout)
        log.info("round %d: selected %d of %d clients", round_number, len(selected), len(available))
        self._finish(round_number, stop)

    def _finish(self, round_number: int, stop: threading.Event) -> None:
        """Wait for the report goal or the deadline, then aggregate (or fail) the round."""
        with self.lock:
            current = self.store.current_round()
        if "secagg" in current.config:
            self._finish_secure(current, stop)
            return
        with self.lock:
            goal = max(1, math.ceil(self.config.report_goal * len(current.selected)))
            while not stop.is_set() and time.time() < current.deadline:
                if len(self.store.reported(round_number)) >= goal:
                    break
                self.lock.wait(min(0.05, max(0.0, current.deadline - time.time())))
            if stop.is_set():
                return
            updates = self.store.updates(round_number)
            self.closing = round_number  # from now on, uploads for this round are refused
        try:
            self._aggregate(current, updates)
        finally:
            with self.lock:
                self.closing = None

    def _aggregate(self, current: Any, updates: list[Any]) -> None:
        order = list(self.spec)
        results = []
        for u in updates:
            delta = decompress(u.blob, self.spec, current.config.get("compression", "none"))
            results.append((u.client_id, FitRes([delta[n] for n in order], u.num_examples, dict(u.metrics))))
        failures = len(current.selected) - len(results)
        if updates:
            self.upload_bytes = sum(len(u.blob) for u in updates) / len(updates)
        if "dp" in current.config:
            # The coordinator has the updates now: charge the round whatever happens next, and
            # clip each decompressed delta to S itself (a client may not have, and
            # decompression may add norm), so the sensitivity the accountant assumes holds.
            epsilon = self._charge_privacy(current, len(results)) if results else self.accountant.epsilon
            bound = self.config.dp.clip_norm
            total = [np.zeros(self.spec[n][1], dtype=np.float64) for n in order]
            for _, res in results:
                clipped = clip_to_norm([d.astype(np.float64) for d in res.delta], bound)
                total = [t + d for t, d in zip(total, clipped, strict=True)]
            self._conclude(current, len(results),
                           lambda: self._private_sum(current, total, len(results), failures, epsilon))
            return
        self._conclude(current, len(results), lambda: self.strategy.aggregate_fit(
            current.round, [self.parameters[n] for n in order], results, failures))

    def _conclude(self, current: Any, reports: int, aggregate: Callable[[], tuple[list, dict]]) -> None:
        """Publish the aggregate as the next model version, or fail the round if it raises."""
        order = list(self.spec)
        try:
            new, metrics = aggregate()
            if not all(np.isfinite(a).all() for a in new if a.dtype.kind == "f"):
                raise Rejected("invalid_argument", f"round {current.round}: the aggregate is not finite")
        except Exception as exc:  # noqa: BLE001 - any aggregation failure fails the round, keeps the model
            log.warning("round %d failed: %s", current.round, exc)
            self.store.fail_round(current.round, str(exc))
            self._announce(current.round)
            return
        parameters = dict(zip(order, new, strict=True))
        metrics = {**metrics, "reports": reports, "selected": len(current.selected),
                   "upload_bytes_per_client": self.upload_bytes}
        if self.evaluator is not None:
            metrics.update(self.evaluator(parameters))
        with self.lock:
            self.store.finish_round(current.round, self.version + 1, encode_arrays(parameters),
                                    json.loads(json.dumps(metrics, default=float)),
                                    state={"strategy": _encode_state(self.strategy.state())})
            self.version += 1
            self.parameters = parameters
        log.info("round %d aggregated: version %d, %s", current.round, self.version, metrics)
        self._announce(current.round)
        every = self.config.evaluate_every
        if every and current.round % every == 0:
            self._evaluate(current.round, self._stop)


def clip_to_norm(arrays: list[np.ndarray], bound: float) -> list[np.ndarray]:
    """`arrays` scaled down so that their global L2 norm is at most `bound` (unchanged if it is)."""
    norm = math.sqrt(sum(float(np.sum(np.square(a, dtype=np.float64))) for a in arrays))
    if not math.isfinite(norm):
        return [np.full_like(a, np.nan) for a in arrays]  # the round then fails as "not finite"
    return arrays if norm <= bound else [a * (bound / norm) for a in arrays]


def _encode_state(state: dict[str, Any]) -> dict[str, Any]:
    """Strategy state as JSON: array lists become base64 .npz, scalars stay as they are."""
    arrays = {f"{key}.{i}": a for key, value in state.items() if isinstance(value, list)
              for i, a in enumerate(value)}
    scalars = {key: value for key, value in state.items() if not isinstance(value, list)}
    lists = {key: len(value) for key, value in state.items() if isinstance(value, list)}
    return {"arrays": base64.b64encode(encode_arrays(arrays)).decode(), "lists": lists, "scalars": scalars}


def _decode_state(saved: dict[str, Any]) -> dict[str, Any]:
    blob = base64.b64decode(saved["arrays"])
    with np.load(io.BytesIO(blob), allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    state: dict[str, Any] = dict(saved["scalars"])
    for key, count in saved["lists"].items():
        state[key] = [arrays[f"{key}.{i}"] for i in range(count)]
    return state
