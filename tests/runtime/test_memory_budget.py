"""The memory budget bounds arena + weights (constants read, once each, and every variable),
checked before the arena is allocated, with the number memory_report gives."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from edgerun.converters.training import make_trainable
from edgerun.runtime import DeviceProfile, Interpreter, serialize
from edgerun.runtime.errors import MemoryBudgetError
from tests.runtime.graphs import mlp_graph

WIDE = (64, 4096, 10)  # 1.2 MiB of weights, a 32 KiB arena at batch 1
MiB = 1 << 20


def need(data: bytes, batch: int = 1, signature: str = "serving_default", **shapes) -> int:
    """What memory_report says a run of `signature` holds at `batch` (no budget to speak of)."""
    it = Interpreter(data, memory_budget=1 << 40)
    it.resize_inputs(shapes or {"x": (batch, 64)}, signature=signature)
    return it.memory_report(signature).total_bytes


def test_the_budget_counts_weights_and_matches_memory_report_to_the_byte():
    data = serialize(mlp_graph(WIDE))
    report = Interpreter(data, memory_budget=1 << 40).memory_report()
    assert report.weight_bytes > 30 * report.arena_bytes  # the arena alone fits every budget below
    Interpreter(data, memory_budget=report.total_bytes)
    with pytest.raises(MemoryBudgetError, match=rf"signature 'serving_default' at input shapes \{{'x': \(1, 64\)\}}: "
                                                rf"arena 32\.0 KiB \+ weights 1\.2 MiB = {report.total_bytes} bytes, "
                                                rf"over the memory budget of {report.total_bytes - 1} "):
        Interpreter(data, memory_budget=report.total_bytes - 1)


def test_variables_and_optimizer_state_count_too():
    data = serialize(make_trainable(mlp_graph((64, 32, 10)), optimizer=("sgd", {"lr": 0.1, "momentum": 0.9})))
    batch = {"x": (256, 64), "labels": (256,)}
    total = need(data, signature="train", **batch)
    assert total > need(data, signature="train", x=(1, 64), labels=(1,))
    it = Interpreter(data, memory_budget=total)
    it.resize_inputs(batch, signature="train")
    report = it.memory_report("train")
    assert report.optimizer_state_bytes > 0 and report.variable_bytes > report.optimizer_state_bytes
    assert report.total_bytes == total
    it = Interpreter(data, memory_budget=total - 1)  # batch 1 fits, batch 256 does not
    with pytest.raises(MemoryBudgetError, match=rf"= {total} bytes, over the memory budget of {total - 1}"):
        it.resize_inputs(batch, signature="train")
    assert it.memory_report("train").arena_bytes < report.arena_bytes  # still prepared at batch 1


def test_a_batch_over_the_profile_is_refused_before_its_arena_exists_and_says_what_to_do():
    data = serialize(mlp_graph(WIDE))
    small = DeviceProfile("small", 1, 64 * MiB, ("float32",))
    it = Interpreter(data, profile=small)
    tracemalloc.start()  # numpy reports its allocations to tracemalloc
    try:
        with pytest.raises(MemoryBudgetError) as caught:
            it.resize_input("x", (8192, 64))  # a 256 MiB arena
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(caught.value)
    assert message.startswith("signature 'serving_default' at input shapes {'x': (8192, 64)}: arena 256.0 MiB + "
                              "weights 1.2 MiB = ")
    assert message.endswith("over the memory budget of 67108864 (64.0 MiB, device profile 'small'); use a smaller "
                            "batch, a device profile with more memory or an int8 model")
    assert peak < 8 * MiB, peak  # the 256 MiB arena was never allocated
    assert it.run({"x": np.ones((1, 64), np.float32)})["y"].shape == (1, 10)  # still prepared at batch 1


def test_the_measurement_sees_an_arena_that_is_allocated():
    """The control for the test above: a batch that fits allocates its arena, and tracemalloc sees it."""
    it = Interpreter(serialize(mlp_graph(WIDE)), memory_budget=1 << 30)
    tracemalloc.start()
    try:
        it.resize_input("x", (8192, 64))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak >= it.arena_bytes() >= 128 * MiB


def test_an_explicit_budget_names_no_profile():
    with pytest.raises(MemoryBudgetError) as caught:
        Interpreter(serialize(mlp_graph(WIDE)), profile="rpi4", memory_budget=MiB)
    assert "over the memory budget of 1048576 (1.0 MiB);" in str(caught.value)
    assert "device profile '" not in str(caught.value)


def transposed_weight_model():
    """y = x @ Transpose(W) with a 4 MiB constant W: the Transpose is folded at prepare time,
    so the plan holds W and its transposed copy."""
    from edgerun.runtime.graph import GraphBuilder

    g = GraphBuilder("fold")
    x = g.input("x", np.float32, (-1, 1024))
    w = g.constant("W", np.random.default_rng(0).standard_normal((1024, 1024)).astype(np.float32))
    g.output(g.op("MatMul", [x, g.op("Transpose", [w], name="t", perm=[1, 0])], name="mm"), "y")
    return serialize(g.build())


def test_constants_folded_at_prepare_time_count_against_the_budget():
    data = transposed_weight_model()
    report = Interpreter(data).memory_report()
    assert report.weight_bytes == 2 * 4 * 1024 * 1024  # W and the folded Transpose(W)
    with pytest.raises(MemoryBudgetError, match=r"arena 4\.0 KiB \+ folded constants 4\.0 MiB \+ weights 4\.0 MiB "
                                                 r"= \d+ bytes, over the memory budget of 6291456"):
        Interpreter(data, memory_budget=6 << 20)  # W alone fits, W with its folded copy does not
    assert Interpreter(data, memory_budget=report.total_bytes).memory_report().total_bytes == report.total_bytes
