"""`edgerun federated simulate` and `status` in-process; coordinator + client as real processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np

from edgerun.cli import main
from edgerun.converters.training import make_trainable
from edgerun.runtime import save_model
from tests.converters.training.models import digits, mlp


def test_simulate_then_status(tmp_path, capsys):
    model = save_model(make_trainable(mlp((64, 32, 10)), optimizer=("sgd", {"lr": 0.1})), tmp_path / "m.train.erm")
    x, y, xt, yt = digits()
    np.savez(tmp_path / "data.npz", x=x[:400], y=y[:400], x_test=xt, y_test=yt)
    assert main(["federated", "simulate", "--model", str(model), "--data", str(tmp_path / "data.npz"),
                 "--clients", "4", "--rounds", "2", "--epochs", "1", "--lr", "0.1", "--slow", "0.5:0.1",
                 "--metrics", str(tmp_path / "rounds.json"), "--plot", str(tmp_path / "rounds.png")]) == 0
    out = capsys.readouterr().out
    assert "round 2/2 aggregated" in out and "\r" not in out
    rows = json.loads((tmp_path / "rounds.json").read_text())
    assert [r["status"] for r in rows] == ["aggregated", "aggregated"] and "test_accuracy" in rows[0]
    assert (tmp_path / "rounds.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["federated", "simulate", "--model", str(model), "--data", str(tmp_path / "data.npz"),
                 "--clients", "4", "--rounds", "1", "--metrics", str(tmp_path / "rounds.csv")]) == 0
    header = (tmp_path / "rounds.csv").read_text().splitlines()[0]
    assert header.startswith("round,status,seconds") and "test_accuracy" in header
    assert main(["federated", "status", "--state", str(tmp_path / "missing.db")]) == 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_coordinator_and_clients_as_processes(tmp_path):
    model = save_model(make_trainable(mlp((64, 32, 10)), optimizer=("sgd", {"lr": 0.1})), tmp_path / "m.train.erm")
    x, y, _, _ = digits()
    port = free_port()
    cmd = [sys.executable, "-m", "edgerun", "federated"]
    (tmp_path / "token").write_text("secret\n")
    coordinator = subprocess.Popen(
        [*cmd, "coordinator", "--model", str(model), "--rounds", "2", "--port", str(port), "--host", "127.0.0.1",
         "--state", str(tmp_path / "c.db"), "--key", str(tmp_path / "c.key"),
         "--token-file", str(tmp_path / "token"), "--fraction-fit", "1.0", "--min-clients", "2", "--lr", "0.1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    clients = []
    for i in range(2):
        np.savez(tmp_path / f"d{i}.npz", x=x[i * 200 : (i + 1) * 200], y=y[i * 200 : (i + 1) * 200])
        clients.append(subprocess.Popen(
            [*cmd, "client", "--coordinator", f"127.0.0.1:{port}", "--data", str(tmp_path / f"d{i}.npz"),
             "--id", f"dev{i}", "--key", str(tmp_path / f"d{i}.key")],  # the token from the environment
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "EDGERUN_ENROL_TOKEN": "secret"}))
    try:
        assert coordinator.wait(120) == 0, coordinator.stdout.read()
        for client in clients:
            assert client.wait(60) == 0, client.stdout.read()
            assert "trained in rounds [1, 2]" in client.stdout.read()
    finally:
        for p in (coordinator, *clients):
            p.kill()
    status = subprocess.run([*cmd, "status", "--state", str(tmp_path / "c.db")], capture_output=True, text=True)
    rounds = json.loads(status.stdout)["rounds"]
    assert [r["status"] for r in rounds] == ["aggregated", "aggregated"]
