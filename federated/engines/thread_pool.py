"""The "thread" engine's workers: a pool of threads, each with its own Trainer.

An interpreter is not shared between threads: the pool keeps one Trainer per worker and a
job borrows an idle one. All trainers read the same data arrays (read-only).
"""

from __future__ import annotations

import os
import queue
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from edgerun.federated.engines.trainer import Arrays, Job, Outcome, Trainer


class ThreadWorkers:
    """`workers` threads (default: one per CPU) running jobs on this machine."""

    name = "thread"

    def __init__(self, model: bytes, x: Any, y: np.ndarray, partitions: Sequence[np.ndarray],
                 workers: int | None = None) -> None:
        count = workers or os.cpu_count() or 1
        self._idle: queue.SimpleQueue[Trainer] = queue.SimpleQueue()
        for _ in range(count):
            self._idle.put(Trainer(model, x, y, partitions))
        self._pool = ThreadPoolExecutor(count, thread_name_prefix="edgerun-trainer")

    def run(self, parameters: Arrays, jobs: Sequence[Job]) -> list[Outcome]:
        """The outcome of each job, in the order of `jobs`."""
        return list(self._pool.map(lambda job: self._run_one(parameters, job), jobs))

    def _run_one(self, parameters: Arrays, job: Job) -> Outcome:
        trainer = self._idle.get()
        try:
            return trainer.run_one(parameters, job)
        finally:
            self._idle.put(trainer)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
