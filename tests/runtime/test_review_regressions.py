"""Regression tests for problems an independent review found: shared flatbuffer
objects, fold bombs, deep nesting, variable semantics, zero sizes, error types."""

from __future__ import annotations

import flatbuffers
import numpy as np
import pytest

from edgerun.runtime import GraphBuilder, Interpreter, load_model, serialize
from edgerun.runtime.errors import InputError, ModelError
from edgerun.runtime.format import FILE_IDENTIFIER, SCHEMA_VERSION
from edgerun.runtime.graph import Graph, Node
from edgerun.runtime.schema.fb import KeyValue, Model
from tests.runtime.test_format import assert_graphs_equal


def test_a_string_referenced_twice_is_refused():
    builder = flatbuffers.Builder(0)
    big = builder.CreateString("x" * 1000)
    pairs = []
    for _ in range(2):
        KeyValue.Start(builder)
        KeyValue.AddKey(builder, big)
        KeyValue.AddValue(builder, big)
        pairs.append(KeyValue.End(builder))
    builder.StartVector(4, len(pairs), 4)
    for off in reversed(pairs):
        builder.PrependUOffsetTRelative(off)
    metadata = builder.EndVector()
    Model.Start(builder)
    Model.AddSchemaVersion(builder, SCHEMA_VERSION)
    Model.AddMetadata(builder, metadata)
    builder.Finish(Model.End(builder), file_identifier=FILE_IDENTIFIER)
    with pytest.raises(ModelError, match="referenced more than once"):
        load_model(bytes(builder.Output()))


def outer_add(n: int) -> Graph:
    g = GraphBuilder()
    x = g.input("x", np.float32, (1,))
    a = g.constant("a", np.ones((n, 1), np.float32))
    b = g.constant("b", np.ones((1, n), np.float32))
    g.output(g.op("Add", [g.op("Add", [a, b]), x]), "y")
    return g.build()


def test_a_constant_expression_much_bigger_than_its_inputs_is_not_folded():
    it = Interpreter(outer_add(2500))  # 25 MB result from 20 KB of constants
    assert it.peak_activation_bytes >= 2 * 2500 * 2500 * 4
    with pytest.raises(ModelError, match="memory budget"):
        Interpreter(outer_add(2500), memory_budget=1 << 20)


def test_small_constant_expressions_are_still_folded():
    assert Interpreter(outer_add(8)).peak_activation_bytes == 8 * 8 * 4


def nested_chain(depth: int) -> Graph:
    body = None
    for level in range(depth):
        g = GraphBuilder(f"g{level}")
        x = g.input("x", np.float32, (1,))
        attrs = {} if body is None else {"body": body}
        g.output(g.op("Wrap", [x], **attrs), "y")
        body = g.build()
    return body


def test_deeply_nested_control_flow_is_refused():
    assert load_model(serialize(nested_chain(8))).nodes
    with pytest.raises(ModelError, match="nests deeper than 32"):
        load_model(serialize(nested_chain(40)))


def test_a_shared_body_graph_round_trips():
    body = nested_chain(1)
    g = GraphBuilder()
    x = g.input("x", np.float32, (1,))
    g.output(g.op("If2", [x], then_branch=body, else_branch=body), "y")
    graph = g.build()
    loaded = load_model(serialize(graph))
    assert_graphs_equal(graph, loaded)
    assert_graphs_equal(loaded, load_model(serialize(loaded)))


def counter_graph() -> Graph:
    """state += x on signature "step"; "infer" reads it; "read" returns it."""
    g = GraphBuilder()
    x = g.input("x", np.float32, (2,))
    state = g.variable("state", np.array([10.0, 20.0], np.float32))
    y = g.op("Add", [x, state], name="y")
    g.signature("infer", {"x": x}, {"y": y})
    g.signature("step", {"x": x}, {"y": y, "state": state}, updates={state: y})
    g.signature("read", {}, {"state": state})
    return g.build()


def test_variables_change_only_in_signatures_that_update_them():
    it = Interpreter(serialize(counter_graph()))
    one = np.ones(2, np.float32)
    np.testing.assert_array_equal(it.run({"x": one}, "infer")["y"], [11, 21])
    np.testing.assert_array_equal(it.run({}, "read")["state"], [10, 20])  # infer changed nothing
    out = it.run({"x": one}, "step")
    np.testing.assert_array_equal(out["y"], [11, 21])  # computed from the start-of-run value
    np.testing.assert_array_equal(out["state"], [11, 21])  # returned after the update
    np.testing.assert_array_equal(it.run({"x": one}, "infer")["y"], [12, 22])
    np.testing.assert_array_equal(it.run({}, "read")["state"], [11, 21])
    np.testing.assert_array_equal(it.variables()["state"], [11, 21])


def test_an_update_of_the_wrong_shape_is_refused():
    g = GraphBuilder()
    x = g.input("x", np.float32, (3,))
    state = g.variable("state", np.zeros(2, np.float32))
    g.signature("step", {"x": x}, {}, updates={state: g.op("Relu", [x])})
    with pytest.raises(ModelError, match=r"'state' is float32\[2\] but its update is float32\[3\]"):
        Interpreter(g.build())


