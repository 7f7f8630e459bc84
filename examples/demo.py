"""edgerun in one minute: ONNX -> .erm -> inspect -> run -> check -> time.

    python examples/demo.py

Builds a small image classifier with onnx.helper, converts it with the `edgerun`
command line, inspects the .erm file, classifies a random image and prints the
top-5 classes, compares with onnxruntime when it is installed, and reports the
latency and peak activation memory. Everything is written to a temporary
directory that is removed at the end. Needs numpy and onnx (`pip install -e .[onnx]`).
"""

# ruff: noqa: E402 - the repository root goes on sys.path before project imports
from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from runtime import Interpreter
from runtime.cli import main as edgerun_cli

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def build_cnn(seed: int = 0) -> onnx.ModelProto:
    """x [batch, 3, 32, 32] -> Conv/BatchNorm/Relu/MaxPool -> Conv/Relu -> GlobalAveragePool
    -> Gemm -> Softmax -> probs [batch, 10], with random weights."""
    rng = np.random.default_rng(seed)

    def w(*shape: int, scale: float = 0.2) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    weights = {"conv1_w": w(16, 3, 3, 3), "conv1_b": w(16), "bn_scale": 1 + w(16, scale=0.1),
               "bn_bias": w(16), "bn_mean": w(16), "bn_var": 1 + np.abs(w(16, scale=0.1)),
               "conv2_w": w(32, 16, 3, 3, scale=0.1), "conv2_b": w(32), "fc_w": w(10, 32),
               "fc_b": w(10)}
    node = helper.make_node
    nodes = [
        node("Conv", ["x", "conv1_w", "conv1_b"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        node("BatchNormalization", ["c1", "bn_scale", "bn_bias", "bn_mean", "bn_var"], ["b1"],
             name="bn1"),
        node("Relu", ["b1"], ["r1"], name="relu1"),
        node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        node("Conv", ["p1", "conv2_w", "conv2_b"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        node("Relu", ["c2"], ["r2"], name="relu2"),
        node("GlobalAveragePool", ["r2"], ["g"], name="gap"),
        node("Flatten", ["g"], ["f"], name="flatten"),
        node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], name="fc", transB=1),
        node("Softmax", ["logits"], ["probs"], name="softmax", axis=-1),
    ]
    graph = helper.make_graph(
        nodes, "demo_cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 32, 32])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 10])],
        initializer=[numpy_helper.from_array(a, name) for name, a in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="edgerun-demo")
    model.ir_version = 8
    return model


def compare_with_onnxruntime(model: onnx.ModelProto, x: np.ndarray, probs: np.ndarray) -> None:
    try:
        import onnxruntime as ort
    except ImportError:
        print("onnxruntime not installed: skipping the comparison (pip install -e .[test])")
        return
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"x": x})[0]
    diff = float(np.abs(probs - expected).max())
    verdict = "match" if np.allclose(probs, expected, rtol=1e-5, atol=1e-6) else "MISMATCH"
    print(f"onnxruntime {ort.__version__}: {verdict} (max abs difference {diff:.1e})")


def main() -> int:
    model = build_cnn()
    with tempfile.TemporaryDirectory(prefix="edgerun-demo-") as tmp, contextlib.chdir(tmp):
        onnx.save(model, "cnn.onnx")
        for command in (["convert", "cnn.onnx", "-o", "cnn.erm"], ["inspect", "cnn.erm"]):
            print(f"$ edgerun {' '.join(command)}")  # the same as running the `edgerun` command
            if edgerun_cli(command) != 0:
                return 1
            print()
        erm_path = Path("cnn.erm").resolve()

        it = Interpreter(erm_path, num_threads=1)
        x = np.random.default_rng(42).standard_normal((1, 3, 32, 32)).astype(np.float32)
        probs = it.run({"x": x})["probs"]
        print("top-5 classes for a random 3x32x32 image:")
        for k in np.argsort(probs[0])[::-1][:5]:
            print(f"  {CLASSES[k]:<10} {probs[0, k]:.4f}")
        compare_with_onnxruntime(model, x, probs)

        times = []
        for _ in range(200):
            start = time.perf_counter()
            it.run({"x": x})
            times.append(time.perf_counter() - start)
        print(f"latency: median {np.median(times) * 1e6:.0f} us over 200 runs (batch 1, 1 thread)")
        print(f"peak activation memory: {it.peak_activation_bytes / 1024:.1f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
