"""`edgerun convert`: ONNX or TFLite -> .erm. Registered by edgerun.cli through `add_parser`.

    edgerun convert model.onnx [out.erm | -o out.erm] [--no-optimize]
    edgerun convert model.tflite -o model.erm

The format is told by the file's contents (a TFLite file says "TFL3" in bytes 4-8), not its name.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(subparsers: Any) -> None:
    """Register the `convert` command on an argparse subparsers object."""
    p = subparsers.add_parser("convert", help="convert an ONNX or TFLite model to .erm")
    p.add_argument("model", type=Path, help=".onnx or .tflite file")
    p.add_argument("output_path", nargs="?", type=Path, default=None, metavar="output",
                   help="output .erm (default: the input path with suffix .erm)")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="output .erm file (same as the positional; a directory is refused)")
    p.add_argument("--no-optimize", action="store_true",
                   help="skip the graph optimizer (constant folding, BN folding, fusion, ...)")
    p.set_defaults(func=cmd_convert)


def cmd_convert(args: argparse.Namespace) -> int:
    """Convert, optimize (unless --no-optimize) and save. Prints the optimizer's report
    (a header and one line per pass: nodes before -> after, what changed), then one
    summary line (nodes, parameters, file size).

    Fails with ConversionError (unreadable or unsupported model), ModelError / OSError
    (the graph cannot be written), InputError (the output is a directory or in a folder that
    does not exist; checked first) or ValueError (two different output paths given)."""
    from edgerun.converters.optimize import optimize
    from edgerun.runtime import save_model
    from edgerun.runtime.cli import check_output_file

    if args.output and args.output_path and args.output != args.output_path:
        raise ValueError(f"two output paths given: {args.output_path} and -o {args.output}")
    output = args.output or args.output_path or args.model.with_suffix(".erm")
    check_output_file(output)
    graph = _import(args.model)
    if not args.no_optimize:
        for line in optimize(graph).lines():
            print(line)
    path = save_model(graph, output)
    nodes = len(graph.nodes) + sum(len(g.nodes) for g in graph.subgraphs())
    params = sum(v.data.size for v in graph.values()
                 if v.data is not None and v.data.dtype.kind == "f")
    print(f"converted {args.model} -> {path}: {nodes} nodes, {params:,} parameters, "
          f"{path.stat().st_size:,} bytes")
    return 0


def _import(model: Path) -> Any:
    """The graph as imported, not optimized (the optimizer runs here, to print its report)."""
    with open(model, "rb") as f:
        head = f.read(8)
    if head[4:8] == b"TFL3":
        from edgerun.converters.tflite import from_tflite

        return from_tflite(model, optimize=False)
    from edgerun.converters.onnx_import import from_onnx

    return from_onnx(model, optimize=False)
