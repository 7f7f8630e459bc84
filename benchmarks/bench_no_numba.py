"""The no-numba slowdown: each fast-backend benchmark model on device="cpu" (the numpy reference
kernels, all a device without numba runs: `device="auto"` falls back to them) against
device="numba", in the same run. The models are those of benchmarks/bench_cnn_models.py: the 9
onnx `light` models (also benchmarks/bench_light_models.py's) with well-scaled random weights and
the torchvision CNNs exported by scripts/export_torchvision_models.py into benchmarks/.models/.

    .venv/bin/python benchmarks/bench_no_numba.py [--batch 1] [--threads 1] [--blocks 3] [--runs 2]
        [--models mobilenet_v2,squeezenet] [--markdown]

For each model both interpreters are built from the same converted graph and checked against
each other (rtol 1e-3), warmed up (numba's compilation is not timed), then timed in `--blocks`
alternating blocks of `--runs` calls. The table gives medians in ms and the ratio cpu / numba
(how many times slower the device runs without numba), and ends with their geometric mean.
"""

# ruff: noqa: E402 - the repository root goes on sys.path before project imports
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import onnx

from benchmarks._harness import machine, print_table, time_interleaved
from benchmarks.bench_cnn_models import chosen_models, feeds_for, with_batch
from edgerun.converters import from_onnx
from edgerun.runtime import Interpreter, serialize
from scripts.export_torchvision_models import DEFAULT_DIR


def measure(name: str, model: onnx.ModelProto, args: argparse.Namespace) -> list:
    """One table row: model, cpu ms, numba ms, cpu / numba. SystemExit when the two disagree."""
    model = with_batch(model, args.batch)
    feeds = feeds_for(model, args.batch)
    data = serialize(from_onnx(model))
    runs = {device: Interpreter(data, device=device, num_threads=args.threads) for device in ("cpu", "numba")}
    out_name = next(iter(runs["cpu"].signatures["serving_default"].outputs))
    cpu, fast = (runs[d].run(feeds)[out_name] for d in ("cpu", "numba"))  # also the warm-up (and numba's compile)
    if cpu.shape != fast.shape or not np.allclose(cpu, fast, rtol=1e-3, atol=1e-5):
        raise SystemExit(f"{name}: device 'cpu' and device 'numba' disagree (shapes {cpu.shape} vs {fast.shape})")
    times = time_interleaved({d: (lambda it=it: it.run(feeds)) for d, it in runs.items()},
                             blocks=args.blocks, runs_per_block=args.runs)
    ms = {d: float(np.median(t)) / 1e3 for d, t in times.items()}
    return [name, f"{ms['cpu']:.2f}", f"{ms['numba']:.2f}", f"{ms['cpu'] / ms['numba']:.2f}"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--models", default="", help="comma-separated names (default: all found)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_DIR, help="exported models (default: %(default)s)")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    models, missing = chosen_models(args.cache, args.models)
    print(machine() + f"; batch {args.batch}, {args.threads} thread(s)")
    if missing:
        print(f"not exported yet (python scripts/export_torchvision_models.py): {', '.join(missing)}")
    rows = []
    for name, model in models.items():
        rows.append(measure(name, model, args))
        print("  " + "  ".join(rows[-1]), flush=True)
    print_table(["model", "cpu (no numba) ms", "numba ms", "slowdown cpu/numba"], rows, args.markdown)
    ratios = [float(row[3]) for row in rows]
    if ratios:
        worst = rows[int(np.argmax(ratios))][0]
        print(f"\ngeometric mean slowdown without numba over {len(ratios)} models: "
              f"{float(np.exp(np.mean(np.log(ratios)))):.2f}x (worst {max(ratios):.2f}x, {worst})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
