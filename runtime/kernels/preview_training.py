"""ONNX's training-preview optimizers (domain "ai.onnx.preview.training", opset 1): Momentum,
Adam and Adagrad.

Each node updates n tensors at once. Its inputs are the learning rate R (a float scalar), the
update count T (an int scalar, 0 at the first update) and then groups of n tensors: all the
X's, then all their gradients G, then each optimizer state (V for Momentum, V and H for Adam,
H for Adagrad). Its outputs are groups of n in the same order, less the gradients: the new X's,
then the new states. Tensor i of every group must have X_i's float dtype and shape; each tensor
is updated on its own, in its dtype. Nothing is updated in place.

Bad graphs (a tensor count the group size does not divide, mismatched shapes or dtypes, a
missing or out-of-range attribute) are ModelErrors at prepare time; a negative or non-finite R
or a negative T is bad input data: InputError when the update runs (edgerun's own optimizers in
`optimizers` take the same line).
"""

from __future__ import annotations

import math

import numpy as np

from edgerun.runtime.errors import InputError
from edgerun.runtime.kernels.attrs import FLOAT_KINDS, require_kind, require_same_dtype, str_attr
from edgerun.runtime.kernels.base import Kernel
from edgerun.runtime.kernels.losses import require_same_shape, require_scalar
from edgerun.runtime.kernels.optimizers import bounded_attr, learning_rate
from edgerun.runtime.kernels.registry import register

PREVIEW_TRAINING = "ai.onnx.preview.training"


def onnx_float(value: float) -> float:
    """`value` rounded to float32: what an ONNX float attribute, or its schema default, holds."""
    return float(np.float32(value))


class GroupedUpdate(Kernel):
    """What the three optimizers share: (R, T, X_1..X_n, G_1..G_n, S_1..S_n, ...) ->
    (X_new_1..X_new_n, S_new_1..S_new_n, ...), where S runs over `states`. A subclass reads its
    attributes in `read_attrs` and updates one tensor in `update`."""

    min_inputs, max_inputs = 4, 1 << 31
    states: tuple[str, ...] = ()  # the optimizer state inputs after G, per tensor

    def read_attrs(self) -> None:
        raise NotImplementedError

    def update(self, rate: float, t: int, x: np.ndarray, g: np.ndarray, *states: np.ndarray) -> tuple:
        """(X_new, *states_new) for one tensor; `rate` is R, `t` is T."""
        raise NotImplementedError

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        self.read_attrs()
        r, t, *tensors = inputs
        names = ("X", "G", *self.states)
        if len(tensors) % len(names):
            raise self.fail(f"after R and T, expected groups of n tensors ({', '.join(names)}), got "
                            f"{len(tensors)} tensors, which {len(names)} groups do not divide")
        if any(spec is None for spec in tensors):
            raise self.fail("the X, G and state inputs cannot be omitted")
        require_scalar(self, r, FLOAT_KINDS, "R")
        require_scalar(self, t, "iu", "T")
        self.count = n = len(tensors) // len(names)
        for i in range(n):
            group = tensors[i::n]
            require_kind(self, group[0], FLOAT_KINDS, f"X[{i}]")
            require_same_dtype(self, group, ", ".join(f"{name}[{i}]" for name in names))
            for spec, name in zip(group[1:], names[1:], strict=True):
                require_same_shape(self, group[0], spec, f"X[{i}] and {name}[{i}]")
        return tensors[:n] + tensors[2 * n :]

    def run(self, inputs, outputs):
        r, t, *tensors = inputs
        rate = learning_rate(self, r)
        count = self._update_count(t)
        n = self.count
        for i in range(n):
            for k, new in enumerate(self.update(rate, count, *tensors[i::n])):
                if k * n + i < len(outputs):
                    np.copyto(outputs[k * n + i], new)

    def _update_count(self, t: np.ndarray) -> int:
        value = int(t.reshape(()))
        if value < 0:
            raise InputError(f"node {self.name!r} ({self.op_type}): T (the update count) must be >= 0, got {value}")
        return value

    def required_float(self, key: str, lo: float, hi: float = math.inf) -> float:
        """A required float attribute in [lo, hi); ModelError when absent or out of range."""
        if self.attr(key) is None:
            raise self.fail(f"attribute {key!r} is required")
        return bounded_attr(self, key, 0.0, lo, hi)


