"""The attacks of the issue "Hold under attack" against a real coordinator, as figures.

Each family starts its own `python -m edgerun federated coordinator` (plain rounds, loopback,
a fresh state file in a temporary directory), lets honest clients work while the attack runs
for `duration_s` seconds, and returns a dict:

  tried       attack requests (or streams) sent
  refused     of those, the ones the coordinator refused or cut off (any non-OK status), or
              answered with liveness only (Status without the operator token)
  failed      honest requests that did not succeed while the attack ran
  honest      honest requests made while it ran
  p50_ms, p99_ms            honest request latency while it ran (GetWork and Status)
  baseline_p50_ms, baseline_p99_ms   the same before the attack started
  rss_kib_before, rss_kib_peak, rss_kib_after   the coordinator process's resident memory
              before the attack, its peak while it ran (sampled every 20 ms) and 1 s after
plus figures of the family (codes seen, model changes, guard timings).

Families: "streams" (idle Upload streams that never send a header), "flood" (an enrolled client
sending GetWork as fast as it can), "model" (a 1e30 update, then num_examples=2**62 with +5.0),
"replay" (future timestamps, nonce floods, and the replay guard's cost at 1,000 and 100,000
nonces in this process), "edges" (oversized enrolments, NaN metrics, Status floods).
On loopback the attacker and the honest client share one IP address: in "streams" and "edges"
their calls share the per-address limits (stream slots, the bucket of unauthenticated calls),
so honest Status calls there can meet RESOURCE_EXHAUSTED; GetWork is limited per client.

    from benchmarks.attacks.coordinator import run_all
    figures = run_all(duration_s=5.0)     # about 5 families * (duration_s + 5 s)

Memory comes from psutil when it is installed, else /proc/<pid>/status (Linux).
"""

# ruff: noqa: E402 - the repository root goes on sys.path before project imports
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import grpc
import numpy as np

from edgerun.converters.training import make_trainable
from edgerun.federated.auth import KeyPair, ReplayGuard, SignedFields, sha256
from edgerun.federated.client import ClientOptions, FederatedClient, channel
from edgerun.federated.codec import decode_arrays, encode_arrays
from edgerun.federated.local import parameter_spec
from edgerun.federated.protos import federated_pb2 as pb
from edgerun.federated.protos import federated_pb2_grpc as pb_grpc
from edgerun.federated.service import upload_body
from edgerun.federated.store import Store
from edgerun.runtime import Interpreter, save_model
from tests.converters.training.models import digits, mlp

TOKEN, OPERATOR = "bench-enrol-token", "bench-operator-token"
PROBE_INTERVAL = 0.05  # honest probes: 20 GetWork + 20 Status per second, under the 50/s client rate


# ------------------------------------------------------------------ the coordinator process
def rss_kib(pid: int) -> int | None:
    """Resident memory of process `pid` in KiB (psutil if installed, else /proc); None once it exited."""
    try:
        import psutil
    except ImportError:
        psutil = None
    try:
        if psutil is not None:
            return psutil.Process(pid).memory_info().rss // 1024
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except Exception:  # noqa: BLE001 - psutil.NoSuchProcess, FileNotFoundError: the process is gone
        return None
    return None


