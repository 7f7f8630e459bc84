"""Hierarchical secure aggregation at 1,000 clients per round: one flat SecAgg+ instance (the
anchor) against the round split into cohorts of at most max_cohort (federated.secagg.cohorts).

Each configuration runs one whole round with real cryptography and real wire encoding:
clients (SecAggClient, in this process) talk protobuf bytes (federated.secagg.wire, packed
masked vectors) through a pipe to the coordinator's protocol object (SecureRound, or
CohortedRound) running alone in a spawned server process, driven by
federated.secagg.workflow.drive_round. Dropping clients leave after sharing keys (the costly
case: the server rebuilds their mask keys and removes their pairwise masks). The unmasked
sum is checked against the plain sum of the survivors' inputs before anything is printed.

Columns (per client: mean over the round's clients)
  client cpu s      CPU seconds of one client in the round: its protocol steps plus encoding
                    its requests and decoding the replies (most of it: verifying the Ed25519
                    signatures of every cohort member's keys and survivor-list proof)
  client sent KB    request bytes (protobuf, with the auth block) and the packed masked vector
  client recv KB    reply bytes: rosters, inboxes, survivor lists and proofs
  server cpu s      CPU seconds of the server process for the round (decode, check, reply,
                    close stages, unmask)
  server MB sent    all reply bytes (rosters and proof lists grow with cohort x clients)
  server peak MB    peak RSS of the server process above its RSS before the round
and the ratio of each to the flat round's (the anchor, same run).

    .venv/bin/python benchmarks/bench_secagg_cohorts.py [--clients 1000] [--max-cohort 100,200]
        [--params 10000] [--neighbours 20] [--dropout 0.05] [--markdown]
"""

# ruff: noqa: E402 - the repository root goes on sys.path before project imports
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._harness import machine, print_table
from edgerun.federated.auth import KeyPair
from edgerun.federated.protos import federated_pb2 as pb
from edgerun.federated.secagg import errors
from edgerun.federated.secagg.cohorts import CohortedRound, split_cohorts
from edgerun.federated.secagg.messages import SecAggParams
from edgerun.federated.secagg.options import SecAggOptions
from edgerun.federated.secagg.quantize import pack, unpack
from edgerun.federated.secagg.session import SecureRound
from edgerun.federated.secagg.wire import fill_request, payload_of, reply_from_pb, reply_to_pb
from edgerun.federated.secagg.workflow import drive_round
from edgerun.federated.stages import Stage

AUTH = pb.Auth(client_id="device-0000", timestamp=time.time(), nonce=bytes(16), signature=bytes(64))


def status_kb(field: str) -> int:
    """A memory figure of this process from /proc/self/status, in KiB (Linux): "VmRSS" (now)
    or "VmHWM" (the peak since exec; getrusage's ru_maxrss would also count the parent's
    pages the spawned process held between fork and exec)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(f"{field}:"))


# ---------------------------------------------------------------- the server process


def serve(conn: Any) -> None:
    """The coordinator's protocol object, answering the calls of `Remote` until "end"."""
    _, configs, members, device_keys, deadline, timeout = conn.recv()
    import threading

    base, start = status_kb("VmRSS"), time.process_time()
    params = [SecAggParams.from_config(c) for c in configs]
    if len(params) == 1:
        protocol: Any = SecureRound(params[0], members[0], device_keys, len(members[0]), deadline, timeout)
    else:
        protocol = CohortedRound.open(params, members, device_keys, sum(map(len, members)), deadline, timeout)
    condition, stop = threading.Condition(), threading.Event()
    lengths = {c: p.length for p, m in zip(params, members, strict=True) for c in m}
    bits = params[0].quantization.bits
    while True:
        call = conn.recv()
        try:
            if call[0] == "end":
                conn.send((time.process_time() - start, status_kb("VmHWM"), base))
                return
            if call[0] == "handle":
                request = pb.SecAggRequest.FromString(call[2])
                reply = protocol.handle(call[1], request.stage, payload_of(request))
                result: Any = reply_to_pb(reply).SerializeToString()
            elif call[0] == "masked":
                result = protocol.receive_masked(call[1], unpack(call[2], bits, lengths[call[1]]))
            elif call[0] == "withdraw":
                result = protocol.withdraw(call[1])
            elif call[0] == "run_stage":
                with condition:
                    result = protocol.run_stage(Stage(call[1]), condition, stop)
            else:
                result = protocol.survivor_list()
            conn.send(("ok", result))
        except errors.SecAggError as exc:
            conn.send(("error", type(exc).__name__, str(exc)))


