"""IR -> .erm -> IR round trips, zero-copy loading and the > 2 GiB layout."""

from __future__ import annotations

import resource
from typing import Any

import numpy as np
import pytest

from edgerun.runtime import Graph, GraphBuilder, Interpreter, load_model, save_model, serialize
from edgerun.runtime.errors import ModelError
from edgerun.runtime.format import BUFFER_ALIGNMENT, FILE_IDENTIFIER
from edgerun.runtime.graph import Value
from tests.runtime.graphs import add_relu_graph, feature_graph, mlp_graph, nested_chain


def assert_values_equal(a: Value | None, b: Value | None) -> None:
    assert (a is None) == (b is None)
    if a is None:
        return
    assert (a.name, a.dtype, a.shape, a.is_variable) == (b.name, b.dtype, b.shape, b.is_variable)
    assert a.quantization == b.quantization
    assert (a.data is None) == (b.data is None)
    if a.data is not None:
        assert a.data.dtype == b.data.dtype and np.array_equal(a.data, b.data)


def assert_attr_equal(a: Any, b: Any) -> None:
    if isinstance(a, Graph):
        assert_graphs_equal(a, b)
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_attr_equal(x, y)
    else:
        assert type(a) is type(b) and a == b


def assert_graphs_equal(a: Graph, b: Graph) -> None:
    assert a.name == b.name and a.metadata == b.metadata
    for x, y in zip(a.values(), b.values(), strict=True):
        assert_values_equal(x, y)
    assert [v.name for v in a.inputs] == [v.name for v in b.inputs]
    assert [v.name for v in a.outputs] == [v.name for v in b.outputs]
    assert len(a.nodes) == len(b.nodes)
    for m, n in zip(a.nodes, b.nodes, strict=True):
        assert (m.op_type, m.name, m.domain, m.version) == (n.op_type, n.name, n.domain, n.version)
        assert [v and v.name for v in m.inputs] == [v and v.name for v in n.inputs]
        assert [v and v.name for v in m.outputs] == [v and v.name for v in n.outputs]
        assert m.attrs.keys() == n.attrs.keys()
        for key in m.attrs:
            assert_attr_equal(m.attrs[key], n.attrs[key])
    assert a.signatures.keys() == b.signatures.keys()
    for key, sig in a.signatures.items():
        other = b.signatures[key]
        assert {k: v.name for k, v in sig.inputs.items()} == {k: v.name for k, v in other.inputs.items()}
        assert {k: v.name for k, v in sig.outputs.items()} == {k: v.name for k, v in other.outputs.items()}


@pytest.mark.parametrize("make", [add_relu_graph, mlp_graph, feature_graph])
@pytest.mark.parametrize("inline_limit", [0, 64, 1 << 20])
def test_round_trip_is_lossless(make, inline_limit):
    graph = make()
    data = serialize(graph, inline_limit=inline_limit)
    assert data[4:8] == FILE_IDENTIFIER
    assert_graphs_equal(graph, load_model(data))


def test_round_trip_through_a_file_equals_bytes(tmp_path):
    graph = feature_graph()
    path = save_model(graph, tmp_path / "f.erm")
    assert path.read_bytes() == serialize(graph)
    assert_graphs_equal(graph, load_model(path))
    assert_graphs_equal(graph, load_model(str(path)))


def test_external_buffers_are_aligned_read_only_views_of_the_mapping(tmp_path):
    graph = mlp_graph((64, 128, 10))
    path = save_model(graph, tmp_path / "m.erm", inline_limit=0)
    loaded = load_model(path)
    weights = [v for v in loaded.values() if v.data is not None]
    assert weights
    for v in weights:
        assert not v.data.flags.writeable
        with pytest.raises(ValueError):
            v.data[...] = 0
        assert not v.data.flags.owndata  # a view, not a copy
    base = loaded.nodes[0].inputs[1].data
    while isinstance(base, np.ndarray):
        base = base.base
    if isinstance(base, memoryview):
        base = base.obj
    assert type(base).__name__ == "mmap"


def test_external_offsets_are_64_byte_aligned():
    graph = mlp_graph((64, 33, 10))
    data = serialize(graph, inline_limit=0)
    from edgerun.runtime.flatread import FlatReader

    raw = FlatReader(data).read_root(FILE_IDENTIFIER)
    offsets = [b["offset"] for b in raw["buffers"] if b["offset"]]
    assert len(offsets) == 4
    assert all(o % BUFFER_ALIGNMENT == 0 for o in offsets)


def test_loading_does_not_read_weights(tmp_path):
    """A 1 GiB weight loads in a blink and without becoming resident."""
    g = GraphBuilder("big")
    x = g.input("x", np.float32, (1,))
    w = g.constant("w", np.zeros(1 << 28, np.float32))  # 1 GiB, calloc'd: never touched
    g.output(g.op("Add", [x, g.op("Relu", [x])]), "y")
    g.signature("weights", {}, {"w": w})
    path = save_model(g.build(), tmp_path / "big.erm")  # zero runs become holes
    assert path.stat().st_size > 1 << 30
    before = _rss_bytes()
    loaded = load_model(path)
    assert _rss_bytes() - before < 64 << 20
    assert loaded.signatures["weights"].outputs["w"].data.shape == (1 << 28,)


def test_model_over_2_gib_is_written_and_loaded_without_reading_weights(tmp_path):
    g = GraphBuilder("huge")
    x = g.input("x", np.float32, (4,))
    head = g.constant("head", np.arange(4, dtype=np.float32))
    big = g.constant("big", np.zeros((3 << 30) // 4, np.float32))  # 3 GiB of zeros
    tail = g.constant("tail", np.full(4, 7.0, np.float32))  # placed past the 2 GiB mark
    y = g.op("Add", [g.op("Add", [x, head]), tail])
    g.output(y, "y")
    g.signature("serving_default", {"x": x}, {"y": y})
    g.signature("big", {}, {"big": big})
    path = save_model(g.build(), tmp_path / "huge.erm")
    assert path.stat().st_size > 3 << 30
    before = _rss_bytes()
    loaded = load_model(path)
    assert _rss_bytes() - before < 64 << 20
    tail_value = loaded.nodes[1].inputs[1]
    assert tail_value.name == "tail" and np.array_equal(tail_value.data, np.full(4, 7.0))
    from edgerun.runtime import Interpreter

    it = Interpreter(path)
    np.testing.assert_array_equal(it.run({"x": np.ones(4, np.float32)}, "serving_default")["y"],
                                  [8.0, 9.0, 10.0, 11.0])


def _rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def test_a_shared_body_graph_round_trips():
    body = nested_chain(1)
    g = GraphBuilder()
    x = g.input("x", np.float32, (1,))
    g.output(g.op("If2", [x], then_branch=body, else_branch=body), "y")
    graph = g.build()
    loaded = load_model(serialize(graph))
    assert_graphs_equal(graph, loaded)
    assert_graphs_equal(loaded, load_model(serialize(loaded)))


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


def test_unrepresentable_attributes_are_model_errors():
    g = GraphBuilder()
    x = g.input("x", np.float32, (1,))
    g.output(g.op("Relu", [x], big=2**63), "y")
    with pytest.raises(ModelError, match="cannot be serialized"):
        serialize(g.build())
