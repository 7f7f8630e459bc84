"""examples/demo.py's optional fourth step (--language-model): off by default, and what it prints
and writes, on a tiny budget."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo():
    pytest.importorskip("onnx")  # the demo builds its CNN with onnx.helper
    saved_path = list(sys.path)  # the demo puts the checkout first on sys.path
    spec = importlib.util.spec_from_file_location("edgerun_demo", ROOT / "examples" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["edgerun_demo"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("edgerun_demo", None)
    sys.path[:] = saved_path


def test_the_language_model_step_is_optional(demo, capsys):
    assert demo.parse_args([]).language_model is False
    args = demo.parse_args(["--language-model", "--language-plot", "lm.png"])
    assert args.language_model is True and args.language_plot == "lm.png"
    assert demo.parse_args([]).language_plot == "federated_language_model.png"
    with pytest.raises(SystemExit):
        demo.parse_args(["--help"])
    assert "--language-model" in capsys.readouterr().out


def test_the_language_model_step_prints_rounds_beside_central_and_writes_the_plot(demo, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    plot = tmp_path / "lm.png"
    assert demo.language_model_demo(str(plot), clients=2, rounds=2, epochs=1, max_chars=600) == 0
    out = capsys.readouterr().out
    assert out.count("federated: perplexity") == 2 and out.count("central: perplexity") == 2
    assert "KiB per device" in out and "language model step took" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
