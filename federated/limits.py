"""What the coordinator's gRPC service lets one peer or one client hold: token-bucket rate
limits, per-key concurrency slots and the limits that configure them.

Pure Python, no gRPC (federated.service applies them). A *peer* is the IP address a call
comes from (everything before the port in `context.peer()`); a *client* is an enrolled
client id, known only once a request's signature verified. Unauthenticated calls (Enrol,
the liveness form of Status) and every request that fails authentication are limited per
peer; authenticated ones per client, so an outsider cannot spend an enrolled client's
budget by claiming its id (nor by replaying its requests: they are charged only once
fresh and unseen).
"""

from __future__ import annotations

import threading
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class ServiceLimits:
    """Limits of the coordinator service (seconds, counts, requests per second).

    header_timeout: a stream (Upload, UploadMasked) must deliver its first, authenticated
    message this soon after it opens, or it is cancelled (DEADLINE_EXCEEDED);
    idle_timeout: then every next chunk must arrive this soon after the previous one;
    streams_per_peer / streams_per_client: concurrent streaming calls (uploads and
    downloads) from one IP address / by one enrolled client, more are refused with
    RESOURCE_EXHAUSTED; client_rate, client_burst: a token bucket per enrolled client
    over all its requests; peer_rate, peer_burst: one per IP address over unauthenticated
    calls (Enrol, Status without the operator token) and failed authentications (once it
    is spent, that address's signed requests are refused before any verification);
    max_wait: the longest a GetWork long-poll is held (longer requested waits are cut to
    it); max_waiting: long-polls held at once (beyond, GetWork answers at once: WAIT, ask
    again in a second), each one enrolled client's (a newer one from the same client
    releases the older), at most waiting_per_peer of them from one IP address (sized for
    devices behind a carrier's NAT: one address cannot take every slot); max_concurrent_rpcs:
    every call in progress, held long-polls included, a backstop gRPC enforces before any
    handler runs (so above max_waiting);
    max_message_bytes: the largest message received (chunks are 1 MiB)."""

    header_timeout: float = 5.0
    idle_timeout: float = 30.0
    streams_per_peer: int = 32
    streams_per_client: int = 4
    client_rate: float = 50.0
    client_burst: float = 100.0
    peer_rate: float = 100.0
    peer_burst: float = 200.0
    max_wait: float = 60.0
    max_waiting: int = 15_000
    waiting_per_peer: int = 2_000
    max_concurrent_rpcs: int = 20_000
    max_message_bytes: int = 2 << 20

    def __post_init__(self) -> None:
        for name in ("header_timeout", "idle_timeout", "client_rate", "client_burst", "peer_rate", "peer_burst",
                     "max_wait"):
            if not getattr(self, name) > 0:
                raise ValueError(f"ServiceLimits.{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("streams_per_peer", "streams_per_client", "max_concurrent_rpcs", "max_message_bytes",
                     "waiting_per_peer"):
            if getattr(self, name) < 1:
                raise ValueError(f"ServiceLimits.{name} must be >= 1, got {getattr(self, name)!r}")
        if not 0 <= self.max_waiting < self.max_concurrent_rpcs:
            raise ValueError(f"ServiceLimits.max_waiting must be in [0, max_concurrent_rpcs), got {self.max_waiting!r} "
                             f"with max_concurrent_rpcs {self.max_concurrent_rpcs!r}: held long-polls count as calls")


class RateLimiter:
    """One token bucket per key: `burst` tokens, refilled at `rate` per second. Thread-safe.

    At most `max_keys` buckets are kept (the least recently used one is dropped: its key
    starts again with a full bucket), so the table is bounded whatever the keys."""

    def __init__(self, rate: float, burst: float, max_keys: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self.max_keys, self._clock = rate, burst, max_keys, clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        """Take one token from `key`'s bucket; False (taking nothing) when it is empty."""
        now = self._clock()
        with self._lock:
            tokens, at = self._buckets.pop(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            allowed = tokens >= 1.0
            self._buckets[key] = (tokens - 1.0 if allowed else tokens, now)
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
            return allowed

    def has_token(self, key: str) -> bool:
        """Whether `key`'s bucket holds a token now, taking nothing (and keeping no new key)."""
        now = self._clock()
        with self._lock:
            tokens, at = self._buckets.get(key, (self.burst, now))
            return min(self.burst, tokens + (now - at) * self.rate) >= 1.0

    def __len__(self) -> int:
        return len(self._buckets)


class LogThrottle:
    """Decides which of many similar log lines to write: the first `per_window` per key in
    each `window` seconds, then only a count of those left out. Thread-safe; at most
    `max_keys` keys are tracked (the least recently used is dropped), so a flood of
    refusals costs a bounded number of log lines and bounded memory."""

    def __init__(self, per_window: int = 10, window: float = 60.0, max_keys: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.per_window, self.window, self.max_keys, self._clock = per_window, window, max_keys, clock
        self._keys: OrderedDict[str, list[float]] = OrderedDict()  # key -> [window start, written, left out]
        self._lock = threading.Lock()

    def admit(self, key: str) -> tuple[bool, int]:
        """(write this line?, lines of `key` left out in its previous window and not yet
        reported: write that count along with this line when it is written)."""
        now = self._clock()
        with self._lock:
            entry = self._keys.pop(key, None)
            reported = 0
            if entry is None or now - entry[0] >= self.window:
                reported = int(entry[2]) if entry is not None else 0
                entry = [now, 0, 0]
            self._keys[key] = entry
            if len(self._keys) > self.max_keys:
                self._keys.popitem(last=False)
            if entry[1] < self.per_window:
                entry[1] += 1
                return True, reported
            entry[2] += 1
            return False, reported


class Slots:
    """Counts what each key holds at once (calls in progress), up to `limit` per key.
    Thread-safe; a key holding nothing takes no memory."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    def acquire(self, key: str) -> bool:
        """Take a slot for `key`; False (taking nothing) when it holds `limit` already."""
        with self._lock:
            held = self._held.get(key, 0)
            if held >= self.limit:
                return False
            self._held[key] = held + 1
            return True

    def release(self, key: str) -> None:
        with self._lock:
            held = self._held.get(key, 0) - 1
            if held > 0:
                self._held[key] = held
            else:
                self._held.pop(key, None)

    def held(self, key: str) -> int:
        with self._lock:
            return self._held.get(key, 0)


def peer_host(peer: str) -> str:
    """The address part of a gRPC peer string: "ipv4:10.0.0.7:5123" -> "10.0.0.7",
    "ipv6:[::1]:5123" (or, as grpc.aio writes it, "ipv6:%5B::1%5D:5123") -> "::1"; anything
    else (a unix socket path) as it is."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv6":
        rest = urllib.parse.unquote(rest)
    if kind == "ipv4":
        return rest.rpartition(":")[0] or rest
    if kind == "ipv6":
        return rest.rpartition(":")[0].strip("[]") or rest
    return peer
