"""The gRPC front end through tritonclient.grpc: metadata, inference, streaming, statistics."""

from __future__ import annotations

import queue

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tg
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from tests.serving.conftest import DTYPES


@pytest.fixture(scope="module")
def client(main_server):
    return tg.InferenceServerClient(main_server.grpc_url)


def _input(name: str, array: np.ndarray) -> tg.InferInput:
    tensor = tg.InferInput(name, list(array.shape), tg.np_to_triton_dtype(array.dtype))
    tensor.set_data_from_numpy(array)
    return tensor


def test_health_and_server_metadata(client) -> None:
    assert client.is_server_live() and client.is_server_ready()
    meta = client.get_server_metadata(as_json=True)
    assert meta["name"] == "edgerun"
    assert {"binary_tensor_data", "model_repository", "statistics"} <= set(meta["extensions"])


def test_model_metadata_and_config(client) -> None:
    meta = client.get_model_metadata("mlp", as_json=True)
    assert meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": ["-1", "64"]}]
    assert meta["outputs"] == [{"name": "y", "datatype": "FP32", "shape": ["-1", "10"]}]
    config = client.get_model_config("cnn", as_json=True)["config"]
    assert config["max_batch_size"] == 8
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == "20000"
    assert config["input"][0]["dims"] == ["3", "16", "16"] and config["input"][0]["data_type"] == "TYPE_FP32"
    assert client.is_model_ready("mlp") and client.is_model_ready("mlp", "1")
    assert not client.is_model_ready("mlp", "2") and not client.is_model_ready("nope")


@pytest.mark.parametrize("model,shape", [("mlp", (3, 64)), ("cnn", (2, 3, 16, 16))])
def test_infer_matches_interpreter(client, interpreters, model, shape) -> None:
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    result = client.infer(model, [_input("x", x)], request_id="r-17")
    expected = interpreters[model].run({"x": x})["y"]
    np.testing.assert_allclose(result.as_numpy("y"), expected, rtol=1e-6, atol=1e-6)
    response = result.get_response(as_json=True)
    assert response["id"] == "r-17" and response["model_version"] == "1"


def test_mlp_closed_form(client, model_files) -> None:
    """The MLP's output equals numpy's softmax(relu(x W1^T + b1) W2^T + b2) from the ONNX weights."""
    from onnx import numpy_helper

    from tests.onnx_models import make_mlp

    w = {t.name: numpy_helper.to_array(t) for t in make_mlp().graph.initializer}
    x = np.random.default_rng(2).standard_normal((4, 64)).astype(np.float32)
    logits = np.maximum(x @ w["w1"].T + w["b1"], 0) @ w["w2"].T + w["b2"]
    want = np.exp(logits - logits.max(1, keepdims=True))
    want /= want.sum(1, keepdims=True)
    got = client.infer("mlp", [_input("x", x)]).as_numpy("y")
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_every_numeric_datatype_round_trips(client) -> None:
    rng = np.random.default_rng(3)
    arrays = {dt: (rng.integers(0, 2, (2, 3)) if dt == "bool" else rng.integers(0, 100, (2, 3))).astype(dt)
              for dt in DTYPES}
    inputs = [_input("in_" + dt, a) for dt, a in arrays.items()]
    result = client.infer("ident", inputs)
    for dt, array in arrays.items():
        got = result.as_numpy("out_" + dt)
        assert got.dtype == np.dtype(dt) and np.array_equal(got, array), dt


def test_requested_outputs_only(client) -> None:
    inputs = [_input("in_" + dt, np.ones((1, 3), dt)) for dt in DTYPES]
    result = client.infer("ident", inputs, outputs=[tg.InferRequestedOutput("out_int8")])
    outputs = result.get_response(as_json=True)["outputs"]
    assert [o["name"] for o in outputs] == ["out_int8"]
    assert result.as_numpy("out_float32") is None


def test_unknown_outputs_and_bad_class_counts_are_refused(client) -> None:
    x = _input("x", np.zeros((1, 64), np.float32))
    with pytest.raises(tg.InferenceServerException, match="unknown output 'z'") as info:
        client.infer("mlp", [x], outputs=[tg.InferRequestedOutput("z")])
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    with pytest.raises(tg.InferenceServerException, match="classification count must be a positive integer"):
        client.infer("mlp", [x], outputs=[tg.InferRequestedOutput("y", class_count=-3)])


def test_typed_contents_accepted_and_raw_outputs_returned(main_server, interpreters) -> None:
    """A request with typed fp32_contents (not raw) is answered with raw_output_contents only."""
    x = np.random.default_rng(4).standard_normal((1, 64)).astype(np.float32)
    request = pb.ModelInferRequest(model_name="mlp")
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[1, 64])
    tensor.contents.fp32_contents.extend(x.ravel().tolist())
    with grpc.insecure_channel(main_server.grpc_url) as channel:
        response = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
    assert len(response.raw_output_contents) == 1 and not response.outputs[0].HasField("contents")
    got = np.frombuffer(response.raw_output_contents[0], np.float32).reshape(1, 10)
    np.testing.assert_allclose(got, interpreters["mlp"].run({"x": x})["y"], rtol=1e-6)


def test_stream_infer(client, interpreters) -> None:
    results: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    xs = [np.random.default_rng(i).standard_normal((1, 64)).astype(np.float32) for i in range(5)]
    try:
        for i, x in enumerate(xs):
            client.async_stream_infer("mlp", [_input("x", x)], request_id=str(i))
        client.async_stream_infer("mlp", [_input("x", np.ones((1, 63), np.float32))], request_id="bad")
        got = [results.get(timeout=10) for _ in range(6)]
    finally:
        client.stop_stream()
    for i, (result, error) in enumerate(got[:5]):
        assert error is None
        assert result.get_response().id == str(i)
        np.testing.assert_allclose(result.as_numpy("y"), interpreters["mlp"].run({"x": xs[i]})["y"], rtol=1e-6)
    assert got[5][0] is None and "expected shape [-1, 64]" in str(got[5][1])


def test_statistics_and_repository_index(client) -> None:
    client.infer("mlp", [_input("x", np.zeros((2, 64), np.float32))])
    stats = client.get_inference_statistics("mlp", as_json=True)["model_stats"][0]
    assert stats["name"] == "mlp" and int(stats["inference_stats"]["success"]["count"]) >= 1
    assert int(stats["inference_count"]) >= 2
    index = client.get_model_repository_index(as_json=True)["models"]
    assert {(m["name"], m["version"], m["state"]) for m in index} == {
        ("mlp", "1", "READY"), ("cnn", "1", "READY"), ("ident", "1", "READY")}


def test_model_control_disabled_by_default(client) -> None:
    with pytest.raises(tg.InferenceServerException, match="model control is disabled") as info:
        client.unload_model("mlp")
    assert info.value.status() == "StatusCode.UNAVAILABLE"
    assert client.is_model_ready("mlp")


def test_grpc_health_service(main_server) -> None:
    """grpc.health.v1 Check ('' = server, a model name = that model), with the standard stub."""
    with grpc.insecure_channel(main_server.grpc_url) as channel:
        check = health_pb2_grpc.HealthStub(channel).Check
        assert check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING
        assert check(health_pb2.HealthCheckRequest(service="cnn")).status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as info:
            check(health_pb2.HealthCheckRequest(service="nope"))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
