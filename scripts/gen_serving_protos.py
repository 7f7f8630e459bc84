"""Regenerate the gRPC Python code for serving/protos/*.proto (grpcio-tools, dev extra).

Run: python scripts/gen_serving_protos.py

The generated files are committed; each gets a `# ruff: noqa` line so the linter skips it.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTO_DIR = ROOT / "serving" / "protos"
PROTOS = ["model_config.proto", "grpc_service.proto", "health.proto"]


def main() -> int:
    from grpc_tools import protoc

    for name in PROTOS:
        proto = PROTO_DIR / name
        args = ["protoc", f"-I{ROOT}", f"--python_out={ROOT}", f"--grpc_python_out={ROOT}",
                f"--pyi_out={ROOT}", str(proto.relative_to(ROOT))]
        if protoc.main(args) != 0:
            print(f"protoc failed for {name}", file=sys.stderr)
            return 1
        print(f"generated code for {proto.relative_to(ROOT)}")
    for generated in PROTO_DIR.glob("*_pb2*.py*"):
        text = generated.read_text()
        if not text.startswith("# ruff: noqa"):
            generated.write_text("# ruff: noqa\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
