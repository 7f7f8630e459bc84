"""Element types of .erm tensors and their numpy equivalents."""

from __future__ import annotations

import ml_dtypes
import numpy as np

from edgerun.runtime.schema.fb.DType import DType

# Every dtype a tensor may have, in the schema's numbering. bfloat16 is numpy's
# extension type from ml_dtypes (as in JAX and TensorFlow).
_TO_NUMPY: dict[int, np.dtype] = {
    DType.FLOAT32: np.dtype(np.float32),
    DType.FLOAT16: np.dtype(np.float16),
    DType.FLOAT64: np.dtype(np.float64),
    DType.BFLOAT16: np.dtype(ml_dtypes.bfloat16),
    DType.INT8: np.dtype(np.int8),
    DType.INT16: np.dtype(np.int16),
    DType.INT32: np.dtype(np.int32),
    DType.INT64: np.dtype(np.int64),
    DType.UINT8: np.dtype(np.uint8),
    DType.UINT16: np.dtype(np.uint16),
    DType.UINT32: np.dtype(np.uint32),
    DType.UINT64: np.dtype(np.uint64),
    DType.BOOL: np.dtype(np.bool_),
}
_FROM_NUMPY: dict[np.dtype, int] = {v: k for k, v in _TO_NUMPY.items()}
_NAMES = {v: k for k, v in vars(DType).items() if not k.startswith("_")}


def dtype_name(code: int) -> str:
    """The schema's name for a dtype code, e.g. 'FLOAT32' (or 'code N')."""
    return _NAMES.get(code, f"code {code}")


def to_numpy(code: int) -> np.dtype:
    """numpy dtype for a schema dtype code; KeyError if numpy has none."""
    return _TO_NUMPY[code]


def from_numpy(dtype: np.dtype | type | str) -> int:
    """Schema dtype code for a numpy dtype; KeyError for types .erm cannot hold."""
    return _FROM_NUMPY[np.dtype(dtype).newbyteorder("=")]


def is_supported(dtype: np.dtype | type | str) -> bool:
    try:
        from_numpy(dtype)
    except (KeyError, TypeError):
        return False
    return True
