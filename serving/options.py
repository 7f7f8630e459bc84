"""The settings of one server, shared by the supervisor and its workers (picklable)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from edgerun.serving.tls import TlsFiles

DEFAULT_MAX_MESSAGE = 64 * 1024 * 1024


@dataclass(frozen=True)
class ServeOptions:
    repository: Path
    host: str = "0.0.0.0"
    grpc_port: int = 8001
    http_port: int = 8000
    metrics_port: int = 8002
    workers: int = 1
    mode: str = "none"
    poll_s: float = 2.0
    startup_models: tuple[str, ...] = ()
    tls: TlsFiles | None = None
    token: str | None = None
    max_message_bytes: int = DEFAULT_MAX_MESSAGE
    grace_s: float = 10.0
    log_level: str = "INFO"
    threads: int | None = 1
    device: str = "auto"  # where models run unless their config's instance_group kind says (KIND_GPU: cuda)
    max_concurrent_rpcs: int = 256  # gRPC calls at once per worker; more get RESOURCE_EXHAUSTED
    http_max_connections: int = 1024  # HTTP connections at once per worker; more get 503
    http_max_connections_per_client: int = 64  # of those, from one client address
    http_body_budget_bytes: int | None = None  # request bodies in flight per worker (None = 4 x max message)
    http_header_timeout_s: float = 10.0  # to send the request line and headers
    http_body_timeout_s: float = 60.0  # to send the body
    http_idle_timeout_s: float = 60.0  # between requests on a kept-alive connection
    http_min_body_rate: int = 64 * 1024  # bytes/s a body over 64 KiB must average after 2 s (0 = off)
    busy_poll_us: int = 0  # poll without blocking this long before the event loop sleeps (0 = off)
    event_loop: str = "auto"  # auto (uvloop if installed and not busy polling), asyncio or uvloop
    control_dir: Path | None = None  # set by the supervisor: load/unload records shared by workers

    def check(self) -> None:
        """ValueError naming the first bad option."""
        if not self.repository.is_dir():
            raise ValueError(f"model repository {self.repository} is not a directory")
        if self.workers < 1:
            raise ValueError(f"--workers must be >= 1, got {self.workers}")
        if self.mode not in ("none", "poll", "explicit"):
            raise ValueError(f"--model-control-mode must be none, poll or explicit, got {self.mode!r}")
        if self.max_message_bytes < 1024:
            raise ValueError("--max-message-size must be at least 1024 bytes")
        if self.max_concurrent_rpcs < 1 or self.http_max_connections < 1 or self.http_max_connections_per_client < 1:
            raise ValueError("--grpc-max-concurrent-rpcs, --http-max-connections and "
                             "--http-max-connections-per-client must be >= 1")
        if self.http_body_budget_bytes is not None and self.http_body_budget_bytes < self.max_message_bytes:
            raise ValueError(f"--http-body-budget ({self.http_body_budget_bytes} bytes) must be at least "
                             f"--max-message-size ({self.max_message_bytes} bytes)")
        timeouts = (self.http_header_timeout_s, self.http_body_timeout_s, self.http_idle_timeout_s)
        if not all(math.isfinite(t) and t > 0 for t in timeouts):  # (a NaN deadline never expires)
            raise ValueError(f"HTTP timeouts must be finite and > 0 seconds, got {timeouts}")
        if self.http_min_body_rate < 0:
            raise ValueError(f"--http-min-body-rate must be >= 0 bytes/s, got {self.http_min_body_rate}")
        if not 0 <= self.busy_poll_us <= 1_000_000:
            raise ValueError(f"--busy-poll-us must be within 0..1000000, got {self.busy_poll_us}")
        from edgerun.serving.event_loop import check

        check(self.event_loop, self.busy_poll_us / 1e6)
        if self.poll_s <= 0:
            raise ValueError("--repository-poll-secs must be > 0")
