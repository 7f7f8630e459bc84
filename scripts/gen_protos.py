"""Regenerate the gRPC Python code for federated/protos/*.proto (grpcio-tools, dev extra).

Run: python scripts/gen_protos.py
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTOS = [ROOT / "federated" / "protos" / "federated.proto"]


def main() -> int:
    from grpc_tools import protoc

    for proto in PROTOS:
        args = ["protoc", f"-I{ROOT}", f"--python_out={ROOT}", f"--grpc_python_out={ROOT}",
                f"--pyi_out={ROOT}", str(proto.relative_to(ROOT))]
        if protoc.main(args) != 0:
            print(f"protoc failed for {proto}", file=sys.stderr)
            return 1
        print(f"generated code for {proto.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
