"""Peak memory of a device client process doing a whole secure round, for the digits MLP.

One federated round of the README's digits setup (MLP 64-64-10, SGD lr 0.1, E = 5, B = 10,
secure aggregation on, the coordinator's default) against an in-process coordinator over
loopback gRPC: three clients, one of them a separate process (`edgerun federated client
--profile rpi-zero2`, run by tests/federated/capped_client.py) whose peak resident set
(VmHWM, what `ru_maxrss` reports) is printed beside the target of 150 MB, with numba
importable and with it hidden (a board without numba wheels). Its peak address space
(VmPeak) is printed too, as it is by default and in a small-device set-up (one glibc malloc
arena, 1 MiB thread stacks, one OpenBLAS thread), which is what fits `RLIMIT_AS` = 256 MiB.

    python benchmarks/bench_client_memory.py [--examples 480]

The client's figures include the Python interpreter, numpy, grpc, cryptography and edgerun
imports (most of them) and its third of the data; MB = 10^6 bytes, MiB = 2^20.
"""

# ruff: noqa: E402 - the repository root goes on sys.path before project imports
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.federated.capped_client import secure_round_with_a_process

TARGET_MB = 150
# The small-device set-up: glibc's malloc reserves 64 MiB of address space per arena, up to
# 8 per core, each thread's stack is RLIMIT_STACK (8 MiB) and OpenBLAS keeps a 32 MiB buffer
# per thread; none of it is resident until touched, all of it counts against RLIMIT_AS.
SMALL_ENV = {"MALLOC_ARENA_MAX": "1", "OPENBLAS_NUM_THREADS": "1"}
SMALL_FLAGS = ["--stack-kib", "1024"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=480, help="digits training examples split over 3 clients")
    args = parser.parse_args()
    print(f"client process: edgerun federated client --profile rpi-zero2, one secure round, digits MLP 64-64-10, "
          f"E=5 B=10, {args.examples // 3} examples")
    print(f"{'numba':<10}{'set-up':<14}{'peak RSS MB':>12}{'target MB':>10}{'ratio':>7}{'peak VM MiB':>13}{'s':>6}")
    worst = 0.0
    for numba in ([], ["--no-numba"]):
        for setup, env, flags in (("default", {}, []), ("small-device", SMALL_ENV, SMALL_FLAGS)):
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                got = secure_round_with_a_process(Path(tmp), [*flags, *numba], env, args.examples)
                seconds = time.perf_counter() - start
            if got.get("rc") != 0 or got["round"] != "aggregated":
                print(got["output"][-3000:], file=sys.stderr)
                print(f"the client process failed (rc {got.get('rc')}, round {got['round']})", file=sys.stderr)
                return 1
            rss_mb, vm_mib = got["vm_hwm_kib"] * 1024 / 1e6, got["vm_peak_kib"] / 1024
            worst = max(worst, rss_mb)
            label = "imported" if got["numba"] else "absent"
            print(f"{label:<10}{setup:<14}{rss_mb:>12.1f}{TARGET_MB:>10}{rss_mb / TARGET_MB:>7.2f}{vm_mib:>13.1f}"
                  f"{seconds:>6.1f}")
    print(f"peak RSS of a client doing a full secure round: {worst:.0f} MB (target: under {TARGET_MB} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
