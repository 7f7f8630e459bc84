"""Quick start (runtime.quick_start): the reference kernels answer while the compiled ones load.

In this test process numba has long been loaded, so most tests make the interpreter believe
it has not (`loads_on_first_use`); the upgrade thread then finds the compiled kernels at once.
One test runs a fresh process, where numba really is loaded in the background thread.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgerun.converters.training import make_trainable
from edgerun.runtime import Interpreter, quick_start
from edgerun.runtime import interpreter as interpreter_module
from edgerun.runtime.quick_start import KernelUpgrade
from edgerun.runtime.writer import serialize
from tests.converters.training.models import cnn

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def numba_not_loaded_yet(monkeypatch):
    monkeypatch.setattr(interpreter_module, "loads_on_first_use", lambda: True)


def images(batch: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 1, 8, 8)).astype(np.float32)


def test_runs_on_the_reference_kernels_then_on_the_compiled_ones(numba_not_loaded_yet):
    model = serialize(cnn())
    reference, compiled = Interpreter(model, device="cpu"), Interpreter(model, device="numba")
    it = Interpreter(model, quick_start=True)
    assert it.backend == "cpu"
    x = images(3)
    first = it.run({"x": x})["y"]
    np.testing.assert_array_equal(first, reference.run({"x": x})["y"])  # the reference kernels' own result
    it._upgrade.wait()
    second = it.run({"x": x})["y"]
    assert it.backend == "numba" and it._upgrade is None
    np.testing.assert_array_equal(second, compiled.run({"x": x})["y"])  # now the compiled kernels'
    np.testing.assert_allclose(second, first, rtol=1e-5, atol=1e-6)


def test_without_a_pending_load_it_starts_compiled():
    """numba already loaded in this process: nothing to wait for, no thread."""
    it = Interpreter(serialize(cnn()), quick_start=True)
    assert it.backend == "numba" and it._upgrade is None


def test_the_switch_keeps_shapes_prepared_before_it(numba_not_loaded_yet):
    it = Interpreter(serialize(cnn()), quick_start=True)
    it.resize_input("x", (5, 1, 8, 8))
    it.run({"x": images(5)})
    it._upgrade.wait()
    it.run({"x": images(5, seed=1)})  # adopts the compiled plan, prepared for batch 5 first
    plan = it._plan("serving_default")
    assert plan.backend == "numba" and plan.prepared.shapes == {"x": (5, 1, 8, 8)}
    want = Interpreter(serialize(cnn()), device="cpu").run({"x": images(7, seed=2)})["y"]
    np.testing.assert_allclose(it.run({"x": images(7, seed=2)})["y"], want, rtol=1e-5, atol=1e-6)


def test_training_continues_across_the_switch(numba_not_loaded_yet, monkeypatch):
    """Variables are shared: steps on the reference plan and then on the compiled plan train
    the same weights as four reference steps do."""
    import threading

    release, make_plans = threading.Event(), Interpreter._make_plans
    monkeypatch.setattr(Interpreter, "_make_plans",
                        lambda self, backend: release.wait(30) and make_plans(self, backend))
    model = serialize(make_trainable(cnn(), optimizer=("sgd", {"lr": 0.1})))
    reference = Interpreter(model, device="cpu")
    it = Interpreter(model, quick_start=True)
    batches = [{"x": images(4, seed), "labels": np.arange(seed, seed + 4, dtype=np.int64) % 10} for seed in range(4)]
    for batch in batches[:2]:
        it.run(batch, signature="train")
    assert it.backend == "cpu"  # the upgrade is held back until now
    release.set()
    it._upgrade.wait()
    for batch in batches[2:]:
        it.run(batch, signature="train")
    assert it.backend == "numba"
    for batch in batches:
        reference.run(batch, signature="train")
    x = images(2, seed=9)
    np.testing.assert_allclose(it.run({"x": x})["y"], reference.run({"x": x})["y"], rtol=1e-4, atol=1e-5)


def test_a_failed_upgrade_leaves_the_reference_plans(numba_not_loaded_yet, monkeypatch, caplog):
    def broken(self, host_backend):
        raise MemoryError("no room for a second plan")

    monkeypatch.setattr(Interpreter, "_make_plans", broken)
    it = Interpreter(serialize(cnn()), quick_start=True)
    x = images(2)
    it.run({"x": x})
    it._upgrade.wait()
    with caplog.at_level("INFO", logger="edgerun.runtime"):
        y = it.run({"x": x})["y"]
    assert it.backend == "cpu" and it._upgrade is None
    np.testing.assert_array_equal(y, Interpreter(serialize(cnn()), device="cpu").run({"x": x})["y"])


def test_models_that_draw_random_numbers_or_have_a_budget_start_compiled(numba_not_loaded_yet):
    """A plan made later would draw the same numbers again; two sets of plans would pass a
    memory budget: neither starts on the reference kernels."""
    from onnx import TensorProto, helper

    from edgerun.converters import from_onnx
    from tests.onnx_models import make_model

    node = helper.make_node("RandomNormalLike", ["x"], ["y"], seed=3.0)
    model = make_model([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, (2, 3))],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    assert Interpreter(from_onnx(model), quick_start=True).backend == "numba"
    assert Interpreter(serialize(cnn()), quick_start=True, memory_budget=1 << 30).backend == "numba"
    assert Interpreter(serialize(cnn()), quick_start=True, profile="rpi4").backend == "numba"
    assert Interpreter(serialize(cnn()), quick_start=True).backend == "cpu"


def test_a_fork_waits_for_a_running_upgrade():
    """The before-fork hook joins every started upgrade (a child must not inherit the import
    locks of a thread it does not have); one not started is left alone."""
    import threading

    release = threading.Event()
    slow = KernelUpgrade(lambda backend: release.wait(5) and {})
    idle = KernelUpgrade(lambda backend: {})
    slow.start()
    threading.Timer(0.2, release.set).start()
    quick_start._wait_for_upgrades()
    assert slow.finished() and release.is_set()
    assert not idle.finished()  # never started, not waited for


def test_a_stopped_upgrade_offers_nothing():
    started = []
    upgrade = KernelUpgrade(lambda backend: started.append(backend) or {})
    upgrade.stop()  # before it started: nothing runs
    assert upgrade.result is None and started == []


def test_a_fresh_process_answers_before_numba_is_loaded():
    """A new process: the first result comes from the reference kernels, numba not even
    imported yet; after the switch the compiled kernels answer the same within rounding, OpenBLAS's
    pool restart (deferred off the main thread) has happened, and the process exits cleanly."""
    code = """
import sys, numpy as np
from edgerun import Interpreter
from edgerun.runtime.writer import serialize
from tests.converters.training.models import cnn
it = Interpreter(serialize(cnn()), quick_start=True)
x = np.random.default_rng(0).standard_normal((2, 1, 8, 8)).astype(np.float32)
loaded = "numba" in sys.modules  # the upgrade starts when the first run ends
first = it.run({"x": x})["y"]
print(it.backend, loaded)
it._upgrade.wait()
second = it.run({"x": x})["y"]
from edgerun.devices import numba_threads
print(it.backend, numba_threads._restart_pending, float(np.max(np.abs(first - second))))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    before, after = result.stdout.split("\n")[:2]
    assert before == "cpu False"
    backend, pending, difference = after.split()
    assert backend == "numba" and pending == "False" and float(difference) < 1e-5
