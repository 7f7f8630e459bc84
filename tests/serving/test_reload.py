"""Model control: hot reload in poll mode (availability-preserving) and explicit load/unload."""

from __future__ import annotations

import threading
import time
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as tg

from tests.serving.conftest import OWN_CONNECTION, add_version

X = np.random.default_rng(0).standard_normal((2, 64)).astype(np.float32)


def _infer(client: tg.InferenceServerClient, model: str = "mlp", version: str = "") -> np.ndarray:
    tensor = tg.InferInput("x", list(X.shape), "FP32")
    tensor.set_data_from_numpy(X)
    return client.infer(model, [tensor], model_version=version).as_numpy("y")


def _wait_for(condition, timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Traffic:
    """Background inference requests; counts failures."""

    def __init__(self, url: str) -> None:
        self.client = tg.InferenceServerClient(url)
        self.ok, self.failures, self.stop = 0, [], threading.Event()
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                _infer(self.client)
                self.ok += 1
            except Exception as exc:  # noqa: BLE001 - recorded and asserted on
                self.failures.append(str(exc))

    def finish(self) -> None:
        self.stop.set()
        self.thread.join()


def test_poll_mode_hot_reload(start_server, tmp_path, model_files, interpreters) -> None:
    repo = tmp_path / "repo"
    add_version(repo, "mlp", 1, model_files["mlp"])
    server = start_server(repo, "--model-control-mode", "poll", "--repository-poll-secs", "0.1")
    client = tg.InferenceServerClient(server.grpc_url)
    v1, v2 = (interpreters[name].run({"x": X})["y"] for name in ("mlp", "mlp2"))
    np.testing.assert_allclose(_infer(client), v1, rtol=1e-6)
    traffic = Traffic(server.grpc_url)
    try:
        add_version(repo, "mlp", 2, model_files["mlp2"])
        _wait_for(lambda: client.is_model_ready("mlp", "2"), what="version 2")
        assert client.get_model_metadata("mlp", as_json=True)["versions"] == ["2"]
        np.testing.assert_allclose(_infer(client), v2, rtol=1e-6)
        assert not client.is_model_ready("mlp", "1")

        # a broken version never replaces the working one, and is reported
        (repo / "mlp" / "3").mkdir()
        (repo / "mlp" / "3" / "model.erm").write_bytes(model_files["mlp"].read_bytes()[:1000])
        _wait_for(lambda: any(m["version"] == "3" for m in client.get_model_repository_index(as_json=True)["models"]),
                  what="version 3 in the index")
        index = {m["version"]: m for m in client.get_model_repository_index(as_json=True)["models"]}
        assert index["3"]["state"] == "UNAVAILABLE" and "failed to load" in index["3"]["reason"]
        assert str(repo) not in index["3"]["reason"]
        assert index["2"]["state"] == "READY" and not client.is_model_ready("mlp", "3")
        np.testing.assert_allclose(_infer(client), v2, rtol=1e-6)
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5).read().decode()
        assert 'nv_model_load_failure_total{model="mlp",version="3"} 1.0' in metrics

        # fixing the files retries the version
        add_version(repo, "mlp", 3, model_files["mlp"])
        _wait_for(lambda: client.is_model_ready("mlp", "3"), what="repaired version 3")
        np.testing.assert_allclose(_infer(client), v1, rtol=1e-6)

        # a config change applies a new version policy
        (repo / "mlp" / "config.pbtxt").write_text("version_policy: { all: {} }\n")
        _wait_for(lambda: client.get_model_metadata("mlp", as_json=True)["versions"] == ["1", "2", "3"],
                  what="all versions")
        np.testing.assert_allclose(_infer(client, version="2"), v2, rtol=1e-6)
        (repo / "mlp" / "config.pbtxt").write_text("version_policy: { specific: { versions: [1, 2] } }\n")
        _wait_for(lambda: client.get_model_metadata("mlp", as_json=True)["versions"] == ["1", "2"],
                  what="specific versions")
        np.testing.assert_allclose(_infer(client), v2, rtol=1e-6)  # no version asked: the highest ready
    finally:
        traffic.finish()
    assert traffic.failures == [] and traffic.ok > 20


