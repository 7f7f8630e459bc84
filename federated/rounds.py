"""A federated round as a workflow: an ordered tuple of named steps over a `RoundState`
(Flower's workflow shape).

    PLAIN_ROUND   select -> fit -> aggregate -> evaluate
    SECURE_ROUND  select -> advertise -> share -> masked -> consistency -> unmask -> aggregate -> evaluate

(the protocol stages in the order of federated.stages.SECAGG; a round of more than
SecAggOptions.max_cohort clients runs them in cohorts, federated.secagg.cohorts). A step is
`run(coordinator, state, stop) -> bool`; False ends the round there: it failed (and is
recorded as failed), the privacy budget is spent, or the coordinator is stopping (the
round stays open).

One bad client. Plain rounds: the coordinator clips every decoded update to
`max_update_norm` (L2) and weighs it by min(num_examples, max_examples), so one client
moves the global model by at most max_update_norm (its share of the weights times that,
for FedAvg) whatever it sends; the round metrics count "clipped" and "examples_capped"
updates and give the median update norm. An aggregate that is not finite fails only that
round (the model is kept). Secure rounds: the coordinator sees only the sum, so it cannot
clip or weigh one update. Clients are told to clip to max_update_norm (the round config's
clip_norm) and weights are capped in (0, 1] by the ring's max_weight; the coordinator
checks that the norm of the decoded sum S = sum_i w_i delta_i is at most W * bound (W =
sum_i w_i <= n survivors), plus the rounding of the ring and, under distributed DP, the
clients' noise. A sum over that bound fails the round. What this verifies: the sum is one
that clipped clients could have produced, so the averaged update S / W stays within about
the bound, as in a plain round. What it cannot: which client did not clip, nor a cheater
whose excess fits under the bound; that client cannot make the step larger but can choose
its direction (cancel the honest part of the sum and put its own in its place), where a
plain round limits its pull to its share of the weights.

The durable transitions go through the store (open, record an update,
finish or fail), so a coordinator restarted mid-round resumes a stored round from the step
after select; a secure round then fails, as its protocol state lived in memory.
Handlers read the state of the round in progress (`Coordinator.round_state`) under the
coordinator's lock.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from edgerun.federated.aggregate import clip_by_global_norm
from edgerun.federated.codec import encode_arrays, encode_state
from edgerun.federated.compression import decompress
from edgerun.federated.export import write_global_model
from edgerun.federated.secagg.cohorts import CohortedRound, SecureProtocol, split_cohorts
from edgerun.federated.secagg.errors import SecAggError
from edgerun.federated.secagg.messages import SecAggParams
from edgerun.federated.secagg.session import SecureRound
from edgerun.federated.secagg.update import decode_sum
from edgerun.federated.stages import SECAGG, Stage
from edgerun.federated.store import RoundRecord, UpdateRecord
from edgerun.federated.strategies.base import RoundFailed
from edgerun.federated.strategies.dp import PrivacyBudgetExhausted
from edgerun.federated.typing import Config, EvaluateRes, FitRes, Metrics, NDArrays, Scalar
from edgerun.runtime.errors import EdgerunError

if TYPE_CHECKING:
    from edgerun.federated.coordinator import Coordinator

log = logging.getLogger("edgerun.federated")


@dataclass
class Evaluation:
    """An open evaluation of the global model `version` by the `selected` clients."""

    round: int
    version: int
    selected: set[str]
    deadline: float
    results: dict[str, EvaluateRes] = field(default_factory=dict)


@dataclass
class RoundState:
    """What a round in progress holds. `record` is the round as stored (set once it is
    open); the rest lives in memory and is rebuilt, or lost, by a restart."""

    number: int
    record: RoundRecord | None = None
    stage: Stage = Stage.SELECT
    secure: SecureProtocol | None = None  # the secure-aggregation protocol (one or more cohorts), until it ends
    closing: bool = False  # the round's uploads are refused from now on
    updates: list[UpdateRecord] = field(default_factory=list)  # plain rounds: the recorded deltas
    total: np.ndarray | None = None  # secure rounds: the unmasked ring sum ...
    survivors: list[str] = field(default_factory=list)  # ... of these clients' inputs
    protocol_metrics: Metrics = field(default_factory=dict)  # secure rounds: cohorts run and dropped
    upload_bytes: float = 0.0  # mean update payload per reporting client
    evaluation: Evaluation | None = None
    withdrawn: set[str] = field(default_factory=set)  # selected clients known to have left the round

    @classmethod
    def resumed(cls, record: RoundRecord) -> RoundState:
        """The state of a stored open round (after a restart)."""
        return cls(record.round, record)


Run = Callable[["Coordinator", RoundState, threading.Event], bool]


class Step(NamedTuple):
    stage: Stage
    run: Run


Workflow = tuple[Step, ...]


def run_round(c: Coordinator, workflow: Workflow, state: RoundState, stop: threading.Event) -> None:
    """Run `workflow`'s steps over `state` until one returns False; a stored round (its
    record set) resumes after select."""
    steps = workflow if state.record is None else tuple(s for s in workflow if s.stage is not Stage.SELECT)
    with c.lock:
        c.round_state = state
    try:
        for step in steps:
            state.stage = step.stage
            if not step.run(c, state, stop):
                return
    finally:
        with c.lock:
            c.round_state = None


def workflow_for(config: Config) -> Workflow:
    """The workflow of a stored round, by its config."""
    return SECURE_ROUND if "secagg" in config else PLAIN_ROUND


# ---------------------------------------------------------------- select


def _configure(c: Coordinator, state: RoundState, stop: threading.Event) -> tuple[list[str], int, Config] | None:
    """Wait until the strategy can select from the available clients; (selected, how many
    were available, fit config). None when stopping or the privacy budget is spent."""
    patience = time.time() + c.config.wait_for_clients
    while not stop.is_set():
        with c.lock:
            available = c.available(time.time())
            try:
                selected, fit_ins = c.strategy.configure_fit(state.number, c.parameter_list(), available, c.rng)
                break
            except EdgerunError as exc:
                if time.time() > patience:
                    log.warning("round %d: %s", state.number, exc)
                    patience = time.time() + c.config.wait_for_clients
                c.lock.wait(0.1)
    else:
        return None
    try:  # outside the lock: the privacy accountant's arithmetic must not stall request handlers
        c.strategy.admit(state.number, len(available), len(selected))
    except PrivacyBudgetExhausted as exc:
        log.info("%s", exc)
        with c.lock:
            c.budget_exhausted = True
        return None
    config = dict(fit_ins.config)
    config["reports_needed"] = _goal(c, len(selected))
    return _over_select(c, selected, available), len(available), config


def _over_select(c: Coordinator, selected: list[str], available: list[str]) -> list[str]:
    """`selected` plus ceil(over_selection x its size) more of the other available clients
    (as many as there are), drawn with the coordinator's RNG: some selected devices always
    drop out, and the round closes once the target number reported. Not under
    differential privacy, whose accounting assumes the cohort the strategy drew."""
    extra = math.ceil(c.config.over_selection * len(selected))
    if c.config.dp is not None or extra <= 0:
        return selected
    chosen = set(selected)
    others = [cid for cid in available if cid not in chosen]
    if not others:
        return selected
    picked = c.rng.choice(len(others), size=min(extra, len(others)), replace=False)
    return [*selected, *(others[i] for i in sorted(picked))]


def _open(c: Coordinator, state: RoundState, selected: list[str], config: Config, deadline: float) -> None:
    """Open the round durably (call with the lock held) and wake the devices waiting for work."""
    c.store.open_round(state.number, c.version, list(selected), config, deadline)
    state.record = c.store.current_round()
    c.lock.notify_all()


def _bound_clients(c: Coordinator, config: Config) -> None:
    """Tell clients to clip their deltas to the coordinator's update bound (the lower of it
    and the strategy's clip_norm): honest updates then pass the server-side bound as they are."""
    bound = c.config.max_update_norm
    if bound is not None:
        own = float(config.get("clip_norm") or 0.0)
        config["clip_norm"] = min(own, bound) if own > 0 else bound


