"""Generator kernels, whose output is made rather than computed from input data:
ConstantOfShape, Range, EyeLike and the random Bernoulli, RandomUniform(Like) and
RandomNormal(Like). (Constant nodes become constant
tensors when a model is converted; Dropout's random masks are in dropout.py.)
"""

from __future__ import annotations

import math

import numpy as np

from edgerun.runtime.kernels.attrs import FLOAT_KINDS, float_attr, int_attr, ints_input, require_kind, require_rank
from edgerun.runtime.kernels.base import Kernel, TensorSpec
from edgerun.runtime.kernels.cast import cast_into, onnx_dtype
from edgerun.runtime.kernels.registry import register


@register("ConstantOfShape", since=9)
class ConstantOfShape(Kernel):
    """Y = a tensor of the shape held by input 0 (1-D, needed at prepare time) filled with
    the one-element tensor attribute `value` (default float32 0)."""

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        shape = ints_input(self, inputs, values, 0, "shape")
        if any(d < 0 for d in shape):
            raise self.fail(f"shape {list(shape)} has a negative dimension")
        value = self.attr("value")
        value = np.zeros(1, np.float32) if value is None else np.asarray(value)
        if value.size != 1:
            raise self.fail(f"attribute 'value' must hold one element, got shape {value.shape}")
        self.fill = value.reshape(())
        return [TensorSpec(value.dtype, shape)]

    def run(self, inputs, outputs):
        outputs[0][...] = self.fill


