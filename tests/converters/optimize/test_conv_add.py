"""fold_conv_add: a per-channel constant Add after a Conv joins the Conv's bias."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from tests.converters.optimize.helpers import info, ops, optimize_and_check
from tests.onnx_models import make_model

node = helper.make_node


def _conv_add(c_shape: tuple[int, ...], with_bias: bool, swap: bool = False):
    rng = np.random.default_rng(6)
    inits = {"w": rng.standard_normal((3, 2, 3, 3)).astype(np.float32),
             "c": rng.standard_normal(c_shape).astype(np.float32)}
    conv_inputs = ["x", "w"]
    if with_bias:
        inits["b"] = rng.standard_normal(3).astype(np.float32)
        conv_inputs.append("b")
    return make_model([
        node("Conv", conv_inputs, ["h"]),
        node("Add", ["c", "h"] if swap else ["h", "c"], ["y"]),
    ], [info("x", ["n", 2, 5, 5])], [info("y", None)], inits)


@pytest.mark.parametrize("c_shape, with_bias, swap", [
    ((3, 1, 1), True, False), ((1, 3, 1, 1), False, False), ((), True, True), ((1, 1, 1), False, True),
])
def test_bias_add_is_folded(c_shape: tuple, with_bias: bool, swap: bool) -> None:
    graph, report = optimize_and_check(_conv_add(c_shape, with_bias, swap), passes=["fold_conv_add"])
    assert ops(graph) == ["Conv"] and graph.nodes[0].outputs[0].name == "y"
    assert report.passes[0].changes == {"Add into Conv bias": 1}


@pytest.mark.parametrize("c_shape", [(3,), (3, 3, 3), (2, 3, 1, 1)])
def test_add_that_is_not_a_bias_stays(c_shape: tuple) -> None:
    graph, _ = optimize_and_check(_conv_add(c_shape, True), passes=["fold_conv_add"])
    assert ops(graph) == ["Conv", "Add"]