def _goal(c: Coordinator, target: int) -> int:
    """Reports (or advertisements) that close a round early: report_goal of the target."""
    return max(1, math.ceil(c.config.report_goal * target))


def reports_needed(record: RoundRecord) -> int:
    """The reports that close a stored round early (rounds stored before over-selection: all)."""
    return int(record.config.get("reports_needed", len(record.selected)))


def select_plain(c: Coordinator, state: RoundState, stop: threading.Event) -> bool:
    chosen = _configure(c, state, stop)
    if chosen is None:
        return False
    selected, available, config = chosen
    if c.config.compression != "none":
        config["compression"] = c.config.compression
    _bound_clients(c, config)
    with c.lock:
        _open(c, state, selected, config, time.time() + c.config.round_timeout)
    log.info("round %d: selected %d of %d clients", state.number, len(selected), available)
    return True


def select_secure(c: Coordinator, state: RoundState, stop: threading.Event) -> bool:
    """As select_plain, plus the round's secure-aggregation parameters, and the protocol
    opened with the round (handlers never see one without the other). A round of more than
    SecAggOptions.max_cohort clients runs as cohorts (federated.secagg.cohorts): the stored
    "secagg" entry is then the whole round's (its quantization is every cohort's, "cohorts"
    says how many) and each client gets its cohort's through Coordinator.round_config_for.
    ValueError for a split round under distributed DP (see `_cohorts`)."""
    chosen = _configure(c, state, stop)
    if chosen is None:
        return False
    selected, available, config = chosen
    deadline = time.time() + c.config.round_timeout
    options = c.config.secagg
    clip = float(config.get("clip_norm") or 0.0)
    cohorts = _cohorts(c, state.number, selected, config)
    config["secagg"] = options.round_config(state.number, len(selected), c.shapes, clip)
    if len(cohorts) > 1:
        config["secagg"]["cohorts"] = len(cohorts)
    params = SecAggParams.from_config(config["secagg"])
    config = c.strategy.configure_secure_fit(config, params)
    _bound_clients(c, config)
    with c.lock:
        _open(c, state, selected, config, deadline)
        keys = {cid: c.public_key_of(cid) for cid in selected}
        goal = reports_needed(state.record)
        if len(cohorts) == 1:
            state.secure = SecureRound(params, selected, keys, goal, deadline, options.stage_timeout)
        else:
            every = [SecAggParams.from_config(options.round_config(state.number, len(members), c.shapes, clip,
                                                                   planned_for=len(selected)))
                     for members in cohorts]
            state.secure = CohortedRound.open(every, cohorts, keys, goal, deadline, options.stage_timeout)
    log.info("round %d: selected %d of %d clients%s", state.number, len(selected), available,
             f" in {len(cohorts)} secure-aggregation cohorts" if len(cohorts) > 1 else "")
    return True


