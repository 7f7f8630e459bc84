"""Mask expansion: a 32-byte seed -> a vector uniform in Z_{2^b}, from the AES-256-CTR keystream.

Each seed is used for one vector (seeds are fresh per round or derived with the round
in the KDF info), so a zero counter block is safe. AES-NI makes this ~GB/s.
"""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

_ZERO_IV = bytes(16)


def expand(seed: bytes, length: int, bits: int) -> np.ndarray:
    """`length` uint32 values, each uniform in [0, 2^bits), from AES-256-CTR keyed by `seed`.
    ValueError unless the seed is 32 bytes and 1 <= bits <= 32."""
    if len(seed) != 32:
        raise ValueError(f"mask seed must be 32 bytes, got {len(seed)}")
    if not 1 <= bits <= 32:
        raise ValueError(f"bits must be in 1..32, got {bits}")
    stream = Cipher(algorithms.AES(seed), modes.CTR(_ZERO_IV)).encryptor().update(bytes(4 * length))
    values = np.frombuffer(stream, dtype="<u4").astype(np.uint32, copy=True)
    if bits < 32:
        values &= np.uint32((1 << bits) - 1)
    return values