def test_explicit_mode(start_server, main_repo, interpreters) -> None:
    server = start_server(main_repo, "--model-control-mode", "explicit", "--load-model", "mlp")
    client = tg.InferenceServerClient(server.grpc_url)
    assert client.is_model_ready("mlp") and not client.is_model_ready("cnn")
    index = {m["name"]: m for m in client.get_model_repository_index(as_json=True)["models"]}
    assert index["cnn"]["state"] == "UNAVAILABLE"
    client.load_model("cnn")
    assert client.is_model_ready("cnn")
    x = np.zeros((1, 3, 16, 16), np.float32)
    tensor = tg.InferInput("x", [1, 3, 16, 16], "FP32")
    tensor.set_data_from_numpy(x)
    np.testing.assert_allclose(client.infer("cnn", [tensor]).as_numpy("y"), interpreters["cnn"].run({"x": x})["y"],
                               rtol=1e-6)
    client.unload_model("mlp")
    assert not client.is_model_ready("mlp")
    with pytest.raises(tg.InferenceServerException) as info:
        _infer(client)
    assert info.value.status() == "StatusCode.NOT_FOUND"
    with pytest.raises(tg.InferenceServerException) as info:
        client.load_model("no_such_model")
    assert info.value.status() == "StatusCode.NOT_FOUND"


def test_in_flight_request_finishes_on_its_version(start_server, tmp_path, model_files, interpreters) -> None:
    """A request queued (3 s batch delay) on version 1 while version 2 replaces it gets version 1's answer."""
    import queue

    repo = tmp_path / "repo"
    add_version(repo, "mlp", 1, model_files["mlp"],
                "max_batch_size: 4\ndynamic_batching { max_queue_delay_microseconds: 3000000 }\n")
    server = start_server(repo, "--model-control-mode", "poll", "--repository-poll-secs", "0.1")
    client = tg.InferenceServerClient(server.grpc_url)
    tensor = tg.InferInput("x", list(X.shape), "FP32")
    tensor.set_data_from_numpy(X)
    results: queue.Queue = queue.Queue()
    client.async_infer("mlp", [tensor], callback=lambda result, error: results.put((result, error)))
    add_version(repo, "mlp", 2, model_files["mlp2"])
    _wait_for(lambda: client.is_model_ready("mlp", "2"), what="version 2")
    assert not client.is_model_ready("mlp", "1")
    assert results.empty()  # still waiting in version 1's batch queue while version 2 serves
    result, error = results.get(timeout=10)
    assert error is None and result.get_response().model_version == "1"
    np.testing.assert_allclose(result.as_numpy("y"), interpreters["mlp"].run({"x": X})["y"], rtol=1e-6)


def test_explicit_mode_reaches_every_worker(start_server, main_repo) -> None:
    """Load and unload arrive at one of two workers; soon every connection sees the change."""
    server = start_server(main_repo, "--model-control-mode", "explicit", "--load-model", "mlp", workers=2)

    def everywhere(model: str, ready: bool) -> bool:
        clients = [tg.InferenceServerClient(server.grpc_url, channel_args=OWN_CONNECTION) for _ in range(8)]
        try:
            return all(c.is_model_ready(model) == ready for c in clients)
        finally:
            for c in clients:
                c.close()

    assert everywhere("cnn", False)
    tg.InferenceServerClient(server.grpc_url).load_model("cnn")
    _wait_for(lambda: everywhere("cnn", True), what="cnn loaded in every worker")
    tg.InferenceServerClient(server.grpc_url).unload_model("mlp")
    _wait_for(lambda: everywhere("mlp", False), what="mlp unloaded in every worker")
    assert "applied model control" in server.log.read_text()
