"""One coordinator process and 1,000 / 5,000 / 10,000 connected devices: long-poll vs polling.

For each fleet size N, twice from scratch (the polling baseline, then long-polls), on loopback:
  coordinator  this script with `--role coordinator`, in its own process (so /proc/<pid>/stat
               gives its CPU apart from the devices'): Coordinator + federated.service.serve
               (grpc.aio, 16 handler threads), FedAvg over a tiny trainable MLP 4-4-2 (SGD),
               secure aggregation off, `--select` devices per round (default 50, whatever N; the
               coordinator may over-select, see CoordinatorConfig), SQLite state in a temporary
               directory. All devices come from 127.0.0.1, so the service's per-address limits
               (unauthenticated calls, failed authentications, streams per address) are raised
               to fleet size; every per-client limit is the default.
  devices      `--procs` processes of this script with `--role devices`, N / procs lightweight
               devices each on one asyncio loop, every device its own grpc.aio channel (its own
               TCP connection) and Ed25519 key. A device enrols (signed), then asks for work:
                 polling    wait_seconds 0, as clients did before long-polls: an answer at once,
                            then sleep the retry_after it says (0.2 s idle, 0.5 s while a round
                            runs without it);
                 long-poll  wait_seconds 30 (24-30 s, jittered as FederatedClient does): the
                            coordinator holds the call until there is work or the wait ends.
               When selected it downloads the round's parameters (signed, chunked) and uploads a
               zero delta of the same spec (plain, one chunk); errors back off 0.5 s doubling
               to 30 s, with jitter.
Each configuration: enrol all N (64 calls in flight per process), start asking, wait until the
coordinator counts N devices available (seen within its window; held long-polls count), the
count stops growing for 3 s or `--settle` seconds passed; then an idle window in which the
coordinator runs but selects nobody (its strategy is gated: what connected, idle devices cost,
plus its own wait-for-clients loop), `--idle` s polling and at least the 30 s wait with
long-polls (so every device asks about once in it); then rounds run for `--window` s.

Columns (each configuration's own coordinator process):
  connected      devices the coordinator counts as available at the end of the round window
                 (its Status, operator view), of N
  idle CPU       coordinator CPU seconds per wall second in the idle window (1.00 = one core;
                 Python handlers, so about 1 core is the ceiling: saturated)
  idle GetWork/s GetWork answers per second in the idle window (all devices)
  rounds/min     rounds aggregated in the round window, per minute (finished_at in the store)
  round CPU      coordinator CPU per wall second in the round window
  CPU/round s    coordinator CPU seconds per aggregated round in the round window
  enrol s        wall time to enrol all N devices
  RSS MiB        coordinator resident memory at the end of the round window
Our figure is the long-poll row; the anchor is the polling row of the same N in the same run.

    .venv/bin/python benchmarks/bench_fleet.py [--clients 1000,5000,10000] [--procs 4] [--select 50]
        [--idle 6] [--window 10] [--settle 30] [--modes polling,long-poll] [--markdown]

The default run takes about 5 minutes (2 cores).

Open files: the coordinator holds one socket per device, so this script raises its soft limit
of open files (RLIMIT_NOFILE) to the hard limit in every process (resource.setrlimit); a fleet
size above what the hard limit allows (about hard limit - 512 devices) is skipped with a note;
raise the hard limit (`ulimit -Hn`, as root) for more. Linux only (/proc).
"""

# ruff: noqa: E402 - the repository root goes on sys.path before project imports
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import grpc
import numpy as np

from benchmarks._harness import machine, print_table
from edgerun.converters.training import make_trainable
from edgerun.federated.auth import KeyPair, sha256
from edgerun.federated.codec import encode_arrays
from edgerun.federated.coordinator import Coordinator, CoordinatorConfig
from edgerun.federated.limits import ServiceLimits
from edgerun.federated.local import parameter_spec
from edgerun.federated.protos import federated_pb2 as pb
from edgerun.federated.protos import federated_pb2_grpc as pb_grpc
from edgerun.federated.service import KEEPALIVE_OPTIONS, serve, upload_body
from edgerun.federated.store import Store
from edgerun.federated.strategies import FedAvg
from edgerun.federated.strategies.base import NotEnoughClients
from edgerun.runtime import Interpreter, save_model
from tests.converters.training.models import mlp

TOKEN, OPERATOR = "bench", "bench-operator"
LONG_POLL_S = 30.0
MODES = {"polling": 0.0, "long-poll": LONG_POLL_S}
HEADERS = ["devices", "mode", "connected", "idle CPU", "idle GetWork/s", "rounds/min", "round CPU", "CPU/round s",
           "enrol s", "RSS MiB"]
