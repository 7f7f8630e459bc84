"""fold_constants: nodes of constant inputs become constants, evaluated by the kernels."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from edgerun.converters.optimize import optimize
from edgerun.converters.optimize.constants import FoldConstants
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
