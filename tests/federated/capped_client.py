"""A device client process under a memory cap, reporting its own peak memory, and a secure
digits round that runs one (tests/federated/test_client_profiles.py, benchmarks/bench_client_memory.py).

    python -m tests.federated.capped_client [--cap-mb 256] [--limit as|data] [--stack-kib 1024] \
        [--no-numba] -- --coordinator 127.0.0.1:PORT --data d.npz --id dev0 --profile rpi-zero2

The child sets the cap on itself before importing anything heavy (RLIMIT_AS: address space,
what `ulimit -v` sets; RLIMIT_DATA: writable private memory, heap, anonymous mappings and
thread stacks, but not reserved PROT_NONE ranges nor mapped library code), optionally with
smaller thread stacks (RLIMIT_STACK, then re-executing itself: glibc sizes thread stacks from
it when a process starts), optionally hides numba (as on a board without numba wheels:
`device="auto"` runs the reference kernels), runs `edgerun federated client` with the
arguments after `--`, and prints one JSON line last: {"rc", "vm_hwm_kib" (peak resident set),
"vm_peak_kib" (peak address space), "maxrss_kib", "cap_bytes" (the limit read back), "numba"}.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
LIMITS = {"as": resource.RLIMIT_AS, "data": resource.RLIMIT_DATA}
TOKEN = "capped"


def memory_status() -> dict[str, int]:
    """VmHWM (peak resident set), VmPeak (peak address space) and ru_maxrss of this process, in KiB."""
    fields = {}
    with open("/proc/self/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmHWM", "VmPeak"):
                fields[name] = int(value.split()[0])
    return {"vm_hwm_kib": fields.get("VmHWM", 0), "vm_peak_kib": fields.get("VmPeak", 0),
            "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cap-mb", type=int, default=0, help="the cap in MiB (0: none)")
    parser.add_argument("--limit", choices=sorted(LIMITS), default="as", help="which rlimit caps the process")
    parser.add_argument("--stack-kib", type=int, default=0, help="thread stack size via RLIMIT_STACK (0: as it is)")
    parser.add_argument("--no-numba", action="store_true", help="make `import numba` fail, as where it has no wheels")
    parser.add_argument("client_args", nargs=argparse.REMAINDER, help="-- then `edgerun federated client` arguments")
    args = parser.parse_args(argv)
    if args.stack_kib and resource.getrlimit(resource.RLIMIT_STACK)[0] != args.stack_kib << 10:
        hard = resource.getrlimit(resource.RLIMIT_STACK)[1]
        resource.setrlimit(resource.RLIMIT_STACK, (args.stack_kib << 10, hard))
        os.execv(sys.executable, [sys.executable, "-m", "tests.federated.capped_client", *argv])
    cap = None
    if args.cap_mb:
        resource.setrlimit(LIMITS[args.limit], (args.cap_mb << 20, args.cap_mb << 20))
        cap = resource.getrlimit(LIMITS[args.limit])[0]
    if args.no_numba:
        sys.modules["numba"] = None  # `import numba` raises ImportError
    from edgerun.cli import main as edgerun_main

    client_args = args.client_args[1:] if args.client_args[:1] == ["--"] else args.client_args
    try:
        rc = edgerun_main(["federated", "client", *client_args])
    except MemoryError:
        print("MemoryError under the cap", file=sys.stderr)
        rc = 70
    report = {"rc": rc, **memory_status(), "cap_bytes": cap, "numba": sys.modules.get("numba") is not None}
    print(json.dumps(report), flush=True)
    return rc


def secure_round_with_a_process(workdir: Path, child_flags: list[str], env: dict[str, str] | None = None,
                                examples: int = 480, profile: str = "rpi-zero2", round_timeout: float = 120.0,
                                child_wait: float = 60.0) -> dict[str, Any]:
    """One secure round of the README's digits setup (MLP 64-64-10, E = 5, B = 10, lr 0.1,
    secure aggregation on) against a coordinator in this process over loopback gRPC: three
    clients, two of them threads here and one a process (this module, with `child_flags`,
    `env` added to the environment, `--profile profile`). Returns the process's JSON report plus
    "round" (the round's status), "reports" (inputs summed), "declined" and "output" (its log)."""
    import threading

    import numpy as np

    from edgerun.federated import partition
    from edgerun.federated.auth import KeyPair
    from edgerun.federated.client import ClientOptions, FederatedClient, channel
    from edgerun.federated.coordinator import Coordinator, CoordinatorConfig
    from edgerun.federated.demo import digits_setup
    from edgerun.federated.service import serve
    from edgerun.federated.store import Store
    from edgerun.federated.strategies import FedAvg

    model, x, y, _, _ = digits_setup(workdir)
    shards = partition.iid(min(examples, len(y)), 3, seed=0)
    strategy = FedAvg(fraction_fit=1.0, min_fit_clients=3, min_available_clients=3, local_epochs=5,
                      batch_size=10, client_lr=0.1)
    coordinator = Coordinator(model, Store(workdir / "c.db"), strategy,
                              CoordinatorConfig(rounds=1, enrol_token=TOKEN, round_timeout=round_timeout),
                              KeyPair.generate())
    server, port = serve(coordinator)
    np.savez(workdir / "device.npz", x=x[shards[0]], y=y[shards[0]])
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.federated.capped_client", *child_flags, "--",
         "--coordinator", f"127.0.0.1:{port}", "--data", str(workdir / "device.npz"), "--id", "device",
         "--key", str(workdir / "device.key"), "--profile", profile],
        cwd=ROOT, env={**os.environ, **(env or {}), "EDGERUN_ENROL_TOKEN": TOKEN},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    stop = threading.Event()
    clients = [FederatedClient(channel(f"127.0.0.1:{port}"), f"dev{i}", KeyPair.generate(), (x[s], y[s]),
                               ClientOptions(token=TOKEN)) for i, s in enumerate(shards[1:], 1)]
    threads = [threading.Thread(target=c.run, args=(stop,), daemon=True) for c in clients]
    for t in threads:
        t.start()
    try:
        coordinator.run()
        coordinator.wait_until_clients_stopped(timeout=30)  # the process too is told to stop
        output, _ = child.communicate(timeout=child_wait)
    except subprocess.TimeoutExpired:
        child.kill()
        output = child.communicate()[0] + f"\n(killed: still running {child_wait:g} s after the round)"
    finally:
        stop.set()
        child.kill()
        for t in threads:
            t.join(30)
        server.stop(0)
    [record] = coordinator.store.history()
    declined = dict(coordinator.declines)
    coordinator.store.close()
    try:
        report = json.loads(output.strip().splitlines()[-1])
    except (IndexError, ValueError):
        report = {"rc": child.returncode}
    return {**report, "round": record.status, "reports": record.metrics.get("reports"), "declined": declined,
            "output": output}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
