"""The REST front end through tritonclient.http (binary data on and off) and plain HTTP."""

from __future__ import annotations

import http.client
import json

import numpy as np
import pytest
import tritonclient.http as th

from tests.serving.conftest import DTYPES


@pytest.fixture(scope="module")
def client(main_server):
    return th.InferenceServerClient(main_server.http_url)


def _input(name: str, array: np.ndarray, binary: bool) -> th.InferInput:
    tensor = th.InferInput(name, list(array.shape), th.np_to_triton_dtype(array.dtype))
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


def request(server, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    """(status, headers, body) of one plain HTTP request."""
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def test_health_and_metadata(client) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.get_server_metadata()["name"] == "edgerun"
    meta = client.get_model_metadata("cnn")
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 3, 16, 16]}]
    assert client.get_model_config("cnn")["max_batch_size"] == 8
    assert client.is_model_ready("cnn", "1") and not client.is_model_ready("cnn", "9")


@pytest.mark.parametrize("binary_in", [True, False])
@pytest.mark.parametrize("binary_out", [True, False, None])
@pytest.mark.parametrize("model,shape", [("mlp", (3, 64)), ("cnn", (2, 3, 16, 16))])
def test_infer_matches_interpreter(client, interpreters, model, shape, binary_in, binary_out) -> None:
    x = np.random.default_rng(5).standard_normal(shape).astype(np.float32)
    outputs = None if binary_out is None else [th.InferRequestedOutput("y", binary_data=binary_out)]
    result = client.infer(model, [_input("x", x, binary_in)], outputs=outputs)
    np.testing.assert_allclose(result.as_numpy("y"), interpreters[model].run({"x": x})["y"], rtol=1e-6, atol=1e-6)
    entry = result.get_output("y")
    assert ("data" in entry) == (binary_out is False)  # None: all outputs binary (binary_data_output)


@pytest.mark.parametrize("binary", [True, False])
def test_every_numeric_datatype_round_trips(client, binary) -> None:
    rng = np.random.default_rng(6)
    arrays = {dt: (rng.integers(0, 2, (2, 3)) if dt == "bool" else rng.integers(0, 100, (2, 3))).astype(dt)
              for dt in DTYPES}
    # JSON cannot carry FP16 (tritonclient refuses); send it binary always
    inputs = [_input("in_" + dt, a, binary or dt == "float16") for dt, a in arrays.items()]
    outputs = [th.InferRequestedOutput("out_" + dt, binary_data=binary or dt == "float16") for dt in DTYPES]
    result = client.infer("ident", inputs, outputs=outputs)
    for dt, array in arrays.items():
        got = result.as_numpy("out_" + dt)
        assert got.dtype == np.dtype(dt) and np.array_equal(got, array), dt


def test_plain_json_request(main_server, interpreters) -> None:
    x = np.arange(64, dtype=np.float32).reshape(1, 64) / 64
    body = json.dumps({"id": "j1", "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 64],
                                               "data": x.tolist()}]}).encode()
    status, headers, raw = request(main_server, "POST", "/v2/models/mlp/versions/1/infer", body,
                                   {"Content-Type": "application/json"})
    doc = json.loads(raw)
    assert status == 200 and headers["Content-Type"] == "application/json" and doc["id"] == "j1"
    np.testing.assert_allclose(np.array(doc["outputs"][0]["data"]).reshape(1, 10),
                               interpreters["mlp"].run({"x": x})["y"], rtol=1e-6)


def test_statistics_and_index(client, main_server) -> None:
    client.infer("mlp", [_input("x", np.zeros((1, 64), np.float32), True)])
    stats = client.get_inference_statistics("mlp")["model_stats"][0]
    assert stats["inference_stats"]["success"]["count"] >= 1
    names = {m["name"] for m in client.get_model_repository_index()}
    assert names == {"mlp", "cnn", "ident"}
    status, _, raw = request(main_server, "GET", "/v2/nothing/here")
    assert status == 404 and "no route" in json.loads(raw)["error"]
    status, _, raw = request(main_server, "POST", "/v2/repository/models/mlp/unload")
    assert status == 503 and "model control is disabled" in json.loads(raw)["error"]
