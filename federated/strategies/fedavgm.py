"""FedAvgM (Hsu et al. 2019): FedAvg with server momentum on the pseudo-gradient -avg_delta."""

from __future__ import annotations

from dataclasses import dataclass, field

from edgerun.federated.aggregate import fedavgm_step
from edgerun.federated.strategies.base import StrategyState, copy_arrays, require_keys, require_range
from edgerun.federated.strategies.fedavg import FedAvg
from edgerun.federated.typing import NDArrays


@dataclass(kw_only=True)
class FedAvgM(FedAvg):
    """x <- x - server_lr * buf with buf = momentum * buf - avg_delta (see aggregate.fedavgm_step).

    momentum = 0 and server_lr = 1 is FedAvg. The buffer is the strategy's state."""

    server_lr: float = 1.0
    momentum: float = 0.9
    momentum_buffer: NDArrays = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        require_range("server_lr", self.server_lr, 0.0, low_open=True)
        require_range("momentum", self.momentum, 0.0, 1.0)

    def server_update(self, parameters: NDArrays, avg_delta: NDArrays) -> NDArrays:
        new_parameters, self.momentum_buffer = fedavgm_step(
            parameters, avg_delta, self.momentum_buffer, server_lr=self.server_lr, momentum=self.momentum)
        return new_parameters

    def state(self) -> StrategyState:
        """{"momentum_buffer": float64 arrays, empty before the first round}."""
        return {"momentum_buffer": copy_arrays("momentum_buffer", self.momentum_buffer)}

    def load_state(self, state: StrategyState) -> None:
        require_keys(self, state, {"momentum_buffer"})
        self.momentum_buffer = copy_arrays("momentum_buffer", state["momentum_buffer"])
