"""Attacks on a running `edgerun serve`, each returning figures: what was tried, refused and failed,
the latency of honest clients while it ran, and the worker's resident memory (RSS from /proc).

Families (see the "Hold under attack" issue):

  body_flood         many connections each announcing a large REST body and sending all but its
                     last byte, then holding it: without a body budget every body sits in memory
                     at once. Refused = answered 503 before the body; accepted = the body was read.
  body_hold          a few connections each announcing a large REST body and sending none of it,
                     renewed as the server closes them: without a per-address share of the body
                     budget and a minimum body rate they hold the whole budget for the body
                     timeout, and honest bodies over 64 KiB get 503. Honest clients here send
                     ~100 KiB bodies.
  body_trickle       one REST body sent at a given rate (below the server's minimum: it must be
                     answered 408 within seconds, not at the body timeout; above it: 200).
  connection_flood   many idle HTTP connections from one address, reopened as the server closes
                     them: without a per-client cap they take every slot and new clients get 503.
  long_strings       gRPC and REST requests naming a model with a very long string: error messages
                     that echo it whole overflow gRPC's 16 KiB metadata limit (RESOURCE_EXHAUSTED
                     instead of NOT_FOUND) and each such request used to leave memory behind.
  grpc_large_messages  concurrent gRPC calls each carrying a large message: gRPC reads a whole
                     message before any handler runs, so these are bounded by --max-message-size
                     x --grpc-max-concurrent-rpcs only; the figures show the cost (no fix here).
  unauthenticated    with a token configured, calls without it: gRPC health Check of a model,
                     gRPC metadata, /metrics, and a REST request announcing a 50 MB body (it must
                     get 401 before the body is sent).

Honest clients connect from HONEST_ADDRESS (another loopback address, so a per-address cap on the
attacker does not hit them), alternating a REST inference on a fresh connection and a gRPC one.
`run_all(duration_s)` starts a server per family (a model repository with the test MLP) and runs
each for about `duration_s`; the functions also run against any server given as a `Target`
(tests/serving/test_hostile_clients.py does, with small sizes).

Linux only (/proc; 127.0.0.2 as a source address).
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
HONEST_ADDRESS = "127.0.0.2"
WARM_UP = 20  # honest requests before the worker's RSS is first read
MIB = 1 << 20


@dataclass
class Target:
    """A running server: where it listens, its worker's pid (for RSS) and its token, if any. Honest
    clients infer `model` with a zero FP32 tensor `input` of shape `shape`."""

    host: str
    http_port: int
    grpc_port: int
    worker_pid: int
    metrics_port: int = 0
    token: str | None = None
    model: str = "mlp"
    input: str = "x"
    shape: tuple[int, ...] = (1, 64)

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    def auth(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"} if self.token else {}


def rss_bytes(pid: int) -> int:
    """The resident set size of process `pid` in bytes (VmRSS). OSError if it is gone."""
    with open(f"/proc/{pid}/status") as status:
        return int(re.search(r"VmRSS:\s+(\d+) kB", status.read()).group(1)) * 1024


def worker_pid(log_text: str, index: int = 0) -> int:
    """The pid of worker `index` from a server log ('worker 0 (pid 123) serving ...')."""
    return int(re.search(rf"worker {index} \(pid (\d+)\)", log_text).group(1))


class _Sampler(threading.Thread):
    """Polls a process's RSS every `every_s` until stopped: before, peak, after (MiB)."""

    def __init__(self, pid: int, every_s: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.pid, self.every_s = pid, every_s
        self.before = self.peak = rss_bytes(pid)
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(self.every_s):
            self.peak = max(self.peak, rss_bytes(self.pid))

    def finish(self) -> dict[str, float]:
        self.stopping.set()
        self.join()
        after = rss_bytes(self.pid)
        return {"rss_before_mib": self.before / MIB, "rss_peak_mib": max(self.peak, after) / MIB,
                "rss_after_mib": after / MIB}


class _Honest(threading.Thread):
    """Honest requests back to back until stopped: REST inference on a fresh connection from
    HONEST_ADDRESS, then gRPC inference on one channel. Latencies in ms; errors counted."""

    def __init__(self, target: Target, timeout_s: float = 10.0) -> None:
        super().__init__(daemon=True)
        self.target, self.timeout_s = target, timeout_s
        self.latencies_ms: list[float] = []
        self.failures: list[str] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        import grpc
        from tritonclient.grpc import service_pb2 as pb
        from tritonclient.grpc import service_pb2_grpc as pb_grpc

        t = self.target
        x = np.zeros(t.shape, np.float32)
        body = json.dumps({"inputs": [{"name": t.input, "datatype": "FP32", "shape": list(t.shape),
                                       "data": x.ravel().tolist()}]}).encode()
        message = pb.ModelInferRequest(model_name=t.model)
        message.inputs.add(name=t.input, datatype="FP32", shape=list(t.shape))
        message.raw_input_contents.append(x.tobytes())
        with grpc.insecure_channel(t.grpc_url) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            metadata = tuple(t.auth().items())
            while not self.stopping.is_set():
                self._timed(lambda: self._rest(body))
                self._timed(lambda: stub.ModelInfer(message, timeout=self.timeout_s, metadata=metadata))

    def _rest(self, body: bytes) -> None:
        t = self.target
        with socket.create_connection((t.host, t.http_port), self.timeout_s,
                                      source_address=(HONEST_ADDRESS, 0)) as sock:
            headers = "".join(f"{k}: {v}\r\n" for k, v in t.auth().items())
            sock.sendall(f"POST /v2/models/{t.model}/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
                         f"{headers}Connection: close\r\n\r\n".encode() + body)
            status = _read_status(sock, self.timeout_s)
        if status != 200:
            raise RuntimeError(f"REST status {status}")

    def _timed(self, call: Callable[[], object]) -> None:
        start = time.perf_counter()
        try:
            call()
            self.latencies_ms.append((time.perf_counter() - start) * 1e3)
        except Exception as exc:  # noqa: BLE001 - counted and reported
            self.failures.append(str(exc)[:200])

    def finish(self) -> dict[str, object]:
        self.stopping.set()
        self.join()
        lat = np.array(self.latencies_ms or [np.nan])
        return {"honest_ok": len(self.latencies_ms), "honest_failed": len(self.failures),
                "honest_p50_ms": float(np.percentile(lat, 50)), "honest_p99_ms": float(np.percentile(lat, 99)),
                "honest_max_ms": float(lat.max()), "honest_errors": self.failures[:3]}


@contextmanager
def _observed(target: Target) -> Iterator[dict]:
    """Run honest clients and sample the worker's RSS around the block; the dict it yields gets
    their figures when the block ends."""
    figures: dict = {}
    honest = _Honest(target)
    honest.start()
    deadline = time.monotonic() + 10
    while len(honest.latencies_ms) + len(honest.failures) < WARM_UP and time.monotonic() < deadline:
        time.sleep(0.01)  # the server's first requests allocate what later ones reuse: not the attack's
    sampler = _Sampler(target.worker_pid)
    sampler.start()
    try:
        yield figures
    finally:
        figures.update(honest.finish())
        figures.update(sampler.finish())


def _read_status(sock: socket.socket, timeout_s: float) -> int | None:
    """The status code of the HTTP answer on `sock` (its body is not read), or None if the
    connection closed or reset without one, or nothing came within `timeout_s`."""
    sock.settimeout(timeout_s)
    data = b""
    try:
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                return None
            data += chunk
    except OSError:
        return None
    match = re.match(rb"HTTP/1\.[01] (\d{3})", data)
    return int(match.group(1)) if match else None


def _answered(sock: socket.socket, wait_s: float) -> bool:
    """Whether the server has sent something (or closed) on `sock` within `wait_s` (poll, not
    select: the flood holds more than 1024 descriptors)."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(wait_s * 1000))


# --- body flood -------------------------------------------------------------------------------------


@dataclass
class _BodyAttacker:
    sock: socket.socket
    outcome: str = ""  # refused / accepted / failed


def _announce(target: Target, size: int) -> _BodyAttacker:
    sock = socket.create_connection((target.host, target.http_port), 10)
    sock.sendall(f"POST /v2/models/{target.model}/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n".encode())
    return _BodyAttacker(sock)


def _send_body(attacker: _BodyAttacker, size: int, chunk: bytes) -> None:
    """All but the last byte of the body, stopping early if the server answers (a refusal)."""
    sent = 0
    try:
        while sent < size - 1:
            if _answered(attacker.sock, 0):
                break
            n = min(len(chunk), size - 1 - sent)
            attacker.sock.sendall(chunk[:n])
            sent += n
    except OSError:
        pass  # refused and closed: the status tells


def body_flood(target: Target, connections: int = 12, body_bytes: int = 60 * MIB, hold_s: float = 1.0,
               duration_s: float = 0.0) -> dict:
    """Rounds of `connections` attackers (from the default loopback address), each announcing a
    `body_bytes` body, sending all but its last byte and holding it `hold_s`, so the bodies are in
    the server at once; then the last byte, and the answer read. Rounds repeat until `duration_s`
    (at least one)."""
    counts = {"tried": 0, "refused": 0, "accepted": 0, "failed": 0}
    chunk = b"x" * MIB
    deadline = time.monotonic() + duration_s
    with _observed(target) as figures:
        while True:
            attackers = [_announce(target, body_bytes) for _ in range(connections)]
            time.sleep(0.1)  # time for a server that refuses at the headers to say so
            senders = [threading.Thread(target=_send_body, args=(a, body_bytes, chunk)) for a in attackers]
            for s in senders:
                s.start()
            for s in senders:
                s.join()
            time.sleep(hold_s)
            for a in attackers:
                counts[_finish_body(a)] += 1
            counts["tried"] += connections
            if time.monotonic() >= deadline:
                break
    return counts | figures


class _HeldConnections:
    """Keeps `wanted` attacker connections open, opening one with `open_one` for each that the
    server answers or closes. Counts into `counts`: "tried" per connection opened, "failed" per
    connection that could not be opened or got an answer not in `outcomes` (status, or None for
    closed unanswered -> count key), "held" for those still open and unanswered at the end."""

    def __init__(self, wanted: int, open_one, outcomes: dict, counts: dict) -> None:
        self.wanted, self.open_one, self.outcomes, self.counts = wanted, open_one, outcomes, counts
        self.sockets: dict[int, socket.socket] = {}
        self.poller = select.poll()

    def refill(self) -> None:
        while len(self.sockets) < self.wanted:
            self.counts["tried"] += 1
            try:
                sock = self.open_one()
            except OSError:
                self.counts["failed"] += 1
                return
            self.sockets[sock.fileno()] = sock
            self.poller.register(sock, select.POLLIN)

    def collect(self, wait_ms: int) -> int:
        """Count the answers (or closes) that arrive within `wait_ms`; how many did."""
        ready = self.poller.poll(wait_ms)
        for fd, _ in ready:
            self.poller.unregister(fd)
            with self.sockets.pop(fd) as sock:
                status = _read_status(sock, 1)
            self.counts[self.outcomes.get(status, "failed")] += 1
        return len(ready)

    def run(self, duration_s: float, settle_s: float = 0.0) -> None:
        """Hold the connections for `duration_s`, then collect answers for up to `settle_s`
        more (once when 0), count the rest as held and close them."""
        self.refill()
        deadline = time.monotonic() + duration_s
        while time.monotonic() < deadline:
            self.collect(50)
            self.refill()
        settle = time.monotonic() + settle_s
        while self.collect(1000 if settle_s else 0) and time.monotonic() < settle:
            pass
        self.counts["held"] = len(self.sockets)
        for sock in self.sockets.values():
            sock.close()


def body_hold(target: Target, connections: int = 4, body_bytes: int = 60 * MIB, duration_s: float = 3.0,
              honest_rows: int = 400) -> dict:
    """Keep `connections` connections from the default loopback address open for `duration_s`, each
    having sent the headers of a `body_bytes` body and nothing more, opening a new one for each
    that the server answers or closes, while honest clients (another address) send bodies of
    `honest_rows` x 64 zeros (400: ~100 KiB of JSON, over the 64 KiB that needs no reservation).
    Tried = connections opened; refused = answered 503; cut_off = answered 408 (too slow); closed =
    closed unanswered (past the body timeout); failed = could not connect, or another answer; held
    = open and unanswered at the end."""
    counts = {"tried": 0, "refused": 0, "cut_off": 0, "closed": 0, "failed": 0, "held": 0}
    held = _HeldConnections(connections, lambda: _announce(target, body_bytes).sock,
                            {503: "refused", 408: "cut_off", None: "closed"}, counts)
    honest_target = replace(target, shape=(honest_rows, target.shape[-1]))
    with _observed(honest_target) as figures:
        held.run(duration_s)
    return counts | figures


def infer_body(rows: int, columns: int = 64, name: str = "x") -> bytes:
    """A v2 REST inference request body: input `name`, FP32 zeros of shape [rows, columns]."""
    return json.dumps({"inputs": [{"name": name, "datatype": "FP32", "shape": [rows, columns],
                                   "data": [0.0] * (rows * columns)}]}).encode()


def body_trickle(target: Target, rows: int = 3300, rate: int = 2048, chunk_bytes: int = 1024,
                 source: str | None = None, limit_s: float = 120.0) -> dict:
    """One REST inference of `rows` x 64 zeros (3300: ~1 MiB of JSON) whose body is sent at
    `rate` bytes/s in `chunk_bytes` pieces (from `source`, an address, if given), until it is all
    sent or the server answers: status (None if closed unanswered), seconds from the headers to
    the answer, body bytes sent."""
    t = target
    body = infer_body(rows, t.shape[-1], t.input)
    headers = "".join(f"{k}: {v}\r\n" for k, v in t.auth().items())
    start = time.monotonic()
    sent = 0
    with socket.create_connection((t.host, t.http_port), 10,
                                  source_address=(source, 0) if source else None) as sock:
        sock.sendall(f"POST /v2/models/{t.model}/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
                     f"{headers}Connection: close\r\n\r\n".encode())
        try:
            while sent < len(body) and time.monotonic() - start < limit_s and not _answered(sock, 0):
                piece = body[sent:sent + chunk_bytes]
                sock.sendall(piece)
                sent += len(piece)
                wait = start + sent / rate - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
        except OSError:
            pass  # answered and closed: the status tells
        status = _read_status(sock, limit_s)
    return {"status": status, "answered_after_s": time.monotonic() - start, "sent": sent, "body_bytes": len(body)}


def _finish_body(attacker: _BodyAttacker) -> str:
    with attacker.sock as sock:
        if not _answered(sock, 0):
            try:
                sock.sendall(b"x")
            except OSError:
                pass
        status = _read_status(sock, 30)
    if status == 503:
        return "refused"
    return "accepted" if status is not None else "failed"


# --- connection flood -------------------------------------------------------------------------------


def connection_flood(target: Target, connections: int = 1030, duration_s: float = 3.0) -> dict:
    """Open `connections` idle HTTP connections from the default loopback address, then keep that
    many open for `duration_s`, opening a new one for each that the server answers or closes,
    while honest clients (another address) work. Tried = connections opened; refused = answered
    503; closed = closed unanswered (past the header timeout); failed = could not connect, or
    another answer; held = open and unanswered at the end."""
    counts = {"tried": 0, "refused": 0, "closed": 0, "failed": 0, "held": 0}
    held = _HeldConnections(connections, lambda: socket.create_connection((target.host, target.http_port), 10),
                            {503: "refused", None: "closed"}, counts)
    with _observed(target) as figures:
        held.run(duration_s, settle_s=10.0)  # answers may still be on their way at the end
    return counts | figures


# --- long strings -----------------------------------------------------------------------------------


def long_strings(target: Target, requests: int = 2000, chars: int = 100_000, duration_s: float = 0.0) -> dict:
    """gRPC ModelMetadata naming a model of `chars` characters, `requests` times (or until
    `duration_s`) on one channel, then a few of each other kind (ModelInfer, health Check, REST
    with a 10,000-character name). Refused = the right status (NOT_FOUND / 404); failed = any other;
    `longest_message` = the longest error message seen (characters)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc as pb_grpc

    name = "m" * chars
    counts = {"tried": 0, "refused": 0, "failed": 0, "longest_message": 0}
    metadata = tuple(target.auth().items())

    def expect(call: Callable[[], object], code) -> None:
        counts["tried"] += 1
        try:
            call()
            counts["failed"] += 1
        except grpc.RpcError as exc:
            counts["refused" if exc.code() == code else "failed"] += 1
            counts["longest_message"] = max(counts["longest_message"], len(exc.details() or ""))

    deadline = time.monotonic() + duration_s
    with _observed(target) as figures, grpc.insecure_channel(target.grpc_url) as channel:
        stub, health = pb_grpc.GRPCInferenceServiceStub(channel), health_pb2_grpc.HealthStub(channel)
        sent = 0
        while sent < requests or time.monotonic() < deadline:
            expect(lambda: stub.ModelMetadata(pb.ModelMetadataRequest(name=name), metadata=metadata),
                   grpc.StatusCode.NOT_FOUND)
            sent += 1
        for _ in range(10):
            expect(lambda: stub.ModelInfer(pb.ModelInferRequest(model_name=name), metadata=metadata),
                   grpc.StatusCode.NOT_FOUND)
            expect(lambda: health.Check(health_pb2.HealthCheckRequest(service=name), metadata=metadata),
                   grpc.StatusCode.NOT_FOUND)
            _rest_long_name(target, counts)
    return counts | figures


def _rest_long_name(target: Target, counts: dict) -> None:
    counts["tried"] += 1
    request = urllib.request.Request(f"http://{target.host}:{target.http_port}/v2/models/{'m' * 10_000}",
                                     headers=target.auth())
    try:
        urllib.request.urlopen(request, timeout=10).read()
        counts["failed"] += 1
    except urllib.error.HTTPError as exc:
        message = json.loads(exc.read()).get("error", "")
        counts["refused" if exc.code == 404 else "failed"] += 1
        counts["longest_message"] = max(counts["longest_message"], len(message))


# --- large gRPC messages ---------------------------------------------------------------------------


def grpc_large_messages(target: Target, calls: int = 12, message_bytes: int = 60 * MIB,
                        duration_s: float = 0.0) -> dict:
    """Rounds of `calls` concurrent gRPC ModelInfer calls, each on a connection of its own, carrying
    `message_bytes` of raw input for a [1, 64] tensor (INVALID_ARGUMENT once the server has read
    it), until `duration_s` (at least one round). Refused = INVALID_ARGUMENT or RESOURCE_EXHAUSTED;
    failed = any other outcome."""
    import grpc
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc as pb_grpc

    message = pb.ModelInferRequest(model_name=target.model)
    message.inputs.add(name=target.input, datatype="FP32", shape=list(target.shape))
    message.raw_input_contents.append(bytes(message_bytes))
    counts = {"tried": 0, "refused": 0, "failed": 0}
    options = [("grpc.max_send_message_length", -1), ("grpc.use_local_subchannel_pool", 1)]

    def call() -> None:
        with grpc.insecure_channel(target.grpc_url, options=options) as channel:
            try:
                pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(message, timeout=60,
                                                                     metadata=tuple(target.auth().items()))
                refused = False
            except grpc.RpcError as exc:
                refused = exc.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED)
        counts["refused" if refused else "failed"] += 1

    deadline = time.monotonic() + duration_s
    with _observed(target) as figures:
        while True:
            threads = [threading.Thread(target=call) for _ in range(calls)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            counts["tried"] += calls
            if time.monotonic() >= deadline:
                break
    return counts | figures


# --- unauthenticated --------------------------------------------------------------------------------


def unauthenticated(target: Target, requests: int = 200, duration_s: float = 0.0) -> dict:
    """Calls without the token against a server that has one (`target.token`), `requests` rounds
    (or until `duration_s`): gRPC health Check of the model, gRPC ModelMetadata, GET /metrics and
    a REST inference announcing a 50 MB body (which must be refused before it is sent). Refused =
    UNAUTHENTICATED / 401; failed = anything else (an answer that reveals the model, a timeout);
    `max_refusal_ms` = the slowest REST refusal."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc as pb_grpc

    counts = {"tried": 0, "refused": 0, "failed": 0, "max_refusal_ms": 0.0}

    def count(refused: bool) -> None:
        counts["tried"] += 1
        counts["refused" if refused else "failed"] += 1

    def grpc_refused(call: Callable[[], object]) -> bool:
        try:
            call()
        except grpc.RpcError as exc:
            return exc.code() == grpc.StatusCode.UNAUTHENTICATED
        return False

    deadline = time.monotonic() + duration_s
    with _observed(target) as figures, grpc.insecure_channel(target.grpc_url) as channel:
        stub, health = pb_grpc.GRPCInferenceServiceStub(channel), health_pb2_grpc.HealthStub(channel)
        done = 0
        while done < requests or time.monotonic() < deadline:
            count(grpc_refused(lambda: health.Check(health_pb2.HealthCheckRequest(service=target.model))))
            count(grpc_refused(lambda: stub.ModelMetadata(pb.ModelMetadataRequest(name=target.model))))
            if target.metrics_port:
                count(_metrics_status(target) == 401)
            start = time.perf_counter()
            count(_announce_only(target, 50_000_000) == 401)
            counts["max_refusal_ms"] = max(counts["max_refusal_ms"], (time.perf_counter() - start) * 1e3)
            done += 1
    return counts | figures


def _metrics_status(target: Target) -> int | None:
    try:
        urllib.request.urlopen(f"http://{target.host}:{target.metrics_port}/metrics", timeout=10).read()
        return 200
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def _announce_only(target: Target, size: int) -> int | None:
    """Send the headers of a POST announcing `size` body bytes and no body; the answer's status."""
    attacker = _announce(target, size)
    with attacker.sock as sock:
        return _read_status(sock, 10)


# --- servers ----------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(repo: Path, log: Path, *args: str, env: dict[str, str] | None = None,
          token: str | None = None) -> Iterator[Target]:
    """`python -m edgerun serve` (one worker) on free loopback ports with extra `args`; yields its
    Target once it serves, and stops it (SIGTERM) afterwards. RuntimeError if it does not start."""
    ports = [_free_port() for _ in range(3)]
    cmd = [sys.executable, "-m", "edgerun", "serve", "--model-repository", str(repo), "--host", "127.0.0.1",
           "--grpc-port", str(ports[0]), "--http-port", str(ports[1]), "--metrics-port", str(ports[2]), *args]
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"} | {"PYTHONPATH": str(ROOT)} | (
        env or {})
    with open(log, "wb") as out:
        process = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + 90
            while "serving gRPC on" not in log.read_text():
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"server did not start:\n{log.read_text()}")
                time.sleep(0.1)
            yield Target("127.0.0.1", ports[1], ports[0], worker_pid(log.read_text()), ports[2], token)
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def make_repo(folder: Path) -> Path:
    """folder/repo with model mlp (x [-1, 64] -> y [-1, 10]) as version 1."""
    sys.path.insert(0, str(ROOT))
    from edgerun.converters import from_onnx
    from edgerun.runtime.writer import save_model
    from tests.onnx_models import make_mlp

    target = folder / "repo" / "mlp" / "1"
    target.mkdir(parents=True)
    save_model(from_onnx(make_mlp()), target / "model.erm")
    return folder / "repo"


