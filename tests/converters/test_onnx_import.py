"""edgerun.converters.onnx_import: structure of converted graphs, errors, and numerics against onnxruntime."""

from __future__ import annotations

import functools
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgerun.converters import from_onnx as _from_onnx
from edgerun.runtime.errors import ConversionError
from edgerun.runtime.graph import Graph
from edgerun.runtime.kernels import registry
from tests.onnx_models import make_cnn, make_mlp, make_model, ort_run

# The structural tests look at the graph exactly as imported; the optimizer has its own
# tests (tests/converters/optimize). The onnxruntime comparisons use the default path.
from_onnx = functools.partial(_from_onnx, optimize=False)


@pytest.fixture
def all_ops_supported(monkeypatch: pytest.MonkeyPatch) -> None:
    """Structural tests must not depend on which kernels exist yet."""
    monkeypatch.setattr(registry, "is_supported", lambda domain, op: True)
    monkeypatch.setattr(registry, "resolve", lambda *args, **kwargs: None)


def _info(name: str, shape: list | None, elem: int = TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def _one_node(node: onnx.NodeProto, **kwargs) -> onnx.ModelProto:
    """x [2, 3] -> node -> y."""
    return make_model([node], [_info("x", [2, 3])], [_info("y", None)], **kwargs)


# --- structure -----------------------------------------------------------------------------

@pytest.mark.usefixtures("all_ops_supported")
def test_mlp_structure() -> None:
    model = make_mlp()
    graph = from_onnx(model)
    assert [n.op_type for n in graph.nodes] == ["Gemm", "Relu", "Gemm", "Softmax"]
    assert [n.name for n in graph.nodes] == ["fc1", "relu1", "fc2", "softmax"]
    assert {(n.domain, n.version) for n in graph.nodes} == {("", 17)}
    assert [(v.name, v.dtype, v.shape) for v in graph.inputs] == [("x", np.float32, (-1, 64))]
    assert [(v.name, v.dtype, v.shape) for v in graph.outputs] == [("y", np.float32, (-1, 10))]
    sig = graph.signatures["serving_default"]
    assert list(sig.inputs) == ["x"] and list(sig.outputs) == ["y"]
    assert graph.nodes[0].attrs == {"transB": 1}


@pytest.mark.usefixtures("all_ops_supported")
def test_initializers_become_numpy_constants() -> None:
    model = make_mlp()
    graph = from_onnx(model)
    constants = {v.name: v for v in graph.values() if v.is_constant}
    expected = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    assert sorted(constants) == sorted(expected)
    for name, array in expected.items():
        assert isinstance(constants[name].data, np.ndarray)
        np.testing.assert_array_equal(constants[name].data, array)
        assert constants[name].shape == array.shape and constants[name].dtype == array.dtype


@pytest.mark.usefixtures("all_ops_supported")
def test_cnn_structure_folds_constant_node() -> None:
    graph = from_onnx(make_cnn())
    assert len(graph.nodes) == 13
    assert "Constant" not in graph.op_histogram()
    reshape = next(n for n in graph.nodes if n.op_type == "Reshape")
    shape = reshape.inputs[1]
    assert shape.is_constant and shape.name == "g1_shape"
    np.testing.assert_array_equal(shape.data, np.array([0, -1], dtype=np.int64))
    conv = graph.nodes[0]
    assert conv.attrs == {"pads": [1, 1, 1, 1]}
    bn = graph.nodes[1]
    assert isinstance(bn.attrs["epsilon"], float) and bn.attrs["epsilon"] == pytest.approx(1e-5)


@pytest.mark.usefixtures("all_ops_supported")
def test_nodes_share_values_by_object() -> None:
    graph = from_onnx(make_mlp())
    fc1, relu, fc2, _ = graph.nodes
    assert relu.inputs[0] is fc1.outputs[0] and fc2.inputs[0] is relu.outputs[0]
    assert graph.inputs[0] is fc1.inputs[0] and graph.outputs[0] is graph.nodes[-1].outputs[0]


@pytest.mark.usefixtures("all_ops_supported")
@pytest.mark.parametrize("dims, expected", [
    (["batch", 64], (-1, 64)),
    ([2, 64], (2, 64)),
    ([None, 64], (-1, 64)),
])
def test_input_dims(dims: list, expected: tuple) -> None:
    model = make_mlp()
    model.graph.input[0].CopyFrom(_info("x", dims))
    assert from_onnx(model).inputs[0].shape == expected


@pytest.mark.usefixtures("all_ops_supported")
def test_input_without_shape_has_unknown_shape() -> None:
    model = make_mlp()
    model.graph.input[0].type.tensor_type.ClearField("shape")
    assert from_onnx(model).inputs[0].shape is None


@pytest.mark.usefixtures("all_ops_supported")
def test_initializer_listed_as_input_is_a_constant() -> None:
    model = make_mlp()
    for init in model.graph.initializer:
        model.graph.input.append(_info(init.name, list(init.dims)))
    graph = from_onnx(model)
    assert [v.name for v in graph.inputs] == ["x"]
    assert list(graph.signatures["serving_default"].inputs) == ["x"]
    assert graph.nodes[0].inputs[1].is_constant


@pytest.mark.usefixtures("all_ops_supported")
@pytest.mark.parametrize("attr, expected", [
    ({"value_float": 2.5}, np.array(2.5, dtype=np.float32)),
    ({"value_floats": [1.0, 2.0]}, np.array([1.0, 2.0], dtype=np.float32)),
    ({"value_int": 7}, np.array(7, dtype=np.int64)),
    ({"value_ints": [1, -1]}, np.array([1, -1], dtype=np.int64)),
    ({"value": numpy_helper.from_array(np.arange(6, dtype=np.int32).reshape(2, 3))},
     np.arange(6, dtype=np.int32).reshape(2, 3)),
])
def test_constant_node_becomes_constant_value(attr: dict, expected: np.ndarray) -> None:
    model = make_model([helper.make_node("Constant", [], ["c"], **attr),
                        helper.make_node("Add", ["x", "c"], ["y"])],
                       [_info("x", [2, 3])], [_info("y", None)])
    graph = from_onnx(model)
    (add,) = graph.nodes
    c = add.inputs[1]
    assert c.is_constant and c.dtype == expected.dtype and c.shape == expected.shape
    np.testing.assert_array_equal(c.data, expected)


@pytest.mark.usefixtures("all_ops_supported")
def test_constant_node_with_unsupported_attribute() -> None:
    model = make_model([helper.make_node("Constant", [], ["c"], value_string="hi"),
                        helper.make_node("Add", ["x", "c"], ["y"])],
                       [_info("x", [2, 3])], [_info("y", None)])
    with pytest.raises(ConversionError, match="value_string"):
        from_onnx(model)


@pytest.mark.usefixtures("all_ops_supported")
def test_attribute_types() -> None:
    body = helper.make_graph([helper.make_node("Relu", ["x"], ["z"])], "body", [],
                             [_info("z", None)])
    tensor = numpy_helper.from_array(np.ones((2, 2), np.float32))
    node = helper.make_node("Relu", ["x"], ["y"], f=1.5, i=3, s="abc", fs=[1.0, 2.0],
                            ints=[1, 2], ss=["a", "b"], t=tensor, ts=[tensor, tensor],
                            g=body, gs=[body])
    attrs = from_onnx(_one_node(node), check=False).nodes[0].attrs  # attributes Relu lacks
    assert attrs["f"] == 1.5 and isinstance(attrs["f"], float)
    assert attrs["i"] == 3 and isinstance(attrs["i"], int)
    assert attrs["s"] == "abc" and attrs["ss"] == ["a", "b"]
    assert attrs["fs"] == [1.0, 2.0] and attrs["ints"] == [1, 2]
    assert all(isinstance(v, float) for v in attrs["fs"])
    np.testing.assert_array_equal(attrs["t"], np.ones((2, 2), np.float32))
    assert len(attrs["ts"]) == 2 and all(isinstance(a, np.ndarray) for a in attrs["ts"])
    assert isinstance(attrs["g"], Graph) and [n.op_type for n in attrs["g"].nodes] == ["Relu"]
    assert isinstance(attrs["gs"], list) and isinstance(attrs["gs"][0], Graph)


@pytest.mark.usefixtures("all_ops_supported")
def test_nested_graph_shares_outer_scope_values() -> None:
    branch = helper.make_graph([helper.make_node("Relu", ["x"], ["z"])], "then", [],
                               [_info("z", None)])
    cond = numpy_helper.from_array(np.array(True), "cond")
    model = make_model([helper.make_node("If", ["cond"], ["y"], then_branch=branch,
                                         else_branch=branch)],
                       [_info("x", [2, 3])], [_info("y", None)])
    model.graph.initializer.append(cond)
    graph = from_onnx(model)
    node = graph.nodes[0]
    then, other = node.attrs["then_branch"], node.attrs["else_branch"]
    # the outer 'x' becomes a capture: the If's last input, each branch's last input
    assert node.attrs["captures"] == 1 and node.inputs[-1] is graph.inputs[0]
    assert then.inputs[-1].name == "x" and then.inputs[-1] is not graph.inputs[0]
    assert then.nodes[0].inputs[0] is then.inputs[-1]
    assert other.nodes[0].inputs[0] is other.inputs[-1]
    assert {id(g) for g in graph.subgraphs()} == {id(then), id(other)}


def test_captures_thread_through_nested_bodies() -> None:
    """A body two levels down reading a top-level value: each level captures it, and the
    converted model computes what onnxruntime computes."""
    inner = helper.make_graph([helper.make_node("Relu", ["x"], ["z"])], "inner", [], [_info("z", None)])
    middle = helper.make_graph([helper.make_node("If", ["c"], ["w"], then_branch=inner, else_branch=inner)],
                               "middle", [], [_info("w", None)])
    model = make_model([helper.make_node("If", ["c"], ["y"], then_branch=middle, else_branch=middle)],
                       [_info("x", [2, 3]), _info("c", [], TensorProto.BOOL)], [_info("y", [2, 3])])
    graph = from_onnx(model)
    top = graph.nodes[0]
    assert top.attrs["captures"] == 2  # x and c, both read inside
    mid = top.attrs["then_branch"].nodes[0]
    assert mid.attrs["captures"] == 1 and mid.inputs[-1].name == "x"
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    from edgerun.runtime.interpreter import Interpreter

    for c in (True, False):
        got = Interpreter(graph).run({"x": x, "c": np.array(c)})["y"]
        np.testing.assert_array_equal(got, ort_run(model, {"x": x, "c": np.array(c)})["y"])


@pytest.mark.usefixtures("all_ops_supported")
def test_empty_names_are_omitted_slots() -> None:
    model = make_model([helper.make_node("Clip", ["x", "", "hi"], ["y"]),
                        helper.make_node("Dropout", ["y"], ["z", ""])],
                       [_info("x", [2, 3])], [_info("z", None)], {"hi": np.float32(1)})
    clip, dropout = from_onnx(model).nodes
    assert clip.inputs[1] is None and clip.inputs[2].is_constant
    assert len(dropout.outputs) == 2 and dropout.outputs[1] is None


@pytest.mark.usefixtures("all_ops_supported")
def test_node_names_are_made_unique() -> None:
    nodes = [helper.make_node("Relu", ["x"], ["a"]),
             helper.make_node("Relu", ["a"], ["b"], name="r"),
             helper.make_node("Relu", ["b"], ["y"], name="r")]
    graph = from_onnx(make_model(nodes, [_info("x", [2])], [_info("y", None)]))
    assert [n.name for n in graph.nodes] == ["Relu_0", "r", "Relu_2"]


@pytest.mark.usefixtures("all_ops_supported")
def test_ai_onnx_domain_is_the_default_domain() -> None:
    model = _one_node(helper.make_node("Relu", ["x"], ["y"], domain="ai.onnx"))
    model.opset_import[0].domain = "ai.onnx"
    model.opset_import[0].version = 14
    (node,) = from_onnx(model, check=False).nodes
    assert (node.domain, node.version) == ("", 14)


@pytest.mark.usefixtures("all_ops_supported")
def test_value_info_gives_hints() -> None:
    model = make_mlp()
    model.graph.value_info.append(_info("h1", ["batch", 32]))
    graph = from_onnx(model)
    assert (graph.nodes[0].outputs[0].dtype, graph.nodes[0].outputs[0].shape) == (
        np.float32, (-1, 32))
    assert graph.nodes[1].outputs[0].dtype is None


@pytest.mark.usefixtures("all_ops_supported")
def test_metadata_is_copied() -> None:
    model = make_mlp()
    model.doc_string = "a tiny mlp"
    helper.set_model_props(model, {"author": "tests", "license": "MIT"})
    meta = from_onnx(model).metadata
    assert meta["producer"] == "edgerun-tests" and meta["producer_version"] == "1"
    assert meta["onnx.doc_string"] == "a tiny mlp"
    assert meta["author"] == "tests" and meta["license"] == "MIT"
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items())


