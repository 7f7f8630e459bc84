"""Every kind of bad request gets the right status and a message naming the input and the
expectation, over gRPC and REST; none leaks a path or traceback, crashes the server or disturbs
other requests."""

from __future__ import annotations

import json
import tempfile
import threading

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tg
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from tests.serving.test_http import request as http_request

X = np.zeros((1, 64), np.float32)


def _tensor(name="x", datatype="FP32", shape=(1, 64), raw: bytes | None = X.tobytes(), data=None) -> dict:
    return {"name": name, "datatype": datatype, "shape": list(shape), "raw": raw, "data": data}


# case -> (model, version, input tensors, status, words the message must contain)
CASES = {
    "unknown model": ("nope", "", [_tensor()], "NOT_FOUND", ["unknown model 'nope'"]),
    "unknown version": ("mlp", "7", [_tensor()], "NOT_FOUND", ["no ready version '7'"]),
    "missing input": ("mlp", "", [], "INVALID_ARGUMENT", ["missing input 'x'", "FP32 [-1, 64]"]),
    "unknown input": ("mlp", "", [_tensor(name="z")], "INVALID_ARGUMENT", ["unknown input 'z'", "['x']"]),
    "wrong datatype": ("mlp", "", [_tensor(datatype="INT32")], "INVALID_ARGUMENT",
                       ["input 'x'", "expected datatype FP32", "'INT32'"]),
    "unknown datatype": ("mlp", "", [_tensor(datatype="FP128")], "INVALID_ARGUMENT",
                         ["input 'x'", "expected datatype FP32"]),
    "wrong rank": ("mlp", "", [_tensor(shape=(1, 64, 1))], "INVALID_ARGUMENT",
                   ["input 'x'", "expected shape [-1, 64] (rank 2)", "[1, 64, 1]"]),
    "wrong shape": ("mlp", "", [_tensor(shape=(1, 63), raw=X[:, :63].tobytes())], "INVALID_ARGUMENT",
                    ["input 'x'", "expected shape [-1, 64]", "[1, 63]"]),
    "byte length": ("mlp", "", [_tensor(raw=X.tobytes()[:-4])], "INVALID_ARGUMENT",
                    ["input 'x'", "expected 256 bytes for FP32 [1, 64], got 252"]),
    "raw and typed": ("mlp", "", [_tensor(data=X.ravel().tolist())], "INVALID_ARGUMENT",
                      ["input 'x'", "not both"]),
    "negative dimension": ("mlp", "", [_tensor(shape=(-3, 64))], "INVALID_ARGUMENT",
                           ["input 'x'", "negative dimension"]),
    "absurd dimension": ("mlp", "", [_tensor(shape=(1 << 40, 64))], "INVALID_ARGUMENT",
                         ["input 'x'", "more than 2147483648 elements"]),
    "too many inputs": ("mlp", "", [_tensor(), _tensor(name="x2")], "INVALID_ARGUMENT",
                        ["takes 1 input(s) ['x']", "has 2"]),
    "typed count": ("mlp", "", [_tensor(raw=None, data=[1.0, 2.0])], "INVALID_ARGUMENT",
                    ["input 'x'", "expected 64 values", "got 2"]),
    "over max batch": ("cnn", "", [_tensor(shape=(9, 3, 16, 16), raw=bytes(9 * 3 * 16 * 16 * 4))],
                       "INVALID_ARGUMENT", ["input 'x'", "batch size 9 exceeds max_batch_size 8"]),
}
HTTP_STATUS = {"NOT_FOUND": 404, "INVALID_ARGUMENT": 400}


def _grpc_request(model: str, version: str, tensors: list[dict]) -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name=model, model_version=version)
    for t in tensors:
        entry = msg.inputs.add(name=t["name"], datatype=t["datatype"], shape=t["shape"])
        if t["data"] is not None:
            entry.contents.fp32_contents.extend(t["data"])
        if t["raw"] is not None:
            msg.raw_input_contents.append(t["raw"])
    return msg


def _http_body(tensors: list[dict]) -> tuple[bytes, dict]:
    inputs, blobs = [], []
    for t in tensors:
        entry = {"name": t["name"], "datatype": t["datatype"], "shape": t["shape"]}
        if t["raw"] is not None:
            entry["parameters"] = {"binary_data_size": len(t["raw"])}
            blobs.append(t["raw"])
        if t["data"] is not None:
            entry["data"] = t["data"]
        inputs.append(entry)
    header = json.dumps({"inputs": inputs}).encode()
    return header + b"".join(blobs), {"Inference-Header-Content-Length": str(len(header))}


def _assert_clean(message: str, server) -> None:
    assert "Traceback" not in message and "File \"" not in message
    assert str(server.log.parent) not in message and tempfile.gettempdir() not in message


@pytest.mark.parametrize("case", list(CASES))
def test_grpc_bad_input(main_server, case) -> None:
    model, version, tensors, status, words = CASES[case]
    with grpc.insecure_channel(main_server.grpc_url) as channel:
        with pytest.raises(grpc.RpcError) as info:
            pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(_grpc_request(model, version, tensors))
    assert info.value.code() == getattr(grpc.StatusCode, status)
    for word in words:
        assert word in info.value.details(), (word, info.value.details())
    _assert_clean(info.value.details(), main_server)


@pytest.mark.parametrize("case", list(CASES))
def test_http_bad_input(main_server, case) -> None:
    model, version, tensors, status, words = CASES[case]
    body, headers = _http_body(tensors)
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
    code, _, raw = http_request(main_server, "POST", path, body, headers)
    message = json.loads(raw)["error"]
    assert code == HTTP_STATUS[status]
    for word in words:
        assert word in message, (word, message)
    _assert_clean(message, main_server)


@pytest.mark.parametrize("body,headers,words", [
    (b"{not json", {}, ["not valid JSON"]),
    (b'{"inputs": 3}', {}, ["'inputs' list"]),
    (b'{"inputs": []}xx', {"Inference-Header-Content-Length": "99"}, ["does not fit a body of 16 bytes"]),
    (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 64], "parameters": {"binary_data_size": 256}}]}',
     {}, ["input 'x'", "overruns"]),
])
def test_http_malformed_bodies(main_server, body, headers, words) -> None:
    code, _, raw = http_request(main_server, "POST", "/v2/models/mlp/infer", body, headers)
    assert code == 400
    for word in words:
        assert word in json.loads(raw)["error"]


def test_bad_requests_do_not_disturb_good_ones(main_server, interpreters) -> None:
    """Good requests interleaved with a stream of bad ones from another thread all succeed."""
    stop = threading.Event()
    errors: list[str] = []

    def hammer() -> None:
        with grpc.insecure_channel(main_server.grpc_url) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            while not stop.is_set():
                for model, version, tensors, _, _ in CASES.values():
                    try:
                        stub.ModelInfer(_grpc_request(model, version, tensors))
                        errors.append("a bad request succeeded")
                    except grpc.RpcError:
                        pass

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        client = tg.InferenceServerClient(main_server.grpc_url)
        for i in range(30):
            x = np.random.default_rng(i).standard_normal((1, 64)).astype(np.float32)
            tensor = tg.InferInput("x", [1, 64], "FP32")
            tensor.set_data_from_numpy(x)
            got = client.infer("mlp", [tensor]).as_numpy("y")
            np.testing.assert_allclose(got, interpreters["mlp"].run({"x": x})["y"], rtol=1e-6)
    finally:
        stop.set()
        thread.join()
    assert not errors
    assert main_server.process.poll() is None
    assert client.is_server_ready()
