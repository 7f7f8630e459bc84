"""A running server under hostile or odd input, against real server processes: batch dimensions,
shape limits over the wire, version strings, retired versions with queued requests, bad config
files, worker restarts, HTTP timeouts / connection cap / early 401, gRPC concurrency limit."""

from __future__ import annotations

import json
import queue
import re
import socket
import time

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tg
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from tests.serving.conftest import OWN_CONNECTION, add_version
from tests.serving.test_http import request as http_request

ADD_CONFIG = "max_batch_size: 8\ndynamic_batching { max_queue_delay_microseconds: 300000 }\n"


@pytest.fixture(scope="module")
def add_model(tmp_path_factory):
    """add.erm: x [-1, 2] + y [-1, 2] -> z (float32)."""
    from edgerun.runtime import GraphBuilder
    from edgerun.runtime.writer import save_model

    g = GraphBuilder("add")
    x, y = g.input("x", np.dtype("float32"), (-1, 2)), g.input("y", np.dtype("float32"), (-1, 2))
    g.output(g.op("Add", [x, y]), "z")
    path = tmp_path_factory.mktemp("add") / "add.erm"
    save_model(g.build(), path)
    return path


@pytest.fixture(scope="module")
def dyn_server(tmp_path_factory):
    """A server with model dyn: Identity over x FP32 [-1, -1] (no static dimension to trip over)."""
    from edgerun.runtime import GraphBuilder
    from edgerun.runtime.writer import save_model
    from tests.serving.conftest import Server

    g = GraphBuilder("dyn")
    g.output(g.op("Identity", [g.input("x", np.dtype("float32"), (-1, -1))]), "y")
    folder = tmp_path_factory.mktemp("dyn")
    save_model(g.build(), folder / "dyn.erm")
    add_version(folder / "repo", "dyn", 1, folder / "dyn.erm")
    server = Server(folder / "repo", folder / "server.log").wait_ready()
    yield server
    assert server.stop() == 0


def _inputs(x: np.ndarray, y: np.ndarray) -> list:
    tensors = []
    for name, array in (("x", x), ("y", y)):
        t = tg.InferInput(name, list(array.shape), "FP32")
        t.set_data_from_numpy(array.astype(np.float32))
        tensors.append(t)
    return tensors


def _wait_for(condition, timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_batched_add_refuses_mismatched_batches_and_keeps_rows_apart(start_server, tmp_path, add_model) -> None:
    repo = tmp_path / "repo"
    add_version(repo, "add", 1, add_model, ADD_CONFIG)
    server = start_server(repo)
    client = tg.InferenceServerClient(server.grpc_url)
    with pytest.raises(tg.InferenceServerException) as info:
        client.infer("add", _inputs(np.ones((2, 2)), np.ones((3, 2))))
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "input 'y'" in info.value.message() and "batch size 3" in info.value.message()

    rng = np.random.default_rng(0)
    xa, ya = rng.standard_normal((1, 2)), rng.standard_normal((1, 2))
    xb, yb = rng.standard_normal((3, 2)), rng.standard_normal((3, 2))
    results: queue.Queue = queue.Queue()
    clients = [tg.InferenceServerClient(server.grpc_url, channel_args=OWN_CONNECTION) for _ in range(2)]
    assert all(c.is_server_live() for c in clients)  # connections up before the timed part
    for c, (tag, x, y) in zip(clients, (("a", xa, ya), ("b", xb, yb)), strict=True):
        c.async_infer("add", _inputs(x, y), callback=lambda result, error, tag=tag: results.put((tag, result, error)))
    got = {}
    for _ in range(2):
        tag, result, error = results.get(timeout=10)
        assert error is None, error
        got[tag] = result.as_numpy("z")
    np.testing.assert_allclose(got["a"], (xa + ya).astype(np.float32), rtol=1e-6)
    np.testing.assert_allclose(got["b"], (xb + yb).astype(np.float32), rtol=1e-6)
    stats = client.get_inference_statistics("add", as_json=True)["model_stats"][0]
    assert int(stats["inference_count"]) == 4 and int(stats["execution_count"]) == 1  # one batch of 4 rows


@pytest.mark.parametrize("shape", [[0, 2**28 + 2**31], [0, 2**62], [2**62, 0], [2**63 - 1, 0]])
def test_zero_dimension_does_not_hide_a_huge_one(dyn_server, shape) -> None:
    msg = pb.ModelInferRequest(model_name="dyn")
    msg.inputs.add(name="x", datatype="FP32", shape=shape)
    msg.raw_input_contents.append(b"")
    with grpc.insecure_channel(dyn_server.grpc_url) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(msg)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "input 'x'" in info.value.details() and "more than" in info.value.details()
        msg.inputs[0].shape[:] = [0, 64]  # a zero dimension next to sane ones is fine
        assert list(stub.ModelInfer(msg).outputs[0].shape) == [0, 64]


@pytest.mark.parametrize("shape", [[0, 2**70], [0, 2**40], [2**64, 0]])
def test_rest_huge_dimensions_are_invalid(dyn_server, shape) -> None:
    body = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": shape, "data": []}]})
    code, _, raw = http_request(dyn_server, "POST", "/v2/models/dyn/infer", body.encode())
    assert code == 400 and "input 'x'" in json.loads(raw)["error"], raw


def test_rest_deep_json_nesting_is_invalid(main_server) -> None:
    deep = "[" * 100000 + "]" * 100000
    for body in ('{"inputs": ' + deep + "}",
                 json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 64],
                                         "data": json.loads("[" * 500 + "1" + "]" * 500)}]})):
        code, _, raw = http_request(main_server, "POST", "/v2/models/mlp/infer", body.encode())
        assert code == 400, raw
    assert main_server.process.poll() is None


