"""Device and coordinator keys, request signatures and replay protection (Ed25519).

A device proves every request with its key: it signs
    DOMAIN | method | client_id | timestamp | nonce | sha256(body)
and the coordinator checks the signature against the enrolled public key, that
the timestamp is within `max_skew` seconds of its clock, and that the nonce was
not seen before (within that window). The coordinator signs what it sends
(models, parameters) the same way, so a device refuses anything else.
"""

from __future__ import annotations

import hashlib
import math
import os
import secrets
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edgerun.runtime.errors import EdgerunError

DOMAIN = b"edgerun-federated-v1"
MAX_SKEW_SECONDS = 300.0


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


class ReplayGuard:
    """Remembers recent nonces per client; refuses stale, future or repeated requests."""

    def __init__(self, max_skew: float = MAX_SKEW_SECONDS) -> None:
        self.max_skew = max_skew
        self._seen: dict[tuple[str, bytes], float] = {}
        self._lock = threading.Lock()

    def check(self, fields: SignedFields, now: float | None = None) -> None:
        now = time.time() if now is None else now
        if not math.isfinite(fields.timestamp) or abs(now - fields.timestamp) > self.max_skew:
            raise AuthError(f"client {fields.client_id!r}: timestamp is {now - fields.timestamp:+.0f} s off")
        if len(fields.nonce) != 16:
            raise AuthError(f"client {fields.client_id!r}: nonce must be 16 bytes")
        key = (fields.client_id, fields.nonce)
        with self._lock:
            self._forget_before(now - self.max_skew)
            if key in self._seen:
                raise AuthError(f"client {fields.client_id!r}: replayed request (nonce already used)")
            self._seen[key] = fields.timestamp

    def _forget_before(self, cutoff: float) -> None:
        stale = [k for k, t in self._seen.items() if t < cutoff]
        for k in stale:
            del self._seen[k]


def verify_request(
    public_key: bytes, fields: SignedFields, method: str, body_digest: bytes, guard: ReplayGuard,
    now: float | None = None,
) -> None:
    """Check a device request: signature by `public_key`, fresh timestamp, unused nonce."""
    message = request_message(method, fields.client_id, fields.timestamp, fields.nonce, body_digest)
    verify(public_key, fields.signature, message, f"client {fields.client_id!r} {method}")
    guard.check(fields, now)
