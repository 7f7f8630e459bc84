"""devices: where a model runs — host detection, device profiles, backend selection.

select_backend("auto")      # "cpu"
get_profile("rpi4")         # DeviceProfile(name="rpi4", num_threads=4, ...)
detect().arch               # "x86_64" or "aarch64"
"""

from __future__ import annotations

from devices.host import HostInfo, detect
from devices.profiles import DeviceProfile, get_profile
from runtime.errors import EdgerunError

__all__ = ["AVAILABLE_BACKENDS", "DeviceProfile", "HostInfo", "detect", "get_profile", "select_backend"]

AVAILABLE_BACKENDS = ("cpu",)  # cpu = the numpy reference kernels
RESERVED_BACKENDS = ("numba", "cuda")  # names of backends still to come


def select_backend(device: str) -> str:
    """The backend to run on for a `device` request: "auto" and "cpu" give "cpu".

    Raises EdgerunError for "numba" and "cuda" (reserved, not implemented yet)
    and for any other name; both messages list the names that work.
    """
    available = ", ".join(repr(name) for name in ("auto", *AVAILABLE_BACKENDS))
    if device == "auto":
        return AVAILABLE_BACKENDS[0]
    if device in AVAILABLE_BACKENDS:
        return device
    if device in RESERVED_BACKENDS:
        raise EdgerunError(f"device {device!r} is not available yet: use one of {available}")
    valid = ", ".join(repr(name) for name in ("auto", *AVAILABLE_BACKENDS, *RESERVED_BACKENDS))
    raise EdgerunError(f"unknown device {device!r}: valid devices are {valid} (available now: {available})")
