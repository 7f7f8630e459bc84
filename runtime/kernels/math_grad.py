"""Gradient kernels (edgerun domain) of elementwise math ops and activations whose gradient is
not a short chain of ONNX ops: Pow (two broadcast operands, a masked exponent gradient), Erf
(a constant of X's dtype, which a rule cannot always know), Clip, HardSigmoid, HardSwish
(piecewise) and Gelu (both approximations).

Each takes dY and the forward input(s) and returns the input gradient(s) with the forward
input's shape and dtype (PowGrad: the broadcast output's shape; the rule sums it down). At the
kinks of a piecewise function the gradient is the one of the flat (or outer) piece: Clip passes
dY only where min < X < max, HardSigmoid where 0 < alpha * X + beta < 1, HardSwish gives 0 at
X = -3 and dY at X = 3 -- as ReluGrad gives 0 at X = 0 and PyTorch's hardtanh (ReLU6) and
hardsigmoid backward do.
"""

from __future__ import annotations

import math

import numpy as np

from edgerun.runtime.kernels.activations import _ActivationGrad
from edgerun.runtime.kernels.attrs import FLOAT_KINDS, float_attr, has_input, int_attr, require_kind, str_attr
from edgerun.runtime.kernels.base import Kernel, TensorSpec
from edgerun.runtime.kernels.elementwise import broadcast_shape
from edgerun.runtime.kernels.registry import register
from edgerun.runtime.kernels.unary_math import erf


@register("PowGrad", since=1, domain="edgerun")
class PowGrad(Kernel):
    """(dY, A, B) -> dA[, dB] of Y = Pow(A, B), both shaped like Y (broadcast(A, B)).

    dA = dY * B * A^(B-1) (0 where B = 0, as PyTorch); dB = dY * A^B * log(A) where A > 0 and
    0 elsewhere (the derivative exists only for a positive base; at A = 0 this is its limit for
    B > 0). Attribute compute_db (0 or 1, default 1): with 0 there is no dB output, for an
    integer or constant exponent. dA has A's dtype, dB B's (which must be float)."""

    min_inputs = max_inputs = 3

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        dy, a, b = inputs
        require_kind(self, a, FLOAT_KINDS, "A")
        shape = broadcast_shape(self, [a.shape, b.shape])
        if dy.dtype != a.dtype or dy.shape != shape:
            raise self.fail(f"dY is {dy.dtype} {dy.shape}; the forward output is {a.dtype} {shape}")
        self.compute_db = int_attr(self, "compute_db", 1)
        if self.compute_db not in (0, 1):
            raise self.fail(f"attribute 'compute_db' must be 0 or 1, got {self.compute_db}")
        if self.compute_db:
            require_kind(self, b, FLOAT_KINDS, "B (for its gradient)")
        return [TensorSpec(a.dtype, shape)] + [TensorSpec(b.dtype, shape)] * self.compute_db

    def run(self, inputs, outputs):
        dy, a, b = inputs
        with np.errstate(all="ignore"):
            lower = np.power(a, b - 1)  # A^(B-1): inf at A = 0 for B < 1, nan for A < 0 and fractional B
            np.copyto(outputs[0], np.where(b == 0, 0, dy * b * lower), casting="unsafe")
            if self.compute_db:
                positive = a > 0
                log_a = np.log(np.where(positive, a, 1))
                np.copyto(outputs[1], np.where(positive, dy * lower * a * log_a, 0), casting="unsafe")


@register("ErfGrad", since=1, domain="edgerun")
class ErfGrad(_ActivationGrad):
    """(dY, X) -> dX = dY * 2 / sqrt(pi) * exp(-X^2)."""

    def run(self, inputs, outputs):
        dy, x = inputs
        np.copyto(outputs[0], dy * (2 / math.sqrt(math.pi)) * np.exp(-np.square(x)), casting="unsafe")


