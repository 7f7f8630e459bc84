"""Untrusted models against the memory budget and the value kinds, at a small scale: each builds
an attack a security review found (a tiny model that makes a huge value, or a value of the wrong
kind where a tensor belongs) and asserts the specific edgerun error, and, where memory is the
attack, that the refusal came before the memory was taken (tracemalloc counts numpy's arrays)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from edgerun.runtime import Interpreter, serialize
from edgerun.runtime.errors import MemoryBudgetError, ModelError
from edgerun.runtime.graph import GraphBuilder, Node, Value, ValueKind
from edgerun.runtime.kernels.base import MapSequenceSpec, TensorSpec
from edgerun.runtime.kernels.sequences import SequenceInsert
from edgerun.runtime.plan import _copy_output

ML = "ai.onnx.ml"
BUDGET = 1 << 20
F32 = np.dtype(np.float32)


def refused(error: type[Exception], match: str, fn, *args, **kwargs) -> int:
    """Assert `fn` raises `error` matching `match`; returns the most bytes Python and numpy
    held at once while it ran."""
    peaks = []
    with pytest.raises(error, match=match):
        peaks.append(None)
        tracemalloc.start()
        try:
            fn(*args, **kwargs)
        finally:
            peaks[0] = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
    return peaks[0]


# ---------------------------------------------------------------- R9: a variable updated from a non-tensor
@pytest.mark.parametrize("maker, what", [("SequenceConstruct", "a sequence"), ("Optional", "an optional tensor")])
def test_a_variable_updated_from_a_sequence_or_optional_is_a_model_error(maker, what):
    g = GraphBuilder("upd", opset=18)
    v = g.variable("v", np.zeros(3, np.float32))
    made = g.op(maker, [g.constant("c", np.ones(3, np.float32))], name="mk")
    out = g.op("Identity", [v], name="read")
    g.output(out, "y")
    g.signature("serving_default", {}, {"y": out}, {v: made})
    with pytest.raises(ModelError, match=rf"variable 'v' is updated from 'mk:0', which is {what}: "
                                         "a variable holds a tensor"):
        Interpreter(serialize(g.build()))


# ---------------------------------------------------------------- R10: maps where tensors belong
def test_zipmap_maps_undeclared_and_read_by_sequence_insert_are_refused_at_load():
    g = GraphBuilder("maps", opset=17)
    probs = g.op("Softmax", [g.input("x", np.float32, (1, 3))], axis=1, name="softmax")
    zm = g.op("ZipMap", [probs], name="zip", domain=ML, version=1, classlabels_int64s=[5, 1, 9])
    mixed = g.op("SequenceInsert", [zm, g.constant("t", np.ones(3, np.float32))], name="ins")
    g.output(mixed, "out")
    with pytest.raises(ModelError, match=r"node 'zip' \(ZipMap\): output 'zip:0' computes a sequence of maps "
                                         r"but is declared a tensor: maps must be declared sequence_map"):
        Interpreter(serialize(g.build()))


def test_sequence_kernels_refuse_a_sequence_of_maps():
    node = Node("SequenceInsert", [Value("s", F32, kind=ValueKind.SEQUENCE), Value("t", F32, (3,))],
                [Value("out", F32, kind=ValueKind.SEQUENCE)], {}, "ins")
    kernel = SequenceInsert.for_node(node)
    with pytest.raises(ModelError, match=r"node 'ins' \(SequenceInsert\): input 0 is a sequence of maps; "
                                         "SequenceInsert takes tensors and sequences of tensors"):
        kernel.check_kinds([MapSequenceSpec(F32, np.dtype(np.int64)), TensorSpec(F32, (3,))])


def test_output_copies_take_maps_and_arrays_and_refuse_anything_else():
    maps = [{1: 0.5}, np.ones(2, np.float32)]
    copied = _copy_output(maps)
    assert copied[0] == {1: 0.5} and np.array_equal(copied[1], maps[1])
    assert copied[0] is not maps[0] and copied[1] is not maps[1]
    with pytest.raises(ModelError, match=r"an output holds a object, not a tensor, a sequence or a map"):
        _copy_output([object()])


# ---------------------------------------------------------------- R2: string constant folding
def concat_chain(doublings: int):
    g = GraphBuilder("dbl", opset=20)
    s = g.constant("seed", np.array(["ab"], dtype=object))
    for i in range(doublings):
        s = g.op("StringConcat", [s, s], name=f"c{i}")
    g.output(g.op("Equal", [s, g.constant("t", np.array(["b"], dtype=object))], name="eq"), "y")
    g.output(s, "s")
    return serialize(g.build())


def test_doubling_strings_by_constant_folding_stops_at_the_memory_budget():
    data = concat_chain(24)  # unchecked: a 32 MiB string, 64 MiB made in all
    Interpreter(concat_chain(3), memory_budget=BUDGET)  # first use's imports and caches stay out of the peak
    peak = refused(MemoryBudgetError, r"constant-folded tensors needs \d+ bytes, over the memory budget of 1048576",
                   Interpreter, data, memory_budget=BUDGET)
    assert peak < 4 * BUDGET


def test_strings_folded_within_the_budget_are_exact():
    out = Interpreter(concat_chain(3), memory_budget=BUDGET).run({})
    assert out["s"].tolist() == ["ab" * 8] and out["y"].tolist() == [False]


# ---------------------------------------------------------------- R7: string tensors outside the arena
def string_identity(n: int):
    g = GraphBuilder("str", opset=20)
    g.output(g.op("Identity", [g.input("x", object, (n,))], name="id"), "y")
    return serialize(g.build())


def test_string_tensors_count_against_the_memory_budget():
    peak = refused(MemoryBudgetError, r"arena 0 bytes \+ string tensors 64\.0 MiB \+ weights 0 bytes = 67108864 "
                                      r"bytes, over the memory budget of 1048576",
                   Interpreter, string_identity(1 << 20), memory_budget=BUDGET)  # unchecked: 8 MiB of references
    assert peak < 4 * BUDGET
    out = Interpreter(string_identity(4), memory_budget=BUDGET).run({"x": np.array(list("abcd"), object)})
    assert out["y"].tolist() == list("abcd")


# ---------------------------------------------------------------- R5: SplitToSequence of empty parts
def split_model(rows: int, split: np.ndarray | None = None):
    g = GraphBuilder("split", opset=18)
    x = g.constant("x", np.zeros((rows, 0), np.uint8))
    inputs = [x] if split is None else [x, g.constant("sizes", split)]
    g.output(g.op("SequenceLength", [g.op("SplitToSequence", inputs, axis=0, name="split")], name="len"), "n")
    return serialize(g.build())


def test_split_to_sequence_checks_the_part_count_before_listing_the_parts():
    peak = refused(ModelError, r"node 'split' \(SplitToSequence\): makes 33554432 parts, more than a sequence "
                               r"may hold \(16777216\)", Interpreter, split_model(1 << 25))  # unchecked: 256 MiB
    assert peak < 4 * BUDGET


@pytest.mark.parametrize("split", [None, np.array(1, np.int64)])
def test_empty_parts_count_against_the_memory_budget(split):
    peak = refused(MemoryBudgetError, r"node 'split' \(SplitToSequence\): the sequence of 131072 parts needs "
                                      r"16777216 bytes, over the memory budget of 1048576",
                   Interpreter, split_model(1 << 17, split), memory_budget=BUDGET)  # unchecked: ~30 MiB of objects
    assert peak < 4 * BUDGET


def test_split_to_sequence_within_the_budget_still_splits():
    g = GraphBuilder("split", opset=18)
    x = g.input("x", np.float32, (5, 2))
    seq = g.op("SplitToSequence", [x, g.constant("sizes", np.array(2, np.int64))], axis=0, name="split")
    g.output(g.op("ConcatFromSequence", [seq], axis=1, name="cat"), "y")
    x_value = np.arange(10, dtype=np.float32).reshape(5, 2)
    with pytest.raises(ModelError, match=r"element 2 has shape \(1, 2\), element 0 \(2, 2\)"):
        Interpreter(serialize(g.build()), memory_budget=BUDGET).run({"x": x_value})
    g = GraphBuilder("split", opset=18)
    x = g.input("x", np.float32, (4, 2))
    seq = g.op("SplitToSequence", [x], axis=1, keepdims=0, name="split")
    g.output(g.op("ConcatFromSequence", [seq], axis=0, name="cat"), "y")
    x_value = np.arange(8, dtype=np.float32).reshape(4, 2)
    y = Interpreter(serialize(g.build()), memory_budget=BUDGET).run({"x": x_value})["y"]
    np.testing.assert_array_equal(y, np.concatenate([x_value[:, 0], x_value[:, 1]]))


# ---------------------------------------------------------------- R6: sequences that copy their inputs
def test_sequence_construct_checks_the_budget_before_copying():
    g = GraphBuilder("seq", opset=18)
    c = g.constant("c", np.zeros(1 << 16, np.float32))  # 256 KiB, listed 64 times: 16 MiB of copies
    g.output(g.op("SequenceLength", [g.op("SequenceConstruct", [c] * 64, name="mk")], name="len"), "n")
    data = serialize(g.build())
    peak = refused(MemoryBudgetError, r"node 'mk' \(SequenceConstruct\): the sequence \(copies\) needs 16785408 "
                                      r"bytes, over the memory budget of 1048576",
                   Interpreter, data, memory_budget=BUDGET)
    assert peak < 4 * BUDGET
    assert Interpreter(data, memory_budget=64 << 20).run({})["n"] == 64


# ---------------------------------------------------------------- R11: control-flow bodies
def body_model(n: int, mode: str) -> bytes:
    """A Loop (one iteration) or SequenceMap (one element) whose body Expands the input scalar
    to `n` float32s and sums them."""
    body = GraphBuilder("body", opset=17)
    if mode == "loop":
        body.input("i", np.int64, ())
        body.input("cond_in", np.bool_, ())
    acc = body.input("acc", np.float32, ())
    big = body.op("Expand", [acc, body.constant("shape", np.array([n], np.int64))], name="big")
    total = body.op("ReduceSum", [big], name="sum", keepdims=0)
    if mode == "loop":
        body.output(body.op("Identity", [body.constant("true", np.array(True))], name="keep"), "cond_out")
    body.output(total, "acc_out")
    g = GraphBuilder("outer", opset=17)
    x = g.input("x", np.float32, ())
    if mode == "loop":
        g.output(g.op("Loop", [g.constant("m", np.array(1, np.int64)), None, x], body=body.build(), name="loop"), "y")
    else:
        mapped = g.op("SequenceMap", [g.op("SequenceConstruct", [x], name="mk")], body=body.build(), name="map")
        g.output(g.op("SequenceAt", [mapped, g.constant("zero", np.array(0, np.int64))], name="at"), "y")
    return serialize(g.build())


@pytest.mark.parametrize("mode, match", [
    ("loop", r"signature 'body body' at input shapes .*: arena 16\.0 MiB (\+ folded constants \d+ bytes )?\+ "
             r"weights \d+ bytes = \d+ bytes, over the memory budget of 1048576"),
    ("seqmap", r"node 'big' \(Expand\): its outputs need 16777216 bytes, over the memory budget of 1048576"),
])
def test_the_memory_budget_reaches_control_flow_bodies(mode, match):
    data = body_model(1 << 22, mode)  # unchecked: a 16 MiB intermediate
    x = {"x": np.array(1, np.float32)}
    peak = refused(MemoryBudgetError, match, lambda: Interpreter(data, memory_budget=BUDGET).run(x))
    assert peak < 4 * BUDGET
    assert Interpreter(data, memory_budget=64 << 20).run(x)["y"] == 1 << 22
