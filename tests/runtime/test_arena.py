"""Tests for runtime.arena: invariants on random lifetimes, closed-form plans, errors."""

from __future__ import annotations

import random
import sys
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgerun.runtime import arena
from edgerun.runtime.arena import ArenaPlan, TensorLife, plan_arena

TO_THE_END = sys.maxsize


def aligned(size: int, alignment: int) -> int:
    return -(-size // alignment) * alignment


def assert_valid(tensors: list[TensorLife], plan: ArenaPlan, alignment: int) -> None:
    """The plan's invariants: no live overlap, aligned, inside the arena, within both bounds."""
    assert len(plan.offsets) == len(tensors)
    sizes = np.array([aligned(t.size, alignment) for t in tensors], dtype=np.int64)
    offs = np.array(plan.offsets, dtype=np.int64).reshape(len(tensors))
    first = np.array([t.first for t in tensors], dtype=np.int64)
    last = np.array([t.last for t in tensors], dtype=np.int64)
    assert np.all(offs % alignment == 0), "offset not aligned"
    assert np.all(offs + sizes <= plan.size), "tensor past the end of the arena"
    live_together = (first[:, None] <= last[None, :]) & (first[None, :] <= last[:, None])
    share_bytes = (offs[:, None] < offs[None, :] + sizes[None, :]) & (
        offs[None, :] < offs[:, None] + sizes[:, None]
    )
    nonzero = (sizes[:, None] > 0) & (sizes[None, :] > 0)
    clash = live_together & share_bytes & nonzero & ~np.eye(len(tensors), dtype=bool)
    assert not clash.any(), f"live tensors overlap: {np.argwhere(clash)[:3].tolist()}"
    assert plan.size <= sizes.sum(), "worse than giving every tensor its own bytes"
    assert plan.size >= peak_live_bytes(tensors, alignment), "below the live-bytes lower bound"


def peak_live_bytes(tensors: list[TensorLife], alignment: int) -> int:
    """Max over op steps of the aligned bytes live at that step: no plan can do better."""
    steps = {t.first for t in tensors}
    return max(
        (sum(aligned(t.size, alignment) for t in tensors if t.first <= s <= t.last) for s in steps),
        default=0,
    )


def reference_plan(tensors: list[TensorLife], alignment: int) -> list[int]:
    """The same greedy-by-size best fit, written as plainly as possible: the oracle."""
    order = sorted(range(len(tensors)), key=lambda i: (-tensors[i].size, tensors[i].first, i))
    offsets, placed = [0] * len(tensors), []
    for i in order:
        need, t = aligned(tensors[i].size, alignment), tensors[i]
        if need == 0:
            continue
        busy = sorted(
            (offsets[j], offsets[j] + aligned(tensors[j].size, alignment))
            for j in placed
            if tensors[j].first <= t.last and t.first <= tensors[j].last
        )
        reach, best, best_gap = 0, None, None
        for start, end in busy:
            if start - reach >= need and (best_gap is None or start - reach < best_gap):
                best, best_gap = reach, start - reach
            reach = max(reach, end)
        offsets[i] = reach if best is None else best
        placed.append(i)
    return offsets


@st.composite
def tensor_lives(draw: st.DrawFn) -> TensorLife:
    size = draw(st.one_of(st.just(0), st.integers(1, 5000)))
    first = draw(st.integers(-1, 30))
    length = draw(st.one_of(st.integers(0, 12), st.just(TO_THE_END - first)))
    return TensorLife(size, first, first + length)


def lifetimes(max_tensors: int = 60) -> st.SearchStrategy[list[TensorLife]]:
    return st.lists(tensor_lives(), max_size=max_tensors)


@settings(max_examples=300, deadline=None)
@given(tensors=lifetimes(), alignment=st.sampled_from([1, 4, 64]))
def test_random_plans_keep_every_invariant(tensors: list[TensorLife], alignment: int) -> None:
    plan = plan_arena(tensors, alignment)
    assert_valid(tensors, plan, alignment)


@settings(max_examples=100, deadline=None)
@given(
    tensors=lifetimes(max_tensors=120),
    alignment=st.sampled_from([1, 64]),
    vectorized=st.booleans(),
)
def test_random_plans_match_the_plain_reference(
    tensors: list[TensorLife], alignment: int, vectorized: bool
) -> None:
    # The planner switches to numpy above a few busy ranges; force that path too.
    with mock.patch.object(arena, "_SMALL", 0 if vectorized else arena._SMALL):
        assert plan_arena(tensors, alignment).offsets == reference_plan(tensors, alignment)


def test_chain_reuses_the_first_block_for_the_third() -> None:
    a, b, c = TensorLife(100, 0, 1), TensorLife(100, 1, 2), TensorLife(100, 2, 3)
    plan = plan_arena([a, b, c], alignment=64)
    assert plan.offsets[0] == plan.offsets[2]
    assert plan.size == 2 * 128


@pytest.mark.parametrize("vectorized", [False, True])
def test_best_fit_prefers_the_smallest_gap_that_fits(vectorized: bool) -> None:
    tensors = [
        TensorLife(100, 0, 1),  # [0, 100)
        TensorLife(60, 0, 3),  # [100, 160)
        TensorLife(30, 0, 1),  # [160, 190)
        TensorLife(20, 0, 3),  # [190, 210)
        TensorLife(15, 2, 3),  # gaps for it: [0, 100) and [160, 190): the smaller wins
    ]
    with mock.patch.object(arena, "_SMALL", 0 if vectorized else arena._SMALL):
        plan = plan_arena(tensors, alignment=1)
    assert plan == ArenaPlan(offsets=[0, 100, 160, 190, 160], size=210)


def test_tensors_live_together_get_separate_aligned_blocks() -> None:
    tensors = [TensorLife(10, -1, TO_THE_END), TensorLife(70, -1, TO_THE_END)]
    assert plan_arena(tensors, alignment=64) == ArenaPlan(offsets=[128, 0], size=192)
    assert plan_arena(tensors, alignment=1) == ArenaPlan(offsets=[70, 0], size=80)


def test_equal_sizes_place_the_earlier_first_then_the_lower_index() -> None:
    tensors = [TensorLife(64, 5, 9), TensorLife(64, 3, 9), TensorLife(64, 3, 9)]
    assert plan_arena(tensors).offsets == [128, 0, 64]


def test_zero_size_tensors_take_no_room() -> None:
    tensors = [TensorLife(0, 0, 5), TensorLife(64, 0, 5), TensorLife(0, 2, 3)]
    assert plan_arena(tensors) == ArenaPlan(offsets=[0, 0, 0], size=64)


def test_nothing_to_plan_gives_an_empty_arena() -> None:
    assert plan_arena([]) == ArenaPlan(offsets=[], size=0)


def test_huge_last_means_live_to_the_end() -> None:
    tensors = [TensorLife(64, -1, 10**30), TensorLife(64, 7, 8)]
    assert plan_arena(tensors).size == 128


def test_plans_are_deterministic() -> None:
    rng = random.Random(7)
    tensors = [TensorLife(rng.randrange(1, 9) * 32, f, f + rng.randrange(4)) for f in range(50)]
    assert plan_arena(tensors) == plan_arena(list(tensors))


@pytest.mark.parametrize("pattern", ["chain", "random", "all_live"])
def test_two_thousand_tensors_plan_correctly(pattern: str) -> None:
    rng = random.Random(2000)
    tensors = []
    for i in range(2000):
        if pattern == "chain":
            first, last = i, i + 1
        elif pattern == "random":
            first = rng.randrange(-1, 2000)
            last = first + rng.randrange(0, 300)
        else:
            first, last = -1, TO_THE_END
        tensors.append(TensorLife(rng.randrange(0, 1 << 16), first, last))
    plan = plan_arena(tensors)
    assert_valid(tensors, plan, 64)
    if pattern == "all_live":
        assert plan.size == sum(aligned(t.size, 64) for t in tensors)


def test_many_live_tensors_match_the_reference() -> None:
    rng = random.Random(3)
    tensors = [
        TensorLife(rng.randrange(1, 4000), rng.randrange(0, 5), 5 + rng.randrange(20)) for _ in range(300)
    ]
    assert plan_arena(tensors, 8).offsets == reference_plan(tensors, 8)


@pytest.mark.parametrize("alignment", [0, -64, 3, 48, 2.0, True])
def test_bad_alignment_is_rejected(alignment: object) -> None:
    with pytest.raises(ValueError, match="alignment must be a positive power of two"):
        plan_arena([TensorLife(1, 0, 0)], alignment=alignment)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("tensor", "message"),
    [
        (TensorLife(-1, 0, 0), r"tensor 1: size must be >= 0 bytes, got -1"),
        (TensorLife(8, 4, 3), r"tensor 1: last \(3\) must be >= first \(4\)"),
        (TensorLife(8, -2, 3), r"tensor 1: first must be >= -1"),
    ],
)
def test_bad_tensors_are_rejected_by_index(tensor: TensorLife, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plan_arena([TensorLife(8, 0, 1), tensor])


@pytest.mark.parametrize("vectorized", [False, True])
def test_equal_gaps_go_to_the_lowest_address(vectorized: bool) -> None:
    tensors = [
        TensorLife(90, 0, 1),  # [0, 90)
        TensorLife(90, 0, 3),  # [90, 180)
        TensorLife(90, 0, 1),  # [180, 270)
        TensorLife(20, 0, 3),  # [270, 290)
        TensorLife(15, 2, 3),  # gaps for it: [0, 90) and [180, 270): equal, the lower wins
    ]
    with mock.patch.object(arena, "_SMALL", 0 if vectorized else arena._SMALL):
        plan = plan_arena(tensors, alignment=1)
    assert plan == ArenaPlan(offsets=[0, 90, 180, 270, 0], size=290)
