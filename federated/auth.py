"""Device and coordinator keys, request signatures and replay protection (Ed25519).

A device proves every request with its key: it signs
    DOMAIN | method | client_id | timestamp | nonce | sha256(body)
and the coordinator checks the signature against the enrolled public key, that
the timestamp is at most `max_skew` seconds behind its clock and `max_future` ahead,
and that the nonce was not seen before (within that window). The coordinator signs what it sends
(models, parameters) the same way, so a device refuses anything else.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import os
import secrets
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edgerun.runtime.errors import EdgerunError

DOMAIN = b"edgerun-federated-v1"
MAX_SKEW_SECONDS = 300.0  # how far behind the coordinator's clock a request may be
MAX_FUTURE_SECONDS = 5.0  # ... and how far ahead
MAX_NONCES_PER_CLIENT = 16_384  # nonces remembered per client (above 50 requests/s for 300 s)


class AuthError(EdgerunError):
    """A request or payload whose signature, freshness or origin does not check out."""


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


@dataclass(frozen=True)
class SignedFields:
    """What a signed request carries besides its body."""

    client_id: str
    timestamp: float
    nonce: bytes
    signature: bytes


def request_message(method: str, client_id: str, timestamp: float, nonce: bytes, body_digest: bytes) -> bytes:
    """The exact bytes a device signs for one request."""
    parts = [DOMAIN, method.encode(), client_id.encode(), struct.pack("<d", timestamp), nonce, body_digest]
    return b"\0".join(len(p).to_bytes(4, "little") + p for p in parts)


def payload_message(kind: str, version: int, digest: bytes) -> bytes:
    """The exact bytes the coordinator signs for a model or parameter payload."""
    return b"\0".join([DOMAIN, b"payload", kind.encode(), str(version).encode(), digest])


class KeyPair:
    """An Ed25519 key pair, kept in a PEM file readable only by its owner."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self.private_key = private_key
        self.public_bytes = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @classmethod
    def generate(cls) -> KeyPair:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load_or_create(cls, path: str | os.PathLike) -> KeyPair:
        """Load the key at `path`, or create one there (mode 0600) if the file does not exist."""
        path = Path(path)
        if path.exists():
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if not isinstance(key, Ed25519PrivateKey):
                raise AuthError(f"{path}: not an Ed25519 private key")
            return cls(key)
        pair = cls.generate()
        pem = pair.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        return pair

    def sign(self, message: bytes) -> bytes:
        return self.private_key.sign(message)

    def sign_request(self, method: str, client_id: str, body_digest: bytes,
                     now: float | None = None) -> SignedFields:
        timestamp = time.time() if now is None else now
        nonce = secrets.token_bytes(16)
        message = request_message(method, client_id, timestamp, nonce, body_digest)
        return SignedFields(client_id, timestamp, nonce, self.sign(message))


def verify(public_key: bytes, signature: bytes, message: bytes, what: str) -> None:
    """Raise AuthError unless `signature` is `public_key`'s signature of `message`."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        raise AuthError(f"{what}: signature does not verify") from None


class ReplayLimit(AuthError):
    """A client has more requests in the replay window than the guard keeps nonces for."""


class ReplayGuard:
    """Remembers each client's recent nonces; refuses stale, future or repeated requests.

    A request is fresh when its timestamp is at most `max_skew` seconds behind the
    coordinator's clock and at most `max_future` ahead (a client cannot pin its nonces in
    memory with far-future timestamps). A nonce is remembered until its timestamp is no
    longer fresh (timestamp + max_skew): a min-heap orders them by that expiry, so each
    check forgets what expired in O(log n) amortized and never scans the rest. At most
    `max_per_client` nonces are kept per client; beyond that its requests are refused
    (ReplayLimit) until some expire, so memory is bounded by clients * max_per_client."""

    def __init__(self, max_skew: float = MAX_SKEW_SECONDS, max_future: float = MAX_FUTURE_SECONDS,
                 max_per_client: int = MAX_NONCES_PER_CLIENT) -> None:
        self.max_skew, self.max_future, self.max_per_client = max_skew, max_future, max_per_client
        self._seen: dict[str, set[bytes]] = {}
        self._expiry: list[tuple[float, str, bytes]] = []  # heap of (timestamp + max_skew, client, nonce)
        self._now = -math.inf  # the latest clock reading: the guard's time never goes back
        self._lock = threading.Lock()

    def check(self, fields: SignedFields, now: float | None = None,
              charge: Callable[[], None] | None = None) -> None:
        """Remember the request's nonce; AuthError if it is stale, from the future or a
        replay, ReplayLimit if its client already has `max_per_client` nonces remembered.

        `charge` (if given) runs once the request is known fresh and unseen, before its nonce
        is remembered, under the guard's lock (so concurrent copies of one request charge at
        most once); whatever it raises refuses the request and nothing is remembered. So a
        replayed or stale request never charges the client it claims to be.

        Why a nonce still inside its freshness window is never forgotten: the clock is read
        under the lock and never goes back (`now` is the largest reading so far, whatever
        the wall clock or the `now` argument does); a request is stale exactly when
        `timestamp + max_skew < now`, and a nonce is forgotten exactly when that same value,
        stored as its expiry, is `< now`. A forgotten nonce had expiry < some earlier now <=
        every later now, so a request carrying it again is refused as stale."""
        if len(fields.nonce) != 16:
            raise AuthError(f"client {fields.client_id!r}: nonce must be 16 bytes")
        if not math.isfinite(fields.timestamp):
            raise AuthError(f"client {fields.client_id!r}: timestamp is not a finite number")
        expiry = fields.timestamp + self.max_skew
        with self._lock:
            now = max(time.time() if now is None else now, self._now)
            self._now = now
            if expiry < now or fields.timestamp - now > self.max_future:
                raise AuthError(f"client {fields.client_id!r}: timestamp is {now - fields.timestamp:+.0f} s off "
                                f"(accepted: up to {self.max_future:g} s ahead, {self.max_skew:g} s behind the "
                                "coordinator's clock)")
            self._forget_expired(now)
            nonces = self._seen.get(fields.client_id, set())
            if fields.nonce in nonces:
                raise AuthError(f"client {fields.client_id!r}: replayed request (nonce already used)")
            if len(nonces) >= self.max_per_client:
                raise ReplayLimit(f"client {fields.client_id!r}: {len(nonces)} requests in the last "
                                  f"{self.max_skew:g} s, the most the coordinator remembers")
            if charge is not None:
                charge()
            self._seen.setdefault(fields.client_id, nonces).add(fields.nonce)
            heapq.heappush(self._expiry, (expiry, fields.client_id, fields.nonce))

    def _forget_expired(self, now: float) -> None:
        while self._expiry and self._expiry[0][0] < now:
            _, client, nonce = heapq.heappop(self._expiry)
            nonces = self._seen[client]
            nonces.discard(nonce)
            if not nonces:
                del self._seen[client]

    def __len__(self) -> int:
        """Nonces remembered (all clients)."""
        return len(self._expiry)


def verify_request(
    public_key: bytes, fields: SignedFields, method: str, body_digest: bytes, guard: ReplayGuard,
    now: float | None = None,
) -> None:
    """Check a device request: signature by `public_key`, fresh timestamp, unused nonce."""
    message = request_message(method, fields.client_id, fields.timestamp, fields.nonce, body_digest)
    verify(public_key, fields.signature, message, f"client {fields.client_id!r} {method}")
    guard.check(fields, now)
