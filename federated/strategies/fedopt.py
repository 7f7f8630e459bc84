"""Adaptive server optimizers of Reddi et al. 2021: FedAdagrad, FedAdam, FedYogi.

Each treats g = -(example-weighted average delta) as a gradient and keeps the first and
second moments m and v as state (m starts at 0, v at tau^2; no bias correction):
m = beta_1 m + (1 - beta_1) g and x <- x - eta m / (sqrt(v) + tau), where v is
    Adagrad: v + g^2;  Adam: beta_2 v + (1 - beta_2) g^2;  Yogi: v - (1 - beta_2) g^2 sign(v - g^2).
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, field

from edgerun.federated.aggregate import fedadagrad_step, fedadam_step, fedyogi_step
from edgerun.federated.strategies.base import StrategyState, copy_arrays, require_keys, require_range
from edgerun.federated.strategies.fedavg import FedAvg
from edgerun.federated.typing import NDArrays


@dataclass(kw_only=True)
class FedOpt(FedAvg):
    """Shared fields and state of the adaptive server optimizers (not used directly).

    eta: server learning rate (> 0); beta_1: first-moment decay in [0, 1); tau: adaptivity
    (> 0), also the starting sqrt(v). State: {"m": arrays, "v": arrays}, empty before round 1."""

    eta: float = 0.1
    beta_1: float = 0.9
    tau: float = 1e-3
    m: NDArrays = field(default_factory=list, init=False, repr=False)
    v: NDArrays = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        require_range("eta", self.eta, 0.0, low_open=True)
        require_range("beta_1", self.beta_1, 0.0, 1.0, high_open=True)
        require_range("tau", self.tau, 0.0, low_open=True)

    def server_update(self, parameters: NDArrays, avg_delta: NDArrays) -> NDArrays:
        new_parameters, self.m, self.v = self.step(parameters, avg_delta)
        return new_parameters

    @abstractmethod
    def step(self, parameters: NDArrays, avg_delta: NDArrays) -> tuple[NDArrays, NDArrays, NDArrays]:
        """(new parameters, m, v) from the current m and v; does not store them."""

    def state(self) -> StrategyState:
        return {"m": copy_arrays("m", self.m), "v": copy_arrays("v", self.v)}

    def load_state(self, state: StrategyState) -> None:
        """Restore m and v; ValueError on other keys, non-array values or m and v of different lengths."""
        require_keys(self, state, {"m", "v"})
        m, v = copy_arrays("m", state["m"]), copy_arrays("v", state["v"])
        if len(m) != len(v):
            raise ValueError(f"{type(self).__name__}.load_state: m has {len(m)} arrays, v has {len(v)}")
        self.m, self.v = m, v


@dataclass(kw_only=True)
class FedAdagrad(FedOpt):
    """FedAdagrad; beta_1 defaults to 0 (no first-moment averaging), as in Flower."""

    beta_1: float = 0.0

    def step(self, parameters: NDArrays, avg_delta: NDArrays) -> tuple[NDArrays, NDArrays, NDArrays]:
        return fedadagrad_step(parameters, avg_delta, self.m, self.v,
                               eta=self.eta, beta_1=self.beta_1, tau=self.tau)


@dataclass(kw_only=True)
class _WithBeta2(FedOpt):
    beta_2: float = 0.99

    def __post_init__(self) -> None:
        super().__post_init__()
        require_range("beta_2", self.beta_2, 0.0, 1.0, high_open=True)


@dataclass(kw_only=True)
class FedAdam(_WithBeta2):
    """FedAdam: v = beta_2 v + (1 - beta_2) g^2."""

    def step(self, parameters: NDArrays, avg_delta: NDArrays) -> tuple[NDArrays, NDArrays, NDArrays]:
        return fedadam_step(parameters, avg_delta, self.m, self.v,
                            eta=self.eta, beta_1=self.beta_1, beta_2=self.beta_2, tau=self.tau)


@dataclass(kw_only=True)
class FedYogi(_WithBeta2):
    """FedYogi: v = v - (1 - beta_2) g^2 sign(v - g^2)."""

    def step(self, parameters: NDArrays, avg_delta: NDArrays) -> tuple[NDArrays, NDArrays, NDArrays]:
        return fedyogi_step(parameters, avg_delta, self.m, self.v,
                            eta=self.eta, beta_1=self.beta_1, beta_2=self.beta_2, tau=self.tau)
