"""FedProx (Li et al. 2020): FedAvg on the server; clients add (mu / 2) ||w - w_global||^2
to their local loss, with mu sent as "proximal_mu" in the fit config."""

from __future__ import annotations

from dataclasses import dataclass

from edgerun.federated.strategies.base import require_range
from edgerun.federated.strategies.fedavg import FedAvg
from edgerun.federated.typing import Config


@dataclass(kw_only=True)
class FedProx(FedAvg):
    """FedAvg whose fit config also carries "proximal_mu" (>= 0; 0 makes the clients plain FedAvg)."""

    proximal_mu: float = 0.01

    def __post_init__(self) -> None:
        super().__post_init__()
        require_range("proximal_mu", self.proximal_mu, 0.0)

    def fit_config(self, round: int) -> Config:
        return {**super().fit_config(round), "proximal_mu": self.proximal_mu}
