"""devices: where a model runs — host detection, device profiles, the backends.

Importing this package (the root package `edgerun` does) registers the backends
into the runtime's backend registry and the built-in profiles into its profile
registry; the runtime itself never imports `devices`.

select_backend("auto")      # "numba" (compiled fast paths over the numpy reference kernels)
get_profile("rpi4")         # DeviceProfile(name="rpi4", num_threads=4, ...)
detect().arch               # "x86_64" or "aarch64"
"""

from __future__ import annotations

import importlib
import threading

from edgerun.devices.host import HostInfo, detect
from edgerun.devices.profiles import DeviceProfile, get_profile
from edgerun.runtime.backends import register_backend, select_backend

__all__ = ["DeviceProfile", "HostInfo", "detect", "get_profile", "select_backend"]

NUMBA_KERNELS = "edgerun.devices.numba_kernels"
CUDA = "edgerun.devices.cuda"


def _load_numba() -> None:
    """Import the numba kernels (registering them); ImportError when numba is missing. Off the
    main thread (a quick start's upgrade: runtime.quick_start) numba's registries load too."""
    kernels = importlib.import_module(NUMBA_KERNELS)
    if threading.current_thread() is not threading.main_thread():
        kernels.load_registries()


# cpu (the numpy reference kernels) is the runtime's own; numba = cpu plus compiled fast paths.
# Without numba (no wheels for 32-bit ARM, some phones) "auto" runs on cpu and says once what to install.
register_backend("numba", load=_load_numba, priority=10, requires="numba")


def _load_cuda() -> None:
    """Import the cuda kernels; ImportError when numba-cuda, a driver or a GPU is missing."""
    importlib.import_module(CUDA).load()


def _cuda_offload(plan: object) -> object:
    return importlib.import_module(CUDA).offload(plan)


def _cuda_auto_pick(macs: int) -> bool:
    return importlib.import_module(CUDA).auto_pick(macs)


# cuda runs what its kernels claim on an NVIDIA GPU and the rest on the best host backend;
# "auto" reaches it only for a big enough model on a real GPU (devices.cuda.auto_pick).
register_backend("cuda", load=_load_cuda, priority=-10, requires="'edgerun[cuda]'",
                 offload=_cuda_offload, auto_pick=_cuda_auto_pick)
