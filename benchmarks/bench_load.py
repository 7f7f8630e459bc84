"""Load time and memory of a large model: edgerun's .erm vs ONNX.

Writes a ~512 MiB model once to a temporary directory (deleted afterwards) as
.onnx (weights inside the protobuf) and as .erm: x [1, 4096] through 8 Gemm layers
of 4096 x 4096 float32 weights. Then each step runs in a fresh Python process,
so memory figures start clean:

    edgerun load_model(path)          vs  onnx.load(path)
    edgerun Interpreter(path)         vs  onnxruntime.InferenceSession(path)

Each child first runs the step on a tiny model of the same form (so imports and
one-time library set-up, e.g. backend selection or onnxruntime's environment,
are not counted), then reads VmRSS from /proc/self/status, runs the step once on
the big model and reads VmRSS and VmHWM again. (Before that, the parent checks
that both runtimes compute the same output from the big model, rtol 1e-5.) The table gives the median
over `--repeats` children of: wall time (ms), the RSS growth (MiB) and the peak
RSS growth during the step (MiB), and edgerun's time and RSS growth as a ratio
to the anchor's (< 1 means edgerun is faster / smaller). The files were just written, so
they are in the page cache: this measures parsing and copying, not the disk.
edgerun maps weights zero-copy, so its RSS grows only when a run touches them.

    .venv/bin/python benchmarks/bench_load.py [--layers 8] [--width 4096] [--repeats 3] [--markdown]

Linux only (/proc). Needs ~2.5 GiB of free memory and ~1.1 GiB of temporary disk.
"""

# ruff: noqa: E402 - the repository root goes on sys.path before project imports
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np

from benchmarks._harness import check_close, machine, print_table

# step -> (label, anchor step or None)
STEPS = {
    "erm_load_model": ("edgerun load_model(.erm)", "onnx_load"),
    "onnx_load": ("onnx.load(.onnx)", None),
    "erm_interpreter": ("edgerun Interpreter(.erm)", "ort_session"),
    "ort_session": ("onnxruntime InferenceSession(.onnx)", None),
}


def write_models(directory: Path, layers: int, width: int, name: str = "big") -> tuple[Path, Path]:
    """The model as directory/{name}.onnx and directory/{name}.erm; returns both paths."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgerun.converters import from_onnx
    from edgerun.runtime import save_model

    rng = np.random.default_rng(0)
    nodes, inits = [], []
    for i in range(layers):
        w = rng.random((width, width), dtype=np.float32) - np.float32(0.5)
        w *= np.float32(2 / np.sqrt(width))
        inits += [numpy_helper.from_array(w, f"w{i}"),
                  numpy_helper.from_array(np.zeros(width, np.float32) + 0.01, f"b{i}")]
        nodes.append(helper.make_node("Gemm", [f"h{i}" if i else "x", f"w{i}", f"b{i}"],
                                      [f"h{i + 1}" if i + 1 < layers else "y"], transB=1))
        del w
    graph = helper.make_graph(
        nodes, "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, width])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx_path, erm_path = directory / f"{name}.onnx", directory / f"{name}.erm"
    onnx.save(model, onnx_path)
    del model, inits, graph
    save_model(from_onnx(onnx_path), erm_path)
    return onnx_path, erm_path


def check_outputs(onnx_path: Path, erm_path: Path) -> None:
    """SystemExit unless edgerun and onnxruntime give the same y for one random x."""
    import onnxruntime as ort

    from edgerun.runtime import Interpreter

    it = Interpreter(erm_path, num_threads=1)
    session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    width = it.signatures["serving_default"].inputs["x"].shape[1]
    x = np.random.default_rng(1).standard_normal((1, width)).astype(np.float32)
    check_close("big model", it.run({"x": x})["y"], session.run(None, {"x": x})[0])


def _rss_kib() -> dict[str, int]:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


def child(step: str, path: str, warmup_path: str) -> None:
    """Run one step in this (fresh) process, first on `warmup_path` untimed, then on `path`;
    print {"ms", "rss_mib", "peak_mib"} of the second as JSON."""
    if step == "erm_load_model":
        from edgerun.runtime import load_model as fn
    elif step == "erm_interpreter":
        from edgerun.runtime import Interpreter

        def fn(p: str) -> object:
            return Interpreter(p, num_threads=1)
    elif step == "onnx_load":
        import onnx

        fn = onnx.load
    else:
        import onnxruntime as ort

        def fn(p: str) -> object:
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            return ort.InferenceSession(p, options, providers=["CPUExecutionProvider"])
    fn(warmup_path)
    before = _rss_kib()
    start = time.perf_counter()
    loaded = fn(path)
    elapsed = time.perf_counter() - start
    after = _rss_kib()
    print(json.dumps({
        "ms": elapsed * 1e3,
        "rss_mib": (after["VmRSS"] - before["VmRSS"]) / 1024,
        "peak_mib": (after["VmHWM"] - before["VmRSS"]) / 1024,
    }))
    del loaded


def measure(step: str, path: Path, warmup_path: Path, repeats: int) -> dict[str, float]:
    """Medians over `repeats` fresh child processes running `step` on `path`."""
    results = []
    for _ in range(repeats):
        command = [sys.executable, __file__, "--child", step, str(path), str(warmup_path)]
        proc = subprocess.run(command,
                              capture_output=True, text=True, check=False, cwd=REPO)
        if proc.returncode != 0:
            raise SystemExit(f"child {step} failed:\n{proc.stderr}")
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return {key: float(np.median([r[key] for r in results])) for key in results[0]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=8, help="Gemm layers (default 8)")
    parser.add_argument("--width", type=int, default=4096, help="layer width (default 4096)")
    parser.add_argument("--repeats", type=int, default=3, help="child processes per step (default 3)")
    parser.add_argument("--markdown", action="store_true", help="print README table rows")
    parser.add_argument("--child", nargs=3, metavar=("STEP", "PATH", "WARMUP_PATH"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0

    with tempfile.TemporaryDirectory(prefix="edgerun-bench-load-") as tmp:
        paths = {".onnx": {}, ".erm": {}}
        for name, layers, width in (("big", args.layers, args.width), ("tiny", 1, 4)):
            for path in write_models(Path(tmp), layers, width, name):
                paths[path.suffix][name] = path
        check_outputs(paths[".onnx"]["big"], paths[".erm"]["big"])
        sizes = {suffix: p["big"].stat().st_size / 2**20 for suffix, p in paths.items()}
        figures = {}
        for step in STEPS:
            p = paths[".erm" if step.startswith("erm") else ".onnx"]
            figures[step] = measure(step, p["big"], p["tiny"], args.repeats)
    rows = []
    for step, (label, anchor) in STEPS.items():
        f = figures[step]
        ratios = ["", ""]
        if anchor is not None:
            a = figures[anchor]
            ratios = [f"{f['ms'] / a['ms']:.2g}", f"{f['rss_mib'] / max(a['rss_mib'], 1e-9):.2g}"]
        rows.append([label, f"{f['ms']:.1f}", f"{f['rss_mib']:.1f}", f"{f['peak_mib']:.1f}", *ratios])
    print(f"# {machine()}; {args.layers} x Gemm {args.width}x{args.width} float32: "
          f".onnx {sizes['.onnx']:.0f} MiB, .erm {sizes['.erm']:.0f} MiB; "
          f"median of {args.repeats} fresh processes")
    print_table(["step", "time ms", "RSS +MiB", "peak RSS +MiB", "time vs anchor", "RSS vs anchor"],
                rows, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