@register("Range", since=11)
class Range(Kernel):
    """Y = start, start + delta, ... up to (not including) limit: max(ceil((limit - start)
    / delta), 0) elements of start's dtype. The three scalars are needed at prepare time
    and share a dtype; delta may not be 0."""

    min_inputs = max_inputs = 3

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        if any(spec.dtype != inputs[0].dtype or spec.size != 1 for spec in inputs):
            raise self.fail("start, limit and delta must be one-element tensors of one dtype")
        start, limit, delta = (self.value_of(values, i).reshape(()).item() for i in range(3))
        if delta == 0:
            raise self.fail("delta may not be 0")
        count = max(math.ceil((limit - start) / delta), 0) if isinstance(start, float) else \
            max(-((start - limit) // delta), 0)
        return [TensorSpec(inputs[0].dtype, (count,))]

    def run(self, inputs, outputs):
        start, _, delta = (x.reshape(()).item() for x in inputs)
        out = outputs[0]
        steps = np.arange(out.shape[0], dtype=np.float64 if isinstance(start, float) else np.int64)
        cast_into(out, start + steps * delta)


@register("EyeLike", since=9)
class EyeLike(Kernel):
    """Y = a 2-D tensor of X's shape with ones on diagonal `k` (0: the main one, > 0
    above it) and zeros elsewhere; element type `dtype` (default X's)."""

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = inputs[0]
        require_rank(self, x, 2, 2, what="input")
        self.k = int_attr(self, "k", 0)
        return [TensorSpec(onnx_dtype(self, "dtype", x.dtype), x.shape)]

    def run(self, inputs, outputs):
        out = outputs[0]
        np.copyto(out, np.eye(out.shape[0], out.shape[1], self.k, dtype=out.dtype))


@register("Bernoulli", since=15)
@register("Bernoulli", since=22)
class Bernoulli(Kernel):
    """Y = 1 with probability X, else 0, drawn independently for each element of X (float
    probabilities in [0, 1]); Y has X's shape and element type `dtype` (default X's). The
    draws are numpy's legacy RandomState(seed).binomial(1, X), as ONNX's reference evaluator
    draws them, from a generator made at prepare and advanced by each run; `seed` (a float
    attribute, taken as int(seed) mod 2**32) makes a sequence of runs reproducible, and
    without it the generator is seeded from the OS. ModelError for a non-finite seed and,
    when it runs, for a probability outside [0, 1] or NaN."""

    deterministic = False  # random draws: never folded at prepare time

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = inputs[0]
        require_kind(self, x, FLOAT_KINDS, "input")
        seed = None if self.attr("seed") is None else float_attr(self, "seed", 0.0)
        if seed is not None and not math.isfinite(seed):
            raise self.fail(f"seed {seed} must be finite")
        self.rng = np.random.RandomState(None if seed is None else int(seed) % (1 << 32))
        return [TensorSpec(onnx_dtype(self, "dtype", x.dtype), x.shape)]

    def run(self, inputs, outputs):
        p = inputs[0].astype(np.float64)
        valid = (p >= 0) & (p <= 1)
        if not valid.all():
            raise self.fail(f"probability {inputs[0][~valid].reshape(-1)[0]!s} is outside [0, 1]")
        cast_into(outputs[0], self.rng.binomial(1, p))


class _Random(Kernel):
    """Shared by the random tensor generators: the `seed` (float attribute, int(seed) mod
    2**32; without it the generator is seeded from the OS), a generator made at prepare and
    advanced by each run (so a sequence of runs is reproducible, as with Bernoulli), and the
    float element type `dtype`. Subclasses say which shape (`_shape`) and how to draw (`draw`)."""

    deterministic = False  # random draws: never folded at prepare time
    default_dtype = np.dtype(np.float32)

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        seed = None if self.attr("seed") is None else float_attr(self, "seed", 0.0)
        if seed is not None and not math.isfinite(seed):
            raise self.fail(f"seed {seed} must be finite")
        self.rng = np.random.RandomState(None if seed is None else int(seed) % (1 << 32))
        dtype = onnx_dtype(self, "dtype", self._default_dtype(inputs))
        if dtype.kind != "f" and str(dtype) != "bfloat16":
            raise self.fail(f"dtype {dtype} is not a float type")
        shape = self._shape(inputs)
        if any(d < 0 for d in shape):
            raise self.fail(f"shape {list(shape)} has a negative dimension")
        return [TensorSpec(dtype, shape)]

    def _default_dtype(self, inputs) -> np.dtype:
        return self.default_dtype

    def _shape(self, inputs) -> tuple[int, ...]:
        return tuple(int(d) for d in (self.attr("shape") or ()))

    def run(self, inputs, outputs):
        cast_into(outputs[0], self.draw(outputs[0].shape))

    def draw(self, shape: tuple[int, ...]) -> np.ndarray:
        raise NotImplementedError


class _Like(_Random):
    """The -Like forms: the shape (and, by default, the element type) of input 0."""

    min_inputs = max_inputs = 1

    def _default_dtype(self, inputs) -> np.dtype:
        return inputs[0].dtype

    def _shape(self, inputs) -> tuple[int, ...]:
        return inputs[0].shape


class _Uniform:
    def draw(self, shape):
        return self.rng.uniform(float_attr(self, "low", 0.0), float_attr(self, "high", 1.0), shape)


class _Normal:
    def draw(self, shape):
        return self.rng.normal(float_attr(self, "mean", 0.0), float_attr(self, "scale", 1.0), shape)


@register("RandomUniform", since=1)
@register("RandomUniform", since=22)
class RandomUniform(_Uniform, _Random):
    """Y of attribute `shape`, uniform in [low, high) (default [0, 1)), dtype default float32."""

    min_inputs = max_inputs = 0


@register("RandomUniformLike", since=1)
@register("RandomUniformLike", since=22)
class RandomUniformLike(_Uniform, _Like):
    """Y of input 0's shape, uniform in [low, high) (default [0, 1)), dtype default input 0's."""


@register("RandomNormal", since=1)
@register("RandomNormal", since=22)
class RandomNormal(_Normal, _Random):
    """Y of attribute `shape`, normal with `mean` (0) and `scale` (1), dtype default float32."""

    min_inputs = max_inputs = 0


@register("RandomNormalLike", since=1)
@register("RandomNormalLike", since=22)
class RandomNormalLike(_Normal, _Like):
    """Y of input 0's shape, normal with `mean` (0) and `scale` (1), dtype default input 0's."""
