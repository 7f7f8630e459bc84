"""Fixed point in the ring Z_{2^b}: clip, quantize, the no-wrap check, packing.

A client value x is clipped to [-R, R] and mapped to q = round(x / R * L), an integer in
[-L, L], stored as q mod 2^b. The sum of n such values lies in [-nL, nL]; it is recovered
exactly from the ring sum when n * L < 2^(b-1), which `check_no_wrap` enforces (and which
`plan` chooses L for). Values travel as ceil(b/8) little-endian bytes each.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgerun.federated.secagg.errors import ConfigurationError, MalformedVector


@dataclass(frozen=True)
class Quantization:
    """bits: ring size 2^bits (2..32); clip_range: R; levels: L (integer steps per R)."""

    bits: int
    clip_range: float
    levels: int

    def __post_init__(self) -> None:
        if not 2 <= self.bits <= 32:
            raise ConfigurationError(f"bits must be in 2..32, got {self.bits}")
        if not (self.clip_range > 0 and np.isfinite(self.clip_range)):
            raise ConfigurationError(f"clip_range must be finite and > 0, got {self.clip_range}")
        if self.levels < 1:
            raise ConfigurationError(f"levels must be >= 1, got {self.levels}")

    @property
    def step(self) -> float:
        """The quantization step R / L (the rounding error per value is at most step / 2)."""
        return self.clip_range / self.levels

    @property
    def bytes_per_value(self) -> int:
        return (self.bits + 7) // 8

    def check_no_wrap(self, num_clients: int) -> None:
        """ConfigurationError if the sum of `num_clients` values could wrap around 2^bits."""
        if num_clients < 1 or num_clients * self.levels >= 1 << (self.bits - 1):
            raise ConfigurationError(
                f"{num_clients} clients x {self.levels} levels can reach 2^{self.bits - 1}: the masked sum "
                f"could wrap; use more bits, fewer levels or fewer clients per round")


def plan(bits: int, clip_range: float, max_clients: int, min_levels: int = 16) -> Quantization:
    """The finest quantization whose sum over `max_clients` cannot wrap. ConfigurationError when
    that leaves fewer than `min_levels` steps (too many clients for the bits)."""
    if max_clients < 1:
        raise ConfigurationError(f"max_clients must be >= 1, got {max_clients}")
    levels = ((1 << (bits - 1)) - 1) // max_clients
    if levels < min_levels:
        raise ConfigurationError(f"{bits} bits leave {levels} levels for {max_clients} clients "
                                 f"(need >= {min_levels}): refusing a configuration that loses the values")
    q = Quantization(bits, float(clip_range), levels)
    q.check_no_wrap(max_clients)
    return q


def quantize(x: np.ndarray, q: Quantization) -> np.ndarray:
    """uint32 ring elements of x (clipped to [-R, R], rounded to nearest). Non-finite values
    raise ValueError."""
    x = np.asarray(x, dtype=np.float64).ravel()
    if not np.isfinite(x).all():
        raise ValueError("cannot quantize NaN or Inf")
    ints = np.rint(np.clip(x, -q.clip_range, q.clip_range) * (q.levels / q.clip_range)).astype(np.int64)
    return (ints & ((1 << q.bits) - 1)).astype(np.uint32)


def to_signed(ring: np.ndarray, bits: int) -> np.ndarray:
    """Ring elements read as integers in [-2^(b-1), 2^(b-1))."""
    values = np.asarray(ring, dtype=np.int64) & ((1 << bits) - 1)
    return np.where(values >= 1 << (bits - 1), values - (1 << bits), values)


def dequantize_sum(ring_sum: np.ndarray, q: Quantization, num_clients: int) -> np.ndarray:
    """The float64 sum of the clients' clipped values, within num_clients * step / 2 per
    element. ConfigurationError when `num_clients` values could have wrapped."""
    q.check_no_wrap(num_clients)
    return to_signed(ring_sum, q.bits) * q.step


def add(a: np.ndarray, b: np.ndarray, bits: int) -> np.ndarray:
    """(a + b) mod 2^bits for uint32 vectors."""
    out = a + b  # uint32 wraps mod 2^32
    return out if bits == 32 else out & np.uint32((1 << bits) - 1)


def subtract(a: np.ndarray, b: np.ndarray, bits: int) -> np.ndarray:
    """(a - b) mod 2^bits for uint32 vectors."""
    out = a - b
    return out if bits == 32 else out & np.uint32((1 << bits) - 1)


def pack(ring: np.ndarray, bits: int) -> bytes:
    """ceil(bits/8) little-endian bytes per element (4 bytes at 32 bits: no expansion)."""
    width = (bits + 7) // 8
    raw = np.ascontiguousarray(ring, dtype="<u4")
    if width == 4:
        return raw.tobytes()
    return raw.view(np.uint8).reshape(-1, 4)[:, :width].tobytes()


def unpack(blob: bytes, bits: int, length: int) -> np.ndarray:
    """The uint32 elements `pack` wrote. MalformedVector for a wrong byte count or an element
    outside [0, 2^bits)."""
    width = (bits + 7) // 8
    if len(blob) != width * length:
        raise MalformedVector(f"masked vector: expected {length} elements of {width} bytes "
                              f"({width * length} bytes), got {len(blob)} bytes")
    if width == 4:
        values = np.frombuffer(blob, dtype="<u4").astype(np.uint32)
    else:
        wide = np.zeros((length, 4), dtype=np.uint8)
        wide[:, :width] = np.frombuffer(blob, dtype=np.uint8).reshape(length, width)
        values = wide.view("<u4").ravel().astype(np.uint32)
    if bits < 32 and length and int(values.max()) >= 1 << bits:
        raise MalformedVector(f"masked vector has elements outside Z_2^{bits}")
    return values
