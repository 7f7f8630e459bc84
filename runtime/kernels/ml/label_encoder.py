"""LabelEncoder: a lookup table (`lookup.Table`) from keys to values, strings or numbers.

Opset 1 maps between strings and their index in classes_strings; opsets 2 and 4 map the
keys_* to the values_* (strings, int64s, floats; opset 4 also tensors of a numeric or the
string type). A key given twice maps to its last value: in opset 1 as in onnxruntime, in
opsets 2 and 4 unlike onnxruntime (which keeps the first).
"""

from __future__ import annotations

import numpy as np

from edgerun.runtime import dtypes
from edgerun.runtime.kernels.attrs import float_attr, int_attr, str_attr
from edgerun.runtime.kernels.base import Kernel, TensorSpec
from edgerun.runtime.kernels.ml.attrs import (
    F32,
    I64,
    ML,
    STRING,
    UNUSED,
    float64s,
    int64s,
    is_set,
    string_array,
    strings,
    type_name,
)
from edgerun.runtime.kernels.ml.category_mapper import StringIntMapping
from edgerun.runtime.kernels.ml.lookup import Table
from edgerun.runtime.kernels.registry import register


@register("LabelEncoder", since=1, domain=ML)
class LabelEncoderIndex(StringIntMapping):
    """Opset 1. X strings -> Y int64: the index of each element in classes_strings (a string
    listed twice: its last index), default_int64 (-1) where it is not listed. X int64 -> Y
    strings: classes_strings[X], default_string ("_Unused") outside [0, len(classes_strings)).
    Any other X is a ModelError at prepare."""

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        classes = strings(self, "classes_strings")
        if classes is None:
            raise self.fail("attribute 'classes_strings' is required")
        return self._prepare_pairs(string_array(classes), np.arange(len(classes), dtype=I64), inputs[0])


def _side(kernel: Kernel, side: str) -> tuple[np.ndarray, str]:
    """(array, attribute) of the keys or values (`side`) of a LabelEncoder: {side}_strings (a
    string tensor), _int64s (int64), _floats (float32) or, from opset 4, _tensor (its dtype,
    numeric or string); exactly one."""
    found = [f"{side}_{kind}" for kind in ("strings", "int64s", "floats", "tensor") if is_set(kernel, f"{side}_{kind}")]
    if len(found) != 1:
        raise kernel.fail(f"expected exactly one of {side}_strings, {side}_int64s, {side}_floats, {side}_tensor, "
                          f"got {', '.join(found) or 'none'}")
    key = found[0]
    if key.endswith("_tensor"):
        value = kernel.attr(key)
        if kernel.version < 4:
            raise kernel.fail(f"attribute {key!r} needs ai.onnx.ml opset 4, the model uses {kernel.version}")
        if not isinstance(value, np.ndarray) or not (value.dtype.kind in "iuf" or dtypes.is_string(value.dtype)):
            raise kernel.fail(f"{key}: expected a numeric or string tensor")
        return value.reshape(-1), key
    if key.endswith("_strings"):
        return string_array(strings(kernel, key)), key
    return (int64s(kernel, key) if key.endswith("int64s") else float64s(kernel, key).astype(F32)), key


@register("LabelEncoder", since=2, domain=ML)
@register("LabelEncoder", since=4, domain=ML)
class LabelEncoder(Kernel):
    """Opsets 2 and 4. Y[i] = the value paired with the key equal to X[i] (keys_* and values_*
    in the same order; a repeated key: its last pair), the default where no key matches:
    from opset 4 default_tensor, else default_string ("_Unused"), default_int64 (-1) or
    default_float (-0.0) by the values' type. X's dtype must be the keys'; Y's is the values'.
    A NaN key matches every NaN; 0.0 and -0.0 are the same key. ModelError at prepare for
    keys and values of different lengths, a default of another type, or X of another type."""

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        (keys, key_attr), (table, value_attr) = _side(self, "keys"), _side(self, "values")
        if len(keys) != len(table):
            raise self.fail(f"{key_attr} has {len(keys)} entries and {value_attr} {len(table)}: "
                            "they pair up one to one")
        x = inputs[0]
        if x.dtype != keys.dtype:
            raise self.fail(f"X is {type_name(x.dtype)} but the keys ({key_attr}) are {type_name(keys.dtype)}")
        self.table = Table(keys, table, self._default(table.dtype))
        return [TensorSpec(table.dtype, x.shape)]

    def _default(self, dtype: np.dtype) -> np.ndarray:
        tensor = self.attr("default_tensor")
        if tensor is not None:
            if self.version < 4:
                raise self.fail(f"attribute 'default_tensor' needs ai.onnx.ml opset 4, the model uses {self.version}")
            if not isinstance(tensor, np.ndarray) or tensor.size != 1 or tensor.dtype != dtype:
                got = f"{type_name(tensor.dtype)} {list(tensor.shape)}" if isinstance(tensor, np.ndarray) else "none"
                raise self.fail(f"default_tensor: expected one {type_name(dtype)} value (the values' type), got {got}")
            return tensor.reshape(())
        if dtypes.is_string(dtype):
            return np.array(str_attr(self, "default_string", UNUSED), STRING)
        if dtype.kind == "f":
            return np.array(float_attr(self, "default_float", -0.0), dtype)
        value = int_attr(self, "default_int64", -1)
        if not np.iinfo(dtype).min <= value <= np.iinfo(dtype).max:
            raise self.fail(f"default {value} does not fit the values' {dtype}")
        return np.array(value, dtype)

    def run(self, inputs, outputs):
        outputs[0][...] = self.table(inputs[0])
