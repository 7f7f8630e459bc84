"""Streaming latency of Silero VAD (the silero-vad package's ONNX files), edgerun vs onnxruntime.

    .venv/bin/python benchmarks/bench_silero.py [--blocks 10] [--runs 20] [--markdown]

Each call is one chunk as the package's own wrapper feeds it: 512 samples at 16 kHz (256 at
8 kHz) with the previous chunk's 64 (32) samples in front, plus the recurrent state and the
sample rate. The models branch on the `sr` input, so edgerun runs them eagerly (node by node,
reusing prepared kernels); the `ifless` variant has no If. Both runtimes use one thread and take
turns block by block; outputs are checked against onnxruntime first.
"""

# ruff: noqa: E402 - the repository root goes on sys.path before project imports
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import onnxruntime as ort

from benchmarks._harness import check_close, machine, percentiles, print_table, time_interleaved
from edgerun.converters import from_onnx
from edgerun.runtime import Interpreter

DATA = os.path.join(importlib.util.find_spec("silero_vad").submodule_search_locations[0], "data")
CASES = [("silero_vad.onnx", 16000), ("silero_vad.onnx", 8000), ("silero_vad_16k_op15.onnx", 16000),
         ("silero_vad_op18_ifless.onnx", 16000)]


def feeds_for(session: ort.InferenceSession, rate: int) -> dict[str, np.ndarray]:
    samples = 512 + 64 if rate == 16000 else 256 + 32
    x = (np.random.default_rng(0).standard_normal((1, samples)) * 0.1).astype(np.float32)
    feeds = {"input": x, "state": np.zeros((2, 1, 128), np.float32), "sr": np.array(rate, np.int64)}
    names = {i.name for i in session.get_inputs()}
    return {k: v for k, v in feeds.items() if k in names}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=10)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    print(f"{machine()}; {args.blocks} x {args.runs} chunks each, interleaved")
    rows = []
    for name, rate in CASES:
        path = os.path.join(DATA, name)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        interpreter = Interpreter(from_onnx(path), num_threads=1)
        feeds = feeds_for(session, rate)
        want = session.run(["output", "stateN"], feeds)
        got = interpreter.run(feeds)
        for label, ours, anchor in (("output", got["output"], want[0]), ("stateN", got["stateN"], want[1])):
            check_close(f"{name} {rate} {label}", ours, anchor, rtol=0, atol=1e-4)
        times = time_interleaved({"edgerun": lambda it=interpreter, f=feeds: it.run(f),
                                  "onnxruntime": lambda s=session, f=feeds: s.run(["output", "stateN"], f)},
                                 args.blocks, args.runs)
        ours, theirs = percentiles(times["edgerun"])[0], percentiles(times["onnxruntime"])[0]
        rows.append([f"{name}, {rate // 1000} kHz", f"{ours / 1e3:.2f}", f"{theirs / 1e3:.3f}", f"{ours / theirs:.1f}"])
    print_table(["model", "edgerun ms/chunk", "onnxruntime ms/chunk", "edgerun/ORT"], rows, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
