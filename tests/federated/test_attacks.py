""""Hold under attack", coordinator side: each attack of the issue runs on loopback against a
real coordinator (`serve()` on 127.0.0.1:0) and the healthy behaviour is asserted: honest
clients are served in bounded time while it runs, stored state is unchanged, memory stays
bounded.

1. streams that never send (or stall) hold no worker, are cancelled, and are capped per peer
   and per client; requests are rate-limited per client, failed authentications per peer
   (refused before verification once spent, logged a few times, unknown ids not re-read),
   and replayed or stale requests spend nothing of the client they claim to be;
2. one client cannot destroy or take over the model in plain rounds (update norm bound,
   capped example counts), and under secure aggregation the norm of the sum is checked;
3. the replay guard costs the same at 100,000 nonces as at 1,000, is bounded, and never
   forgets a nonce still inside its freshness window (its clock never goes back);
4. Status reveals nothing without the operator token and reads no client rows; enrolment
   fields, metrics and tokens are bounded, strict and compared in constant time.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Iterator

import grpc
import numpy as np
import pytest

from edgerun.federated.auth import MAX_SKEW_SECONDS, AuthError, KeyPair, ReplayGuard, ReplayLimit, SignedFields, sha256
from edgerun.federated.client import ClientOptions, FederatedClient, channel
from edgerun.federated.codec import encode_arrays
from edgerun.federated.coordinator import Coordinator, CoordinatorConfig
from edgerun.federated.limits import RateLimiter, ServiceLimits, Slots, peer_host
from edgerun.federated.protos import federated_pb2 as pb
from edgerun.federated.protos import federated_pb2_grpc as pb_grpc
from edgerun.federated.service import serve, upload_body
from edgerun.federated.store import Store
from edgerun.federated.strategies import FedAvg
from tests.converters.training.models import digits
from tests.federated.test_rounds import TOKEN, Device, code_of, model_path  # noqa: F401 - fixture

__all__ = ["model_path"]


def start(model_path, tmp_path, strategy, limits=None, address="127.0.0.1:0", **config):  # noqa: F811
    config.setdefault("secagg", None)
    config.setdefault("rounds", 1)
    coordinator = Coordinator(model_path, Store(tmp_path / "c.db"), strategy,
                              CoordinatorConfig(enrol_token=TOKEN, **config), KeyPair.generate())
    server, port = serve(coordinator, address=address, limits=limits)
    return coordinator, server, f"127.0.0.1:{port}"


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def signed_get_work(device, now=None) -> pb.WorkRequest:
    fields = device.client.key.sign_request("GetWork", device.client.client_id, sha256(b""), now=now)
    return pb.WorkRequest(auth=pb.Auth(client_id=fields.client_id, timestamp=fields.timestamp, nonce=fields.nonce,
                                       signature=fields.signature))


def codes_of(calls) -> dict[str, int]:
    codes: dict[str, int] = {}
    for call in calls:
        try:
            call()
            name = "OK"
        except grpc.RpcError as exc:
            name = exc.code().name
        codes[name] = codes.get(name, 0) + 1
    return codes


def timed(call) -> float:
    begin = time.perf_counter()
    call()
    return time.perf_counter() - begin


class IdleStreams:
    """The attack of item 1: keeps `count` Upload streams open that never send a message,
    opening a new one whenever one ends; counts how each ended."""

    def __init__(self, target: str, count: int) -> None:
        self.channel = grpc.insecure_channel(target)
        self.stub = pb_grpc.CoordinatorStub(self.channel)
        self.count, self.done = count, threading.Event()
        self.codes: dict[str, int] = {}
        self.opened = 0
        self._lock = threading.Lock()
        self._open = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _silent(self, ended: threading.Event) -> Iterator[pb.UploadChunk]:
        ended.wait()  # sends nothing while its call lasts
        return
        yield

    def _ended(self, future: grpc.Future, ended: threading.Event) -> None:
        ended.set()
        with self._lock:
            code = future.code().name
            self.codes[code] = self.codes.get(code, 0) + 1
            self._open -= 1

    def _run(self) -> None:
        while not self.done.is_set():
            while self._open < self.count and not self.done.is_set():
                with self._lock:
                    self._open += 1
                    self.opened += 1
                ended = threading.Event()
                call = self.stub.Upload.future(self._silent(ended), timeout=120)
                call.add_done_callback(lambda f, e=ended: self._ended(f, e))
            self.done.wait(0.02)

    def __enter__(self) -> IdleStreams:
        self.thread.start()
        time.sleep(0.3)  # let the streams open
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join(10)
        self.channel.close()  # cancels the calls still open


def fedavg(n=1):
    return FedAvg(fraction_fit=1.0, min_fit_clients=n, min_available_clients=n, local_epochs=1, batch_size=16,
                  client_lr=0.1)


# ---------------------------------------------------------------- 1. streams and rates


def test_idle_streams_hold_no_worker_and_honest_clients_finish_a_round(model_path, tmp_path):
    limits = ServiceLimits(header_timeout=1.0, streams_per_peer=64)
    coordinator, server, target = start(model_path, tmp_path, fedavg(), limits=limits)
    x, y, _, _ = digits()
    honest = FederatedClient(channel(target), "honest", KeyPair.generate(), (x[:100], y[:100]),
                             ClientOptions(token=TOKEN, max_retries=0))
    honest.enrol()
    try:
        with IdleStreams(target, count=40) as attack:  # 40 idle streams > the 16 workers
            get_work = lambda: honest.stub.GetWork(  # noqa: E731
                pb.WorkRequest(auth=honest._auth("GetWork", b"")), timeout=5)
            status = lambda: honest.stub.Status(pb.StatusRequest(), timeout=5)  # noqa: E731
            latencies = [timed(get_work) for _ in range(20)] + [timed(status) for _ in range(20)]
            assert max(latencies) < 2.0, latencies
            runner = threading.Thread(target=coordinator.run, daemon=True)
            runner.start()
            honest.run()  # enrol, train, upload and stop, all while the streams keep coming
            runner.join(30)
            assert [r.status for r in coordinator.store.history()] == ["aggregated"]
            deadline = time.time() + 10
            while attack.codes.get("DEADLINE_EXCEEDED", 0) < 40 and time.time() < deadline:
                time.sleep(0.05)
            assert attack.codes.get("DEADLINE_EXCEEDED", 0) >= 40  # each was cancelled at its header deadline
        assert honest.rounds_done == [1]
        deadline = time.time() + 5
        while server.servicer.peer_streams.held("127.0.0.1") and time.time() < deadline:
            time.sleep(0.05)
        assert server.servicer.peer_streams.held("127.0.0.1") == 0  # every slot was given back
    finally:
        server.stop(0)


def test_streams_beyond_the_peer_cap_are_refused_at_once(model_path, tmp_path):
    limits = ServiceLimits(header_timeout=30.0, streams_per_peer=8)
    coordinator, server, target = start(model_path, tmp_path, fedavg(), limits=limits)
    try:
        with IdleStreams(target, count=8):
            stub = pb_grpc.CoordinatorStub(channel(target))
            began = time.perf_counter()
            code = code_of(lambda: stub.Upload(iter([]), timeout=10))
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and time.perf_counter() - began < 2.0
    finally:
        server.stop(0)


def test_a_client_stalling_after_its_header_is_capped_and_cancelled(model_path, tmp_path):
    limits = ServiceLimits(idle_timeout=1.0, streams_per_client=2)
    coordinator, server, target = start(model_path, tmp_path, fedavg(), limits=limits)
    try:
        device = Device(target, "staller")
        device.client.enrol()
        release = threading.Event()

        def stalled() -> Iterator[pb.UploadChunk]:
            blob = b"x" * 100
            body = upload_body(1, 1, {}, sha256(blob))
            header = pb.UpdateHeader(auth=device.client._auth("Upload", body), round=1, num_examples=1,
                                     total_size=len(blob), sha256=sha256(blob))
            yield pb.UploadChunk(header=header, data=blob[:10])
            release.wait(20)

        calls = [device.stub.Upload.future(stalled(), timeout=20) for _ in range(2)]
        time.sleep(0.3)
        third = device.stub.Upload.future(stalled(), timeout=20)
        assert third.exception(10).code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert {c.exception(10).code() for c in calls} == {grpc.StatusCode.DEADLINE_EXCEEDED}  # idle_timeout
        release.set()
        deadline = time.time() + 5
        while server.servicer.client_streams.held("staller") and time.time() < deadline:
            time.sleep(0.05)
        assert server.servicer.client_streams.held("staller") == 0
    finally:
        server.stop(0)


def test_one_client_flooding_requests_is_rate_limited_and_others_are_served(model_path, tmp_path):
    limits = ServiceLimits(client_rate=20.0, client_burst=20.0)
    coordinator, server, target = start(model_path, tmp_path, fedavg(), limits=limits)
    try:
        flooder, honest = Device(target, "flooder"), Device(target, "honest")
        flooder.client.enrol()
        honest.client.enrol()
        codes = []
        for _ in range(100):
            try:
                flooder.stub.GetWork(pb.WorkRequest(auth=flooder.client._auth("GetWork", b"")), timeout=5)
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as exc:
                codes.append(exc.code())
        assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) >= 50
        assert set(codes) == {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
        for _ in range(10):  # another client's budget is its own
            assert timed(lambda: honest.stub.GetWork(
                pb.WorkRequest(auth=honest.client._auth("GetWork", b"")), timeout=5)) < 2.0
    finally:
        server.stop(0)


@pytest.mark.skipif(not _ipv6_loopback(), reason="needs ::1 to tell the honest client's address apart")
def test_failed_authentications_are_rate_limited_per_address_and_honest_clients_are_served(
        model_path, tmp_path, caplog):
    # Loopback peers all come from 127.0.0.1: the server listens on both families, the
    # attacker connects over IPv4 and the honest client from ::1, another address.
    limits = ServiceLimits(peer_rate=5.0, peer_burst=50.0)
    coordinator, server, target = start(model_path, tmp_path, fedavg(), limits=limits, address="[::]:0")
    honest = Device(target.replace("127.0.0.1", "[::1]"), "honest")
    attacker = Device(target, "attacker")  # never enrolled; its channel is the flood's
    lookups = []
    store_client = coordinator.store.client
    coordinator.store.client = lambda cid: lookups.append(cid) or store_client(cid)
    try:
        honest.client.enrol()
        honest_work = lambda: honest.stub.GetWork(signed_get_work(honest), timeout=5)  # noqa: E731
        honest_work()
        forged = pb.Auth(client_id="honest", timestamp=time.time(), nonce=os.urandom(16), signature=b"s" * 64)
        unknown = signed_get_work(attacker)  # a valid signature by a key nobody enrolled

        def flood(request_for):
            return codes_of(lambda: attacker.stub.GetWork(request_for(), timeout=5) for _ in range(400))

        results, latencies = {}, []
        with caplog.at_level(logging.WARNING, logger="edgerun.federated"):
            threads = [threading.Thread(target=lambda k=k, f=f: results.__setitem__(k, flood(f)))
                       for k, f in (("unknown", lambda: unknown),
                                    ("forged", lambda: pb.WorkRequest(auth=forged)))]
            for t in threads:
                t.start()
            while any(t.is_alive() for t in threads):
                latencies.append(timed(honest_work))  # honest requests while the flood runs, ...
                time.sleep(0.05)  # ... within the honest client's own rate
            for t in threads:
                t.join()
        total = {code: results["unknown"].get(code, 0) + results["forged"].get(code, 0)
                 for code in ("UNAUTHENTICATED", "RESOURCE_EXHAUSTED")}
        assert sum(total.values()) == 800, results
        assert total["UNAUTHENTICATED"] <= 50 + 5 * 10, results  # the burst, and what refilled meanwhile
        assert total["RESOURCE_EXHAUSTED"] >= 600, results
        assert latencies and max(latencies) < 2.0, latencies
        assert lookups.count("attacker") <= 2, lookups.count("attacker")  # unknown ids are not read each time
        refused = [r for r in caplog.records if "refused" in r.getMessage()]
        assert len(refused) <= server.servicer.refusal_log.per_window + 2, len(refused)
        late = Device(target.replace("127.0.0.1", "[::1]"), "late")  # an id found unknown (and cached) ...
        assert code_of(lambda: late.stub.GetWork(signed_get_work(late), timeout=5)) == grpc.StatusCode.UNAUTHENTICATED
        late.client.enrol()
        late.stub.GetWork(signed_get_work(late), timeout=5)  # ... is served as soon as it enrols
    finally:
        server.stop(0)


def test_replayed_and_stale_requests_do_not_spend_the_victims_budget(model_path, tmp_path):
    limits = ServiceLimits(client_rate=1.0, client_burst=5.0, peer_burst=1000.0)
    coordinator, server, target = start(model_path, tmp_path, fedavg(), limits=limits)
    try:
        victim = Device(target, "victim")
        victim.client.enrol()
        captured = signed_get_work(victim)
        victim.stub.GetWork(captured, timeout=5)  # the victim's own request, seen on the wire
        replays = codes_of(lambda: victim.stub.GetWork(captured, timeout=5) for _ in range(150))
        stale = codes_of(lambda: victim.stub.GetWork(signed_get_work(victim, now=time.time() - MAX_SKEW_SECONDS - 10),
                                                      timeout=5) for _ in range(20))
        assert replays == {"UNAUTHENTICATED": 150} and stale == {"UNAUTHENTICATED": 20}
        fresh = codes_of(lambda: victim.stub.GetWork(signed_get_work(victim), timeout=5) for _ in range(4))
        assert fresh == {"OK": 4}  # the rest of its burst: nothing was spent by the replays
    finally:
        server.stop(0)


def test_rate_limiter_and_slots_bound_their_tables():
    now = [0.0]
    limiter = RateLimiter(rate=2.0, burst=3.0, max_keys=10, clock=lambda: now[0])
    assert [limiter.allow("a") for _ in range(4)] == [True, True, True, False]
    now[0] += 0.5  # one token back
    assert [limiter.allow("a"), limiter.allow("a")] == [True, False]
    for i in range(100):
        limiter.allow(f"k{i}")
    assert len(limiter) == 10
    slots = Slots(2)
    assert [slots.acquire("p"), slots.acquire("p"), slots.acquire("p")] == [True, True, False]
    slots.release("p")
    slots.release("p")
    assert slots.held("p") == 0 and slots._held == {}
    assert peer_host("ipv4:10.0.0.7:5123") == "10.0.0.7" and peer_host("ipv6:[::1]:5123") == "::1"
    assert peer_host("ipv6:%5B::1%5D:5123") == "::1"  # grpc.aio's form


# ---------------------------------------------------------------- 2. one bad client in a round


def _norm(a: dict, b: dict) -> float:
    return math.sqrt(sum(float(np.sum((a[k].astype(np.float64) - b[k]) ** 2)) for k in a))


def _play_round(coordinator, runner, evil, round_number, delta, num_examples):
    while getattr(coordinator.store.current_round(), "round", None) != round_number:
        runner.join(0.05)
    assert evil.upload(round_number, encode_arrays(delta), num_examples=num_examples).accepted
    while coordinator.store.round(round_number).status in ("open", "collecting"):
        runner.join(0.05)
    return coordinator.store.round(round_number)


def test_one_client_can_neither_destroy_nor_take_over_the_model(model_path, tmp_path):
    x, y, _, _ = digits()
    bound = 10.0
    coordinator, server, target = start(model_path, tmp_path, fedavg(2), rounds=2, round_timeout=60,
                                        max_update_norm=bound)
    stop = threading.Event()
    honest = FederatedClient(channel(target), "honest", KeyPair.generate(), (x[:200], y[:200]),
                             ClientOptions(token=TOKEN))
    evil = Device(target, "evil")
    try:
        evil.client.enrol()
        honest.enrol()
        coordinator.work_for("evil")
        runner = threading.Thread(target=coordinator.run, args=(stop,), daemon=True)
        runner.start()
        worker = threading.Thread(target=honest.run, args=(stop,), daemon=True)
        worker.start()
        spec = coordinator.parameters
        before = dict(coordinator.parameters)
        huge = {k: np.full_like(v, 1e30) for k, v in spec.items()}  # finite, so it is accepted ...
        first = _play_round(coordinator, runner, evil, 1, huge, 10)
        assert first.status == "aggregated" and first.metrics["clipped"] >= 1  # ... and clipped
        assert _norm(coordinator.parameters, before) <= bound * (1 + 1e-6)
        after_first = dict(coordinator.parameters)
        shift = {k: np.full_like(v, 5.0) for k, v in spec.items()}
        second = _play_round(coordinator, runner, evil, 2, shift, 2**62)  # the takeover attempt
        assert second.status == "aggregated"  # before the bound: failed with 0 usable updates
        assert second.metrics["examples_capped"] == 1 and second.metrics["clipped"] >= 1
        moved = {k: coordinator.parameters[k].astype(np.float64) - after_first[k] for k in spec}
        assert max(float(np.abs(m).max()) for m in moved.values()) < 0.5  # not +5.0 everywhere
        assert _norm(coordinator.parameters, after_first) <= bound * (1 + 1e-6)
        assert all(np.isfinite(v).all() for v in coordinator.parameters.values())
        assert second.metrics["num_examples"] <= coordinator.config.max_examples + 200
    finally:
        stop.set()
        server.stop(0)


def test_a_secure_round_whose_sum_exceeds_the_bound_fails_and_keeps_the_model(model_path, tmp_path):
    from edgerun.federated.secagg.options import SecAggOptions

    class Cheater(FederatedClient):
        """From round 2 on, skips its clipping: masks a delta a thousand times too large."""

        def _secure_upload(self, work, config, delta, num_examples):
            scale = 1000.0 if work.round >= 2 else 1.0
            super()._secure_upload(work, config, [d * scale for d in delta], num_examples)

    x, y, _, _ = digits()
    coordinator, server, target = start(model_path, tmp_path, fedavg(3), rounds=2, round_timeout=60,
                                        secagg=SecAggOptions(stage_timeout=5.0), max_update_norm=1.0)
    stop = threading.Event()
    kinds = [Cheater, FederatedClient, FederatedClient]
    clients = [kind(channel(target), f"dev{i}", KeyPair.generate(), (x[i * 200:(i + 1) * 200],
                    y[i * 200:(i + 1) * 200]), ClientOptions(token=TOKEN)) for i, kind in enumerate(kinds)]
    threads = [threading.Thread(target=c.run, args=(stop,), daemon=True) for c in clients]
    try:
        for t in threads:
            t.start()
        runner = threading.Thread(target=coordinator.run, args=(stop,), daemon=True)
        runner.start()
        while not coordinator.store.history():
            runner.join(0.05)
        honest_round = coordinator.store.history()[0]  # every client clipped: the check passes
        assert honest_round.status == "aggregated", honest_round.reason
        assert honest_round.metrics["sum_norm"] <= honest_round.metrics["sum_norm_bound"]
        version, kept = coordinator.version, dict(coordinator.parameters)
        while len(coordinator.store.history()) < 2:  # round 2: one client cheats
            runner.join(0.05)
        cheated = coordinator.store.history()[1]
        assert cheated.status == "failed" and "exceeds" in cheated.reason
        assert coordinator.version == version
        assert all(np.array_equal(coordinator.parameters[k], v) for k, v in kept.items())
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        server.stop(0)


# ---------------------------------------------------------------- 3. the replay guard


def _fill(guard: ReplayGuard, count: int, now: float) -> None:
    for i in range(count):
        guard.check(SignedFields(f"c{i % 1000}", now - (i % 200), os.urandom(16), b""), now=now)


def test_replay_checks_cost_the_same_at_100000_nonces():
    now = 1_000_000.0
    small, large = ReplayGuard(), ReplayGuard()
    _fill(small, 1_000, now)
    _fill(large, 100_000, now)

    def per_check(guard):
        fields = [SignedFields("probe", now, os.urandom(16), b"") for _ in range(2000)]
        begin = time.perf_counter()
        for f in fields:
            guard.check(f, now=now)
        return (time.perf_counter() - begin) / len(fields)

    ratio = min(per_check(large) for _ in range(3)) / min(per_check(small) for _ in range(3))
    assert ratio < 4, ratio  # the scan it replaces: 60x (32 us at 1,000, 1.95 ms at 100,000)


def test_the_replay_guard_forgets_in_order_and_bounds_each_client():
    guard = ReplayGuard(max_per_client=100)
    now = 1_000_000.0
    for i in range(100):
        guard.check(SignedFields("greedy", now, i.to_bytes(16, "little"), b""), now=now)
    with pytest.raises(ReplayLimit):
        guard.check(SignedFields("greedy", now, b"x" * 16, b""), now=now)
    guard.check(SignedFields("other", now, b"x" * 16, b""), now=now)  # other clients unaffected
    assert len(guard) == 101
    later = now + MAX_SKEW_SECONDS + 1
    guard.check(SignedFields("greedy", later, b"y" * 16, b""), now=later)  # the old ones expired
    assert len(guard) == 1
    for ahead in (6.0, 600.0):  # client-chosen future timestamps cannot pin nonces for 600 s
        with pytest.raises(AuthError, match="timestamp"):
            guard.check(SignedFields("c", later + ahead, b"z" * 16, b""), now=later)
    guard.check(SignedFields("c", later + 3.0, b"z" * 16, b""), now=later)  # a few seconds of drift are fine


def test_a_nonce_inside_its_freshness_window_is_never_forgotten():
    guard = ReplayGuard()
    t = 1_000_000.0
    guard.check(SignedFields("c", t, b"n" * 16, b""), now=t)
    guard.check(SignedFields("c", t + MAX_SKEW_SECONDS + 1, b"m" * 16, b""), now=t + MAX_SKEW_SECONDS + 1)
    assert len(guard) == 1  # "n" expired and was forgotten ...
    with pytest.raises(AuthError, match="timestamp"):  # ... and a check with an older clock reading
        guard.check(SignedFields("c", t, b"n" * 16, b""), now=t + MAX_SKEW_SECONDS - 1)  # cannot replay it
    rng = np.random.default_rng(0)
    for _ in range(2000):  # at the boundary, whatever order the clock readings arrive in
        guard = ReplayGuard()
        ts = float(rng.uniform(1e9, 2e9))
        nonce = os.urandom(16)
        guard.check(SignedFields("c", ts, nonce, b""), now=ts)
        readings = ts + MAX_SKEW_SECONDS + rng.uniform(-1e-6, 1e-6, size=2)
        guard.check(SignedFields("c", ts + 1, os.urandom(16), b""), now=float(readings[0]))
        with pytest.raises(AuthError):
            guard.check(SignedFields("c", ts, nonce, b""), now=float(readings[1]))


def test_the_replay_guard_charges_only_fresh_unseen_requests_once():
    guard, now, charged = ReplayGuard(), 1_000_000.0, []
    charge = lambda: charged.append(1)  # noqa: E731
    fields = SignedFields("c", now, b"n" * 16, b"")
    guard.check(fields, now=now, charge=charge)
    for bad in (fields, SignedFields("c", now - MAX_SKEW_SECONDS - 1, b"o" * 16, b""),
                SignedFields("c", now + 60, b"p" * 16, b"")):
        with pytest.raises(AuthError):
            guard.check(bad, now=now, charge=charge)
    assert len(charged) == 1

    def refuse():
        raise RuntimeError("over its rate")

    with pytest.raises(RuntimeError):
        guard.check(SignedFields("c", now, b"q" * 16, b""), now=now, charge=refuse)
    guard.check(SignedFields("c", now, b"q" * 16, b""), now=now, charge=charge)  # refused: not remembered
    assert len(charged) == 2 and len(guard) == 2


def test_future_timestamps_and_floods_over_grpc_leave_the_guard_bounded(model_path, tmp_path):
    limits = ServiceLimits(client_rate=10_000.0, client_burst=10_000.0)
    coordinator, server, target = start(model_path, tmp_path, fedavg(), limits=limits)
    server.servicer.guard = ReplayGuard(max_per_client=50)
    try:
        attacker, honest = Device(target, "attacker"), Device(target, "honest")
        attacker.client.enrol()
        honest.client.enrol()

        def get_work(device, now=None):
            fields = device.client.key.sign_request("GetWork", device.client.client_id, sha256(b""), now=now)
            auth = pb.Auth(client_id=fields.client_id, timestamp=fields.timestamp, nonce=fields.nonce,
                           signature=fields.signature)
            return device.stub.GetWork(pb.WorkRequest(auth=auth), timeout=5)

        future = code_of(lambda: get_work(attacker, now=time.time() + 600))
        assert future == grpc.StatusCode.UNAUTHENTICATED and len(server.servicer.guard) == 0
        codes = []
        for _ in range(120):
            try:
                get_work(attacker)
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as exc:
                codes.append(exc.code())
        assert codes.count(grpc.StatusCode.OK) == 50 and codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 70
        assert timed(lambda: get_work(honest)) < 2.0
        assert len(server.servicer.guard) == 51
    finally:
        server.stop(0)


# ---------------------------------------------------------------- 4. looser edges


def test_status_reveals_nothing_without_the_operator_token_and_reads_no_client_rows(model_path, tmp_path,
                                                                                    monkeypatch):
    coordinator, server, target = start(model_path, tmp_path, fedavg(), operator_token="op-secret")
    try:
        for i in range(200):
            coordinator.store.enrol(f"c{i}", KeyPair.generate().public_bytes, {"k": "v" * 1000})
        monkeypatch.setattr(coordinator.store, "clients", lambda: pytest.fail("Status read every client row"))
        stub = pb_grpc.CoordinatorStub(channel(target))
        anyone = json.loads(stub.Status(pb.StatusRequest(), timeout=5).json)
        assert anyone == {"alive": True, "finished": False}
        wrong = json.loads(stub.Status(pb.StatusRequest(), metadata=[("authorization", "Bearer nope")],
                                       timeout=5).json)
        assert wrong == anyone
        operator = [("authorization", "Bearer op-secret")]
        full = json.loads(stub.Status(pb.StatusRequest(), metadata=operator, timeout=5).json)
        assert full["clients"] == 200 and full["history"] == [] and full["rounds"] == {}
        latency = min(timed(lambda: stub.Status(pb.StatusRequest(), metadata=operator, timeout=5))
                      for _ in range(10))
        assert latency < 0.05, latency
    finally:
        server.stop(0)


def test_oversized_enrolment_fields_are_refused_and_store_nothing(model_path, tmp_path):
    coordinator, server, target = start(model_path, tmp_path, fedavg())
    try:
        def enrol(client_id, info):
            device = Device(target, client_id)
            device.client.options.info = info
            return code_of(device.client.enrol)

        assert enrol("x" * (1 << 20), {}) == grpc.StatusCode.RESOURCE_EXHAUSTED  # 1 MiB, twice: past the limit
        assert enrol("x" * 129, {}) == grpc.StatusCode.INVALID_ARGUMENT
        assert enrol("bad id", {}) == grpc.StatusCode.INVALID_ARGUMENT
        assert enrol("big-info", {"k": "v" * 1_500_000}) == grpc.StatusCode.INVALID_ARGUMENT
        assert enrol("many", {f"k{i}": "v" for i in range(33)}) == grpc.StatusCode.INVALID_ARGUMENT
        huge = enrol("huge-info", {f"k{i}": "v" * 1000 for i in range(3500)})  # 3.5 MB: past the message limit
        assert huge == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert coordinator.store.client_count() == 0
        fine = Device(target, "pi-7.lab:a@b")
        fine.client.options.info = {"model": "rpi4"}
        fine.client.enrol()
        assert coordinator.store.client_ids() == ["pi-7.lab:a@b"]
    finally:
        server.stop(0)


def test_non_finite_metrics_are_refused_and_the_store_holds_strict_json(model_path, tmp_path):
    coordinator, server, target = start(model_path, tmp_path, fedavg())
    try:
        device = Device(target, "dev")
        device.client.enrol()
        coordinator.work_for("dev")
        runner = threading.Thread(target=coordinator.run, daemon=True)
        runner.start()
        while coordinator.store.current_round() is None:
            runner.join(0.05)
        blob = encode_arrays({k: np.zeros_like(v) for k, v in coordinator.parameters.items()})
        for value in (float("nan"), float("inf")):
            metrics = {"loss": value}
            auth = device.client._auth("Upload", upload_body(1, 10, metrics, sha256(blob)))
            header = pb.UpdateHeader(auth=auth, round=1, num_examples=10, metrics=metrics, total_size=len(blob),
                                     sha256=sha256(blob))
            with pytest.raises(grpc.RpcError) as err:
                device.stub.Upload(iter([pb.UploadChunk(header=header, data=blob)]), timeout=10)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "finite" in err.value.details()
        assert coordinator.store.reported(1) == []
        assert device.upload(1, blob).accepted
        runner.join(30)
        with pytest.raises(ValueError, match="JSON"):
            coordinator.store.put_state("x", {"v": float("nan")})
    finally:
        server.stop(0)
    strict = lambda text: json.loads(text, parse_constant=lambda c: pytest.fail(f"stored {c}"))  # noqa: E731
    import sqlite3

    with sqlite3.connect(tmp_path / "c.db") as db:
        for (text,) in db.execute("SELECT metrics FROM updates UNION ALL SELECT metrics FROM rounds "
                                  "UNION ALL SELECT value FROM state UNION ALL SELECT info FROM clients"):
            strict(text)


def test_enrolment_tokens_come_from_a_file_or_the_environment_and_compare_in_constant_time(
        model_path, tmp_path, monkeypatch, caplog):
    import hmac

    from edgerun.federated import coordinator as coordinator_module
    from edgerun.federated.cli import TOKEN_ENV, read_secret

    (tmp_path / "token").write_text("from-file\n")
    monkeypatch.setenv(TOKEN_ENV, "from-env")
    assert read_secret(tmp_path / "token", TOKEN_ENV, "from-flag", "--token") == "from-file"
    assert read_secret(None, TOKEN_ENV, "from-flag", "--token") == "from-env"
    monkeypatch.delenv(TOKEN_ENV)
    with caplog.at_level("WARNING"):
        assert read_secret(None, TOKEN_ENV, "from-flag", "--token") == "from-flag"
    assert "process list" in caplog.text
    compared, original = [], hmac.compare_digest
    monkeypatch.setattr(coordinator_module.hmac, "compare_digest",
                        lambda a, b: compared.append((a, b)) or original(a, b))
    coordinator, server, target = start(model_path, tmp_path, fedavg())
    try:
        stranger = Device(target, "stranger")
        stranger.client.options.token = "wrong"
        assert code_of(stranger.client.enrol) == grpc.StatusCode.PERMISSION_DENIED
        assert compared == [(b"wrong", TOKEN.encode())]
    finally:
        server.stop(0)
