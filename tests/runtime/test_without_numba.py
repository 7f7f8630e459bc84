"""The device side without numba (issue 19: 32-bit ARM boards and some phones have no numba
wheels). A child process in which `import numba` fails as it does where numba is not installed
imports every edgerun module but the numba backend's own, runs a model on device="auto" with
one warning that names the fallback and what to install, and gets a clear error for
device="numba". `python3 tasks.py test-no-numba` runs the device-side tests where numba is
really absent; this file checks the same promises in the main suite, where numba is installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgerun.runtime.writer import save_model
from tests.runtime.graphs import mlp_graph
from tests.runtime.test_layers import imported_modules

ROOT = Path(__file__).resolve().parents[2]
# the numba and cuda backends' kernels: the only modules that may need numba to import (the cuda
# package's __init__ imports numba only inside the functions that load and probe it)
BACKEND_FILES = ("devices/numba_*.py", "devices/cuda/[!_]*.py")


def _backend_files() -> list[Path]:
    return sorted(path for pattern in BACKEND_FILES for path in ROOT.glob(pattern))

# Makes `import numba` (and llvmlite, numba's compiler) raise what it raises where numba is not installed.
HIDE_NUMBA = """
import sys

class NoNumba:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("numba", "llvmlite"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoNumba())
"""

CHILD = HIDE_NUMBA + """
import importlib, json, logging, pkgutil
logging.basicConfig(level=logging.INFO, format="LOG %(levelname)s %(name)s: %(message)s")
import numpy as np
import edgerun, edgerun.runtime, edgerun.converters.training, edgerun.federated.client, edgerun.serving
from edgerun import EdgerunError, Interpreter

x = np.linspace(-1, 1, 3 * 64, dtype=np.float32).reshape(3, 64)
runs = [Interpreter(sys.argv[1]) for _ in range(2)]  # two interpreters, one warning
result = {"backends": [it.backend for it in runs], "y": runs[0].run({"x": x})["y"].tolist()}
try:
    Interpreter(sys.argv[1], device="numba")
except EdgerunError as error:
    result["error"] = str(error)
packages = [edgerun.runtime, edgerun.converters, edgerun.devices, edgerun.serving, edgerun.federated]
names = sorted({info.name for p in packages for info in pkgutil.walk_packages(p.__path__, p.__name__ + ".")})
result["need_numba"] = []
for name in names:
    try:
        importlib.import_module(name)
    except ImportError as error:  # anything else (an optional package missing, ...) is not ours to judge
        if (error.name or "").partition(".")[0] in ("numba", "llvmlite"):
            result["need_numba"].append(name)
result["modules"] = len(names)
result["numba_loaded"] = sorted(m for m in sys.modules if m.partition(".")[0] in ("numba", "llvmlite"))
print("RESULT " + json.dumps(result))
"""


@pytest.fixture(scope="module")
def child(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, list[str], np.ndarray]:
    """Run CHILD once on a saved 64-32-10 MLP; (its result, its log lines, the expected output)."""
    graph = mlp_graph()
    path = tmp_path_factory.mktemp("nonumba") / "mlp.erm"
    save_model(graph, path)
    done = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, timeout=300,
                          cwd=ROOT, env=os.environ.copy())
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.split("RESULT ", 1)[1])
    weights = {v.name: v.data for node in graph.nodes for v in node.inputs if v is not None and v.data is not None}
    x = np.linspace(-1, 1, 3 * 64, dtype=np.float32).reshape(3, 64)
    want = np.maximum(x @ weights["w0"].T + weights["b0"], 0) @ weights["w1"].T + weights["b1"]
    return result, [line for line in done.stderr.splitlines() if line.startswith("LOG ")], want


def test_auto_runs_the_reference_kernels_with_the_right_result(child: tuple[dict, list[str], np.ndarray]) -> None:
    result, _, want = child
    assert result["backends"] == ["cpu", "cpu"]
    np.testing.assert_allclose(result["y"], want, rtol=1e-5, atol=1e-5)


def test_auto_says_once_what_it_falls_back_to_and_what_to_install(child: tuple[dict, list[str], np.ndarray]) -> None:
    _, logs, _ = child
    assert logs == ["LOG WARNING edgerun.runtime: device 'auto' runs on 'cpu' (the numpy reference kernels): "
                    "backend 'numba' is unavailable (No module named 'numba'): pip install numba for its kernels"]


def test_asking_for_numba_names_the_missing_package(child: tuple[dict, list[str], np.ndarray]) -> None:
    result, _, _ = child
    assert result["error"] == ("device 'numba' is unavailable: its kernels failed to import "
                               "(No module named 'numba'): pip install numba for its kernels")


def test_only_the_backend_needs_numba_and_nothing_loaded_it(child: tuple[dict, list[str], np.ndarray]) -> None:
    result, _, _ = child
    backend = sorted("edgerun." + ".".join(p.relative_to(ROOT).with_suffix("").parts) for p in _backend_files())
    assert len(backend) >= 5 and result["modules"] > 300
    assert result["need_numba"] == backend
    assert result["numba_loaded"] == []


def test_numba_is_imported_only_by_the_backend_and_the_cuda_probe() -> None:
    """Checked on the source, imports inside functions included: devices/cuda/__init__.py loads
    the cuda kernels and asks numba about a GPU inside functions (no numba-cuda means no GPU),
    every other importer is a backend's kernels."""
    importers = sorted(str(path.relative_to(ROOT))
                       for folder in ("edgerun", "runtime", "converters", "devices", "serving", "federated")
                       for path in (ROOT / folder).rglob("*.py")
                       if any(m.partition(".")[0] in ("numba", "llvmlite") for _, m in imported_modules(path)))
    backend = [str(p.relative_to(ROOT)) for p in _backend_files()]
    assert [p for p in importers if p not in backend] == ["devices/cuda/__init__.py"]
