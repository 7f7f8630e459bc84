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
    more are capped). stage_timeout: seconds per stage after the first."""

    bits: int = 32
    clip_range: float | None = None
    neighbours: int = 20
    complete_below: int = 64
    threshold_fraction: float = 0.5
    max_weight: int = 1000
    stage_timeout: float = 10.0
    min_clients: int = 2

    def __post_init__(self) -> None:
        if self.max_weight < 1:
            raise ConfigurationError(f"max_weight must be >= 1, got {self.max_weight}")
        if self.stage_timeout <= 0:
            raise ConfigurationError(f"stage_timeout must be > 0, got {self.stage_timeout}")

    def round_config(self, round_number: int, cohort: int, shapes: Sequence[tuple[int, ...]],
                     clip_norm: float) -> dict[str, Any]:
        """The "secagg" entry of a round's config: SecAggParams for a cohort of `cohort` clients
        plus max_weight. ConfigurationError when the sum of `cohort` clients could wrap."""
        clip = self.clip_range if self.clip_range else (clip_norm if clip_norm > 0 else 1.0)
        params = SecAggParams(round_number, plan(self.bits, clip, max(cohort, self.min_clients)),
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
