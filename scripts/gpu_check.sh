#!/usr/bin/env bash
# The cuda backend on a real NVIDIA GPU, in one command (under 8 minutes): the cuda test modules
# with numba's simulator off (every kernel and the whole models against the CPU reference kernels),
# then benchmarks/bench_gpu.py (edgerun cuda vs PyTorch eager, MobileNetV2 and ResNet18, batch 1
# and 32). Results go to gpu_check.txt and gpu_check.json in $OUT (or the current folder).
#
#   bash scripts/gpu_check.sh
#
# Needs: an NVIDIA GPU and driver, numba-cuda, CuPy, torch and torchvision with CUDA, and the
# project's own dependencies. Nothing is downloaded: a folder of wheels in .cache/gpu-wheels (made
# beforehand with `pip download`) is installed from when present.
set -u
cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-.}"
REPORT="$OUT_DIR/gpu_check.txt"
PYTHON="${PYTHON:-python3}"
export EDGERUN_GPU=1        # tests/conftest.py: do not turn the CUDA simulator on
unset NUMBA_ENABLE_CUDASIM
: > "$REPORT"
say() { echo "$*" | tee -a "$REPORT"; }

say "== gpu_check $(date -u +%FT%TZ)"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee -a "$REPORT"
if [ -d .cache/gpu-wheels ]; then
  "$PYTHON" -m pip install -q --no-index --find-links .cache/gpu-wheels .cache/gpu-wheels/*.whl 2>&1 | tail -3 | tee -a "$REPORT"
fi
"$PYTHON" -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -3 | tee -a "$REPORT"
"$PYTHON" - <<'PY' 2>&1 | tee -a "$REPORT"
import importlib
for name in ("numpy", "numba", "numba_cuda", "cupy", "torch", "torchvision", "onnx", "onnxruntime", "pytest", "edgerun"):
    try:
        module = importlib.import_module(name)
        print(f"{name} {getattr(module, '__version__', '')}")
    except Exception as exc:
        print(f"{name}: MISSING ({type(exc).__name__}: {exc})")
from numba import cuda
print("numba sees a GPU:", cuda.is_available())
PY

say "== tests/devices/cuda on the GPU"
timeout 300 "$PYTHON" -m pytest -q -p no:cacheprovider tests/devices/cuda 2>&1 | tail -40 | tee -a "$REPORT"
say "tests exit code: ${PIPESTATUS[0]}"

say "== benchmarks/bench_gpu.py"
timeout 240 "$PYTHON" benchmarks/bench_gpu.py --out "$OUT_DIR/gpu_check.json" 2>&1 | tail -30 | tee -a "$REPORT"
say "benchmark exit code: ${PIPESTATUS[0]}"
