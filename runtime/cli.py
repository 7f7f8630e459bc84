"""The runtime's own commands: `edgerun inspect`, `edgerun run`, `edgerun bench`.

Registered by the dispatcher in `edgerun.cli` through `add_parser`, like every other
package's commands; this module imports nothing above the runtime.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def add_parser(subparsers: Any) -> None:
    """Register `inspect`, `run` and `bench`."""
    _add_inspect(subparsers)
    _add_run(subparsers)
    _add_bench(subparsers)


# --- inspect -------------------------------------------------------------------------------

def _add_inspect(subparsers: Any) -> None:
    p = subparsers.add_parser("inspect", help="show a model's signatures, ops, sizes, metadata")
    p.add_argument("model", type=Path, help=".erm file")
    p.set_defaults(func=cmd_inspect)


def cmd_inspect(args: argparse.Namespace) -> int:
    """Print signatures, op histogram, parameter count, sizes, estimated work and metadata of an
    .erm file. Fails with OSError (unreadable) or ModelError (malformed)."""
    from edgerun.runtime import load_model

    graph = load_model(args.model)
    weights = [v for g in (graph, *graph.subgraphs()) for v in g.values() if v.data is not None]
    params = sum(v.data.size for v in weights if v.data.dtype.kind == "f")
    weight_bytes = sum(v.data.nbytes for v in weights)
    print(f"{args.model}: {_size(args.model.stat().st_size)}, "
          f"weights {_size(weight_bytes)}, {params:,} parameters")
    for name, sig in graph.signatures.items():
        print(f"signature {name!r}")
        for kind, values in (("input", sig.inputs), ("output", sig.outputs)):
            for key, value in values.items():
                print(f"  {kind:<6} {key}: {_dtype(value.dtype)} {_shape(value.shape)}")
    histogram = graph.op_histogram()
    print(f"ops ({len(graph.nodes)} nodes): "
          + ", ".join(f"{op} x{n}" for op, n in histogram.items()))
    print(_work_line(args.model))
    for key, value in graph.metadata.items():
        print(f"metadata {key}: {value}")
    return 0


def _work_line(model: Path) -> str:
    """'estimated work (multiply-adds per run, dynamic dims at 1): sig N, ...', or why not."""
    from edgerun.runtime import EdgerunError, Interpreter

    try:
        it = Interpreter(model, device="cpu")
    except EdgerunError as exc:
        return f"estimated work: unavailable ({exc})"
    figures = ", ".join(f"{name} {it.estimated_macs(name):,}" for name in it.signatures)
    return f"estimated work (multiply-adds per run, dynamic dims at 1): {figures or 'no signatures'}"


def _size(nbytes: int) -> str:
    """A byte count for humans: '812 B', '12.3 KiB', '4.0 MiB'."""
    size = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{nbytes} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _dtype(dtype: np.dtype | None) -> str:
    return "?" if dtype is None else str(dtype)


def _shape(shape: tuple[int, ...] | None) -> str:
    if shape is None:
        return "[?]"
    return "[" + ", ".join("?" if d < 0 else str(d) for d in shape) + "]"


# --- run -----------------------------------------------------------------------------------

def _add_run(subparsers: Any) -> None:
    p = subparsers.add_parser("run", help="run a signature on inputs from .npy files")
    p.add_argument("model", type=Path, help=".erm file")
    p.add_argument("--input", "-i", action="append", default=[], metavar="NAME=FILE.npy",
                   help="an input tensor (repeat for several)")
    p.add_argument("--signature", "-s", default="serving_default")
    p.add_argument("--output", "-o", type=Path, help="write the outputs to this .npz")
    p.add_argument("--device", default="auto")
    p.add_argument("--profile", default=None, help="device profile: host, rpi4, phone (threads, memory budget)")
    p.set_defaults(func=cmd_run)


def parse_input_specs(specs: Sequence[str]) -> dict[str, Path]:
    """'NAME=FILE' strings -> {name: path}. ValueError naming the bad spec otherwise."""
    parsed: dict[str, Path] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"bad --input {spec!r}: expected NAME=FILE.npy")
        if name in parsed:
            raise ValueError(f"bad --input {spec!r}: input {name!r} given twice")
        parsed[name] = Path(path)
    return parsed


def cmd_run(args: argparse.Namespace) -> int:
    """Run the signature and print each output's name, dtype, shape and a preview.
    Fails with ValueError (bad --input), OSError (unreadable file), EdgerunError."""
    from edgerun.runtime import Interpreter

    paths = parse_input_specs(args.input)
    inputs = {name: np.load(path, allow_pickle=False) for name, path in paths.items()}
    it = Interpreter(args.model, device=args.device, profile=args.profile)
    outputs = it.run(inputs, signature=args.signature)
    for name, array in outputs.items():
        preview = np.array2string(array.ravel()[:8], precision=4, separator=", ")
        more = " ..." if array.size > 8 else ""
        print(f"{name}: {array.dtype} {list(array.shape)} {preview}{more}")
    if args.output is not None:
        np.savez(args.output, **outputs)
        print(f"wrote {args.output}")
    return 0


# --- bench ---------------------------------------------------------------------------------

def _add_bench(subparsers: Any) -> None:
    p = subparsers.add_parser("bench", help="time a signature on random inputs")
    p.add_argument("model", type=Path, help=".erm file")
    p.add_argument("--runs", type=int, default=100, help="timed runs (default 100)")
    p.add_argument("--warmup", type=int, default=10, help="untimed runs first (default 10)")
    p.add_argument("--threads", type=int, default=None, help="kernel threads")
    p.add_argument("--batch", type=int, default=1, help="size of dynamic leading dims")
    p.add_argument("--signature", "-s", default="serving_default")
    p.add_argument("--device", default="auto")
    p.add_argument("--profile", default=None, help="device profile: host, rpi4, phone (threads, memory budget)")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    """Time `--runs` invocations after `--warmup`; print p50/p90/p99/mean latency in µs
    and the peak activation memory. Fails with ValueError for non-positive counts."""
    from edgerun.runtime import Interpreter

    if args.runs < 1 or args.warmup < 0 or args.batch < 1:
        raise ValueError("--runs and --batch must be >= 1 and --warmup >= 0")
    it = Interpreter(args.model, device=args.device, num_threads=args.threads, profile=args.profile)
    if args.signature not in it.signatures:
        raise ValueError(f"unknown signature {args.signature!r}; the model has: "
                         f"{', '.join(sorted(it.signatures))}")
    inputs = random_inputs(it.signatures[args.signature].inputs, args.batch)
    for name, array in inputs.items():
        it.resize_input(name, array.shape, signature=args.signature)
    for _ in range(args.warmup):
        it.run(inputs, signature=args.signature)
    times = np.empty(args.runs)
    for i in range(args.runs):
        start = time.perf_counter_ns()
        it.run(inputs, signature=args.signature)
        times[i] = (time.perf_counter_ns() - start) / 1e3
    p50, p90, p99 = np.percentile(times, [50, 90, 99])
    shapes = ", ".join(f"{n}{list(a.shape)}" for n, a in inputs.items())
    print(f"{args.model} [{args.signature}] {shapes}: {args.runs} runs, "
          f"threads={args.threads or 'default'}")
    print(f"latency us: p50 {p50:.1f}  p90 {p90:.1f}  p99 {p99:.1f}  mean {times.mean():.1f}")
    print(f"peak activation memory: {_size(it.peak_activation_bytes)}")
    macs = it.estimated_macs(args.signature)
    print(f"estimated work: {macs:,} multiply-adds per run ({macs / times.mean() / 1e3:.2f} GMAC/s at the mean)")
    return 0


def random_inputs(infos: dict[str, Any], batch: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """Random arrays matching TensorInfos (name -> .dtype, .shape): a dynamic leading dim
    becomes `batch`, other dynamic dims 1. Floats are standard normal, ints 0 or 1."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for name, info in infos.items():
        shape = tuple(d if d >= 0 else (batch if i == 0 else 1) for i, d in enumerate(info.shape))
        dtype = np.dtype(info.dtype)
        if dtype.kind == "f":
            arrays[name] = rng.standard_normal(shape).astype(dtype)
        else:
            arrays[name] = rng.integers(0, 2, size=shape).astype(dtype)
    return arrays

