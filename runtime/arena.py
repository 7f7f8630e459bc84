"""Arena memory planner: give every tensor an offset in one shared buffer.

Greedy by size, as in TFLite's ArenaPlanner (SimpleMemoryArena): tensors are
placed largest first; each goes into the smallest gap that fits between the
already placed tensors whose lifetimes intersect its own, else after the last
of them. Tensors that are never live at the same time may share bytes.

    layout = plan_arena([TensorLife(400, 0, 1), TensorLife(400, 1, 2), TensorLife(400, 2, 3)])
    layout.offsets  # [0, 448, 0]: the first and the last share memory
    layout.size     # 896

Pure: depends on numpy only, so the interpreter can re-plan on every resize.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TensorLife:
    """One tensor to place: its size and the op steps during which it is live.

    `size` is in bytes (>= 0). `first` is the index of the op that produces it,
    or -1 for "live from the start"; `last` is the index of the last op that
    reads it (>= first), any large number meaning "live to the end". Two
    tensors conflict iff [first, last] intervals intersect (bounds included).
    """

    size: int
    first: int
    last: int


@dataclass(frozen=True)
class ArenaPlan:
    """Where each tensor lives: `offsets[i]` (bytes) for tensor i, and the arena size.

    Every offset is a multiple of the alignment it was planned with; `size` is
    the peak number of bytes needed (0 when nothing needs memory).
    """

    offsets: list[int]
    size: int


def plan_arena(tensors: Sequence[TensorLife], alignment: int = 64) -> ArenaPlan:
    """Plan one arena for `tensors`: aligned offsets with no live overlap, greedy by size.

    Sizes are rounded up to `alignment` for placement; zero-size tensors get
    offset 0 and take no room. The plan is deterministic: ties in size are
    broken by earlier `first`, then by index. Runs in O(n^2) vectorized work.
    Raises ValueError when `alignment` is not a positive power of two, or when
    a tensor has a negative size, `first` < -1 or `last` < `first`.
    """
    _check_alignment(alignment)
    _check_tensors(tensors)
    aligned = [_align_up(t.size, alignment) for t in tensors]
    order = sorted(
        (i for i, t in enumerate(tensors) if t.size > 0),
        key=lambda i: (-tensors[i].size, tensors[i].first, i),
    )
    first, last = _time_ranks(tensors)
    offsets = [0] * len(tensors)
    # Placed tensors in placement order: lifetime bounds and busy bytes [offset, end).
    placed_first = np.empty(len(order), dtype=np.int64)
    placed_last = np.empty(len(order), dtype=np.int64)
    placed_off = np.empty(len(order), dtype=np.int64)
    placed_end = np.empty(len(order), dtype=np.int64)
    for k, i in enumerate(order):
        live = np.flatnonzero((placed_first[:k] <= last[i]) & (placed_last[:k] >= first[i]))
        offset = _best_fit(placed_off[live], placed_end[live], aligned[i])
        offsets[i] = offset
        placed_first[k], placed_last[k] = first[i], last[i]
        placed_off[k], placed_end[k] = offset, offset + aligned[i]
    size = int(placed_end.max()) if order else 0
    return ArenaPlan(offsets=offsets, size=size)


_SMALL = 32  # for up to this many busy ranges a Python loop beats numpy's per-call overhead


def _best_fit(offs: np.ndarray, ends: np.ndarray, need: int) -> int:
    """Start of the smallest free gap of >= `need` bytes among busy ranges [offs, ends).

    Gaps are the free stretches between the busy ranges sorted by offset, the
    one below the lowest range included; ties go to the lowest address. When
    no gap fits, returns the end of the highest busy range (0 if none).
    """
    if offs.size <= _SMALL:
        return _best_fit_small(sorted(zip(offs.tolist(), ends.tolist(), strict=True)), need)
    by_offset = np.argsort(offs, kind="stable")
    offs, ends = offs[by_offset], ends[by_offset]
    reach = np.maximum.accumulate(ends)  # end of the busy bytes up to each range
    starts = np.empty_like(reach)
    starts[0] = 0
    starts[1:] = reach[:-1]
    gaps = offs - starts
    fits = np.flatnonzero(gaps >= need)
    if fits.size == 0:
        return int(reach[-1])
    return int(starts[fits[np.argmin(gaps[fits])]])


def _best_fit_small(busy: list[tuple[int, int]], need: int) -> int:
    """`_best_fit` for a few busy (offset, end) ranges already sorted by offset."""
    reach, best, best_gap = 0, -1, -1
    for off, end in busy:
        gap = off - reach
        if gap >= need and (best_gap < 0 or gap < best_gap):
            best, best_gap = reach, gap
        reach = max(reach, end)
    return reach if best < 0 else best


def _time_ranks(tensors: Sequence[TensorLife]) -> tuple[list[int], list[int]]:
    """`first` and `last` replaced by their rank among all bounds, so huge "to the end"
    values fit in int64 while intersections stay exactly the same."""
    bounds = sorted({t.first for t in tensors} | {t.last for t in tensors})
    rank = {b: r for r, b in enumerate(bounds)}
    return [rank[t.first] for t in tensors], [rank[t.last] for t in tensors]


def _align_up(size: int, alignment: int) -> int:
    return -(-size // alignment) * alignment


def _check_alignment(alignment: int) -> None:
    if (
        not isinstance(alignment, int)
        or isinstance(alignment, bool)
        or alignment <= 0
        or alignment & (alignment - 1)
    ):
        raise ValueError(f"alignment must be a positive power of two, got {alignment!r}")


def _check_tensors(tensors: Sequence[TensorLife]) -> None:
    for i, t in enumerate(tensors):
        if t.size < 0:
            raise ValueError(f"tensor {i}: size must be >= 0 bytes, got {t.size}")
        if t.first < -1:
            raise ValueError(f"tensor {i}: first must be >= -1 (-1 = from the start), got {t.first}")
        if t.last < t.first:
            raise ValueError(f"tensor {i}: last ({t.last}) must be >= first ({t.first})")