def _cohorts(c: Coordinator, round_number: int, selected: list[str], config: Config) -> list[list[str]]:
    """The selected clients in cohorts of at most SecAggOptions.max_cohort (one cohort draws
    nothing from the coordinator's RNG). ValueError when a distributed-DP round would be
    split: the coordinator unmasks each cohort's sum, which carries only its own clients'
    noise shares (noise multiplier z * sqrt(cohort / round) instead of z), so the guarantee
    the accountant charges would not hold against the coordinator."""
    cohorts = split_cohorts(selected, c.config.secagg.max_cohort, c.rng)
    dp = config.get("dp") or {}
    if len(cohorts) > 1 and dp.get("mode") == "distributed":
        raise ValueError(f"round {round_number}: {len(selected)} selected clients exceed the secure-aggregation "
                         f"max_cohort of {c.config.secagg.max_cohort}, and distributed DP cannot run in cohorts "
                         "(each cohort's sum would carry only its clients' share of the noise): use central DP, "
                         "or a max_cohort of at least the round's size (None: never split)")
    return cohorts


# ---------------------------------------------------------------- collect


def fit(c: Coordinator, state: RoundState, stop: threading.Event) -> bool:
    """Plain rounds: wait for the report goal, for every selected client that has not
    withdrawn, or for the deadline; then refuse further uploads."""
    record = state.record
    with c.lock:
        goal = reports_needed(record)
        while not stop.is_set() and time.time() < record.deadline:
            reported = set(c.store.reported(record.round))
            if len(reported) >= goal or len(reported | state.withdrawn) >= len(record.selected):
                break
            c.lock.wait(min(0.05, max(0.0, record.deadline - time.time())))
        if stop.is_set():
            return False
        # in client order, not arrival order: the same reports give the same sum, bit for bit
        state.updates = sorted(c.store.updates(record.round), key=lambda u: u.client_id)
        state.closing = True
    return True


