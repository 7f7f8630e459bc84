"""Federated rounds end to end over loopback gRPC: a real coordinator, real clients.

The oracle for FedAvg is a plain numpy implementation of the same MLP training
(forward, softmax cross-entropy, backward, SGD) and of example-weighted averaging.
"""

from __future__ import annotations

import threading
import time

import grpc
import numpy as np
import pytest

from edgerun.converters.training import make_trainable
from edgerun.federated import partition
from edgerun.federated.auth import KeyPair, sha256
from edgerun.federated.client import ClientOptions, FederatedClient, channel
from edgerun.federated.codec import encode_arrays
from edgerun.federated.coordinator import Coordinator, CoordinatorConfig
from edgerun.federated.protos import federated_pb2 as pb
from edgerun.federated.service import serve, upload_body
from edgerun.federated.simulation import SimulationConfig, simulate
from edgerun.federated.store import Store
from edgerun.federated.strategies import FedAvg
from edgerun.runtime import save_model
from tests.converters.training.models import digits, mlp

TOKEN = "t"


def numpy_local_sgd(params, x, y, epochs, batch_size, lr, seed):
    """The 64-32-10 MLP trained by hand: the same batches as runtime.training.fit."""
    w0, b0, w1, b1 = (params[k].astype(np.float64) for k in ("fc0.weight", "fc0.bias", "fc1.weight", "fc1.bias"))
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(len(y))
        for start in range(0, len(y), batch_size):
            i = order[start : start + batch_size]
            h = np.maximum(x[i] @ w0.T + b0, 0)
            z = h @ w1.T + b1
            p = np.exp(z - z.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            p[np.arange(len(i)), y[i]] -= 1
            dz = p / len(i)
            dh = (dz @ w1) * (h > 0)
            w1, b1 = w1 - lr * dz.T @ h, b1 - lr * dz.sum(0)
            w0, b0 = w0 - lr * dh.T @ x[i], b0 - lr * dh.sum(0)
    return {"fc0.weight": w0, "fc0.bias": b0, "fc1.weight": w1, "fc1.bias": b1}


def numpy_fedavg(params, shards, rounds, epochs, batch_size, lr):
    """Every client trains every round (fraction 1); the global model is the example-weighted mean."""
    params = {k: v.astype(np.float64) for k, v in params.items()}
    for r in range(1, rounds + 1):
        total = sum(len(y) for _, y in shards)
        trained = [numpy_local_sgd(params, x, y, epochs, batch_size, lr, seed=r) for x, y in shards]
        params = {k: sum(len(y) * t[k] for t, (_, y) in zip(trained, shards, strict=True)) / total for k in params}
    return params


@pytest.fixture
def model_path(tmp_path):
    graph = make_trainable(mlp((64, 32, 10), seed=0), optimizer=("sgd", {"lr": 0.1}))
    return save_model(graph, tmp_path / "mlp.train.erm")


def start(model_path, tmp_path, strategy, rounds, **config):
    config.setdefault("secagg", None)  # these tests look at plain uploads; tests/federated/secagg covers secure ones
    coordinator = Coordinator(model_path, Store(tmp_path / "c.db"), strategy,
                              CoordinatorConfig(rounds=rounds, enrol_token=TOKEN, **config), KeyPair.generate())
    server, port = serve(coordinator)
    return coordinator, server, f"127.0.0.1:{port}"


def run_rounds(coordinator, server, clients) -> None:
    """Run the coordinator to the end with each client in its own thread, then shut down."""
    stop = threading.Event()
    threads = [threading.Thread(target=c.run, args=(stop,)) for c in clients]
    for t in threads:
        t.start()
    try:
        coordinator.run()
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        server.stop(0)


def test_fedavg_over_grpc_equals_a_numpy_fedavg(model_path, tmp_path):
    x, y, _, _ = digits()
    shards = [(x[i], y[i]) for i in partition.iid(240, 3, seed=1)]
    strategy = FedAvg(fraction_fit=1.0, min_fit_clients=3, min_available_clients=3, local_epochs=2,
                      batch_size=16, client_lr=0.1)
    coordinator, server, target = start(model_path, tmp_path, strategy, rounds=3, round_timeout=60)
    initial = dict(coordinator.parameters)
    clients = [FederatedClient(channel(target), f"dev{i}", KeyPair.generate(), shard, ClientOptions(token=TOKEN))
               for i, shard in enumerate(shards)]
    run_rounds(coordinator, server, clients)
    want = numpy_fedavg(initial, shards, rounds=3, epochs=2, batch_size=16, lr=0.1)
    assert [r.status for r in coordinator.store.history()] == ["aggregated"] * 3
    for name, value in want.items():
        np.testing.assert_allclose(coordinator.parameters[name], value, rtol=0, atol=1e-6, err_msg=name)
    assert all(c.rounds_done == [1, 2, 3] for c in clients)


def test_simulation_learns_digits(model_path):
    x, y, x_test, y_test = digits()
    config = SimulationConfig(num_clients=10, rounds=5, fraction_fit=0.5, partition="iid", epochs=2,
                              batch_size=16, lr=0.1, round_timeout=20, secagg=None)
    history = simulate(model_path, x, y, x_test, y_test, config)
    assert [r.status for r in history] == ["aggregated"] * 5
    assert history[-1].metrics["test_accuracy"] > 0.85


class Device:
    """A hand-driven client for protocol tests."""

    def __init__(self, target, client_id):
        self.client = FederatedClient(channel(target), client_id, KeyPair.generate(), (None, None),
                                      ClientOptions(token=TOKEN, max_retries=0))
        self.stub = self.client.stub

    def upload(self, round_number, blob, num_examples=10, auth=None):
        digest = sha256(blob)
        body = upload_body(round_number, num_examples, {}, digest)
        header = pb.UpdateHeader(auth=auth or self.client._auth("Upload", body), round=round_number,
                                 num_examples=num_examples, total_size=len(blob), sha256=digest)
        return self.stub.Upload(iter([pb.UploadChunk(header=header, data=blob)]), timeout=10)


def code_of(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code()


def test_bad_requests_get_specific_statuses_and_change_nothing(model_path, tmp_path):
    strategy = FedAvg(fraction_fit=1.0, min_fit_clients=1, min_available_clients=1)
    coordinator, server, target = start(model_path, tmp_path, strategy, rounds=1, round_timeout=60)
    try:
        good, outsider = Device(target, "good"), Device(target, "outsider")
        good.client.enrol()
        good.client.enrol()  # the same id with the same key: a restarted device, answered as before
        impostor = Device(target, "good")  # the same id with another key
        assert code_of(impostor.client.enrol) == grpc.StatusCode.ALREADY_EXISTS
        stranger = Device(target, "stranger")
        stranger.client.options.token = "wrong"
        assert code_of(stranger.client.enrol) == grpc.StatusCode.PERMISSION_DENIED
        coordinator.work_for("good")
        runner = threading.Thread(target=coordinator.run)
        runner.start()
        while coordinator.store.current_round() is None:
            runner.join(0.05)
        outsider.client.enrol()
        params = coordinator.parameters
        delta = {k: np.zeros_like(v) for k, v in params.items()}
        wrong_shape = {**delta, "fc0.bias": np.zeros(3, np.float32)}
        nan = {**delta, "fc0.bias": np.full_like(delta["fc0.bias"], np.nan)}
        assert code_of(lambda: good.upload(1, encode_arrays(wrong_shape))) == grpc.StatusCode.INVALID_ARGUMENT
        assert code_of(lambda: good.upload(1, encode_arrays(nan))) == grpc.StatusCode.INVALID_ARGUMENT
        assert code_of(lambda: good.upload(2, encode_arrays(delta))) == grpc.StatusCode.FAILED_PRECONDITION
        assert code_of(lambda: outsider.upload(1, encode_arrays(delta))) == grpc.StatusCode.FAILED_PRECONDITION
        blob = encode_arrays(delta)
        signed = good.client._auth("Upload", upload_body(1, 10, {}, sha256(blob)))
        unsigned = pb.Auth(client_id="good", timestamp=signed.timestamp, nonce=signed.nonce, signature=b"x" * 64)
        assert code_of(lambda: good.upload(1, blob, auth=unsigned)) == grpc.StatusCode.UNAUTHENTICATED
        assert coordinator.store.reported(1) == []  # nothing above was recorded
        assert good.upload(1, blob, auth=signed).accepted
        assert code_of(lambda: good.upload(1, blob, auth=signed)) == grpc.StatusCode.UNAUTHENTICATED  # replay
        missing = lambda: list(good.stub.Download(pb.DownloadRequest(  # noqa: E731
            auth=good.client._auth("Download", b"parameters:99"), model_version=99), timeout=10))
        assert code_of(missing) == grpc.StatusCode.NOT_FOUND
        runner.join(30)
        assert [r.status for r in coordinator.store.history()] == ["aggregated"]
        assert coordinator.store.reported(1) == ["good"]
    finally:
        server.stop(0)


def test_too_few_reports_fail_the_round_and_keep_the_model(model_path, tmp_path):
    x, y, _, _ = digits()
    strategy = FedAvg(fraction_fit=1.0, min_fit_clients=2, min_available_clients=2, min_fit_results=2)
    coordinator, server, target = start(model_path, tmp_path, strategy, rounds=1, round_timeout=1.5)
    coordinator.work_for("ghost-seen")  # counts as available, never reports
    before = dict(coordinator.parameters)
    stop = threading.Event()
    client = FederatedClient(channel(target), "dev", KeyPair.generate(), (x[:40], y[:40]), ClientOptions(token=TOKEN))
    coordinator.store.enrol("ghost-seen", KeyPair.generate().public_bytes, {})
    thread = threading.Thread(target=client.run, args=(stop,))
    thread.start()
    runner = threading.Thread(target=coordinator.run, args=(stop,))
    runner.start()
    try:
        deadline = time.time() + 30
        while time.time() < deadline and not coordinator.store.history():
            time.sleep(0.05)
        first = coordinator.store.history()[0]
        assert first.status == "failed" and "need at least 2" in first.reason
        assert coordinator.store.latest_model()[0] == 0
        assert all(np.array_equal(coordinator.parameters[k], v) for k, v in before.items())
    finally:
        stop.set()
        thread.join(10)
        runner.join(10)
        server.stop(0)


def test_evaluation_rounds_report_example_weighted_metrics(model_path, tmp_path):
    from edgerun.federated.codec import decode_arrays

    x, y, x_test, y_test = digits()
    strategy = FedAvg(fraction_fit=1.0, min_fit_clients=2, min_available_clients=2, fraction_evaluate=1.0,
                      min_evaluate_clients=2, local_epochs=1, batch_size=16, client_lr=0.1)
    coordinator, server, target = start(model_path, tmp_path, strategy, rounds=2, round_timeout=60,
                                        evaluate_every=1)
    held_out = [(x_test[:100], y_test[:100]), (x_test[100:250], y_test[100:250])]
    clients = [FederatedClient(channel(target), f"dev{i}", KeyPair.generate(), (x[i * 200:(i + 1) * 200],
                               y[i * 200:(i + 1) * 200]), ClientOptions(token=TOKEN), eval_data=held_out[i])
               for i in range(2)]
    run_rounds(coordinator, server, clients)
    assert all(c.evaluations_done == [1, 2] for c in clients)
    store = coordinator.store
    params = decode_arrays(store.model(1), coordinator.spec)
    correct = total = 0
    loss = 0.0
    for xs, ys in held_out:  # the version-1 model by hand
        h = np.maximum(xs @ params["fc0.weight"].T + params["fc0.bias"], 0)
        z = h @ params["fc1.weight"].T + params["fc1.bias"]
        z = z.astype(np.float64) - z.max(1, keepdims=True)
        log_p = z - np.log(np.exp(z).sum(1, keepdims=True))
        correct += np.sum(z.argmax(1) == ys)
        loss += -np.sum(log_p[np.arange(len(ys)), ys])
        total += len(ys)
    evaluation = store.get_state("evaluation/1")
    assert evaluation["num_examples"] == total
    assert evaluation["accuracy"] == pytest.approx(correct / total, abs=1e-9)
    assert evaluation["loss"] == pytest.approx(loss / total, rel=1e-5)


def test_server_optimizer_state_survives_a_restart(model_path, tmp_path):
    from edgerun.federated.strategies import FedAdam

    x, y, _, _ = digits()
    strategy = FedAdam(fraction_fit=1.0, min_fit_clients=1, min_available_clients=1)
    coordinator, server, target = start(model_path, tmp_path, strategy, rounds=1)
    client = FederatedClient(channel(target), "dev", KeyPair.generate(), (x[:64], y[:64]), ClientOptions(token=TOKEN))
    run_rounds(coordinator, server, [client])
    after_round = strategy.state()
    assert any(np.any(a != 0) for a in after_round["m"])
    fresh = FedAdam(fraction_fit=1.0, min_fit_clients=1, min_available_clients=1)
    Coordinator(model_path, Store(tmp_path / "c.db"), fresh,
                CoordinatorConfig(rounds=2, enrol_token=TOKEN, secagg=None), KeyPair.generate())
    for key in ("m", "v"):
        assert all(np.array_equal(a, b) for a, b in zip(fresh.state()[key], after_round[key], strict=True))


def test_an_allow_listed_key_enrols_without_the_token(model_path, tmp_path):
    device_key = KeyPair.generate()
    coordinator = Coordinator(model_path, Store(tmp_path / "c.db"), FedAvg(min_fit_clients=1, min_available_clients=1),
                              CoordinatorConfig(rounds=1, allowed_keys={device_key.public_bytes}, secagg=None),
                              KeyPair.generate())
    server, port = serve(coordinator)
    try:
        allowed = FederatedClient(channel(f"127.0.0.1:{port}"), "pi", device_key, (None, None),
                                  ClientOptions(max_retries=0))
        allowed.enrol()
        other = FederatedClient(channel(f"127.0.0.1:{port}"), "other", KeyPair.generate(), (None, None),
                                ClientOptions(max_retries=0))
        assert code_of(other.enrol) == grpc.StatusCode.PERMISSION_DENIED
        assert [c.client_id for c in coordinator.store.clients()] == ["pi"]
    finally:
        server.stop(0)


def test_a_client_refuses_payloads_not_signed_by_its_coordinator(model_path, tmp_path):
    from edgerun.federated.auth import AuthError

    strategy = FedAvg(min_fit_clients=1, min_available_clients=1)
    coordinator, server, target = start(model_path, tmp_path, strategy, rounds=1)
    try:
        device = Device(target, "dev")
        device.client.enrol()
        assert len(device.client._download(pb.DownloadRequest.PARAMETERS, 0)) > 0  # genuine: accepted
        device.client.coordinator_key = KeyPair.generate().public_bytes  # an impostor's key
        for kind in (pb.DownloadRequest.PARAMETERS, pb.DownloadRequest.MODEL):
            with pytest.raises(AuthError, match="signature does not verify"):
                device.client._download(kind, 0)
    finally:
        server.stop(0)


def test_models_and_updates_over_grpcs_4_mib_default_travel_in_chunks(tmp_path):
    big = save_model(make_trainable(mlp((64, 2048, 600, 10), seed=0), optimizer=("sgd", {"lr": 0.01})),
                     tmp_path / "big.train.erm")
    assert big.stat().st_size > 4 << 20
    x, y, _, _ = digits()
    strategy = FedAvg(fraction_fit=1.0, min_fit_clients=1, min_available_clients=1, batch_size=32)
    coordinator, server, target = start(big, tmp_path, strategy, rounds=1, round_timeout=120)
    client = FederatedClient(channel(target), "dev", KeyPair.generate(), (x[:64], y[:64]), ClientOptions(token=TOKEN))
    run_rounds(coordinator, server, [client])
    assert client.rounds_done == [1]
    assert len(coordinator.store.updates(1)[0].blob) > 4 << 20


def test_an_aggregate_that_overflows_fails_the_round_and_keeps_the_model(model_path, tmp_path):
    strategy = FedAvg(fraction_fit=1.0, min_fit_clients=1, min_available_clients=1)
    # No update bound (it would clip these deltas, see test_attacks): the last line of defence alone.
    coordinator, server, target = start(model_path, tmp_path, strategy, rounds=2, round_timeout=30,
                                        max_update_norm=None)
    try:
        device = Device(target, "evil")
        device.client.enrol()
        coordinator.work_for("evil")
        stop = threading.Event()
        runner = threading.Thread(target=coordinator.run, args=(stop,), daemon=True)
        runner.start()
        huge = {k: np.full_like(v, np.finfo(np.float32).max) for k, v in coordinator.parameters.items()}
        for round_number in (1, 2):  # each delta is finite; the second sum overflows float32
            while getattr(coordinator.store.current_round(), "round", None) != round_number:
                runner.join(0.05)
            assert device.upload(round_number, encode_arrays(huge)).accepted
            while coordinator.store.round(round_number).status in ("open", "collecting"):
                runner.join(0.05)
        rounds = {r.round: r for r in coordinator.store.history()}
        assert rounds[1].status == "aggregated"
        assert rounds[2].status == "failed" and "not finite" in rounds[2].reason
        assert coordinator.store.latest_model()[0] == 1
        assert all(np.isfinite(v).all() for v in coordinator.parameters.values())
        stop.set()
        runner.join(10)
    finally:
        server.stop(0)


def test_nan_timestamps_are_refused():
    from edgerun.federated.auth import AuthError, ReplayGuard, SignedFields

    with pytest.raises(AuthError, match="timestamp"):
        ReplayGuard().check(SignedFields("c", float("nan"), b"n" * 16, b""))


def test_uploads_are_authenticated_on_the_first_chunk(model_path, tmp_path):
    strategy = FedAvg(min_fit_clients=1, min_available_clients=1)
    coordinator, server, target = start(model_path, tmp_path, strategy, rounds=1)
    try:
        device = Device(target, "dev")
        device.client.enrol()

        def chunks(auth, total, data):
            header = pb.UpdateHeader(auth=auth, round=1, num_examples=1, total_size=total, sha256=sha256(b"x"))
            yield pb.UploadChunk(header=header, data=data)

        # A forged header announcing 1 TiB is refused as unauthenticated, not as too large:
        # authentication comes first, before any size is trusted or bytes are buffered.
        forged = pb.Auth(client_id="dev", timestamp=time.time(), nonce=b"n" * 16, signature=b"s" * 64)
        code = code_of(lambda: device.stub.Upload(chunks(forged, 1 << 40, b"x"), timeout=10))
        assert code == grpc.StatusCode.UNAUTHENTICATED
        signed = device.client._auth("Upload", upload_body(1, 1, {}, sha256(b"x")))
        tampered = pb.UpdateHeader(auth=signed, round=1, num_examples=1, total_size=1, sha256=sha256(b"x"))
        reply = lambda: device.stub.Upload(iter([pb.UploadChunk(header=tampered, data=b"y")]), timeout=10)  # noqa: E731
        assert code_of(reply) == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        server.stop(0)