FD_RESERVE = 512  # descriptors a process needs besides one per connection


def raise_fd_limit() -> int:
    """Raise this process's soft limit of open files to its hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft


# ------------------------------------------------------------------ the coordinator process
class GatedFedAvg(FedAvg):
    """FedAvg that selects nobody until `gate` is set: the coordinator runs, between rounds."""

    gate = threading.Event()

    def configure_fit(self, round, parameters, available, rng):  # noqa: ANN001, ANN202, A002 - as FedAvg's
        if not self.gate.is_set():
            raise NotEnoughClients("the benchmark has not said go")
        return super().configure_fit(round, parameters, available, rng)


def coordinator_main(args: argparse.Namespace) -> int:
    """Serve and run a coordinator; print its port; let rounds select devices from the line "go"
    on, exit at "quit" (or EOF)."""
    raise_fd_limit()
    logging.basicConfig(level=logging.ERROR)
    strategy = GatedFedAvg(fraction_fit=args.select / args.fleet, min_fit_clients=args.select,
                           min_available_clients=args.select, local_epochs=1, batch_size=10, client_lr=0.1)
    config = CoordinatorConfig(rounds=1_000_000, round_timeout=args.round_timeout, secagg=None, enrol_token=TOKEN,
                               operator_token=OPERATOR)
    coordinator = Coordinator(args.model, Store(args.state), strategy, config, KeyPair.generate())
    fleet = args.fleet + 1000
    limits = ServiceLimits(peer_rate=1e9, peer_burst=1e9, streams_per_peer=fleet)
    server, port = serve(coordinator, "127.0.0.1:0", limits=limits)
    stop = threading.Event()
    threading.Thread(target=coordinator.run, args=(stop,), daemon=True).start()
    print(f"port {port}", flush=True)
    if sys.stdin.readline().strip() == "go":
        strategy.gate.set()
        sys.stdin.readline()
    stop.set()
    server.stop(0).wait(10)
    return 0


# ------------------------------------------------------------------ the device processes
@dataclass
class Counts:
    getwork: int = 0
    trained: int = 0
    errors: int = 0


class Device:
    """One lightweight simulated device: its key, channel and round bookkeeping."""

    def __init__(self, client_id: str, target: str, delta: bytes, wait: float, counts: Counts) -> None:
        self.client_id, self.delta, self.wait, self.counts = client_id, delta, wait, counts
        self.key = KeyPair.generate()
        self.channel = grpc.aio.insecure_channel(target, options=KEEPALIVE_OPTIONS)
        self.stub = pb_grpc.CoordinatorStub(self.channel)
        self.rng = random.Random(client_id)
        self.last_round = 0

    def auth(self, method: str, body: bytes) -> pb.Auth:
        f = self.key.sign_request(method, self.client_id, sha256(body))
        return pb.Auth(client_id=f.client_id, timestamp=f.timestamp, nonce=f.nonce, signature=f.signature)

    async def enrol(self) -> None:
        body = self.key.public_bytes + TOKEN.encode()
        await self.stub.Enrol(pb.EnrolRequest(client_id=self.client_id, public_key=self.key.public_bytes, token=TOKEN,
                                              auth=self.auth("Enrol", body)), timeout=120)

    async def follow(self) -> None:
        """Ask for work until told to stop (or cancelled); train when selected."""
        backoff = 0.5
        while True:
            wait = self.wait * (0.8 + 0.2 * self.rng.random()) if self.wait else 0.0
            try:
                reply = await self.stub.GetWork(pb.WorkRequest(auth=self.auth("GetWork", b""), wait_seconds=wait),
                                                timeout=wait + 60)
                self.counts.getwork += 1
                if reply.action == pb.WorkReply.STOP:
                    return
                if reply.action == pb.WorkReply.TRAIN and reply.round != self.last_round:
                    self.last_round = reply.round
                    await self.train(reply)
                    self.counts.trained += 1
                    continue
                backoff = 0.5
                await asyncio.sleep(reply.retry_after)
            except grpc.aio.AioRpcError:
                self.counts.errors += 1
                await asyncio.sleep(backoff * (0.5 + self.rng.random()))
                backoff = min(2 * backoff, 30.0)

    async def train(self, work: pb.WorkReply) -> None:
        body = f"parameters:{work.model_version}".encode()
        request = pb.DownloadRequest(auth=self.auth("Download", body), kind=pb.DownloadRequest.PARAMETERS,
                                     model_version=work.model_version)
        async for _ in self.stub.Download(request, timeout=60):
            pass
        digest = sha256(self.delta)
        header = pb.UpdateHeader(auth=self.auth("Upload", upload_body(work.round, 10, {}, digest)), round=work.round,
                                 num_examples=10, total_size=len(self.delta), sha256=digest)
        await self.stub.Upload(iter([pb.UploadChunk(header=header, data=self.delta)]), timeout=60)


async def devices_main(args: argparse.Namespace) -> int:
    """Enrol `count` devices, print "enrolled S", then follow the commands on stdin: "start"
    (ask for work), "count" (print "count GETWORK TRAINED ERRORS"), "stop" (exit)."""
    raise_fd_limit()
    spec = parameter_spec(Interpreter(args.model))
    delta = encode_arrays({name: np.zeros(shape, dtype) for name, (dtype, shape) in spec.items()})
    counts = Counts()
    devices = [Device(f"device-{i:05d}", args.target, delta, args.wait, counts)
               for i in range(args.offset, args.offset + args.count)]
    began, gate = time.perf_counter(), asyncio.Semaphore(64)

    async def enrol(device: Device) -> None:
        async with gate:
            await device.enrol()

    await asyncio.gather(*(enrol(d) for d in devices))
    print(f"enrolled {time.perf_counter() - began:.3f}", flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    tasks: list[asyncio.Task] = []
    while line := (await reader.readline()).decode().strip():
        if line == "start":
            tasks = [asyncio.create_task(d.follow()) for d in devices]
        elif line == "count":
            print(f"count {counts.getwork} {counts.trained} {counts.errors}", flush=True)
        elif line == "stop":
            break
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.gather(*(d.channel.close() for d in devices))
    return 0


# ------------------------------------------------------------------ the driver
def cpu_seconds(pid: int) -> float:
    """utime + stime of process `pid` (all threads) in seconds, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "a") as err:
        return subprocess.Popen([sys.executable, str(Path(__file__).resolve()), *args], cwd=REPO, env=env,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True)


