"""Small builders for the serving unit tests: tensor specs, raw inputs, and the INVALID_ARGUMENT check."""

from __future__ import annotations

import types

import numpy as np
import pytest

from edgerun.runtime.errors import ErrorCode
from edgerun.serving.errors import ServingError
from edgerun.serving.types import InputTensor


def spec(name: str, shape=(-1, 2), dtype=np.float32):
    return types.SimpleNamespace(name=name, dtype=np.dtype(dtype), shape=tuple(shape), has_default=False)


def raw_input(name: str, array: np.ndarray) -> InputTensor:
    return InputTensor(name, "FP32", list(array.shape), array.astype(np.float32).tobytes())


def assert_invalid(call, *words: str) -> str:
    """Run `call`; it must raise INVALID_ARGUMENT whose message holds every one of `words`."""
    with pytest.raises(ServingError) as info:
        call()
    assert info.value.status is ErrorCode.INVALID_ARGUMENT, info.value.message
    for word in words:
        assert word in info.value.message, (word, info.value.message)
    return info.value.message
