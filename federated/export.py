"""The global model as a loadable .erm: the coordinator's trainable model with its variables
set to a round's aggregated parameters.

The coordinator's store keeps each global model version as the encoded parameters only
(federated.codec .npz bytes, by the names of the model's `save` signature), beside the
model file it was started with. `global_model` puts them back into that model, so the
result runs inference with them and its `save` signature returns them; training state
the rounds do not exchange (optimizer momentum and moments) keeps the model's values.

    write_global_model(Path("mlp.train.erm").read_bytes(), parameters, "global.erm")
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from edgerun.runtime.errors import InputError
from edgerun.runtime.loader import load_model
from edgerun.runtime.writer import serialize


def global_model(model_bytes: bytes, parameters: Mapping[str, np.ndarray]) -> bytes:
    """The .erm bytes of the trainable model `model_bytes` with each variable named in
    `parameters` set to that array.

    `parameters` must be exactly what the model's `save` signature returns: the same
    names, dtypes and shapes. Raises InputError naming the first difference (nothing is
    written anywhere), ModelError when `model_bytes` is not a valid .erm model.
    """
    graph = load_model(model_bytes)
    if "save" not in graph.signatures:
        raise InputError("the model has no 'save' signature: not a trainable model (see 'edgerun make-trainable')")
    variables = graph.signatures["save"].outputs
    missing, extra = sorted(set(variables) - set(parameters)), sorted(set(parameters) - set(variables))
    if missing or extra:
        raise InputError(f"parameters differ from the model's variables: missing {missing}, unexpected {extra}")
    for name, value in variables.items():
        array = np.asarray(parameters[name])
        want = np.asarray(value.data)
        if array.dtype != want.dtype or array.shape != want.shape:
            raise InputError(f"parameter {name!r}: expected {want.dtype}{list(want.shape)}, "
                             f"got {array.dtype}{list(array.shape)}")
        value.data = np.array(array)  # a copy the caller cannot change under the model
    return serialize(graph)


def check_output_path(path: str | os.PathLike) -> None:
    """InputError unless `path` can name a file to write: not a directory, in a folder that exists."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a directory; name the .erm file to write")
    if not path.parent.is_dir():
        raise InputError(f"{path}: the folder {str(path.parent)!r} does not exist")


def write_global_model(model_bytes: bytes, parameters: Mapping[str, np.ndarray], path: str | os.PathLike) -> Path:
    """Write `global_model(model_bytes, parameters)` to `path` atomically (a temporary file in
    the same folder, then os.replace): readers see the old file or the new one, never a part.
    Returns the path. InputError when `path` is a directory or its folder does not exist
    (nothing written), and as `global_model` raises."""
    path = Path(path)
    check_output_path(path)
    data = global_model(model_bytes, parameters)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # as open() would make it (mkstemp makes it 0600)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _umask() -> int:
    """The process's umask, read without changing it (os.umask would, for every thread, for a
    moment); 0o022 where the system does not say."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


__all__ = ["check_output_path", "global_model", "write_global_model"]
