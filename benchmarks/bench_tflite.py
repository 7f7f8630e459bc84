"""Latency of .tflite models, edgerun vs LiteRT (its default CPU path: XNNPACK) on the same
files in the same run: mediapipe's trained models (face, hand, palm, pose, iris; float16
weights behind DEQUANTIZE, sparse weights behind DENSIFY) and the TensorFlow-converted
fixtures of tests/converters/tflite/fixtures.

    .venv/bin/python benchmarks/bench_tflite.py [--threads 1 2] [--blocks 5] [--runs 10] [--markdown]

edgerun opens each file with Interpreter(path) (converted on load). Both take turns block by
block at the same thread count; outputs are checked against LiteRT first (rel 1e-3: float16
weights are expanded to float32 by both, sums may differ in order). Models LiteRT cannot run
(mediapipe's custom ops: selfie segmentation's Convolution2DTransposeBias) are left out.
"""

# ruff: noqa: E402 - the repository root goes on sys.path before project imports
from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks._harness import machine, percentiles, print_table, time_interleaved
from edgerun import Interpreter

MEDIAPIPE = ["face_detection/face_detection_short_range", "face_detection/face_detection_full_range_sparse",
             "face_landmark/face_landmark", "hand_landmark/hand_landmark_lite", "hand_landmark/hand_landmark_full",
             "palm_detection/palm_detection_lite", "pose_detection/pose_detection",
             "pose_landmark/pose_landmark_full", "iris_landmark/iris_landmark", "holistic_landmark/hand_recrop"]
FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "converters" / "tflite" / "fixtures"
FLOAT_FIXTURES = ["mobile_block_f32", "mobile_block_fp16"]


def models() -> list[tuple[str, Path]]:
    root = Path(importlib.util.find_spec("mediapipe").submodule_search_locations[0]) / "modules"
    found = [(name.split("/")[1], root / f"{name}.tflite") for name in MEDIAPIPE]
    found += [(name, FIXTURES / f"{name}.tflite") for name in FLOAT_FIXTURES]
    return [(name, path) for name, path in found if path.exists()]


def litert(path: Path, threads: int):  # noqa: ANN201
    from ai_edge_litert.interpreter import Interpreter as LiteRT

    it = LiteRT(model_path=str(path), num_threads=threads)
    it.allocate_tensors()
    return it


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--blocks", type=int, default=5)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    print(f"# {machine()}")
    rng = np.random.default_rng(0)
    rows, ratios = [], {t: [] for t in args.threads}
    for name, path in models():
        for threads in args.threads:
            anchor = litert(path, threads)
            ours = Interpreter(path, num_threads=threads)
            signature = ours.signatures["serving_default"]
            details = anchor.get_input_details()
            feeds = [rng.random(d["shape"]).astype(d["dtype"]) for d in details]
            by_name = dict(zip(signature.inputs, feeds, strict=True))

            def run_litert(anchor=anchor, details=details, feeds=feeds) -> None:  # noqa: ANN001
                for d, x in zip(details, feeds, strict=True):
                    anchor.set_tensor(d["index"], x)
                anchor.invoke()

            def run_ours(ours=ours, by_name=by_name) -> dict:  # noqa: ANN001
                return ours.run(by_name)

            run_litert()
            expected = [anchor.get_tensor(d["index"]) for d in anchor.get_output_details()]
            got = list(run_ours().values())
            for e, g in zip(expected, got, strict=True):
                scale = float(np.abs(e).max()) or 1.0
                if g.shape != e.shape or np.abs(g - e).max() > 1e-3 * scale:
                    raise SystemExit(f"{name}: edgerun's output differs from LiteRT's")
            times = time_interleaved({"litert": run_litert, "edgerun": run_ours}, args.blocks, args.runs)
            lt, ed = percentiles(times["litert"])[0] / 1e3, percentiles(times["edgerun"])[0] / 1e3
            ratios[threads].append(ed / lt)
            rows.append([name, threads, f"{ed:.2f}", f"{lt:.2f}", f"{ed / lt:.2f}"])
    print_table(["model", "threads", "edgerun ms", "LiteRT ms", "edgerun/LiteRT"], rows, args.markdown)
    for threads, values in ratios.items():
        if values:
            geo = float(np.exp(np.mean(np.log(values))))
            print(f"{threads} thread(s): geometric mean edgerun/LiteRT {geo:.2f} over {len(values)} models, "
                  f"worst {max(values):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
