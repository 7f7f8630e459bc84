"""Cold start: a new process that imports the runtime, loads a CNN and runs its first inference,
edgerun vs onnxruntime, in the same run.

    .venv/bin/python benchmarks/bench_cold_start.py [--model mobilenet_v2] [--repeats 3]

The model is one exported by scripts/export_torchvision_models.py (converted to .erm once,
outside the timing) or, when none is, the onnx `light` squeezenet. Four edgerun figures and onnxruntime's,
each the median of `--repeats` fresh processes, timed from the parent (process start to exit
after the first result):

- edgerun, numba cache cold: an empty numba cache folder (NUMBA_CACHE_DIR), so every compiled
  kernel the model needs is compiled in that process (the first run after installing);
- edgerun, numba cache warm: the same folder after one such process (every later process);
- edgerun with `quick_start=True`, cache warm: the first result from the numpy reference
  kernels while the compiled ones load in a background thread (runtime.quick_start); the
  process then waits at exit for the load step it is in;
- onnxruntime: import, InferenceSession, first run.

Each is timed to its first result (the wall-clock time the process prints after it) and to
its exit.

Every process may write and reuse Python bytecode, as a package installed by pip does. A bare
`python -c pass` is timed too and printed, so the interpreter's own start is visible.
"""

# ruff: noqa: E402 - the repository root goes on sys.path before project imports
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np
import onnx

from benchmarks._harness import machine, print_table
from edgerun.converters import from_onnx
from edgerun.runtime import serialize
from scripts.export_torchvision_models import DEFAULT_DIR
from tests.converters.test_light_models import with_random_weights

EDGERUN = """
import numpy as np, sys, time
from edgerun import Interpreter
it = Interpreter(sys.argv[1], num_threads=int(sys.argv[3]), quick_start=sys.argv[4] == "quick")
name = next(iter(it.signatures["serving_default"].inputs))
it.run({name: np.load(sys.argv[2])})
print(time.time())
"""
ONNXRUNTIME = """
import numpy as np, sys, time
import onnxruntime as ort
options = ort.SessionOptions()
options.intra_op_num_threads = int(sys.argv[3])
session = ort.InferenceSession(sys.argv[1], options, providers=["CPUExecutionProvider"])
session.run(None, {session.get_inputs()[0].name: np.load(sys.argv[2])})
print(time.time())
"""
BARE = "import time; print(time.time())"


def timed(code: str, args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Seconds from starting `python -c code args` to its first result (the wall-clock time
    it prints) and to its exit; SystemExit if it fails."""
    start_wall, start = time.time(), time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode:
        raise SystemExit(f"the timed process failed:\n{result.stderr[-2000:]}")
    return float(result.stdout.split()[-1]) - start_wall, elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobilenet_v2", help="an exported torchvision model's name")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    path = DEFAULT_DIR / f"{args.model}.onnx"
    if path.exists():
        name, model = args.model, onnx.load(str(path))
    else:
        print(f"{path} not exported (python scripts/export_torchvision_models.py): using light squeezenet")
        light = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / "light_squeezenet.onnx"
        name, model = "squeezenet", with_random_weights(onnx.load(str(light)))
    print(machine())
    with tempfile.TemporaryDirectory() as work:
        work_dir = Path(work)
        onnx_path, erm_path, x_path = work_dir / "m.onnx", work_dir / "m.erm", work_dir / "x.npy"
        onnx.save(model, str(onnx_path))
        erm_path.write_bytes(serialize(from_onnx(model)))
        dims = [d.dim_value or 1 for d in model.graph.input[0].type.tensor_type.shape.dim]
        np.save(x_path, np.random.default_rng(0).standard_normal(dims).astype(np.float32))
        files = [str(erm_path), str(x_path), str(args.threads), "plain"]
        quick_files = [*files[:3], "quick"]
        # bytecode is written and reused, as after a pip install (a parent that turned it off would
        # have every process compile the package's sources again: 0.3 s here)
        env = {**{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}, "PYTHONPATH": str(ROOT)}
        times: dict[str, list[tuple[float, float]]] = {
            "python -c pass": [], "edgerun, numba cache cold": [], "edgerun, numba cache warm": [],
            "edgerun quick_start, cache warm": [], "onnxruntime": []}
        for repeat in range(args.repeats):
            cache = work_dir / f"numba-cache-{repeat}"
            cached_env = {**env, "NUMBA_CACHE_DIR": str(cache)}
            times["python -c pass"].append(timed(BARE, [], env))
            times["edgerun, numba cache cold"].append(timed(EDGERUN, files, cached_env))
            times["edgerun, numba cache warm"].append(timed(EDGERUN, files, cached_env))
            times["edgerun quick_start, cache warm"].append(timed(EDGERUN, quick_files, cached_env))
            times["onnxruntime"].append(
                timed(ONNXRUNTIME, [str(onnx_path), str(x_path), str(args.threads)], env))
    medians = {what: np.median(np.array(t), axis=0) for what, t in times.items()}
    ort_first, ort_exit = medians["onnxruntime"]
    rows = [[what, f"{first:.2f}", f"{first / ort_first:.2f}", f"{end:.2f}", f"{end / ort_exit:.2f}"]
            for what, (first, end) in medians.items()]
    print(f"{name}, batch 1, {args.threads} threads: a new process, median of {args.repeats}")
    print_table(["process", "to first result s", "/ onnxruntime", "to exit s", "/ onnxruntime"], rows,
                markdown=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
