"""fold_pad_into_conv: a zero Pad of the spatial axes read only by Convs becomes their padding."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from tests.converters.optimize.helpers import info, ops, optimize_and_check
from tests.onnx_models import make_model

node = helper.make_node


def _pad_conv(pads, *, mode="constant", value=None, conv_attrs=None, second_reader=None, opset=13):
    rng = np.random.default_rng(4)
    inits = {"w": rng.standard_normal((3, 2, 3, 3)).astype(np.float32), "pads": np.array(pads, np.int64)}
    pad_inputs = ["x", "pads"]
    if value is not None:
        inits["value"] = np.array(value, np.float32)
        pad_inputs.append("value")
    nodes = [node("Pad", pad_inputs, ["p"], mode=mode), node("Conv", ["p", "w"], ["y"], **(conv_attrs or {}))]
    outputs = [info("y", None)]
    if second_reader is not None:
        nodes.append(second_reader)
        outputs.append(info("z", None))
    return make_model(nodes, [info("x", [1, 2, 7, 6])], outputs, inits, opset=opset)


@pytest.mark.parametrize("pads, conv_attrs", [
    ([0, 0, 1, 1, 0, 0, 1, 1], {}),
    ([0, 0, 0, 0, 0, 0, 2, 1], {"strides": [2, 2]}),
    ([0, 0, 1, 2, 0, 0, 0, 1], {"pads": [1, 0, 1, 1], "dilations": [2, 1]}),
    ([0, 0, 1, 1, 0, 0, 1, 1], {"auto_pad": "VALID"}),
])
def test_zero_pad_joins_the_conv(pads, conv_attrs):
    graph, report = optimize_and_check(_pad_conv(pads, conv_attrs=conv_attrs), passes=["fold_pad_into_conv"])
    assert ops(graph) == ["Conv"]
    assert report.passes[0].changes == {"Pad into Conv": 1}


def test_explicit_zero_value_is_folded():
    graph, _ = optimize_and_check(_pad_conv([0, 0, 1, 1, 0, 0, 1, 1], value=0.0), passes=["fold_pad_into_conv"])
    assert ops(graph) == ["Conv"]


@pytest.mark.parametrize("kwargs", [
    dict(pads=[0, 0, 1, 1, 0, 0, 1, 1], value=1.5),                     # not zero
    dict(pads=[0, 0, 1, 1, 0, 0, 1, 1], mode="reflect"),                # not constant
    dict(pads=[0, 1, 1, 1, 0, 0, 1, 1]),                                # pads a channel
    dict(pads=[0, 0, 1, 1, 0, 0, 1, 1], conv_attrs={"auto_pad": "SAME_UPPER"}),
    dict(pads=[0, 0, 1, 1, 0, 0, 1, 1], second_reader=node("Relu", ["p"], ["z"])),
])
def test_other_pads_stay(kwargs):
    if kwargs.get("pads", [0, 0])[1] == 1:  # a channel pad changes the Conv's input channels
        kwargs["pads"] = [0, 0, 1, 1, 0, 0, 1, 1]
        model = _pad_conv(**kwargs)
        model.graph.initializer[1].CopyFrom(helper.make_tensor("pads", 7, [8], [0, 1, 1, 1, 0, 0, 1, 1]))
        model.graph.initializer[0].CopyFrom(helper.make_tensor(
            "w", 1, [3, 3, 3, 3], np.random.default_rng(0).standard_normal(81).astype(np.float32)))
    else:
        model = _pad_conv(**kwargs)
    graph, report = optimize_and_check(model, passes=["fold_pad_into_conv"])
    assert "Pad" in ops(graph)
    assert report.passes[0].changes == {}
