"""Whole models on the cuda backend against the CPU reference kernels: every step on the GPU.

Under numba's CUDA simulator (the suite) the models are small (the simulator runs each GPU
thread in Python); with a real GPU (scripts/gpu_check.sh: EDGERUN_GPU=1) the same tests run at
full size, 224x224.
"""

from __future__ import annotations

import numpy as np
import pytest
from numba.core import config

from edgerun.converters.optimize import optimize
from edgerun.runtime import Interpreter
from tests.converters.training.models import cnn, depthwise_cnn, mobilenet_v2
from tests.devices.cuda.harness import expect_same_as_cpu

SIMULATED = bool(config.ENABLE_CUDASIM)
SIZE = 8 if SIMULATED else 224
# Under the simulator (every GPU thread a Python thread, ~1 ms per 100 multiply-adds) a MobileNetV2
# of 8 channels: an inverted residual block without expansion and two with (expand t, channels c,
# repeats n, stride s), each with its residual Add, the final 1x1 Conv to 16 channels.
SMALL_STAGES = ((1, 8, 1, 1), (2, 8, 2, 2))


def _mobilenet(batch_norm: bool = False):
    if SIMULATED:
        return mobilenet_v2(width=0.25, size=SIZE, classes=4, stages=SMALL_STAGES, batch_norm=batch_norm, last=16)
    return mobilenet_v2(batch_norm=batch_norm)


def _everything_on_the_gpu(placement: dict[str, str]) -> None:
    host = sorted(name for name, where in placement.items() if where != "device")
    assert not host, f"ran on the host: {host}"


@pytest.mark.parametrize("optimized", [False, True], ids=["as-built", "optimized"])
def test_mobilenet_v2_runs_on_the_gpu(optimized):
    """Conv (1x1, depthwise, strided), Relu6 (Clip), residual Add, GlobalAveragePool, Gemm; optimized:
    FusedConv with fused Relu6 and residual epilogues."""
    graph = _mobilenet()
    if optimized:
        optimize(graph)
    x = np.random.default_rng(0).standard_normal((2, 3, SIZE, SIZE)).astype(np.float32)
    _everything_on_the_gpu(expect_same_as_cpu(graph, {"x": x}, rtol=1e-4, atol=1e-4))


def test_mobilenet_v2_with_batch_norm_and_a_new_batch_size():
    graph = _mobilenet(batch_norm=True)
    it = Interpreter(graph, device="cuda")
    cpu = Interpreter(graph, device="cpu")
    for batch in (1, 3):
        x = np.random.default_rng(batch).standard_normal((batch, 3, SIZE, SIZE)).astype(np.float32)
        np.testing.assert_allclose(it.run({"x": x})["y"], cpu.run({"x": x})["y"], rtol=1e-4, atol=1e-4)
        _everything_on_the_gpu(it.placement())


@pytest.mark.parametrize("model", [cnn, depthwise_cnn])
def test_small_cnns_run_on_the_gpu(model):
    graph = model() if model is depthwise_cnn else model(batch_norm=False)
    x = np.random.default_rng(4).standard_normal((2, 1, 8, 8)).astype(np.float32)
    _everything_on_the_gpu(expect_same_as_cpu(graph, {"x": x}, rtol=1e-4, atol=1e-5))


def test_float64_model_on_the_gpu():
    graph = cnn(dtype=np.float64, batch_norm=False)
    x = np.random.default_rng(5).standard_normal((2, 1, 8, 8))
    _everything_on_the_gpu(expect_same_as_cpu(graph, {"x": x}, rtol=1e-10, atol=1e-12))
