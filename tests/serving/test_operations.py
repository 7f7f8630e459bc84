"""Dynamic batching, several workers, metrics, graceful shutdown and worker restarts."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import time
import urllib.request

import numpy as np
import tritonclient.grpc as tg

from tests.serving.conftest import OWN_CONNECTION, add_version


def _input(x: np.ndarray) -> tg.InferInput:
    tensor = tg.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return tensor


def _metrics(server) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5).read().decode()


def _sample(text: str, name: str, labels: str = "") -> float:
    match = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.MULTILINE)
    assert match, f"{name}{labels} not in metrics"
    return float(match.group(1))


def test_dynamic_batching_merges_and_splits(main_server, interpreters) -> None:
    """8 concurrent batch-1 requests run as fewer executions; each gets its own rows back."""
    client = tg.InferenceServerClient(main_server.grpc_url)
    before = client.get_inference_statistics("cnn", as_json=True)["model_stats"][0]
    xs = [np.random.default_rng(i).standard_normal((1, 3, 16, 16)).astype(np.float32) for i in range(8)]
    results: queue.Queue = queue.Queue()
    for i, x in enumerate(xs):
        client.async_infer("cnn", [_input(x)], callback=lambda result, error, i=i: results.put((i, result, error)),
                           request_id=str(i))
    got = dict((i, (r, e)) for i, r, e in (results.get(timeout=10) for _ in xs))
    for i, x in enumerate(xs):
        result, error = got[i]
        assert error is None
        np.testing.assert_allclose(result.as_numpy("y"), interpreters["cnn"].run({"x": x})["y"], rtol=1e-5, atol=1e-6)
    after = client.get_inference_statistics("cnn", as_json=True)["model_stats"][0]
    rows = int(after["inference_count"]) - int(before.get("inference_count", 0))
    executions = int(after["execution_count"]) - int(before.get("execution_count", 0))
    assert rows == 8 and executions < 8
    assert any(int(b["batch_size"]) > 1 for b in after["batch_stats"])
    time.sleep(1.0)  # statistics reach the Prometheus counters every 0.5 s
    text = _metrics(main_server)
    labels = '{model="cnn",version="1"}'
    assert _sample(text, "nv_inference_queue_duration_us_total", labels) > 0
    assert _sample(text, "nv_inference_exec_count_total", labels) < _sample(text, "nv_inference_count_total", labels)


def test_two_workers_share_ports_and_metrics(start_server, main_repo, interpreters) -> None:
    server = start_server(main_repo, workers=2)
    pids = set(re.findall(r"worker \d \(pid (\d+)\) serving", server.log.read_text()))
    assert len(pids) == 2
    x = np.ones((1, 64), np.float32)
    want = interpreters["mlp"].run({"x": x})["y"]
    for _ in range(12):  # separate connections, spread over the workers by the kernel
        client = tg.InferenceServerClient(server.grpc_url, channel_args=OWN_CONNECTION)
        np.testing.assert_allclose(client.infer("mlp", [_input(x)]).as_numpy("y"), want, rtol=1e-6)
        client.close()
    deadline = time.monotonic() + 10  # workers publish their statistics every 0.5 s
    while "nv_inference_request_success_total{" not in _metrics(server) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)
    text = _metrics(server)
    assert _sample(text, "nv_inference_request_success_total", '{model="mlp",version="1"}') == 12
    assert _sample(text, "nv_model_versions_loaded") == 6  # 3 models x 2 workers
    assert _sample(text, "nv_inference_count_total", '{model="mlp",version="1"}') == 12
    for name in ("nv_inference_request_duration_us_total", "nv_inference_compute_infer_duration_us_total"):
        assert _sample(text, name, '{model="mlp",version="1"}') > 0
    assert 'nv_inference_batch_size_bucket{le="1.0",model="mlp",version="1"} 12.0' in text

    # a killed worker is replaced and the server keeps serving
    os.kill(int(sorted(pids)[0]), signal.SIGKILL)
    deadline = time.monotonic() + 30
    while server.log.read_text().count("serving gRPC on") < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.log.read_text().count("serving gRPC on") == 3
    client = tg.InferenceServerClient(server.grpc_url)
    np.testing.assert_allclose(client.infer("mlp", [_input(x)]).as_numpy("y"), want, rtol=1e-6)


def test_failures_are_counted(main_server) -> None:
    client = tg.InferenceServerClient(main_server.grpc_url)
    try:
        client.infer("mlp", [_input(np.ones((1, 3), np.float32))])
    except tg.InferenceServerException:
        pass
    before = client.get_inference_statistics("mlp", as_json=True)["model_stats"][0]["inference_stats"]
    assert int(before["fail"]["count"]) >= 1


def test_sigterm_drains_in_flight_requests(start_server, tmp_path, model_files, interpreters) -> None:
    """A request waiting in a 1.5 s batch queue when SIGTERM arrives still gets its answer; exit 0.
    (The same server checks a model with an instance pool first.)"""
    repo = tmp_path / "slow"
    add_version(repo, "cnn", 1, model_files["cnn"],
                "max_batch_size: 4\ndynamic_batching { max_queue_delay_microseconds: 1500000 }\n")
    add_version(repo, "pooled", 1, model_files["mlp"], "instance_group [{ count: 2 }]\n")
    server = start_server(repo)
    client = tg.InferenceServerClient(server.grpc_url)
    _check_instance_pool(client, interpreters["mlp"])
    x = np.random.default_rng(9).standard_normal((1, 3, 16, 16)).astype(np.float32)
    results: queue.Queue = queue.Queue()
    client.async_infer("cnn", [_input(x)], callback=lambda result, error: results.put((result, error)))
    time.sleep(0.3)
    server.process.send_signal(signal.SIGTERM)
    result, error = results.get(timeout=10)
    assert error is None
    np.testing.assert_allclose(result.as_numpy("y"), interpreters["cnn"].run({"x": x})["y"], rtol=1e-5, atol=1e-6)
    assert server.process.wait(15) == 0
    logs = [json.loads(line) for line in server.log.read_text().splitlines() if line.startswith("{")]
    assert {"ts", "level", "logger", "pid", "msg"} <= set(logs[0])
    assert any("draining" in entry["msg"] for entry in logs)


def _check_instance_pool(client: tg.InferenceServerClient, interpreter) -> None:
    """A model with two instances answers 16 concurrent requests correctly."""
    results: queue.Queue = queue.Queue()
    xs = [np.random.default_rng(i).standard_normal((i + 1, 64)).astype(np.float32) for i in range(16)]
    for i, x in enumerate(xs):
        client.async_infer("pooled", [_input(x)], callback=lambda result, error, i=i: results.put((i, result, error)))
    for _ in xs:
        i, result, error = results.get(timeout=10)
        assert error is None
        np.testing.assert_allclose(result.as_numpy("y"), interpreter.run({"x": xs[i]})["y"], rtol=1e-6)
