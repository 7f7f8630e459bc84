"""`edgerun make-trainable` and `edgerun train` end to end, in-process."""

from __future__ import annotations

import json

import numpy as np

from edgerun.cli import main
from edgerun.runtime import Interpreter, save_model
from edgerun.runtime.training import predict
from tests.converters.training.models import digits, mlp


def test_make_trainable_then_train_improves_accuracy(tmp_path, capsys):
    model = save_model(mlp((64, 32, 10)), tmp_path / "mlp.erm")
    x, y, _, _ = digits()
    np.savez(tmp_path / "data.npz", x=x[:512], y=y[:512])
    assert main(["make-trainable", str(model), "--loss", "cross_entropy", "--optimizer", "adam",
                 "--lr", "0.01", "-o", str(tmp_path / "mlp.train.erm")]) == 0
    assert "signatures" in capsys.readouterr().out
    before = np.mean(predict(Interpreter(tmp_path / "mlp.train.erm"), x[:512])["y"].argmax(1) == y[:512])
    assert main(["train", str(tmp_path / "mlp.train.erm"), "--data", str(tmp_path / "data.npz"),
                 "--epochs", "5", "--batch-size", "32"]) == 0
    out = capsys.readouterr()
    assert "epoch 5/5" in out.out and "examples/s" in out.out
    assert out.err == ""  # the per-batch bar is drawn on a terminal only (tests/test_cli_progress.py)
    trained = tmp_path / "mlp.trained.erm"
    metrics = json.loads((tmp_path / "mlp.trained.metrics.json").read_text())
    assert [m["epoch"] for m in metrics] == list(range(5)) and metrics[-1]["loss"] < metrics[0]["loss"]
    after = np.mean(predict(Interpreter(trained), x[:512])["y"].argmax(1) == y[:512])
    assert after > max(before, 0.9)


def test_train_errors_are_one_line(tmp_path, capsys):
    model = save_model(mlp((64, 10)), tmp_path / "plain.erm")
    np.savez(tmp_path / "data.npz", x=np.zeros((4, 64), np.float32), y=np.zeros(4, np.int64))
    assert main(["train", str(model), "--data", str(tmp_path / "data.npz")]) == 1
    assert "no 'train' signature" in capsys.readouterr().err
    assert main(["make-trainable", str(model), "-o", str(tmp_path / "t.erm")]) == 0
    np.savez(tmp_path / "nolabels.npz", x=np.zeros((4, 64), np.float32))
    assert main(["train", str(tmp_path / "t.erm"), "--data", str(tmp_path / "nolabels.npz")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no labels" in err[0]
    assert main(["make-trainable", str(model), "--trainable", "nothing*", "-o", str(tmp_path / "u.erm")]) == 1
    assert "no trainable parameters" in capsys.readouterr().err
