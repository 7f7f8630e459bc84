"""Helpers that corrupt serialized models in targeted ways (for verifier tests and fuzzing)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from edgerun.runtime.flatread import FlatReader
from edgerun.runtime.format import FILE_IDENTIFIER


def raw_model(data: bytes | bytearray) -> dict[str, Any]:
    return FlatReader(data).read_root(FILE_IDENTIFIER)


def vector_offset(data: bytes | bytearray, vector: np.ndarray) -> int:
    """Byte offset in `data` of the first element of a vector view returned by FlatReader."""
    base = np.frombuffer(data, np.uint8).ctypes.data
    return vector.ctypes.data - base


def patch_vector(
    data: bytes, pick: Callable[[dict[str, Any]], np.ndarray], index: int, value: int
) -> bytes:
    """A copy of `data` with element `index` of the vector chosen by `pick` set to `value`."""
    out = bytearray(data)
    vector = pick(raw_model(out))
    pos = vector_offset(out, vector) + index * vector.dtype.itemsize
    np.frombuffer(out, vector.dtype, 1, pos)[0] = value
    return bytes(out)


def int_vectors(raw: dict[str, Any]) -> list[tuple[str, Callable[[dict[str, Any]], np.ndarray]]]:
    """(label, picker) for every index-like int vector in a model: op inputs/outputs,
    subgraph inputs/outputs and tensor shapes."""
    found = []
    for s, sub in enumerate(raw["subgraphs"]):
        for key in ("inputs", "outputs"):
            if sub[key] is not None and len(sub[key]):
                found.append((f"subgraph{s}.{key}", lambda r, s=s, k=key: r["subgraphs"][s][k]))
        for o, op in enumerate(sub["operators"] or []):
            for key in ("inputs", "outputs"):
                if op[key] is not None and len(op[key]):
                    found.append((f"op{o}.{key}",
                                  lambda r, s=s, o=o, k=key: r["subgraphs"][s]["operators"][o][k]))
        for t, tensor in enumerate(sub["tensors"] or []):
            if tensor["shape"] is not None and len(tensor["shape"]):
                found.append((f"tensor{t}.shape",
                              lambda r, s=s, t=t: r["subgraphs"][s]["tensors"][t]["shape"]))
    return found


def repoint_input(data: bytes, op_name: str, slot: int, tensor_name: str) -> bytes:
    """A copy of `data` in which input `slot` of operator `op_name` (main subgraph) reads
    tensor `tensor_name` instead: one int32 index, 4 bytes, changed."""
    sub = raw_model(data)["subgraphs"][0]
    op = next(i for i, o in enumerate(sub["operators"]) if o["name"] == op_name)
    tensor = next(i for i, t in enumerate(sub["tensors"]) if t["name"] == tensor_name)
    return patch_vector(data, lambda r: r["subgraphs"][0]["operators"][op]["inputs"], slot, tensor)
