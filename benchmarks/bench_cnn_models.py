"""Latency of real CNN architectures, edgerun (device "auto") vs onnxruntime, in the same run:
the 9 onnx `light` models (shipped inside the onnx package; given random weights of the right
scale, as the tests do) and torchvision's mobile CNNs exported by
scripts/export_torchvision_models.py (random weights; speed does not depend on them).

    .venv/bin/python benchmarks/bench_cnn_models.py [--batches 1,8] [--threads 1,2] [--blocks 3]
        [--runs 3] [--models mobilenet_v2,squeezenet] [--markdown]

For each model, batch size and thread count both runtimes are checked against each other
(rtol 1e-3 on the outputs), warmed up, then timed in `--blocks` alternating blocks of `--runs`
calls (blocks, not single calls, so the spinning onnxruntime's workers do after a run does not
land on edgerun's next call); the table gives medians in ms and the ratio edgerun / onnxruntime
(< 1.00: edgerun is faster), and ends with the geometric mean of the ratios per
(batch, threads). onnxruntime's workers are told not to spin after a run
(session.intra_op.allow_spinning=0) unless `--ort-spinning` is given: on a machine with as many
threads as cores its spinning workers otherwise hold the cores edgerun's next call starts on
(MobileNetV3-Small measured 12 ms vs 23 ms for edgerun that way), which no deployment running
one runtime sees; edgerun's own workers never spin (devices/numba_threads.py). A model missing
from the export cache is listed with the command that exports it.
"""

# ruff: noqa: E402 - the repository root goes on sys.path before project imports
from __future__ import annotations

import argparse
import glob
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import onnx
import onnxruntime as ort

from benchmarks._harness import check_close, machine, print_table, time_interleaved
from edgerun.converters import from_onnx
from edgerun.runtime import Interpreter, serialize
from scripts.export_torchvision_models import DEFAULT_DIR, MODELS
from tests.converters.test_light_models import with_random_weights

LIGHT_DIR = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def available_models(cache: Path) -> tuple[dict[str, onnx.ModelProto], list[str]]:
    """name -> model of every light model and every exported torchvision model; the names of
    the torchvision models not exported yet."""
    models = {}
    for path in sorted(glob.glob(str(LIGHT_DIR / "light_*.onnx"))):
        models[os.path.basename(path)[6:-5]] = with_random_weights(onnx.load(path))
    missing = []
    for name in MODELS:
        path = cache / f"{name}.onnx"
        if path.exists():
            models[name] = onnx.load(str(path))
        else:
            missing.append(name)
    return models, missing


def chosen_models(cache: Path, names: str) -> tuple[dict[str, onnx.ModelProto], list[str]]:
    """available_models narrowed to the comma-separated `names` (all when empty); SystemExit
    naming the known ones for a name that is neither available nor exportable."""
    models, missing = available_models(cache)
    if not names:
        return models, missing
    wanted = names.split(",")
    unknown = [n for n in wanted if n not in models and n not in missing]
    if unknown:
        raise SystemExit(f"unknown model {', '.join(unknown)}; known: {', '.join([*models, *missing])}")
    return {n: m for n, m in models.items() if n in wanted}, [n for n in missing if n in wanted]


def feeds_for(model: onnx.ModelProto, batch: int) -> dict[str, np.ndarray]:
    """A random float32 image batch for the model's one input (its declared dims, batch first)."""
    (graph_input,) = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    dims = [d.dim_value or 1 for d in graph_input.type.tensor_type.shape.dim]
    dims[0] = batch
    return {graph_input.name: np.random.default_rng(0).standard_normal(dims).astype(np.float32)}


def with_batch(model: onnx.ModelProto, batch: int) -> onnx.ModelProto:
    """The light models declare batch 1: a copy whose image input and outputs have batch dim
    `batch` (intermediate shape annotations dropped)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    del copy.graph.value_info[:]
    weights = {t.name for t in copy.graph.initializer}
    for value in (*(i for i in copy.graph.input if i.name not in weights), *copy.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value"):
            dims[0].dim_value = batch
    return copy


def measure(name: str, model: onnx.ModelProto, batch: int, threads: int, args: argparse.Namespace) -> list | None:
    """A table row, or None when onnxruntime cannot run the model at this batch size (some light
    models reshape to a fixed batch of 1)."""
    model = with_batch(model, batch)
    feeds = feeds_for(model, batch)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    if not args.ort_spinning:  # its idle workers would spin on the cores edgerun's next call needs
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        session.run(None, feeds)
    except Exception as exc:  # onnxruntime's own refusal: nothing to compare against
        print(f"  {name} batch {batch}: onnxruntime cannot run it ({str(exc).splitlines()[0][:80]}...)")
        return None
    ours = Interpreter(serialize(from_onnx(model)), device="auto", num_threads=threads)
    out_name = next(iter(ours.signatures["serving_default"].outputs))
    check_close(f"{name} batch {batch}", ours.run(feeds)[out_name], session.run(None, feeds)[0],
                rtol=1e-3, atol=1e-5)
    times = time_interleaved({"ours": lambda: ours.run(feeds), "ort": lambda: session.run(None, feeds)},
                             blocks=args.blocks, runs_per_block=args.runs)
    ms = {k: float(np.median(v)) / 1e3 for k, v in times.items()}
    return [name, batch, threads, f"{ms['ours']:.2f}", f"{ms['ort']:.2f}", f"{ms['ours'] / ms['ort']:.2f}"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--models", default="", help="comma-separated names (default: all found)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_DIR, help="exported models (default: %(default)s)")
    parser.add_argument("--ort-spinning", action="store_true",
                        help="leave onnxruntime's workers spinning after each run (its default)")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    models, missing = chosen_models(args.cache, args.models)
    print(machine())
    if missing:
        print(f"not exported yet (python scripts/export_torchvision_models.py): {', '.join(missing)}")
    rows = []
    for batch in (int(b) for b in args.batches.split(",")):
        for threads in (int(t) for t in args.threads.split(",")):
            for name, model in models.items():
                row = measure(name, model, batch, threads, args)
                if row is not None:
                    rows.append(row)
                    print("  " + "  ".join(str(c) for c in row), flush=True)
    print_table(["model", "batch", "threads", "edgerun ms", "onnxruntime ms", "edgerun/ORT"], rows, args.markdown)
    print()
    groups: dict[tuple, list[float]] = {}
    for row in rows:
        groups.setdefault((row[1], row[2]), []).append(float(row[5]))
    summary = [[b, t, len(r), f"{float(np.exp(np.mean(np.log(r)))):.2f}", f"{max(r):.2f}"]
               for (b, t), r in groups.items()]
    print_table(["batch", "threads", "models", "geomean edgerun/ORT", "worst"], summary, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
