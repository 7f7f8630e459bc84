"""`edgerun convert` runs the optimizer, prints one line per pass, and `--no-optimize` skips it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from edgerun import cli
from edgerun.converters.optimize import DEFAULT_PASSES
from edgerun.runtime import Interpreter, load_model
from tests.onnx_models import make_cnn, ort_run


@pytest.fixture
def cnn_onnx(tmp_path: Path) -> Path:
    path = tmp_path / "cnn.onnx"
    onnx.save(make_cnn(), path)
    return path


def test_convert_prints_each_pass(cnn_onnx: Path, capsys: pytest.CaptureFixture) -> None:
    out_path = cnn_onnx.parent / "out.erm"
    assert cli.main(["convert", str(cnn_onnx), str(out_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("optimized: 13 nodes -> 10 nodes")
    assert [line.split(":")[0].strip() for line in lines[1:-1]] == list(DEFAULT_PASSES)
    assert "  fold_batchnorm: 13 -> 12 nodes (BatchNormalization into Conv: 1)" in lines
    assert lines[-1].startswith(f"converted {cnn_onnx} -> {out_path}: 10 nodes")
    assert len(load_model(out_path).nodes) == 10
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    got = Interpreter(out_path).run({"x": x})["y"]
    np.testing.assert_allclose(got, ort_run(make_cnn(), {"x": x})["y"], rtol=1e-4, atol=1e-5)


def test_no_optimize_keeps_every_node(cnn_onnx: Path, capsys: pytest.CaptureFixture) -> None:
    out_path = cnn_onnx.parent / "plain.erm"
    assert cli.main(["convert", str(cnn_onnx), "-o", str(out_path), "--no-optimize"]) == 0
    out = capsys.readouterr().out
    assert "optimized" not in out and out.startswith(f"converted {cnn_onnx} -> {out_path}: 13 nodes")
    assert len(load_model(out_path).nodes) == 13


def test_two_different_output_paths(cnn_onnx: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["convert", str(cnn_onnx), "a.erm", "-o", "b.erm"]) == 1
    assert "two output paths given" in capsys.readouterr().err