def test_grpc_typed_contents_in_the_wrong_field(main_server) -> None:
    msg = pb.ModelInferRequest(model_name="mlp")
    entry = msg.inputs.add(name="x", datatype="FP32", shape=[1, 64])
    entry.contents.int_contents.extend([1] * 64)
    with grpc.insecure_channel(main_server.grpc_url) as channel:
        with pytest.raises(grpc.RpcError) as info:
            pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(msg)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "input 'x'" in info.value.details() and "fp32_contents" in info.value.details()


@pytest.mark.parametrize("version", ["\u00b2", "9" * 5000, "1" * 19, "\u0661"])
def test_odd_version_strings_are_not_found(main_server, version) -> None:
    with grpc.insecure_channel(main_server.grpc_url) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for call, msg in ((stub.ModelMetadata, pb.ModelMetadataRequest(name="mlp", version=version)),
                          (stub.ModelConfig, pb.ModelConfigRequest(name="mlp", version=version)),
                          (stub.ModelStatistics, pb.ModelStatisticsRequest(name="mlp", version=version)),
                          (stub.ModelInfer, pb.ModelInferRequest(model_name="mlp", model_version=version))):
            with pytest.raises(grpc.RpcError) as info:
                call(msg)
            assert info.value.code() == grpc.StatusCode.NOT_FOUND, (call, info.value.details())
        assert stub.ModelReady(pb.ModelReadyRequest(name="mlp", version=version)).ready is False
    code, _, _ = http_request(main_server, "GET", f"/v2/models/mlp/versions/{'9' * 5000}")
    assert code == 404


def test_retired_pooled_version_answers_its_queued_requests(start_server, tmp_path, model_files,
                                                            interpreters) -> None:
    """With two instances (a thread pool), a request queued on version 1 when version 2 replaces it
    still gets version 1's answer instead of INTERNAL from a shut-down pool."""
    repo = tmp_path / "repo"
    add_version(repo, "mlp", 1, model_files["mlp"], "max_batch_size: 4\ninstance_group [{ count: 2 }]\n"
                "dynamic_batching { max_queue_delay_microseconds: 2000000 }\n")
    server = start_server(repo, "--model-control-mode", "poll", "--repository-poll-secs", "0.1")
    client = tg.InferenceServerClient(server.grpc_url)
    x = np.random.default_rng(1).standard_normal((2, 64)).astype(np.float32)
    tensor = tg.InferInput("x", [2, 64], "FP32")
    tensor.set_data_from_numpy(x)
    results: queue.Queue = queue.Queue()
    client.async_infer("mlp", [tensor], callback=lambda result, error: results.put((result, error)))
    add_version(repo, "mlp", 2, model_files["mlp2"])
    _wait_for(lambda: client.is_model_ready("mlp", "2"), what="version 2")
    result, error = results.get(timeout=10)
    assert error is None, error
    assert result.get_response().model_version == "1"
    np.testing.assert_allclose(result.as_numpy("y"), interpreters["mlp"].run({"x": x})["y"], rtol=1e-6)


def test_config_that_is_not_utf8(start_server, tmp_path, model_files, add_model) -> None:
    """A config.pbtxt with invalid UTF-8 makes only its model unavailable, at start and in poll mode."""
    repo = tmp_path / "repo"
    add_version(repo, "mlp", 1, model_files["mlp"])
    add_version(repo, "bad", 1, model_files["mlp"])
    (repo / "bad" / "config.pbtxt").write_bytes(b"max_batch_size: 4 \xff\xfe\n")
    server = start_server(repo, "--model-control-mode", "poll", "--repository-poll-secs", "0.1")
    client = tg.InferenceServerClient(server.grpc_url)
    assert client.is_model_ready("mlp")
    index = {m["name"]: m for m in client.get_model_repository_index(as_json=True)["models"]}
    assert index["bad"]["state"] == "UNAVAILABLE" and "UTF-8" in index["bad"]["reason"]
    # a second bad model sorted before a good new one does not block it
    add_version(repo, "aaa_bad", 1, model_files["mlp"])
    (repo / "aaa_bad" / "config.pbtxt").write_bytes(b"\xc3\x28")
    add_version(repo, "zzz_add", 1, add_model)
    _wait_for(lambda: client.is_model_ready("zzz_add"), what="zzz_add")
    assert server.process.poll() is None and "restarting" not in server.log.read_text()


