"""Key agreement and share encryption (all from `cryptography`).

X25519 agreement -> HKDF-SHA256 -> a 32-byte key, bound to a purpose, the round and
the (ordered) pair of client ids; AES-256-GCM with associated data naming sender,
recipient and round, so a share cannot be moved to another recipient or round.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from edgerun.federated.secagg.errors import ForgedMessage, MalformedMessage, SecAggError

DOMAIN = b"edgerun-secagg-v1"
NONCE_BYTES = 12
KEY_BYTES = 32
TAG_BYTES = 16
_PROBE = X25519PrivateKey.generate()  # only to test peer keys: exchange() refuses low-order points


def _raw(key: X25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption())


def new_private_key() -> tuple[X25519PrivateKey, bytes]:
    """(a fresh X25519 private key, its 32 raw bytes)."""
    key = X25519PrivateKey.generate()
    return key, _raw(key)


def private_key_from(raw: bytes) -> X25519PrivateKey:
    """SecAggError unless `raw` is 32 bytes."""
    if len(raw) != 32:
        raise SecAggError(f"X25519 private key must be 32 bytes, got {len(raw)}")
    return X25519PrivateKey.from_private_bytes(raw)


def public_bytes(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def check_public_key(raw: bytes, what: str) -> None:
    """MalformedMessage unless `raw` is a 32-byte X25519 public key of full order (the
    all-zero and other low-order points give a shared secret any party can compute)."""
    if not isinstance(raw, bytes) or len(raw) != KEY_BYTES:
        raise MalformedMessage(f"{what}: X25519 public key must be {KEY_BYTES} bytes, got {len(raw)}")
    try:
        _PROBE.exchange(X25519PublicKey.from_public_bytes(raw))
    except ValueError:
        raise MalformedMessage(f"{what}: X25519 public key is a low-order point") from None


def frame(*parts: bytes | str | int) -> bytes:
    """Unambiguous concatenation (length-prefixed parts) for signatures, AD and KDF info."""
    out = [DOMAIN]
    for p in parts:
        b = p.encode() if isinstance(p, str) else p.to_bytes(8, "big", signed=True) if isinstance(p, int) else p
        out.append(len(b).to_bytes(4, "big") + b)
    return b"".join(out)


def agree(private: X25519PrivateKey, peer_public: bytes, purpose: str, round_number: int,
          a: str, b: str) -> bytes:
    """A 32-byte key both ends of (a, b) derive: HKDF-SHA256 of the X25519 shared secret with
    info = (purpose, round, sorted ids). ForgedMessage for a malformed or low-order peer key."""
    try:
        secret = private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError as exc:
        raise ForgedMessage(f"{purpose}: peer public key refused: {exc}") from None
    low, high = sorted((a, b))
    info = frame(purpose, round_number, low, high)
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)


def seal(key: bytes, plaintext: bytes, associated: bytes) -> tuple[bytes, bytes]:
    """(nonce, ciphertext) of AES-256-GCM with a random 96-bit nonce."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce, AESGCM(key).encrypt(nonce, plaintext, associated)


def open_sealed(key: bytes, nonce: bytes, ciphertext: bytes, associated: bytes, what: str) -> bytes:
    """The plaintext; ForgedMessage when the tag does not verify (wrong key, sender, recipient,
    round or altered bytes)."""
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, associated)
    except (InvalidTag, ValueError):
        raise ForgedMessage(f"{what}: AES-GCM authentication failed") from None
