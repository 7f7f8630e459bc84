"""Dropout: the ONNX op (identity at inference, a seeded random mask in opset 12's training
mode) and, for training (edgerun domain), DropoutTraining followed by its gradient DropoutGrad.
These are random kernels (`Kernel.deterministic` False) where they draw a mask; the other random
op, Bernoulli, is in generators.py.
"""

from __future__ import annotations

import numpy as np

from edgerun.runtime.errors import InputError
from edgerun.runtime.kernels.attrs import FLOAT_KINDS, float_attr, int_attr, require_kind
from edgerun.runtime.kernels.base import Kernel, TensorSpec
from edgerun.runtime.kernels.registry import register
from edgerun.runtime.kernels.spatial import scratch


@register("Dropout", since=1)
class Dropout(Kernel):
    """Inference: Y = X, and the optional mask is all kept (bool from opset 10, X's dtype before),
    as in the ONNX reference evaluator (onnxruntime's opset 7-11 kernel writes zeros instead).
    Opsets 1-11 give `ratio` as an attribute, which inference ignores but type-checks; opsets
    1-6 `is_test` is ignored too."""

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = inputs[0]
        require_kind(self, x, FLOAT_KINDS, "X")
        self._check_options(inputs, values)
        mask = np.dtype(bool) if self.version >= 10 else x.dtype
        return [x, TensorSpec(mask, x.shape)]

    def _check_options(self, inputs, values) -> None:
        float_attr(self, "ratio", 0.5)

    def run(self, inputs, outputs):
        np.copyto(outputs[0], inputs[0])
        if len(outputs) > 1:
            outputs[1].fill(1)


@register("Dropout", since=12)
@register("Dropout", since=13)
class Dropout12(Dropout):
    """Opsets 12 and 13: ratio (float scalar, default 0.5) and training_mode (bool scalar, default
    false) are optional inputs. In training mode with ratio > 0, each element is kept where a
    uniform [0, 1) draw is >= ratio and scaled by 1 / (1 - ratio). The draws come from
    numpy's legacy MT19937 (RandomState) seeded with the `seed` attribute, as the ONNX test
    generator draws them, created at prepare and advanced by each run; without `seed` the
    generator is seeded from the OS, so the mask differs between runs."""

    min_inputs, max_inputs = 1, 3
    deterministic = False  # until prepare shows training mode is off: a random mask must not be folded

    def _check_options(self, inputs, values) -> None:
        for i, name, kinds in ((1, "ratio", FLOAT_KINDS), (2, "training_mode", "b")):
            spec = inputs[i] if i < len(inputs) else None
            if spec is not None:
                require_kind(self, spec, kinds, name)
                if spec.size != 1:
                    raise self.fail(f"{name} must be a scalar, got shape {spec.shape}")
        training = values[2] if len(values) > 2 else None
        off = len(inputs) < 3 or inputs[2] is None or (training is not None and not bool(training.reshape(())))
        self.deterministic = off
        seed = self.attr("seed")
        self.rng = np.random.RandomState(None if seed is None else int_attr(self, "seed") % (1 << 32))

    def run(self, inputs, outputs):
        training = len(inputs) > 2 and inputs[2] is not None and bool(inputs[2].reshape(()))
        ratio = float(inputs[1].reshape(())) if len(inputs) > 1 and inputs[1] is not None else 0.5
        if not training or ratio == 0:
            super().run(inputs, outputs)
            return
        if not 0 <= ratio < 1:
            raise InputError(f"node {self.name!r} (Dropout): ratio {ratio} must be in [0, 1)")
        x, y = inputs[0], outputs[0]
        mask = self.rng.uniform(0, 1.0, x.shape) >= ratio
        np.multiply(x, mask, out=y)
        np.multiply(y, x.dtype.type(1 / (1 - ratio)), out=y)
        if len(outputs) > 1:
            np.copyto(outputs[1], mask)


@register("DropoutTraining", since=1, domain="edgerun")
class DropoutTraining(Kernel):
    """Inverted dropout: outputs Y = X * mask / (1 - ratio) and mask (bool, True = kept).

    Attributes ratio (0.5; the drop probability, in [0, 1)) and seed (optional; >= 0). Each
    element is kept when a uniform [0, 1) draw is >= ratio. The draws come from
    np.random.default_rng(seed), made in prepare and advanced by every run: with `seed` a
    sequence of runs is reproducible, and preparing again (a resize, a new plan) restarts it;
    without it the generator is seeded from the OS, so every interpreter session (and every
    prepare) draws other masks.
    """

    deterministic = False

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = inputs[0]
        require_kind(self, x, FLOAT_KINDS, "X")
        self.ratio = _ratio(self)
        seed = None if self.attr("seed") is None else int_attr(self, "seed")
        if seed is not None and seed < 0:
            raise self.fail(f"seed {seed} must be >= 0")
        self.rng = np.random.default_rng(seed)
        return [x, TensorSpec(np.dtype(bool), x.shape)]

    def run(self, inputs, outputs):
        x, y = inputs[0], outputs[0]
        mask = outputs[1] if len(outputs) > 1 else np.empty(x.shape, bool)
        draws = self.rng.random(out=scratch("dropout.draws", x.shape, np.float64))
        np.greater_equal(draws, self.ratio, out=mask)
        np.multiply(x, mask, out=y)
        np.multiply(y, x.dtype.type(1 / (1 - self.ratio)), out=y)


@register("DropoutGrad", since=1, domain="edgerun")
class DropoutGrad(Kernel):
    """dX = dY * mask / (1 - ratio) from (dY, mask), with DropoutTraining's `ratio` attribute."""

    min_inputs = max_inputs = 2

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        dy, mask = inputs
        require_kind(self, dy, FLOAT_KINDS, "dY")
        require_kind(self, mask, "b", "mask")
        if mask.shape != dy.shape:
            raise self.fail(f"mask shape {mask.shape} differs from dY shape {dy.shape}")
        self.ratio = _ratio(self)
        return [dy]

    def run(self, inputs, outputs):
        dy, mask = inputs
        np.multiply(dy, mask, out=outputs[0])
        np.multiply(outputs[0], dy.dtype.type(1 / (1 - self.ratio)), out=outputs[0])


def _ratio(kernel: Kernel) -> float:
    ratio = float_attr(kernel, "ratio", 0.5)
    if not 0 <= ratio < 1:
        raise kernel.fail(f"ratio {ratio} must be in [0, 1)")
    return ratio
