"""Secure aggregation over real gRPC: the coordinator's default. Only masked vectors cross
the upload RPC, the result equals plaintext FedAvg within the quantization error, dropouts
mid-protocol are recovered, and DP rounds report epsilon and stop at the budget."""

from __future__ import annotations

import numpy as np

from edgerun.federated import partition
from edgerun.federated.auth import KeyPair
from edgerun.federated.client import ClientOptions, FederatedClient, channel
from edgerun.federated.coordinator import Coordinator, CoordinatorConfig
from edgerun.federated.privacy import DpOptions
from edgerun.federated.protos import federated_pb2 as pb
from edgerun.federated.secagg.options import SecAggOptions
from edgerun.federated.service import CoordinatorServicer, serve
from edgerun.federated.store import Store
from edgerun.federated.strategies import FedAvg
from tests.converters.training.models import digits
from tests.federated.test_rounds import TOKEN, model_path, numpy_fedavg, run_rounds  # noqa: F401 - fixture

__all__ = ["model_path"]


def start(model_path, tmp_path, strategy, rounds, **config):  # noqa: F811 - model_path is the fixture's value
    coordinator = Coordinator(model_path, Store(tmp_path / "c.db"), strategy,
                              CoordinatorConfig(rounds=rounds, enrol_token=TOKEN, round_timeout=60, **config),
                              KeyPair.generate())
    server, port = serve(coordinator)
    return coordinator, server, f"127.0.0.1:{port}"


def test_secure_rounds_carry_only_masked_vectors_and_equal_fedavg(model_path, tmp_path, monkeypatch):  # noqa: F811
    seen: dict[str, list[type]] = {"Upload": [], "UploadMasked": []}
    plain_upload, masked_upload = CoordinatorServicer.Upload, CoordinatorServicer.UploadMasked

    def record(name, method):  # the servicer is grpc.aio: its streams are async iterators
        async def wrapper(self, request_iterator, context):
            async def spy():
                async for chunk in request_iterator:
                    seen[name].append(type(chunk))
                    yield chunk
            return await method(self, spy(), context)
        return wrapper

    monkeypatch.setattr(CoordinatorServicer, "Upload", record("Upload", plain_upload))
    monkeypatch.setattr(CoordinatorServicer, "UploadMasked", record("UploadMasked", masked_upload))
    x, y, _, _ = digits()
    shards = [(x[i], y[i]) for i in partition.iid(240, 3, seed=1)]
    strategy = FedAvg(fraction_fit=1.0, min_fit_clients=3, min_available_clients=3, local_epochs=2,
                      batch_size=16, client_lr=0.1)
    coordinator, server, target = start(model_path, tmp_path, strategy, rounds=2)
    initial = dict(coordinator.parameters)
    clients = [FederatedClient(channel(target), f"dev{i}", KeyPair.generate(), shard, ClientOptions(token=TOKEN))
               for i, shard in enumerate(shards)]
    run_rounds(coordinator, server, clients)
    assert [r.status for r in coordinator.store.history()] == ["aggregated"] * 2
    assert seen["Upload"] == [] and seen["UploadMasked"] and set(seen["UploadMasked"]) == {pb.MaskedChunk}
    assert coordinator.store.updates(1) == []  # nothing per client was stored
    want = numpy_fedavg(initial, shards, rounds=2, epochs=2, batch_size=16, lr=0.1)
    for name, value in want.items():  # quantization step 2^-31 * 3: far below float32 training noise
        np.testing.assert_allclose(coordinator.parameters[name], value, rtol=0, atol=1e-5, err_msg=name)
    assert all(c.bytes_uploaded == 2 * 4 * (sum(v.size for v in initial.values()) + 1) for c in clients)


