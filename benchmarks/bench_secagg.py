"""Secure aggregation cost: client masking time, upload expansion, coordinator unmasking time.

For each n (clients) x m (parameters) x dropout, one whole in-process round
(federated.secagg.workflow.run_round) with real cryptography: X25519 + HKDF-SHA256,
AES-GCM shares, Shamir over 2^521 - 1, AES-256-CTR masks, b = 32 (uint32 ring). SecAgg+
neighbour graph with k = 20 (complete graph for n <= 64, as Google's implementation).
Dropping clients leave after sharing keys (the costly case: their pairwise masks must be
rebuilt from revealed mask keys). The sum is checked against the plain sum before anything
is printed.

Columns
  mask/client   client time for stage "masked" (decrypt shares, expand self + k pairwise
                masks of m elements, add), median over clients (s)
  share/client  client time for advertise + share (keys, Shamir, AES-GCM), median (s)
  unmask        coordinator time for unmasking: check reveals, rebuild secrets, remove masks (s)
  expansion     bytes one client uploads in all stages (masked vector + its protocol
                messages, protobuf-encoded) / the plain float32 delta (4 m bytes)

    .venv/bin/python benchmarks/bench_secagg.py [--clients 10,100,500] [--params 100000,1000000]
        [--dropout 0,0.1] [--neighbours 20] [--markdown]
"""

# ruff: noqa: E402 - the repository root goes on sys.path before project imports
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._harness import machine, print_table
from edgerun.federated.auth import KeyPair
from edgerun.federated.protos import federated_pb2 as pb
from edgerun.federated.secagg import graph
from edgerun.federated.secagg.messages import (
    MASK_KEY,
    AdvertiseKeys,
    ConsistencyProof,
    EncryptedShare,
    RevealedShare,
    SecAggParams,
)
from edgerun.federated.secagg.options import SecAggOptions
from edgerun.federated.secagg.wire import keys_to_pb, share_to_pb
from edgerun.federated.secagg.workflow import run_round

# Bonawitz et al. 2017 (CCS), as reported in the paper: 1.73x expansion
# for 2^10 users and 2^20 16-bit values (they pack 16-bit inputs in a larger ring).
BONAWITZ_EXPANSION = 1.73


def protocol_bytes(client_id: str, degree: int, bits: int, length: int) -> int:
    """Bytes one client sends in a round: its SecAgg requests (protobuf) and the
    packed masked vector, for a client with `degree` neighbours that survives."""
    keys = keys_to_pb(AdvertiseKeys(client_id, bytes(32), bytes(32), bytes(32), bytes(64)))
    advertise = pb.SecAggRequest(round=1, stage="advertise", keys=keys)
    share = EncryptedShare(client_id, "device-0000", bytes(12), bytes(2 * 66 + 16))
    shares = pb.SecAggRequest(round=1, stage="share", shares=[share_to_pb(share)] * degree)
    proof = ConsistencyProof(client_id, bytes(64))
    consistency = pb.SecAggRequest(round=1, stage="consistency",
                                   proof=pb.SecAggProof(client_id=proof.client_id, signature=proof.signature))
    reveal = RevealedShare("device-0000", MASK_KEY, 1, bytes(66))
    unmask = pb.SecAggRequest(round=1, stage="unmask", revealed=[pb.SecAggReveal(
        owner=reveal.owner, kind=reveal.kind, x=reveal.x, y=reveal.y)] * (degree + 1))
    auth = pb.Auth(client_id=client_id, timestamp=0.0, nonce=bytes(16), signature=bytes(64)).ByteSize()
    messages = sum(m.ByteSize() + auth for m in (advertise, shares, consistency, unmask))
    return messages + length * ((bits + 7) // 8) + 200  # + the masked upload's header


def one(n: int, m: int, dropout: float, neighbours: int, keys: list[KeyPair]) -> list[object]:
    ids = [f"device-{i:04d}" for i in range(n)]
    options = SecAggOptions(neighbours=neighbours)
    params = SecAggParams.from_config(options.round_config(1, n, [(m,)], 1.0))
    rng = np.random.default_rng(n + m)  # benchmark data only
    base = rng.integers(0, 1 << 32, m + 1, dtype=np.uint64).astype(np.uint32)
    inputs = {c: base for c in ids}  # one shared array: memory stays O(m) for any n
    dropped = {c: "masked" for c in ids[1 : 1 + int(round(dropout * n))]}
    start = time.perf_counter()
    outcome = run_round(params, inputs, {c: k for c, k in zip(ids, keys, strict=False)}, dropped)
    wall = time.perf_counter() - start
    survivors = len(outcome.survivors)
    want = (base.astype(np.uint64) * survivors % (1 << 32)).astype(np.uint32)
    if not np.array_equal(outcome.total, want):
        raise SystemExit(f"n={n} m={m}: unmasked sum differs from the plain sum")
    sending = n - len(dropped)
    mask = outcome.seconds["client:masked"] / sending
    share = (outcome.seconds["client:advertise"] + outcome.seconds["client:share"]) / n
    degree = len(graph.neighbours(ids, neighbours, bytes(32), options.complete_below)[ids[0]])
    expansion = protocol_bytes(ids[0], degree, 32, m + 1) / (4 * m)
    return [n, f"{m:,}", f"{dropout:.0%}", degree, f"{share:.4f}", f"{mask:.3f}",
            f"{outcome.seconds['server:unmask']:.2f}", f"{expansion:.4f}x", f"{BONAWITZ_EXPANSION}x",
            f"{wall:.1f}"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", default="10,100,500")
    parser.add_argument("--params", default="100000,1000000")
    parser.add_argument("--dropout", default="0,0.1")
    parser.add_argument("--neighbours", type=int, default=20)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    clients = [int(v) for v in args.clients.split(",")]
    keys = [KeyPair.generate() for _ in range(max(clients))]
    rows = []
    for n in clients:
        for m in (int(v) for v in args.params.split(",")):
            for dropout in (float(v) for v in args.dropout.split(",")):
                rows.append(one(n, m, dropout, args.neighbours, keys))
                print(f"done n={n} m={m} dropout={dropout}", file=sys.stderr, flush=True)
    print(f"# {machine()}; cpu count {os.cpu_count()}")
    print_table(["n", "m", "drop", "degree", "share/client s", "mask/client s", "unmask s", "expansion",
                 "Bonawitz'17", "round wall s"], rows, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
