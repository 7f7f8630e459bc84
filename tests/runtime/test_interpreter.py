"""Interpreter mechanics: signatures, inputs, dynamic shapes, arena, folding, variables.

Numerical oracles here are closed-form numpy expressions of the tiny graphs;
kernel-by-kernel agreement with onnxruntime lives in test_kernels.py.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from edgerun.runtime import GraphBuilder, Interpreter, save_model, serialize
from edgerun.runtime.errors import EdgerunError, InputError, ModelError
from tests.runtime.graphs import add_relu_graph, mlp_graph


def mlp_reference(graph, x):
    """The MLP in plain numpy, reading weights from the graph's constants."""
    h = x
    gemms = [n for n in graph.nodes if n.op_type == "Gemm"]
    for i, node in enumerate(gemms):
        w, b = node.inputs[1].data, node.inputs[2].data
        h = h @ w.T + b
        if i < len(gemms) - 1:
            h = np.maximum(h, 0)
    return h


@pytest.fixture
def add_relu():
    return Interpreter(serialize(add_relu_graph()))


def test_run_matches_closed_form(add_relu):
    x = np.array([[0.5, -1.0, -3.0, 1.0]], np.float32)
    np.testing.assert_array_equal(add_relu.run({"x": x})["y"], [[0.0, 0.0, 0.0, 3.0]])


@pytest.mark.parametrize("source", ["bytes", "path", "str", "graph"])
def test_model_sources(tmp_path, source):
    graph = mlp_graph()
    model = {
        "bytes": lambda: serialize(graph),
        "path": lambda: save_model(graph, tmp_path / "m.erm"),
        "str": lambda: str(save_model(graph, tmp_path / "m.erm")),
        "graph": lambda: graph,
    }[source]()
    x = np.random.default_rng(1).standard_normal((3, 64)).astype(np.float32)
    out = Interpreter(model).run({"x": x})["y"]
    np.testing.assert_allclose(out, mlp_reference(graph, x), rtol=1e-5, atol=1e-5)


def test_signature_info_reports_dynamic_dims():
    it = Interpreter(serialize(mlp_graph()))
    sig = it.signatures["serving_default"]
    assert sig.inputs["x"].shape == (-1, 64) and sig.inputs["x"].dtype == np.float32
    assert sig.outputs["y"].shape == (-1, 10) and sig.outputs["y"].dtype == np.float32


def test_dynamic_batch_reprepares_and_grows_the_arena():
    graph = mlp_graph()
    it = Interpreter(serialize(graph))
    small = it.peak_activation_bytes
    rng = np.random.default_rng(0)
    for batch in (1, 7, 2, 64):
        x = rng.standard_normal((batch, 64)).astype(np.float32)
        np.testing.assert_allclose(it.run({"x": x})["y"], mlp_reference(graph, x), rtol=1e-5, atol=1e-5)
    assert it.peak_activation_bytes > small


def test_resize_input_plans_ahead_and_checks_static_dims():
    it = Interpreter(serialize(mlp_graph()))
    it.resize_input("x", (32, 64))
    # fc0 (32x32 f32) and relu0 are live together; fc1 output (32x10) reuses fc0's block.
    assert it.peak_activation_bytes == 2 * 32 * 32 * 4
    with pytest.raises(InputError, match="expected shape"):
        it.resize_input("x", (32, 65))
    with pytest.raises(InputError, match="no input 'z'"):
        it.resize_input("z", (1, 64))
    with pytest.raises(InputError, match="non-negative"):
        it.resize_input("x", (-3, 64))
    assert it.peak_activation_bytes == 2 * 32 * 32 * 4  # failed resizes change nothing


@pytest.mark.parametrize("inputs,message", [
    ({}, "missing input 'x'"),
    ({"x": np.zeros((1, 4), np.float32), "extra": 1}, "unexpected input 'extra'"),
    ({"x": np.zeros((1, 4), np.float64)}, "expected dtype float32, got float64"),
    ({"x": np.zeros((4,), np.float32)}, "expected rank 2"),
    ({"x": np.zeros((2, 5), np.float32)}, r"expected shape \(\?, 4\), got \(2, 5\)"),
    ({"x": [[1.0], [1.0, 2.0]]}, "cannot be read as an array"),
])
def test_bad_inputs_raise_input_error_naming_the_input(add_relu, inputs, message):
    with pytest.raises(InputError, match=message):
        add_relu.run(inputs)
    x = np.ones((1, 4), np.float32)
    np.testing.assert_array_equal(add_relu.run({"x": x})["y"], [[0, 1, 2, 3]])  # still usable


