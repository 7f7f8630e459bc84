"""Shamir t-of-n secret sharing of byte strings over the prime field GF(2^521 - 1).

A secret of up to 64 bytes is one field element; a share is (x, y) with x in 1..n.
Any t shares give the secret back by Lagrange interpolation at 0; fewer reveal
nothing about it. Coefficients come from `secrets` (never numpy's RNG).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from edgerun.federated.secagg.errors import SecAggError

PRIME = (1 << 521) - 1
SHARE_BYTES = 66  # one field element, big-endian
MAX_SECRET_BYTES = 64

Share = tuple[int, int]


def split(secret: bytes, threshold: int, xs: Sequence[int]) -> list[Share]:
    """Shares (x, f(x)) for each x in `xs` of a random polynomial f of degree threshold - 1
    with f(0) = the secret. ValueError for an empty or too long secret, threshold out of
    1..len(xs), or x values that are not distinct and in 1..PRIME-1."""
    if not 0 < len(secret) <= MAX_SECRET_BYTES:
        raise ValueError(f"secret must be 1..{MAX_SECRET_BYTES} bytes, got {len(secret)}")
    if not 1 <= threshold <= len(xs):
        raise ValueError(f"threshold must be in 1..{len(xs)}, got {threshold}")
    if len(set(xs)) != len(xs) or not all(0 < x < PRIME for x in xs):
        raise ValueError("share x values must be distinct and in 1..PRIME-1")
    coefficients = [int.from_bytes(secret, "big")] + [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    return [(x, _evaluate(coefficients, x)) for x in xs]


def _evaluate(coefficients: Sequence[int], x: int) -> int:
    result = 0
    for c in reversed(coefficients):
        result = (result * x + c) % PRIME
    return result


def combine(shares: Sequence[Share], length: int) -> bytes:
    """The `length`-byte secret from shares (Lagrange interpolation at 0). Every share given
    is used, so pass exactly t of them (more is fine, fewer gives a wrong secret). SecAggError
    for duplicate x values or a result that does not fit in `length` bytes."""
    xs = [x for x, _ in shares]
    if not shares or len(set(xs)) != len(xs):
        raise SecAggError(f"shares must be non-empty with distinct x values, got x = {xs}")
    secret = 0
    for i, (xi, yi) in enumerate(shares):
        numerator, denominator = 1, 1
        for j, xj in enumerate(xs):
            if j != i:
                numerator = numerator * (-xj) % PRIME
                denominator = denominator * (xi - xj) % PRIME
        secret = (secret + yi * numerator * pow(denominator, -1, PRIME)) % PRIME
    if secret >= 1 << (8 * length):
        raise SecAggError(f"reconstructed secret does not fit in {length} bytes (bad or too few shares)")
    return secret.to_bytes(length, "big")


def encode_y(y: int) -> bytes:
    return y.to_bytes(SHARE_BYTES, "big")


def decode_y(data: bytes) -> int:
    """A share value from bytes; SecAggError unless it is SHARE_BYTES long and below PRIME."""
    if len(data) != SHARE_BYTES:
        raise SecAggError(f"share value must be {SHARE_BYTES} bytes, got {len(data)}")
    y = int.from_bytes(data, "big")
    if y >= PRIME:
        raise SecAggError("share value is not a field element")
    return y
