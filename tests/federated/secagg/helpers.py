"""Shared set-up for secure-aggregation tests: keys, parameters and random ring inputs."""

from __future__ import annotations

import os

import numpy as np

from edgerun.federated.auth import KeyPair
from edgerun.federated.secagg.messages import SecAggParams
from edgerun.federated.secagg.quantize import plan

_KEYS: list[KeyPair] = []


def device_keys(n: int) -> dict[str, KeyPair]:
    """n Ed25519 device keys by client id (cached across tests: generating is the slow part)."""
    while len(_KEYS) < n:
        _KEYS.append(KeyPair.generate())
    return {f"c{i:03d}": _KEYS[i] for i in range(n)}


def params(n: int, length: int = 64, bits: int = 32, neighbours: int = 100, round_number: int = 1,
           **kw) -> SecAggParams:
    return SecAggParams(round_number, plan(bits, 1.0, n), length, os.urandom(32), neighbours=neighbours, **kw)


def ring_inputs(ids, p: SecAggParams, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)  # test data only; masks come from AES-CTR
    top = 1 << p.quantization.bits
    return {c: rng.integers(0, top, p.length, dtype=np.uint64).astype(np.uint32) for c in ids}


def plain_sum(inputs, ids, bits: int) -> np.ndarray:
    total = sum(inputs[c].astype(np.uint64) for c in ids)
    return (total % (1 << bits)).astype(np.uint32)