def test_crashed_worker_restarts_with_backoff(start_server, main_repo) -> None:
    import os
    import signal

    server = start_server(main_repo)
    pid = int(re.search(r"worker 0 \(pid (\d+)\)", server.log.read_text()).group(1))
    os.kill(pid, signal.SIGKILL)
    _wait_for(lambda: "restarting it in" in server.log.read_text(), what="restart")
    _wait_for(lambda: server.log.read_text().count("serving gRPC on") >= 2, what="new worker")
    assert tg.InferenceServerClient(server.grpc_url).is_server_ready()


def _recv_all(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except TimeoutError:
        pass
    return data


def test_http_slow_clients_are_cut_off(start_server, main_repo) -> None:
    server = start_server(main_repo, "--http-header-timeout-secs", "0.5", "--http-body-timeout-secs", "0.5",
                          "--http-idle-timeout-secs", "0.5")
    for payload in (b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n",  # headers never finish
                    b"POST /v2/models/mlp/infer HTTP/1.1\r\nContent-Length: 100\r\n\r\n{",  # body never finishes
                    b""):  # never says anything
        with socket.create_connection(("127.0.0.1", server.http_port)) as sock:
            sock.sendall(payload)
            start = time.monotonic()
            assert _recv_all(sock, 5) == b""  # closed unanswered
            assert time.monotonic() - start < 3
    with socket.create_connection(("127.0.0.1", server.http_port)) as sock:  # idle keep-alive
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        start = time.monotonic()
        assert b"200 OK" in _recv_all(sock, 5)
        assert time.monotonic() - start < 3


def test_http_connection_cap(start_server, main_repo) -> None:
    server = start_server(main_repo, "--http-max-connections", "2")
    held = [socket.create_connection(("127.0.0.1", server.http_port)) for _ in range(2)]
    try:
        time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", server.http_port)) as sock:
            assert b"503" in _recv_all(sock, 5).split(b"\r\n")[0]
    finally:
        for sock in held:
            sock.close()
    _wait_for(lambda: http_request(server, "GET", "/v2/health/live")[0] == 200, what="a free connection")


def test_http_token_checked_before_the_body(start_server, main_repo, tmp_path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    server = start_server(main_repo, "--auth-token-file", str(token_file))
    with socket.create_connection(("127.0.0.1", server.http_port)) as sock:
        sock.sendall(b"POST /v2/models/mlp/infer HTTP/1.1\r\nContent-Length: 50000000\r\n\r\n")  # no body sent
        reply = _recv_all(sock, 5)
    assert reply.startswith(b"HTTP/1.1 401") and b"Connection: close" in reply


def test_grpc_concurrency_limit(start_server, tmp_path, add_model) -> None:
    repo = tmp_path / "repo"
    add_version(repo, "add", 1, add_model, "max_batch_size: 8\ndynamic_batching { max_queue_delay_microseconds: "
                "1500000 }\n")
    server = start_server(repo, "--grpc-max-concurrent-rpcs", "1")
    results: queue.Queue = queue.Queue()
    slow = tg.InferenceServerClient(server.grpc_url, channel_args=OWN_CONNECTION)
    slow.async_infer("add", _inputs(np.ones((1, 2)), np.ones((1, 2))),
                     callback=lambda result, error: results.put((result, error)))
    time.sleep(0.3)
    with pytest.raises(tg.InferenceServerException) as info:
        tg.InferenceServerClient(server.grpc_url, channel_args=OWN_CONNECTION).is_server_live()
    assert info.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
    result, error = results.get(timeout=10)
    assert error is None and result.as_numpy("z").tolist() == [[2.0, 2.0]]


def test_no_exception_text_reaches_grpc_clients(main_server) -> None:
    """Unknown model names of odd kinds get clean statuses, never UNKNOWN with Python text."""
    with grpc.insecure_channel(main_server.grpc_url) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for name in ("\u00b2", "a/b", "." * 300, "\x00"):
            with pytest.raises(grpc.RpcError) as info:
                stub.ModelMetadata(pb.ModelMetadataRequest(name=name, version="1"))
            assert info.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT)
            assert "Traceback" not in info.value.details() and "Error" not in info.value.details()