@pytest.mark.usefixtures("all_ops_supported")
def test_path_and_bytes_give_the_same_graph(tmp_path) -> None:
    model = make_mlp()
    path = tmp_path / "mlp.onnx"
    onnx.save(model, path)
    for source in (path, str(path), model.SerializeToString()):
        graph = from_onnx(source)
        assert [n.op_type for n in graph.nodes] == ["Gemm", "Relu", "Gemm", "Softmax"]


def test_importing_converters_does_not_import_onnx() -> None:
    code = "import sys, converters; assert 'onnx' not in sys.modules, 'onnx imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# --- errors --------------------------------------------------------------------------------

@pytest.mark.parametrize("garbage", [b"\x00\x01garbage", bytes(range(256)), b""])
def test_garbage_bytes(garbage: bytes) -> None:
    with pytest.raises(ConversionError, match="parse|no graph"):
        from_onnx(garbage)


def test_missing_file(tmp_path) -> None:
    with pytest.raises(ConversionError, match="cannot read ONNX model .*missing.onnx"):
        from_onnx(tmp_path / "missing.onnx")


def test_not_a_model() -> None:
    with pytest.raises(ConversionError, match="got int"):
        from_onnx(42)  # type: ignore[arg-type]


def test_all_unsupported_ops_in_one_error() -> None:
    nodes = [helper.make_node("FooOp", ["x"], ["a"], name="a", domain="com.example"),
             helper.make_node("FooOp", ["a"], ["b"], name="b", domain="com.example"),
             helper.make_node("BarOp", ["b"], ["c"], name="bar_1"),
             helper.make_node("BarOp", ["c"], ["y"])]
    model = make_model(nodes, [_info("x", [2])], [_info("y", None)])
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    with pytest.raises(ConversionError) as err:
        from_onnx(model)
    message = str(err.value)
    assert "unsupported ops: com.example:FooOp (a, b), BarOp (bar_1, BarOp_3)" in message
    assert "supported: " in message and "Relu" in message


