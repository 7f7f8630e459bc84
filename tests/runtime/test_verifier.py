"""Targeted malformed models: each must fail with a ModelError that says what is wrong."""

from __future__ import annotations

import struct

import flatbuffers
import numpy as np
import pytest

from edgerun.runtime import GraphBuilder, Interpreter, load_model, serialize
from edgerun.runtime.errors import ModelError, UnsupportedOpError
from edgerun.runtime.format import FILE_IDENTIFIER, SCHEMA_VERSION
from edgerun.runtime.graph import Node
from edgerun.runtime.schema.fb import KeyValue, Model
from tests.runtime.graphs import add_relu_graph, mlp_graph, nested_chain
from tests.runtime.mutate import patch_vector, raw_model


def op_vector(op: int, key: str):
    return lambda r: r["subgraphs"][0]["operators"][op][key]


def test_valid_models_load():
    for graph in (add_relu_graph(), mlp_graph()):
        assert load_model(serialize(graph)).nodes


@pytest.mark.parametrize("index,value,message", [
    (0, 99, "out of range"),          # past the tensor table
    (0, -2, "out of range"),          # negative other than the -1 "omitted" marker
    (0, 2**31 - 1, "out of range"),
])
def test_operator_input_index_out_of_range(index, value, message):
    data = patch_vector(serialize(add_relu_graph()), op_vector(0, "inputs"), index, value)
    with pytest.raises(ModelError, match=message):
        load_model(data)


def test_operator_reading_a_later_output_is_a_cycle():
    data = serialize(add_relu_graph())
    relu_out = int(raw_model(data)["subgraphs"][0]["operators"][1]["outputs"][0])
    bad = patch_vector(data, op_vector(0, "inputs"), 0, relu_out)
    with pytest.raises(ModelError, match="not produced by an earlier operator"):
        load_model(bad)


def test_tensor_both_input_and_output_of_one_op():
    data = serialize(add_relu_graph())
    add_in = int(raw_model(data)["subgraphs"][0]["operators"][0]["inputs"][0])
    bad = patch_vector(data, op_vector(0, "outputs"), 0, add_in)
    with pytest.raises(ModelError, match="both input and output|produced twice"):
        load_model(bad)


def test_writing_a_constant_is_refused():
    data = serialize(add_relu_graph())
    constant = int(raw_model(data)["subgraphs"][0]["operators"][0]["inputs"][1])
    bad = patch_vector(data, op_vector(1, "outputs"), 0, constant)
    with pytest.raises(ModelError, match="constant"):
        load_model(bad)


@pytest.mark.parametrize("dim,message", [
    (1 << 40, "needs more than"),
    (-7, "invalid dimension"),
])
def test_huge_or_negative_dims(dim, message):
    data = serialize(add_relu_graph())
    bad = patch_vector(data, lambda r: r["subgraphs"][0]["tensors"][0]["shape"], 1, dim)
    with pytest.raises(ModelError, match=message):
        load_model(bad)


def test_buffer_size_must_equal_dtype_times_shape():
    data = serialize(add_relu_graph(), inline_limit=0)
    raw = raw_model(data)
    index = next(i for i, t in enumerate(raw["subgraphs"][0]["tensors"]) if t["name"] == "c")
    bad = patch_vector(data, lambda r: r["subgraphs"][0]["tensors"][index]["shape"], 0, 5)
    with pytest.raises(ModelError, match="dtype x shape needs 20"):
        load_model(bad)


def test_external_buffer_past_the_end_of_the_file():
    data = serialize(mlp_graph(), inline_limit=0)
    with pytest.raises(ModelError, match="outside the file"):
        load_model(data[:-64])


def test_wrong_schema_version():
    data = bytearray(serialize(add_relu_graph()))
    # Locate the Model.schema_version field through the root table's vtable.
    root = struct.unpack_from("<I", data, 0)[0]
    vtable = root - struct.unpack_from("<i", data, root)[0]
    pos = root + struct.unpack_from("<H", data, vtable + 4)[0]
    struct.pack_into("<I", data, pos, 99)
    with pytest.raises(ModelError, match="schema version 99"):
        load_model(bytes(data))


def test_duplicate_signature_names_are_refused():
    g = GraphBuilder()
    x = g.input("x", np.float32, (2,))
    y = g.op("Relu", [x])
    g.output(y, "y")
    g.signature("a", {"x": x}, {"y": y})
    g.signature("b", {"x": x}, {"y": y})
    data = bytearray(serialize(g.build()))
    first, second = data.find(b"\x01\x00\x00\x00a\x00"), data.find(b"\x01\x00\x00\x00b\x00")
    data[second + 4] = ord("a")
    assert first > 0
    with pytest.raises(ModelError, match="signature 'a' appears twice"):
        load_model(bytes(data))


def test_unknown_op_names_the_op_the_node_and_the_supported_ops():
    g = GraphBuilder()
    x = g.input("x", np.float32, (2,))
    g.output(g.op("FancyOp", [x], name="fancy"), "y")
    with pytest.raises(UnsupportedOpError) as err:
        Interpreter(serialize(g.build()))
    message = str(err.value)
    assert "'FancyOp'" in message and "'fancy'" in message and "Relu" in message


def test_old_op_version_is_unsupported():
    g = GraphBuilder(opset=1)
    x = g.input("x", np.float32, (2,))
    g.output(g.op("Relu", [x], name="r"), "y")
    with pytest.raises(UnsupportedOpError, match="version 1"):
        Interpreter(serialize(g.build()))


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


def test_deeply_nested_control_flow_is_refused():
    assert load_model(serialize(nested_chain(8))).nodes
    with pytest.raises(ModelError, match="nests deeper than 32"):
        load_model(serialize(nested_chain(40)))


def test_one_tensor_under_two_signature_input_names_is_refused():
    g = GraphBuilder()
    x = g.input("x", np.float32, (1,))
    y = g.op("Relu", [x])
    g.signature("serving_default", {"a": x, "b": x}, {"y": y})
    with pytest.raises(ModelError, match="input tensor"):
        load_model(serialize(g.build()))


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
