"""Federated rounds at fleet sizes of 10, 100 and 500 devices: round time, coordinator CPU, bytes.

One configuration per client count N, each from scratch in a temporary directory:
  coordinator  `python -m edgerun federated coordinator` in its own process
               (FedAvg, loopback gRPC on 127.0.0.1, SQLite state), so its CPU can be read
               from /proc/<pid>/stat (utime + stime, all its threads) apart from the devices'.
  devices      N FederatedClient threads in this process, one gRPC channel each, holding an
               IID partition of sklearn's digits (1437 training examples). All enrol first
               (16 at a time); then all poll GetWork (every 0.2 s while they wait).
  model        make_trainable(mlp((64, 32, 10)), SGD lr 0.1); 1 local epoch, batch 10.
  selection    `--select` clients per round (default 10, whatever N), or with `--fraction-fit F`
               int(F * N) per round. The coordinator's --min-clients is that count, so every
               round selects exactly that many; a round closes when all of them reported.

    .venv/bin/python benchmarks/bench_federated.py [--clients 10,100,500] [--rounds 3] [--select 10]
        [--fraction-fit 0.2] [--budget 75] [--total-budget 210] [--markdown]

Columns. The round window runs from round 1's opened_at to the last round's finished_at in the
coordinator's SQLite state (read through federated.store.Store). This process samples the CPU
clocks and the GetWork count every 50 ms (less often when its device threads starve it of the
GIL; the widest gap is printed to stderr) and interpolates them linearly at those two instants.
  wall/round    median over rounds of finished_at - opened_at from the store (s)
  coord CPU     coordinator-process CPU over the round window / rounds (s per round), and as
                a share of one core over that window (100% = one core busy; its handlers are
                Python, so the GIL holds it to about one core: near 100% means saturated)
  fleet CPU     this process's CPU (device threads, plus the sampling) over the window / rounds
  GetWork/s     GetWork calls answered per second over the window, and in brackets the 5 * N
                that N idle devices would make with instant answers (each asks again 0.2 s
                after a "wait"); a shortfall is time the calls spend queued
  enrol         wall time for all N devices to enrol (s)
  KiB/dev/round parameters downloaded + delta uploaded by one selected device per round: the
                encode_arrays(.npz) payloads of the model's parameter spec (gRPC framing,
                signatures and GetWork polls not counted); checked against the sizes the
                coordinator stored before anything is printed
  model KiB     the one-time download of the trainable .erm by each device when first selected
A configuration still running after `--budget` seconds is stopped (devices told to stop,
coordinator terminated) and reported with the rounds it finished; once `--total-budget` seconds
are spent the remaining configurations are skipped. Flower's simulation would be the anchor,
but it is only listed: flwr is not a dependency. Linux only (/proc).
"""

# ruff: noqa: E402 - the repository root goes on sys.path before project imports
from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import grpc
import numpy as np

from benchmarks._harness import machine, print_table
from edgerun.converters.training import make_trainable
from edgerun.federated.auth import KeyPair
from edgerun.federated.client import ClientOptions, FederatedClient, channel
from edgerun.federated.codec import encode_arrays
from edgerun.federated.local import parameter_spec
from edgerun.federated.partition import iid
from edgerun.federated.store import RoundRecord, Store
from edgerun.runtime import Interpreter, save_model
from tests.converters.training.models import digits, mlp

TOKEN, LR, EPOCHS, BATCH, POLL_S = "bench", 0.1, 1, 10, 0.05
HEADERS = ["clients", "selected/round", "rounds", "wall/round s", "coord CPU/round s", "coord CPU % core",
           "fleet CPU/round s", "GetWork/s (wanted)", "enrol s", "KiB/dev/round (down+up)", "model KiB"]


@dataclass(frozen=True)
class Payloads:
    """Bytes one device moves: the model once, then parameters down and a delta up per round."""

    model: int
    parameters: int
    delta: int


class Counter:
    """A thread-safe count of calls."""

    def __init__(self) -> None:
        self.value, self._lock = 0, threading.Lock()

    def add(self) -> None:
        with self._lock:
            self.value += 1


@dataclass
class Sample:
    """Clocks read together: time.time() (the store's clock), coordinator and this process's
    CPU (s), GetWork calls answered so far."""

    wall: float
    coordinator_cpu: float
    fleet_cpu: float
    polls: int