def protocol_stage(stage: Stage, c: Coordinator, state: RoundState, stop: threading.Event) -> bool:
    """Secure rounds: run one protocol stage. An aborted protocol (too few clients, a refused
    reconstruction, a restart; of a split round: every cohort) fails the round and keeps the
    global model; a split round goes on without a cohort that aborted."""
    with c.lock:
        try:
            if state.secure is None:
                raise SecAggError(f"round {state.number}: secure-aggregation state was lost (restart)")
            total = state.secure.run_stage(stage, c.lock, stop)
        except SecAggError as exc:
            state.secure = None
            if not stop.is_set():
                _fail(c, state, str(exc))
            return False
        if total is not None:  # the protocol is over: the coordinator knows the sum
            secure, state.secure = state.secure, None
            state.total, state.survivors, state.protocol_metrics = total, secure.survivor_list(), secure.metrics()
            if isinstance(secure, CohortedRound):
                for index, reason in sorted(secure.failures.items()):
                    log.warning("round %d: secure-aggregation cohort %d of %d dropped: %s", state.number, index,
                                len(secure.cohorts), reason)
    return True


# ---------------------------------------------------------------- aggregate


def aggregate_updates(c: Coordinator, state: RoundState, stop: threading.Event) -> bool:
    """Plain rounds: the strategy aggregates the recorded deltas, each clipped to the update
    bound and weighed by its capped example count (see the module docstring)."""
    record = state.record
    bound, cap = c.config.max_update_norm, c.config.max_examples
    results, norms, capped = [], [], 0
    for u in state.updates:
        delta = decompress(u.blob, c.spec, record.config.get("compression", "none"))
        arrays, norm = clip_by_global_norm([delta[n] for n in c.spec], bound)
        norms.append(norm)
        capped += u.num_examples > cap
        results.append((u.client_id, FitRes(arrays, min(u.num_examples, cap), dict(u.metrics))))
    if state.updates:
        state.upload_bytes = sum(len(u.blob) for u in state.updates) / len(state.updates)
    clipped = sum(bound is not None and n > bound for n in norms)
    if clipped or capped:
        log.warning("round %d: %d of %d updates clipped to norm %s, %d example counts capped at %d",
                    record.round, clipped, len(norms), bound, capped, cap)
    bounds = {"clipped": clipped, "examples_capped": capped,
              "update_norm_median": float(np.median(norms)) if norms else 0.0}
    failures = _failures(record, len(results))
    c.strategy.begin_aggregation(record.round, record.config, len(results))
    return _publish(c, state, len(results), lambda: c.strategy.aggregate_fit(
        record.round, c.parameter_list(), results, failures), bounds)


