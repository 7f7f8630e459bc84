"""Coordinator-side settings of secure aggregation and the per-round parameters made from them."""

from __future__ import annotations

import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from edgerun.federated.secagg.errors import ConfigurationError
from edgerun.federated.secagg.messages import SecAggParams
from edgerun.federated.secagg.quantize import plan
from edgerun.federated.secagg.update import vector_length


@dataclass(frozen=True)
class SecAggOptions:
    """bits: ring Z_{2^bits} (32: no upload expansion; fewer: smaller uploads, coarser steps).
    clip_range: per-value bound R of the quantized weighted delta (None: the strategy's
    clip_norm when set, else 1.0). neighbours: k of SecAgg+; cohorts of at most
    complete_below clients use the complete graph. threshold_fraction: shares needed of a
    client's degree + 1 holders. max_weight: example count that gets weight 1 (clients with
    more are capped). stage_timeout: seconds per stage after the first.

    max_cohort: the most clients in one instance of the protocol (hierarchical secure
    aggregation, federated.secagg.cohorts): a round that selects more is split into
    ceil(n / max_cohort) cohorts of near-equal size, each unmasked on its own and their
    ring sums added; None: one cohort whatever the round's size. A client's cost grows with
    its cohort (it downloads and verifies every cohort member's keys and survivor-list
    signature): at 1,000 clients per round, 0.07 CPU s and 67 KB received per client in
    cohorts of 200 against 0.32 s and 318 KB flat (benchmarks/bench_secagg_cohorts.py), and
    fixed however large the round grows. Cohorts of 100 would save 0.035 s and 32 KB more but
    halve the clients each separately unmasked cohort sum mixes (at least 100 at 200), and
    below complete_below the complete graph makes a cohort dearer again. ConfigurationError
    below 2 * min_clients (a split cohort could then hold fewer than min_clients)."""

    bits: int = 32
    clip_range: float | None = None
    neighbours: int = 20
    complete_below: int = 64
    threshold_fraction: float = 0.5
    max_weight: int = 1000
    stage_timeout: float = 10.0
    min_clients: int = 2
    max_cohort: int | None = 200

    def __post_init__(self) -> None:
        if self.max_weight < 1:
            raise ConfigurationError(f"max_weight must be >= 1, got {self.max_weight}")
        if self.stage_timeout <= 0:
            raise ConfigurationError(f"stage_timeout must be > 0, got {self.stage_timeout}")
        if self.max_cohort is not None and (isinstance(self.max_cohort, bool) or not isinstance(self.max_cohort, int)
                                            or self.max_cohort < 2 * self.min_clients):
            raise ConfigurationError(f"max_cohort must be None or an integer >= 2 * min_clients = "
                                     f"{2 * self.min_clients}, got {self.max_cohort!r}")

    def round_config(self, round_number: int, cohort: int, shapes: Sequence[tuple[int, ...]],
                     clip_norm: float, planned_for: int | None = None) -> dict[str, Any]:
        """The "secagg" entry of a round's config: SecAggParams for a cohort of `cohort` clients
        (its own graph seed, drawn with `secrets`) plus max_weight and stage_timeout. The
        quantization holds the sum of `planned_for` clients (default `cohort`; a split round's
        cohorts all use the whole round's count, so that their ring sums add without wrapping).
        ConfigurationError when that sum could wrap."""
        clip = self.clip_range if self.clip_range else (clip_norm if clip_norm > 0 else 1.0)
        planned = max(cohort if planned_for is None else planned_for, self.min_clients)
        params = SecAggParams(round_number, plan(self.bits, clip, planned),
                              vector_length(shapes), secrets.token_bytes(32), self.neighbours,
                              self.complete_below, self.threshold_fraction, self.min_clients,
                              max(cohort, self.min_clients))
        return {**params.to_config(), "max_weight": self.max_weight, "stage_timeout": self.stage_timeout}


def client_weight(num_examples: int, max_weight: int) -> float:
    """A client's weight in [0, 1]: its example count over max_weight, capped at 1."""
    return min(num_examples, max_weight) / max_weight


def dp_clip_bound(params: SecAggParams, clip_norm: float, max_margin: float = 0.1) -> float:
    """The L2 bound DP clients clip to before quantizing: S - sqrt(d) * step / 2, so that
    rounding each of the d values (by at most step / 2) cannot take the norm past S.
    ConfigurationError when that margin is more than `max_margin` of S (too coarse a ring
    for this model and cohort: use more bits)."""
    d = params.length - 1  # the last element is the weight
    margin = math.sqrt(d) * params.quantization.step / 2
    if margin > max_margin * clip_norm:
        raise ConfigurationError(f"quantization to {params.quantization.bits} bits for {params.cohort or 'this'} "
                                 f"clients moves a delta of {d} values by up to {margin:.4g} in L2 norm, more than "
                                 f"{max_margin:.0%} of clip_norm {clip_norm}: use more bits or a smaller cohort")
    return clip_norm - margin
