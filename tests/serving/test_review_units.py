"""Regression tests for the review's defects in the pure modules (no protos imported): batch
dimensions, shape limits, BYTES decoding, batch failure isolation, model control records."""

from __future__ import annotations

import asyncio
import json
import types

import numpy as np
import pytest

from edgerun.runtime.errors import ErrorCode
from edgerun.serving.batcher import Batcher, batch_rows
from edgerun.serving.control import ControlLog, follow
from edgerun.serving.datatypes import from_list, from_raw
from edgerun.serving.errors import ServingError
from edgerun.serving.types import InputTensor
from edgerun.serving.validate import decode_inputs

BATCHING = types.SimpleNamespace(max_batch_size=8, max_delay_s=0.05, preferred_sizes=())


def _info(name: str, shape=(-1, 2), dtype=np.float32):
    return types.SimpleNamespace(name=name, dtype=np.dtype(dtype), shape=tuple(shape), has_default=False)


ADD_SPECS = {"x": _info("x"), "y": _info("y")}


def _raw(name: str, array: np.ndarray) -> InputTensor:
    return InputTensor(name, "FP32", list(array.shape), array.astype(np.float32).tobytes())


def _invalid(call, *words: str) -> str:
    with pytest.raises(ServingError) as info:
        call()
    assert info.value.status is ErrorCode.INVALID_ARGUMENT, info.value.message
    for word in words:
        assert word in info.value.message, (word, info.value.message)
    return info.value.message


# --- 1. every input of a batched request shares the first dimension ------------------------------

def test_batched_inputs_must_share_the_batch_dimension() -> None:
    x, y = np.ones((2, 2)), np.ones((3, 2))
    _invalid(lambda: decode_inputs("add", ADD_SPECS, [_raw("x", x), _raw("y", y)], max_batch_size=8),
             "input 'y'", "batch size 3", "'x'")
    # without batching the model itself decides (no batch dimension to speak of)
    arrays = decode_inputs("add", ADD_SPECS, [_raw("x", x), _raw("y", y)], max_batch_size=0)
    assert arrays["y"].shape == (3, 2)


def test_batch_rows() -> None:
    assert batch_rows({"x": np.zeros((3, 2)), "y": np.zeros((3, 5))}) == 3
    _invalid(lambda: batch_rows({"x": np.zeros((3, 2)), "y": np.zeros((1, 2))}), "input 'y'", "differs")
    _invalid(lambda: batch_rows({}), "at least one input")


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

@pytest.mark.parametrize("shape,words", [
    ([0, 2**28 + 2**31], ["input 't'", "more than"]),  # a zero dimension used to hide a huge one
    ([0, 2**62], ["input 't'", "more than"]),
    ([2**63], ["input 't'", "int64"]),
    ([2**64, 0], ["input 't'", "int64"]),
    ([1.5, 2], ["input 't'", "int64"]),
    ([True, 2], ["input 't'", "int64"]),
    ([0, -1], ["input 't'", "negative"]),
    ([2**16, 2**16, 0, 2**16], ["input 't'", "more than"]),
])
def test_shape_limits(shape, words) -> None:
    _invalid(lambda: from_raw("t", "FP32", shape, b""), *words)
    _invalid(lambda: from_list("t", "FP32", shape, []), *words)


def test_zero_dimension_with_sane_other_dims_is_fine() -> None:
    assert from_raw("t", "FP32", [0, 64], b"").shape == (0, 64)


# --- 3. BYTES ------------------------------------------------------------------------------

def test_bytes_raw_length_is_checked_before_parsing() -> None:
    _invalid(lambda: from_raw("t", "BYTES", [1000], b"\x00" * 3999), "input 't'", "expected 1000 BYTES elements")
    # more elements than the shape holds: refused as soon as the count is exceeded
    _invalid(lambda: from_raw("t", "BYTES", [2], b"\x00\x00\x00\x00" * 100000), "input 't'", "got more")
    assert from_raw("t", "BYTES", [2], b"\x01\x00\x00\x00a\x00\x00\x00\x00").tolist() == [b"a", b""]


@pytest.mark.parametrize("value", [5, 10**9, 1.5, None, True, {"a": 1}])
def test_bytes_typed_values_must_be_str_or_bytes(value) -> None:
    _invalid(lambda: from_list("t", "BYTES", [1], [value]), "input 't'", "BYTES values must be")


def test_bytes_typed_count_is_checked_while_decoding() -> None:
    _invalid(lambda: from_list("t", "BYTES", [2], ["a"] * 100000), "input 't'", "expected 2 values")
    assert from_list("t", "BYTES", [2], ["a", b"b"]).tolist() == [b"a", b"b"]


def test_deeply_nested_values_are_invalid_not_recursion_errors() -> None:
    nested: list = [1.0]
    for _ in range(5000):
        nested = [nested]
    _invalid(lambda: from_list("t", "BYTES", [1], nested), "input 't'", "nested deeper")
    _invalid(lambda: from_list("t", "FP32", [1], nested), "input 't'")


# --- 6. model control follower survives anything ------------------------------------------------

def test_follow_survives_failures_and_bad_records(tmp_path) -> None:
    control, writer = ControlLog(tmp_path), ControlLog(tmp_path)
    seen: list[str] = []

    async def load(name):
        seen.append(name)
        raise RuntimeError("boom")

    handlers = types.SimpleNamespace(repository=types.SimpleNamespace(load=load, unload=load))

    async def main():
        task = asyncio.ensure_future(follow(control, handlers, poll_s=0.01))
        writer.record("a", "load")
        await asyncio.sleep(0.1)
        control.path.write_text(json.dumps({"seq": 5, "models": {"b": "junk", "c": {"seq": "x"}}}))
        await asyncio.sleep(0.1)
        control.path.write_text(json.dumps({"seq": 6, "models": {"d": {"action": "load", "seq": 6}}}))
        await asyncio.sleep(0.1)
        assert not task.done(), task
        task.cancel()

    asyncio.run(main())
    assert seen == ["a", "d"]
