"""Device profiles in the interpreter: a profile's thread count and memory budget take
effect; explicit arguments win; unknown names list the known ones."""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from edgerun.runtime import DeviceProfile, Interpreter, get_profile, serialize
from edgerun.runtime.errors import EdgerunError, MemoryBudgetError
from edgerun.runtime.profiles import profile_names
from tests.runtime.graphs import add_relu_graph, mlp_graph

WIDE_MLP = (64, 4096, 10)  # a 4096-float hidden layer: 32 KiB of arena at batch 1, 1.2 MiB of weights


def _blas_threads() -> set[int]:
    return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}


def test_builtin_profiles_are_registered() -> None:
    assert profile_names() == ["host", "phone", "rpi-zero2", "rpi4"]
    assert get_profile("rpi4") == DeviceProfile("rpi4", 4, 1 << 30, ("int8", "float32"))


def test_a_profile_sets_threads_and_memory_budget() -> None:
    if not _blas_threads():
        pytest.skip("threadpoolctl finds no BLAS library to limit")
    with threadpool_limits(limits=None):  # restores the process-wide BLAS pool afterwards
        it = Interpreter(serialize(add_relu_graph()), profile="rpi4")
        assert (it.num_threads, it.memory_budget, it.profile.name) == (4, 1 << 30, "rpi4")
        assert _blas_threads() == {4}
        narrow = DeviceProfile("narrow", 1, 1 << 20, ("float32",))
        Interpreter(serialize(add_relu_graph()), profile=narrow)
        assert _blas_threads() == {1}


def test_explicit_arguments_win_over_the_profile() -> None:
    with threadpool_limits(limits=None):
        it = Interpreter(serialize(add_relu_graph()), profile="phone", num_threads=2, memory_budget=4096)
    assert (it.num_threads, it.memory_budget) == (2, 4096)


def test_a_budget_too_small_for_arena_and_weights_names_both_and_the_profile() -> None:
    # the budget covers arena + weights (1.2 MiB of weights here), not the arena alone
    tiny = DeviceProfile("tiny", 1, 64 * 1024, ("float32",))  # the 32 KiB arena alone would fit
    with threadpool_limits(limits=None):
        with pytest.raises(MemoryBudgetError, match=r"arena 32\.0 KiB \+ weights 1\.2 MiB = (\d+) bytes, over the "
                                                    r"memory budget of 65536 \(64\.0 KiB, device profile 'tiny'\)"):
            Interpreter(serialize(mlp_graph(WIDE_MLP)), profile=tiny)
        roomy = DeviceProfile("roomy", 1, 2 << 20, ("float32",))
        it = Interpreter(serialize(mlp_graph(WIDE_MLP)), profile=roomy)
    assert it.run({"x": np.ones((1, 64), np.float32)})["y"].shape == (1, 10)
    assert 8192 < it.peak_activation_bytes <= 64 * 1024 < it.memory_report().total_bytes <= 2 << 20


def test_unknown_profile_lists_the_known_ones() -> None:
    known = "host, phone, rpi-zero2, rpi4"
    with pytest.raises(EdgerunError, match=rf"unknown device profile 'tpu'; known profiles: {known}$"):
        Interpreter(serialize(add_relu_graph()), profile="tpu")
    with pytest.raises(EdgerunError, match="profile must be a DeviceProfile or a profile name, not int"):
        Interpreter(serialize(add_relu_graph()), profile=4)
