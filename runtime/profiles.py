"""Device profiles: the limits an interpreter respects on a kind of device.

    Interpreter("mlp.erm", profile="rpi4")   # 4 threads, a 1 GiB memory budget

A profile is a plain record. The runtime owns the record and the registry; the
built-in profiles ("host", "rpi4", "phone") live in `edgerun.devices.profiles`
and register themselves when `edgerun` is imported.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgerun.runtime.errors import EdgerunError


@dataclass(frozen=True)
class DeviceProfile:
    """Limits for one kind of device.

    `num_threads`: kernel threads (>= 1). `memory_budget_bytes`: the most bytes one
    signature may hold: its activation arena plus the weights it holds (the constants it
    reads and every variable, optimizer state included; `Interpreter.memory_report`'s
    total), checked whenever the signature is prepared, before the arena is allocated;
    its constant-folded tensors are bounded by it too. It does not count the Python
    process itself (interpreter, libraries, the caller's data). `preferred_dtypes`:
    numpy dtype names, most preferred first — advice for whoever converts or quantizes
    a model for the device; the interpreter runs the dtypes the model holds.
    `work_budget_macs`: the most multiply-adds one run may take (runtime.work estimates
    them from the shapes; None = unlimited).
    """

    name: str
    num_threads: int
    memory_budget_bytes: int
    preferred_dtypes: tuple[str, ...]
    work_budget_macs: int | None = None


_PROFILES: dict[str, DeviceProfile] = {}


def register_profile(profile: DeviceProfile) -> DeviceProfile:
    """Make `profile` available by its name (replacing one of the same name); returns it.
    ValueError for a thread count below 1, a budget below 1 byte or 1 multiply-add."""
    if profile.num_threads < 1 or profile.memory_budget_bytes < 1:
        raise ValueError(f"device profile {profile.name!r}: num_threads and memory_budget_bytes must be >= 1")
    if profile.work_budget_macs is not None and profile.work_budget_macs < 1:
        raise ValueError(f"device profile {profile.name!r}: work_budget_macs must be >= 1 or None")
    _PROFILES[profile.name] = profile
    return profile


def profile_names() -> list[str]:
    """The registered profiles' names, sorted."""
    return sorted(_PROFILES)


def get_profile(name: str) -> DeviceProfile:
    """The registered profile called `name`; EdgerunError listing the known ones otherwise."""
    try:
        return _PROFILES[name]
    except KeyError:
        known = ", ".join(profile_names()) or "none registered"
        raise EdgerunError(f"unknown device profile {name!r}; known profiles: {known}") from None
