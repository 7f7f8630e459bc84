"""SecAgg+ neighbour graphs (Bell et al. 2020): each client masks with k neighbours only.

The graph is a Harary-style ring lattice over a pseudo-random order of the clients: the
order sorts ids by HMAC-SHA256(seed, id) with a seed the coordinator draws with `secrets`
each round, so every party computes the same graph and the coordinator cannot tailor it
after seeing the keys. Each client links to k/2 clients on either side (k rounded up to
even). Cohorts of at most `complete_below` clients, or with k >= n - 1, use the complete
graph (Bonawitz et al. 2017).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence


def neighbours(ids: Sequence[str], k: int, seed: bytes, complete_below: int = 0) -> dict[str, list[str]]:
    """id -> sorted neighbour ids (never itself). ValueError for duplicate ids or k < 1."""
    if len(set(ids)) != len(ids):
        raise ValueError("client ids must be distinct")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    n = len(ids)
    if n <= complete_below or k >= n - 1:
        return {c: sorted(d for d in ids if d != c) for c in ids}
    half = (k + 1) // 2
    order = sorted(ids, key=lambda c: hmac.new(seed, c.encode(), hashlib.sha256).digest())
    links: dict[str, set[str]] = {c: set() for c in ids}
    for i, c in enumerate(order):
        for j in range(1, half + 1):
            d = order[(i + j) % n]
            links[c].add(d)
            links[d].add(c)
    return {c: sorted(links[c]) for c in ids}


def threshold(degree: int, fraction: float = 0.5) -> int:
    """Shares needed to rebuild a secret shared among a client and its `degree` neighbours:
    more than `fraction` of those degree + 1 holders (a strict majority by default)."""
    holders = degree + 1
    return min(holders, int(fraction * holders) + 1)