def test_updates_must_store_values_into_variables():
    g = GraphBuilder()
    x = g.input("x", np.float32, (2,))
    state = g.variable("state", np.zeros(2, np.float32))
    other = g.variable("other", np.zeros(2, np.float32))
    y = g.op("Relu", [x])
    g.signature("a", {"x": x}, {"y": y}, updates={y: state})
    with pytest.raises(ModelError, match="which is not a variable"):
        load_model(serialize(g.build()))
    g._signatures.clear()
    g.signature("b", {"x": x}, {"y": y}, updates={state: other})
    with pytest.raises(ModelError, match="not a value"):
        load_model(serialize(g.build()))


def test_operators_may_not_write_variables():
    g = GraphBuilder()
    x = g.input("x", np.float32, (2,))
    state = g.variable("state", np.zeros(2, np.float32))
    graph = g.build()
    graph.nodes.append(Node("Relu", [x], [state], name="writer"))
    graph.outputs.append(state)
    with pytest.raises(ModelError, match="writes variable 'state'"):
        load_model(serialize(graph))


def test_restore_style_signature_copies_inputs_into_variables_only_if_all_are_valid():
    g = GraphBuilder()
    w = g.variable("w", np.zeros((2, 2), np.float32))
    b = g.variable("b", np.zeros(2, np.float32))
    new_w = g.input("w_new", np.float32, (2, 2))
    new_b = g.input("b_new", np.float32, (2,))
    g.signature("restore", {"w": new_w, "b": new_b}, {}, updates={w: new_w, b: new_b})
    g.signature("save", {}, {"w": w, "b": b})
    it = Interpreter(g.build())
    with pytest.raises(InputError, match="missing input 'b'"):
        it.run({"w": np.ones((2, 2), np.float32)}, "restore")
    with pytest.raises(InputError, match="expected shape"):
        it.run({"w": np.ones((2, 3), np.float32), "b": np.ones(2, np.float32)}, "restore")
    np.testing.assert_array_equal(it.run({}, "save")["w"], np.zeros((2, 2)))  # unchanged
    it.run({"w": np.ones((2, 2), np.float32), "b": np.full(2, 3, np.float32)}, "restore")
    saved = it.run({}, "save")
    np.testing.assert_array_equal(saved["w"], np.ones((2, 2)))
    np.testing.assert_array_equal(saved["b"], [3, 3])


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


def test_zero_size_constants_and_static_zero_dims():
    g = GraphBuilder()
    x = g.input("x", np.float32, (0, 3))
    empty = g.constant("empty", np.zeros((0, 3), np.float32))
    g.output(g.op("Add", [x, empty]), "y")
    graph = g.build()
    assert_graphs_equal(graph, load_model(serialize(graph)))
    it = Interpreter(graph)
    assert it.signatures["serving_default"].outputs["y"].shape == (0, 3)
    assert it.run({"x": np.zeros((0, 3), np.float32)})["y"].shape == (0, 3)


def test_one_tensor_under_two_signature_input_names_is_refused():
    g = GraphBuilder()
    x = g.input("x", np.float32, (1,))
    y = g.op("Relu", [x])
    g.signature("serving_default", {"a": x, "b": x}, {"y": y})
    with pytest.raises(ModelError, match="input tensor"):
        load_model(serialize(g.build()))


def test_unrepresentable_attributes_are_model_errors():
    g = GraphBuilder()
    x = g.input("x", np.float32, (1,))
    g.output(g.op("Relu", [x], big=2**63), "y")
    with pytest.raises(ModelError, match="cannot be serialized"):
        serialize(g.build())


def test_dynamic_inputs_that_do_not_fit_together_are_input_errors():
    g = GraphBuilder()
    a = g.input("a", np.float32, (-1, 4))
    b = g.input("b", np.float32, (-1, 4))
    g.output(g.op("Add", [a, b]), "y")
    it = Interpreter(g.build())
    with pytest.raises(InputError, match="cannot run with input shapes"):
        it.run({"a": np.zeros((2, 4), np.float32), "b": np.zeros((3, 4), np.float32)})
    assert it.run({"a": np.ones((3, 4), np.float32), "b": np.ones((3, 4), np.float32)})["y"].sum() == 24


def test_in_memory_graphs_are_verified_like_files():
    g = GraphBuilder()
    x = g.input("x", np.float32, (1,))
    y = g.op("Relu", [x])
    graph = g.build()
    later = graph.nodes[0].outputs[0]
    graph.nodes.insert(0, Node("Relu", [later], [x], name="writes_input"))
    with pytest.raises(ModelError):
        Interpreter(graph)
    graph.nodes[0] = Node("Relu", [np.zeros(1)], [y], name="array_input")
    with pytest.raises(ModelError, match="ndarray used where a Value belongs"):
        Interpreter(graph)
