"""Fixtures for serving tests: model files, a model repository and real server processes.

Servers run as real processes and tests talk to them over the wire with stock clients.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
DTYPES = ["bool", "uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64",
          "float16", "float32", "float64"]
CNN_CONFIG = "max_batch_size: 8\ndynamic_batching { max_queue_delay_microseconds: 20000 }\n"


# tritonclient's defaults plus a channel-local subchannel pool: clients in one process then open
# their own connections instead of sharing one (which would always reach the same worker)
OWN_CONNECTION = [("grpc.max_send_message_length", 2**31 - 1), ("grpc.max_receive_message_length", 2**31 - 1),
                  ("grpc.use_local_subchannel_pool", 1)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_models(folder: Path) -> dict[str, Path]:
    """mlp.erm (x [-1, 64] -> y [-1, 10]), cnn.erm (x [-1, 3, 16, 16] -> y [-1, 10]), mlp2.erm (other
    weights) and ident.erm (in_<dtype> [-1, 3] -> out_<dtype>, Identity, for every dtype)."""
    from edgerun.converters import from_onnx
    from edgerun.runtime import GraphBuilder
    from edgerun.runtime.writer import save_model
    from tests.onnx_models import make_cnn, make_mlp

    folder.mkdir(parents=True, exist_ok=True)
    paths = {"mlp": folder / "mlp.erm", "mlp2": folder / "mlp2.erm", "cnn": folder / "cnn.erm",
             "ident": folder / "ident.erm"}
    save_model(from_onnx(make_mlp()), paths["mlp"])
    save_model(from_onnx(make_mlp(seed=7)), paths["mlp2"])
    save_model(from_onnx(make_cnn()), paths["cnn"])
    g = GraphBuilder("ident")
    for dt in DTYPES:
        g.output(g.op("Identity", [g.input("in_" + dt, np.dtype(dt), (-1, 3))]), "out_" + dt)
    save_model(g.build(), paths["ident"])
    return paths


def add_version(repo: Path, model: str, version: int, source: Path, config: str | None = None) -> Path:
    """Copy `source` to repo/model/version/model.erm (and write config.pbtxt if given)."""
    target = repo / model / str(version)
    target.mkdir(parents=True, exist_ok=True)
    if config is not None:
        (repo / model / "config.pbtxt").write_text(config)
    shutil.copyfile(source, target / "model.erm")
    return target / "model.erm"


@pytest.fixture(scope="session")
def model_files(tmp_path_factory) -> dict[str, Path]:
    return build_models(tmp_path_factory.mktemp("models"))


class Server:
    """A `python -m edgerun serve` process on free loopback ports; `stop()` sends SIGTERM."""

    def __init__(self, repo: Path, log: Path, *args: str, workers: int = 1,
                 command: tuple[str, ...] = (sys.executable, "-m", "edgerun"), cwd: Path = ROOT,
                 env: dict[str, str] | None = None) -> None:
        self.grpc_port, self.http_port, self.metrics_port = free_port(), free_port(), free_port()
        self.grpc_url, self.http_url = f"127.0.0.1:{self.grpc_port}", f"127.0.0.1:{self.http_port}"
        self.log = log
        self.workers = workers
        cmd = [*command, "serve", "--model-repository", str(repo), "--host", "127.0.0.1",
               "--grpc-port", str(self.grpc_port), "--http-port", str(self.http_port),
               "--metrics-port", str(self.metrics_port), "--workers", str(workers), *args]
        if env is None:
            env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
            env["PYTHONPATH"] = str(ROOT)
        self._out = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(cmd, cwd=cwd, stdout=self._out, stderr=subprocess.STDOUT, env=env)

    def wait_ready(self, timeout: float = 60.0) -> Server:
        """Block until every worker logged that it serves; fail with the log if it died or timed out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited with {self.process.returncode}:\n{self.log.read_text()}")
            if self.log.read_text().count("serving gRPC on") >= self.workers:
                return self
            time.sleep(0.1)
        raise AssertionError(f"server not ready after {timeout} s:\n{self.log.read_text()}")

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; the exit code (killed servers fail the calling test)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(f"server ignored SIGTERM:\n{self.log.read_text()}") from None
        self._out.close()
        return self.process.returncode


@pytest.fixture
def start_server(tmp_path) -> Iterator:
    """start_server(repo, *args, workers=1) -> a ready Server; every one is stopped at teardown."""
    servers: list[Server] = []

    def start(repo: Path, *args: str, workers: int = 1, ready: bool = True) -> Server:
        server = Server(repo, tmp_path / f"server{len(servers)}.log", *args, workers=workers)
        servers.append(server)
        return server.wait_ready() if ready else server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def main_repo(tmp_path_factory, model_files) -> Path:
    """mlp (no config), cnn (max_batch_size 8, dynamic batching) and ident (all dtypes)."""
    repo = tmp_path_factory.mktemp("repo")
    add_version(repo, "mlp", 1, model_files["mlp"])
    add_version(repo, "cnn", 1, model_files["cnn"], CNN_CONFIG)
    add_version(repo, "ident", 1, model_files["ident"])
    return repo


@pytest.fixture(scope="session")
def main_server(tmp_path_factory, main_repo) -> Iterator[Server]:
    """One server over main_repo shared by the tests that do not change it."""
    server = Server(main_repo, tmp_path_factory.mktemp("log") / "server.log").wait_ready()
    yield server
    assert server.stop() == 0


@pytest.fixture(scope="session")
def interpreters(model_files) -> dict:
    """Interpreters over the same files, to compute expected outputs in the tests."""
    from edgerun.runtime.interpreter import Interpreter

    return {name: Interpreter(path) for name, path in model_files.items()}