def run_all(duration_s: float) -> dict[str, dict]:
    """Every family against a fresh server with default limits (the unauthenticated one with a
    token, given in EDGERUN_SERVE_TOKEN), each for about `duration_s` seconds: family -> figures."""
    token = "attack-bench-token"
    families: dict[str, tuple[Callable[..., dict], dict]] = {
        "body_flood": (body_flood, {"duration_s": duration_s}),
        "body_hold": (body_hold, {"duration_s": duration_s}),
        "body_trickle": (body_trickle, {}),
        "connection_flood": (connection_flood, {"duration_s": duration_s}),
        "long_strings": (long_strings, {"requests": 200, "duration_s": duration_s}),
        "grpc_large_messages": (grpc_large_messages, {"duration_s": duration_s}),
        "unauthenticated": (unauthenticated, {"requests": 20, "duration_s": duration_s}),
    }
    results = {}
    work = Path(tempfile.mkdtemp(prefix="edgerun-attacks-"))
    try:
        repo = make_repo(work)
        for name, (attack, kwargs) in families.items():
            secret = token if name == "unauthenticated" else None
            env = {"EDGERUN_SERVE_TOKEN": secret} if secret else {}
            with serve(repo, work / f"{name}.log", env=env, token=secret) as target:
                results[name] = attack(target, **kwargs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return results


if __name__ == "__main__":
    for family, figures in run_all(float(sys.argv[1]) if len(sys.argv) > 1 else 3.0).items():
        print(family, json.dumps(figures))
