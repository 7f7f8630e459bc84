"""edgerun's generated protos coexist with tritonclient's and grpcio-health-checking's in one
process: the KServe messages keep their wire names (`inference.*`) but live in edgerun's own
descriptor pool, so importing everything together raises no `duplicate symbol` and every
server answers stock clients."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tg
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.grpc import service_pb2 as triton_pb

from edgerun import from_onnx, save_model
from edgerun.converters.training import make_trainable
from edgerun.federated.auth import KeyPair
from edgerun.federated.coordinator import Coordinator, CoordinatorConfig
from edgerun.federated.protos import federated_pb2, federated_pb2_grpc
from edgerun.federated.service import serve as serve_coordinator
from edgerun.federated.store import Store
from edgerun.federated.strategies import FedAvg
from edgerun.serving.grpc_service import build_server
from edgerun.serving.handlers import Handlers
from edgerun.serving.protos import grpc_service_pb2
from edgerun.serving.repository import Repository
from tests.converters.training.models import mlp
from tests.onnx_models import make_mlp, ort_run


class InferenceServer:
    """edgerun's KServe gRPC front end on its own event loop thread, in this process."""

    def __init__(self, repo: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.repository = Repository(repo, settle_s=0.0)
        self.server, self.port = self._call(self._start())

    def _call(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30)

    async def _start(self):
        await self.repository.start()
        server = build_server(Handlers(self.repository), "127.0.0.1:0", 64 << 20)
        port = server.add_insecure_port("127.0.0.1:0")  # a second, known port to dial
        await server.start()
        return server, port

    def stop(self) -> None:
        self._call(self.server.stop(0))
        self._call(self.repository.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def inference_server(tmp_path: Path) -> Iterator[InferenceServer]:
    (tmp_path / "mlp" / "1").mkdir(parents=True)
    save_model(from_onnx(make_mlp()), tmp_path / "mlp" / "1" / "model.erm")
    server = InferenceServer(tmp_path)
    yield server
    server.stop()


def test_the_same_kserve_names_live_in_two_pools() -> None:
    theirs = descriptor_pool.Default().FindMessageTypeByName("inference.ModelInferRequest")
    ours = grpc_service_pb2.ModelInferRequest.DESCRIPTOR
    assert theirs.full_name == ours.full_name == "inference.ModelInferRequest"
    assert theirs.file.name == "grpc_service.proto"  # tritonclient's file
    assert ours.file.name == "edgerun/serving/protos/grpc_service.proto"
    assert ours.file.pool is not descriptor_pool.Default()
    assert grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name == \
        "inference.GRPCInferenceService"


def test_bytes_from_one_pool_parse_in_the_other() -> None:
    request = grpc_service_pb2.ModelInferRequest(model_name="mlp", id="7")
    request.inputs.add(name="x", datatype="FP32", shape=[2, 64])
    request.raw_input_contents.append(b"\0" * 512)
    parsed = triton_pb.ModelInferRequest.FromString(request.SerializeToString())
    assert (parsed.model_name, parsed.id, parsed.inputs[0].name, list(parsed.inputs[0].shape)) == \
        ("mlp", "7", "x", [2, 64])
    assert parsed.raw_input_contents[0] == b"\0" * 512


def test_serving_answers_tritonclient_and_the_standard_health_stub(inference_server) -> None:
    x = np.random.default_rng(0).standard_normal((3, 64)).astype(np.float32)
    client = tg.InferenceServerClient(f"127.0.0.1:{inference_server.port}")
    assert client.is_model_ready("mlp")
    tensor = tg.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    result = client.infer("mlp", [tensor])
    np.testing.assert_allclose(result.as_numpy("y"), ort_run(make_mlp(), {"x": x})["y"], rtol=1e-5, atol=1e-6)
    client.close()
    with grpc.insecure_channel(f"127.0.0.1:{inference_server.port}") as channel:
        check = health_pb2_grpc.HealthStub(channel).Check
        assert check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING
        assert check(health_pb2.HealthCheckRequest(service="mlp")).status == health_pb2.HealthCheckResponse.SERVING


def test_the_coordinator_serves_in_the_same_process(tmp_path: Path) -> None:
    model = save_model(make_trainable(mlp((8, 4, 2), seed=0), optimizer=("sgd", {"lr": 0.1})),
                       tmp_path / "m.train.erm")
    coordinator = Coordinator(model, Store(tmp_path / "c.db"), FedAvg(),
                              CoordinatorConfig(rounds=3, secagg=None, operator_token="op"), KeyPair.generate())
    server, port = serve_coordinator(coordinator)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = federated_pb2_grpc.CoordinatorStub(channel).Status(
                federated_pb2.StatusRequest(), metadata=[("authorization", "Bearer op")], timeout=10)
        status = json.loads(reply.json)
        assert (status["clients"], status["finished"], status["history"]) == (0, False, [])
    finally:
        server.stop(0)
        coordinator.store.close()