def test_missing_opset() -> None:
    model = _one_node(helper.make_node("Relu", ["x"], ["y"], name="r"))
    del model.opset_import[:]
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    with pytest.raises(ConversionError, match="node 'r' .*no opset for domain 'ai.onnx'"):
        from_onnx(model)


@pytest.mark.usefixtures("all_ops_supported")
@pytest.mark.parametrize("elem", [TensorProto.FLOAT6E2M3, TensorProto.COMPLEX128,
                                  TensorProto.COMPLEX64])
def test_unsupported_element_type(elem: int) -> None:
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], [_info("x", [2], elem)],
                       [_info("y", None)])
    with pytest.raises(ConversionError, match="graph input 'x': element type .* not supported"):
        from_onnx(model)


@pytest.mark.usefixtures("all_ops_supported")
def test_dangling_input_name() -> None:
    model = _one_node(helper.make_node("Add", ["x", "nowhere"], ["y"], name="add"))
    with pytest.raises(ConversionError, match="node 'add' .*'nowhere' is not"):
        from_onnx(model)


@pytest.mark.usefixtures("all_ops_supported")
def test_non_tensor_input() -> None:
    """A map on its own is the ONNX value type edgerun cannot hold (sequences and optionals it
    can, and sequences of maps as graph outputs, not inputs)."""
    model = make_mlp()
    mapping = helper.make_map_type_proto(TensorProto.INT64, helper.make_tensor_type_proto(TensorProto.FLOAT, [64]))
    model.graph.input[0].CopyFrom(helper.make_value_info("x", mapping))
    with pytest.raises(ConversionError, match="graph input 'x': expected a tensor type, a sequence of tensors or "
                                              "maps, or an optional of a tensor or a sequence, got map_type"):
        from_onnx(model)
    model.graph.input[0].CopyFrom(helper.make_value_info("x", helper.make_sequence_type_proto(mapping)))
    with pytest.raises(ConversionError, match=r"graph input 'x': a sequence of maps is supported as a graph output "
                                              r"only \(ZipMap's\), not as an input"):
        from_onnx(model)


