"""edgerun on an NVIDIA GPU (device="cuda") against PyTorch eager on CUDA, in the same run.

    python benchmarks/bench_gpu.py [--models mobilenet_v2,resnet18] [--batches 1,32] [--out results.json]

For each torchvision model (random weights, seed 0, built by torchvision itself: nothing is
downloaded) and batch size: the model is exported to ONNX once, converted, and run by
edgerun's cuda backend with CUDA-graph replay, without it, and by PyTorch eager on the same
weights (and onnxruntime's CUDA provider where it is installed with one). Prints median
latency, throughput and the ratio edgerun / PyTorch, and checks edgerun cuda's outputs
against edgerun's CPU kernels (the reference; target rel 1e-4 fp32) and PyTorch's.
Targets (issue 20): batch-32 throughput >= 0.8x PyTorch eager; batch-1 latency with graph
replay <= PyTorch eager. Needs a GPU, numba-cuda, CuPy, torch and torchvision.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _median_ms(fn, sync, runs: int, warmup: int = 3) -> float:  # noqa: ANN001
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _export(model, batch: int) -> bytes:  # noqa: ANN001 - a torch module
    import torch

    buffer = io.BytesIO()
    example = torch.randn(batch, 3, 224, 224)
    torch.onnx.export(model, (example,), buffer, input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17, dynamo=False)
    return buffer.getvalue()


def _relative_error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.max(np.abs(got - want)) / max(float(np.max(np.abs(want))), 1e-30))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mobilenet_v2,resnet18")
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--runs", type=int, default=30, help="timed runs per candidate (median)")
    parser.add_argument("--out", type=Path, help="also write the results here as JSON")
    args = parser.parse_args()
    try:
        import torch
        import torchvision
    except ImportError:
        print("error: this benchmark needs torch and torchvision with CUDA", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("error: no CUDA GPU: this benchmark needs one", file=sys.stderr)
        return 2
    import edgerun  # noqa: F401 - registers the backends
    from edgerun.converters.onnx_import import from_onnx
    from edgerun.devices.cuda import graphs
    from edgerun.runtime import Interpreter

    gpu_name = torch.cuda.get_device_name(0)
    print(f"GPU: {gpu_name}; torch {torch.__version__}")
    try:
        import onnxruntime as ort
        ort_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    except ImportError:
        ort, ort_cuda = None, False
    results = []
    for name in args.models.split(","):
        torch.manual_seed(0)
        net = getattr(torchvision.models, name)(weights=None).eval()
        onnx_bytes = _export(net, 1)
        graph = from_onnx(onnx_bytes)
        net_gpu = net.cuda()
        for batch in (int(b) for b in args.batches.split(",")):
            x = np.random.default_rng(batch).standard_normal((batch, 3, 224, 224)).astype(np.float32)
            feeds = {"input": x}
            row = {"model": name, "batch": batch, "gpu": gpu_name}
            started = time.perf_counter()
            reference = Interpreter(graph).run(feeds)["logits"]  # the CPU kernels
            row["cpu_reference_s"] = round(time.perf_counter() - started, 3)
            for use_graphs in (True, False):
                graphs.ENABLED = use_graphs
                cuda_it = Interpreter(graph, device="cuda")
                got = cuda_it.run(feeds)["logits"]
                placement = cuda_it.placement()
                key = "edgerun_graph_ms" if use_graphs else "edgerun_steps_ms"
                row[key] = _median_ms(lambda it=cuda_it, feeds=feeds: it.run(feeds), lambda: None, args.runs)
            graphs.ENABLED = True
            row["steps_on_gpu"] = f"{sum(w == 'device' for w in placement.values())}/{len(placement)}"
            row["host_ops"] = sorted({n.op_type for n in graph.nodes if placement.get(n.name) == "host"})
            row["rel_error_vs_cpu"] = _relative_error(got, reference)
            with torch.no_grad():
                xt = torch.from_numpy(x).cuda()
                torch_out = net_gpu(xt).cpu().numpy()

                def torch_run(xt=xt, net_gpu=net_gpu) -> None:
                    with torch.no_grad():
                        net_gpu(xt).cpu()  # the host copy edgerun's run also makes

                row["torch_ms"] = _median_ms(torch_run, torch.cuda.synchronize, args.runs)
            row["rel_error_vs_torch"] = _relative_error(got, torch_out)
            if ort_cuda:
                session = ort.InferenceSession(onnx_bytes, providers=["CUDAExecutionProvider"])
                row["ort_cuda_ms"] = _median_ms(lambda s=session, feeds=feeds: s.run(None, feeds), lambda: None,
                                                args.runs)
            best = min(row["edgerun_graph_ms"], row["edgerun_steps_ms"])
            row["ratio_vs_torch"] = round(best / row["torch_ms"], 3)
            row["edgerun_images_per_s"] = round(batch / best * 1e3, 1)
            row["torch_images_per_s"] = round(batch / row["torch_ms"] * 1e3, 1)
            results.append(row)
            print(json.dumps(row))
    print()
    print("| model | batch | edgerun cuda, graph replay (ms) | step by step (ms) | PyTorch eager (ms) | ratio "
          "| ORT CUDA (ms) | steps on GPU | rel. error vs CPU |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        ort_ms = f"{r['ort_cuda_ms']:.2f}" if "ort_cuda_ms" in r else "-"
        print(f"| {r['model']} | {r['batch']} | {r['edgerun_graph_ms']:.2f} | {r['edgerun_steps_ms']:.2f} | "
              f"{r['torch_ms']:.2f} | {r['ratio_vs_torch']} | {ort_ms} | {r['steps_on_gpu']} | "
              f"{r['rel_error_vs_cpu']:.1e} |")
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
