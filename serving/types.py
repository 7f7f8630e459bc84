"""Protocol-neutral request and response types shared by the gRPC and REST front ends."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class InputTensor:
    """One request input as it arrived: `raw` bytes (little-endian, BYTES length-prefixed) or typed
    `values` (a flat list), never both for a valid request."""

    name: str
    datatype: str
    shape: list[int]
    raw: bytes | memoryview | None = None
    values: list | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class InferRequest:
    """One inference request. `outputs`: the requested output names (None = all), each with its
    parameters (e.g. REST `binary_data`)."""

    model: str
    version: str = ""
    id: str = ""
    inputs: list[InputTensor] = field(default_factory=list)
    outputs: dict[str, dict[str, Any]] | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class InferResponse:
    """The answer: outputs in the model's order (or the requested order)."""

    model: str
    version: str
    id: str
    outputs: dict[str, np.ndarray]
    parameters: dict[str, Any] = field(default_factory=dict)
