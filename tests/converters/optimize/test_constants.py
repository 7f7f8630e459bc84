"""fold_constants: nodes of constant inputs become constants, evaluated by the kernels."""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgerun.converters.optimize import optimize
from edgerun.converters.optimize.constants import FoldConstants
from edgerun.runtime import Interpreter
from edgerun.runtime.errors import MemoryBudgetError
from tests.converters.optimize.helpers import convert, info, ops, optimize_and_check
from tests.onnx_models import make_model

node = helper.make_node
RNG = np.random.default_rng(0)


def _transposed_weight_model():
    """y = Relu(x @ Neg(Transpose(w)))."""
    return make_model([
        node("Transpose", ["w"], ["wt"], perm=[1, 0]),
        node("Neg", ["wt"], ["nw"]),
        node("MatMul", ["x", "nw"], ["h"]),
        node("Relu", ["h"], ["y"]),
    ], [info("x", ["batch", 4])], [info("y", ["batch", 3])],
        {"w": RNG.standard_normal((3, 4)).astype(np.float32)})


def test_constant_chain_is_folded() -> None:
    graph, report = optimize_and_check(_transposed_weight_model(), passes=["fold_constants"])
    assert ops(graph) == ["MatMul", "Relu"]
    weight = graph.nodes[0].inputs[1]
    assert weight.is_constant and weight.name == "nw" and weight.shape == (4, 3)
    assert report.passes[0].changes == {"nodes folded": 2}
    assert report.constants_before == 1 and report.constants_after == 1


def test_folded_graph_output_keeps_its_name() -> None:
    model = make_model([node("Neg", ["c"], ["k"]), node("Relu", ["x"], ["y"])],
                       [info("x", [2])], [info("y", [2]), info("k", [3])],
                       {"c": np.arange(3, dtype=np.float32)})
    graph, _ = optimize_and_check(model)
    assert ops(graph) == ["Relu"]
    k = graph.signatures["serving_default"].outputs["k"]
    assert k.name == "k" and k.is_constant
    np.testing.assert_array_equal(k.data, -np.arange(3, dtype=np.float32))


def test_results_much_larger_than_inputs_stay_nodes() -> None:
    graph = convert(_transposed_weight_model())
    FoldConstants(growth=0.5, small_bytes=0).run(graph)
    assert ops(graph) == ["Transpose", "Neg", "MatMul", "Relu"]


def test_big_constant_of_shape_stays_a_node() -> None:
    """Needs the ConstantOfShape kernel."""
    shape = np.array([64, 64], np.int64)
    value = numpy_helper.from_array(np.array([0.5], np.float32))
    model = make_model([
        node("ConstantOfShape", ["big_shape"], ["big"], value=value),
        node("ConstantOfShape", ["small_shape"], ["small"], value=value),
        node("MatMul", ["x", "big"], ["h"]),
        node("Add", ["h", "small"], ["y"]),
    ], [info("x", [2, 64])], [info("y", [2, 64])],
        {"big_shape": shape, "small_shape": np.array([64], np.int64)})
    graph, _ = optimize_and_check(model, passes=["fold_constants"])
    assert ops(graph) == ["ConstantOfShape", "MatMul", "Add"]


def test_non_deterministic_node_is_not_folded() -> None:
    """A training-mode Dropout of constants draws a new mask on every run."""
    model = make_model([node("Dropout", ["c", "ratio", "training"], ["y"], seed=3)], [], [info("y", [8])],
                       {"c": np.ones(8, np.float32), "ratio": np.array(0.5, np.float32),
                        "training": np.array(True)})
    graph = convert(model)
    optimize(graph)
    assert ops(graph) == ["Dropout"]


def test_subgraph_reads_a_folded_value() -> None:
    """An If branch reading a value folded outside keeps reading the right data."""
    then = helper.make_graph([node("Relu", ["nc"], ["t"])], "then", [], [info("t", [3])])
    other = helper.make_graph([node("Neg", ["nc"], ["e"])], "else", [], [info("e", [3])])
    model = make_model([node("Neg", ["c"], ["nc"]), node("If", ["cond"], ["y"], then_branch=then, else_branch=other)],
                       [info("cond", [], TensorProto.BOOL)], [info("y", [3])],
                       {"c": np.array([1.0, -2.0, 3.0], np.float32)})
    for flag in (True, False):
        graph, _ = optimize_and_check(model, {"cond": np.array(flag)})
        assert ops(graph) == ["If"]


