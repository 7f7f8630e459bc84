"""Typed readers for node attributes and the checks kernels share.

Attributes and shapes come from model files that may be malformed, so every
reader checks the type and range of what it returns and raises the node's
ModelError (`kernel.fail`) otherwise; nothing else escapes.
"""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np

from edgerun.runtime.kernels.base import Kernel, TensorSpec

FLOAT_KINDS = "f"
BFLOAT16 = np.dtype(ml_dtypes.bfloat16)
NUMERIC_KINDS = "fiu"


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer)


def int_attr(kernel: Kernel, key: str, default: int | None = None) -> int:
    """An int attribute; `default` when absent (ModelError if absent and no default)."""
    value = kernel.attr(key, default)
    if value is None:
        raise kernel.fail(f"attribute {key!r} is required")
    if not _is_int(value):
        raise kernel.fail(f"attribute {key!r}: expected an int, got {value!r}")
    return int(value)


def float_attr(kernel: Kernel, key: str, default: float) -> float:
    """A float attribute (an int is accepted); `default` when absent."""
    value = kernel.attr(key, default)
    if not isinstance(value, float | int | np.floating | np.integer):
        raise kernel.fail(f"attribute {key!r}: expected a float, got {value!r}")
    return float(value)


def flag_attr(kernel: Kernel, key: str, default: int = 0) -> bool:
    """A 0/1 int attribute (`default` when absent) as a bool; ModelError for any other value."""
    value = int_attr(kernel, key, default)
    if value not in (0, 1):
        raise kernel.fail(f"attribute {key!r} must be 0 or 1, got {value}")
    return bool(value)


def ints_attr(kernel: Kernel, key: str) -> tuple[int, ...] | None:
    """A list-of-ints attribute as a tuple, or None when absent."""
    value = kernel.attr(key)
    if value is None:
        return None
    if isinstance(value, np.ndarray):
        if value.ndim != 1 or value.dtype.kind not in "iu":
            raise kernel.fail(f"attribute {key!r}: expected a 1-D int list, got {value!r}")
        return tuple(int(v) for v in value)
    if not isinstance(value, list | tuple) or not all(_is_int(v) for v in value):
        raise kernel.fail(f"attribute {key!r}: expected a list of ints, got {value!r}")
    return tuple(int(v) for v in value)


def str_attr(kernel: Kernel, key: str, default: str) -> str:
    """A string attribute (bytes are decoded as UTF-8); `default` when absent."""
    value = kernel.attr(key, default)
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise kernel.fail(f"attribute {key!r} is not valid UTF-8") from None
    if not isinstance(value, str):
        raise kernel.fail(f"attribute {key!r}: expected a string, got {value!r}")
    return value


def normalize_axis(
    kernel: Kernel, axis: int, rank: int, *, negative: bool = True, end: bool = False
) -> int:
    """`axis` in [0, rank), or [0, rank] when `end`; a negative axis counts from the back
    (axis + rank) when `negative` is allowed. ModelError when out of range."""
    hi = rank + 1 if end else rank
    lo = -rank if negative else 0
    if not lo <= axis < hi:
        raise kernel.fail(f"axis {axis} is out of range [{lo}, {hi - 1}] for rank {rank}")
    return axis + rank if axis < 0 else axis


def kind_of(dtype: np.dtype) -> str:
    """numpy's kind code, with ml_dtypes' bfloat16 counted as a float ('f')."""
    return "f" if dtype == BFLOAT16 else dtype.kind


def require_kind(kernel: Kernel, spec: TensorSpec, kinds: str, what: str) -> None:
    """ModelError unless `spec.dtype.kind` is one of `kinds` (numpy kind codes)."""
    if kind_of(spec.dtype) not in kinds:
        names = {"f": "float", "i": "signed int", "u": "unsigned int", "b": "bool"}
        allowed = "/".join(names.get(k, k) for k in kinds)
        raise kernel.fail(f"{what}: expected a {allowed} tensor, got {spec.dtype}")


def require_same_dtype(kernel: Kernel, specs: list[TensorSpec], what: str) -> None:
    """ModelError unless every spec has the dtype of the first."""
    dtypes = [s.dtype for s in specs]
    if any(d != dtypes[0] for d in dtypes):
        raise kernel.fail(f"{what}: dtypes differ: {', '.join(map(str, dtypes))}")


def require_rank(
    kernel: Kernel, spec: TensorSpec, lo: int, hi: int | None = None, *, what: str
) -> None:
    """ModelError unless lo <= rank <= hi (hi=None: no upper bound)."""
    rank = len(spec.shape)
    if rank < lo or (hi is not None and rank > hi):
        want = f"rank {lo}" if hi == lo else f"rank >= {lo}" if hi is None else f"rank {lo}..{hi}"
        raise kernel.fail(f"{what}: expected {want}, got shape {spec.shape}")


def prod(values: tuple[int, ...] | list[int]) -> int:
    """Product of ints as a Python int (no overflow); 1 for an empty sequence."""
    n = 1
    for v in values:
        n *= int(v)
    return n


# --- inputs read at prepare time ---------------------------------------------------------------


def has_input(inputs: list[TensorSpec | None], index: int) -> bool:
    """True when optional input `index` is present (not omitted)."""
    return index < len(inputs) and inputs[index] is not None


def ints_input(
    kernel: Kernel, inputs: list[TensorSpec | None], values: list, index: int, what: str, *, any_rank: bool = False
) -> tuple[int, ...] | None:
    """Input `index` as a tuple of ints (needed at prepare time), None when omitted.
    ModelError unless it is a 0-D or 1-D int tensor (any rank, flattened, with `any_rank`)."""
    if not has_input(inputs, index):
        return None
    array = kernel.value_of(values, index)
    if (array.ndim > 1 and not any_rank) or array.dtype.kind not in "iu":
        raise kernel.fail(f"{what} must be a {'' if any_rank else '1-D '}int tensor, "
                          f"got {array.dtype} shape {array.shape}")
    return tuple(int(v) for v in array.reshape(-1))


def int_list(kernel: Kernel, value: np.ndarray, what: str) -> tuple[int, ...]:
    """A 1-D (or scalar) int tensor's contents as a tuple; ModelError for anything else."""
    if value.dtype.kind not in "iu" or value.ndim > 1:
        raise kernel.fail(f"{what}: expected a 1-D int tensor, got {value.dtype} of shape {value.shape}")
    return tuple(int(v) for v in value.reshape(-1))
