"""Differential privacy for federated rounds: Gaussian noise on clipped client updates and
(epsilon, delta) accounting with Google's `dp-accounting` (RDP accountant).

DP-FedAvg (McMahan et al. 2018): every client clips its delta to L2 norm S (clip_norm);
the sum of the deltas gets Gaussian noise of standard deviation z * S (z: noise_multiplier),
added by the coordinator ("central") or as n independent shares of variance (z S)^2 / n
added by the n expected clients before masking ("distributed"); the new model is the
global model plus the noisy sum over the expected number of clients. Each round is the
sampled Gaussian mechanism PoissonSampled(q, Gaussian(z)) with q = clients selected /
clients available, which is exactly the event handed to the accountant.
"""

from __future__ import annotations

import copy
import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

import dp_accounting
import numpy as np

MODES = ("central", "distributed")


@dataclass(frozen=True)
class DpOptions:
    """noise_multiplier z > 0; clip_norm S > 0; delta: the delta of the reported epsilon;
    epsilon_budget: training stops before a round that would exceed it (inf: never)."""

    noise_multiplier: float
    clip_norm: float
    delta: float = 1e-5
    epsilon_budget: float = math.inf
    mode: str = "central"

    def __post_init__(self) -> None:
        if not (self.noise_multiplier > 0 and self.clip_norm > 0):
            raise ValueError(f"noise_multiplier and clip_norm must be > 0, got {self.noise_multiplier}, "
                             f"{self.clip_norm}")
        if not 0 < self.delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {self.delta}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")

    @property
    def stddev(self) -> float:
        """Standard deviation of the noise on the sum of clipped deltas: z * S."""
        return self.noise_multiplier * self.clip_norm

    def event(self, sampling_probability: float) -> dp_accounting.DpEvent:
        """The DP event of one round with this sampling probability."""
        if not 0 < sampling_probability <= 1:
            raise ValueError(f"sampling probability must be in (0, 1], got {sampling_probability}")
        return dp_accounting.PoissonSampledDpEvent(sampling_probability,
                                                   dp_accounting.GaussianDpEvent(self.noise_multiplier))


def noise_rng() -> np.random.Generator:
    """A generator seeded from the OS's CSPRNG (fresh every call)."""
    return np.random.default_rng(secrets.randbits(128))


def gaussian_noise(shapes: Sequence[tuple[int, ...]], stddev: float,
                   rng: np.random.Generator | None = None) -> list[np.ndarray]:
    """Independent N(0, stddev^2) float64 arrays of `shapes`."""
    rng = rng or noise_rng()
    return [rng.normal(0.0, stddev, size=shape) for shape in shapes]


def client_stddev(options: DpOptions, expected_clients: int) -> float:
    """Distributed mode: each of `expected_clients` adds noise of this deviation, so their sum
    has deviation z * S when all report (less when some drop out: noted in the round metrics)."""
    return options.stddev / math.sqrt(expected_clients)


class PrivacyAccountant:
    """Composes one sampled-Gaussian event per finished round (RDP accountant) and reports
    epsilon at the configured delta."""

    def __init__(self, options: DpOptions, sampling_probabilities: Sequence[float] = ()) -> None:
        self.options = options
        self.history: list[float] = []
        self._accountant = dp_accounting.rdp.RdpAccountant()
        for q in sampling_probabilities:
            self.record(q)

    @property
    def epsilon(self) -> float:
        """Epsilon spent by the rounds recorded so far (0 before any)."""
        return float(self._accountant.get_epsilon(self.options.delta)) if self.history else 0.0

    def allows(self, sampling_probability: float) -> bool:
        """Whether one more round at this sampling probability stays within the budget."""
        trial = copy.deepcopy(self._accountant)
        trial.compose(self.options.event(sampling_probability))
        return float(trial.get_epsilon(self.options.delta)) <= self.options.epsilon_budget

    def record(self, sampling_probability: float) -> float:
        """Count one round; returns the epsilon spent so far."""
        self._accountant.compose(self.options.event(sampling_probability))
        self.history.append(float(sampling_probability))
        return self.epsilon
