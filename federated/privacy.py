"""Differential privacy for federated rounds: Gaussian noise on clipped client updates and
(epsilon, delta) accounting with Google's `dp-accounting` (RDP accountant).

DP-FedAvg (McMahan et al. 2018): every client clips its delta to L2 norm S (clip_norm);
the sum of the deltas gets Gaussian noise of standard deviation z * S (z: noise_multiplier),
added by the coordinator ("central") or as n independent shares of variance (z S)^2 / n
added by the n expected clients before masking ("distributed", only under secure
aggregation); the new model is the global model plus the noisy sum over the expected number
of clients.

Accounting: the coordinator draws a cohort of fixed size m from the N available clients
without replacement (with a selection RNG seeded from `secrets`), so each round is
SampledWithoutReplacement(N, m, Gaussian(z_eff / 2)) under the replace-one relation of
dp-accounting (the only relation it supports for that sampling): replacing one client's
clipped delta by another moves the sum by up to 2 S, hence the / 2. z_eff is z, except in
distributed mode when only k of the n expected clients' noisy inputs are in the sum: their
noise has deviation z S sqrt(k / n), so z_eff = z sqrt(k / n). A round is charged as soon
as the coordinator has learnt the sum, even if aggregation then fails. `allows` checks the
budget at z before a round starts, so a round with dropouts in distributed mode can end a
run slightly above the budget (the reported epsilon is the true one).
"""

from __future__ import annotations

import copy
import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from edgerun.runtime.extras import MissingExtra, require

MODES = ("central", "distributed")

if TYPE_CHECKING:
    import dp_accounting


class PrivacyUnavailable(MissingExtra):
    """Differential privacy was asked for but dp-accounting (the `privacy` extra) is missing."""


def _accounting() -> Any:
    """The dp_accounting package, imported when differential privacy is on (the `privacy`
    extra). PrivacyUnavailable, one line naming the extra, when it is not installed."""
    return require("dp_accounting", "privacy", "differential privacy", "dp-accounting", PrivacyUnavailable)


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

    def event(self, available: int, selected: int, noise_multiplier: float | None = None) -> dp_accounting.DpEvent:
        """The DP event of one round: `selected` of `available` clients drawn without
        replacement, Gaussian noise of `noise_multiplier` (default z) times S on the sum, whose
        replace-one sensitivity is 2 S."""
        if not 0 < selected <= available:
            raise ValueError(f"need 0 < selected <= available, got {selected} of {available}")
        z = self.noise_multiplier if noise_multiplier is None else noise_multiplier
        if not z > 0:
            raise ValueError(f"noise multiplier must be > 0, got {z}")
        dp = _accounting()
        return dp.SampledWithoutReplacementDpEvent(int(available), int(selected), dp.GaussianDpEvent(z / 2))


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
    has deviation z * S when all report (z * S * sqrt(k / n) when k of n do: see
    `effective_multiplier`)."""
    return options.stddev / math.sqrt(expected_clients)


def effective_multiplier(options: DpOptions, mode: str, expected_clients: int, counted: int) -> float:
    """The noise multiplier of a round's sum: z in central mode; z * sqrt(counted / expected)
    in distributed mode, where only the `counted` clients' noise shares are in the sum."""
    if mode == "distributed":
        return options.noise_multiplier * math.sqrt(min(counted, expected_clients) / expected_clients)
    return options.noise_multiplier


class PrivacyAccountant:
    """Composes one event per round whose sum the coordinator learnt (RDP accountant,
    replace-one relation) and reports epsilon at the configured delta. `history` holds
    [available, selected, noise multiplier] per round (persisted as coordinator state);
    a bare float (a sampling probability, from older state) is charged as an unsampled
    round at z, which never under-reports."""

    def __init__(self, options: DpOptions, rounds: Sequence[Sequence[float] | float] = ()) -> None:
        self.options = options
        self.history: list[list[float]] = []
        self._accountant = self._new()
        for entry in rounds:
            if isinstance(entry, (int, float)):
                self.record(1, 1)
            else:
                available, selected, z = entry
                self.record(int(available), int(selected), float(z))

    @staticmethod
    def _new() -> dp_accounting.rdp.RdpAccountant:
        dp = _accounting()
        return dp.rdp.RdpAccountant(neighboring_relation=dp.privacy_accountant.NeighboringRelation.REPLACE_ONE)

    @property
    def epsilon(self) -> float:
        """Epsilon spent by the rounds recorded so far (0 before any)."""
        return float(self._accountant.get_epsilon(self.options.delta)) if self.history else 0.0

    def allows(self, available: int, selected: int) -> bool:
        """Whether one more round (at multiplier z) stays within the budget."""
        trial = copy.deepcopy(self._accountant)
        trial.compose(self.options.event(available, selected))
        return float(trial.get_epsilon(self.options.delta)) <= self.options.epsilon_budget

    def record(self, available: int, selected: int, noise_multiplier: float | None = None) -> float:
        """Count one round; returns the epsilon spent so far."""
        z = self.options.noise_multiplier if noise_multiplier is None else float(noise_multiplier)
        self._accountant.compose(self.options.event(available, selected, z))
        self.history.append([int(available), int(selected), z])
        return self.epsilon
