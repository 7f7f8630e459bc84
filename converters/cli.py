"""`edgerun convert`: ONNX -> .erm. Registered by runtime.cli through `add_parser`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(subparsers: Any) -> None:
    """Register the `convert` command on an argparse subparsers object."""
    p = subparsers.add_parser("convert", help="convert an ONNX model to .erm")
    p.add_argument("model", type=Path, help=".onnx file")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="output .erm (default: the input path with suffix .erm)")
    p.set_defaults(func=cmd_convert)


def cmd_convert(args: argparse.Namespace) -> int:
    """Convert and save; prints one summary line (nodes, parameters, file size).

    Fails with ConversionError (unreadable or unsupported model) or ModelError / OSError
    (the graph cannot be written)."""
    from converters.onnx_import import from_onnx
    from runtime import save_model

    output = args.output or args.model.with_suffix(".erm")
    graph = from_onnx(args.model)
    path = save_model(graph, output)
    nodes = len(graph.nodes) + sum(len(g.nodes) for g in graph.subgraphs())
    params = sum(v.data.size for v in graph.values()
                 if v.data is not None and v.data.dtype.kind == "f")
    print(f"converted {args.model} -> {path}: {nodes} nodes, {params:,} parameters, "
          f"{path.stat().st_size:,} bytes")
    return 0