# --- growth over chains of folded values ---------------------------------------------------


def _doubling_chain(op: str, steps: int) -> onnx.ModelProto:
    """y = x + k_steps, k_0 = c (one float), each k_i twice as long as k_(i-1): Concat(k, k),
    Concat(k, Neg(k)), Tile(k, [2]) or Expand of k as [1, n] to [2, n] reshaped to [2n]."""
    nodes, consts = [], {"c": np.ones(1, np.float32), "two": np.array([2], np.int64),
                         "row": np.array([1, -1], np.int64), "flat": np.array([-1], np.int64)}
    k = "c"
    for i in range(steps):
        out = f"k{i}"
        if op == "Concat":
            nodes.append(node("Concat", [k, k], [out], axis=0))
        elif op == "ConcatNeg":
            nodes += [node("Neg", [k], [f"n{i}"]), node("Concat", [k, f"n{i}"], [out], axis=0)]
        elif op == "Tile":
            nodes.append(node("Tile", [k, "two"], [out]))
        else:
            consts[f"s{i}"] = np.array([2, 1 << i], np.int64)
            nodes += [node("Reshape", [k, "row"], [f"r{i}"]), node("Expand", [f"r{i}", f"s{i}"], [f"e{i}"]),
                      node("Reshape", [f"e{i}", "flat"], [out])]
        k = out
    nodes.append(node("Add", ["x", k], ["y"]))
    return make_model(nodes, [info("x", [1])], [info("y", [2 << (steps - 1)])], consts)


def _constant_bytes(graph) -> int:
    return sum(v.data.nbytes for v in graph.values() if v.is_constant)


@pytest.mark.parametrize("op", ["Concat", "ConcatNeg", "Tile", "Expand"])
def test_a_chain_of_doubling_nodes_does_not_fold_into_huge_constants(op):
    """25 chained Concat(c, c) folded into 128 MiB (22 TFLite ones into 2.1 GB): each result
    was at most twice its inputs, themselves folded results. The runtime's budget applies."""
    graph = convert(_doubling_chain(op, 25))
    tracemalloc.start()
    start = time.perf_counter()
    optimize(graph)
    took, peak = time.perf_counter() - start, tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert took < 2.0 and peak < 16 << 20, (took, peak)
    assert _constant_bytes(graph) < 16 << 10
    with pytest.raises(MemoryBudgetError, match="over the memory budget"):
        Interpreter(graph, memory_budget=64 << 20)


@pytest.mark.parametrize("op", ["Concat", "ConcatNeg", "Tile", "Expand"])
def test_a_short_doubling_chain_folds_and_runs(op):
    graph, _ = optimize_and_check(_doubling_chain(op, 7), {"x": np.array([0.5], np.float32)})
    assert ops(graph) == ["Add"]


def test_a_long_doubling_chain_runs_within_the_budget():
    model = _doubling_chain("Concat", 14)
    graph, _ = optimize_and_check(model, {"x": np.array([0.5], np.float32)})
    assert "Concat" in ops(graph) and _constant_bytes(graph) < 16 << 10
    got = Interpreter(graph, memory_budget=64 << 20).run({"x": np.array([0.5], np.float32)})
    np.testing.assert_array_equal(got["y"], np.full(1 << 14, 1.5, np.float32))


def test_folding_stops_at_its_byte_budget():
    """Beyond the tracked sources, the budget bounds what folding adds: 4 of 8 KiB results."""
    weights = {f"c{i}": RNG.standard_normal(256).astype(np.float32) for i in range(8)}
    model = make_model([node("Neg", [f"c{i}"], [f"k{i}"]) for i in range(8)] + [node("Sum", ["x", *(
        f"k{i}" for i in range(8))], ["y"])], [info("x", [256])], [info("y", [256])], weights)
    graph = convert(model)
    FoldConstants(budget_bytes=4 << 10, budget_growth=0).run(graph)
    assert ops(graph) == ["Neg"] * 4 + ["Sum"]
