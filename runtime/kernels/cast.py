"""Type conversion and tensor generators: Cast, CastLike, ConstantOfShape, Range, EyeLike.

Element types are named by their ONNX TensorProto codes; only those numpy (and .erm)
can hold are accepted: float16/32/64, int8..64, uint8..64 and bool. Casts follow numpy:
float -> int truncates toward zero, anything non-zero -> bool is True.
"""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np

from edgerun.runtime.kernels.attrs import int_attr, require_rank
from edgerun.runtime.kernels.base import Kernel, TensorSpec
from edgerun.runtime.kernels.registry import register
from edgerun.runtime.kernels.shape import ints_input

# ONNX TensorProto element type codes and names -> numpy.
_ONNX_TYPES: dict[int, tuple[str, type]] = {
    1: ("FLOAT", np.float32),
    2: ("UINT8", np.uint8),
    3: ("INT8", np.int8),
    4: ("UINT16", np.uint16),
    5: ("INT16", np.int16),
    6: ("INT32", np.int32),
    7: ("INT64", np.int64),
    9: ("BOOL", np.bool_),
    10: ("FLOAT16", np.float16),
    11: ("DOUBLE", np.float64),
    12: ("UINT32", np.uint32),
    13: ("UINT64", np.uint64),
    16: ("BFLOAT16", ml_dtypes.bfloat16),
}
_BY_NAME = {name: code for code, (name, _) in _ONNX_TYPES.items()}


def onnx_dtype(kernel: Kernel, key: str, default: np.dtype | None = None) -> np.dtype:
    """The numpy dtype named by the element-type attribute `key` (an ONNX code, or a
    name such as 'FLOAT' as in Cast-1); `default` when absent. ModelError for a type
    numpy cannot represent (bfloat16, float8, int4, string...)."""
    value = kernel.attr(key)
    if value is None:
        if default is None:
            raise kernel.fail(f"attribute {key!r} is required")
        return default
    code = _BY_NAME.get(value.upper(), -1) if isinstance(value, str) else int_attr(kernel, key)
    if code not in _ONNX_TYPES:
        raise kernel.fail(f"attribute {key!r}: element type {value!r} is not supported "
                          f"(supported: {', '.join(_BY_NAME)})")
    return np.dtype(_ONNX_TYPES[code][1])


def _cast_into(out: np.ndarray, x: np.ndarray) -> None:
    with np.errstate(invalid="ignore", over="ignore"):  # NaN/inf -> int is undefined in ONNX
        np.copyto(out, x, casting="unsafe")


@register("Cast", since=1)
class Cast(Kernel):
    """Y = X converted to the element type `to` (`saturate` only concerns float8 types,
    which are not supported)."""

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        return [TensorSpec(onnx_dtype(self, "to"), inputs[0].shape)]

    def run(self, inputs, outputs):
        _cast_into(outputs[0], inputs[0])


@register("CastLike", since=15)
class CastLike(Kernel):
    """Y = X converted to the element type of input 1 (only its dtype is read)."""

    min_inputs = max_inputs = 2

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        return [TensorSpec(inputs[1].dtype, inputs[0].shape)]

    def run(self, inputs, outputs):
        _cast_into(outputs[0], inputs[0])


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
        _cast_into(out, start + steps * delta)


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
