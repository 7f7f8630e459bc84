"""Latency of a small CNN, edgerun vs onnxruntime, at batch 1 and 8 and 1 and 2 threads.

The model takes x [N, 3, 32, 32]: Conv 3->16 (3x3, pad 1), Relu, MaxPool 2,
Conv 16->32 (3x3, pad 1), Relu, MaxPool 2, GlobalAveragePool, Flatten, Gemm 32->10
(float32, 5.4k weights, 1.6 M multiply-adds per image).

    .venv/bin/python benchmarks/bench_cnn.py [--blocks 10] [--runs 50] [--markdown]

For every (batch, threads) case both runtimes are called `--blocks x --runs` times
in alternating blocks; the table gives each one's median in µs, the ratio
edgerun / onnxruntime (< 1.00 means edgerun is faster) and edgerun's peak
activation memory (its arena, KiB). `threads` is passed as edgerun's
`num_threads` (which sets the process-wide BLAS thread pool) and as onnxruntime's
intra_op_num_threads. Before timing, edgerun's output is checked against
onnxruntime's (rtol 1e-5). On a machine with few cores and other busy processes,
multi-threaded calls stall now and then: read the medians, and the load average
printed above the table.
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


def cnn_onnx(seed: int = 0) -> onnx.ModelProto:
    """The benchmark CNN with a dynamic batch dimension, opset 17."""
    rng = np.random.default_rng(seed)

    def weights(*shape: int) -> np.ndarray:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        return (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)

    inits = {"w1": weights(16, 3, 3, 3), "b1": weights(16), "w2": weights(32, 16, 3, 3),
             "b2": weights(32), "wf": weights(10, 32), "bf": weights(10)}
    node = helper.make_node
    nodes = [
        node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        node("Relu", ["c1"], ["r1"], name="relu1"),
        node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        node("Conv", ["p1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        node("Relu", ["c2"], ["r2"], name="relu2"),
        node("MaxPool", ["r2"], ["p2"], name="pool2", kernel_shape=[2, 2], strides=[2, 2]),
        node("GlobalAveragePool", ["p2"], ["g"], name="gap"),
        node("Flatten", ["g"], ["f"], name="flatten", axis=1),
        node("Gemm", ["f", "wf", "bf"], ["y"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])],
        initializer=[numpy_helper.from_array(a, n) for n, a in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def measure(erm: bytes, model: onnx.ModelProto, batch: int, threads: int,
            args: argparse.Namespace) -> list[object]:
    """One table row: medians of both runtimes at this batch size and thread count."""
    it = Interpreter(erm, num_threads=threads)
    it.resize_input("x", (batch, 3, 32, 32))
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    feeds = {"x": np.random.default_rng(batch).standard_normal((batch, 3, 32, 32)).astype(np.float32)}
    check_close(f"CNN batch {batch}", it.run(feeds)["y"], session.run(None, feeds)[0])
    candidates = {"edgerun": lambda: it.run(feeds), "onnxruntime": lambda: session.run(None, feeds)}
    for fn in candidates.values():
        for _ in range(args.warmup):
            fn()
    times = time_interleaved(candidates, args.blocks, args.runs)
    ours, _ = percentiles(times["edgerun"])
    anchor, _ = percentiles(times["onnxruntime"])
    return [f"CNN 3x32x32, batch {batch}, {threads} thread{'s' if threads > 1 else ''}",
            f"{ours:.0f}", f"{anchor:.0f}", f"{ours / anchor:.2f}",
            f"{it.peak_activation_bytes / 1024:.0f}"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=10, help="alternating blocks (default 10)")
    parser.add_argument("--runs", type=int, default=50, help="calls per block (default 50)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed calls first (default 20)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--markdown", action="store_true", help="print README table rows")
    args = parser.parse_args(argv)

    model = cnn_onnx()
    erm = serialize(from_onnx(model))
    rows = [measure(erm, model, batch, threads, args)
            for batch in args.batches for threads in args.threads]
    print(f"# {machine()}; {args.blocks} x {args.runs} calls each, interleaved")
    print_table(["case", "edgerun us", "ORT us", "edgerun/ORT", "edgerun peak KiB"], rows,
                args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