def test_dropout_after_sharing_keys_is_recovered(model_path, tmp_path):  # noqa: F811
    x, y, _, _ = digits()
    shards = [(x[i], y[i]) for i in partition.iid(400, 5, seed=2)]
    strategy = FedAvg(fraction_fit=1.0, min_fit_clients=5, min_available_clients=5, local_epochs=1,
                      batch_size=16, client_lr=0.1)
    coordinator, server, target = start(model_path, tmp_path, strategy, rounds=1,
                                        secagg=SecAggOptions(stage_timeout=1.0))
    clients = [FederatedClient(channel(target), f"dev{i}", KeyPair.generate(), shard,
                               ClientOptions(token=TOKEN, drop_probability=1.0 if i == 0 else 0.0,
                                             drop_stage="masked"))
               for i, shard in enumerate(shards)]
    run_rounds(coordinator, server, clients)
    [record] = coordinator.store.history()
    assert record.status == "aggregated" and record.metrics["reports"] == 4 and record.metrics["failures"] == 1


def test_too_few_survivors_fail_the_round_and_keep_the_model(model_path, tmp_path):  # noqa: F811
    x, y, _, _ = digits()
    shards = [(x[i], y[i]) for i in partition.iid(240, 3, seed=3)]
    strategy = FedAvg(fraction_fit=1.0, min_fit_clients=3, min_available_clients=3, local_epochs=1)
    coordinator, server, target = start(model_path, tmp_path, strategy, rounds=1,
                                        secagg=SecAggOptions(stage_timeout=1.0))
    initial = {k: v.copy() for k, v in coordinator.parameters.items()}
    clients = [FederatedClient(channel(target), f"dev{i}", KeyPair.generate(), shard,
                               ClientOptions(token=TOKEN, drop_probability=1.0 if i < 2 else 0.0,
                                             drop_stage="masked"))
               for i, shard in enumerate(shards)]
    stop_after_one = FailOnce(coordinator)
    run_rounds(coordinator, server, clients)
    assert stop_after_one.failed()
    assert all(np.array_equal(coordinator.parameters[k], v) for k, v in initial.items())


class FailOnce:
    """Ends the coordinator's run after its first (failed) round."""

    def __init__(self, coordinator):
        self.coordinator = coordinator
        coordinator.on_round = self.on_round

    def on_round(self, record):
        if record.status == "failed":
            self.coordinator.budget_exhausted = True  # stop the run loop

    def failed(self):
        return [r.status for r in self.coordinator.store.history()] == ["failed"]


def test_dp_rounds_report_epsilon_and_stop_at_the_budget(model_path, tmp_path):  # noqa: F811
    x, y, _, _ = digits()
    shards = [(x[i], y[i]) for i in partition.iid(240, 3, seed=4)]
    strategy = FedAvg(fraction_fit=1.0, min_fit_clients=3, min_available_clients=3, local_epochs=1)
    dp = DpOptions(noise_multiplier=4.0, clip_norm=0.5, delta=1e-5, epsilon_budget=3.5)
    coordinator, server, target = start(model_path, tmp_path, strategy, rounds=50, dp=dp)
    clients = [FederatedClient(channel(target), f"dev{i}", KeyPair.generate(), shard, ClientOptions(token=TOKEN))
               for i, shard in enumerate(shards)]
    run_rounds(coordinator, server, clients)
    history = coordinator.store.history()
    epsilons = [r.metrics["epsilon"] for r in history]
    assert 0 < len(history) < 50 and all(r.status == "aggregated" for r in history)
    assert all(a < b for a, b in zip(epsilons, epsilons[1:], strict=False)) and epsilons[-1] <= 3.5
    assert coordinator.strategy.accountant.history == [[3, 3, 4.0]] * len(history)  # 3 selected of 3, no dropouts
    assert not coordinator.strategy.accountant.allows(3, 3)  # one more round would exceed the budget


def test_the_demo_function_prints_accuracy_per_round(tmp_path, capsys):
    from edgerun.federated.demo import run_secure_digits_demo

    history = run_secure_digits_demo(tmp_path, rounds=2, plot=None, num_clients=6, drop_probability=0.0)
    out = capsys.readouterr().out
    assert [r.status for r in history] == ["aggregated"] * 2
    assert "round   1  aggregated  test accuracy" in out and "round   2" in out
