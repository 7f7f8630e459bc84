"""devices: where a model runs — host detection, device profiles, backend selection.

select_backend("auto")      # "numba" (compiled fast paths over the numpy reference kernels)
get_profile("rpi4")         # DeviceProfile(name="rpi4", num_threads=4, ...)
detect().arch               # "x86_64" or "aarch64"
"""

from __future__ import annotations

import importlib

from edgerun.devices.host import HostInfo, detect
from edgerun.devices.profiles import DeviceProfile, get_profile
from edgerun.runtime.errors import EdgerunError

__all__ = ["AVAILABLE_BACKENDS", "DeviceProfile", "HostInfo", "detect", "get_profile", "select_backend"]

# cpu = the numpy reference kernels only; numba = cpu plus compiled fast paths.
AVAILABLE_BACKENDS = ("numba", "cpu")
RESERVED_BACKENDS = ("cuda",)  # names of backends still to come
_BACKEND_MODULES = {"numba": "edgerun.devices.numba_kernels"}


def select_backend(device: str) -> str:
    """The backend to run on for a `device` request, with its kernels registered.

    "auto" gives the fastest available backend ("numba", or "cpu" when numba
    cannot be imported); "cpu" and "numba" give themselves. Raises EdgerunError
    for "cuda" (reserved, not implemented yet), for "numba" when numba is not
    importable, and for any other name; each message lists the names that work.
    """
    available = ", ".join(repr(name) for name in ("auto", *AVAILABLE_BACKENDS))
    if device == "auto":
        return "numba" if _load("numba") else "cpu"
    if device == "cpu":
        return device
    if device in _BACKEND_MODULES:
        if not _load(device):
            raise EdgerunError(f"device {device!r} is unavailable: its kernels failed to import")
        return device
    if device in RESERVED_BACKENDS:
        raise EdgerunError(f"device {device!r} is not available yet: use one of {available}")
    valid = ", ".join(repr(name) for name in ("auto", *AVAILABLE_BACKENDS, *RESERVED_BACKENDS))
    raise EdgerunError(f"unknown device {device!r}: valid devices are {valid} (available now: {available})")


def _load(backend: str) -> bool:
    """Import a backend's kernel module (which registers its kernels); False if it fails."""
    try:
        importlib.import_module(_BACKEND_MODULES[backend])
    except ImportError:
        return False
    return True
