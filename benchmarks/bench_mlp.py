"""Per-invoke latency of a tiny MLP: edgerun vs onnxruntime, with plain numpy as the floor.

The model is 64-32-10 (Gemm, Relu, Gemm), float32, batch 1, one thread. It measures
fixed per-call overhead, not arithmetic: the math is ~2.7k multiply-adds.

    .venv/bin/python benchmarks/bench_mlp.py [--blocks 10] [--runs 500] [--markdown]

Each candidate is called `--blocks x --runs` times (default 10 x 500 = 5,000), in
blocks that take turns, so machine noise hits all of them alike; every call is
timed on its own. The table gives the median and p90 in µs and the ratio to
onnxruntime's median from the same run (< 1.00 means edgerun is faster). "numpy"
is the same math as three numpy expressions: the least any Python runtime pays.
Before timing, edgerun's output is checked against onnxruntime's (rtol 1e-5).
"""

# ruff: noqa: E402 - the repository root goes on sys.path before project imports
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from benchmarks._harness import check_close, machine, percentiles, print_table, time_interleaved
from edgerun.converters import from_onnx
from edgerun.runtime import Interpreter, serialize

SIZES = (64, 32, 10)


def mlp_weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    (n_in, n_hidden, n_out) = SIZES
    return {
        "w1": (rng.standard_normal((n_hidden, n_in)) / np.sqrt(n_in)).astype(np.float32),
        "b1": rng.standard_normal(n_hidden).astype(np.float32),
        "w2": (rng.standard_normal((n_out, n_hidden)) / np.sqrt(n_hidden)).astype(np.float32),
        "b2": rng.standard_normal(n_out).astype(np.float32),
    }


def mlp_onnx(weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    """x [1, 64] -> Gemm(transB) -> Relu -> Gemm(transB) -> y [1, 10], opset 17."""
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1", transB=1),
        helper.make_node("Relu", ["h"], ["a"], name="relu"),
        helper.make_node("Gemm", ["a", "w2", "b2"], ["y"], name="fc2", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, SIZES[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, SIZES[-1]])],
        initializer=[numpy_helper.from_array(a, n) for n, a in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def ort_session(model: onnx.ModelProto, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=10, help="alternating blocks (default 10)")
    parser.add_argument("--runs", type=int, default=500, help="calls per block (default 500)")
    parser.add_argument("--warmup", type=int, default=200, help="untimed calls first (default 200)")
    parser.add_argument("--markdown", action="store_true", help="print README table rows")
    args = parser.parse_args(argv)

    weights = mlp_weights()
    model = mlp_onnx(weights)
    it = Interpreter(serialize(from_onnx(model)), num_threads=1)  # as loaded from .erm
    session = ort_session(model, threads=1)
    x = np.random.default_rng(1).standard_normal((1, SIZES[0])).astype(np.float32)
    feeds = {"x": x}
    w1t, b1, w2t, b2 = weights["w1"].T.copy(), weights["b1"], weights["w2"].T.copy(), weights["b2"]

    def numpy_mlp() -> np.ndarray:
        return np.maximum(x @ w1t + b1, 0) @ w2t + b2

    check_close("MLP", it.run(feeds)["y"], session.run(None, feeds)[0])
    check_close("MLP (numpy)", numpy_mlp(), session.run(None, feeds)[0])
    candidates = {
        "edgerun": lambda: it.run(feeds),
        "onnxruntime": lambda: session.run(None, feeds),
        "numpy": numpy_mlp,
    }
    for fn in candidates.values():
        for _ in range(args.warmup):
            fn()
    times = time_interleaved(candidates, args.blocks, args.runs)

    anchor, _ = percentiles(times["onnxruntime"])
    rows = []
    for name, samples in times.items():
        p50, p90 = percentiles(samples)
        rows.append([f"MLP 64-32-10, b1, 1 thread: {name}", f"{p50:.1f}", f"{p90:.1f}",
                     f"{p50 / anchor:.2f}"])
    print(f"# {machine()}; {args.blocks} x {args.runs} calls each, interleaved")
    print_table(["candidate", "median us", "p90 us", "vs ORT"], rows, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
