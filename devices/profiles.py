"""The built-in device profiles, registered into the runtime's profile registry on import.

    Interpreter("mlp.erm", profile="rpi4")   # 4 threads, 1 GiB memory budget
    get_profile("rpi4").num_threads          # 4

A profile is a plain record (`runtime.profiles.DeviceProfile`); the interpreter
takes its thread count and checks arena plus weights against the memory budget. The
preferred dtypes (most preferred first; numpy dtype names) advise converters.
"""

from __future__ import annotations

from edgerun.devices.host import logical_cores, total_memory_bytes
from edgerun.runtime.profiles import DeviceProfile, get_profile, register_profile

__all__ = ["PHONE", "PROFILES", "RPI4", "RPI_ZERO2", "DeviceProfile", "get_profile", "host_profile"]

MiB = 1 << 20
GiB = 1 << 30


def host_profile() -> DeviceProfile:
    """The machine we run on: every usable core, half the physical memory (1 GiB if unknown).

    Half leaves room for the OS, the Python process and the caller's own data.
    """
    memory = total_memory_bytes()
    return DeviceProfile(
        name="host",
        num_threads=logical_cores(),
        memory_budget_bytes=memory // 2 if memory else GiB,
        preferred_dtypes=("float32",),
    )


# Raspberry Pi 4 Model B: BCM2711, 4x Cortex-A72 (ARMv8.0-A, NEON, no FP16 arithmetic,
# no dot-product instructions) at 1.5-1.8 GHz, sold with 1, 2, 4 or 8 GB LPDDR4.
# 4 threads = one per core. 1 GiB = half of the common 2 GB board, the rest is for
# Raspberry Pi OS and the application. int8 first: a quantized model moves a quarter of
# the bytes of a float32 one through the A72's narrow memory bus; float32 is the fallback
# (without FP16 arithmetic, float16 would only be converted back to float32).
RPI4 = DeviceProfile(
    name="rpi4",
    num_threads=4,
    memory_budget_bytes=1 * GiB,
    preferred_dtypes=("int8", "float32"),
)

# Raspberry Pi Zero 2 W: RP3A0 (BCM2710A1), 4x Cortex-A53 (ARMv8.0-A, NEON, in-order) at 1 GHz,
# 512 MB LPDDR2 shared with the GPU. 4 threads = one per core. 256 MiB = half the board's
# memory, as for the Pi 4: Raspberry Pi OS Lite, the GPU's share and the Python process take
# the rest. int8 first for the same reason as the Pi 4, and more so on its slower memory.
RPI_ZERO2 = DeviceProfile(
    name="rpi-zero2",
    num_threads=4,
    memory_budget_bytes=256 * MiB,
    preferred_dtypes=("int8", "float32"),
)

# A mid-range Android phone (2020+): big.LITTLE SoC with 2-4 big cores (e.g. Cortex-A76/A78)
# plus efficiency cores, ARMv8.2-A (FP16 arithmetic and int8 dot product), 4-8 GB RAM.
# 4 threads: about the number of big cores; work split onto the little cores finishes
# last and holds every op back. 512 MiB: the per-app heap limit (dalvik.vm.heapsize) is
# commonly 256-512 MB, and the low-memory killer reclaims apps with much larger footprints.
PHONE = DeviceProfile(
    name="phone",
    num_threads=4,
    memory_budget_bytes=512 * MiB,
    preferred_dtypes=("int8", "float16", "float32"),
)

PROFILES: dict[str, DeviceProfile] = {p.name: register_profile(p) for p in (host_profile(), RPI_ZERO2, RPI4, PHONE)}
