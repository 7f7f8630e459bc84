"""Shared helpers for the benchmark scripts: interleaved timing and table printing.

Not a benchmark itself. Scripts import it as `benchmarks._harness` after putting
the repository root on sys.path.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence

import numpy as np


def time_interleaved(
    candidates: dict[str, Callable[[], object]], blocks: int, runs_per_block: int
) -> dict[str, np.ndarray]:
    """Per-call wall times in µs of each candidate, `blocks * runs_per_block` calls each.

    The candidates take turns block by block (the starting one rotates), so slow
    phases of a noisy machine hit all of them alike. Call them once each before
    this to warm up.
    """
    names = list(candidates)
    times = {name: np.empty(blocks * runs_per_block) for name in names}
    clock = time.perf_counter_ns
    for block in range(blocks):
        shift = block % len(names)
        for name in names[shift:] + names[:shift]:
            fn, out = candidates[name], times[name]
            base = block * runs_per_block
            for i in range(base, base + runs_per_block):
                start = clock()
                fn()
                out[i] = clock() - start
    return {name: t / 1e3 for name, t in times.items()}


def percentiles(samples_us: np.ndarray) -> tuple[float, float]:
    """(median, p90) of per-call times."""
    p50, p90 = np.percentile(samples_us, [50, 90])
    return float(p50), float(p90)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]], markdown: bool) -> None:
    """Rows as an aligned text table, or as GitHub markdown table rows when `markdown`."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    if markdown:
        print("| " + " | ".join(cells[0]) + " |")
        print("|" + "|".join("---" for _ in headers) + "|")
        for row in cells[1:]:
            print("| " + " | ".join(row) + " |")
        return
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        padded = [c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        print("  ".join(padded))
        if n == 0:
            print("  ".join("-" * w for w in widths))


def machine() -> str:
    """One line naming the host, its 1-minute load average (other processes competing for
    the cores make figures noisier) and library versions, printed above every table."""
    import onnxruntime

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{platform.machine()}, {_cores()} cores (load {load:.1f}), "
            f"Python {platform.python_version()}, numpy {np.__version__}, "
            f"onnxruntime {onnxruntime.__version__}")


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def check_close(name: str, ours: np.ndarray, anchor: np.ndarray, rtol: float = 1e-5,
                atol: float = 1e-6) -> None:
    """SystemExit naming `name` unless edgerun's output equals the anchor's within tolerance.

    Benchmarks call this before timing so a wrong answer is never timed."""
    if ours.shape != anchor.shape or not np.allclose(ours, anchor, rtol=rtol, atol=atol):
        diff = np.abs(ours.astype(np.float64) - anchor).max() if ours.shape == anchor.shape else "n/a"
        raise SystemExit(f"{name}: edgerun output differs from onnxruntime "
                         f"(shapes {ours.shape} vs {anchor.shape}, max abs diff {diff})")
