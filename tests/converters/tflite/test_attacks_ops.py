"""Hostile .tflite files aimed at the operator converters and the constant folder: a few
hundred bytes declaring an index vector, an axis list or a dimension of 2**27 and more, or a
chain of ops each doubling a constant. Each test is one defect found in review and asserts
the specific error (or that conversion stays small and the runtime's memory budget refuses
the model) plus a bound on time or traced memory that the old code broke by a wide margin.
"""

from __future__ import annotations

import numpy as np
import pytest

import edgerun.converters.tflite.ops.broadcast  # noqa: F401
import edgerun.converters.tflite.ops.combine  # noqa: F401
import edgerun.converters.tflite.ops.elementwise  # noqa: F401
import edgerun.converters.tflite.ops.gather  # noqa: F401
import edgerun.converters.tflite.ops.image  # noqa: F401
import edgerun.converters.tflite.ops.recurrent  # noqa: F401
import edgerun.converters.tflite.ops.slicing  # noqa: F401
from edgerun import Interpreter
from edgerun.converters.tflite import from_tflite
from edgerun.converters.tflite.ops.recurrent import MAX_TIME_STEPS
from edgerun.runtime.errors import ConversionError, MemoryBudgetError
from tests.converters.tflite.builder import TFLiteBuilder, litert_run
from tests.converters.tflite.test_attacks import BUDGET, measured, refused
from tests.converters.tflite.test_ops_nn import lstm

HUGE = 1 << 27  # a declared length: 512 MiB of int32, 1 GiB of int64


def _converted_small(data: bytes, seconds: float = 2.0, peak: int = 16 << 20):
    """from_tflite(data), asserting it took under `seconds` and `peak` traced bytes."""
    graph, took, used = measured(lambda: from_tflite(data))
    assert not isinstance(graph, Exception), graph
    assert took < seconds and used < peak, (took, used)
    return graph


# --- constant folding ----------------------------------------------------------------------


def _doubling_chain(op: str, steps: int) -> bytes:
    """y = x + op(op(...op(c)...)) where each op doubles its input: CONCATENATION(c, c) or
    TILE(c, [2])."""
    b = TFLiteBuilder()
    c = b.constant("c", np.ones(1, np.float32))
    two = b.constant("two", np.array([2], np.int32))
    for i in range(steps):
        out = b.tensor(f"k{i}", [2 << i])
        if op == "CONCATENATION":
            b.op(op, [c, c], [out], "ConcatenationOptions", axis=0)
        else:
            b.op(op, [c, two], [out])
        c = out
    x = b.input("x", [1])
    y = b.output(b.tensor("y", [2 << (steps - 1)]))
    b.op("ADD", [x, c], [y], "AddOptions")
    return b.build()


@pytest.mark.parametrize("op", ["CONCATENATION", "TILE"])
def test_a_chain_of_doubling_ops_does_not_fold_into_huge_constants(op):
    """22 CONCATENATION(c, c) in 3.3 KB folded into 2.1 GB of constants (each result was at
    most twice its inputs, which were folded results themselves)."""
    data = _doubling_chain(op, 25)
    graph = _converted_small(data)
    assert sum(v.data.nbytes for v in graph.values() if v.is_constant) < 1 << 20
    refused(lambda: Interpreter(data, memory_budget=BUDGET), MemoryBudgetError, "over the memory budget")


@pytest.mark.parametrize("op", ["CONCATENATION", "TILE"])
def test_a_short_doubling_chain_still_runs(op):
    data = _doubling_chain(op, 6)
    got = Interpreter(data, memory_budget=BUDGET).run({"x": np.array([0.5], np.float32)})
    np.testing.assert_array_equal(got["y"], np.full(64, 1.5, np.float32))


# --- rank-sized lengths --------------------------------------------------------------------


def _strided_slice(count: int) -> bytes:
    b = TFLiteBuilder()
    x = b.input("x", [2, 3])
    begin = b.input("begin", [count], "INT32")
    end, strides = (b.constant(n, np.full(count, v, np.int32)) if count < 64 else b.input(n, [count], "INT32")
                    for n, v in (("end", 3), ("strides", 1)))
    y = b.output(b.tensor("y", [1, 1]))
    b.op("STRIDED_SLICE", [x, begin, end, strides], [y], "StridedSliceOptions")
    return b.build()


def test_strided_slice_begin_longer_than_any_rank_is_refused():
    """A run-time begin declared (2**27,) looped 9 s in Python over its entries."""
    refused(lambda: from_tflite(_strided_slice(HUGE)), ConversionError, "begin has 134217728 entries; at most 16",
            peak=8 << 20)


def test_strided_slice_with_a_run_time_begin_still_converts():
    data = _strided_slice(2)
    begin = np.array([1, -2], np.int32)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    got = Interpreter(data).run({"x": x, "begin": begin})
    np.testing.assert_array_equal(got["y"], litert_run(data, [x, begin])[0])


