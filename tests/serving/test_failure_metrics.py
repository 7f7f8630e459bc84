"""Every refused inference request is counted in nv_inference_request_failure with the reason it was
refused for (the gRPC status name, the same on REST and gRPC), against a real server and real clients;
and a repository entry not laid out as <model>/<version>/model.erm is reported by name."""

from __future__ import annotations

import http.client
import json
import re
import shutil
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tg
import tritonclient.http as th

from edgerun.serving.protos import grpc_service_pb2 as pb
from edgerun.serving.protos import grpc_service_pb2_grpc as pb_grpc
from tests.serving.conftest import add_version

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _failures(server) -> dict[tuple[str, str], float]:
    """{(model, reason): count} of nv_inference_request_failure_total from the metrics endpoint."""
    request = urllib.request.Request(f"http://127.0.0.1:{server.metrics_port}/metrics", headers=AUTH)
    text = urllib.request.urlopen(request, timeout=5).read().decode()
    pattern = r'^nv_inference_request_failure_total\{model="([^"]*)",reason="([^"]*)"\} (\S+)$'
    return {(m, r): float(v) for m, r, v in re.findall(pattern, text, re.MULTILINE)}


SENT_WHOLE = 1 << 16  # bodies up to this size are sent; larger ones are only announced (see _post)


def _post(server, path: str, body: bytes, headers: dict[str, str]) -> int:
    """The status of a POST. A body over SENT_WHOLE is announced by its Content-Length and not
    sent: the server refuses it from the head alone and closes, and a client still writing would
    see a broken pipe instead of the answer (a race that depends on the machine's speed)."""
    host, port = server.http_url.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.putrequest("POST", path)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            connection.putheader(name, value)
        connection.endheaders(body if len(body) <= SENT_WHOLE else None)
        return connection.getresponse().status
    finally:
        connection.close()


@pytest.fixture
def guarded_server(start_server, main_repo, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    return start_server(main_repo, "--auth-token-file", str(token_file), "--max-message-size", str(1 << 20))


def test_rest_refusals_are_counted_with_their_reason(guarded_server) -> None:
    json_headers = {**AUTH, "Content-Type": "application/json"}
    good = {"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64}]}
    bad_shape = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [0.0] * 3}]}
    cases = [  # (path, body, headers, status, (model label, reason))
        ("/v2/models/mlp/infer", b"{not json", json_headers, 400, ("mlp", "INVALID_ARGUMENT")),
        ("/v2/models/mlp/infer", json.dumps(bad_shape).encode(), json_headers, 400, ("mlp", "INVALID_ARGUMENT")),
        ("/v2/models/nope/infer", json.dumps(good).encode(), json_headers, 404, ("", "NOT_FOUND")),
        ("/v2/models/mlp/infer", b"x" * (2 << 20), json_headers, 413, ("mlp", "RESOURCE_EXHAUSTED")),
        ("/v2/models/mlp/infer", json.dumps(good).encode(), {"Authorization": "Bearer wrong"}, 401,
         ("", "UNAUTHENTICATED")),
    ]
    for path, body, headers, status, key in cases:
        before = _failures(guarded_server).get(key, 0)
        assert _post(guarded_server, path, body, headers) == status
        assert _failures(guarded_server).get(key, 0) == before + 1, (path, status, key)
    # the client-supplied name of a model the server does not know never becomes a label
    assert not any(model == "nope" for model, _ in _failures(guarded_server))
    assert _post(guarded_server, "/v2/models/mlp/infer", json.dumps(good).encode(), json_headers) == 200


def test_grpc_refusals_are_counted_with_the_same_reasons(guarded_server) -> None:
    metadata = (("authorization", f"Bearer {TOKEN}"),)
    client = tg.InferenceServerClient(guarded_server.grpc_url)
    bad_shape = tg.InferInput("x", [1, 3], "FP32")
    bad_shape.set_data_from_numpy(np.zeros((1, 3), np.float32))
    malformed = pb.ModelInferRequest(model_name="mlp", raw_input_contents=[b"1234"])  # raw without inputs

    def raw_infer(message, call_metadata=metadata):
        with grpc.insecure_channel(guarded_server.grpc_url) as channel:
            with pytest.raises(grpc.RpcError) as info:
                pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(message, metadata=call_metadata, timeout=10)
        return info.value.code()

    cases = [
        (lambda: raw_infer(malformed), grpc.StatusCode.INVALID_ARGUMENT, ("mlp", "INVALID_ARGUMENT")),
        (lambda: _tritonclient_code(client, "mlp", bad_shape, dict(metadata)), "StatusCode.INVALID_ARGUMENT",
         ("mlp", "INVALID_ARGUMENT")),
        (lambda: _tritonclient_code(client, "nope", bad_shape, dict(metadata)), "StatusCode.NOT_FOUND",
         ("", "NOT_FOUND")),
        (lambda: raw_infer(pb.ModelInferRequest(model_name="mlp"), ()), grpc.StatusCode.UNAUTHENTICATED,
         ("", "UNAUTHENTICATED")),
    ]
    for call, code, key in cases:
        before = _failures(guarded_server).get(key, 0)
        assert call() == code
        assert _failures(guarded_server).get(key, 0) == before + 1, (code, key)


def _tritonclient_code(client, model: str, tensor, headers: dict[str, str]) -> str:
    with pytest.raises(tg.InferenceServerException) as info:
        client.infer(model, [tensor], headers=headers)
    return info.value.status()


def test_an_entry_not_laid_out_as_model_version_file_is_reported_by_name(start_server, tmp_path,
                                                                        model_files) -> None:
    repo = tmp_path / "repo"
    add_version(repo, "ident", 1, model_files["ident"])
    (repo / "mlp").mkdir()
    shutil.copyfile(model_files["mlp"], repo / "mlp" / "model.erm")  # no version folder
    shutil.copyfile(model_files["cnn"], repo / "cnn.erm")  # a file at the top
    (repo / "v").mkdir()
    add_version(repo / "v", "latest", 1, model_files["mlp"])  # v/latest/1/model.erm: not a version number
    server = start_server(repo)
    log = server.log.read_text()
    for words in ("model mlp: mlp/model.erm is not in a version folder: move it to mlp/1/model.erm",
                  "cnn.erm: a file, not a model folder", "model v: folder(s) 'latest' are not version numbers"):
        assert words in log, log
    http = th.InferenceServerClient(server.http_url)
    index = {row["name"]: row for row in http.get_model_repository_index()}
    assert index["mlp"]["state"] == "UNAVAILABLE" and "mlp/1/model.erm" in index["mlp"]["reason"]
    assert index["cnn.erm"]["state"] == "UNAVAILABLE" and "cnn/1/model.erm" in index["cnn.erm"]["reason"]
    assert index["v"]["state"] == "UNAVAILABLE" and "version numbers" in index["v"]["reason"]
    assert index["ident"]["state"] == "READY"
    assert not http.is_server_ready() and not http.is_model_ready("mlp")
    grpc_index = tg.InferenceServerClient(server.grpc_url).get_model_repository_index(as_json=True)["models"]
    assert {row["name"]: row.get("state") for row in grpc_index}["mlp"] == "UNAVAILABLE"
