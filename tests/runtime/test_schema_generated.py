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
    load_generator().generate(tmp_path / "fb")
    committed = ROOT / "runtime" / "schema" / "fb"
    fresh = {p.name: p.read_text() for p in (tmp_path / "fb").glob("*.py")}
    assert fresh == {p.name: p.read_text() for p in committed.glob("*.py")}


def test_flatc_is_pinned_to_the_flatbuffers_runtime():
    assert version("flatc").startswith(version("flatbuffers"))
