"""Federated strategies: client selection, round configuration and aggregation.

`Strategy` defines the stages of a round; each module overrides what differs. The math
lives in `federated.aggregate` as pure numpy functions.
"""

from edgerun.federated.strategies.base import (
    NotEnoughClients,
    RoundFailed,
    Strategy,
    StrategyError,
    StrategyState,
    SumAggregationUnsupported,
)
from edgerun.federated.strategies.fedavg import FedAvg
from edgerun.federated.strategies.fedavgm import FedAvgM
from edgerun.federated.strategies.fedopt import FedAdagrad, FedAdam, FedOpt, FedYogi
from edgerun.federated.strategies.fedprox import FedProx
from edgerun.federated.strategies.robust import FedMedian, FedTrimmedAvg, Krum

__all__ = [
    "FedAdagrad", "FedAdam", "FedAvg", "FedAvgM", "FedMedian", "FedOpt", "FedProx", "FedTrimmedAvg",
    "FedYogi", "Krum", "NotEnoughClients", "RoundFailed", "Strategy", "StrategyError", "StrategyState",
    "SumAggregationUnsupported",
]
