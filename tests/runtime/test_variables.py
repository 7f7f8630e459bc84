"""Variables (`is_variable` tensors): only signatures that declare updates change them, updates
must match their shape and store into variables, operators may not write them, restore-style
signatures copy all inputs or none."""

from __future__ import annotations

import numpy as np
import pytest

from edgerun.runtime import GraphBuilder, Interpreter, load_model, serialize
from edgerun.runtime.errors import InputError, ModelError
from edgerun.runtime.graph import Graph, Node


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
