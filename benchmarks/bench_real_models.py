"""Latency of the real, trained models the test suite checks (tests/converters/test_real_models.py),
edgerun (device "auto") vs onnxruntime in the same run: PP-OCRv4's text detector, direction
classifier and recognizer (rapidocr-onnxruntime's data files; the recognizer's spatial dims are
fully dynamic) at the sizes PaddleOCR feeds them, and a scikit-learn pipeline exported with
skl2onnx.

    .venv/bin/python benchmarks/bench_real_models.py [--blocks 5] [--runs 10] [--threads 2] [--markdown]

Both runtimes use `--threads` threads (onnxruntime without spinning between runs) and take turns
block by block; outputs are checked against onnxruntime first.
"""

# ruff: noqa: E402 - the repository root goes on sys.path before project imports
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import onnx
import onnxruntime as ort

from benchmarks._harness import check_close, machine, percentiles, print_table, time_interleaved
from edgerun.converters import from_onnx
from edgerun.runtime import Interpreter, serialize
from tests.converters.test_real_models import (
    CLASSIFIER,
    DETECTOR,
    IMAGENET_MEAN,
    IMAGENET_STD,
    OCR,
    RECOGNIZER,
    tabular_pipeline,
    text_image,
    to_input,
)


def cases() -> list[tuple[str, bytes, dict[str, np.ndarray]]]:
    """(label, ONNX bytes, feeds): the OCR models at PaddleOCR's sizes, the pipeline at 1 and 256 rows."""
    from sklearn.datasets import load_breast_cancer

    def model(name: str) -> bytes:
        return Path(os.path.join(OCR, name)).read_bytes()

    line = text_image("edgerun runs OCR on the edge", 48, 320)
    rows = load_breast_cancer().data.astype(np.float32)
    return [
        ("PP-OCRv4 detector 1x3x640x640", model(DETECTOR),
         {"x": to_input([text_image("edgerun 2026", 640, 640)], IMAGENET_MEAN, IMAGENET_STD)}),
        ("PP-OCR direction classifier 6x3x48x192", model(CLASSIFIER),
         {"x": to_input([text_image("Hello", 48, 192)] * 6, 0.5, 0.5)}),
        ("PP-OCRv4 recognizer 1x3x48x320", model(RECOGNIZER), {"x": to_input([line], 0.5, 0.5)}),
        ("PP-OCRv4 recognizer 6x3x48x320", model(RECOGNIZER), {"x": to_input([line] * 6, 0.5, 0.5)}),
        ("scikit-learn pipeline, 1 row", tabular_pipeline(), {"X": rows[:1]}),
        ("scikit-learn pipeline, 256 rows", tabular_pipeline(), {"X": rows[:256]}),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=5)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    print(f"{machine()}; {args.threads} threads; {args.blocks} x {args.runs} runs each, interleaved")
    rows, ratios = [], []
    for label, data, feeds in cases():
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        interpreter = Interpreter(serialize(from_onnx(onnx.load_from_string(data))), num_threads=args.threads)
        want = session.run(None, feeds)
        got = interpreter.run(feeds)
        for name, anchor in zip((o.name for o in session.get_outputs()), want, strict=True):
            if anchor.dtype.kind == "f":
                check_close(f"{label} {name}", got[name], anchor, rtol=1e-3, atol=1e-4)
            elif not np.array_equal(got[name], anchor):
                raise SystemExit(f"{label} {name}: differs from onnxruntime")
        times = time_interleaved({"edgerun": lambda it=interpreter, f=feeds: it.run(f),
                                  "onnxruntime": lambda s=session, f=feeds: s.run(None, f)},
                                 args.blocks, args.runs)
        ours, theirs = percentiles(times["edgerun"])[0], percentiles(times["onnxruntime"])[0]
        ratios.append(ours / theirs)
        rows.append([label, f"{ours / 1e3:.2f}", f"{theirs / 1e3:.2f}", f"{ours / theirs:.2f}"])
    print_table(["model", "edgerun ms", "onnxruntime ms", "edgerun/ORT"], rows, args.markdown)
    print(f"geometric mean edgerun/ORT: {np.exp(np.mean(np.log(ratios))):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
