"""Federated strategies: client selection, round configuration and aggregation.

`Strategy` defines the stages of a round; each module overrides what differs. The math
lives in `federated.aggregate` as pure numpy functions.
"""

from federated.strategies.base import (
    NotEnoughClients,
    RoundFailed,
    Strategy,
    StrategyError,
    StrategyState,
    SumAggregationUnsupported,
)
from federated.strategies.fedavg import FedAvg
from federated.strategies.fedavgm import FedAvgM
from federated.strategies.fedopt import FedAdagrad, FedAdam, FedOpt, FedYogi
from federated.strategies.fedprox import FedProx
from federated.strategies.robust import FedMedian, FedTrimmedAvg, Krum

__all__ = [
    "FedAdagrad", "FedAdam", "FedAvg", "FedAvgM", "FedMedian", "FedOpt", "FedProx", "FedTrimmedAvg",
    "FedYogi", "Krum", "NotEnoughClients", "RoundFailed", "Strategy", "StrategyError", "StrategyState",
    "SumAggregationUnsupported",
]
