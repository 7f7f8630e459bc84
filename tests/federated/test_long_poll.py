"""GetWork as a long-poll, on loopback against a real coordinator (`serve()` on 127.0.0.1:0):
a held call answers as soon as there is work (a round that selected the device opens, the run
ends) or at its limit (WAIT); calls that do not ask to wait are answered at once, as before;
held calls take no thread; the long-poll path refuses and charges failed authentications as
the plain one does."""

from __future__ import annotations

import threading
import time

import grpc
import pytest

from edgerun.federated.auth import KeyPair, sha256
from edgerun.federated.client import ClientOptions, FederatedClient, channel
from edgerun.federated.coordinator import Coordinator, CoordinatorConfig
from edgerun.federated.limits import ServiceLimits
from edgerun.federated.protos import federated_pb2 as pb
from edgerun.federated.protos import federated_pb2_grpc as pb_grpc
from edgerun.federated.service import serve
from edgerun.federated.store import Store
from edgerun.federated.strategies import FedAvg
from tests.converters.training.models import digits
from tests.federated.test_rounds import TOKEN, model_path  # noqa: F401 - fixture

__all__ = ["model_path"]


def start(model_path, tmp_path, limits=None, workers=16, clients=1, **config):  # noqa: F811
    """A coordinator whose rounds select all `clients` (once that many are available), served
    on loopback; returns it, its server and its address."""
    config.setdefault("secagg", None)
    config.setdefault("rounds", 1)
    strategy = FedAvg(fraction_fit=1.0, min_fit_clients=clients, min_available_clients=clients)
    coordinator = Coordinator(model_path, Store(tmp_path / "c.db"), strategy,
                              CoordinatorConfig(enrol_token=TOKEN, **config), KeyPair.generate())
    server, port = serve(coordinator, limits=limits, workers=workers)
    return coordinator, server, f"127.0.0.1:{port}"


def stub_for(target: str) -> pb_grpc.CoordinatorStub:
    return pb_grpc.CoordinatorStub(grpc.insecure_channel(target))


def enrolled(coordinator, count, prefix="dev") -> dict[str, KeyPair]:
    keys = {f"{prefix}{i}": KeyPair.generate() for i in range(count)}
    for client_id, key in keys.items():
        coordinator.store.enrol(client_id, key.public_bytes, {})
    return keys


def request(client_id, key, wait=0.0, signature=None) -> pb.WorkRequest:
    fields = key.sign_request("GetWork", client_id, sha256(b""))
    return pb.WorkRequest(auth=pb.Auth(client_id=client_id, timestamp=fields.timestamp, nonce=fields.nonce,
                                       signature=signature or fields.signature), wait_seconds=wait)


