"""make_trainable says which requested weights cannot train and which op blocks each."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from edgerun.cli import main
from edgerun.converters.training import make_trainable
from edgerun.runtime import GraphBuilder, save_model
from edgerun.runtime.errors import ConversionError
from tests.converters.training.test_language_model_shapes import language_model

LOGGER = "edgerun.converters.training"


def blocked_mlp(second_head: bool = False):
    """x -> fc1 -> GlobalLpPool (no gradient) -> fc2 -> y; optionally a head `z` beside it."""
    g = GraphBuilder("blocked", opset=17)
    x = g.input("x", np.float32, (-1, 4))
    h = g.op("Gemm", [x, g.constant("fc1.weight", np.ones((4, 4), np.float32)),
                      g.constant("fc1.bias", np.zeros(4, np.float32))], name="fc1", transB=1)
    h = g.op("Reshape", [h, g.constant("shape", np.array([-1, 4, 1, 1]))], name="to4d")
    h = g.op("Flatten", [g.op("GlobalLpPool", [h], name="gmp")], name="flat")
    y = g.op("Gemm", [h, g.constant("fc2.weight", np.ones((3, 4), np.float32)),
                      g.constant("fc2.bias", np.zeros(3, np.float32))], name="fc2", transB=1)
    g.output(y, "y")
    if second_head:
        g.output(g.op("Gemm", [x, g.constant("head.weight", np.ones((2, 4), np.float32))], name="head",
                      transB=1), "z")
    return g.build()


def trained(graph) -> list[str]:
    return json.loads(graph.metadata["edgerun.training"])["parameters"]


def test_default_keeps_blocked_weights_frozen_with_one_warning(caplog):
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        graph = make_trainable(blocked_mlp())
    assert trained(graph) == ["fc2.weight", "fc2.bias"]
    warnings = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(warnings) == 1
    assert "'fc1.weight'" in warnings[0] and "'fc1.bias'" in warnings[0]
    assert "node 'gmp': op 'GlobalLpPool' has no gradient" in warnings[0]
    assert json.loads(graph.metadata["edgerun.training"])["frozen"] == ["fc1.weight", "fc1.bias"]


def test_default_without_blocked_weights_warns_nothing(caplog):
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        graph = make_trainable(language_model((-1, 3)))
    assert not [r for r in caplog.records if r.name == LOGGER]
    assert trained(graph) == ["embedding", "lstm.W", "lstm.R", "lstm.B", "Wo", "bo"]  # none dropped


@pytest.mark.parametrize("trainable", ["fc1.*", "fc*", ["fc1.weight", "fc2.weight"], 2])
def test_a_requested_blocked_weight_is_an_error_naming_it_and_the_op(trainable):
    with pytest.raises(ConversionError, match=r"cannot train [12] requested weight\(s\): 'fc1.weight'(, 'fc1.bias')? "
                                              r"\(blocked by node 'gmp': op 'GlobalLpPool' has no gradient\)$") \
            as caught:
        make_trainable(blocked_mlp(), trainable=trainable)
    assert "fc2" not in str(caught.value)


def deep_blocked_mlp(layers: int = 12, blockers: int = 5):
    """x -> `layers` Gemm layers -> `blockers` GlobalLpPool (no gradient) -> Gemm -> y."""
    g = GraphBuilder("deep", opset=17)
    h = g.input("x", np.float32, (-1, 4))
    for i in range(layers):
        h = g.op("Gemm", [h, g.constant(f"fc{i}.weight", np.ones((4, 4), np.float32))], name=f"fc{i}", transB=1)
    h = g.op("Reshape", [h, g.constant("shape", np.array([-1, 4, 1, 1]))], name="to4d")
    for i in range(blockers):
        h = g.op("GlobalLpPool", [h], name=f"gmp{i}")
    h = g.op("Flatten", [h], name="flat")
    g.output(g.op("Gemm", [h, g.constant("head.weight", np.ones((3, 4), np.float32))], name="head", transB=1), "y")
    return g.build()


def test_a_long_list_of_frozen_weights_is_one_short_message(caplog):
    # 12 weights behind the same 5 blocking nodes: one reason, three names of each kind, then counts
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        graph = make_trainable(deep_blocked_mlp())
    assert trained(graph) == ["head.weight"]
    [warning] = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert warning == ("12 weight(s) stay frozen behind ops without a gradient: 'fc0.weight', 'fc1.weight', "
                       "'fc2.weight' and 9 more (blocked by node 'gmp4': op 'GlobalLpPool' has no gradient, "
                       "node 'gmp3': op 'GlobalLpPool' has no gradient, node 'gmp2': op 'GlobalLpPool' has no "
                       "gradient and 2 more)")
    assert len(json.loads(graph.metadata["edgerun.training"])["frozen"]) == 12  # the record keeps them all


@pytest.mark.parametrize("trainable", ["fc2.*", ["fc2.weight"], 1])
def test_requested_weights_that_can_train_train_without_a_warning(trainable, caplog):
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        graph = make_trainable(blocked_mlp(), trainable=trainable)
    assert set(trained(graph)) <= {"fc2.weight", "fc2.bias"} and "fc2.weight" in trained(graph)
    assert not [r for r in caplog.records if r.name == LOGGER]


def test_a_requested_weight_of_another_output_is_an_error():
    with pytest.raises(ConversionError, match=r"'head.weight' \(does not affect output 'y'\)"):
        make_trainable(blocked_mlp(second_head=True), trainable="head.*", output="y")
    graph = make_trainable(blocked_mlp(second_head=True), output="y")  # the default skips the other head
    assert "head.weight" not in trained(graph)


def test_unknown_names_are_still_an_error_listing_the_weights():
    with pytest.raises(ConversionError, match="not trainable weights: \\['nope'\\]"):
        make_trainable(blocked_mlp(), trainable=["nope"])


def test_cli_names_frozen_weights_and_fails_on_requested_ones(tmp_path, capsys):
    model = save_model(blocked_mlp(), tmp_path / "blocked.erm")
    assert main(["make-trainable", str(model), "-o", str(tmp_path / "t.erm")]) == 0
    assert "frozen (an op on the way to the loss has no gradient): fc1.weight, fc1.bias" in capsys.readouterr().out
    assert main(["make-trainable", str(model), "--trainable", "last:2", "-o", str(tmp_path / "u.erm")]) == 1
    assert "'fc1.bias' (blocked by node 'gmp'" in capsys.readouterr().err
