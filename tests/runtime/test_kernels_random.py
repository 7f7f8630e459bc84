"""RandomUniform(Like) and RandomNormal(Like): shapes and types by the spec, draws checked by
closed-form moments (bounds that fail for a wrong distribution), seeds reproducible, and the
nodes never folded into constants."""

from __future__ import annotations

import numpy as np
import pytest

from edgerun.runtime.errors import ModelError
from edgerun.runtime.graph import GraphBuilder
from edgerun.runtime.interpreter import Interpreter


def _model(op: str, **attrs):
    g = GraphBuilder("random", opset=17)
    if op.endswith("Like"):
        x = g.input("x", np.float64, (-1, 50))
        g.output(g.op(op, [x], name="draw", **attrs), "y")
    else:
        g.output(g.op(op, [], name="draw", shape=[200, 50], **attrs), "y")
    return g.build()


def _run(op: str, **attrs) -> np.ndarray:
    it = Interpreter(_model(op, **attrs))
    return it.run({"x": np.zeros((200, 50))} if op.endswith("Like") else {})["y"]


@pytest.mark.parametrize("op", ["RandomUniform", "RandomUniformLike"])
def test_uniform_draws_lie_in_the_interval_with_its_moments(op):
    y = _run(op, low=-2.0, high=6.0, seed=3.0)
    assert y.shape == (200, 50) and y.dtype == (np.float64 if op.endswith("Like") else np.float32)
    assert y.min() >= -2.0 and y.max() < 6.0
    n = y.size
    assert abs(y.mean() - 2.0) < 5 * (8 / np.sqrt(12)) / np.sqrt(n)  # mean (a+b)/2, sd (b-a)/sqrt(12)
    assert abs(y.std() - 8 / np.sqrt(12)) < 0.05


@pytest.mark.parametrize("op", ["RandomNormal", "RandomNormalLike"])
def test_normal_draws_have_the_mean_and_scale(op):
    y = _run(op, mean=1.5, scale=0.25, seed=11.0)
    assert abs(y.mean() - 1.5) < 5 * 0.25 / np.sqrt(y.size)
    assert abs(y.std() - 0.25) < 0.01
    assert 0.6 < np.mean(np.abs(y - 1.5) < 0.25) < 0.76  # ~68 % within one sd


def test_seeded_draws_repeat_across_interpreters_and_advance_run_to_run():
    a, b = Interpreter(_model("RandomNormal", seed=5.0)), Interpreter(_model("RandomNormal", seed=5.0))
    first = [a.run({})["y"] for _ in range(2)]
    np.testing.assert_array_equal(first[0], b.run({})["y"])
    assert not np.array_equal(first[0], first[1])  # not folded into a constant: a new draw each run
    assert not np.array_equal(_run("RandomNormal", seed=5.0), _run("RandomNormal", seed=6.0))


def test_dtype_attribute_sets_the_output_type():
    assert _run("RandomUniform", dtype=10).dtype == np.float16  # TensorProto.FLOAT16
    assert _run("RandomNormalLike", dtype=1).dtype == np.float32


@pytest.mark.parametrize("attrs, message", [
    (dict(dtype=7), "dtype int64 is not a float type"),
    (dict(seed=float("inf")), "seed inf must be finite"),
])
def test_bad_attributes_are_model_errors(attrs, message):
    with pytest.raises(ModelError, match=message):
        Interpreter(_model("RandomUniform", **attrs))


def test_a_negative_shape_is_a_model_error():
    g = GraphBuilder("random", opset=17)
    g.output(g.op("RandomNormal", [], name="draw", shape=[3, -1]), "y")
    with pytest.raises(ModelError, match="negative dimension"):
        Interpreter(g.build())
