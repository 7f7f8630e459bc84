"""The cuda program's lifecycle and its edge cases (found by review): placement before the
first run, shape-only inputs read after their lifetime, programs that live as long as the plan
keeps their preparation, no reference cycle, a program that cannot be made, and randomly
built trainable models whose steps mix host and device. Under numba's CUDA simulator."""

from __future__ import annotations

import gc
import logging
import weakref

import numpy as np
import pytest

from edgerun.converters.training import make_trainable
from edgerun.devices.cuda import program as program_module
from edgerun.runtime import Interpreter
from edgerun.runtime.graph import GraphBuilder
from tests.devices.cuda.harness import expect_same_as_cpu


def _clip_model():
    g = GraphBuilder("clip", opset=17)
    x, lo, hi = g.input("x", np.float32, (-1, 5)), g.input("lo", np.float32, ()), g.input("hi", np.float32, ())
    g.output(g.op("Clip", [g.op("Neg", [x], name="neg"), lo, hi], name="clip"), "y")
    return g.build()


def test_placement_before_the_first_run_sees_the_inputs():
    """Inputs are bound only by a run: a program made earlier (by placement()) must still read
    them, not take an optional input for omitted (Clip without bounds)."""
    it = Interpreter(_clip_model(), device="cuda")
    assert it.placement()["clip"] == "device"
    feeds = {"x": np.linspace(-3, 3, 10, dtype=np.float32).reshape(2, 5), "lo": np.float32(-1), "hi": np.float32(0.5)}
    np.testing.assert_array_equal(it.run(feeds)["y"], np.clip(-feeds["x"], -1, 0.5))


def _random_model(seed: int):
    """MatMul/Tanh/Sigmoid/Mul/Add/Sub over (batch, d) values, some broadcast from width 1: their
    gradients sum broadcast axes away (SumTo, whose 'like' input is read for its shape only)."""
    rng = np.random.default_rng(seed)
    g = GraphBuilder("m", opset=17)
    pool = [(g.input("x", np.float64, (-1, 6)), 6)]
    for i in range(int(rng.integers(3, 7))):
        h, d = pool[int(rng.integers(len(pool)))]
        kind = int(rng.integers(5))
        if kind in (0, 1, 4):
            width = 5 if kind == 0 else 1
            w = g.constant(f"w{i}", rng.standard_normal((d, width)) * 0.5)
            h = g.op("MatMul", [h, w])
            pool.append((g.op("Tanh", [h]) if kind == 0 else g.op("Sigmoid", [h]) if kind == 1 else h, width))
        else:
            h2, d2 = pool[int(rng.integers(len(pool)))]
            if d != d2 and 1 not in (d, d2):
                continue
            op = ("Mul", "Add", "Sub")[int(rng.integers(3))] if kind == 2 else "Mul"
            pool.append((g.op(op, [h, h2]), max(d, d2)))
    h, d = pool[-1]
    g.output(g.op("MatMul", [h, g.constant("wo", rng.standard_normal((d, 3)))]), "y")
    return g.build()


@pytest.mark.parametrize("seed", [15, 46, 50, 3, 7])
def test_random_trainable_models_train_as_on_the_cpu(seed):
    graph = make_trainable(_random_model(seed), optimizer=("sgd", {"lr": 0.1}))
    rng = np.random.default_rng(seed)
    feeds = {"x": rng.standard_normal((4, 6)), "labels": rng.integers(0, 3, 4).astype(np.int64)}
    cpu, gpu = Interpreter(graph, device="cpu"), Interpreter(graph, device="cuda")
    for _ in range(2):
        np.testing.assert_allclose(gpu.run(dict(feeds), "train")["loss"], cpu.run(dict(feeds), "train")["loss"],
                                   rtol=1e-10)
    for name, value in cpu.variables().items():
        np.testing.assert_allclose(gpu.variables()[name], value, rtol=1e-10, atol=1e-12, err_msg=name)


def test_programs_live_as_long_as_the_plans_preparations():
    it = Interpreter(_clip_model(), device="cuda")
    plan = it._plans["serving_default"]
    for rows in range(1, 12):
        x = np.ones((rows, 5), np.float32)
        it.run({"x": x, "lo": np.float32(0), "hi": np.float32(1)})
    gc.collect()
    kept = {id(p) for p in plan._recent.values()} | {id(plan.prepared)}
    live = list(plan.offload._programs)
    assert 0 < len(live) <= len(kept)
    assert all(id(p.prepared()) in kept for p in live)


def test_dropping_the_interpreter_frees_its_programs_without_the_cycle_collector():
    it = Interpreter(_clip_model(), device="cuda")
    it.run({"x": np.ones((2, 5), np.float32), "lo": np.float32(0), "hi": np.float32(1)})
    plan = it._plans["serving_default"]
    program = weakref.ref(plan.prepared.offloaded)
    del it, plan
    gc.disable()
    try:
        assert program() is None
    finally:
        gc.enable()


def test_a_program_that_cannot_be_made_runs_on_the_host(monkeypatch, caplog):
    def no_memory(*args, **kwargs):
        raise MemoryError("out of GPU memory")

    monkeypatch.setattr(program_module.cuda, "device_array", no_memory)
    it = Interpreter(_clip_model(), device="cuda")
    feeds = {"x": np.ones((2, 5), np.float32), "lo": np.float32(-0.5), "hi": np.float32(1)}
    with caplog.at_level(logging.WARNING, logger="edgerun.devices.cuda"):
        np.testing.assert_array_equal(it.run(feeds)["y"], np.full((2, 5), -0.5, np.float32))
    assert set(it.placement().values()) == {"host"}
    assert "runs on the host at these shapes" in caplog.text and "out of GPU memory" in caplog.text


def test_scalar_constants_keep_their_shape_on_the_device():
    g = GraphBuilder("scale", opset=17)
    g.output(g.op("Mul", [g.input("x", np.float32, (-1, 3)), g.constant("s", np.float32(2.5))], name="mul"), "y")
    expect_same_as_cpu(g.build(), {"x": np.arange(6, dtype=np.float32).reshape(2, 3)}, on_device=("Mul",))


def test_auto_keeps_edge_profiles_on_the_host(monkeypatch):
    import edgerun.devices.cuda as cuda_backend

    monkeypatch.setattr(cuda_backend, "_gpu_present", True)
    monkeypatch.setattr(cuda_backend, "AUTO_MIN_MACS", 1)
    assert Interpreter(_clip_model(), device="auto", profile="rpi4").backend != "cuda"
    assert Interpreter(_clip_model(), device="auto").backend == "cuda"
