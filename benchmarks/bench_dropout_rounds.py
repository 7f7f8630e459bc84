"""Rounds under dropout: the issue's digits run, paced as production fleets are, beside the old pacing.

Workload: `edgerun federated simulate`'s own kind of run on sklearn digits (federated.demo.digits_setup),
`--clients` devices (50), IID, fraction fit 0.5, 20 % of the selected devices drop out of each round
(`--drop`), E=5, B=10, lr 0.1, grpc engine (a thread per device over loopback gRPC), secure aggregation
off and on (dropping devices leave at a random protocol stage).

  paced     what edgerun does now: 30 % over-selection, a round closes when its target number reported,
            and the simulator tells the coordinator when a device dropped (no deadline waited for)
  old       the pacing before (the anchor, measured in the same run): no over-selection, the report goal
            is the whole cohort and a dropped device is found out at the round deadline (`--deadline`,
            30 s as the issue measured); only `--old-rounds` rounds are run, and the 50-round time is
            extrapolated from their mean

    .venv/bin/python benchmarks/bench_dropout_rounds.py [--rounds 50] [--old-rounds 2] [--clients 50]
        [--drop 0.2] [--deadline 30] [--engine grpc|thread] [--markdown]
"""

# ruff: noqa: E402 - the repository root goes on sys.path before project imports
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._harness import machine, print_table
from edgerun.federated.demo import digits_setup
from edgerun.federated.secagg.options import SecAggOptions
from edgerun.federated.simulation import SimulationConfig, simulate


def run(workdir: Path, secure: bool, paced: bool, rounds: int, args: argparse.Namespace) -> dict[str, float]:
    model, x, y, x_test, y_test = digits_setup(workdir)
    config = SimulationConfig(
        num_clients=args.clients, rounds=rounds, fraction_fit=0.5, drop_probability=args.drop,
        drop_stage="random" if secure else "start", epochs=5, batch_size=10, lr=0.1, seed=0,
        round_timeout=args.deadline, over_selection=0.3 if paced else 0.0, report_drops=paced,
        secagg=SecAggOptions(stage_timeout=args.deadline / 3) if secure else None,
        engine=args.engine if paced else "grpc")
    started = time.monotonic()
    history = simulate(model, x, y, x_test, y_test, config)
    took = time.monotonic() - started
    done = [r for r in history if r.status == "aggregated"]
    return {"rounds": len(history), "aggregated": len(done), "seconds": took,
            "per_round": took / max(len(history), 1),
            "accuracy": done[-1].metrics.get("test_accuracy", float("nan")) if done else float("nan")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=50, help="rounds of the paced run (50)")
    parser.add_argument("--old-rounds", type=int, default=2, help="rounds of the old pacing, extrapolated (2)")
    parser.add_argument("--clients", type=int, default=50, help="simulated devices (50)")
    parser.add_argument("--drop", type=float, default=0.2, help="drop-out probability per selected device (0.2)")
    parser.add_argument("--deadline", type=float, default=30.0, help="round deadline in seconds (30)")
    parser.add_argument("--engine", choices=["grpc", "thread"], default="grpc",
                        help="engine of the paced run (the old pacing always runs on grpc) (grpc)")
    parser.add_argument("--markdown", action="store_true", help="print markdown tables")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    print(machine())
    rows = []
    for secure in (False, True):
        with tempfile.TemporaryDirectory() as tmp:
            paced = run(Path(tmp), secure, True, args.rounds, args)
        with tempfile.TemporaryDirectory() as tmp:
            old = run(Path(tmp), secure, False, args.old_rounds, args)
        old_total = old["per_round"] * args.rounds
        rows.append(["on" if secure else "off", f"{paced['aggregated']}/{paced['rounds']}",
                     f"{paced['seconds']:.1f}", f"{paced['per_round']:.2f}", f"{paced['accuracy']:.3f}",
                     f"{old['per_round']:.2f}", f"{old_total:.0f}", f"{paced['seconds'] / old_total:.3f}"])
    print(f"{args.clients} devices, {args.engine} engine, fraction 0.5, drop {args.drop}, {args.rounds} rounds, "
          "E=5 B=10 lr 0.1, "
          f"deadline {args.deadline:g} s")
    print_table(["secure aggregation", "aggregated/rounds", "paced s", "paced s/round", "final acc",
                 "old s/round", f"old s for {args.rounds} (extrapolated)", "paced/old"], rows, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
