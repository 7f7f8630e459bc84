"""Compute without a bound: a 4-byte change to a valid .erm makes conv1 of a small CNN read a
(960, 3, 16, 16) weight table as its input, so the rest of the network runs at batch 960.
Memory stays under the default budget; only the work budget stops it.

Three cases, each in a fresh process (its own peak RSS), on the same model sizes:
  honest     the unmodified model: load and one batch-1 run
  unbounded  the mutated model without a work budget: load and one run (killed at the deadline)
  refused    the mutated model with a work budget of 10x the honest model's estimate: the time
             until Interpreter raises WorkBudgetError

    python -m benchmarks.attacks.work [--duration 60] [--size 16] [--device cpu]

The figures to watch: refused seconds and RSS stay near the honest ones, and unbounded/refused
is the time the budget saves. `run_all(duration_s)` returns the same figures as a dict.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
ROWS = 960  # the table's rows: the batch the mutated network runs at
BUDGET_FACTOR = 10  # the budget, in honest-model estimates


def models(size: int = 16) -> tuple[bytes, bytes]:
    """(honest, mutated) .erm bytes of tests.runtime.graphs.table_cnn at `size` x `size`."""
    sys.path.insert(0, str(ROOT))
    from edgerun.runtime.writer import serialize
    from tests.runtime.graphs import table_cnn
    from tests.runtime.mutate import repoint_input

    honest = serialize(table_cnn(rows=ROWS, size=size))
    return honest, repoint_input(honest, "conv1", 0, "table")


def run_case(case: str, size: int, budget: int | None, device: str) -> dict[str, Any]:
    """Load (and except for `refused`, run) one model in this process; seconds, estimate, outcome."""
    import numpy as np

    from edgerun.runtime import Interpreter
    from edgerun.runtime.errors import WorkBudgetError

    honest, mutated = models(size)
    start = time.perf_counter()
    try:
        it = Interpreter(honest if case == "honest" else mutated, device=device, work_budget=budget)
        y = it.run({"x": np.zeros((1, 3, size, size), np.float32)})["y"]
        outcome, macs = f"ran: y {list(y.shape)}", it.estimated_macs()
    except WorkBudgetError as exc:
        outcome, macs = f"refused: {exc}", None
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "estimated_macs": macs, "outcome": outcome,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _peak_rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _in_child(case: str, size: int, budget: int | None, device: str, deadline_s: float) -> dict[str, Any]:
    """run_case in a fresh interpreter process, killed after `deadline_s` (then its last peak RSS)."""
    args = [sys.executable, "-m", "benchmarks.attacks.work", "--case", case, "--size", str(size),
            "--device", device] + ([] if budget is None else ["--budget", str(budget)])
    child = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    start, peak = time.perf_counter(), None
    while child.poll() is None and time.perf_counter() - start < deadline_s:
        peak = _peak_rss_mib(child.pid) or peak
        time.sleep(0.05)
    if child.poll() is None:
        child.kill()
        child.wait()
        return {"seconds": time.perf_counter() - start, "estimated_macs": None, "peak_rss_mib": peak,
                "outcome": f"killed at the {deadline_s:.0f} s deadline"}
    out = child.stdout.read()
    child.stdout.close()
    if child.returncode:
        raise RuntimeError(f"case {case!r} exited with {child.returncode}: {out[-500:]}")
    return json.loads(out.strip().splitlines()[-1])


def run_all(duration_s: float, size: int = 16, device: str = "cpu") -> dict[str, dict]:
    """The three cases (see the module docstring) and a summary; the unbounded run gets what is
    left of `duration_s` after the other two (at least 5 s)."""
    from edgerun.runtime import Interpreter

    honest, _ = models(size)
    budget = BUDGET_FACTOR * Interpreter(honest, device="cpu").estimated_macs()
    start = time.perf_counter()
    results = {"honest": _in_child("honest", size, None, device, duration_s),
               "refused": _in_child("refused", size, budget, device, duration_s)}
    left = max(5.0, duration_s - (time.perf_counter() - start))
    results["unbounded"] = _in_child("unbounded", size, None, device, left)
    results["refused"]["work_budget_macs"] = budget
    unbounded, refused = results["unbounded"], results["refused"]
    results["summary"] = {
        "unbounded_over_refused_seconds": unbounded["seconds"] / refused["seconds"],
        "rss_saved_mib": (unbounded["peak_rss_mib"] or 0) - refused["peak_rss_mib"],
        "unbounded_finished": unbounded["outcome"].startswith("ran"),
    }
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds for all three cases")
    parser.add_argument("--size", type=int, default=16, help="input height and width (default 16)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--case", choices=("honest", "unbounded", "refused"), help=argparse.SUPPRESS)
    parser.add_argument("--budget", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.case:  # one case, in the process run_all started
        print(json.dumps(run_case(args.case, args.size, args.budget, args.device)))
        return 0
    results = run_all(args.duration, args.size, args.device)
    for case in ("honest", "unbounded", "refused"):
        r = results[case]
        rss = "?" if r["peak_rss_mib"] is None else f"{r['peak_rss_mib']:.0f}"
        print(f"{case:<9} {r['seconds']:8.3f} s  peak RSS {rss:>5} MiB  {r['outcome'][:100]}")
    summary = results["summary"]
    print(f"unbounded / refused time: {summary['unbounded_over_refused_seconds']:.0f}x, "
          f"RSS saved {summary['rss_saved_mib']:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
