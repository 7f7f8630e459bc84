"""The abstract `Strategy`: one method per stage of a federated round (as Flower's).

A round is: `configure_fit` (pick clients, build their FitIns; under secure aggregation
`configure_secure_fit` then sees the ring) -> clients train -> `begin_aggregation` (the
coordinator holds the results) -> `aggregate_fit` (or `aggregate_sum` under secure
aggregation) -> `configure_evaluate` -> clients evaluate -> `aggregate_evaluate`. The
coordinator passes plain client ids. Differential privacy wraps a strategy
(federated.strategies.dp) instead of being one.

Bad client results are dropped, never raised: `aggregate_fit` checks every FitRes
(delta count, shapes and dtypes equal to the global parameters, finite values,
num_examples > 0, one result per client), leaves the rejected ones out of the
aggregate, reports their count as metrics["rejected"] and their ids and reasons in
`last_rejected`. Only when too few usable results remain does the round fail, with
`RoundFailed`. A strategy that keeps server-optimizer state between rounds exposes it
through `state()` / `load_state()` so the coordinator can persist it.
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from edgerun.federated.aggregate import split_fit_results, weighted_metrics
from edgerun.federated.stages import Stage
from edgerun.federated.typing import Config, EvaluateIns, EvaluateRes, FitIns, FitRes, Metrics, NDArrays, Scalar
from edgerun.runtime.errors import EdgerunError

if TYPE_CHECKING:
    from edgerun.federated.secagg.messages import SecAggParams

log = logging.getLogger(__name__)

StrategyState = dict[str, NDArrays | Scalar]


class StrategyError(EdgerunError):
    """Base class of the errors a strategy raises."""


class NotEnoughClients(StrategyError):
    """Fewer clients are available than the strategy needs to start a round stage."""


class RoundFailed(StrategyError):
    """Too few usable client results to aggregate; the global model stays unchanged."""


class SumAggregationUnsupported(StrategyError, NotImplementedError):
    """The strategy needs each client's update (e.g. a median), not only their sum, so it
    cannot run under secure aggregation."""


@dataclass(kw_only=True)
class Strategy(ABC):
    """Client selection, round configuration and aggregation of a federated strategy.

    Selection: `fraction_fit` of the available clients (rounded down), at least
    `min_fit_clients`; no round starts with fewer than max(min_available_clients,
    min_fit_clients) available (`NotEnoughClients`). Evaluation likewise with
    `fraction_evaluate` / `min_evaluate_clients`; fraction_evaluate = 0 skips it.

    Aggregation needs at least `min_fit_results` usable results, and usable results must
    be at least `min_completed_fraction` of the clients that were asked (usable +
    rejected + failures); otherwise `RoundFailed`.

    The fit config sent to clients holds "round", "epochs", "batch_size", "lr" (left out
    when client_lr is None: clients then train with the learning rate stored in the model)
    and "clip_norm" (L2 bound on the client's delta, 0 = no clipping) plus what a subclass
    adds in `fit_config`. Arguments out of range raise ValueError at construction.
    """

    needs_individual_updates: ClassVar[bool] = False

    fraction_fit: float = 1.0
    fraction_evaluate: float = 1.0
    min_fit_clients: int = 2
    min_evaluate_clients: int = 2
    min_available_clients: int = 2
    min_fit_results: int = 1
    min_completed_fraction: float = 0.0
    local_epochs: int = 1
    batch_size: int = 32
    client_lr: float | None = 0.01  # None: the learning rate stored in the model
    clip_norm: float = 0.0
    last_rejected: dict[str, str] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("fraction_fit", "fraction_evaluate", "min_completed_fraction"):
            require_range(name, getattr(self, name), 0.0, 1.0)
        for name in ("min_fit_clients", "min_evaluate_clients", "min_available_clients",
                     "min_fit_results", "local_epochs", "batch_size"):
            require_int(name, getattr(self, name), 1)
        if self.client_lr is not None:
            require_range("client_lr", self.client_lr, 0.0, low_open=True)
        require_range("clip_norm", self.clip_norm, 0.0)

    # ------------------------------------------------------------ fit

    def fit_config(self, round: int) -> Config:
        """The config every selected client gets for `round`; subclasses add their keys."""
        config = {"round": round, "epochs": self.local_epochs, "batch_size": self.batch_size,
                  "lr": self.client_lr, "clip_norm": self.clip_norm}
        if self.client_lr is None:
            del config["lr"]
        return config

    def configure_fit(
        self, round: int, parameters: NDArrays, available: Sequence[str], rng: np.random.Generator
    ) -> tuple[list[str], FitIns]:
        """(ids of the clients to train in `round`, sorted; the FitIns they all get).

        The choice depends only on the set of `available` ids and the state of `rng`.
        NotEnoughClients when too few are available; ValueError on duplicate ids."""
        need = max(self.min_available_clients, self.min_fit_clients)
        chosen = _select(round, Stage.FIT, available, self.fraction_fit, self.min_fit_clients, need, rng)
        return chosen, FitIns(parameters=parameters, config=self.fit_config(round))

    def admit(self, round: int, available: int, selected: int) -> None:
        """Called after configure_fit, outside the coordinator's lock: raise to keep the round
        from starting (DpFixedClipping: PrivacyBudgetExhausted). Nothing to check here."""
        return None

    def configure_secure_fit(self, config: Config, params: SecAggParams) -> Config:
        """The fit config for clients that quantize their deltas to the ring of `params`
        (secure aggregation): `config` unchanged here (DpFixedClipping lowers clip_norm)."""
        return config

    def begin_aggregation(self, round: int, config: Config, count: int) -> None:
        """The coordinator holds the results of `count` clients of `round` (their updates or
        their sum), whatever happens next; `config` is the round's config as configure_fit
        made it (read back from the store after a restart). Called once, before
        `aggregate_fit` / `aggregate_sum`; nothing to do here (DpFixedClipping charges its
        privacy accountant)."""
        return None

    def aggregate_fit(
        self, round: int, parameters: NDArrays, results: Sequence[tuple[str, FitRes]], failures: int
    ) -> tuple[NDArrays, Metrics]:
        """(new global parameters in the dtypes of `parameters`, round metrics).

        Metrics: the example-weighted mean of the clients' own metrics, then "accepted",
        "rejected", "failures" and "num_examples" (these win over client keys of the same
        name). `failures` counts clients that returned nothing. RoundFailed when too few
        usable results remain; bad results are dropped as the module docstring says."""
        accepted, self.last_rejected = split_fit_results(parameters, results)
        for cid, reason in self.last_rejected.items():
            log.warning("round %d: rejected result of client %r: %s", round, cid, reason)
        self._check_enough(round, len(accepted), len(self.last_rejected), failures)
        new_parameters, metrics = self.aggregate_updates(round, parameters, accepted)
        client_metrics = weighted_metrics([(res.num_examples, res.metrics) for _, res in accepted])
        return new_parameters, {**client_metrics, **metrics, "accepted": float(len(accepted)),
                                "rejected": float(len(self.last_rejected)), "failures": float(failures),
                                "num_examples": float(sum(res.num_examples for _, res in accepted))}

    @abstractmethod
    def aggregate_updates(
        self, round: int, parameters: NDArrays, results: list[tuple[str, FitRes]]
    ) -> tuple[NDArrays, Metrics]:
        """New global parameters from validated results (at least `required_results()` of them)."""

    def aggregate_sum(
        self, round: int, parameters: NDArrays, weighted_delta_sum: NDArrays, total_examples: int,
        num_results: int, failures: int = 0,
    ) -> tuple[NDArrays, Metrics]:
        """New global parameters when only sum_i num_examples_i * delta_i is known (secure
        aggregation). Strategies that need individual updates raise SumAggregationUnsupported."""
        raise SumAggregationUnsupported(
            f"{type(self).__name__} needs each client's update and cannot aggregate a secure sum")

    def required_results(self) -> int:
        """The least number of usable results `aggregate_fit` aggregates."""
        return self.min_fit_results

    def _check_enough(self, round: int, usable: int, rejected: int, failures: int) -> None:
        """RoundFailed unless `usable` is at least required_results() and min_completed_fraction
        of the clients asked (usable + rejected + failures)."""
        asked = usable + rejected + failures
        counts = f"{usable} usable of {asked} asked ({rejected} rejected, {failures} failed)"
        if usable < self.required_results():
            raise RoundFailed(f"round {round}: {counts}, need at least {self.required_results()} usable")
        if usable < self.min_completed_fraction * asked:
            raise RoundFailed(f"round {round}: {counts}, below min_completed_fraction="
                              f"{self.min_completed_fraction}")

    # ------------------------------------------------------------ evaluate

    def evaluate_config(self, round: int) -> Config:
        """The config every client selected for evaluation gets."""
        return {"round": round, "batch_size": self.batch_size}

    def configure_evaluate(
        self, round: int, parameters: NDArrays, available: Sequence[str], rng: np.random.Generator
    ) -> tuple[list[str], EvaluateIns]:
        """(ids of the clients to evaluate `parameters`, sorted; their EvaluateIns).

        No clients when fraction_evaluate is 0. NotEnoughClients as in configure_fit."""
        ins = EvaluateIns(parameters=parameters, config=self.evaluate_config(round))
        if self.fraction_evaluate == 0.0:
            return [], ins
        need = max(self.min_available_clients, self.min_evaluate_clients)
        chosen = _select(round, Stage.EVALUATE, available, self.fraction_evaluate,
                         self.min_evaluate_clients, need, rng)
        return chosen, ins

    def aggregate_evaluate(
        self, round: int, results: Sequence[tuple[str, EvaluateRes]], failures: int = 0
    ) -> tuple[float, Metrics]:
        """(example-weighted mean loss, metrics): the example-weighted mean of each client
        metric, "accepted", "rejected", "failures" and "num_examples".

        A result with a non-finite loss or num_examples not an integer > 0 is dropped and
        counted; RoundFailed when no usable result remains."""
        usable = [(cid, res) for cid, res in results if _evaluate_ok(res)]
        rejected = len(results) - len(usable)
        if not usable:
            raise RoundFailed(f"round {round}: no usable evaluation results "
                              f"({rejected} rejected, {failures} failed)")
        total = sum(res.num_examples for _, res in usable)
        loss = sum(res.num_examples * float(res.loss) for _, res in usable) / total
        metrics = weighted_metrics([(res.num_examples, res.metrics) for _, res in usable])
        return loss, {**metrics, "accepted": float(len(usable)), "rejected": float(rejected),
                      "failures": float(failures), "num_examples": float(total)}

    # ------------------------------------------------------------ state

    def state(self) -> StrategyState:
        """Server-side state carried between rounds (copies); empty for stateless strategies."""
        return {}

    def load_state(self, state: StrategyState) -> None:
        """Restore what `state()` returned. ValueError on keys this strategy does not have."""
        require_keys(self, state, set())


# ---------------------------------------------------------------- helpers


def _select(
    round: int, stage: Stage, available: Sequence[str], fraction: float, minimum: int, need: int,
    rng: np.random.Generator,
) -> list[str]:
    """max(floor(fraction * n), minimum) ids drawn without replacement from sorted(available)."""
    pool = sorted(available)
    if len(set(pool)) != len(pool):
        raise ValueError(f"round {round}: duplicate client ids in available: {pool}")
    if len(pool) < need:
        raise NotEnoughClients(f"round {round}: {len(pool)} clients available for {stage}, "
                               f"need at least {need}")
    count = min(len(pool), max(int(fraction * len(pool)), minimum))
    picked = rng.choice(len(pool), size=count, replace=False)
    return sorted(pool[i] for i in picked)


def _evaluate_ok(res: EvaluateRes) -> bool:
    n = res.num_examples
    n_ok = not isinstance(n, bool) and isinstance(n, Integral) and n > 0
    loss_ok = not isinstance(res.loss, bool) and isinstance(res.loss, Real) and math.isfinite(res.loss)
    return n_ok and loss_ok


def require_range(
    name: str, value: float, low: float, high: float = math.inf, *, low_open: bool = False,
    high_open: bool = False,
) -> None:
    """ValueError unless `value` is a finite real number in [low, high] (ends excluded when *_open)."""
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not (low < value or (value == low and not low_open)) \
            or not (value < high or (value == high and not high_open)):
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be a finite number in {interval}, got {value!r}")


def require_int(name: str, value: int, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def require_keys(strategy: Strategy, state: StrategyState, keys: set[str]) -> None:
    if set(state) != keys:
        raise ValueError(f"{type(strategy).__name__}.load_state: expected keys {sorted(keys)}, "
                         f"got {sorted(state)}")


def copy_arrays(name: str, value: object) -> NDArrays:
    """Copies, in float64, of a state value's arrays; ValueError unless it is a list of ndarrays.
    Shapes are checked against the parameters when the state is next used."""
    if not isinstance(value, (list, tuple)) or not all(isinstance(a, np.ndarray) for a in value):
        raise ValueError(f"state {name!r}: expected a list of ndarrays, got {type(value).__name__}")
    return [np.array(a, dtype=np.float64) for a in value]