def test_sequence_of_maps_output() -> None:
    """ZipMap's output type, seq(map(string, float)), becomes a SEQUENCE_MAP value with string keys."""
    node = helper.make_node("ZipMap", ["x"], ["z"], domain="ai.onnx.ml", classlabels_strings=["a", "b"])
    mapping = helper.make_map_type_proto(TensorProto.STRING, helper.make_tensor_type_proto(TensorProto.FLOAT, None))
    model = make_model([node], [_info("x", [3, 2])], [helper.make_value_info("z", helper.make_sequence_type_proto(
        mapping))])
    model.opset_import.append(helper.make_opsetid("ai.onnx.ml", 1))
    (z,) = from_onnx(model).outputs
    assert (z.kind, z.key_dtype, z.dtype) == ("sequence_map", np.dtype(object), np.dtype(np.float32))


# --- numerics against onnxruntime ----------------------------------------------------------

@pytest.mark.parametrize("make, feature_shape", [(make_mlp, (64,)), (make_cnn, (3, 16, 16))],
                         ids=["mlp", "cnn"])
def test_matches_onnxruntime(tmp_path, make, feature_shape: tuple[int, ...]) -> None:
    from edgerun.runtime import Interpreter, save_model

    model = make()
    path = save_model(_from_onnx(model), tmp_path / "model.erm")
    it = Interpreter(path)
    info = it.signatures["serving_default"].inputs["x"]
    assert (info.dtype, info.shape) == (np.dtype(np.float32), (-1, *feature_shape))
    rng = np.random.default_rng(1)
    for batch in (1, 3):
        x = rng.standard_normal((batch, *feature_shape)).astype(np.float32)
        it.resize_input("x", x.shape)
        got = it.run({"x": x})
        want = ort_run(model, {"x": x})
        assert list(got) == ["y"]
        np.testing.assert_allclose(got["y"], want["y"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("batch", [1, 3])
def test_static_batch_matches_onnxruntime(batch: int) -> None:
    from edgerun.runtime import Interpreter

    model = make_cnn(batch=batch)
    x = np.random.default_rng(2).standard_normal((batch, 3, 16, 16)).astype(np.float32)
    got = Interpreter(_from_onnx(model)).run({"x": x})
    np.testing.assert_allclose(got["y"], ort_run(model, {"x": x})["y"], rtol=1e-5, atol=1e-6)


def test_invalid_onnx_gets_the_checkers_message() -> None:
    model = make_mlp()
    model.graph.node[1].attribute.append(helper.make_attribute("bogus", 1))  # Relu has no such attribute
    with pytest.raises(ConversionError, match=r"invalid ONNX model \(onnx.checker\)") as info:
        from_onnx(model)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        assert str(exc).splitlines()[0] in str(info.value)


def test_outputs_without_a_shape_are_accepted_as_onnxruntime_accepts_them() -> None:
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], [_info("x", [2, 3])], [_info("y", None)])
    with pytest.raises(onnx.checker.ValidationError):
        onnx.checker.check_model(model)
    assert from_onnx(model).outputs[0].shape is None


def test_missing_external_data_names_the_file(tmp_path) -> None:
    model = make_mlp()
    path = tmp_path / "mlp.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    (tmp_path / "weights.bin").unlink()
    with pytest.raises(ConversionError, match="weights.bin"):
        from_onnx(str(path))