def tell(proc: subprocess.Popen, line: str) -> None:
    proc.stdin.write(line + "\n")
    proc.stdin.flush()


def expect(proc: subprocess.Popen, prefix: str, log: Path) -> list[str]:
    line = proc.stdout.readline()
    if not line.startswith(prefix):
        raise SystemExit(f"a {prefix.strip()!r} line was expected, got {line!r}; log:\n{log.read_text()[-3000:]}")
    return line.split()[1:]


@dataclass
class Outcome:
    clients: int
    mode: str
    connected: int = 0
    idle_cpu: float = float("nan")
    idle_getwork: float = float("nan")
    rounds_per_min: float = float("nan")
    round_cpu: float = float("nan")
    cpu_per_round: float = float("nan")
    enrol_s: float = float("nan")
    rss: float = float("nan")

    def row(self) -> list[object]:
        def f(value: float, fmt: str) -> str:
            return "-" if value != value else format(value, fmt)
        return [f"{self.clients:,}", self.mode, f"{self.connected:,}", f(self.idle_cpu, ".2f"),
                f(self.idle_getwork, ",.0f"), f(self.rounds_per_min, ".0f"), f(self.round_cpu, ".2f"),
                f(self.cpu_per_round, ".3f"), f(self.enrol_s, ".1f"), f(self.rss, ".0f")]


def available(stub: pb_grpc.CoordinatorStub) -> int:
    reply = stub.Status(pb.StatusRequest(), metadata=[("authorization", f"Bearer {OPERATOR}")], timeout=30)
    return int(json.loads(reply.json)["available"])


def getwork_count(procs: list[subprocess.Popen], log: Path) -> int:
    for proc in procs:
        tell(proc, "count")
    return sum(int(expect(proc, "count ", log)[0]) for proc in procs)


