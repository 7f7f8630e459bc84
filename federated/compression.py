"""Update compression for plain (not secure-aggregated) uploads.

  "int8"      per-tensor scale s = max|x| / 127 and q = floor(x / s + u), u ~ U[0, 1):
              stochastic rounding, so E[q * s] = x (unbiased); 1 byte per value + 4 per tensor.
  "topk:F"    the ceil(F * size) largest-magnitude values of each tensor as (uint32 index,
              float32 value) pairs; the rest are zero (biased; pair it with small F only
              when clients keep error feedback, which these clients do not).
  "none"      float deltas as they are.
Under secure aggregation the equivalent is reduced-bit fixed point (SecAggOptions.bits).
Payloads are .npz archives checked by federated.codec before anything is read.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping

import numpy as np

from edgerun.federated.codec import PayloadError, Spec, decode_arrays, encode_arrays

Arrays = dict[str, np.ndarray]


def parse(method: str) -> tuple[str, float]:
    """("none" | "int8" | "topk", fraction). ValueError for anything else."""
    if method in ("none", "int8"):
        return method, 1.0
    if method.startswith("topk:"):
        fraction = float(method.removeprefix("topk:"))
        if 0 < fraction <= 1:
            return "topk", fraction
    raise ValueError(f"compression must be none, int8 or topk:F with 0 < F <= 1, got {method!r}")


def compress(arrays: Mapping[str, np.ndarray], method: str, rng: np.random.Generator | None = None) -> bytes:
    """The upload payload of `arrays` under `method`."""
    kind, fraction = parse(method)
    if kind == "none":
        return encode_arrays(arrays)
    out: Arrays = {}
    if kind == "int8":
        rng = rng or np.random.default_rng(secrets.randbits(64))
        for name, a in arrays.items():
            x = np.asarray(a, dtype=np.float64)
            peak = float(np.abs(x).max()) if x.size else 0.0
            scale = peak / 127 if peak > 0 else 1.0
            q = np.floor(x / scale + rng.random(x.shape))
            out[name] = np.clip(q, -127, 127).astype(np.int8)
            out[f"{name}::scale"] = np.asarray([scale], dtype=np.float32)
        return encode_arrays(out)
    for name, a in arrays.items():
        flat = np.asarray(a, dtype=np.float32).ravel()
        k = max(1, math.ceil(fraction * flat.size))
        index = np.sort(np.argpartition(np.abs(flat), flat.size - k)[flat.size - k :]).astype(np.uint32)
        out[f"{name}::index"], out[f"{name}::value"] = index, flat[index]
    return encode_arrays(out)


def payload_spec(spec: Mapping[str, Spec], method: str) -> dict[str, Spec]:
    """What a payload compressed with `method` must contain for a model with `spec`."""
    kind, fraction = parse(method)
    if kind == "none":
        return dict(spec)
    out: dict[str, Spec] = {}
    for name, (_, shape) in spec.items():
        size = int(np.prod(shape, dtype=np.int64))
        if kind == "int8":
            out[name], out[f"{name}::scale"] = (np.dtype(np.int8), tuple(shape)), (np.dtype(np.float32), (1,))
        else:
            k = max(1, math.ceil(fraction * size))
            out[f"{name}::index"], out[f"{name}::value"] = (np.dtype(np.uint32), (k,)), (np.dtype(np.float32), (k,))
    return out


def decompress(blob: bytes, spec: Mapping[str, Spec], method: str) -> Arrays:
    """Dense arrays in the model's dtypes. PayloadError for a payload that does not match
    `spec` under `method` (names, sizes, dtypes, non-finite values, indices out of range or
    repeated, a non-positive int8 scale)."""
    kind, _ = parse(method)
    parts = decode_arrays(blob, payload_spec(spec, method))
    if kind == "none":
        return parts
    out: Arrays = {}
    for name, (dtype, shape) in spec.items():
        if kind == "int8":
            scale = float(parts[f"{name}::scale"][0])
            if not scale > 0:
                raise PayloadError(f"array {name!r}: int8 scale must be > 0, got {scale}")
            out[name] = (parts[name].astype(np.float64) * scale).astype(dtype)
            continue
        index, value = parts[f"{name}::index"], parts[f"{name}::value"]
        size = int(np.prod(shape, dtype=np.int64))
        if index.size and (int(index.max()) >= size or np.unique(index).size != index.size):
            raise PayloadError(f"array {name!r}: top-k indices out of range or repeated")
        dense = np.zeros(size, dtype=dtype)
        dense[index] = value
        out[name] = dense.reshape(shape)
    return out