def _reverse(axis_length: int, rank: int = 2) -> bytes:
    b = TFLiteBuilder()
    x = b.input("x", [3] * rank)
    axis = b.input("axis", [axis_length], "INT32")
    y = b.output(b.tensor("y", [3] * rank))
    b.op("REVERSE_V2", [x, axis], [y])
    return b.build()


def test_reverse_v2_axis_list_longer_than_the_rank_is_refused():
    """A run-time axis input declared (2**30,) made three 8 GiB np.full arrays."""
    refused(lambda: from_tflite(_reverse(1 << 30)), ConversionError, "the axis has 1073741824 entries",
            peak=8 << 20)
    refused(lambda: from_tflite(_reverse(3)), ConversionError, "the axis has 3 entries; at most 2")


def test_reverse_v2_with_a_run_time_axis_still_converts():
    data = _reverse(1)
    x, axis = np.arange(9, dtype=np.float32).reshape(3, 3), np.array([1], np.int32)
    got = Interpreter(data).run({"x": x, "axis": axis})
    np.testing.assert_array_equal(got["y"], x[:, ::-1])


def test_broadcast_args_shapes_longer_than_any_rank_are_refused():
    """Shapes declared (2**27,) made a 1 GiB np.ones of padding."""
    b = TFLiteBuilder()
    s0 = b.input("s0", [HUGE], "INT32")
    s1 = b.input("s1", [1], "INT32")
    y = b.output(b.tensor("y", [HUGE], "INT32"))
    b.op("BROADCAST_ARGS", [s0, s1], [y])
    refused(lambda: from_tflite(b.build()), ConversionError, "shape 0 has 134217728 entries", peak=8 << 20)


# --- index arrays sized by a dimension -----------------------------------------------------


def _mirror_pad(width: int, pads: tuple[int, int], mode: int = 0) -> bytes:
    b = TFLiteBuilder()
    x = b.input("x", [1, width])
    paddings = b.constant("paddings", np.array([[0, 0], list(pads)], np.int32))
    y = b.output(b.tensor("y", [1, width + sum(pads)]))
    b.op("MIRROR_PAD", [x, paddings], [y], "MirrorPadOptions", mode=mode)
    return b.build()


def test_mirror_pad_of_a_wide_input_makes_its_indices_at_run_time():
    """An input declared (1, 2**29) made an 8 GiB np.arange of source positions."""
    data = _mirror_pad(1 << 29, (1, 1))
    _converted_small(data)
    refused(lambda: Interpreter(data, memory_budget=BUDGET), MemoryBudgetError, "over the memory budget")


@pytest.mark.parametrize("width, pads, mode", [(5, (2, 3), 0), (5, (5, 4), 1), (3000, (7, 2999), 0),
                                               (70000, (3, 5), 1)])
def test_mirror_pad_matches_litert(width, pads, mode):
    data = _mirror_pad(width, pads, mode)
    x = np.random.default_rng(0).standard_normal((1, width)).astype(np.float32)
    np.testing.assert_array_equal(Interpreter(data).run({"x": x})["y"], litert_run(data, [x])[0])


def _fill(b: TFLiteBuilder) -> list[int]:
    return [b.constant("dims", np.array([1 << 15, 1 << 15], np.int32)), b.constant("v", np.float32(2.0))]


def _range(b: TFLiteBuilder) -> list[int]:
    return [b.constant(n, np.int32(v)) for n, v in (("start", 0), ("limit", 1 << 30), ("delta", 1))]


def _one_hot(b: TFLiteBuilder) -> list[int]:
    return [b.input("i", [4], "INT32"), b.constant("depth", np.int32(1 << 28)),
            b.constant("on", np.float32(1)), b.constant("off", np.float32(0))]


def _resize(b: TFLiteBuilder) -> list[int]:
    return [b.input("x", [1, 2, 2, 1]), b.constant("size", np.array([1 << 15, 1 << 15], np.int32))]


@pytest.mark.parametrize("op, operands, options", [
    ("FILL", _fill, None), ("RANGE", _range, None), ("ONE_HOT", _one_hot, "OneHotOptions"),
    ("RESIZE_NEAREST_NEIGHBOR", _resize, "ResizeNearestNeighborOptions"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_sizes_given_by_constant_values_are_left_to_run_time(op, operands, options):
    """Constants a few bytes long asking for GiB results: no folding, the budget refuses."""
    b = TFLiteBuilder()
    inputs = operands(b)
    y = b.output(b.tensor("y", [1]))
    b.op(op, inputs, [y], options)
    data = b.build()
    _converted_small(data)
    refused(lambda: Interpreter(data, memory_budget=BUDGET), MemoryBudgetError, "over the memory budget")


# --- unrolled time steps -------------------------------------------------------------------


def test_an_lstm_over_a_huge_declared_time_axis_is_refused():
    """An input declared (1, 2**30, 3) unrolled 14 nodes per time step, without end."""
    refused(lambda: from_tflite(lstm(steps=1 << 30, batch=1)), ConversionError,
            f"1073741824 time steps are more than the {MAX_TIME_STEPS}", peak=8 << 20)