def run_config(n: int, mode: str, args: argparse.Namespace, model: Path) -> Outcome:
    """One fleet size in one mode, from a fresh coordinator; stops what it started."""
    outcome = Outcome(n, mode)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with tempfile.TemporaryDirectory(prefix="bench_fleet_") as tmp:
        log = Path(tmp) / "log.txt"
        coordinator = spawn(["--role", "coordinator", "--model", str(model), "--state", str(Path(tmp) / "c.db"),
                             "--fleet", str(n), "--select", str(min(args.select, n)),
                             "--round-timeout", str(args.round_timeout)], env, log)
        procs: list[subprocess.Popen] = []
        try:
            port = int(expect(coordinator, "port ", log)[0])
            target = f"127.0.0.1:{port}"
            share = [n // args.procs + (i < n % args.procs) for i in range(args.procs)]
            for i, count in enumerate(share):
                procs.append(spawn(["--role", "devices", "--model", str(model), "--target", target,
                                    "--count", str(count), "--offset", str(sum(share[:i])),
                                    "--wait", str(MODES[mode])], env, log))
            outcome.enrol_s = max(float(expect(p, "enrolled ", log)[0]) for p in procs)
            for proc in procs:
                tell(proc, "start")
            measure(outcome, coordinator, procs, target, args, log)
        finally:
            for proc in procs:
                with contextlib.suppress(OSError):
                    tell(proc, "stop")
            with contextlib.suppress(OSError):
                tell(coordinator, "quit")
            for proc in [*procs, coordinator]:
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    return outcome


def measure(outcome: Outcome, coordinator: subprocess.Popen, procs: list[subprocess.Popen], target: str,
            args: argparse.Namespace, log: Path) -> None:
    """Settle, the idle window, "go", the round window: fills `outcome`."""
    stub = pb_grpc.CoordinatorStub(grpc.insecure_channel(target))
    settle, seen, grew = time.monotonic() + args.settle, 0, time.monotonic()
    while (now := time.monotonic()) < settle and seen < outcome.clients and now - grew < 3.0:
        time.sleep(0.5)
        if (count := available(stub)) > seen:
            seen, grew = count, time.monotonic()
    pid = coordinator.pid
    cpu0, calls0, t0 = cpu_seconds(pid), getwork_count(procs, log), time.time()
    time.sleep(args.idle if outcome.mode == "polling" else max(args.idle, LONG_POLL_S))
    cpu1, calls1, t1 = cpu_seconds(pid), getwork_count(procs, log), time.time()
    outcome.idle_cpu, outcome.idle_getwork = (cpu1 - cpu0) / (t1 - t0), (calls1 - calls0) / (t1 - t0)
    tell(coordinator, "go")
    cpu0, t0 = cpu_seconds(pid), time.time()
    time.sleep(args.window)
    cpu1, t1 = cpu_seconds(pid), time.time()
    outcome.round_cpu, outcome.rss = (cpu1 - cpu0) / (t1 - t0), rss_mib(pid)
    outcome.connected = available(stub)
    with Store(Path(log.parent) / "c.db") as store:
        done = [r for r in store.history() if r.status == "aggregated" and r.finished_at <= t1]
    outcome.rounds_per_min = 60 * len(done) / (t1 - t0)
    if done:
        outcome.cpu_per_round = (cpu1 - cpu0) / len(done)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="1000,5000,10000", help="comma-separated fleet sizes (1000,5000,10000)")
    parser.add_argument("--procs", type=int, default=4, help="device processes (4)")
    parser.add_argument("--select", type=int, default=50, help="devices selected per round (50)")
    parser.add_argument("--idle", type=float, default=6.0,
                        help=f"seconds of the idle window (6; long-poll: at least the wait, {LONG_POLL_S:g})")
    parser.add_argument("--window", type=float, default=10.0, help="seconds of the round window (10)")
    parser.add_argument("--settle", type=float, default=30.0,
                        help="seconds to wait, at most, for every device to be counted available (30)")
    parser.add_argument("--round-timeout", type=float, default=30.0, help="round deadline in seconds (30)")
    parser.add_argument("--modes", default="polling,long-poll", help="which to run (polling,long-poll)")
    parser.add_argument("--markdown", action="store_true", help="print README table rows")
    parser.add_argument("--role", choices=["coordinator", "devices"], help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--state", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--fleet", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--offset", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--wait", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role == "coordinator":
        return coordinator_main(args)
    if args.role == "devices":
        return asyncio.run(devices_main(args))

    host, began, limit = machine(), time.monotonic(), raise_fd_limit()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_fleet_model_") as tmp:
        model = save_model(make_trainable(mlp((4, 4, 2)), optimizer=("sgd", {"lr": 0.1})), Path(tmp) / "m.erm")
        for n in (int(c) for c in args.clients.split(",")):
            for mode in args.modes.split(","):
                if n + FD_RESERVE > limit:
                    rows.append([f"{n:,}", mode, f"skipped: open-file limit {limit}", *["-"] * (len(HEADERS) - 3)])
                    continue
                rows.append(run_config(n, mode, args, model).row())
                print(f"# {n} devices, {mode}: done after {time.monotonic() - began:.0f} s", file=sys.stderr)
    print(f"# {host}; one coordinator process (grpc.aio, 16 handler threads), {args.procs} device processes "
          f"(asyncio, one grpc.aio channel per device), loopback; MLP 4-4-2 FedAvg, {args.select} selected per "
          f"round, plain zero deltas; idle window {args.idle:g} s, round window {args.window:g} s; "
          f"long-poll wait {LONG_POLL_S:g} s; {time.monotonic() - began:.0f} s in all")
    print_table(HEADERS, rows, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
