"""What the machine we run on offers: architecture, OS, cores, memory, a CUDA GPU.

    info = detect()
    info.arch, info.cores, info.memory_bytes  # "x86_64", 8, 16_615_424_000

Every probe degrades to a safe answer instead of raising: a GPU that cannot be
queried counts as absent, an unreadable memory size as 0 (unknown).
"""

from __future__ import annotations

import importlib
import os
import platform
from dataclasses import dataclass
from pathlib import Path

_ARCH_ALIASES = {
    "x86_64": "x86_64",
    "amd64": "x86_64",  # Windows, BSDs
    "x64": "x86_64",
    "aarch64": "aarch64",
    "arm64": "aarch64",  # macOS, Windows
}


@dataclass(frozen=True)
class HostInfo:
    """The host as detected once; see `detect`.

    `arch` is "x86_64", "aarch64" or another lower-case machine name; `os` is
    the lower-case system name ("linux", "darwin", "windows"); `cores` counts
    the logical CPUs this process may run on; `memory_bytes` is the physical
    memory in bytes (0 if unknown); `python` is the interpreter version.
    """

    arch: str
    os: str
    cores: int
    memory_bytes: int
    has_cuda: bool
    python: str


def detect() -> HostInfo:
    """Probe the host. Never raises; imports numba (slow, ~0.5 s) to ask about CUDA."""
    return HostInfo(
        arch=normalize_arch(platform.machine()),
        os=platform.system().lower(),
        cores=logical_cores(),
        memory_bytes=total_memory_bytes(),
        has_cuda=cuda_available(),
        python=platform.python_version(),
    )


def normalize_arch(machine: str) -> str:
    """Map a `platform.machine()` name to "x86_64" / "aarch64"; other names are lower-cased."""
    name = machine.strip().lower()
    return _ARCH_ALIASES.get(name, name)


def logical_cores() -> int:
    """Logical CPUs this process may use (its affinity mask when the OS has one); >= 1.

    CPU quotas of containers (cgroups) are not taken into account.
    """
    if hasattr(os, "sched_getaffinity"):
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except OSError:
            pass
    return max(1, os.cpu_count() or 1)


def physical_cores(sysfs: Path = Path("/sys/devices/system/cpu")) -> int:
    """Physical cores among the CPUs this process may use: distinct (package, core) pairs of
    Linux's CPU topology, so SMT siblings count once; logical_cores() where the topology cannot
    be read. >= 1."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    cores = set()
    for cpu in cpus:
        topology = sysfs / f"cpu{cpu}" / "topology"
        try:
            cores.add(((topology / "physical_package_id").read_text().strip(),
                       (topology / "core_id").read_text().strip()))
        except OSError:
            return logical_cores()
    return max(1, len(cores)) if cores else logical_cores()


def total_memory_bytes(meminfo: Path = Path("/proc/meminfo")) -> int:
    """Physical memory in bytes: MemTotal of `meminfo`, else sysconf pages; 0 if unknown."""
    total = _read_mem_total(meminfo)
    if total:
        return total
    try:
        return max(0, os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, OSError, ValueError):
        return 0


def _read_mem_total(meminfo: Path) -> int:
    """MemTotal from a /proc/meminfo-style file in bytes; 0 if absent or unreadable."""
    try:
        lines = meminfo.read_text().splitlines()
    except OSError:
        return 0
    for line in lines:
        key, _, rest = line.partition(":")
        fields = rest.split()
        if key == "MemTotal" and fields and fields[0].isdigit():
            unit = fields[1].lower() if len(fields) > 1 else ""
            return int(fields[0]) * (1024 if unit == "kb" else 1)
    return 0


def cuda_available() -> bool:
    """Whether numba-cuda sees a real, usable CUDA GPU (numba's simulator is none). Any failure
    (no numba-cuda, no driver) means False."""
    try:
        return bool(importlib.import_module("edgerun.devices.cuda").gpu_present())
    except Exception:  # a broken CUDA setup is just "no GPU" here
        return False
