"""A model config's `work_budget_macs` parameter: requests whose shapes need more multiply-adds
get INVALID_ARGUMENT / 400 naming the estimate and the limit (refused, not computed), requests
within it run, and a model file over the budget at load is refused with the reason in the index."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.grpc as tg
from tritonclient.utils import InferenceServerException

from edgerun.runtime.interpreter import Interpreter
from edgerun.runtime.writer import serialize
from tests.runtime.graphs import table_cnn
from tests.runtime.mutate import repoint_input
from tests.serving.conftest import CNN_CONFIG, OWN_CONNECTION, add_version
from tests.serving.test_http import request


def _budget(macs: int) -> str:
    return f'parameters {{ key: "work_budget_macs" value {{ string_value: "{macs}" }} }}\n'


@pytest.fixture
def budget_server(tmp_path, model_files, start_server):
    """mlp and cnn (batched) allowed 4 rows' work; `mutated` (conv1 reads a weight table: batch 960)
    allowed 10 times its honest model's work."""
    mlp_row = Interpreter(model_files["mlp"]).estimated_macs()
    cnn_row = Interpreter(model_files["cnn"]).estimated_macs()
    honest = serialize(table_cnn(rows=960))
    mutated = tmp_path / "mutated.erm"
    mutated.write_bytes(repoint_input(honest, "conv1", 0, "table"))
    repo = tmp_path / "repo"
    add_version(repo, "mlp", 1, model_files["mlp"], _budget(4 * mlp_row))
    add_version(repo, "cnn", 1, model_files["cnn"], CNN_CONFIG + _budget(4 * cnn_row))
    add_version(repo, "mutated", 1, mutated, _budget(10 * Interpreter(honest).estimated_macs()))
    return start_server(repo), mlp_row


def _infer(client: tg.InferenceServerClient, model: str, x: np.ndarray) -> np.ndarray:
    tensor = tg.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return client.infer(model, [tensor]).as_numpy("y")


def test_requests_over_the_budget_are_invalid(budget_server, interpreters) -> None:
    server, mlp_row = budget_server
    client = tg.InferenceServerClient(server.grpc_url, channel_args=OWN_CONNECTION)
    x = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    np.testing.assert_allclose(_infer(client, "mlp", x), interpreters["mlp"].run({"x": x})["y"], rtol=1e-5)
    with pytest.raises(InferenceServerException) as refused:
        _infer(client, "mlp", np.zeros((64, 64), np.float32))
    assert refused.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "multiply-adds" in refused.value.message() and f"work budget of {4 * mlp_row}" in refused.value.message()

    body = json.dumps({"inputs": [{"name": "x", "shape": [64, 64], "datatype": "FP32", "data": [0.0] * 64 * 64}]})
    status, _, reply = request(server, "POST", "/v2/models/mlp/infer", body.encode(),
                               {"Content-Type": "application/json"})
    assert status == 400 and f"work budget of {4 * mlp_row}" in json.loads(reply)["error"]
    np.testing.assert_allclose(_infer(client, "mlp", x), interpreters["mlp"].run({"x": x})["y"], rtol=1e-5)


def test_batches_over_the_budget_run_their_requests_alone(budget_server) -> None:
    server, _ = budget_server
    x = np.ones((2, 3, 16, 16), np.float32)

    def one(_: int) -> tuple:
        client = tg.InferenceServerClient(server.grpc_url, channel_args=OWN_CONNECTION)
        return _infer(client, "cnn", x).shape

    with ThreadPoolExecutor(4) as pool:  # batched together they need 8 rows' work
        assert list(pool.map(one, range(4))) == [(2, 10)] * 4
    client = tg.InferenceServerClient(server.grpc_url, channel_args=OWN_CONNECTION)
    with pytest.raises(InferenceServerException, match="over the work budget"):
        _infer(client, "cnn", np.ones((8, 3, 16, 16), np.float32))


def test_a_model_over_the_budget_is_refused_at_load(budget_server) -> None:
    server, _ = budget_server
    client = tg.InferenceServerClient(server.grpc_url, channel_args=OWN_CONNECTION)
    index = {m["name"]: m for m in client.get_model_repository_index(as_json=True)["models"]}
    assert index["mutated"]["state"] == "UNAVAILABLE"
    reason = index["mutated"]["reason"]
    assert "WorkBudgetError" in reason and "node 'conv1' (Conv" in reason and "work_budget_macs" in reason
    assert index["mlp"]["state"] == "READY" and not client.is_model_ready("mutated")


def test_a_cheap_model_is_warmed_for_big_read_only_batches(main_repo) -> None:
    """Loading compiles what a big batch of read-only inputs (gRPC's raw contents) runs: the
    first such request compiles nothing more (numba's Gemm on its tiles, compiled on a first
    400-row request, held the event loop for 17 s on a cold cache)."""
    from edgerun.devices import numba_microkernel
    from edgerun.serving.config import read_settings
    from edgerun.serving.model import ServedModel

    folder = main_repo / "mlp"
    model = ServedModel.load(read_settings(folder), 1, folder / "1" / "model.erm")
    compiled = len(numba_microkernel.gemm_tiles.signatures)
    assert compiled >= 1  # (the 64-row warm-up ran the many-rows Gemm)
    (it,) = model.interpreters
    name, info = next(iter(it.signatures["serving_default"].inputs.items()))
    x = np.zeros((400, info.shape[1]), info.dtype)
    x.flags.writeable = False
    it.run({name: x})
    assert len(numba_microkernel.gemm_tiles.signatures) == compiled


def test_a_batch_of_many_rows_over_the_memory_budget_does_not_fail_the_load(main_repo, monkeypatch) -> None:
    """The extra warm-up batch is a courtesy: a memory budget that cannot hold it (a device
    profile's) leaves the model loaded; a batch of 2 over it still fails the load, as before."""
    from edgerun.runtime.errors import MemoryBudgetError
    from edgerun.serving import model as served
    from edgerun.serving.config import read_settings

    real_run = Interpreter.run

    def run(self, feeds, *args, limit=served.WARM_MANY_ROWS, **kwargs):
        if max(v.shape[0] for v in feeds.values()) >= limit:
            raise MemoryBudgetError("over the memory budget")
        return real_run(self, feeds, *args, **kwargs)

    folder = main_repo / "mlp"
    monkeypatch.setattr(Interpreter, "run", run)
    loaded = served.ServedModel.load(read_settings(folder), 1, folder / "1" / "model.erm")
    assert len(loaded.interpreters) == 1
    monkeypatch.setattr(Interpreter, "run", lambda self, feeds, *a, **k: run(self, feeds, *a, limit=2, **k))
    with pytest.raises(MemoryBudgetError):
        served.ServedModel.load(read_settings(folder), 1, folder / "1" / "model.erm")