@dataclass
class Outcome:
    """What one fleet size gave: its finished rounds, enrolment time and the clock samples."""

    clients: int
    selected: int
    rounds: list[RoundRecord] = field(default_factory=list)  # finished rounds, from the store
    enrol_s: float = math.nan
    samples: list[Sample] = field(default_factory=list)  # every POLL_S s, or later when starved of the GIL
    note: str = ""


# ------------------------------------------------------------------ measurement helpers
def cpu_seconds(pid: int) -> float:
    """utime + stime of process `pid` (all threads) in seconds, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def payload_sizes(model_path: Path) -> Payloads:
    """Encoded sizes of what a device downloads and uploads for this trainable model."""
    spec = parameter_spec(Interpreter(model_path))
    zeros = {name: np.zeros(shape, dtype) for name, (dtype, shape) in spec.items()}
    size = len(encode_arrays(zeros))  # .npz without compression: the size depends on the spec only
    return Payloads(model_path.stat().st_size, size, size)


def check_payloads(store: Store, rounds: list[RoundRecord], want: Payloads) -> None:
    """SystemExit unless every finished round aggregated all its selected devices' updates and
    the stored parameter and update blobs have the sizes the table reports."""
    for record in rounds:
        if record.status != "aggregated" or record.metrics.get("reports") != len(record.selected):
            raise SystemExit(f"round {record.round}: status {record.status}, {record.metrics.get('reports')} "
                             f"of {len(record.selected)} selected devices reported ({record.reason})")
        sizes = {len(u.blob) for u in store.updates(record.round)} | {want.delta}
        published = len(store.model(record.new_model_version))
        if sizes != {want.delta} or published != want.parameters:
            raise SystemExit(f"round {record.round}: stored update sizes {sorted(sizes)} and parameters "
                             f"{published} B, expected {want.delta} B and {want.parameters} B")


# ------------------------------------------------------------------ the two sides
def start_coordinator(model: Path, workdir: Path, selected: int, fraction: float, rounds: int,
                      round_timeout: float) -> tuple[subprocess.Popen, int]:
    """The coordinator process (its log goes to workdir/coordinator.log); returns it and its port."""
    command = [sys.executable, "-m", "edgerun", "federated", "coordinator", "--model", str(model),
               "--rounds", str(rounds), "--port", "0", "--host", "127.0.0.1", "--state", str(workdir / "c.db"),
               "--key", str(workdir / "c.key"), "--fraction-fit", repr(fraction),
               "--min-clients", str(selected), "--lr", str(LR), "--epochs", str(EPOCHS),
               "--batch-size", str(BATCH), "--round-timeout", str(round_timeout), "--secure-aggregation", "off"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "EDGERUN_ENROL_TOKEN": TOKEN}  # not on the command line
    with open(workdir / "coordinator.log", "w") as log:
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=log, text=True)
    line = proc.stdout.readline()
    if not line.startswith("coordinator listening on port "):
        proc.kill()
        tail = (workdir / "coordinator.log").read_text()[-2000:]
        raise SystemExit(f"coordinator did not start (said {line!r}):\n{tail}")
    return proc, int(line.rsplit(" ", 1)[1])


def make_fleet(target: str, x: np.ndarray, y: np.ndarray, n: int,
               polls: Counter) -> tuple[list[FederatedClient], list[grpc.Channel]]:
    """n devices on IID partitions, each with its own channel; every GetWork answer bumps `polls`."""
    fleet, channels = [], []
    # long_poll=0: devices poll GetWork, as this benchmark's columns assume (bench_fleet.py measures long-polls)
    options = dict(token=TOKEN, backoff_initial=0.1, backoff_max=1.0, max_retries=3, rpc_timeout=60.0, long_poll=0.0)
    for i, index in enumerate(iid(len(y), n, seed=0)):
        channels.append(channel(target))
        client = FederatedClient(channels[-1], f"device-{i:04d}", KeyPair.generate(), (x[index], y[index]),
                                 ClientOptions(seed=i, **options))
        client.stub.GetWork = _counting(client.stub.GetWork, polls)
        fleet.append(client)
    return fleet, channels


class _counting:  # noqa: N801 - stands in for the stub's GetWork method
    """A unary stub method whose answered calls (direct or `.future`) bump `counter`."""

    def __init__(self, call: Any, counter: Counter) -> None:
        self.call, self.counter = call, counter

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        reply = self.call(*args, **kwargs)
        self.counter.add()
        return reply

    def future(self, *args: Any, **kwargs: Any) -> Any:
        call = self.call.future(*args, **kwargs)
        call.add_done_callback(lambda done: done.cancelled() or done.exception() or self.counter.add())
        return call


def start_fleet(fleet: list[FederatedClient], stop: threading.Event) -> list[threading.Thread]:
    def follow(client: FederatedClient) -> None:
        try:
            client.run(stop)
        except Exception as exc:  # noqa: BLE001 - a device dying when the coordinator is stopped is expected
            if not stop.is_set():
                print(f"# {client.client_id} stopped: {type(exc).__name__}: {exc}", file=sys.stderr)

    threads = [threading.Thread(target=follow, args=(c,), name=c.client_id, daemon=True) for c in fleet]
    for t in threads:
        t.start()
    return threads


# ------------------------------------------------------------------ one configuration
def sample(proc: subprocess.Popen, polls: Counter) -> Sample:
    return Sample(time.time(), cpu_seconds(proc.pid), time.process_time(), polls.value)


def watch(outcome: Outcome, store: Store, proc: subprocess.Popen, rounds: int, deadline: float,
          polls: Counter) -> None:
    """Sample the clocks every POLL_S s until the store shows `rounds` finished rounds (the last
    sample comes after that), the coordinator exited or `deadline` passed; fills outcome."""
    while True:
        history = store.history()
        outcome.samples.append(sample(proc, polls))
        if proc.poll() is not None:
            outcome.note = "coordinator exited early"
            return
        outcome.rounds = history
        if len(history) >= rounds:
            return
        if time.monotonic() >= deadline:
            outcome.note = "time budget reached"
            return
        time.sleep(POLL_S)


def run_config(n: int, selected: int, fraction: float, args: argparse.Namespace, model: Path,
               data: tuple[np.ndarray, np.ndarray], payloads: Payloads, budget: float) -> Outcome:
    """One fleet size from a fresh coordinator; stops everything it started before returning."""
    outcome = Outcome(n, selected)
    deadline = time.monotonic() + budget
    stop, polls = threading.Event(), Counter()
    with tempfile.TemporaryDirectory(prefix="bench_federated_") as tmp:
        proc, port = start_coordinator(model, Path(tmp), selected, fraction, args.rounds, budget)
        store, channels, threads = None, [], []
        try:
            store = Store(Path(tmp) / "c.db")
            fleet, channels = make_fleet(f"127.0.0.1:{port}", *data, n, polls)
            began = time.perf_counter()
            with ThreadPoolExecutor(16) as pool:
                list(pool.map(FederatedClient.enrol, fleet))
            outcome.enrol_s = time.perf_counter() - began
            outcome.samples.append(sample(proc, polls))  # before any device asks for work
            threads = start_fleet(fleet, stop)
            watch(outcome, store, proc, args.rounds, deadline, polls)
            if outcome.rounds:
                check_payloads(store, outcome.rounds, payloads)
        finally:
            shut_down(proc, channels, threads, stop, graceful=not outcome.note)
            if store is not None:
                store.close()
    return outcome


def shut_down(proc: subprocess.Popen, channels: list[grpc.Channel], threads: list[threading.Thread],
              stop: threading.Event, graceful: bool) -> None:
    """After the last round the coordinator tells every device to stop and exits by itself;
    otherwise (or if it takes over 15 s) devices are stopped and the coordinator terminated."""
    if graceful:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
    stop.set()
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    proc.stdout.close()
    for t in threads:
        t.join(timeout=10)
    for c in channels:
        c.close()


# ------------------------------------------------------------------ table
def window(o: Outcome) -> tuple[float, Sample, float] | None:
    """(length in s, clock increments, widest sample gap in s) over the round window: round 1's
    opened_at to the last finished round's finished_at (the store's times), the clocks linearly
    interpolated between the samples around those instants. None without a finished round."""
    if not o.rounds or len(o.samples) < 2:
        return None
    t = np.array([s.wall for s in o.samples])
    t0, t1 = o.rounds[0].opened_at, o.rounds[-1].finished_at
    if not t[0] <= t0 < t1 <= t[-1]:
        return None
    inside = t[max(0, np.searchsorted(t, t0) - 1): np.searchsorted(t, t1) + 1]

    def grew(name: str) -> float:
        values = [getattr(s, name) for s in o.samples]
        return float(np.interp(t1, t, values) - np.interp(t0, t, values))

    increments = Sample(t1 - t0, grew("coordinator_cpu"), grew("fleet_cpu"), round(grew("polls")))
    return t1 - t0, increments, float(np.diff(inside).max())


def row(o: Outcome, payloads: Payloads) -> list[object]:
    """A table row; the figures per round cover the round window (see `window`), so a
    configuration stopped by its budget reports the rounds it finished."""
    done = len(o.rounds)
    head = [o.clients, o.selected, f"{done} ({o.note})" if o.note else done]
    tail = [f"{o.enrol_s:.1f}", f"{payloads.parameters / 1024:.1f}+{payloads.delta / 1024:.1f}",
            f"{payloads.model / 1024:.1f}"]
    measured = window(o)
    if measured is None:
        return [*head, "-", "-", "-", "-", "-", *tail]
    span, grew, _ = measured
    wall = float(np.median([r.finished_at - r.opened_at for r in o.rounds]))
    polls = f"{grew.polls / span:,.0f} ({5 * o.clients:,})"
    return [*head, f"{wall:.2f}", f"{grew.coordinator_cpu / done:.2f}", f"{100 * grew.coordinator_cpu / span:.0f}%",
            f"{grew.fleet_cpu / done:.2f}", polls, *tail]


def skipped(n: int, selected: int, why: str) -> list[object]:
    return [n, selected, f"skipped ({why})", *["-"] * (len(HEADERS) - 3)]


def flower_row() -> list[object]:
    try:
        import flwr
    except ImportError:
        return ["flwr", "-", "flwr not installed", *["-"] * (len(HEADERS) - 3)]
    return ["flwr", "-", f"flwr {flwr.__version__} installed, not measured here", *["-"] * (len(HEADERS) - 3)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="10,100,500", help="comma-separated fleet sizes (10,100,500)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per fleet size (3)")
    parser.add_argument("--select", type=int, default=10, help="devices selected per round (10)")
    parser.add_argument("--fraction-fit", type=float, default=0.0,
                        help="select int(F * N) per round instead of --select (0: use --select)")
    parser.add_argument("--budget", type=float, default=75.0, help="seconds per fleet size at most (75)")
    parser.add_argument("--total-budget", type=float, default=210.0,
                        help="skip the remaining fleet sizes once this many seconds are spent (210)")
    parser.add_argument("--markdown", action="store_true", help="print README table rows")
    args = parser.parse_args(argv)

    x, y, _, _ = digits()
    host, began = machine(), time.monotonic()  # the load average before this script adds to it
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_federated_model_") as tmp:
        model = save_model(make_trainable(mlp((64, 32, 10)), optimizer=("sgd", {"lr": LR})), Path(tmp) / "m.erm")
        payloads = payload_sizes(model)
        for n in (int(c) for c in args.clients.split(",")):
            selected = min(n, max(1, int(args.fraction_fit * n)) if args.fraction_fit else args.select)
            fraction = args.fraction_fit or selected / n
            left = args.total_budget - (time.monotonic() - began)
            if left < 5:
                rows.append(skipped(n, selected, "total time budget spent"))
                continue
            outcome = run_config(n, selected, fraction, args, model, (x, y), payloads, min(args.budget, left))
            rows.append(row(outcome, payloads))
            measured = window(outcome)
            gap = "" if measured is None else f"; clocks sampled at most {1e3 * measured[2]:.0f} ms apart"
            print(f"# {n} clients done after {time.monotonic() - began:.0f} s{gap}", file=sys.stderr)
    rows.append(flower_row())
    how = f"fraction_fit {args.fraction_fit}" if args.fraction_fit else f"{args.select} selected per round"
    print(f"# {host}; MLP 64-32-10, FedAvg, {how}, {EPOCHS} epoch, batch {BATCH}, SGD lr {LR}, "
          f"IID digits ({len(y)} examples), loopback gRPC, coordinator in its own process; "
          f"{args.rounds} rounds per fleet size, {time.monotonic() - began:.0f} s in all")
    print_table(HEADERS, rows, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