def aggregate_sum(c: Coordinator, state: RoundState, stop: threading.Event) -> bool:
    """Secure rounds: decode the unmasked sum of weighted deltas (of a split round: the sum of
    its surviving cohorts' ring sums, decoded once, with the round's quantization and every
    survivor counted); the strategy aggregates it."""
    record, survivors = state.record, state.survivors
    params = SecAggParams.from_config(record.config["secagg"])
    state.upload_bytes = float(params.length * params.quantization.bytes_per_value)
    failures = _failures(record, len(survivors))
    c.strategy.begin_aggregation(record.round, record.config, len(survivors))
    try:
        sums, weight = decode_sum(state.total, params.quantization, len(survivors), c.shapes)
    except SecAggError as exc:  # e.g. a client's weight slot outside (0, 1]: it would rescale the average
        _fail(c, state, f"{type(exc).__name__}: {exc}")
        return False
    norm = math.sqrt(sum(float(np.sum(np.square(s))) for s in sums))
    limit = sum_norm_bound(record.config, params, weight, len(survivors))
    if not norm <= limit:
        _fail(c, state, f"the norm {norm:.6g} of the sum of {len(survivors)} weighted updates exceeds "
                        f"{limit:.6g}, the most clients that clipped to {record.config.get('clip_norm')} can send")
        return False
    scale = float(record.config["secagg"]["max_weight"])  # client weights are examples / max_weight
    return _publish(c, state, len(survivors), lambda: c.strategy.aggregate_sum(
        record.round, c.parameter_list(), [s * scale for s in sums], weight * scale, len(survivors), failures),
        {"sum_norm": norm, "sum_norm_bound": limit, **state.protocol_metrics})


def _failures(record: RoundRecord, results: int) -> int:
    """Clients the strategy counts as failed: the reports the round needed and did not get
    (over-selected clients beyond the goal were never needed, so they are not failures)."""
    return max(0, reports_needed(record) - results)


def sum_norm_bound(config: Config, params: SecAggParams, weight: float, survivors: int) -> float:
    """The largest L2 norm of S = sum_i w_i delta_i (dequantized, in units of max_weight) when
    every survivor clipped its delta to config["clip_norm"] and sent a weight w_i in (0, 1]:
    weight * clip_norm (weight = sum_i w_i <= survivors), plus the ring's rounding (half a
    step per value and client) and, under distributed DP, the clients' Gaussian noise
    (its norm exceeds sigma * (sqrt(d) + 10) with probability below 1e-21). inf when the
    round has no clip_norm: nothing can be checked."""
    clip = float(config.get("clip_norm") or 0.0)
    if clip <= 0:
        return math.inf
    d = params.length - 1
    limit = weight * clip + survivors * math.sqrt(d) * params.quantization.step / 2
    dp = config.get("dp")
    if dp and dp.get("mode") == "distributed":
        sigma = dp["noise_multiplier"] * dp["clip_norm"] * math.sqrt(max(1.0, survivors / dp["expected_clients"]))
        limit += sigma * (math.sqrt(d) + 10)
    return limit




def _publish(c: Coordinator, state: RoundState, reports: int,
             aggregate: Callable[[], tuple[NDArrays, Metrics]], bounds: Metrics | None = None) -> bool:
    """Publish the aggregate as the next model version, or fail the round if it raises or
    is not finite (the model is kept). `bounds`: the update bounds' figures, into the metrics."""
    record = state.record
    try:
        new, metrics = aggregate()
        if not all(np.isfinite(a).all() for a in new if a.dtype.kind == "f"):
            raise RoundFailed(f"round {record.round}: the aggregate is not finite")
    except Exception as exc:  # noqa: BLE001 - any aggregation failure fails the round, keeps the model
        _fail(c, state, str(exc))
        return False
    parameters = dict(zip(c.spec, new, strict=True))
    metrics = {**metrics, **(bounds or {}), "reports": reports, "selected": len(record.selected),
               "upload_bytes_per_client": state.upload_bytes}
    if c.evaluator is not None:
        metrics.update(c.evaluator(parameters))
    metrics = finite_metrics(f"round {record.round}", metrics)
    with c.lock:
        c.store.finish_round(record.round, c.version + 1, encode_arrays(parameters), metrics,
                             state={"strategy": encode_state(c.strategy.state())})
        c.version += 1
        c.parameters = parameters
    log.info("round %d aggregated: version %d, %s", record.round, c.version, metrics)
    _export(c, parameters)
    c.announce(record.round)
    return True


