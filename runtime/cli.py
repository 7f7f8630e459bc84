"""The runtime's own commands: `edgerun inspect`, `edgerun run`, `edgerun bench`.

Registered by the dispatcher in `edgerun.cli` through `add_parser`, like every other
package's commands; this module imports nothing above the runtime.
"""

from __future__ import annotations

import argparse
import codecs
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
    interpreter, why = _interpreter(args.model)
    weights = [v for g in (graph, *graph.subgraphs()) for v in g.values() if v.data is not None]
    params = sum(v.data.size for v in weights if v.data.dtype.kind == "f")
    weight_bytes = sum(v.data.nbytes for v in weights)
    print(f"{args.model}: {_size(args.model.stat().st_size)}, "
          f"weights {_size(weight_bytes)}, {params:,} parameters")
    # the interpreter's signatures carry the dtypes and shapes inferred for outputs the file leaves open
    signatures = graph.signatures if interpreter is None else interpreter.signatures
    for name, sig in signatures.items():
        print(f"signature {name!r}")
        for kind, values in (("input", sig.inputs), ("output", sig.outputs)):
            for key, value in values.items():
                print(f"  {kind:<6} {key}: {_dtype(value.dtype)} {_shape(value.shape)}")
    histogram = graph.op_histogram()
    print(f"ops ({len(graph.nodes)} nodes): "
          + ", ".join(f"{op} x{n}" for op, n in histogram.items()))
    print(_work_line(interpreter, why))
    for key, value in graph.metadata.items():
        print(f"metadata {key}: {value}")
    return 0


def _interpreter(model: Path) -> tuple[Any, str]:
    """(an Interpreter of `model`, "") or (None, why it cannot be planned)."""
    from edgerun.runtime import EdgerunError, Interpreter

    try:
        return Interpreter(model, device="cpu"), ""
    except EdgerunError as exc:
        return None, str(exc)


def _work_line(it: Any, why: str) -> str:
    """'estimated work (multiply-adds per run, dynamic dims at 1): sig N, ...', or why not."""
    if it is None:
        return f"estimated work: unavailable ({why})"
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
    """'[?, 64]': a dynamic dim (-1) is '?'; '[...]' when even the rank is unknown."""
    if shape is None:
        return "[...]"
    return "[" + ", ".join("?" if d < 0 else str(d) for d in shape) + "]"


# --- run -----------------------------------------------------------------------------------

def add_device_arguments(p: argparse.ArgumentParser) -> None:
    """--device, --threads and --profile: where and how an interpreter runs (run, bench)."""
    p.add_argument("--device", default="auto",
                   help="kernel backend: auto (the fastest one available), cpu (numpy), numba, or cuda "
                        "(an NVIDIA GPU: pip install 'edgerun[cuda]')")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="kernel threads, BLAS included (default: the --profile's, else one per core)")
    p.add_argument("--profile", default=None,
                   help="device profile (host, rpi-zero2, rpi4, phone): its threads and memory budget apply")


def _add_run(subparsers: Any) -> None:
    p = subparsers.add_parser("run", help="run a signature on inputs from .npy files")
    p.add_argument("model", type=Path, help=".erm file")
    p.add_argument("--input", "-i", action="append", default=[], metavar="NAME=FILE.npy",
                   help="an input tensor, an array saved by numpy.save (repeat for several)")
    p.add_argument("--signature", "-s", default="serving_default", help="the signature to run")
    p.add_argument("--output", "-o", type=Path, help="write the outputs to this .npz file")
    add_device_arguments(p)
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
    if args.output is not None:
        check_output_file(args.output, ".npz")
    inputs = {name: load_array(path) for name, path in paths.items()}
    it = Interpreter(args.model, device=args.device, num_threads=args.threads, profile=args.profile)
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
    p.add_argument("--runs", type=int, default=100, help="timed runs")
    p.add_argument("--warmup", type=int, default=10, help="untimed runs first")
    p.add_argument("--batch", type=int, default=1, help="size of dynamic leading dims (examples)")
    p.add_argument("--signature", "-s", default="serving_default",
                   help="the signature to time ('train' runs training steps at the model's learning rate)")
    add_device_arguments(p)
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
    inputs = bench_inputs(it, args.signature, args.batch)
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


def bench_inputs(it: Any, signature: str, batch: int = 1) -> dict[str, np.ndarray]:
    """random_inputs for `signature`, but a train step's learning_rate is the model's own (from
    make-trainable; 0.01 if it has none) and its labels are valid: class 0 or 1, or in [0, 1)."""
    inputs = random_inputs(it.signatures[signature].inputs, batch)
    if "learning_rate" in inputs:
        lr = _training_record(it.graph.metadata).get("optimizer", {}).get("lr", 0.01)
        inputs["learning_rate"] = np.full_like(inputs["learning_rate"], lr)
    labels = inputs.get("labels")
    if labels is not None and labels.dtype.kind == "f":
        inputs["labels"] = np.random.default_rng(1).random(labels.shape).astype(labels.dtype)
    return inputs


def _training_record(metadata: dict[str, str]) -> dict[str, Any]:
    """The 'edgerun.training' metadata make-trainable writes, or {}."""
    import json

    try:
        record = json.loads(metadata.get("edgerun.training", "{}"))
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


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



# --- files ---------------------------------------------------------------------------------

def check_output_file(path: Path, suffix: str = ".erm") -> None:
    """InputError unless `path` can name a file to write: not a directory, in a folder that
    exists. Checked before any work, so a bad -o fails at once and leaves nothing behind."""
    from edgerun.runtime.errors import InputError

    if path.is_dir():
        raise InputError(f"{path}: is a directory; give -o a file name, e.g. {path / ('model' + suffix)}")
    if not path.parent.is_dir():
        raise InputError(f"{path}: the folder {str(path.parent)!r} does not exist")


def describe_file(path: Path) -> str:
    """What the file at `path` holds, from its first bytes: 'an .npy array', 'an .npz (zip)
    archive', 'a Python pickle', 'text (starts 'a,b,c')', 'an empty file' or 'binary data'."""
    with open(path, "rb") as f:
        head = f.read(64)
    if not head:
        return "an empty file"
    if head.startswith(b"\x93NUMPY"):
        return "an .npy array"
    if head.startswith(b"PK"):
        return "an .npz (zip) archive"
    if head[:1] == b"\x80":
        return "a Python pickle"
    try:  # an incremental decoder: a character cut at byte 64 is not an error
        text = codecs.getincrementaldecoder("utf-8")().decode(head)
    except UnicodeDecodeError:
        return "binary data"
    if not all(c.isprintable() or c.isspace() for c in text):
        return "binary data"
    return f"text (starts {text.strip()[:24]!r})"


NPY = "an array saved by numpy.save (.npy) of numbers, booleans or strings"


def load_array(path: Path) -> np.ndarray:
    """The array of the .npy file at `path` (no pickles). InputError saying what the file
    holds instead (text, an .npz archive, Python objects); OSError when it cannot be read."""
    from edgerun.runtime.errors import InputError

    kind = describe_file(path)
    if kind != "an .npy array":
        raise InputError(f"{path}: holds {kind}, not an array; expected {NPY}")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "Object arrays" in str(exc):
            raise InputError(f"{path}: holds Python objects (needs pickle, never loaded); expected {NPY}") from None
        raise InputError(f"{path}: a broken .npy file ({exc}); expected {NPY}") from None
