"""eliminate_dead_code: only what a signature output or variable update needs survives."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from edgerun.converters.optimize import optimize
from edgerun.runtime.graph import GraphBuilder
from tests.converters.optimize.helpers import info, ops, optimize_and_check
from tests.onnx_models import make_model

node = helper.make_node


def test_dangling_nodes_and_their_constants_are_removed() -> None:
    model = make_model([
        node("Transpose", ["x"], ["unused_t"]),
        node("MatMul", ["x", "w_unused"], ["unused_m"]),
        node("Neg", ["unused_m"], ["unused_n"]),
        node("Relu", ["x"], ["y"]),
    ], [info("x", [2, 2])], [info("y", [2, 2])], {"w_unused": np.eye(2, dtype=np.float32)})
    graph, report = optimize_and_check(model, passes=["eliminate_dead_code"])
    assert ops(graph) == ["Relu"]
    assert report.passes[0].changes == {"nodes removed": 3, "constants removed": 1}
    assert report.constants_after == 0


def test_value_read_only_inside_a_branch_is_kept() -> None:
    then = helper.make_graph([node("Neg", ["r"], ["t"])], "then", [], [info("t", [3])])
    other = helper.make_graph([node("Identity", ["x"], ["e"])], "else", [], [info("e", [3])])
    model = make_model([
        node("Relu", ["x"], ["r"]),
        node("Sigmoid", ["x"], ["dead"]),
        node("If", ["cond"], ["y"], then_branch=then, else_branch=other),
    ], [info("x", [3]), info("cond", [], TensorProto.BOOL)], [info("y", [3])])
    x = np.array([-1.0, 0.5, 2.0], np.float32)
    for flag in (True, False):
        graph, _ = optimize_and_check(model, {"x": x, "cond": np.array(flag)})
        assert ops(graph) == ["Relu", "If"]


def test_outer_value_referenced_by_object_is_kept() -> None:
    """A body that reads an outer Value directly (no capture input) still keeps it alive."""
    outer = GraphBuilder("main")
    x = outer.input("x", np.float32, (3,))
    r = outer.op("Relu", [x])
    body = GraphBuilder("body")
    body.output(body.op("Neg", [r]), "t")
    y = outer.op("If", [outer.constant("cond", np.array(True))], then_branch=body.build(),
                 else_branch=body.build())
    outer.output(y, "y")
    graph = outer.build()
    optimize(graph, ["eliminate_dead_code"])
    assert ops(graph) == ["Relu", "If"]


def test_variable_update_is_a_root() -> None:
    g = GraphBuilder("train")
    x = g.input("x", np.float32, (2,))
    v = g.variable("v", np.zeros(2, np.float32))
    new_v = g.op("Add", [v, x])
    g.op("Neg", [x])  # dead
    y = g.op("Relu", [x])
    g.output(y, "y")
    g.signature("serving_default", {"x": x}, {"y": y})
    g.signature("train", {"x": x}, {}, updates={v: new_v})
    graph = g.build()
    report = optimize(graph)
    assert ops(graph) == ["Add", "Relu"]
    assert not report.passes[-1].changes.get("constants removed")
