"""Sorted-key lookup: where keys stand in a sorted table (tree nodes by id, OneHotEncoder's
categories), and `Table`, the key -> value map of LabelEncoder and CategoryMapper. Keys are
numbers or strings (object arrays of str, compared as Python compares str)."""

from __future__ import annotations

import numpy as np


def find(sorted_keys: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(positions, found) of `keys` in `sorted_keys` (both numeric, or both strings)."""
    at = np.clip(np.searchsorted(sorted_keys, keys), 0, max(len(sorted_keys) - 1, 0))
    found = (sorted_keys[at] == keys).astype(bool) if len(sorted_keys) else np.zeros(len(keys), bool)
    return at, found


class Table:
    """keys[i] -> values[i] (1-D arrays of the same length), `default` (a 0-d array of the
    values' dtype) for a key not in the table. A key given twice maps to its last value; a
    NaN key matches every NaN, and 0.0 and -0.0 are the same key."""

    def __init__(self, keys: np.ndarray, values: np.ndarray, default: np.ndarray) -> None:
        nan = np.isnan(keys) if keys.dtype.kind == "f" else np.zeros(len(keys), bool)
        self.nan_value = values[nan][-1] if nan.any() else None
        self.keys, first = np.unique(keys[~nan][::-1], return_index=True)
        self.values = values[~nan][::-1][first]
        self.default = default

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """The values of `x`'s elements, in x's shape."""
        flat = x.reshape(-1)
        at, found = find(self.keys, flat)
        y = np.where(found, self.values[at] if self.values.size else self.default, self.default)
        if self.nan_value is not None:
            y = np.where(np.isnan(flat), self.nan_value, y)
        return y.astype(self.values.dtype, copy=False).reshape(x.shape)
