"""remove_identity: Identity and inference Dropout disappear; output names survive."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from edgerun.converters.optimize import optimize
from edgerun.runtime.graph import GraphBuilder
from tests.converters.optimize.helpers import convert, info, ops, optimize_and_check
from tests.onnx_models import make_model

node = helper.make_node


def test_identity_and_dropout_in_the_middle_are_removed() -> None:
    model = make_model([
        node("Identity", ["x"], ["a"]),
        node("Relu", ["a"], ["b"]),
        node("Dropout", ["b"], ["c"]),
        node("Neg", ["c"], ["y"]),
    ], [info("x", [2, 3])], [info("y", [2, 3])])
    graph, report = optimize_and_check(model, passes=["remove_identity"])
    assert ops(graph) == ["Relu", "Neg"]
    assert report.passes[0].changes == {"Identity removed": 1, "Dropout removed": 1}
    assert graph.nodes[0].inputs[0] is graph.inputs[0]


def test_identity_producing_an_output_keeps_the_output_name() -> None:
    model = make_model([
        node("Relu", ["x"], ["h"]),
        node("Identity", ["h"], ["y"]),
        node("Neg", ["h"], ["z"]),
    ], [info("x", [2, 3])], [info("y", [2, 3]), info("z", [2, 3])])
    graph, _ = optimize_and_check(model, passes=["remove_identity"])
    assert ops(graph) == ["Relu", "Neg"]
    assert [v.name for v in graph.outputs] == ["y", "z"]
    assert list(graph.signatures["serving_default"].outputs) == ["y", "z"]
    assert graph.nodes[0].outputs[0] is graph.outputs[0] and graph.nodes[1].inputs[0] is graph.outputs[0]


def test_identity_between_input_and_output_stays() -> None:
    model = make_model([node("Identity", ["x"], ["y"])], [info("x", [2, 3])], [info("y", [2, 3])])
    graph, report = optimize_and_check(model)
    assert ops(graph) == ["Identity"] and not report.changed


def test_identity_of_two_outputs_stays() -> None:
    model = make_model([node("Relu", ["x"], ["h"]), node("Identity", ["h"], ["y"])],
                       [info("x", [2, 3])], [info("h", [2, 3]), info("y", [2, 3])])
    graph, _ = optimize_and_check(model, passes=["remove_identity"])
    assert ops(graph) == ["Relu", "Identity"]


def test_dropout_whose_mask_is_read_stays() -> None:
    model = make_model([node("Dropout", ["x"], ["a", "mask"]), node("Relu", ["a"], ["y"])],
                       [info("x", [2, 3])], [info("y", [2, 3]), info("mask", [2, 3], TensorProto.BOOL)])
    graph, _ = optimize_and_check(model, passes=["remove_identity"])
    assert ops(graph) == ["Dropout", "Relu"]


def test_dropout_with_unread_mask_and_false_training_mode_is_removed() -> None:
    inits = {"ratio": np.array(0.3, np.float32), "training": np.array(False)}
    model = make_model([node("Dropout", ["x", "ratio", "training"], ["a", "mask"]), node("Relu", ["a"], ["y"])],
                       [info("x", [2, 3])], [info("y", [2, 3])], inits)
    graph, report = optimize_and_check(model)
    assert ops(graph) == ["Relu"]
    assert report.constants_after == 0


def test_training_mode_dropout_stays() -> None:
    model = make_model([node("Dropout", ["x", "ratio", "training"], ["y"], seed=1)],
                       [info("x", [2, 3]), info("training", [], TensorProto.BOOL)], [info("y", [2, 3])],
                       {"ratio": np.array(0.3, np.float32)})
    graph = convert(model)
    optimize(graph, ["remove_identity"])
    assert ops(graph) == ["Dropout"]


def test_body_reading_the_removed_output_by_object_reads_the_input() -> None:
    """A nested body that refers to the Identity's output Value directly is rewired too,
    and the body's own nodes are left alone."""
    outer = GraphBuilder("main")
    x = outer.input("x", np.float32, (3,))
    r = outer.op("Relu", [x])
    i = outer.op("Identity", [r])
    body = GraphBuilder("body")
    body.output(body.op("Identity", [i]), "t")
    branch = body.build()
    y = outer.op("If", [outer.constant("cond", np.array(True))], then_branch=branch, else_branch=branch)
    outer.output(y, "y")
    graph = outer.build()
    optimize(graph, ["remove_identity"])
    assert ops(graph) == ["Relu", "If"]
    assert ops(branch) == ["Identity"] and branch.nodes[0].inputs[0] is r
