"""Shared wire-level types of federated learning (paired *Ins/*Res dataclasses).

Model parameters travel as `NDArrays`: the model's trainable tensors in a fixed
order (the order of the `save` signature's outputs). Clients send back weight
deltas (trained minus received), never raw weights, so that secure aggregation
can sum them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

NDArrays = list[np.ndarray]
Scalar = bool | int | float | str
Config = dict[str, Scalar]
Metrics = dict[str, float]


@dataclass
class FitIns:
    """What a selected client gets for a training round."""

    parameters: NDArrays
    config: Config = field(default_factory=dict)


@dataclass
class FitRes:
    """A client's training result: its weight delta and how many examples it used."""

    delta: NDArrays
    num_examples: int
    metrics: Metrics = field(default_factory=dict)


@dataclass
class EvaluateIns:
    parameters: NDArrays
    config: Config = field(default_factory=dict)


@dataclass
class EvaluateRes:
    """A client's evaluation on its held-out data."""

    loss: float
    num_examples: int
    metrics: Metrics = field(default_factory=dict)
