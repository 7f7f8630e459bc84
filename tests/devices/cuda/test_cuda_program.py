"""The cuda backend's program: placement, host fallback and the copies between, training,
resizing, selection and errors. Runs under numba's CUDA simulator (tests/conftest.py).

The kernels come from a test claim (a Relu that doubles nothing: max(x, 0)) so that which
steps run where is decided here, not by whichever kernels the backend has: every mix of
device and host steps must give the CPU's results.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
from numba import cuda

from edgerun.converters.training import make_trainable
from edgerun.devices.cuda import claims
from edgerun.runtime import Interpreter
from edgerun.runtime.backends import backend
from edgerun.runtime.errors import EdgerunError
from edgerun.runtime.graph import GraphBuilder
from tests.converters.training.models import cnn, mlp
from tests.devices.cuda.harness import expect_same_as_cpu


@cuda.jit
def _relu(x, out):  # pragma: no cover - runs on the device (or the simulator)
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < out.size:
        v = x[i]
        out[i] = v if v > 0 else 0 * v
        i += stride


def _relu_claim(step: claims.StepSpec):
    n = step.outputs[0].size

    def run(ins, outs, ctx):
        claims.launch_1d(_relu, n, ctx, ins[0].reshape(n), outs[0].reshape(n))

    return run


@pytest.fixture
def only_relu_on_device(monkeypatch):
    """The device claims nothing but Relu (ours above)."""
    monkeypatch.setattr(claims, "_CLAIMS", {("", "Relu"): _relu_claim})


def _chain(ops: list[str], dtype=np.float32):
    """x (2, 5) -> ops in turn (Relu, Neg, Exp, Sigmoid ...), one output per op."""
    g = GraphBuilder("chain", opset=17)
    h = g.input("x", dtype, (-1, 5))
    for i, op in enumerate(ops):
        h = g.op(op, [h], name=f"n{i}_{op}")
        g.output(h, f"y{i}")
    return g.build()


@pytest.mark.parametrize("ops", [
    ["Relu"], ["Relu", "Neg", "Relu"], ["Neg", "Relu", "Neg", "Relu", "Sigmoid"], ["Neg", "Neg", "Relu"],
])
def test_mixed_placement_matches_cpu(only_relu_on_device, ops):
    x = np.random.default_rng(0).standard_normal((2, 5)).astype(np.float32)
    placement = expect_same_as_cpu(_chain(ops), {"x": x}, rtol=0, atol=0, on_device=("Relu",))
    assert [placement[f"n{i}_{op}"] for i, op in enumerate(ops)] == ["device" if op == "Relu" else "host" for op in ops]


def test_outputs_read_by_later_steps_and_the_next_run(only_relu_on_device):
    it = Interpreter(_chain(["Relu", "Neg", "Relu"]), device="cuda")
    for seed in range(3):  # a run never sees the last run's values
        x = np.random.default_rng(seed).standard_normal((2, 5)).astype(np.float32)
        got = it.run({"x": x})
        np.testing.assert_array_equal(got["y0"], np.maximum(x, 0))
        np.testing.assert_array_equal(got["y1"], -np.maximum(x, 0))
        np.testing.assert_array_equal(got["y2"], np.zeros_like(x))


def test_resize_makes_a_program_for_the_new_shapes(only_relu_on_device):
    it = Interpreter(_chain(["Neg", "Relu"]), device="cuda")
    for rows in (1, 7, 1):
        x = np.random.default_rng(rows).standard_normal((rows, 5)).astype(np.float32)
        np.testing.assert_array_equal(it.run({"x": x})["y1"], np.maximum(-x, 0))
    assert it.placement() == {"n0_Neg": "host", "n1_Relu": "device"}


def test_the_device_arena_is_the_planned_arena(only_relu_on_device):
    it = Interpreter(cnn(batch_norm=False), device="cuda")
    it.run({"x": np.ones((2, 1, 8, 8), np.float32)})
    plan = it._plans["serving_default"]
    program = plan.offload.program(plan.prepared)
    assert program.arena.nbytes >= plan.arena_bytes == it.peak_activation_bytes > 0


def test_whole_cnn_matches_cpu_with_the_backend_kernels():
    """With whatever kernels the backend has: a small CNN (Conv, Relu, MaxPool, GAP, Gemm)."""
    x = np.random.default_rng(1).standard_normal((2, 1, 8, 8)).astype(np.float32)
    expect_same_as_cpu(cnn(batch_norm=False), {"x": x}, rtol=1e-4, atol=1e-5)


def test_training_on_cuda_matches_cpu(only_relu_on_device):
    """The train signature: variables uploaded, updates copied back; 3 SGD steps as on the CPU."""
    graph = make_trainable(mlp((6, 5, 3), dtype=np.float64), optimizer=("sgd", {"lr": 0.1}))
    rng = np.random.default_rng(2)
    xs = rng.standard_normal((4, 6))
    labels = rng.integers(0, 3, 4).astype(np.int64)
    cpu, gpu = Interpreter(graph, device="cpu"), Interpreter(graph, device="cuda")
    assert "device" in gpu.placement("train").values()
    for _ in range(3):
        want = cpu.run({"x": xs, "labels": labels}, "train")
        got = gpu.run({"x": xs, "labels": labels}, "train")
        np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-12)
    for name, value in cpu.variables().items():
        np.testing.assert_allclose(gpu.variables()[name], value, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(gpu.run({"x": xs})["y"], cpu.run({"x": xs})["y"], rtol=1e-12)


def test_host_backends_place_everything_on_the_host():
    it = Interpreter(_chain(["Relu"]), device="cpu")
    assert it.placement() == {"n0_Relu": "host"}


def test_a_failing_device_step_names_its_node(monkeypatch):
    def broken(step):
        def run(ins, outs, ctx):
            raise RuntimeError("launch failed")
        return run

    monkeypatch.setattr(claims, "_CLAIMS", {("", "Relu"): broken})
    it = Interpreter(_chain(["Neg", "Relu"]), device="cuda")
    with pytest.raises(EdgerunError, match=r"n1_Relu.*launch failed"):
        it.run({"x": np.ones((1, 5), np.float32)})


def test_a_claim_that_raises_leaves_the_step_on_the_host(monkeypatch, caplog):
    def broken(step):
        raise ValueError("cannot pack")

    monkeypatch.setattr(claims, "_CLAIMS", {("", "Relu"): broken})
    it = Interpreter(_chain(["Relu"]), device="cuda")
    with caplog.at_level(logging.WARNING, logger="edgerun.devices.cuda"):
        np.testing.assert_array_equal(it.run({"x": -np.ones((1, 5), np.float32)})["y0"], np.zeros((1, 5)))
    assert it.placement() == {"n0_Relu": "host"}
    assert "cannot pack" in caplog.text


def test_missing_numba_cuda_is_one_clear_error(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "numba_cuda" else real(name, *a))
    wanted = r"device 'cuda' is unavailable.*numba-cuda is not installed.*edgerun\[cuda\]"
    with pytest.raises(EdgerunError, match=wanted):
        Interpreter(_chain(["Relu"]), device="cuda")


def test_no_gpu_is_one_clear_error(monkeypatch):
    from numba.core import config

    monkeypatch.setattr(config, "ENABLE_CUDASIM", 0)
    monkeypatch.setattr(cuda, "is_available", lambda: False)
    with pytest.raises(EdgerunError, match="no NVIDIA GPU with a working driver"):
        Interpreter(_chain(["Relu"]), device="cuda")


def test_auto_never_picks_the_simulator():
    it = Interpreter(_chain(["Relu"]), device="auto")
    assert it.backend != "cuda"
    assert set(it.placement().values()) == {"host"}


def test_auto_picks_a_real_gpu_only_for_big_models(monkeypatch, caplog):
    import edgerun.devices.cuda as cuda_backend

    monkeypatch.setattr(cuda_backend, "_gpu_present", True)  # as if a GPU were there
    monkeypatch.setattr(cuda_backend, "_said_small", False)
    with caplog.at_level(logging.INFO, logger="edgerun.devices.cuda"):
        small = Interpreter(_chain(["Relu"]), device="auto")
    assert small.backend != "cuda" and "below the" in caplog.text
    monkeypatch.setattr(cuda_backend, "AUTO_MIN_MACS", 1)
    big = Interpreter(cnn(batch_norm=False), device="auto")
    assert big.backend == "cuda" and backend("cuda").offload is not None
    x = np.random.default_rng(3).standard_normal((1, 1, 8, 8)).astype(np.float32)
    want = Interpreter(cnn(batch_norm=False), device="cpu").run({"x": x})["y"]
    np.testing.assert_allclose(big.run({"x": x})["y"], want, rtol=1e-4, atol=1e-5)


def test_replayed_runs_see_new_inputs(only_relu_on_device, monkeypatch):
    """A program whose steps all run on the device is replayed as one captured run from the
    second run on (step by step where capture is unavailable, as in the simulator)."""
    from edgerun.devices.cuda import graphs

    monkeypatch.setattr(graphs, "available", lambda: True)
    it = Interpreter(_chain(["Relu", "Relu"]), device="cuda")
    for seed in range(3):
        x = np.random.default_rng(seed).standard_normal((3, 5)).astype(np.float32)
        got = it.run({"x": x})
        np.testing.assert_array_equal(got["y1"], np.maximum(x, 0))
    plan = it._plans["serving_default"]
    assert plan.offload.program(plan.prepared)._graph is not None


def test_weights_are_uploaded_once_for_every_batch_size(only_relu_on_device, monkeypatch):
    from edgerun.devices.cuda import program as program_module

    uploads = []
    real = program_module.cuda.to_device
    monkeypatch.setattr(program_module.cuda, "to_device", lambda a, *args, **kw: uploads.append(a.shape) or real(a))
    g = GraphBuilder("scaled", opset=17)
    x = g.input("x", np.float32, (-1, 4))
    w = g.constant("w", np.arange(4, dtype=np.float32))
    g.output(g.op("Relu", [g.op("Mul", [x, w], name="mul")], name="relu"), "y")
    graph = g.build()
    monkeypatch.setattr(claims, "_CLAIMS", {("", "Relu"): _relu_claim, ("", "Mul"): _mul_claim})
    it = Interpreter(graph, device="cuda")
    for rows in (1, 2, 3, 1, 5, 6, 7):  # more shapes than the runner keeps programs for
        xs = np.random.default_rng(rows).standard_normal((rows, 4)).astype(np.float32)
        np.testing.assert_allclose(it.run({"x": xs})["y"], np.maximum(xs * np.arange(4), 0), rtol=1e-6)
    assert uploads.count((4,)) == 1


@cuda.jit
def _mul_rows(x, w, out):  # pragma: no cover - device
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < out.size:
        out[i] = x[i] * w[i % w.size]
        i += stride


def _mul_claim(step: claims.StepSpec):
    if not step.constant[1]:
        return None
    n = step.outputs[0].size

    def run(ins, outs, ctx):
        claims.launch_1d(_mul_rows, n, ctx, ins[0].reshape(n), ins[1], outs[0].reshape(n))

    return run


def test_no_driver_library_means_no_gpu_without_importing_numba_cuda(monkeypatch):
    """Probing for a GPU where the NVIDIA driver's library does not load answers False from
    the library alone (importing numba-cuda to ask costs a quarter of a second of start-up)."""
    import importlib.util

    import edgerun.devices.cuda as cuda_backend

    monkeypatch.setattr(cuda_backend, "DRIVER_LIBRARY", "libedgerun-no-such-driver.so.1")
    monkeypatch.setattr(cuda_backend, "_gpu_present", None)
    monkeypatch.delenv("NUMBA_ENABLE_CUDASIM", raising=False)
    asked: list[str] = []
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: asked.append(name) or real_find_spec(name, *a))
    assert cuda_backend.driver_loadable() is False
    assert cuda_backend.gpu_present() is False
    assert asked == []  # numba-cuda was never looked up, let alone imported


def test_a_new_process_imports_numba_cuda_only_where_the_driver_loads():
    """device="auto" on a model big enough for a GPU: a process imports numba-cuda exactly
    when the driver's library loads (never on this suite's CPU-only machines)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys, numpy as np\n"
            "import edgerun.devices.cuda as c\n"
            "c.AUTO_MIN_MACS = 1\n"
            "from edgerun import Interpreter\n"
            "from tests.converters.training.models import cnn\n"
            "Interpreter(cnn(batch_norm=False), device='auto')\n"
            "print(c.driver_loadable(), 'numba.cuda' in sys.modules)\n")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    root = Path(__file__).resolve().parents[3]
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=root,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    loadable, imported = result.stdout.split()
    assert loadable == imported


def test_an_offloaded_plan_keeps_its_concats_whole():
    """The device program tracks whole tensors: a plan handed to the cuda runner places no
    Concat in its output (the preparation made before the hand-over is made again)."""
    from edgerun.converters import from_onnx
    from tests.onnx_models import ort_run
    from tests.runtime.test_concat_in_place import fire_model

    model, feeds = fire_model()
    host = Interpreter(from_onnx(model), device="numba")
    assert host._plans["serving_default"].prepared.concats_in_place
    it = Interpreter(from_onnx(model), device="cuda")
    prepared = it._plans["serving_default"].prepared
    assert not prepared.concats_in_place
    assert "Concat" in [step[3].op_type for step in prepared.steps]
    np.testing.assert_allclose(it.run(feeds)["y"], ort_run(model, feeds)["y"], rtol=1e-4, atol=1e-5)
