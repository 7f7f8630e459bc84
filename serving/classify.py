"""Triton's classification extension: instead of an output tensor, the top `count` entries of its
last axis as BYTES strings "<value>:<index>", highest value first.

A request asks for it with the output parameter `classification` (tritonclient's
`InferRequestedOutput(name, class_count=k)`). An output of shape [..., N] becomes [..., min(k, N)]:
[batch, k] for the usual [batch, N] scores. Ties go to the lower index; NaN ranks below every
number. Labels (Triton's `label_filename`) are not supported: the strings carry no third part.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from edgerun.serving.errors import invalid, quote


def classification_counts(requested: Mapping[str, Mapping[str, Any]] | None) -> dict[str, int]:
    """Output name -> how many classes each requested output asks for (outputs that do not ask
    are left out). InvalidArgument for a count that is not a positive integer."""
    counts = {}
    for name, params in (requested or {}).items():
        count = params.get("classification")
        if count is None:
            continue
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise invalid(f"output {quote(name)}: classification count must be a positive integer, got {quote(count)}")
        counts[name] = count
    return counts


def classify(name: str, array: np.ndarray, count: int) -> np.ndarray:
    """The top `count` entries of `array`'s last axis as b"<value>:<index>" (object array of
    bytes). InvalidArgument for a scalar or a non-numeric output."""
    if array.ndim == 0 or array.dtype.kind not in "biuf":
        raise invalid(f"output {name!r}: classification needs a numeric output with at least one axis, "
                      f"got {array.dtype} {list(array.shape)}")
    keys = array.astype(np.float64) if array.dtype.kind == "f" else array.astype(np.int64)
    if array.dtype.kind == "f":
        keys = np.where(np.isnan(keys), -np.inf, keys)
    size = array.shape[-1]
    # descending and stable (ties to the lower index): sort the reversed axis ascending, stably
    order = np.argsort(keys[..., ::-1], axis=-1, kind="stable")[..., ::-1]
    top = (size - 1 - order)[..., :min(count, size)]
    values = np.take_along_axis(array, top, axis=-1)
    number = "{:f}" if array.dtype.kind == "f" else "{:d}"
    text = [(number.format(v.item() if array.dtype.kind == "f" else int(v)) + f":{i}").encode()
            for v, i in zip(values.ravel(), top.ravel(), strict=True)]
    result = np.empty(values.shape, dtype=object)
    result.ravel()[:] = text
    return result