class Coordinator:
    """`python -m edgerun federated coordinator` on loopback with plain rounds; a context manager.

    It listens on both stacks: attackers come from 127.0.0.1 and honest clients from ::1, so the
    per-address limits that an attacker spends are not the honest clients' (devices that share
    an attacker's address share its limits: see the README)."""

    def __init__(self, workdir: Path, min_clients: int = 1000, rounds: int = 1, round_timeout: float = 30.0,
                 clients: int = 0) -> None:
        self.workdir = workdir
        self.model = save_model(make_trainable(mlp((64, 32, 10), seed=0), optimizer=("sgd", {"lr": 0.1})),
                                workdir / "m.train.erm")
        (workdir / "enrol.token").write_text(TOKEN)
        (workdir / "operator.token").write_text(OPERATOR)
        self.state = workdir / "c.db"
        if clients:  # enrolled before it starts, as a fleet would be
            with Store(self.state) as store:
                for i in range(clients):
                    store.enrol(f"fleet-{i:05d}", KeyPair.generate().public_bytes, {"model": "rpi4"})
        self.command = [
            sys.executable, "-m", "edgerun", "federated", "coordinator", "--model", str(self.model),
            "--rounds", str(rounds), "--port", "0", "--host", "[::]", "--state", str(self.state),
            "--key", str(workdir / "c.key"), "--token-file", str(workdir / "enrol.token"),
            "--operator-token-file", str(workdir / "operator.token"), "--fraction-fit", "1.0",
            "--min-clients", str(min_clients), "--round-timeout", str(round_timeout), "--secure-aggregation", "off",
            "--batch-size", "16", "--lr", "0.1"]

    def __enter__(self) -> Coordinator:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.log = open(self.workdir / "coordinator.log", "w")  # noqa: SIM115 - closed in __exit__
        self.proc = subprocess.Popen(self.command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=self.log,
                                     text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("coordinator listening on port "):
            self.proc.kill()
            raise RuntimeError(f"coordinator did not start (said {line!r}): "
                               f"{(self.workdir / 'coordinator.log').read_text()[-2000:]}")
        self.port = int(line.rsplit(" ", 1)[1])
        self.target = f"127.0.0.1:{self.port}"
        self.honest_target = f"[::1]:{self.port}"
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()

    def client(self, client_id: str, data: Any = (None, None), honest: bool = False) -> FederatedClient:
        """An enrolled client of its own channel (from ::1 when `honest`, else from 127.0.0.1)."""
        target = self.honest_target if honest else self.target
        device = FederatedClient(channel(target), client_id, KeyPair.generate(), data,
                                 ClientOptions(token=TOKEN, max_retries=5, backoff_initial=0.1, backoff_max=1.0))
        device.enrol()
        return device


class RssSampler:
    """The peak of a process's resident memory, sampled every 20 ms while in the block."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self.done = pid, rss_kib(pid), threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.done.wait(0.02):
            rss = rss_kib(self.pid)
            if rss is None:
                return
            self.peak = max(self.peak or 0, rss)

    def __enter__(self) -> RssSampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join(5)


class Prober:
    """An honest client asking GetWork (signed) and Status every PROBE_INTERVAL; latencies and failures."""

    def __init__(self, client: FederatedClient) -> None:
        self.client = client
        self.latencies: list[float] = []
        self.failures: Counter[str] = Counter()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _calls(self) -> list[Callable[[], Any]]:
        stub = self.client.stub
        return [lambda: stub.GetWork(pb.WorkRequest(auth=self.client._auth("GetWork", b"")), timeout=10),
                lambda: stub.Status(pb.StatusRequest(), timeout=10)]

    def _run(self) -> None:
        while not self.done.is_set():
            for call in self._calls():
                begin = time.perf_counter()
                try:
                    call()
                    self.latencies.append(time.perf_counter() - begin)
                except grpc.RpcError as exc:
                    self.failures[exc.code().name] += 1
            self.done.wait(PROBE_INTERVAL)

    def measure(self, seconds: float) -> tuple[list[float], Counter[str]]:
        """Probe for `seconds` in this thread; (latencies, failures)."""
        self.latencies, self.failures = [], Counter()
        self.done.clear()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        time.sleep(seconds)
        return self.stop()

    def start(self) -> None:
        self.latencies, self.failures = [], Counter()
        self.done.clear()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def stop(self) -> tuple[list[float], Counter[str]]:
        self.done.set()
        self.thread.join(15)
        return self.latencies, self.failures


def _ms(latencies: list[float], q: float) -> float:
    return float(np.percentile(latencies, q) * 1e3) if latencies else math.nan


def _attack(c: Coordinator, prober: Prober, duration_s: float, attack: Callable[[threading.Event], Counter]
            ) -> dict[str, Any]:
    """Baseline probes, then `attack(stop)` in a thread for `duration_s` while probing and
    sampling memory; the common figures (module docstring). `attack` returns its status codes."""
    baseline, _ = prober.measure(min(2.0, max(0.5, duration_s / 4)))
    before = rss_kib(c.proc.pid)
    stop, codes = threading.Event(), Counter()
    worker = threading.Thread(target=lambda: codes.update(attack(stop)), daemon=True)
    with RssSampler(c.proc.pid) as rss:
        prober.start()
        worker.start()
        worker.join(duration_s)  # an attack may end sooner (the coordinator finished its rounds)
        stop.set()
        latencies, failures = prober.stop()
        worker.join(30)
    time.sleep(1.0)
    return {"tried": sum(codes.values()), "refused": sum(n for code, n in codes.items() if code != "OK"),
            "failed": sum(failures.values()), "honest": len(latencies) + sum(failures.values()),
            "p50_ms": _ms(latencies, 50), "p99_ms": _ms(latencies, 99),
            "baseline_p50_ms": _ms(baseline, 50), "baseline_p99_ms": _ms(baseline, 99),
            "rss_kib_before": before, "rss_kib_peak": rss.peak, "rss_kib_after": rss_kib(c.proc.pid),
            "attack_codes": dict(codes), "honest_failures": dict(failures)}


# ------------------------------------------------------------------ 1. streams and floods
def idle_streams(duration_s: float, streams: int = 64) -> dict[str, Any]:
    """Keep `streams` Upload streams open that never send a message (reopening each one the
    coordinator ends); the old service froze with 16."""
    with tempfile.TemporaryDirectory() as tmp, Coordinator(Path(tmp)) as c:
        prober = Prober(c.client("honest", honest=True))

        def attack(stop: threading.Event) -> Counter:
            codes: Counter[str] = Counter()
            lock, open_now = threading.Lock(), [0]
            attacker = grpc.insecure_channel(c.target)
            stub = pb_grpc.CoordinatorStub(attacker)

            def silent(ended: threading.Event) -> Iterator[pb.UploadChunk]:
                ended.wait()
                return
                yield

            def ended(future: grpc.Future, event: threading.Event) -> None:
                event.set()
                with lock:
                    codes[future.code().name] += 1
                    open_now[0] -= 1

            while not stop.is_set():
                while open_now[0] < streams and not stop.is_set():
                    with lock:
                        open_now[0] += 1
                    event = threading.Event()
                    stub.Upload.future(silent(event), timeout=120).add_done_callback(
                        lambda f, e=event: ended(f, e))
                stop.wait(0.02)
            attacker.close()
            time.sleep(0.2)
            return codes

        return {**_attack(c, prober, duration_s, attack), "streams": streams}


def request_flood(duration_s: float, threads: int = 4) -> dict[str, Any]:
    """One enrolled client sends signed GetWork requests from `threads` threads as fast as it can."""
    with tempfile.TemporaryDirectory() as tmp, Coordinator(Path(tmp)) as c:
        prober, flooder = Prober(c.client("honest", honest=True)), c.client("flooder")

        def attack(stop: threading.Event) -> Counter:
            codes: Counter[str] = Counter()

            def send() -> None:
                while not stop.is_set():
                    try:
                        flooder.stub.GetWork(pb.WorkRequest(auth=flooder._auth("GetWork", b"")), timeout=10)
                        codes["OK"] += 1
                    except grpc.RpcError as exc:
                        codes[exc.code().name] += 1

            workers = [threading.Thread(target=send, daemon=True) for _ in range(threads)]
            for w in workers:
                w.start()
            for w in workers:
                w.join(30)
            return codes

        return _attack(c, prober, duration_s, attack)


# ------------------------------------------------------------------ 2. one bad client in plain rounds
def poisoned_updates(duration_s: float) -> dict[str, Any]:
    """Two plain rounds of an honest client and an attacker: round 1 all values 1e30, round 2
    +5.0 everywhere with num_examples=2**62. Before the bound, round 1 made |param| 1.7e29 and
    round 2 failed; with +5.0 alone every parameter moved by exactly +5.0."""
    x, y, _, _ = digits()
    with tempfile.TemporaryDirectory() as tmp, Coordinator(Path(tmp), min_clients=2, rounds=2) as c:
        honest = c.client("honest", (x[:200], y[:200]), honest=True)
        evil = c.client("evil")
        spec = parameter_spec(Interpreter(c.model.read_bytes(), device="cpu"))
        payloads = {1: ({n: np.full(shape, 1e30, dt) for n, (dt, shape) in spec.items()}, 10),
                    2: ({n: np.full(shape, 5.0, dt) for n, (dt, shape) in spec.items()}, 2**62)}
        prober = Prober(honest)  # probes as the honest client (a third client would be selected too)

        def attack(stop: threading.Event) -> Counter:
            codes: Counter[str] = Counter()
            done_rounds: set[int] = set()
            runner = threading.Thread(target=_quietly, args=(honest.run, stop), daemon=True)
            runner.start()
            deadline = time.time() + max(duration_s, 60.0)
            while time.time() < deadline:  # until told to stop: the coordinator exits after 2 rounds
                try:
                    work = evil.stub.GetWork(pb.WorkRequest(auth=evil._auth("GetWork", b"")), timeout=10)
                except grpc.RpcError:
                    break
                if work.action == pb.WorkReply.STOP:
                    break
                if work.action == pb.WorkReply.TRAIN and work.round not in done_rounds:
                    arrays, examples = payloads[work.round]
                    codes[_upload(evil, work.round, encode_arrays(arrays), examples)] += 1
                    done_rounds.add(work.round)
                time.sleep(0.1)
            return codes  # the run is over: the coordinator exits, the probes stop

        figures = _attack(c, prober, duration_s, attack)
        return {**figures, **_round_figures(c, spec)}


def _quietly(run: Callable[[threading.Event], None], stop: threading.Event) -> None:
    """Run a client; the coordinator exiting under it (UNAVAILABLE) ends it without a traceback."""
    try:
        run(stop)
    except grpc.RpcError:
        pass


def _upload(client: FederatedClient, round_number: int, blob: bytes, num_examples: int,
            metrics: dict[str, float] | None = None) -> str:
    """Upload `blob` as `client`'s update; the status code's name."""
    metrics = metrics or {}
    header = pb.UpdateHeader(auth=client._auth("Upload", upload_body(round_number, num_examples, metrics,
                                                                     sha256(blob))),
                             round=round_number, num_examples=num_examples, metrics=metrics,
                             total_size=len(blob), sha256=sha256(blob))
    try:
        client.stub.Upload(iter([pb.UploadChunk(header=header, data=blob)]), timeout=30)
        return "OK"
    except grpc.RpcError as exc:
        return exc.code().name


def _round_figures(c: Coordinator, spec: dict) -> dict[str, Any]:
    """What the rounds did to the model: status, max |change| and L2 change per round, clipped counts."""
    with Store(c.state) as store:
        history = store.history()
        models = {v: decode_arrays(store.model(v), spec) for v in range(0, len(history) + 1)
                  if store.model(v) is not None}
    rounds = {}
    for r in history:
        row: dict[str, Any] = {"status": r.status, "reason": r.reason}
        if r.status == "aggregated":
            old, new = models[r.new_model_version - 1], models[r.new_model_version]
            change = [new[n].astype(np.float64) - old[n] for n in spec]
            row.update(max_abs_change=max(float(np.abs(d).max()) for d in change),
                       l2_change=math.sqrt(sum(float(np.sum(d * d)) for d in change)),
                       max_abs_param=max(float(np.abs(v).max()) for v in new.values()),
                       clipped=r.metrics.get("clipped"), examples_capped=r.metrics.get("examples_capped"))
        rounds[r.round] = row
    return {"rounds": rounds}


# ------------------------------------------------------------------ 3. replay guard
def guard_check_us(nonces: int, checks: int = 5000) -> float:
    """Microseconds per ReplayGuard.check with `nonces` remembered (1,000 clients' worth)."""
    guard, now = ReplayGuard(), time.time()
    for i in range(nonces):
        guard.check(SignedFields(f"c{i % 1000}", now - (i % 200), os.urandom(16), b""), now=now)
    probes = [SignedFields("probe", now, os.urandom(16), b"") for _ in range(checks)]
    begin = time.perf_counter()
    for fields in probes:
        guard.check(fields, now=now)
    return (time.perf_counter() - begin) / checks * 1e6


def replay(duration_s: float, threads: int = 4) -> dict[str, Any]:
    """Enrolled clients send requests with timestamps 600 s ahead (once held 600 s each), and
    fresh signed requests as fast as they can (the guard's memory must stay bounded)."""
    with tempfile.TemporaryDirectory() as tmp, Coordinator(Path(tmp)) as c:
        prober = Prober(c.client("honest", honest=True))
        attackers = [c.client(f"replayer-{i}") for i in range(threads)]

        def attack(stop: threading.Event) -> Counter:
            codes: Counter[str] = Counter()

            def send(device: FederatedClient) -> None:
                ahead = True
                while not stop.is_set():
                    now = time.time() + (600.0 if ahead else 0.0)
                    fields = device.key.sign_request("GetWork", device.client_id, sha256(b""), now=now)
                    auth = pb.Auth(client_id=fields.client_id, timestamp=fields.timestamp, nonce=fields.nonce,
                                   signature=fields.signature)
                    try:
                        device.stub.GetWork(pb.WorkRequest(auth=auth), timeout=10)
                        codes["OK"] += 1
                    except grpc.RpcError as exc:
                        codes[exc.code().name] += 1
                    ahead = not ahead

            workers = [threading.Thread(target=send, args=(d,), daemon=True) for d in attackers]
            for w in workers:
                w.start()
            for w in workers:
                w.join(30)
            return codes

        figures = _attack(c, prober, duration_s, attack)
    return {**figures, "guard_check_us_at_1000": guard_check_us(1_000),
            "guard_check_us_at_100000": guard_check_us(100_000)}


# ------------------------------------------------------------------ 4. looser edges
def loose_edges(duration_s: float, fleet: int = 200) -> dict[str, Any]:
    """With `fleet` clients enrolled: oversized enrolments (1 MiB id, 1.5 MB and 3.5 MB info,
    33 info entries), NaN metrics, and Status floods (anonymous and with a wrong token)."""
    with tempfile.TemporaryDirectory() as tmp, Coordinator(Path(tmp), clients=fleet) as c:
        prober, uploader = Prober(c.client("honest", honest=True)), c.client("nan-metrics")
        operator = [("authorization", f"Bearer {OPERATOR}")]
        stub = pb_grpc.CoordinatorStub(channel(c.target))
        status_us = _status_us(stub, operator)

        def attack(stop: threading.Event) -> Counter:
            codes: Counter[str] = Counter()
            oversized = [("x" * (1 << 20), {}), ("big-info", {"k": "v" * 1_500_000}),
                         ("huge-info", {f"k{i}": "v" * 1000 for i in range(3500)}),
                         ("many-info", {f"k{i}": "v" for i in range(33)}), ("bad id", {})]
            while not stop.is_set():
                for client_id, info in oversized:
                    device = FederatedClient(channel(c.target), client_id, KeyPair.generate(), (None, None),
                                             ClientOptions(token=TOKEN, max_retries=0, info=info))
                    try:
                        device.enrol()
                        codes["OK"] += 1
                    except grpc.RpcError as exc:
                        codes[exc.code().name] += 1
                codes[_upload(uploader, 1, b"x", 10, {"loss": float("nan")})] += 1
                for metadata in ((), [("authorization", "Bearer wrong")]):
                    try:
                        reply = json.loads(stub.Status(pb.StatusRequest(), metadata=metadata, timeout=10).json)
                        codes["OK" if "clients" in reply else "LIVENESS_ONLY"] += 1
                    except grpc.RpcError as exc:
                        codes[exc.code().name] += 1
            return codes

        figures = _attack(c, prober, duration_s, attack)
        with Store(c.state) as store:
            enrolled = store.client_count()
    return {**figures, "status_operator_us": status_us, "clients_after": enrolled,
            "clients_expected": fleet + 2}


def _status_us(stub: pb_grpc.CoordinatorStub, metadata: list[tuple[str, str]], calls: int = 50) -> float:
    """Median microseconds of an operator Status call (round trip on loopback)."""
    times = []
    for _ in range(calls):
        begin = time.perf_counter()
        stub.Status(pb.StatusRequest(), metadata=metadata, timeout=10)
        times.append(time.perf_counter() - begin)
        time.sleep(0.011)  # under the per-address rate of unauthenticated calls
    return float(np.median(times) * 1e6)


def run_all(duration_s: float) -> dict[str, dict]:
    """Every family, each attacking for `duration_s` seconds; {family: figures}."""
    return {"streams": idle_streams(duration_s), "flood": request_flood(duration_s),
            "model": poisoned_updates(duration_s), "replay": replay(duration_s),
            "edges": loose_edges(duration_s)}


if __name__ == "__main__":
    print(json.dumps(run_all(float(sys.argv[1]) if len(sys.argv) > 1 else 3.0), indent=2, default=str))
