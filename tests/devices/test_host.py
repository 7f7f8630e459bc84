"""Tests for devices: host detection, built-in profiles, backend selection."""

from __future__ import annotations

import os
import platform
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from edgerun.devices import host, select_backend
from edgerun.devices.profiles import PROFILES, DeviceProfile, get_profile
from edgerun.runtime.errors import EdgerunError


def test_detect_reports_plausible_values() -> None:
    info = host.detect()
    assert info.arch == host.normalize_arch(platform.machine())
    assert info.os == platform.system().lower()
    assert 1 <= info.cores <= (os.cpu_count() or 1)
    assert info.memory_bytes > 0
    assert isinstance(info.has_cuda, bool)
    assert info.python == platform.python_version()


@pytest.mark.parametrize(
    ("machine", "arch"),
    [
        ("x86_64", "x86_64"),
        ("AMD64", "x86_64"),
        ("aarch64", "aarch64"),
        ("arm64", "aarch64"),
        ("riscv64", "riscv64"),
        ("ARMv7l", "armv7l"),
    ],
)
def test_arch_names_are_normalized(machine: str, arch: str) -> None:
    assert host.normalize_arch(machine) == arch


def test_cores_follow_the_affinity_mask(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 2}, raising=False)
    assert host.logical_cores() == 2


def test_cores_fall_back_to_cpu_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert host.logical_cores() == 1


def test_memory_is_read_from_meminfo_in_bytes(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:        2048 kB\nMemFree:         1024 kB\n")
    assert host.total_memory_bytes(meminfo) == 2048 * 1024


def test_memory_falls_back_to_sysconf(tmp_path: Path) -> None:
    if not hasattr(os, "sysconf"):
        pytest.skip("no os.sysconf on this platform")
    expected = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert host.total_memory_bytes(tmp_path / "missing") == expected


def test_a_failing_cuda_probe_means_no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> bool:
        raise RuntimeError("CUDA driver library not found")

    monkeypatch.setitem(sys.modules, "numba.cuda", types.SimpleNamespace(is_available=broken))
    assert host.cuda_available() is False


def test_missing_numba_means_no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "numba.cuda", None)  # makes the import raise ImportError
    assert host.cuda_available() is False


@pytest.mark.parametrize("name", ["rpi-zero2", "rpi4", "phone", "host"])
def test_builtin_profiles_are_usable(name: str) -> None:
    profile = get_profile(name)
    assert isinstance(profile, DeviceProfile) and profile.name == name
    assert profile.num_threads >= 1
    assert profile.memory_budget_bytes > 0
    assert profile.preferred_dtypes
    assert all(np.dtype(d).name == d for d in profile.preferred_dtypes)


def test_rpi4_profile_matches_the_board() -> None:
    assert get_profile("rpi4") == DeviceProfile("rpi4", 4, 1 << 30, ("int8", "float32"))


def test_rpi_zero2_profile_matches_the_board() -> None:
    # 512 MB board, half of it for the model: four Cortex-A53 cores
    assert get_profile("rpi-zero2") == DeviceProfile("rpi-zero2", 4, 256 << 20, ("int8", "float32"))


def test_host_profile_uses_the_detected_host() -> None:
    info, profile = host.detect(), get_profile("host")
    assert profile.num_threads == info.cores
    assert profile.memory_budget_bytes == info.memory_bytes // 2


def test_unknown_profile_lists_the_known_ones() -> None:
    with pytest.raises(EdgerunError, match=r"unknown device profile 'tpu'; known profiles: host, phone"):
        get_profile("tpu")
    assert set(PROFILES) == {"host", "rpi-zero2", "rpi4", "phone"}


@pytest.mark.parametrize(("device", "backend"), [("auto", "numba"), ("cpu", "cpu"), ("numba", "numba")])
def test_select_backend(device: str, backend: str) -> None:
    assert select_backend(device) == backend


def test_auto_falls_back_to_cpu_without_numba(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "edgerun.devices.numba_kernels", None)  # import raises ImportError
    assert select_backend("auto") == "cpu"
    with pytest.raises(EdgerunError, match="'numba' is unavailable"):
        select_backend("numba")


def test_reserved_backends_are_not_available_yet(monkeypatch: pytest.MonkeyPatch) -> None:
    from edgerun.runtime import backends

    monkeypatch.setitem(backends._BACKENDS, "tpu", backends.Backend("tpu", reserved=True))
    with pytest.raises(EdgerunError, match=r"device 'tpu' is not available yet: .*'cpu'"):
        select_backend("tpu")


@pytest.mark.parametrize("device", ["gpu", "CPU", ""])
def test_unknown_devices_list_the_valid_names(device: str) -> None:
    with pytest.raises(EdgerunError, match=r"unknown device .*'auto', 'numba', 'cpu', 'cuda'"):
        select_backend(device)


def test_physical_cores_count_smt_siblings_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Four logical CPUs on two cores of one package (SMT): two physical cores."""
    monkeypatch.setattr(host.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    for cpu, core in enumerate((0, 1, 0, 1)):
        topology = tmp_path / f"cpu{cpu}" / "topology"
        topology.mkdir(parents=True)
        (topology / "physical_package_id").write_text("0\n")
        (topology / "core_id").write_text(f"{core}\n")
    assert host.physical_cores(tmp_path) == 2


def test_physical_cores_fall_back_to_logical_cores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host.os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    assert host.physical_cores(tmp_path) == 3  # no topology files to read
    assert 1 <= host.physical_cores() <= host.logical_cores()
