"""Typed readers for the ai.onnx.ml attributes (lists of ints, floats or strings, opset 3's
*_as_tensor, string choices, class labels) and the checks the ml kernels share: attribute
lengths that must agree, X read as [N, F] rows. Every reader raises the node's ModelError
(`kernel.fail`) for a missing or malformed attribute. String lists become string tensors
(object arrays of str, runtime.dtypes).
"""

from __future__ import annotations

from collections.abc import Sized

import numpy as np

from edgerun.runtime import dtypes
from edgerun.runtime.kernels.attrs import require_kind, require_rank, str_attr
from edgerun.runtime.kernels.base import Kernel, TensorSpec

ML = "ai.onnx.ml"
FEATURE_KINDS = "fi"  # X of the models: float, double, int32, int64
F32, F64, I64, STRING = np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.int64), dtypes.STRING
UNUSED = "_Unused"  # the spec's default_string of LabelEncoder and CategoryMapper


def is_set(kernel: Kernel, key: str) -> bool:
    """Whether attribute `key` is present and not an empty list."""
    value = kernel.attr(key)
    return value is not None and not (isinstance(value, list | tuple) and len(value) == 0)


def type_name(dtype: np.dtype) -> str:
    """'string' for the string dtype, else numpy's name ('int64')."""
    return "string" if dtypes.is_string(dtype) else str(dtype)


def string_array(items: list[str]) -> np.ndarray:
    """A 1-D string tensor (object array of str) holding `items`."""
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array


def _array(kernel: Kernel, key: str, required: bool) -> np.ndarray | None:
    """Attribute `key` as an array, None when absent (ModelError when `required`)."""
    value = kernel.attr(key)
    if value is None:
        if required:
            raise kernel.fail(f"attribute {key!r} is required")
        return None
    return np.asarray(value)


def int64s(kernel: Kernel, key: str, required: bool = False) -> np.ndarray | None:
    """A list-of-ints attribute as int64, None when absent (ModelError when `required`)."""
    array = _array(kernel, key, required)
    if array is None:
        return None
    if array.ndim != 1 or (array.size and array.dtype.kind not in "iu"):
        raise kernel.fail(f"attribute {key!r}: expected a list of ints")
    return array.astype(np.int64)


def float64s(kernel: Kernel, key: str, required: bool = False) -> np.ndarray | None:
    """A list-of-floats attribute (or a 1-D numeric tensor) as float64, None when absent
    (ModelError when `required`)."""
    array = _array(kernel, key, required)
    if array is None:
        return None
    if array.ndim > 1 or (array.size and array.dtype.kind not in "fiu"):
        raise kernel.fail(f"attribute {key!r}: expected a list of floats")
    return array.reshape(-1).astype(np.float64)


def float64s_or_tensor(kernel: Kernel, key: str, required: bool = False) -> np.ndarray | None:
    """`key` (floats) or `key_as_tensor` (opset 3, double precision): at most one of them."""
    plain, tensor = float64s(kernel, key), float64s(kernel, f"{key}_as_tensor")
    if plain is not None and tensor is not None:
        raise kernel.fail(f"attributes {key!r} and '{key}_as_tensor' are both set")
    if tensor is not None and kernel.version < 3:
        raise kernel.fail(f"attribute '{key}_as_tensor' needs ai.onnx.ml opset 3, the model uses {kernel.version}")
    if plain is None and tensor is None and required:
        raise kernel.fail(f"attribute {key!r} is required")
    return plain if tensor is None else tensor


def strings(kernel: Kernel, key: str) -> list[str] | None:
    """A list-of-strings attribute, None when absent."""
    value = kernel.attr(key)
    if value is None:
        return None
    if not isinstance(value, list | tuple) or not all(isinstance(s, str) for s in value):
        raise kernel.fail(f"attribute {key!r}: expected a list of strings")
    return list(value)


def choice(kernel: Kernel, key: str, default: str, allowed: tuple[str, ...]) -> str:
    """A string attribute that must be one of `allowed`; `default` when absent."""
    value = str_attr(kernel, key, default)
    if value not in allowed:
        raise kernel.fail(f"attribute {key!r} is {value!r}; expected one of {', '.join(allowed)}")
    return value


def same_length(kernel: Kernel, arrays: dict[str, Sized | None]) -> int:
    """The common length of the attributes given (None: absent, not checked)."""
    lengths = {key: len(v) for key, v in arrays.items() if v is not None}
    if len(set(lengths.values())) > 1:
        raise kernel.fail("attribute lengths differ: " + ", ".join(f"{k} has {n}" for k, n in lengths.items()))
    return next(iter(lengths.values()), 0)


def class_labels(kernel: Kernel, ints_key: str, strings_key: str) -> tuple[np.ndarray, str]:
    """(labels, the attribute they came from): the int64 labels of `ints_key` or the string
    labels (a string tensor) of `strings_key`; ModelError unless exactly one is set."""
    has_ints, has_strings = is_set(kernel, ints_key), is_set(kernel, strings_key)
    if has_ints == has_strings:
        raise kernel.fail(f"expected exactly one of {ints_key!r} and {strings_key!r} (the class labels), got "
                          + ("both" if has_ints else "neither"))
    if has_strings:
        return string_array(strings(kernel, strings_key)), strings_key
    return int64s(kernel, ints_key), ints_key


def rows_and_features(kernel: Kernel, x: TensorSpec, kinds: str = FEATURE_KINDS) -> tuple[int, int]:
    """(rows, features) of X, [N, F] or [F] (one row)."""
    require_kind(kernel, x, kinds, "X")
    require_rank(kernel, x, 1, 2, what="X")
    if x.shape[-1] == 0:
        raise kernel.fail(f"X has no features (shape {x.shape})")
    return (1, x.shape[0]) if len(x.shape) == 1 else (x.shape[0], x.shape[1])


def as_rows(x: np.ndarray) -> np.ndarray:
    """X [N, F] or [F] as float64 rows [N, F]."""
    return x.reshape(-1, x.shape[-1]).astype(F64)