class Remote:
    """The protocol interface drive_round uses, over protobuf bytes to `serve`; meters what
    each client sends and receives and the CPU this process spends encoding and decoding."""

    def __init__(self, conn: Any, params: dict[str, SecAggParams]) -> None:
        self.conn, self.params = conn, params
        self.sent: dict[str, int] = dict.fromkeys(params, 0)
        self.received: dict[str, int] = dict.fromkeys(params, 0)
        self.codec_cpu = 0.0  # client-side encoding and decoding

    def _call(self, *call: Any) -> Any:
        self.conn.send(call)
        answer = self.conn.recv()
        if answer[0] == "error":
            raise getattr(errors, answer[1])(answer[2])
        return answer[1]

    def params_of(self, client_id: str) -> SecAggParams:
        return self.params[client_id]

    def handle(self, client_id: str, stage: str, payload: Any) -> Any:
        start = time.process_time()
        request = pb.SecAggRequest(round=self.params[client_id].round, auth=AUTH)
        fill_request(request, Stage(stage), payload)
        blob = request.SerializeToString()
        self.codec_cpu += time.process_time() - start
        self.sent[client_id] += len(blob)
        out = self._call("handle", client_id, blob)
        start = time.process_time()
        reply = reply_from_pb(pb.SecAggReply.FromString(out))
        self.codec_cpu += time.process_time() - start
        self.received[client_id] += len(out)
        return reply

    def receive_masked(self, client_id: str, vector: np.ndarray) -> None:
        start = time.process_time()
        p = self.params[client_id]
        blob = pack(vector, p.quantization.bits)
        header = pb.MaskedHeader(auth=AUTH, round=p.round, bits=p.quantization.bits, length=p.length,
                                 total_size=len(blob), sha256=bytes(32))
        self.codec_cpu += time.process_time() - start
        self.sent[client_id] += header.ByteSize() + len(blob)
        self._call("masked", client_id, blob)

    def withdraw(self, client_id: str) -> None:
        self._call("withdraw", client_id)

    def run_stage(self, stage: Stage, condition: Any, stop: Any) -> np.ndarray | None:
        return self._call("run_stage", str(stage))

    def survivor_list(self) -> list[str]:
        return self._call("survivors")


# ---------------------------------------------------------------- one configuration


def one(ids: list[str], keys: dict[str, KeyPair], max_cohort: int | None, length: int, neighbours: int,
        drops: dict[str, str]) -> dict[str, float]:
    """Run one round (flat when max_cohort is None); the figures of the columns."""
    options = SecAggOptions(neighbours=neighbours, max_cohort=max_cohort)
    members = split_cohorts(ids, max_cohort, np.random.default_rng(0))
    configs = [options.round_config(1, len(m), [(length - 1,)], 1.0, planned_for=len(ids)) for m in members]
    params = {c: SecAggParams.from_config(cfg) for cfg, m in zip(configs, members, strict=True) for c in m}
    rng = np.random.default_rng(len(ids))  # benchmark data only
    base = rng.integers(0, 1 << 32, length, dtype=np.uint64).astype(np.uint32)
    inputs = dict.fromkeys(ids, base)  # one shared array: memory stays O(length) for any n
    here, there = mp.get_context("spawn").Pipe()
    server = mp.get_context("spawn").Process(target=serve, args=(there,))
    server.start()
    try:
        here.send(("open", configs, members, {c: keys[c].public_bytes for c in ids}, time.time() + 3600, 3600.0))
        remote = Remote(here, params)
        outcome = drive_round(remote, inputs, keys, drops)
        here.send(("end",))
        server_cpu, peak_kb, base_kb = here.recv()
    finally:
        server.join(30)
    survivors = len(outcome.survivors)
    want = (base.astype(np.uint64) * survivors % (1 << 32)).astype(np.uint32)
    if not np.array_equal(outcome.total, want) or survivors != len(ids) - len(drops):
        raise SystemExit(f"max_cohort={max_cohort}: unmasked sum differs from the plain sum of the survivors")
    client_cpu = sum(v for k, v in outcome.seconds.items() if k.startswith("client:")) + remote.codec_cpu
    n = len(ids)
    return {"cohorts": len(members), "client cpu s": client_cpu / n, "client sent KB": sum(remote.sent.values()) / n
            / 1e3, "client recv KB": sum(remote.received.values()) / n / 1e3, "server cpu s": server_cpu,
            "server MB sent": sum(remote.received.values()) / 1e6, "server peak MB": (peak_kb - base_kb) / 1024}


COLUMNS = ["client cpu s", "client sent KB", "client recv KB", "server cpu s", "server MB sent", "server peak MB"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--max-cohort", default="100,200", help="cohort bounds to compare with the flat round")
    parser.add_argument("--params", type=int, default=10000, help="model parameters (ring elements - 1)")
    parser.add_argument("--neighbours", type=int, default=20)
    parser.add_argument("--dropout", type=float, default=0.05, help="fraction dropping after sharing keys")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    ids = [f"device-{i:04d}" for i in range(args.clients)]
    keys = {c: KeyPair.generate() for c in ids}
    drops = {c: "masked" for c in ids[:: max(1, round(1 / args.dropout))]} if args.dropout > 0 else {}
    results: dict[str, dict[str, float]] = {}
    for bound in [None, *(int(v) for v in args.max_cohort.split(","))]:
        name = f"flat SecAgg+ (k={args.neighbours})" if bound is None else f"cohorts of <= {bound}"
        results[name] = one(ids, keys, bound, args.params + 1, args.neighbours, drops)
        print(f"done {name}", file=sys.stderr, flush=True)
    anchor = next(iter(results.values()))
    rows = []
    for name, r in results.items():
        cells = [f"{r[c]:.3g} ({r[c] / anchor[c]:.2f}x)" if anchor[c] else f"{r[c]:.3g}" for c in COLUMNS]
        rows.append([name, int(r["cohorts"]), *cells])
    print(f"# {machine()}; cpu count {os.cpu_count()}")
    print(f"# {args.clients} clients per round, {args.params:,} parameters (b = 32), {len(drops)} drop after "
          f"sharing keys; ratio to the flat round in parentheses")
    print_table(["round", "cohorts", *COLUMNS], rows, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
