"""The "cuda" backend: the same .erm plans on an NVIDIA GPU.

`Interpreter(model, device="cuda")` prepares every signature with the host kernels, then runs
its steps on the GPU where a device kernel claims the op (devices.cuda.claims) and on the
host elsewhere, copying only what crosses (devices.cuda.program). Kernels are numba-cuda
(`numba-cuda`, numba's CUDA target) plus cuBLAS through CuPy for GEMM when CuPy is installed;
a fixed-shape run is captured into a CUDA graph and replayed (devices.cuda.graphs).

    pip install 'edgerun[cuda]'                  # numba-cuda and CuPy
    Interpreter("mobilenet.erm", device="cuda")
    interpreter.placement()                      # node -> "device" | "host"

Without numba-cuda, a driver or a GPU, importing edgerun still works and device="cuda" raises
one EdgerunError saying what is missing; device="auto" picks cuda only when a real GPU is
present and the model needs at least AUTO_MIN_MACS multiply-adds a run. The suite runs the
kernels under numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1): loadable, never picked by auto.
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.util
import logging
import os
import sys

_log = logging.getLogger("edgerun.devices.cuda")

AUTO_MIN_MACS = 100_000_000  # below this a batch-1 run is launch-bound: the host is as fast
# the NVIDIA driver's library, as numba-cuda loads it; None where there is no CUDA driver at all
DRIVER_LIBRARY = {"linux": "libcuda.so.1", "win32": "nvcuda.dll"}.get(sys.platform)
KERNEL_MODULES = ("elementwise", "layout", "gemm", "conv", "spatial", "normalization", "training")
_gpu_present: bool | None = None
_said_small = False


def load() -> None:
    """Make the cuda kernels available; ImportError saying what is missing otherwise."""
    if importlib.util.find_spec("numba_cuda") is None:
        raise ImportError("numba-cuda is not installed")
    from numba import cuda
    from numba.core import config

    if not config.ENABLE_CUDASIM and not cuda.is_available():
        raise ImportError("no NVIDIA GPU with a working driver was found")
    for name in KERNEL_MODULES:
        importlib.import_module(f"{__name__}.{name}")


def driver_loadable() -> bool:
    """Whether the NVIDIA driver's library loads in this process: a few milliseconds, where
    importing numba-cuda to ask it takes a quarter of a second (loading the library starts
    nothing on the GPU). False on platforms with no CUDA driver."""
    if DRIVER_LIBRARY is None:
        return False
    try:
        ctypes.CDLL(DRIVER_LIBRARY)
    except OSError:
        return False
    return True


def gpu_present() -> bool:
    """Whether a real NVIDIA GPU is usable here (never under the simulator); probed once. A
    machine without the driver's library answers without importing numba-cuda."""
    global _gpu_present
    if _gpu_present is None:
        _gpu_present = False
        simulated = os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")
        if not simulated and driver_loadable() and importlib.util.find_spec("numba_cuda") is not None:
            try:
                from numba import cuda
                from numba.core import config

                _gpu_present = not config.ENABLE_CUDASIM and bool(cuda.is_available())
            except Exception:  # noqa: BLE001 - a broken driver is no GPU
                _gpu_present = False
    return _gpu_present


def auto_pick(macs: int) -> bool:
    """Whether device="auto" should run a model of `macs` multiply-adds a run on the GPU. A small
    model never probes for a GPU (probing starts the CUDA driver in this process, which a
    process that forks later should not have); it says why it stays on the host only when a
    GPU is already known to be there."""
    global _said_small
    if macs < AUTO_MIN_MACS:
        if _gpu_present and not _said_small:
            _said_small = True
            _log.info(f"device 'auto' runs on the host: a GPU is present but the model needs {macs:,} "
                      f"multiply-adds a run, below the {AUTO_MIN_MACS:,} where the GPU pays (device='cuda' forces it)")
        return False
    if not gpu_present():
        return False
    _log.info(f"device 'auto' runs on 'cuda': {macs:,} multiply-adds a run")
    return True


def offload(plan: object) -> object:
    """The runner that puts `plan`'s steps on the GPU (runtime.backends.Backend.offload)."""
    from edgerun.devices.cuda.program import CudaRunner

    return CudaRunner(plan)
