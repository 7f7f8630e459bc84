"""Simulation engines at fleet scale: 10,000 virtual clients, 100 per round, thread and Ray.

    .venv/bin/python benchmarks/bench_simulation_engines.py [--clients 10000] [--per-round 100]
        [--rounds 5] [--grpc-clients 100] [--examples 14] [--secagg] [--markdown]

Workload: sklearn digits as federated.demo.digits_setup makes it (80/20 stratified split,
standardized, MLP 64-64-10, SGD lr 0.1), E = 5, B = 10, FedAvg, IID partition, seed 0. Every
client holds `--examples` training examples (14: what 100 clients get from digits' 1,437), so
the 10,000-client fleet trains on digits' training set repeated to 140,000 rows. A round targets
`--per-round` clients, selects 30 % more (over-selection) and closes when the target reported.
Secure aggregation off unless `--secagg` (then 130 clients per round run the protocol).

Rows, each in a fresh process of its own (its memory apart):
  grpc   @ --grpc-clients   the anchor: one FederatedClient thread per device over loopback gRPC
                            (federated.simulation), every device in every round (a fleet that
                            size cannot select 100 of 130); it cannot hold 10,000 devices
  thread @ --grpc-clients   the same fleet in the thread engine (federated.engines)
  thread @ --clients        10,000 virtual clients, trained by one thread per CPU
  ray    @ --clients        the same, trained by one Ray actor per CPU (a local Ray started and
                            shut down inside the row; its start is in "setup")

Columns:
  s/round       median over rounds of finished_at - opened_at from the coordinator's store
  rounds/min    rounds / (last round's finished_at - first round's opened_at) * 60
  setup s       the process's wall time in simulate() outside those rounds: enrolment (keys
                for every client, one SQLite transaction), the workers (Ray's start), the end
  RSS MiB       peak resident memory: the row's own process (ru_maxrss) and, sampled every
                0.1 s, the sum over it and every process it started (Ray's raylet, GCS and
                workers; pages shared between processes are counted in each)
  accuracy      test accuracy of the last global model
  vs grpc       s/round of the grpc row over this row's (same fleet size: a like-for-like
                ratio; at 10,000 clients the work per round is the same 100 clients)
Linux only (/proc).
"""

# ruff: noqa: E402 - the repository root goes on sys.path before project imports
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._harness import print_table


def child(spec: dict) -> dict:
    """Run one simulation (in this process) and return its figures."""
    import numpy as np

    from edgerun.federated import partition
    from edgerun.federated.demo import digits_setup
    from edgerun.federated.secagg.options import SecAggOptions
    from edgerun.federated.simulation import SimulationConfig, simulate

    clients, per_round = spec["clients"], spec["per_round"]
    with tempfile.TemporaryDirectory() as tmp:
        model, x, y, x_test, y_test = digits_setup(tmp)
        rows = np.arange(clients * spec["examples"]) % len(y)  # digits repeated to `examples` per client
        x, y = x[rows], y[rows]
        assert all(len(p) == spec["examples"] for p in partition.iid(len(y), clients, 0))
        config = SimulationConfig(num_clients=clients, rounds=spec["rounds"], fraction_fit=per_round / clients,
                                  epochs=5, batch_size=10, lr=0.1, seed=0, round_timeout=300.0,
                                  secagg=SecAggOptions(stage_timeout=60.0) if spec["secagg"] else None,
                                  engine=spec["engine"])
        started = time.perf_counter()
        history = simulate(model, x, y, x_test, y_test, config)
        wall = time.perf_counter() - started
    done = [r for r in history if r.status == "aggregated"]
    window = history[-1].finished_at - history[0].opened_at
    return {"rounds": len(done), "failed": len(history) - len(done),
            "per_round": statistics.median(r.finished_at - r.opened_at for r in history),
            "rounds_per_minute": len(history) / window * 60, "setup": wall - window,
            "selected": done[-1].metrics["selected"] if done else 0,
            "reports": done[-1].metrics["reports"] if done else 0,
            "accuracy": done[-1].metrics.get("test_accuracy", float("nan")) if done else float("nan"),
            "own_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def tree_rss(root: int) -> float:
    """MiB resident in `root` and all its descendants now (VmRSS from /proc)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    family, frontier = {root}, [root]
    while frontier:
        frontier = [pid for pid, parent in parents.items() if parent in frontier and pid not in family]
        family.update(frontier)
    total = 0.0
    for pid in family:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
        except OSError:
            continue
    return total


def measure(spec: dict) -> dict:
    """Run `spec` in a fresh process, sampling its process tree's memory."""
    process = subprocess.Popen([sys.executable, __file__, "--child", json.dumps(spec)], stdout=subprocess.PIPE,
                               text=True, cwd=ROOT)
    peak = 0.0
    while process.poll() is None:
        peak = max(peak, tree_rss(process.pid))
        time.sleep(0.1)
    out = process.stdout.read()
    if process.returncode != 0:
        raise SystemExit(f"{spec['engine']} @ {spec['clients']} failed (exit {process.returncode})")
    return {**json.loads(out.strip().splitlines()[-1]), "tree_rss": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--per-round", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--grpc-clients", type=int, default=100)
    parser.add_argument("--examples", type=int, default=14, help="training examples per client")
    parser.add_argument("--secagg", action="store_true", help="secure aggregation on")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(json.loads(args.child))))
        return
    common = {"rounds": args.rounds, "examples": args.examples, "secagg": args.secagg}
    small = args.grpc_clients
    plan = [("grpc", small, small), ("thread", small, small), ("thread", args.clients, args.per_round),
            ("ray", args.clients, args.per_round)]
    print(f"digits MLP 64-64-10, E=5 B=10 lr 0.1, {args.examples} examples per client, {args.rounds} rounds, "
          f"secure aggregation {'on' if args.secagg else 'off'}, {os.cpu_count()} CPUs", flush=True)
    results = []
    for engine, clients, per_round in plan:
        result = measure({**common, "engine": engine, "clients": clients, "per_round": per_round})
        results.append((engine, clients, result))
        print(f"  {engine} @ {clients}: {json.dumps(result)}", file=sys.stderr, flush=True)
    anchor = results[0][2]["per_round"]
    rows = [[engine, f"{clients:,}", f"{r['selected']}/{r['reports']}", f"{r['rounds']}/{r['rounds'] + r['failed']}",
             f"{r['per_round']:.2f}", f"{r['rounds_per_minute']:.1f}", f"{r['setup']:.1f}", f"{r['own_rss']:.0f}",
             f"{r['tree_rss']:.0f}", f"{r['accuracy']:.3f}", f"{anchor / r['per_round']:.2f}x"]
            for engine, clients, r in results]
    print_table(["engine", "clients", "selected/reported", "aggregated", "s/round", "rounds/min", "setup s",
                 "RSS MiB (own)", "RSS MiB (all)", "accuracy", "vs grpc"], rows, args.markdown)


if __name__ == "__main__":
    main()
