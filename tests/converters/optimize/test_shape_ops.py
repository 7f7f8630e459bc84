"""fold_shape_ops (+ fold_constants): Shape/Size of static shapes, and the chains after them."""

from __future__ import annotations

import numpy as np
from onnx import helper

from edgerun.converters.optimize import optimize
from edgerun.converters.optimize.infer import infer
from tests.converters.optimize.helpers import convert, info, ops, optimize_and_check
from tests.onnx_models import make_model

node = helper.make_node


def _flatten_by_shape(batch: int | str, **shape_attrs):
    """y = Reshape(x, Concat(Gather(Shape(x), [0]), [-1])) * Size(x): x [batch, 3, 4]."""
    return make_model([
        node("Shape", ["x"], ["s"], **shape_attrs),
        node("Gather", ["s", "zero"], ["n"], axis=0),
        node("Concat", ["n", "minus_one"], ["target"], axis=0),
        node("Reshape", ["x", "target"], ["flat"]),
        node("Size", ["x"], ["size"]),
        node("Cast", ["size"], ["size_f"], to=1),
        node("Mul", ["flat", "size_f"], ["y"]),
    ], [info("x", [batch, 3, 4])], [info("y", [batch, 12])],
        {"zero": np.array([0], np.int64), "minus_one": np.array([-1], np.int64)})


def test_static_shape_chain_folds_to_a_constant_reshape() -> None:
    graph, report = optimize_and_check(_flatten_by_shape(2))
    assert ops(graph) == ["Reshape", "Mul"]
    np.testing.assert_array_equal(graph.nodes[0].inputs[1].data, [2, -1])
    np.testing.assert_array_equal(graph.nodes[1].inputs[1].data, np.float32(24))
    summary = {p.name: p for p in report.passes}
    assert summary["fold_shape_ops"].changes == {"Shape folded": 1, "Size folded": 1}
    assert summary["fold_constants"].changes == {"nodes folded": 3}


def test_dynamic_batch_keeps_shape_and_size() -> None:
    graph, _ = optimize_and_check(_flatten_by_shape("batch"))
    assert ops(graph).count("Shape") == 1 and ops(graph).count("Size") == 1


def test_shape_start_end() -> None:
    graph, _ = optimize_and_check(_flatten_by_shape(2, start=-3, end=-1), passes=["fold_shape_ops"])
    assert "Shape" not in ops(graph)
    gather = graph.nodes[0]
    np.testing.assert_array_equal(gather.inputs[0].data, [2, 3])


def test_infer_marks_dynamic_dims() -> None:
    graph = convert(_flatten_by_shape("batch"))
    facts = infer(graph)
    reshape = next(n for n in graph.nodes if n.op_type == "Reshape")
    assert facts[reshape.outputs[0]].shape == (-1, 12)
    assert facts[graph.inputs[0]].shape == (-1, 3, 4) and not facts[graph.inputs[0]].static


def test_shape_of_an_intermediate_value() -> None:
    """The Shape of a Conv output is static once the input shape is."""
    rng = np.random.default_rng(0)
    model = make_model([
        node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        node("Shape", ["c"], ["s"]),
        node("Reshape", ["x", "s"], ["r"]),
        node("Add", ["r", "c"], ["y"]),
    ], [info("x", [1, 2, 5, 5])], [info("y", [1, 2, 5, 5])],
        {"w": rng.standard_normal((2, 2, 3, 3)).astype(np.float32)})
    graph, _ = optimize_and_check(model)
    assert "Shape" not in ops(graph)
    optimize(graph)
    assert "Shape" not in ops(graph)