def regularized(norm_coefficient: float, x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """G + norm_coefficient * X: the gradient of the loss plus 0.5 * norm_coefficient * ||X||^2."""
    return norm_coefficient * x + g if norm_coefficient else g


@register("Momentum", since=1, domain=PREVIEW_TRAINING)
class Momentum(GroupedUpdate):
    """(R, T, X..., G..., V...; alpha, beta, mode, norm_coefficient, all required) -> (X_new..., V_new...):

        G_reg = norm_coefficient * X + G
        V_new = alpha * V + (beta if T > 0 else 1) * G_reg
        X_new = X - R * V_new                          (mode "standard")
        X_new = X - R * (G_reg + alpha * V_new)        (mode "nesterov")

    alpha, beta and norm_coefficient must be finite and >= 0; mode is "standard" or "nesterov"."""

    states = ("V",)

    def read_attrs(self) -> None:
        self.alpha = self.required_float("alpha", 0.0)
        self.beta = self.required_float("beta", 0.0)
        self.norm_coefficient = self.required_float("norm_coefficient", 0.0)
        if self.attr("mode") is None:
            raise self.fail("attribute 'mode' is required")
        mode = str_attr(self, "mode", "")
        if mode not in ("standard", "nesterov"):
            raise self.fail(f"attribute 'mode' must be 'standard' or 'nesterov', got {mode!r}")
        self.nesterov = mode == "nesterov"

    def update(self, rate, t, x, g, v):
        g_reg = regularized(self.norm_coefficient, x, g)
        v_new = self.alpha * v + (self.beta if t > 0 else 1.0) * g_reg
        step = g_reg + self.alpha * v_new if self.nesterov else v_new
        return x - rate * step, v_new


@register("Adam", since=1, domain=PREVIEW_TRAINING)
class Adam(GroupedUpdate):
    """(R, T, X..., G..., V..., H...; alpha=0.9, beta=0.999, epsilon=1e-6, norm_coefficient=0,
    norm_coefficient_post=0) -> (X_new..., V_new..., H_new...):

        G_reg = norm_coefficient * X + G
        V_new = alpha * V + (1 - alpha) * G_reg
        H_new = beta * H + (1 - beta) * G_reg^2
        R_adj = R * sqrt(1 - beta^T) / (1 - alpha^T) if T > 0 else R
        X_new = (1 - norm_coefficient_post) * (X - R_adj * V_new / (sqrt(H_new) + epsilon))

    alpha and beta must be in [0, 1) (alpha = 1 would divide by zero), the rest finite and >= 0."""

    states = ("V", "H")

    def read_attrs(self) -> None:
        self.alpha = bounded_attr(self, "alpha", onnx_float(0.9), 0.0, 1.0)
        self.beta = bounded_attr(self, "beta", onnx_float(0.999), 0.0, 1.0)
        self.epsilon = bounded_attr(self, "epsilon", onnx_float(1e-6), 0.0)
        self.norm_coefficient = bounded_attr(self, "norm_coefficient", 0.0, 0.0)
        self.norm_coefficient_post = bounded_attr(self, "norm_coefficient_post", 0.0, 0.0)

    def update(self, rate, t, x, g, v, h):
        g_reg = regularized(self.norm_coefficient, x, g)
        v_new = self.alpha * v + (1 - self.alpha) * g_reg
        h_new = self.beta * h + (1 - self.beta) * np.square(g_reg)
        if t > 0:
            rate = rate * math.sqrt(1 - self.beta**t) / (1 - self.alpha**t)
        x_new = x - rate * (v_new / (np.sqrt(h_new) + self.epsilon))
        if self.norm_coefficient_post:
            x_new = (1 - self.norm_coefficient_post) * x_new
        return x_new, v_new, h_new


@register("Adagrad", since=1, domain=PREVIEW_TRAINING)
class Adagrad(GroupedUpdate):
    """(R, T, X..., G..., H...; decay_factor=0, epsilon=1e-6, norm_coefficient=0) -> (X_new..., H_new...):

        r = R / (1 + T * decay_factor)
        G_reg = norm_coefficient * X + G
        H_new = H + G_reg^2
        X_new = X - r * G_reg / (sqrt(H_new) + epsilon)

    Every attribute must be finite and >= 0."""

    states = ("H",)

    def read_attrs(self) -> None:
        self.decay_factor = bounded_attr(self, "decay_factor", 0.0, 0.0)
        self.epsilon = bounded_attr(self, "epsilon", onnx_float(1e-6), 0.0)
        self.norm_coefficient = bounded_attr(self, "norm_coefficient", 0.0, 0.0)

    def update(self, rate, t, x, g, h):
        g_reg = regularized(self.norm_coefficient, x, g)
        h_new = h + np.square(g_reg)
        r = rate / (1 + t * self.decay_factor)
        return x - r * (g_reg / (np.sqrt(h_new) + self.epsilon)), h_new