def test_bad_call_shapes(add_relu):
    with pytest.raises(InputError, match="must be a dict"):
        add_relu.run([np.zeros((1, 4), np.float32)])
    with pytest.raises(InputError, match="unknown signature 'train'"):
        add_relu.run({"x": np.zeros((1, 4), np.float32)}, signature="train")


def test_outputs_are_fresh_arrays(add_relu):
    first = add_relu.run({"x": np.ones((1, 4), np.float32)})["y"]
    first[...] = 100
    second = add_relu.run({"x": np.zeros((1, 4), np.float32)})["y"]
    np.testing.assert_array_equal(second, [[0, 0, 1, 2]])
    assert first[0, 0] == 100


def test_constant_subexpressions_are_folded_at_prepare():
    g = GraphBuilder()
    x = g.input("x", np.float32, (3,))
    a = g.constant("a", np.array([1, 2, 3], np.float32))
    b = g.constant("b", np.array([-5, 5, -5], np.float32))
    folded = g.op("Relu", [g.op("Add", [a, b])])  # [0, 7, 0], computed once
    g.output(g.op("Add", [x, folded]), "y")
    it = Interpreter(g.build())
    np.testing.assert_array_equal(it.run({"x": np.ones(3, np.float32)})["y"], [1, 8, 1])
    assert it.peak_activation_bytes == 64  # only the final Add's output is in the arena


def test_signatures_run_only_what_they_need_and_variables_persist():
    g = GraphBuilder()
    x = g.input("x", np.float32, (2,))
    state = g.variable("state", np.array([10.0, 20.0], np.float32))
    y = g.op("Add", [x, state])
    g.output(y, "y")
    g.signature("serving_default", {"x": x}, {"y": y})
    g.signature("read", {}, {"state": state})
    it = Interpreter(serialize(g.build()))
    np.testing.assert_array_equal(it.run({}, signature="read")["state"], [10, 20])
    np.testing.assert_array_equal(it.run({"x": np.ones(2, np.float32)})["y"], [11, 21])
    assert set(it.variables()) == {"state"}


def test_memory_budget_is_enforced():
    with pytest.raises(ModelError, match="memory budget"):
        Interpreter(serialize(mlp_graph((64, 4096, 10))), memory_budget=1024)


def test_invalid_construction_arguments():
    with pytest.raises(EdgerunError, match="num_threads"):
        Interpreter(serialize(add_relu_graph()), num_threads=0)
    with pytest.raises(EdgerunError, match="device"):
        Interpreter(serialize(add_relu_graph()), device="tpu")
    with pytest.raises(EdgerunError, match="model must be"):
        Interpreter(12345)


def test_missing_signature_input_is_a_model_error():
    g = GraphBuilder()
    x = g.input("x", np.float32, (2,))
    z = g.input("z", np.float32, (2,))
    y = g.op("Add", [x, z])
    g.output(y, "y")
    g.signature("serving_default", {"x": x}, {"y": y})
    with pytest.raises(ModelError, match="input 'z' is neither"):
        Interpreter(g.build())


def test_steady_state_run_allocates_little_beyond_its_outputs():
    it = Interpreter(serialize(mlp_graph((64, 256, 256, 10))))
    x = np.ones((64, 64), np.float32)
    it.run({"x": x})
    tracemalloc.start()
    try:
        for _ in range(5):
            it.run({"x": x})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    activations = 64 * 256 * 4  # one hidden layer output, for scale
    assert peak < activations, f"run allocated {peak} bytes at peak"


def test_builder_renames_a_repeated_constant_name_and_refuses_a_repeated_input():
    g = GraphBuilder()
    assert [g.constant("c", np.ones(2)).name, g.constant("c", np.ones(2)).name] == ["c", "c_1"]
    g.input("x", np.float32, (1,))
    with pytest.raises(ModelError, match="already used"):
        g.input("x", np.float32, (1,))


