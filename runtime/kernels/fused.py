"""Fused activations: the optimizer folds a Relu/Clip/LeakyRelu/... that follows a
Conv, ConvTranspose, Gemm or MatMul into that node as two attributes, which the
kernels of those ops honour by calling `apply_activation` on their output:

    activation:        "Relu" | "Clip" | "LeakyRelu" | "HardSigmoid" | "HardSwish" | "Sigmoid" | "Tanh"
    activation_params: floats: Clip [min, max]; LeakyRelu [alpha]; HardSigmoid [alpha, beta]; others []

ORT's FusedConv / TFLite's fused_activation_function play the same role.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgerun.runtime.errors import ModelError

ACTIVATIONS = ("Relu", "Clip", "LeakyRelu", "HardSigmoid", "HardSwish", "Sigmoid", "Tanh")
_PARAM_COUNTS = {"Relu": 0, "Clip": 2, "LeakyRelu": 1, "HardSigmoid": 2, "HardSwish": 0, "Sigmoid": 0, "Tanh": 0}
Activation = tuple[str, tuple[float, ...]]  # (name, params), as fused_activation returns it


def fused_activation(attrs: dict[str, Any], where: str) -> Activation | None:
    """The (name, params) of a node's fused activation, None when it has none.
    ModelError for an unknown activation or the wrong number of parameters."""
    name = attrs.get("activation")
    if not name:
        return None
    if name not in _PARAM_COUNTS:
        raise ModelError(f"{where}: unknown fused activation {name!r}; known: {', '.join(ACTIVATIONS)}")
    params = tuple(float(p) for p in attrs.get("activation_params", []))
    if len(params) != _PARAM_COUNTS[name]:
        raise ModelError(f"{where}: fused {name} takes {_PARAM_COUNTS[name]} parameters, got {len(params)}")
    return name, params


def apply_activation(y: np.ndarray, activation: Activation | None) -> None:
    """Apply `activation` to `y` in place (a no-op for None)."""
    if activation is None:
        return
    name, params = activation
    if name == "Relu":
        np.maximum(y, 0, out=y)
    elif name == "Clip":
        np.clip(y, params[0], params[1], out=y)
    elif name == "LeakyRelu":
        np.multiply(y, np.where(y < 0, y.dtype.type(params[0]), y.dtype.type(1)), out=y)
    elif name == "HardSigmoid":
        np.clip(y * params[0] + params[1], 0, 1, out=y)
    elif name == "HardSwish":
        y *= np.clip(y / 6 + 0.5, 0, 1)
    elif name == "Sigmoid":
        np.negative(y, out=y)
        np.exp(y, out=y)
        y += 1
        np.reciprocal(y, out=y)
    elif name == "Tanh":
        np.tanh(y, out=y)
