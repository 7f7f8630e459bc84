"""How the numba backend's threads share the cores (devices/numba_threads.py): OpenBLAS's idle
workers sleep instead of spinning, and a user's own OPENBLAS_THREAD_TIMEOUT is left alone."""

from __future__ import annotations

import os
import resource
import time

import numpy as np
from onnx import TensorProto, helper
from threadpoolctl import threadpool_info

from edgerun.converters import from_onnx
from edgerun.devices import numba_threads
from edgerun.runtime import Interpreter
from tests.onnx_models import make_model

F32 = TensorProto.FLOAT


def _idle_cpu_seconds(seconds: float) -> float:
    start = resource.getrusage(resource.RUSAGE_SELF)
    time.sleep(seconds)
    end = resource.getrusage(resource.RUSAGE_SELF)
    return (end.ru_utime - start.ru_utime) + (end.ru_stime - start.ru_stime)


def test_blas_workers_sleep_after_a_pointwise_conv():
    """A 1x1 Conv is one BLAS product, large enough here for OpenBLAS to use its second thread;
    its worker then sleeps at once (it spun for about 0.1 s of CPU after each product before)."""
    node = helper.make_node("Conv", ["x", "w"], ["y"])
    w = np.random.default_rng(0).standard_normal((256, 128, 1, 1)).astype(np.float32)
    model = make_model([node], [helper.make_tensor_value_info("x", F32, (2, 128, 32, 32))],
                       [helper.make_tensor_value_info("y", F32, None)], {"w": w})
    x = np.random.default_rng(1).standard_normal((2, 128, 32, 32)).astype(np.float32)
    it = Interpreter(from_onnx(model), device="numba", num_threads=2)
    for _ in range(3):
        y = it.run({"x": x})["y"]
    np.testing.assert_allclose(y[:, :, 3, 5], x[:, :, 3, 5] @ w[:, :, 0, 0].T, rtol=1e-4, atol=1e-4)
    busy = _idle_cpu_seconds(0.5)
    pthreads = [i for i in threadpool_info() if i["internal_api"] == "openblas" and i["threading_layer"] == "pthreads"]
    if pthreads:
        assert busy < 0.05, f"the process used {busy:.2f} s of CPU while idle for 0.5 s"


def test_a_user_setting_is_kept(monkeypatch):
    monkeypatch.setenv("OPENBLAS_THREAD_TIMEOUT", "20")
    assert numba_threads.quiet_blas_workers() is False
    assert os.environ["OPENBLAS_THREAD_TIMEOUT"] == "20"


def test_restarting_the_pool_keeps_products_right(monkeypatch):
    monkeypatch.delenv("OPENBLAS_THREAD_TIMEOUT", raising=False)
    a = np.random.default_rng(2).standard_normal((300, 200)).astype(np.float32)
    before = a @ a.T
    numba_threads.quiet_blas_workers()  # a second restart, as a fork handler's, is harmless
    np.testing.assert_array_equal(a @ a.T, before)