def wait_until(condition, timeout=10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def held(server) -> int:
    return len(server.servicer.long_polls.held)


def test_a_waiting_device_gets_train_within_a_fraction_of_a_second_of_the_round_opening(model_path, tmp_path):
    coordinator, server, target = start(model_path, tmp_path, round_timeout=30)
    stop = threading.Event()
    runner = threading.Thread(target=coordinator.run, args=(stop,), daemon=True)
    try:
        (client_id, key), = enrolled(coordinator, 1).items()
        call = stub_for(target).GetWork.future(request(client_id, key, wait=20), timeout=30)
        wait_until(lambda: held(server) == 1)  # waiting, and seen: the round can select it
        runner.start()
        reply = call.result(timeout=25)
        arrived = time.time()
        opened = coordinator.store.round(1).opened_at
        assert (reply.action, reply.round) == (pb.WorkReply.TRAIN, 1)
        assert 0 <= arrived - opened < 0.5  # woken by the round, not at the end of its 20 s wait
    finally:
        stop.set()
        runner.join(10)
        server.stop(0).wait()


def test_a_waiting_call_returns_wait_at_its_limit_and_the_limit_is_capped(model_path, tmp_path):
    coordinator, server, target = start(model_path, tmp_path, limits=ServiceLimits(max_wait=0.8))
    try:
        keys = enrolled(coordinator, 3)
        stub = stub_for(target)
        timings = {}
        for client_id, wait in (("dev0", 0.4), ("dev1", 30.0)):  # 30 s asked, 0.8 s (max_wait) held
            began = time.perf_counter()
            reply = stub.GetWork(request(client_id, keys[client_id], wait=wait), timeout=10)
            timings[wait] = time.perf_counter() - began
            assert (reply.action, reply.retry_after) == (pb.WorkReply.WAIT, 0.0)  # ask again at once
        assert 0.4 <= timings[0.4] < 0.4 + 0.5
        assert 0.8 <= timings[30.0] < 0.8 + 0.5  # not the 30 s asked
        began = time.perf_counter()
        reply = stub.GetWork(request("dev2", keys["dev2"]), timeout=10)  # no wait_seconds: a client from before
        assert time.perf_counter() - began < 0.5
        assert (reply.action, reply.retry_after) == (pb.WorkReply.WAIT, 0.2)  # at once, with the poll interval
    finally:
        server.stop(0).wait()


def test_the_end_of_the_run_wakes_every_waiter_with_stop(model_path, tmp_path):
    coordinator, server, target = start(model_path, tmp_path, rounds=0)  # run() ends at once: the run is over
    try:
        stub = stub_for(target)
        calls = [stub.GetWork.future(request(c, k, wait=20), timeout=30) for c, k in enrolled(coordinator, 5).items()]
        wait_until(lambda: held(server) == 5)
        began = time.perf_counter()
        coordinator.run()
        replies = [call.result(timeout=10) for call in calls]
        assert [r.action for r in replies] == [pb.WorkReply.STOP] * 5
        assert time.perf_counter() - began < 1.0
        assert coordinator.wait_until_clients_stopped(timeout=1.0)  # each was told, so each counts as stopped
    finally:
        server.stop(0).wait()


def test_stopping_the_server_answers_held_calls_at_once(model_path, tmp_path):
    coordinator, server, target = start(model_path, tmp_path)
    stub = stub_for(target)
    calls = [stub.GetWork.future(request(c, k, wait=20), timeout=30) for c, k in enrolled(coordinator, 3).items()]
    wait_until(lambda: held(server) == 3)
    began = time.perf_counter()
    assert server.stop(grace=10).wait(timeout=5)  # not held up by the grace period
    assert time.perf_counter() - began < 2.0
    assert [(c.result().action, c.result().retry_after) for c in calls] == [(pb.WorkReply.WAIT, 1.0)] * 3


def test_an_old_style_polling_client_and_a_long_polling_one_train_together(model_path, tmp_path):
    x, y, _, _ = digits()
    coordinator, server, target = start(model_path, tmp_path, clients=2, rounds=2, round_timeout=30)
    try:
        polling = FederatedClient(channel(target), "polling", KeyPair.generate(), (x[:40], y[:40]),
                                  ClientOptions(token=TOKEN, long_poll=0))
        waiting = FederatedClient(channel(target), "waiting", KeyPair.generate(), (x[40:80], y[40:80]),
                                  ClientOptions(token=TOKEN))
        stop = threading.Event()
        threads = [threading.Thread(target=c.run, args=(stop,), daemon=True) for c in (polling, waiting)]
        for t in threads:
            t.start()
        coordinator.run()
        for t in threads:
            t.join(10)
        assert [r.status for r in coordinator.store.history()] == ["aggregated"] * 2
        assert polling.rounds_done == waiting.rounds_done == [1, 2]
        assert not any(t.is_alive() for t in threads)  # both were told to stop
    finally:
        server.stop(0).wait()


def test_a_client_stop_event_ends_its_long_poll(model_path, tmp_path):
    coordinator, server, target = start(model_path, tmp_path)
    try:
        client = FederatedClient(channel(target), "dev", KeyPair.generate(), (None, None),
                                 ClientOptions(token=TOKEN, long_poll=20))
        stop = threading.Event()
        thread = threading.Thread(target=client.run, args=(stop,), daemon=True)
        thread.start()
        wait_until(lambda: held(server) == 1)
        stop.set()
        thread.join(2.0)
        assert not thread.is_alive()
    finally:
        server.stop(0).wait()


def test_200_waiting_calls_hold_no_thread_each_and_max_waiting_bounds_them(model_path, tmp_path):
    workers = 4
    coordinator, server, target = start(model_path, tmp_path, workers=workers,
                                    limits=ServiceLimits(max_waiting=190))
    try:
        keys = enrolled(coordinator, 200)
        stub = stub_for(target)
        stub.GetWork(request("dev0", keys["dev0"]), timeout=10)  # the channel's own threads exist from here on
        before = threading.active_count()
        calls = [stub.GetWork.future(request(c, k, wait=20), timeout=30) for c, k in keys.items()]
        wait_until(lambda: held(server) == 190 and sum(c.done() for c in calls) == 10)
        answered = [c.result() for c in calls if c.done()]
        assert [(r.action, r.retry_after) for r in answered] == [(pb.WorkReply.WAIT, 1.0)] * 10  # over max_waiting
        # the worker pool (all of it) and the work watcher thread at most: no thread per held call
        assert threading.active_count() - before <= workers + 1
        time.sleep(0.3)
        assert held(server) == 190 and sum(c.done() for c in calls) == 10  # still held
    finally:
        server.stop(0).wait()


def test_a_newer_call_of_the_same_client_releases_the_older(model_path, tmp_path):
    coordinator, server, target = start(model_path, tmp_path)
    try:
        (client_id, key), = enrolled(coordinator, 1).items()
        stub = stub_for(target)
        older = stub.GetWork.future(request(client_id, key, wait=20), timeout=30)
        wait_until(lambda: held(server) == 1)
        newer = stub.GetWork.future(request(client_id, key, wait=20), timeout=30)
        assert older.result(timeout=5).action == pb.WorkReply.WAIT
        assert not newer.done() and held(server) == 1
    finally:
        server.stop(0).wait()


def test_a_held_device_stays_available_for_selection(model_path, tmp_path):
    coordinator, server, target = start(model_path, tmp_path, available_window=0.4)
    try:
        (client_id, key), = enrolled(coordinator, 1).items()
        call = stub_for(target).GetWork.future(request(client_id, key, wait=3), timeout=10)
        wait_until(lambda: held(server) == 1)
        time.sleep(1.0)  # 2.5 windows without a request
        assert coordinator.available(time.time()) == [client_id]
        assert not call.done()
    finally:
        server.stop(0).wait()


@pytest.mark.parametrize("who", ["bad signature", "unknown id"])
def test_failed_authentications_on_the_long_poll_path_are_refused_at_once_and_charged(model_path, tmp_path, who):
    coordinator, server, target = start(model_path, tmp_path, limits=ServiceLimits(peer_rate=0.01, peer_burst=3))
    try:
        keys = enrolled(coordinator, 1)
        honest = keys["dev0"]
        stub = stub_for(target)
        assert stub.GetWork(request("dev0", honest), timeout=10).action == pb.WorkReply.WAIT  # its key is in memory now
        coordinator.last_seen.clear()

        def attempt():
            forged = request("dev0", honest, wait=20, signature=b"x" * 64) if who == "bad signature" \
                else request("ghost", KeyPair.generate(), wait=20)
            began = time.perf_counter()
            with pytest.raises(grpc.RpcError) as err:
                stub.GetWork(forged, timeout=10)
            assert time.perf_counter() - began < 1.0  # refused, not held
            return err.value.code()

        codes = [attempt() for _ in range(4)]
        assert codes == [grpc.StatusCode.UNAUTHENTICATED] * 3 + [grpc.StatusCode.RESOURCE_EXHAUSTED]
        with pytest.raises(grpc.RpcError) as err:  # the address spent its failures: refused before verification
            stub.GetWork(request("dev0", honest, wait=20), timeout=10)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert held(server) == 0 and coordinator.last_seen == {}  # nothing held, nobody counted as seen
    finally:
        server.stop(0).wait()


def test_one_address_holds_at_most_waiting_per_peer_calls(model_path, tmp_path):
    coordinator, server, target = start(model_path, tmp_path, limits=ServiceLimits(waiting_per_peer=5))
    try:
        keys = enrolled(coordinator, 8)
        stub = stub_for(target)
        calls = [stub.GetWork.future(request(c, k, wait=20), timeout=30) for c, k in keys.items()]
        wait_until(lambda: held(server) == 5 and sum(c.done() for c in calls) == 3)
        answered = [c.result() for c in calls if c.done()]
        assert [(r.action, r.retry_after) for r in answered] == [(pb.WorkReply.WAIT, 1.0)] * 3
        assert dict(server.servicer.long_polls.peers) == {"127.0.0.1": 5}
    finally:
        server.stop(0).wait()
    with pytest.raises(ValueError, match="waiting_per_peer"):
        ServiceLimits(waiting_per_peer=0)


def test_a_malformed_client_id_is_refused_before_any_lookup(model_path, tmp_path):
    coordinator, server, target = start(model_path, tmp_path)
    try:
        looked_up = []
        original = coordinator.public_key_of
        coordinator.public_key_of = lambda cid: looked_up.append(cid) or original(cid)
        huge = "x" * 100_000
        with pytest.raises(grpc.RpcError) as err:
            stub_for(target).GetWork(request(huge, KeyPair.generate(), wait=5), timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED and "malformed client id" in err.value.details()
        assert looked_up == [] and huge not in coordinator._unknown
    finally:
        server.stop(0).wait()
