"""Latency of the 9 `light` ONNX models (shipped inside the onnx package): edgerun's numpy
reference kernels and its default device next to onnxruntime and onnx's own
ReferenceEvaluator, in the same run, batch 1, one thread.

    .venv/bin/python benchmarks/bench_light_models.py [--runs 3] [--models squeezenet,resnet50] [--markdown]

Each runtime is warmed up once and then called `--runs` times in alternating
order; the table gives medians in ms and the ratios edgerun / onnxruntime and
ReferenceEvaluator / edgerun (how many times faster edgerun's reference kernels
are than onnx's). Outputs are checked against onnxruntime first (rtol 1e-3), on the model
with well-scaled random weights as tests/converters/test_light_models.py does: some shipped
weights drive the logits to ~1e9, where one float32 ulp of summation order decides a softmax.
ReferenceEvaluator is skipped for a model where one call takes over `--ref-limit`
seconds (its column then says "> limit").
"""

# ruff: noqa: E402 - the repository root goes on sys.path before project imports
from __future__ import annotations

import argparse
import glob
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import onnx
import onnxruntime as ort
from onnx.reference import ReferenceEvaluator

from benchmarks._harness import check_close, machine, print_table, time_interleaved
from edgerun.converters import from_onnx
from edgerun.runtime import Interpreter, serialize
from tests.converters.test_light_models import random_inputs, with_random_weights

LIGHT_DIR = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--models", default="", help="comma-separated names (default: all 9)")
    parser.add_argument("--ref-limit", type=float, default=30.0)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    paths = sorted(glob.glob(os.path.join(LIGHT_DIR, "light_*.onnx")))
    if args.models:
        wanted = set(args.models.split(","))
        paths = [p for p in paths if os.path.basename(p)[6:-5] in wanted]
    print(machine())
    rows = []
    for path in paths:
        rows.append(measure(path, args))
    print_table(["model", "edgerun cpu ms", "edgerun auto ms", "onnxruntime ms", "ReferenceEvaluator ms",
                 "edgerun/ORT", "RefEval/edgerun"], rows, args.markdown)
    return 0


def measure(path: str, args: argparse.Namespace) -> list[object]:
    name = os.path.basename(path)[6:-5]
    model = onnx.load(path)
    feeds = random_inputs(model)
    data = serialize(from_onnx(model))
    ours = Interpreter(data, device="cpu", num_threads=1)
    fast = Interpreter(data, device="auto", num_threads=1)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    check_outputs(name, with_random_weights(model), feeds)
    candidates = {"cpu": lambda: ours.run(feeds), "auto": lambda: fast.run(feeds),
                  "ort": lambda: session.run(None, feeds)}
    reference = ReferenceEvaluator(model)
    start = time.perf_counter()
    reference.run(None, feeds)
    ref_seconds = time.perf_counter() - start
    if ref_seconds <= args.ref_limit:
        candidates["ref"] = lambda: reference.run(None, feeds)
    times = time_interleaved(candidates, blocks=args.runs, runs_per_block=1)
    ms = {k: float(np.median(v)) / 1e3 for k, v in times.items()}
    ref = f"{ms['ref']:.1f}" if "ref" in ms else f"> {args.ref_limit:.0f} s ({ref_seconds:.0f} s once)"
    speedup = f"{ms['ref'] / ms['cpu']:.1f}x" if "ref" in ms else f"> {ref_seconds * 1e3 / ms['cpu']:.0f}x"
    return [name, f"{ms['cpu']:.1f}", f"{ms['auto']:.1f}", f"{ms['ort']:.1f}", ref,
            f"{ms['cpu'] / ms['ort']:.2f}", speedup]


def check_outputs(name: str, model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> None:
    """Both edgerun devices agree with onnxruntime on `model` (1 thread each)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    want = session.run(None, feeds)[0]
    data = serialize(from_onnx(model))
    for device in ("cpu", "auto"):
        it = Interpreter(data, device=device, num_threads=1)
        out_name = next(iter(it.signatures["serving_default"].outputs))
        check_close(f"{name} ({device})", it.run(feeds)[out_name], want, rtol=1e-3, atol=1e-5)


if __name__ == "__main__":
    sys.exit(main())
