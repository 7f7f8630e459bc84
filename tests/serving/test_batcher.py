"""The dynamic batcher and batch checks: every input of a batched request shares the first
dimension, rows go back to exactly their requests, one failing request does not fail its batch,
drain waits for queued and running batches."""

from __future__ import annotations

import asyncio
import types

import numpy as np

from edgerun.runtime.errors import ErrorCode
from edgerun.serving.batcher import Batcher, batch_rows
from edgerun.serving.errors import ServingError
from edgerun.serving.validate import decode_inputs
from tests.serving.requests import assert_invalid, raw_input, spec

BATCHING = types.SimpleNamespace(max_batch_size=8, max_delay_s=0.05, preferred_sizes=())

ADD_SPECS = {"x": spec("x"), "y": spec("y")}



def test_batched_inputs_must_share_the_batch_dimension() -> None:
    x, y = np.ones((2, 2)), np.ones((3, 2))
    assert_invalid(lambda: decode_inputs("add", ADD_SPECS, [raw_input("x", x), raw_input("y", y)], max_batch_size=8),
             "input 'y'", "batch size 3", "'x'")
    # without batching the model itself decides (no batch dimension to speak of)
    arrays = decode_inputs("add", ADD_SPECS, [raw_input("x", x), raw_input("y", y)], max_batch_size=0)
    assert arrays["y"].shape == (3, 2)


def test_batch_rows() -> None:
    assert batch_rows({"x": np.zeros((3, 2)), "y": np.zeros((3, 5))}) == 3
    assert_invalid(lambda: batch_rows({"x": np.zeros((3, 2)), "y": np.zeros((1, 2))}), "input 'y'", "differs")
    assert_invalid(lambda: batch_rows({}), "at least one input")


def _run_batcher(coro_factory):
    async def main():
        return await coro_factory()
    return asyncio.run(main())


def test_concurrent_requests_get_exactly_their_own_rows() -> None:
    calls: list[int] = []

    async def run(arrays, rows):
        calls.append(rows)
        return {"z": arrays["x"] + arrays["y"]}

    async def main():
        batcher = Batcher(run, BATCHING)
        a = {"x": np.full((1, 2), 1.0), "y": np.full((1, 2), 10.0)}
        b = {"x": np.full((3, 2), 2.0), "y": np.arange(6.0).reshape(3, 2)}
        bad = {"x": np.zeros((2, 2)), "y": np.zeros((1, 2))}
        results = await asyncio.gather(batcher.submit(a), batcher.submit(b), batcher.submit(bad),
                                       return_exceptions=True)
        return a, b, results

    a, b, (ra, rb, rbad) = _run_batcher(main)
    assert calls == [4]  # a and b ran as one batch; the mismatched request never reached the model
    np.testing.assert_array_equal(ra[0]["z"], a["x"] + a["y"])
    np.testing.assert_array_equal(rb[0]["z"], b["x"] + b["y"])
    assert isinstance(rbad, ServingError) and rbad.status is ErrorCode.INVALID_ARGUMENT


def test_one_failing_request_does_not_fail_its_batch() -> None:
    async def run(arrays, rows):
        if (arrays["x"] < 0).any():
            raise ServingError(ErrorCode.INVALID_ARGUMENT, "negative input")
        return {"z": arrays["x"] * 2}

    async def main():
        batcher = Batcher(run, BATCHING)
        good1, bad, good2 = (np.full((1, 2), 1.0),), (np.full((1, 2), -1.0),), (np.full((2, 2), 3.0),)
        return await asyncio.gather(*(batcher.submit({"x": v[0]}) for v in (good1, bad, good2)),
                                    return_exceptions=True)

    r1, rbad, r2 = _run_batcher(main)
    np.testing.assert_array_equal(r1[0]["z"], np.full((1, 2), 2.0))
    np.testing.assert_array_equal(r2[0]["z"], np.full((2, 2), 6.0))
    assert isinstance(rbad, ServingError) and rbad.message == "negative input"


def test_drain_waits_for_queued_and_running_batches() -> None:
    finished: list[int] = []

    async def run(arrays, rows):
        await asyncio.sleep(0.02)
        finished.append(rows)
        return {"z": arrays["x"]}

    async def main():
        batcher = Batcher(run, BATCHING)
        pending = asyncio.ensure_future(batcher.submit({"x": np.zeros((2, 2))}))
        await asyncio.sleep(0)
        await batcher.drain()
        assert finished == [2] and pending.done()
        await pending

    _run_batcher(main)


# --- 2. shape limits --------------------------------------------------------------------------
