"""The backend registry (runtime.backends): selection by priority, loaders that fail,
reserved and unknown names, the cpu-only fallback."""

from __future__ import annotations

import logging

import pytest

from edgerun.runtime import backends
from edgerun.runtime.backends import backend, backend_names, register_backend, select_backend
from edgerun.runtime.errors import EdgerunError


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> dict:
    """A private registry holding only cpu, restored after the test."""
    fresh = {"cpu": backends.Backend("cpu")}
    monkeypatch.setattr(backends, "_BACKENDS", fresh)
    monkeypatch.setattr(backends, "_warned_cpu_only", False)
    monkeypatch.setattr(backends, "_warned_fallback", set())
    return fresh


def _fails() -> None:
    raise ImportError("no such compiler")


def test_auto_takes_the_highest_priority_backend_that_loads(registry: dict) -> None:
    loaded = []
    register_backend("fast", load=lambda: loaded.append("fast"), priority=5)
    register_backend("fastest", load=_fails, priority=9)
    assert backend_names() == ["fastest", "fast", "cpu"]
    assert select_backend("auto") == "fast" and loaded == ["fast"]
    assert select_backend("cpu") == "cpu"
    with pytest.raises(EdgerunError, match=r"device 'fastest' is unavailable: its kernels failed to import"):
        select_backend("fastest")


def _no_compiler() -> None:
    raise ModuleNotFoundError("No module named 'fastcc'", name="fastcc")


def test_auto_says_once_which_backend_failed_and_what_to_install(
    registry: dict, caplog: pytest.LogCaptureFixture
) -> None:
    register_backend("fast", load=_no_compiler, priority=5, requires="fastcc>=2")
    with caplog.at_level(logging.WARNING, logger="edgerun.runtime"):
        assert [select_backend("auto") for _ in range(3)] == ["cpu"] * 3
    assert [r.getMessage() for r in caplog.records] == [
        "device 'auto' runs on 'cpu' (the numpy reference kernels): backend 'fast' is unavailable "
        "(No module named 'fastcc'): pip install fastcc>=2 for its kernels"]
    with pytest.raises(EdgerunError, match=r"^device 'fast' is unavailable: its kernels failed to import "
                                           r"\(No module named 'fastcc'\): pip install fastcc>=2 for its kernels$"):
        select_backend("fast")


# what importing numba/llvmlite raises under an address-space cap, depending on where it runs out
@pytest.mark.parametrize("error", [OSError("Could not find/load shared object file 'libllvmlite.so'"),
                                   MemoryError(), SystemError("error return without exception set")])
def test_a_native_library_that_cannot_load_falls_back_like_a_missing_module(
    registry: dict, caplog: pytest.LogCaptureFixture, error: Exception
) -> None:
    def will_not_load() -> None:
        raise error

    register_backend("fast", load=will_not_load, priority=5, requires="fastcc")
    with caplog.at_level(logging.WARNING, logger="edgerun.runtime"):
        assert select_backend("auto") == "cpu"
    kind = type(error).__name__
    assert f"backend 'fast' is unavailable ({kind}: {error})" in caplog.text
    with pytest.raises(EdgerunError, match=rf"device 'fast' is unavailable: its kernels failed to import \({kind}"):
        select_backend("fast")


def test_reserved_and_unknown_names_list_the_valid_ones(registry: dict) -> None:
    register_backend("fast", priority=5)
    register_backend("tpu", reserved=True)
    with pytest.raises(EdgerunError, match=r"device 'tpu' is not available yet: use one of 'auto', 'fast', 'cpu'$"):
        select_backend("tpu")
    with pytest.raises(EdgerunError, match=r"unknown device 'gpu': valid devices are 'auto', 'fast', 'cpu', 'tpu' "
                                           r"\(available now: 'auto', 'fast', 'cpu'\)"):
        select_backend("gpu")


def test_with_only_cpu_registered_auto_runs_on_cpu_and_says_so_once(
    registry: dict, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="edgerun.runtime"):
        assert select_backend("auto") == "cpu"
        assert select_backend("auto") == "cpu"
    assert len(caplog.records) == 1 and "device 'auto' runs on 'cpu'" in caplog.records[0].getMessage()


@pytest.mark.parametrize("name", ["cpu", "auto", ""])
def test_the_runtimes_own_names_cannot_be_registered(registry: dict, name: str) -> None:
    with pytest.raises(ValueError, match="reserved by the runtime"):
        register_backend(name)


def test_devices_registers_numba_and_cuda() -> None:
    """cuda offloads from the host backends, below them in priority: device="auto" reaches it only
    through its auto_pick (a real GPU and a big enough model)."""
    assert backend_names() == ["numba", "cpu", "cuda"] and backend_names(reserved=True) == []
    assert backend("cuda").offload is not None and backend("cuda").auto_pick is not None


def test_an_offloading_backend_must_rank_below_the_host_backends() -> None:
    with pytest.raises(ValueError, match="needs a negative priority"):
        register_backend("gpu-test", load=None, priority=5, offload=lambda plan: plan)


def test_auto_offload_asks_auto_pick_and_skips_failing_probes(monkeypatch) -> None:
    monkeypatch.setattr(backends, "_BACKENDS", dict(backends._BACKENDS))
    register_backend("never", priority=-1, offload=lambda plan: plan, auto_pick=lambda macs: False)
    register_backend("broken", priority=-2, offload=lambda plan: plan, auto_pick=lambda macs: 1 / 0)
    register_backend("big", priority=-3, offload=lambda plan: plan, auto_pick=lambda macs: macs >= 1000)
    assert backends.auto_offload(999) is None
    assert backends.auto_offload(1000) == "big"
