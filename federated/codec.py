"""Named arrays <-> bytes for parameters and updates on the wire (.npz, no pickle).

Decoding checks the archive against what the model expects before reading any
array: the same names, each member's uncompressed size equal to what its dtype
and shape need (so a zip bomb or an oversized member is refused unread), then
dtype, shape and finiteness. Failures raise PayloadError naming the array.
"""

from __future__ import annotations

import base64
import io
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from edgerun.runtime.errors import EdgerunError

# Room for the .npy header in front of each member's data.
_NPY_HEADER_MAX = 4096


class PayloadError(EdgerunError):
    """A parameter or update payload that does not match the model."""


Spec = tuple[np.dtype, tuple[int, ...]]


def encode_arrays(arrays: Mapping[str, np.ndarray]) -> bytes:
    """Uncompressed .npz bytes of `arrays` (names kept, order kept)."""
    stream = io.BytesIO()
    np.savez(stream, **{name: np.asarray(a, order="C") for name, a in arrays.items()})  # rank 0 stays rank 0
    return stream.getvalue()


def decode_arrays(blob: bytes, expected: Mapping[str, Spec], *, finite: bool = True) -> dict[str, np.ndarray]:
    """The arrays in `blob`, which must be exactly `expected` (name -> (dtype, shape)).

    Raises PayloadError for a malformed archive, missing or extra names, a member
    larger than its spec allows, the wrong dtype or shape, or (with `finite`)
    NaN/Inf values.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(blob))
        members = {info.filename: info for info in archive.infolist()}
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise PayloadError(f"payload is not a valid .npz archive: {exc}") from None
    names = {name.removesuffix(".npy") for name in members}
    if names != set(expected):
        missing, extra = sorted(set(expected) - names), sorted(names - set(expected))
        raise PayloadError(f"payload arrays differ from the model's: missing {missing}, unexpected {extra}")
    result = {}
    for name, (dtype, shape) in expected.items():
        info = members[f"{name}.npy"]
        limit = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize + _NPY_HEADER_MAX
        if info.file_size > limit:
            need = f"{dtype}{list(shape)}"
            raise PayloadError(f"array {name!r}: {info.file_size} bytes, more than {need} needs")
        result[name] = _read_member(archive, info, name, np.dtype(dtype), tuple(shape), finite)
    return result


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, dtype: np.dtype,
                 shape: tuple[int, ...], finite: bool) -> np.ndarray:
    try:
        with archive.open(info) as member:
            array = np.lib.format.read_array(member, allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise PayloadError(f"array {name!r} cannot be read: {exc}") from None
    if array.dtype != dtype or array.shape != shape:
        got = f"{array.dtype}{list(array.shape)}"
        raise PayloadError(f"array {name!r}: expected {dtype}{list(shape)}, got {got}")
    if finite and array.dtype.kind == "f" and not np.isfinite(array).all():
        raise PayloadError(f"array {name!r} contains NaN or Inf")
    return array


def encode_state(state: Mapping[str, Any]) -> dict[str, Any]:
    """A strategy's state as JSON: array lists become base64 .npz, scalars stay as they are."""
    arrays = {f"{key}.{i}": a for key, value in state.items() if isinstance(value, list)
              for i, a in enumerate(value)}
    scalars = {key: value for key, value in state.items() if not isinstance(value, list)}
    lists = {key: len(value) for key, value in state.items() if isinstance(value, list)}
    return {"arrays": base64.b64encode(encode_arrays(arrays)).decode(), "lists": lists, "scalars": scalars}


def decode_state(saved: Mapping[str, Any]) -> dict[str, Any]:
    """What `encode_state` encoded."""
    blob = base64.b64decode(saved["arrays"])
    with np.load(io.BytesIO(blob), allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    state: dict[str, Any] = dict(saved["scalars"])
    for key, count in saved["lists"].items():
        state[key] = [arrays[f"{key}.{i}"] for i in range(count)]
    return state
