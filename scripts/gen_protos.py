"""Regenerate the gRPC Python code for serving/protos and federated/protos (grpcio-tools, dev extra).

Run: python scripts/gen_protos.py

The generated modules are committed. Two things set them apart from protoc's plain output:
- they are generated as `edgerun.<layer>.protos.*` (protoc runs over a temporary tree in
  which `edgerun/<layer>` is the repository's `<layer>` folder), so their imports and
  descriptor file names carry our package, not a bare `serving/...`;
- each protos package registers its files in its own descriptor pool (`POOL` in its
  `__init__.py`), not in protobuf's process-wide default pool. The KServe messages keep
  their wire names (`inference.ModelInferRequest`, the `inference.GRPCInferenceService`
  service) for interoperability, and tritonclient registers the very same names in the
  default pool: in a private pool both live in one process.
Each generated file also gets a `# ruff: noqa` line so the linter skips it.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTOS = {
    "serving": ["model_config.proto", "grpc_service.proto"],
    "federated": ["federated.proto"],
}
DEFAULT_POOL = "_descriptor_pool.Default().AddSerializedFile("


def private_pool(text: str, layer: str) -> str:
    """Point a generated `_pb2.py` at its package's own descriptor pool."""
    if DEFAULT_POOL not in text:
        raise RuntimeError("protoc output changed: no default-pool registration found")
    text = text.replace(DEFAULT_POOL, "_protos_pool.POOL.AddSerializedFile(")
    marker = "from google.protobuf.internal import builder as _builder\n"
    return text.replace(marker, marker + f"from edgerun.{layer} import protos as _protos_pool\n", 1)


def generate(layer: str, names: list[str]) -> None:
    from grpc_tools import protoc

    out_dir = ROOT / layer / "protos"
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "edgerun").mkdir()
        (Path(tmp) / "edgerun" / layer).symlink_to(ROOT / layer)
        for name in names:
            proto = f"edgerun/{layer}/protos/{name}"
            args = ["protoc", f"-I{tmp}", f"--python_out={tmp}", f"--grpc_python_out={tmp}",
                    f"--pyi_out={tmp}", proto]
            if protoc.main(args) != 0:
                raise RuntimeError(f"protoc failed for {proto}")
            print(f"generated code for {layer}/protos/{name}")
    for generated in out_dir.glob("*_pb2*.py*"):
        text = generated.read_text()
        if generated.name.endswith("_pb2.py"):
            text = private_pool(text, layer)
        if not text.startswith("# ruff: noqa"):
            text = "# ruff: noqa\n" + text
        generated.write_text(text)


def main() -> int:
    for layer, names in PROTOS.items():
        generate(layer, names)
    return 0


if __name__ == "__main__":
    sys.exit(main())
