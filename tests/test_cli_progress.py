"""Progress of `edgerun train` and `edgerun federated simulate`: in a log file (not a terminal) one
plain line per epoch or round and no bar; on a terminal a tqdm bar on stderr as well (a smoke check)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgerun.cli import main
from edgerun.converters.training import make_trainable
from edgerun.runtime import save_model
from tests.converters.training.models import digits, mlp

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trainable(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(a trainable MLP for 8x8 digits, an .npz of 400 training and the test examples)."""
    folder = tmp_path_factory.mktemp("progress")
    model = save_model(make_trainable(mlp((64, 32, 10)), optimizer=("sgd", {"lr": 0.1})), folder / "m.train.erm")
    x, y, xt, yt = digits()
    np.savez(folder / "data.npz", x=x[:400], y=y[:400], x_test=xt, y_test=yt)
    return model, folder / "data.npz"


def test_train_writes_one_line_per_epoch_to_a_log_file(trainable: tuple[Path, Path], tmp_path: Path) -> None:
    model, data = trainable
    log = tmp_path / "train.log"
    with open(log, "w") as stream:  # stdout and stderr both into the file, as `> train.log 2>&1`
        done = subprocess.run([sys.executable, "-m", "edgerun", "train", str(model), "--data", str(data),
                               "--epochs", "3", "--batch-size", "8", "-o", str(tmp_path / "out.erm")],
                              stdout=stream, stderr=subprocess.STDOUT, cwd=REPO,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    text = log.read_text()
    assert done.returncode == 0, text
    assert "\r" not in text and "\x1b" not in text  # no bar updates, no terminal escapes
    lines = text.splitlines()
    assert [line.split(":")[0] for line in lines[:3]] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"], text
    assert all("loss" in line and "accuracy" in line and "examples/s" in line for line in lines[:3])
    assert len(lines) == 4 and lines[3].startswith("saved "), text  # 50 batches per epoch, none of them shown


def test_train_epoch_lines_agree_with_the_metrics_file(trainable: tuple[Path, Path], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    import json

    model, data = trainable
    assert main(["train", str(model), "--data", str(data), "--epochs", "2", "--batch-size", "7",
                 "-o", str(tmp_path / "out.erm")]) == 0
    lines = capsys.readouterr().out.splitlines()
    metrics = json.loads((tmp_path / "out.metrics.json").read_text())
    for line, m in zip(lines, metrics, strict=False):
        assert f"loss {m['loss']:.4f} accuracy {m['accuracy']:.4f}" in line, (line, m)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_train_draws_a_bar_on_a_terminal(trainable: tuple[Path, Path], tmp_path: Path,
                                        capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    model, data = trainable
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["train", str(model), "--data", str(data), "--epochs", "2", "--batch-size", "8",
                 "-o", str(tmp_path / "out.erm")]) == 0
    bar = terminal.getvalue()
    assert "\r" in bar and "epoch 2" in bar and "batch" in bar and "loss=" in bar
    out = capsys.readouterr().out
    assert "epoch 1/2: loss" in out and "epoch 2/2: loss" in out and "\r" not in out


def test_simulate_writes_one_line_per_round(trainable: tuple[Path, Path], tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    model, data = trainable
    assert main(["federated", "simulate", "--model", str(model), "--data", str(data), "--engine", "thread",
                 "--clients", "4", "--rounds", "3", "--epochs", "1", "--fraction-fit", "1.0",
                 "--secure-aggregation", "off", "--metrics", str(tmp_path / "rounds.json")]) == 0
    out, err = capsys.readouterr()
    assert "\r" not in out + err and err == ""
    lines = out.splitlines()
    assert [line.split(" test ")[0] for line in lines[:3]] == [f"round {r}/3 aggregated" for r in (1, 2, 3)], out
    assert all(" test accuracy 0." in line for line in lines[:3])
    assert lines[3:] == [f"wrote {tmp_path / 'rounds.json'}"]
