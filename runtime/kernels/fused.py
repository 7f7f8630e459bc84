"""Fused activations: the optimizer folds a Relu/Clip/LeakyRelu/... that follows a
Conv, ConvTranspose, Gemm or MatMul into that node as two attributes, which the
kernels of those ops honour by calling `apply_activation` on their output:

    activation:        "Relu" | "Clip" | "LeakyRelu" | "HardSigmoid" | "HardSwish" | "Sigmoid" | "Tanh" | "PRelu"
                       | "Swish" (x * sigmoid(x), SiLU: the optimizer's fuse_swish)
    activation_params: floats: Clip [min, max]; LeakyRelu [alpha]; HardSigmoid [alpha, beta];
                       PRelu the slopes, one per output channel (axis 1) or one for all; others []

PRelu is fused only into producers whose output has its channels on axis 1 (Conv,
ConvTranspose, FusedConv): mediapipe's TFLite models run one after most convolutions.

ORT's FusedConv / TFLite's fused_activation_function play the same role.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgerun.runtime.errors import ModelError

ACTIVATIONS = ("Relu", "Clip", "LeakyRelu", "HardSigmoid", "HardSwish", "Sigmoid", "Tanh", "PRelu")
# Fused by a pattern (Sigmoid then Mul), not from one ONNX node: converters/optimize/swish.py
PATTERN_ACTIVATIONS = ("Swish",)
# None: one or more (PRelu's slopes)
_PARAM_COUNTS = {"Relu": 0, "Clip": 2, "LeakyRelu": 1, "HardSigmoid": 2, "HardSwish": 0, "Sigmoid": 0, "Tanh": 0,
                 "PRelu": None, "Swish": 0}
Activation = tuple[str, tuple[float, ...]]  # (name, params), as fused_activation returns it


def fused_activation(attrs: dict[str, Any], where: str) -> Activation | None:
    """The (name, params) of a node's fused activation, None when it has none.
    ModelError for an unknown activation or the wrong number of parameters."""
    name = attrs.get("activation")
    if not name:
        return None
    if name not in _PARAM_COUNTS:
        known = ", ".join((*ACTIVATIONS, *PATTERN_ACTIVATIONS))
        raise ModelError(f"{where}: unknown fused activation {name!r}; known: {known}")
    params = tuple(float(p) for p in attrs.get("activation_params", []))
    expected = _PARAM_COUNTS[name]
    if (len(params) != expected) if expected is not None else not params:
        wanted = expected if expected is not None else "one or more"
        raise ModelError(f"{where}: fused {name} takes {wanted} parameters, got {len(params)}")
    return name, params


def check_channels(activation: Activation | None, channels: int, where: str) -> None:
    """ModelError unless a fused PRelu has one slope or one per channel of the output."""
    if activation is not None and activation[0] == "PRelu" and len(activation[1]) not in (1, channels):
        raise ModelError(f"{where}: fused PRelu has {len(activation[1])} slopes for {channels} output channels")


def prelu_slopes(y: np.ndarray, params: tuple[float, ...]) -> np.ndarray:
    """A fused PRelu's slopes shaped to broadcast over `y`'s channel axis (1)."""
    slopes = np.asarray(params, y.dtype)
    if slopes.size == 1:
        return slopes.reshape(())
    if y.ndim < 2 or y.shape[1] != slopes.size:
        raise ModelError(f"fused PRelu has {slopes.size} slopes for an output of shape {y.shape}")
    return slopes.reshape((-1,) + (1,) * (y.ndim - 2))


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
    elif name == "Swish":
        with np.errstate(over="ignore"):
            gate = np.exp(-y)
        gate += 1
        np.divide(y, gate, out=y)
    elif name == "PRelu":
        np.multiply(y, np.where(y < 0, prelu_slopes(y, params), y.dtype.type(1)), out=y)
