"""The digits run under device conditions: rounds and time to a target accuracy, realistic vs always available.

Workload: sklearn digits as federated.demo.digits_setup makes it (80/20 stratified split,
standardized, MLP 64-64-10, SGD lr 0.1), `--clients` devices (100), IID, E=5, B=10, FedAvg
with a fixed cohort of `--cohort` devices (10) per round plus 30 % over-selection, the round
closing when the cohort's number reported; thread engine (federated.engines), secure
aggregation off, seed 0. A run starts on day 1 of the simulated clock at one of `--start-hours`
UTC (0, 6, 12 and 18: 16:00-19:00, 22:00-01:00, 04:00-07:00 and 10:00-13:00 in the US time zones;
the always row does not depend on it) and runs `--rounds` rounds (40).

Rows (federated.availability, the same devices and work times on the same seed):
  always     AlwaysAvailable: every device eligible all the time (the anchor)
  daily      DailyPattern over the US time zones (UTC-8 to UTC-5): eligible only while charging,
             idle and unmetered, by the NIGHTLY curve; a device whose session ends mid-round drops
  daily+w    the same, selection weighted by past availability (mean session length)
Each device's round takes its work time (240 s median, log-normal speed factor) on the simulated
clock; a round lasts until its goal-th report (federated.availability.round_end).

Columns:
  rounds       rounds until the global model's test accuracy first reaches `--target` (0.90)
  sim h        simulated hours from the start to the close of that round
  idle h       of those, hours the clock waited for enough eligible devices
  drop %       devices dropped by their conditions / devices selected, over those rounds
  real s       wall-clock seconds of those rounds on this machine (first opened to that finished,
               from the store; waiting for eligible devices costs real time too: ~0.3 s a step)
  run s        wall-clock seconds of the whole simulate() call (all `--rounds`)
  vs always    rounds and simulated hours of the row over the always row's

    .venv/bin/python benchmarks/bench_availability.py [--clients 100] [--cohort 10] [--rounds 40]
        [--target 0.9] [--start-hours 0,6,12,18] [--markdown]
"""

# ruff: noqa: E402 - the repository root goes on sys.path before project imports
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._harness import machine, print_table
from edgerun.federated.availability import DAY, HOUR, AlwaysAvailable, DailyPattern, Fleet
from edgerun.federated.demo import digits_setup
from edgerun.federated.simulation import SimulationConfig, simulate
from edgerun.federated.strategies import FedAvg

HEADERS = ["devices", "rounds", "sim h", "idle h", "drop %", "real s", "run s", "final acc",
           "vs always (rounds, sim h)"]


def run(workdir: Path, name: str, hour: float, args: argparse.Namespace) -> dict[str, Any]:
    """One row: simulate() under `name`'s conditions from `hour` UTC; the figures at the target."""
    model, x, y, x_test, y_test = digits_setup(workdir)
    start = DAY + hour * HOUR
    fleet = Fleet(AlwaysAvailable(seed=0) if name == "always" else DailyPattern(seed=0), start=start)
    config = SimulationConfig(num_clients=args.clients, rounds=args.rounds, epochs=5, batch_size=10, lr=0.1, seed=0,
                              secagg=None, engine="thread", round_timeout=60.0, availability=fleet,
                              selection="availability" if name == "daily+w" else "uniform")
    strategy = FedAvg(fraction_fit=0.0, min_fit_clients=args.cohort, min_available_clients=args.cohort,
                      local_epochs=5, batch_size=10, client_lr=0.1)
    began = time.monotonic()
    history = simulate(model, x, y, x_test, y_test, config, strategy=strategy)
    took = time.monotonic() - began
    reached = next((r for r in history if r.metrics.get("test_accuracy", 0.0) >= args.target), None)
    last = history[-1] if reached is None else reached
    logs = [log for log in fleet.rounds if log.round <= last.round]
    opened = min(r.opened_at for r in history)
    simulated = logs[-1].closed - start if logs else 0.0
    return {"name": name, "reached": reached is not None, "rounds": last.round, "sim_h": simulated / HOUR,
            "idle_h": (simulated - sum(g.closed - g.opened for g in logs)) / HOUR,
            "drop": sum(g.dropped for g in logs) / max(1, sum(g.selected for g in logs)),
            "real_s": last.finished_at - opened, "run_s": took,
            "accuracy": history[-1].metrics.get("test_accuracy", float("nan"))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=100, help="simulated devices (100)")
    parser.add_argument("--cohort", type=int, default=10, help="devices a round targets (10)")
    parser.add_argument("--rounds", type=int, default=40, help="rounds per run (40)")
    parser.add_argument("--target", type=float, default=0.90, help="test accuracy to reach (0.90)")
    parser.add_argument("--start-hours", default="0,6,12,18", help="UTC hours of day 1 the runs start at (0,6,12,18)")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    hours = [float(h) for h in args.start_hours.split(",")]
    rows, anchor = [], None
    for name, hour in [("always", hours[0]), *((n, h) for h in hours for n in ("daily", "daily+w"))]:
        with tempfile.TemporaryDirectory() as tmp:
            r = run(Path(tmp), name, hour, args)
        anchor = anchor or r
        mark = "" if r["reached"] else " (not reached)"
        label = name if name == "always" else f"{name} @{hour:02g}h"
        rows.append([label, f"{r['rounds']}{mark}", f"{r['sim_h']:.2f}", f"{r['idle_h']:.2f}", f"{100 * r['drop']:.1f}",
                     f"{r['real_s']:.1f}", f"{r['run_s']:.1f}", f"{r['accuracy']:.4f}",
                     f"{r['rounds'] / anchor['rounds']:.2f}x, {r['sim_h'] / max(anchor['sim_h'], 1e-9):.1f}x"])
    print(f"# digits to test accuracy {args.target} with {args.clients} devices, cohort {args.cohort}; "
          f"{machine()}")
    print_table(HEADERS, rows, args.markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
