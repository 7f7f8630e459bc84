"""Turn request inputs into numpy arrays the model accepts, or explain precisely why not.

Every failure is a ServingError(INVALID_ARGUMENT) whose message names the input and what was
expected; nothing here touches the model itself.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from edgerun.serving.datatypes import datatype_of, element_count, from_list, from_raw
from edgerun.serving.errors import invalid, quote
from edgerun.serving.types import InputTensor


def describe(info) -> str:
    """'FP32 [-1, 64]' for a TensorInfo."""
    return f"{datatype_of(info.dtype)} {list(info.shape)}"


def decode_inputs(model: str, specs: Mapping, tensors: list[InputTensor], max_batch_size: int = 0) -> dict:
    """Check `tensors` against the signature `specs` (name -> TensorInfo) and decode them.

    Returns name -> array. Raises InvalidArgument for: more inputs than the model has, a repeated or
    unknown name, a missing required input, a datatype, rank or static dimension that differs, a
    negative or absurd dimension, a batch over `max_batch_size` or first dimensions that differ
    between inputs (when max_batch_size > 0), byte lengths that do not
    match shape x datatype, and both or neither of raw and typed contents.
    """
    if len(tensors) > len(specs):
        raise invalid(f"model {model!r} takes {len(specs)} input(s) {sorted(specs)}, the request has {len(tensors)}")
    arrays: dict[str, np.ndarray] = {}
    batch: tuple[str, int] | None = None  # (first input, its batch size) when the model batches
    for tensor in tensors:
        if tensor.name in arrays:
            raise invalid(f"input {quote(tensor.name)} appears twice")
        info = specs.get(tensor.name)
        if info is None:
            raise invalid(f"unknown input {quote(tensor.name)}; model {model!r} has inputs {sorted(specs)}")
        _check_header(tensor, info, max_batch_size)
        if max_batch_size > 0 and tensor.shape:
            if batch is None:
                batch = (tensor.name, tensor.shape[0])
            elif tensor.shape[0] != batch[1]:
                raise invalid(f"input {quote(tensor.name)}: batch size {tensor.shape[0]} differs from input "
                              f"{batch[0]!r} (batch size {batch[1]}); every input needs the same first dimension")
        arrays[tensor.name] = _decode(tensor)
    missing = [name for name, info in specs.items() if name not in arrays and not info.has_default]
    if missing:
        info = specs[missing[0]]
        raise invalid(f"missing input {missing[0]!r}: model {model!r} expects {describe(info)}")
    return arrays


def _check_header(tensor: InputTensor, info, max_batch_size: int) -> None:
    want = datatype_of(info.dtype)
    if tensor.datatype != want:
        raise invalid(f"input {quote(tensor.name)}: expected datatype {want}, got {quote(tensor.datatype)}")
    shape = list(tensor.shape)
    element_count(tensor.name, shape)
    if len(shape) != len(info.shape):
        raise invalid(f"input {quote(tensor.name)}: expected shape {list(info.shape)} (rank {len(info.shape)}), "
                      f"got {shape}")
    for axis, (got, declared) in enumerate(zip(shape, info.shape, strict=True)):
        if declared >= 0 and got != declared:
            raise invalid(f"input {quote(tensor.name)}: expected shape {list(info.shape)}, got {shape} "
                          f"(dimension {axis})")
    if max_batch_size > 0 and shape and shape[0] > max_batch_size:
        raise invalid(f"input {quote(tensor.name)}: batch size {shape[0]} exceeds max_batch_size {max_batch_size}")


def _decode(tensor: InputTensor) -> np.ndarray:
    has_raw, has_values = tensor.raw is not None, tensor.values is not None
    if has_raw and has_values:
        raise invalid(f"input {quote(tensor.name)}: give either raw contents or typed contents, not both")
    if has_raw:
        return from_raw(tensor.name, tensor.datatype, tensor.shape, tensor.raw)
    if has_values:
        return from_list(tensor.name, tensor.datatype, tensor.shape, tensor.values)
    raise invalid(f"input {quote(tensor.name)}: no data (neither raw nor typed contents)")


def select_outputs(model: str, specs: Mapping, requested: Mapping | None) -> list[str]:
    """The output names to return: all of the signature's, or the requested ones in request order.
    InvalidArgument naming an unknown output."""
    if not requested:
        return list(specs)
    for name in requested:
        if name not in specs:
            raise invalid(f"unknown output {quote(name)}; model {model!r} has outputs {sorted(specs)}")
    return list(requested)
