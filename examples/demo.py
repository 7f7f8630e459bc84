"""edgerun end to end: convert -> run -> serve over gRPC -> learn on devices.

    python examples/demo.py [--rounds N] [--plot federated.png] [--language-model]

1. Builds a small image classifier with onnx.helper, converts it with the `edgerun`
   command line, inspects the .erm file, classifies a random image (top-5), compares
   with onnxruntime and reports latency and peak activation memory.
2. Serves it: `edgerun serve` on a model repository (KServe v2 / Triton protocol, on
   free loopback ports), queried with the stock `tritonclient.grpc` client; the
   answer must equal the interpreter's.
3. Learns on devices: a federated simulation on scikit-learn's digits with secure
   aggregation on (the coordinator only ever sees the masked sum of the devices'
   updates), printing accuracy per round and writing the plot.
4. Only with --language-model (about a minute more): a federated character-level LSTM
   language model on Python's own standard-library docstrings, secure aggregation on,
   printing per round test perplexity, next-character accuracy and the bytes each
   device sends beside the same model trained centrally, and writing its plot.

Everything but the plots is written to a temporary directory removed at the end.
Set up with `python3 tasks.py demo`, which installs what this needs.
"""

# ruff: noqa: E402 - the repository root goes on sys.path before project imports
from __future__ import annotations

import argparse
import contextlib
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgerun.cli import main as edgerun_cli
from edgerun.runtime import Interpreter

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_and_query(erm_path: Path, x: np.ndarray, expected: np.ndarray) -> bool:
    """Put the model in a repository, start `edgerun serve` on free loopback ports, ask it
    with tritonclient.grpc, compare with `expected`, then stop it with SIGTERM."""
    import tritonclient.grpc as grpcclient

    repo = erm_path.parent / "models"
    (repo / "cnn" / "1").mkdir(parents=True)
    (repo / "cnn" / "1" / "model.erm").write_bytes(erm_path.read_bytes())
    (repo / "cnn" / "config.pbtxt").write_text("max_batch_size: 8\n"
                                               "dynamic_batching { max_queue_delay_microseconds: 500 }\n")
    ports = {flag: free_port() for flag in ("--grpc-port", "--http-port", "--metrics-port")}
    command = [sys.executable, "-m", "edgerun", "serve", "--model-repository", str(repo), "--host", "127.0.0.1",
               *(str(part) for flag, port in ports.items() for part in (flag, port))]
    print(f"$ edgerun serve --model-repository {repo.name} --grpc-port {ports['--grpc-port']} ...")
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{ports['--grpc-port']}")
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(Exception):
                if client.is_model_ready("cnn"):
                    break
            if server.poll() is not None or time.monotonic() > deadline:
                print("the server did not come up:", server.stderr.read().decode()[-2000:])
                return False
            time.sleep(0.2)
        metadata = client.get_model_metadata("cnn")
        print(f"server ready: model {metadata.name!r} versions {list(metadata.versions)}, "
              f"inputs {[(i.name, i.datatype, list(i.shape)) for i in metadata.inputs]}")
        request = grpcclient.InferInput("x", list(x.shape), "FP32")
        request.set_data_from_numpy(x)
        start = time.perf_counter()
        answer = client.infer("cnn", [request]).as_numpy("probs")
        elapsed = (time.perf_counter() - start) * 1e3
        same = np.allclose(answer, expected, rtol=1e-6, atol=1e-7)
        print(f"gRPC ModelInfer answered in {elapsed:.1f} ms: {'equal to' if same else 'DIFFERENT from'} "
              f"the interpreter's output (top class {CLASSES[int(answer[0].argmax())]})")
        client.close()
        return same
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            code = server.wait(30)
            print(f"server stopped on SIGTERM (exit code {code})")
        except subprocess.TimeoutExpired:
            server.kill()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="edgerun end to end")
    parser.add_argument("--rounds", type=int, default=30, help="federated rounds (secure aggregation on)")
    parser.add_argument("--plot", default="federated.png", help="where to write the accuracy plot")
    parser.add_argument("--language-model", action="store_true",
                        help="then train a federated character-level LSTM language model (step 4, about a minute)")
    parser.add_argument("--language-plot", default="federated_language_model.png",
                        help="where step 4 writes its perplexity and accuracy plot")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print("== 1. convert and run ==")
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
        print("\n== 2. serve over gRPC (KServe v2) ==")
        if not serve_and_query(erm_path, x, probs):
            return 1
    print("\n== 3. learn on devices: federated, secure aggregation on ==")
    code = federated_demo(args.rounds, args.plot)
    if args.language_model:
        print("\n== 4. a federated character-level language model, secure aggregation on ==")
        code = max(code, language_model_demo(args.language_plot))
    return code


def federated_demo(rounds: int, plot: str) -> int:
    """Federated digits with secure aggregation on and 20 % of the selected devices dropping
    out at random protocol stages; 0 if the final accuracy reached 90 %."""
    from edgerun.federated.demo import run_secure_digits_demo

    plot_path = Path(plot).resolve()
    with tempfile.TemporaryDirectory(prefix="edgerun-federated-") as workdir:
        history = run_secure_digits_demo(workdir, rounds=rounds, plot=plot_path)
    accuracies = [r.metrics["test_accuracy"] for r in history if r.metrics.get("test_accuracy") is not None]
    if not accuracies:
        print("no round completed")
        return 1
    print(f"final global accuracy {accuracies[-1]:.4f} after {len(history)} rounds; plot: {plot_path}")
    return 0 if accuracies[-1] >= 0.9 else 1


# Step 4's budget: 6 devices (one standard-library module each), about a minute on 2 cores.
LANGUAGE_MODEL_BUDGET = {"clients": 6, "rounds": 10, "max_chars": 2000}


def language_model_demo(plot: str, **budget: int) -> int:
    """The federated character LSTM (federated/language.py) with LANGUAGE_MODEL_BUDGET updated by
    `budget`: prints each round beside the central run and writes the plot; 0 if the federated
    perplexity fell from the first round to the last."""
    from edgerun.federated.language import report_language_demo

    start = time.perf_counter()
    code = report_language_demo(Path(plot).resolve(), **{**LANGUAGE_MODEL_BUDGET, **budget})
    print(f"language model step took {time.perf_counter() - start:.0f} s")
    return code


if __name__ == "__main__":
    sys.exit(main())
