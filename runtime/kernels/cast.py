"""Type conversion: Cast and CastLike, and `onnx_dtype`, which reads an ONNX element-type
attribute.

Element types are named by their ONNX TensorProto codes; only those numpy (and .erm)
can hold are accepted: float16/32/64, bfloat16, int8..64, uint8..64 and bool. Casts follow numpy:
float -> int truncates toward zero, anything non-zero -> bool is True.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

from edgerun.runtime.kernels.attrs import int_attr
from edgerun.runtime.kernels.base import Kernel, TensorSpec
from edgerun.runtime.kernels.registry import register

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


def cast_into(out: np.ndarray, x: np.ndarray) -> None:
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
        cast_into(outputs[0], inputs[0])


@register("CastLike", since=15)
class CastLike(Kernel):
    """Y = X converted to the element type of input 1 (only its dtype is read)."""

    min_inputs = max_inputs = 2

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        return [TensorSpec(inputs[1].dtype, inputs[0].shape)]

    def run(self, inputs, outputs):
        cast_into(outputs[0], inputs[0])
