"""The supervisor: starts N worker processes, serves the summed metrics, restarts crashed workers,
and on SIGTERM/SIGINT stops them gracefully and exits 0.

Workers are started with the `spawn` method (gRPC must not be forked once initialised), with
PROMETHEUS_MULTIPROC_DIR pointing at a fresh directory for prometheus-client's multiprocess mode.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

from edgerun.serving import logs
from edgerun.serving.options import ServeOptions

log = logging.getLogger("edgerun.serving")
RESTART_FIRST_S = 0.1  # delay before restarting a crashed worker, doubled per crash in a row
RESTART_MAX_S = 5.0
STABLE_S = 30.0  # a worker that ran this long before crashing restarts after RESTART_FIRST_S again


def serve(options: ServeOptions) -> int:
    """Run the server until SIGTERM/SIGINT; returns 0 after a clean drain, 1 if a worker failed to
    stop in time. Raises ValueError for bad options, OSError if the metrics port cannot be bound."""
    options.check()
    logs.setup(options.log_level)
    own_dir = "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    if own_dir:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="edgerun-metrics-")
    control_dir = Path(tempfile.mkdtemp(prefix="edgerun-control-"))
    try:
        return _supervise(dataclasses.replace(options, control_dir=control_dir))
    finally:
        shutil.rmtree(control_dir, ignore_errors=True)
        if own_dir:
            shutil.rmtree(os.environ.pop("PROMETHEUS_MULTIPROC_DIR"), ignore_errors=True)


def _supervise(options: ServeOptions) -> int:
    from edgerun.serving import metrics
    from edgerun.serving.worker import run_worker

    if options.metrics_port:
        metrics.serve_multiprocess(options.metrics_port, options.host, options.token)
    context = multiprocessing.get_context("spawn")
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}

    def start(index: int) -> multiprocessing.Process:
        process = context.Process(target=run_worker, args=(options, index), name=f"edgerun-worker-{index}")
        process.start()
        return process

    workers = [start(i) for i in range(options.workers)]
    started = [time.monotonic()] * len(workers)
    delays = [0.0] * len(workers)  # the backoff of each worker slot
    restart_at: list[float | None] = [None] * len(workers)
    log.info("supervisor (pid %d) started %d worker(s); metrics on port %d", os.getpid(), len(workers),
             options.metrics_port)
    try:
        while not stop.wait(0.5):
            now = time.monotonic()
            for i, process in enumerate(workers):
                if restart_at[i] is not None:
                    if now >= restart_at[i]:
                        restart_at[i] = None
                        workers[i], started[i] = start(i), now
                    continue
                if process.exitcode is not None:
                    ran = now - started[i]
                    delays[i] = RESTART_FIRST_S if ran >= STABLE_S else min(max(delays[i] * 2, RESTART_FIRST_S),
                                                                            RESTART_MAX_S)
                    log.error("worker %d (pid %d) exited with %s after %.1f s; restarting it in %.1f s", i,
                              process.pid, process.exitcode, ran, delays[i])
                    metrics.worker_exited(process.pid)
                    restart_at[i] = now + delays[i]
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return _stop_workers(workers, options.grace_s)


def _stop_workers(workers: list[multiprocessing.Process], grace_s: float) -> int:
    log.info("supervisor stopping %d worker(s)", len(workers))
    for process in workers:
        if process.exitcode is None:
            os.kill(process.pid, signal.SIGTERM)
    code = 0
    for process in workers:
        process.join(grace_s + 5)
        if process.exitcode is None:
            log.error("worker pid %d did not stop in time; killing it", process.pid)
            process.kill()
            process.join()
            code = 1
    log.info("supervisor stopped")
    return code
