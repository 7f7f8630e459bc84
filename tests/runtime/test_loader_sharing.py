"""Tensors that share one buffer share its memory after loading (runtime/loader.py).

A crafted file may point many tensors at one buffer. Loading must not copy or unpack the
buffer once per tensor (memory quadratic in the file size): packed 4- and 2-bit buffers are
unpacked once per bit width, unaligned inline data is copied to aligned memory once. Each test
builds such a file with the writer patched to share buffers, loads it, checks every tensor's
values against its source array and bounds what loading allocated (tracemalloc sees numpy's
allocations).
"""

from __future__ import annotations

import tracemalloc

import ml_dtypes
import numpy as np
import pytest

from edgerun.runtime import serialize, writer
from edgerun.runtime.graph import GraphBuilder
from edgerun.runtime.loader import load_model
from tests.runtime.mutate import raw_model, vector_offset


@pytest.fixture
def shared_buffers(monkeypatch):
    """Make the writer store equal payloads (same stored bytes) in one buffer."""
    original, seen = writer._Tables._add_buffer, {}

    def add(self, value, inline_limit):
        key = (id(self), np.ascontiguousarray(writer.dtypes.pack(value.data)).tobytes())
        if key not in seen:
            seen[key] = original(self, value, inline_limit)
        return seen[key]

    monkeypatch.setattr(writer._Tables, "_add_buffer", add)
    return seen


def _constants_model(name: str, arrays: list[np.ndarray], inline_limit: int) -> bytes:
    g = GraphBuilder(name, opset=21)
    x = g.input("x", np.float32, (1,))
    for i, array in enumerate(arrays):
        g.output(g.constant(f"w{i}", array))
    g.output(g.op("Relu", [x]), "y")
    return serialize(g.build(), inline_limit=inline_limit)


def _load_traced(data: bytes) -> tuple[list[np.ndarray], int]:
    """(the loaded constants in output order, the peak bytes allocated while loading)."""
    tracemalloc.start()
    try:
        graph = load_model(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return [v.data for v in graph.outputs if v.data is not None], peak


def _buffers_used(data: bytes) -> int:
    return len({t["buffer"] for t in raw_model(data)["subgraphs"][0]["tensors"] if t["buffer"]})


@pytest.mark.parametrize("inline_limit", [0, 1 << 30], ids=["external", "inline"])
def test_tensors_sharing_a_packed_buffer_are_unpacked_once(shared_buffers, inline_limit):
    n_tensors, n_bytes = 400, 16 << 10
    codes = np.random.default_rng(0).integers(0, 4, n_bytes * 4).astype(np.uint8)
    w = codes.view(ml_dtypes.uint2)
    data = _constants_model("packed", [w] * n_tensors, inline_limit)
    assert _buffers_used(data) == 1
    arrays, peak = _load_traced(data)
    assert len(arrays) == n_tensors
    for array in arrays:
        assert array.dtype == w.dtype and not array.flags.writeable
        np.testing.assert_array_equal(array.view(np.uint8), codes)
        assert np.shares_memory(array, arrays[0])
    # one unpacked copy is 64 KiB (unpacking briefly needs two); unpacking per tensor kept 25 MiB
    assert peak < 2 << 20, peak


def test_one_packed_buffer_serves_tensors_of_several_shapes_and_widths(shared_buffers):
    codes = np.array([1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 0, 0], np.uint8)  # elements 10 and 11 are 0
    two_bit = [codes[:10].view(ml_dtypes.uint2), codes[:11].view(ml_dtypes.int2),
               codes.reshape(3, 4).view(ml_dtypes.uint2)]  # all pack to the same 3 bytes
    packed = writer.dtypes.pack(two_bit[2])
    nibbles = np.stack([packed & 15, packed >> 4], axis=1).reshape(-1)  # the same 3 bytes as 4-bit elements
    four_bit = [nibbles.view(ml_dtypes.uint4), nibbles[:5].view(ml_dtypes.uint4)]
    arrays_in = two_bit + four_bit
    data = _constants_model("widths", arrays_in, inline_limit=0)
    assert _buffers_used(data) == 1
    arrays, _ = _load_traced(data)
    for got, want in zip(arrays, arrays_in, strict=True):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))
    assert all(np.shares_memory(a, arrays[0]) for a in arrays[:3])
    assert np.shares_memory(arrays[3], arrays[4]) and not np.shares_memory(arrays[0], arrays[3])


def _unaligned_bytes(builder, data: np.ndarray) -> int:
    """Inline data 4-aligned only: 4 bytes off an 8-byte boundary when its size is a multiple of 8."""
    payload = np.ascontiguousarray(data).reshape(-1).view(np.uint8).tobytes()
    builder.StartVector(1, len(payload), 4)
    builder.Prep(8, 0)
    if len(payload) % 8 == 0:
        builder.Pad(4)
    builder.head -= len(payload)
    builder.Bytes[builder.head : builder.head + len(payload)] = payload
    builder.vectorNumElems = len(payload)
    return builder.EndVector()


def test_unaligned_inline_buffer_shared_by_tensors_is_copied_once(shared_buffers, monkeypatch):
    monkeypatch.setattr(writer, "_aligned_bytes", _unaligned_bytes)
    n_tensors = 400
    w = np.random.default_rng(1).standard_normal(1 << 13)  # 64 KiB of float64
    for pad in range(8):  # a model name that puts the shared data 4 bytes off 8-byte alignment
        shared_buffers.clear()
        data = _constants_model("share" + "_" * pad, [w] * n_tensors, inline_limit=1 << 30)
        raw = raw_model(data)
        buffer = next(raw["buffers"][t["buffer"]]["data"] for t in raw["subgraphs"][0]["tensors"] if t["buffer"])
        if vector_offset(data, buffer) % 8:
            break
    else:
        pytest.fail("could not place the inline data off alignment")
    arrays, peak = _load_traced(data)
    assert len(arrays) == n_tensors
    for array in arrays:
        assert array.ctypes.data % 8 == 0 and not array.flags.writeable
        np.testing.assert_array_equal(array, w)
        assert np.shares_memory(array, arrays[0])
    assert peak < 2 << 20, peak  # one 64 KiB copy; a copy per tensor kept 25 MiB