def _export(c: Coordinator, parameters: dict[str, np.ndarray]) -> None:
    """Write the new global model as a loadable .erm to config.export_path (when set). A
    failure to write is logged and leaves the round aggregated: the store has the model."""
    path = c.config.export_path
    if path is None:
        return
    try:
        write_global_model(c.model_bytes, parameters, path)
    except (OSError, EdgerunError) as exc:
        log.warning("global model version %d not written to %s: %s", c.version, path, exc)


def finite_metrics(where: str, metrics: dict[str, Scalar]) -> dict[str, Scalar]:
    """`metrics` as strict JSON values: numbers as Python floats (ints and strings kept), the
    non-finite ones dropped with a warning (client metrics are finite, but a weighted mean
    of large ones can overflow)."""
    out, dropped = {}, []
    for key, value in metrics.items():
        if isinstance(value, (str, bool)) or value is None:
            out[key] = value
        elif isinstance(value, (int, np.integer)):
            out[key] = int(value)
        elif math.isfinite(float(value)):
            out[key] = float(value)
        else:
            dropped.append(key)
    if dropped:
        log.warning("%s: non-finite metrics dropped: %s", where, ", ".join(sorted(dropped)))
    return out


def _fail(c: Coordinator, state: RoundState, reason: str) -> None:
    log.warning("round %d failed (%s): %s", state.number, state.stage, reason)
    c.store.fail_round(state.number, reason)
    c.announce(state.number)


# ---------------------------------------------------------------- evaluate


def evaluate(c: Coordinator, state: RoundState, stop: threading.Event) -> bool:
    """After every `evaluate_every`-th round: clients evaluate the new global model on their
    held-out data; the example-weighted result is stored as state "evaluation/<round>"."""
    every = c.config.evaluate_every
    if not every or state.number % every:
        return True
    with c.lock:
        try:
            selected, _ = c.strategy.configure_evaluate(state.number, c.parameter_list(), c.available(time.time()),
                                                        c.rng)
        except EdgerunError as exc:
            log.warning("round %d: no evaluation: %s", state.number, exc)
            return True
        if not selected:
            return True
        evaluation = state.evaluation = Evaluation(state.number, c.version, set(selected),
                                                   time.time() + c.config.evaluation_timeout)
        while not stop.is_set() and time.time() < evaluation.deadline and len(evaluation.results) < len(selected):
            c.lock.wait(0.05)
        results, state.evaluation = list(evaluation.results.items()), None
    try:
        loss, metrics = c.strategy.aggregate_evaluate(state.number, results, len(selected) - len(results))
        summary = finite_metrics(f"round {state.number} evaluation", {"loss": loss, **metrics})
    except EdgerunError as exc:
        summary = {"failed": str(exc)}
    c.store.put_state(f"evaluation/{state.number}", summary)
    log.info("round %d evaluation: %s", state.number, summary)
    return True


PLAIN_ROUND: Workflow = (
    Step(Stage.SELECT, select_plain),
    Step(Stage.FIT, fit),
    Step(Stage.AGGREGATE, aggregate_updates),
    Step(Stage.EVALUATE, evaluate),
)
SECURE_ROUND: Workflow = (
    Step(Stage.SELECT, select_secure),
    *(Step(stage, partial(protocol_stage, stage)) for stage in SECAGG),
    Step(Stage.AGGREGATE, aggregate_sum),
    Step(Stage.EVALUATE, evaluate),
)