def test_inputs_with_defaults_may_be_omitted():
    g = GraphBuilder()
    x = g.input("x", np.float32, (2,))
    lr = g.input("learning_rate", np.float32, ())
    lr.data = np.array(0.5, np.float32)
    g.output(g.op("Mul", [x, lr]), "y")
    it = Interpreter(g.build())
    info = it.signatures["serving_default"].inputs
    assert info["learning_rate"].has_default and not info["x"].has_default
    np.testing.assert_array_equal(it.run({"x": np.ones(2, np.float32)})["y"], [0.5, 0.5])
    lr_now = np.array(2.0, np.float32)
    np.testing.assert_array_equal(it.run({"x": np.ones(2, np.float32), "learning_rate": lr_now})["y"], [2, 2])
    with pytest.raises(InputError, match="missing input 'x'"):
        it.run({"learning_rate": lr_now})


def test_dynamic_inputs_that_do_not_fit_together_are_input_errors():
    g = GraphBuilder()
    a = g.input("a", np.float32, (-1, 4))
    b = g.input("b", np.float32, (-1, 4))
    g.output(g.op("Add", [a, b]), "y")
    it = Interpreter(g.build())
    with pytest.raises(InputError, match="cannot run with input shapes"):
        it.run({"a": np.zeros((2, 4), np.float32), "b": np.zeros((3, 4), np.float32)})
    assert it.run({"a": np.ones((3, 4), np.float32), "b": np.ones((3, 4), np.float32)})["y"].sum() == 24


def test_reshapes_of_arena_tensors_are_views_whose_bytes_live_as_long_as_they_are_used():
    """a = Relu(x); b = Reshape(a) is read again at the very end, after other tensors took the
    arena: the view's owner must keep its slot. Identity/Flatten/Squeeze/Unsqueeze likewise."""
    from edgerun.runtime.graph import GraphBuilder

    g = GraphBuilder("views", opset=17)
    x = g.input("x", np.float32, (4, 6))
    a = g.op("Relu", [x], name="relu")
    b = g.op("Reshape", [a, g.constant("shape", np.array([6, 4], np.int64))], name="reshape")
    c = g.op("Identity", [g.op("Flatten", [b], name="flatten", axis=0)], name="identity")
    t = g.op("Neg", [x], name="neg")
    for i in range(4):  # temporaries that would reuse a's slot if its life ended at the reshape
        t = g.op("Exp", [g.op("Neg", [t], name=f"n{i}")], name=f"e{i}")
    s = g.op("Squeeze", [g.op("Unsqueeze", [t, g.constant("ax", np.array([0], np.int64))], name="unsq"),
                         g.constant("ax2", np.array([0], np.int64))], name="sq")
    g.output(g.op("Add", [g.op("Reshape", [c, g.constant("back", np.array([4, 6], np.int64))], name="back"), s],
                  name="add"), "y")
    it = Interpreter(g.build())
    steps = [node.name for _, _, _, node in it._plans["serving_default"].prepared.steps]
    assert not {"reshape", "identity", "flatten", "unsq", "sq", "back"} & set(steps)
    x_in = np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)
    for _ in range(2):
        got = it.run({"x": x_in})
        t = -x_in
        for _ in range(4):
            t = np.exp(-t)
        np.testing.assert_allclose(got["y"], np.maximum(x_in, 0) + t, rtol=1e-6)


def test_a_view_that_is_an_output_is_returned_as_a_fresh_array():
    from edgerun.runtime.graph import GraphBuilder

    g = GraphBuilder("view_out", opset=17)
    x = g.input("x", np.float32, (2, 3))
    g.output(g.op("Flatten", [g.op("Relu", [x], name="relu")], name="flat", axis=0), "y")
    it = Interpreter(g.build())
    x_in = np.array([[-1, 2, -3], [4, -5, 6]], np.float32)
    first = it.run({"x": x_in})["y"]
    first[...] = 99
    np.testing.assert_array_equal(it.run({"x": x_in})["y"], [[0, 2, 0, 4, 0, 6]])
