"""Per-model-version statistics: the ModelStatistics RPC reads them, and `metrics.publish` turns
their growth into Prometheus counters off the request path (this worker's share)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field


@dataclass
class Duration:
    count: int = 0
    ns: int = 0


@dataclass
class ModelStats:
    """Counts and cumulative durations in the shape of Triton's InferStatistics. Updated on the
    event loop and, with several instances, from pool threads: hence the lock."""

    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    inference_count: int = 0
    execution_count: int = 0
    last_inference_ms: int = 0
    batches: dict[int, Duration] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def request(self, ok: bool, seconds: float, queue_s: float = 0.0) -> None:
        """Count one finished request of `seconds` end to end (`queue_s` of it batch-queued)."""
        with self.lock:
            target = self.success if ok else self.fail
            target.count += 1
            target.ns += int(seconds * 1e9)
            if ok:
                self.queue.count += 1
                self.queue.ns += int(queue_s * 1e9)
            self.last_inference_ms = int(time.time() * 1000)

    def execution(self, rows: int, seconds: float) -> None:
        """Count one model execution over `rows` batch rows."""
        ns = int(seconds * 1e9)
        with self.lock:
            self.execution_count += 1
            self.inference_count += rows
            self.compute_infer.count += 1
            self.compute_infer.ns += ns
            batch = self.batches.get(rows)
            if batch is None:
                batch = self.batches[rows] = Duration()
            batch.count += 1
            batch.ns += ns

    def snapshot(self) -> dict:
        """The cumulative figures `metrics.publish` needs, read consistently."""
        with self.lock:
            return {"success": self.success.count, "request_ns": self.success.ns, "queue_ns": self.queue.ns,
                    "compute_ns": self.compute_infer.ns, "executions": self.execution_count,
                    "inferences": self.inference_count,
                    "batches": {size: d.count for size, d in self.batches.items()}}