@register("ClipGrad", since=1, domain="edgerun")
class ClipGrad(Kernel):
    """(dY, X[, min][, max]) -> dX = dY where min < X < max, else 0 (0 at the bounds themselves,
    and everywhere when min >= max, where Y is constant). A bound is input 2/3 (a scalar, as
    Clip-11 takes it) or, when that is omitted, the float attribute `min`/`max` (Clip-1/6's);
    absent both ways, that side is unbounded."""

    min_inputs, max_inputs = 2, 4

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        dy, x = inputs[:2]
        require_kind(self, dy, FLOAT_KINDS, "dY")
        if dy.dtype != x.dtype or dy.shape != x.shape:
            raise self.fail(f"dY is {dy.dtype} {dy.shape}; X is {x.dtype} {x.shape}")
        for i, what in ((2, "min"), (3, "max")):
            if has_input(inputs, i) and inputs[i].size != 1:
                raise self.fail(f"{what}: expected a scalar, got shape {inputs[i].shape}")
        self.bounds = [None if self.attr(key) is None else float_attr(self, key, 0.0) for key in ("min", "max")]
        return [dy]

    def run(self, inputs, outputs):
        dy, x = inputs[:2]
        out = outputs[0]
        np.copyto(out, dy)
        for i, (attr, outside) in enumerate(zip(self.bounds, (np.less_equal, np.greater_equal), strict=True)):
            bound = inputs[2 + i].reshape(()) if has_input(inputs, 2 + i) else attr
            if bound is not None:
                out[outside(x, bound)] = 0


@register("HardSigmoidGrad", since=1, domain="edgerun")
class HardSigmoidGrad(_ActivationGrad):
    """(dY, X) -> dX = alpha * dY where 0 < alpha * X + beta < 1, else 0 (alpha default 0.2,
    beta 0.5, as HardSigmoid)."""

    def prepare(self, inputs, values):
        self.alpha = float_attr(self, "alpha", 0.2)
        self.beta = float_attr(self, "beta", 0.5)
        return super().prepare(inputs, values)

    def run(self, inputs, outputs):
        dy, x = inputs
        z = self.alpha * x + self.beta
        np.copyto(outputs[0], np.where((z > 0) & (z < 1), self.alpha * dy, 0), casting="unsafe")


@register("HardSwishGrad", since=1, domain="edgerun")
class HardSwishGrad(_ActivationGrad):
    """(dY, X) -> dX = dY * (X / 3 + 1/2) where -3 < X < 3, 0 where X <= -3, dY where X >= 3."""

    def run(self, inputs, outputs):
        dy, x = inputs
        slope = np.where(x <= -3, 0, np.where(x >= 3, 1, x / 3 + 0.5))
        np.copyto(outputs[0], dy * slope, casting="unsafe")


@register("GeluGrad", since=1, domain="edgerun")
class GeluGrad(_ActivationGrad):
    """(dY, X) -> dX of Gelu-20. approximate="none": dY * (Phi(X) + X * phi(X)) with Phi, phi the
    standard normal CDF and density; "tanh": the derivative of 0.5 X (1 + tanh(u)),
    u = sqrt(2 / pi) (X + 0.044715 X^3). Computed in float64 and rounded once."""

    def prepare(self, inputs, values):
        approximate = str_attr(self, "approximate", "none")
        if approximate not in ("none", "tanh"):
            raise self.fail(f"attribute 'approximate' must be 'none' or 'tanh', got {approximate!r}")
        self.tanh = approximate == "tanh"
        return super().prepare(inputs, values)

    def run(self, inputs, outputs):
        dy, x = inputs[0], inputs[1].astype(np.float64)
        if self.tanh:
            c = math.sqrt(2 / math.pi)
            t = np.tanh(c * (x + 0.044715 * x**3))
            slope = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * c * (1 + 3 * 0.044715 * x * x)
        else:
            slope = 0.5 * (1 + erf(x / math.sqrt(2))) + x * np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
        np.copyto(outputs[0], dy * slope, casting="unsafe")
