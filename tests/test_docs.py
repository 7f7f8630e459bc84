"""Generated documentation is current: docs/ops.md is what scripts/gen_ops_index.py writes from
the kernel registry, the numba backend's fast paths and the gradient rules."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_generator():
    spec = importlib.util.spec_from_file_location("gen_ops_index", ROOT / "scripts" / "gen_ops_index.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_ops_index"] = module
    spec.loader.exec_module(module)
    return module


def test_ops_index_is_up_to_date():
    pytest.importorskip("numba")  # the index lists the numba backend's fast paths
    fresh = load_generator().render()
    committed = (ROOT / "docs" / "ops.md").read_text()
    assert fresh == committed, "docs/ops.md is out of date: run python scripts/gen_ops_index.py"


def test_version_ranges():
    ranges = load_generator().version_ranges
    assert [ranges([1]), ranges([6, 14]), ranges([1, 12, 13])] == ["1+", "6-13, 14+", "1-11, 12, 13+"]
