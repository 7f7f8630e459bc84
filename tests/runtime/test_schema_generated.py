"""The committed flatbuffers code is what flatc (pinned to the runtime's version) generates."""

from __future__ import annotations

import importlib.util
import sys
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def load_generator():
    spec = importlib.util.spec_from_file_location("gen_schema", ROOT / "scripts" / "gen_schema.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_schema"] = module
    spec.loader.exec_module(module)
    return module


def test_generated_code_is_up_to_date(tmp_path):
    """Both schemas: .erm (runtime/schema) and TFLite (converters/tflite/schema)."""
    generator = load_generator()
    assert len(generator.SCHEMAS) == 2
    for i, (schema, namespace, committed, package) in enumerate(generator.SCHEMAS):
        generator.generate(tmp_path / f"fb{i}", schema, namespace, package)
        fresh = {p.name: p.read_text() for p in (tmp_path / f"fb{i}").glob("*.py")}
        assert fresh == {p.name: p.read_text() for p in committed.glob("*.py")}, schema.name
        assert len(fresh) > 10


def test_flatc_is_pinned_to_the_flatbuffers_runtime():
    assert version("flatc").startswith(version("flatbuffers"))
