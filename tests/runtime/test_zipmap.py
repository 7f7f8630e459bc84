"""ZipMap and the sequence-of-maps value kind, end to end.

scikit-learn classifiers exported with skl2onnx's default options (ZipMap on), int and string
labels, are converted, saved to .erm, loaded and run; the probabilities (a list of dicts) are
compared with onnxruntime's (keys equal, values within 1e-5) and the labels exactly. Then the
pieces: signature metadata, fresh outputs each run, ZipMap's errors, the .erm encoding of the
key type (writer, verifier, old files) and the converter's map types.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgerun.converters import from_onnx
from edgerun.runtime import Interpreter, save_model, serialize
from edgerun.runtime.errors import ConversionError, ModelError
from edgerun.runtime.format import MAP_KEY_DTYPE_CODES
from edgerun.runtime.graph import MAP_KEY_DTYPES, GraphBuilder, ValueKind
from edgerun.runtime.loader import load_model
from edgerun.runtime.schema.fb.Model import Model
from tests.runtime.mutate import patch_vector, raw_model, repoint_input

ort = pytest.importorskip("onnxruntime")
skl2onnx = pytest.importorskip("skl2onnx")
datasets = pytest.importorskip("sklearn.datasets")

from sklearn.ensemble import RandomForestClassifier  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.svm import SVC  # noqa: E402

ML = "ai.onnx.ml"
LEGACY = Path(__file__).parent / "data" / "legacy_v1_dtypes.erm"
pytestmark = pytest.mark.filterwarnings("ignore:The `probability` parameter was deprecated:FutureWarning")

CLASSIFIERS = {
    "logistic": lambda: LogisticRegression(max_iter=500),
    "forest": lambda: RandomForestClassifier(n_estimators=7, max_depth=5, random_state=0),
    "svc": lambda: SVC(probability=True, random_state=0),
}
NAMES = np.array(["setosa", "vé€rsicolor", "", "virginica 4"], dtype=object)  # unicode and empty labels


def classifier_model(kind: str, string_labels: bool, classes: int = 3) -> tuple[onnx.ModelProto, np.ndarray]:
    """(skl2onnx export with default options, held-out float32 X) of a classifier of `kind`."""
    x, y = datasets.make_classification(n_samples=240, n_features=5, n_informative=4, n_redundant=0,
                                        n_classes=classes, n_clusters_per_class=1, random_state=classes)
    x = x.astype(np.float32)
    labels = NAMES[y] if string_labels else y * 3 - 2  # ints that are not 0..C-1
    model = CLASSIFIERS[kind]().fit(x[:180], labels[:180])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return skl2onnx.to_onnx(model, x[:1]), x[180:]


def assert_maps_match(got: list, want: list) -> None:
    """`got` (ours) equals onnxruntime's list of dicts: same keys (and key types), values within 1e-5."""
    assert isinstance(got, list) and len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert type(g) is dict and list(g) == list(w), (g, w)
        assert all(type(k) is type(kw) for k, kw in zip(g, w, strict=True))
        assert all(type(v) is float for v in g.values())
        np.testing.assert_allclose(list(g.values()), list(w.values()), rtol=0, atol=1e-5)


# ---------------------------------------------------------------- scikit-learn classifiers

@pytest.mark.parametrize("string_labels", [False, True], ids=["int_labels", "string_labels"])
@pytest.mark.parametrize("kind", sorted(CLASSIFIERS))
def test_default_export_matches_onnxruntime(tmp_path, kind, string_labels):
    onx, x = classifier_model(kind, string_labels)
    assert "ZipMap" in [n.op_type for n in onx.graph.node]
    it = Interpreter(save_model(from_onnx(onx), tmp_path / "clf.erm"))
    session = ort.InferenceSession(onx.SerializeToString(), providers=["CPUExecutionProvider"])
    for rows in (x, x[:1]):
        got = it.run({"X": rows})
        want_label, want_maps = session.run(["output_label", "output_probability"], {"X": rows})
        assert got["output_label"].dtype == want_label.dtype
        np.testing.assert_array_equal(got["output_label"], want_label)
        assert_maps_match(got["output_probability"], want_maps)


def test_signature_metadata_names_the_map_kind():
    onx, _ = classifier_model("logistic", string_labels=True)
    info = Interpreter(serialize(from_onnx(onx))).signatures["serving_default"].outputs["output_probability"]
    assert (info.kind, info.dtype) == (ValueKind.SEQUENCE_MAP, np.dtype(np.float32))


def test_each_run_returns_fresh_dicts():
    onx, x = classifier_model("logistic", string_labels=False)
    it = Interpreter(serialize(from_onnx(onx)))
    first = it.run({"X": x[:2]})["output_probability"]
    expected = [dict(m) for m in first]
    first[0].clear()
    first.append({})
    second = it.run({"X": x[:2]})["output_probability"]
    assert second == expected and second[0] is not first[0]


def test_the_graph_keeps_the_key_type_through_erm(tmp_path):
    for string_labels, key in ((False, np.dtype(np.int64)), (True, np.dtype(object))):
        onx, _ = classifier_model("forest", string_labels)
        graph = load_model(save_model(from_onnx(onx), tmp_path / "m.erm"))
        (value,) = [v for v in graph.outputs if v.name == "output_probability"]
        assert (value.kind, value.key_dtype, value.dtype) == (ValueKind.SEQUENCE_MAP, key, np.dtype(np.float32))
        assert all(v.key_dtype is None for v in graph.values() if v is not value)


def test_key_types_agree_between_graph_and_format():
    from edgerun.runtime import dtypes

    assert [dtypes.from_numpy(d) for d in MAP_KEY_DTYPES] == list(MAP_KEY_DTYPE_CODES)


# ---------------------------------------------------------------- ZipMap on its own

def zipmap_model(columns: int, labels: dict, rows: int | str = 2) -> onnx.ModelProto:
    node = helper.make_node("ZipMap", ["x"], ["z"], domain=ML, name="zip", **labels)
    key = TensorProto.STRING if "classlabels_strings" in labels else TensorProto.INT64
    out = helper.make_value_info("z", helper.make_sequence_type_proto(
        helper.make_map_type_proto(key, helper.make_tensor_type_proto(TensorProto.FLOAT, None))))
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, columns])],
                              [out])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ML, 1)])


@pytest.mark.parametrize("labels", [{"classlabels_int64s": [7, -1, 3]}, {"classlabels_strings": ["b", "a", "é"]},
                                    {"classlabels_int64s": [2, 1, 2]}],
                         ids=["ints", "strings", "repeated"])
def test_zipmap_node_matches_onnxruntime(labels):
    model = zipmap_model(3, labels, rows="N")
    x = np.random.default_rng(0).random((4, 3), dtype=np.float32)
    got = Interpreter(serialize(from_onnx(model))).run({"x": x})["z"]
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert_maps_match(got, want)
    assert Interpreter(serialize(from_onnx(model))).run({"x": x[:0]})["z"] == []


def test_zipmap_label_count_must_match_the_columns():
    model = zipmap_model(3, {"classlabels_int64s": [0, 1]})
    with pytest.raises(ModelError, match=r"node 'zip' \(ZipMap\): X has 3 columns \(classes\) but there are "
                                         r"2 class labels"):
        Interpreter(serialize(from_onnx(model))).run({"x": np.zeros((2, 3), np.float32)})


@pytest.mark.parametrize("labels, message", [
    ({"classlabels_int64s": [0, 1], "classlabels_strings": ["a", "b"]},
     r"expected exactly one of 'classlabels_int64s' and 'classlabels_strings' \(the class labels\), got both"),
    ({}, r"expected exactly one of 'classlabels_int64s' and 'classlabels_strings' \(the class labels\), got neither"),
])
def test_zipmap_needs_exactly_one_label_list(labels, message):
    g = GraphBuilder("g", opset=17)
    z = g.op("ZipMap", [g.input("x", np.float32, (2, 2))], name="zip", domain=ML, version=1, **labels)
    g.output(z, "z")
    with pytest.raises(ModelError, match=r"node 'zip' \(ZipMap\): " + message):
        Interpreter(g.build()).run({"x": np.zeros((2, 2), np.float32)})


@pytest.mark.parametrize("dtype, shape", [(np.float64, (2, 2)), (np.float32, (1, 2, 2))])
def test_zipmap_takes_float32_rows_only(dtype, shape):
    g = GraphBuilder("g", opset=17)
    z = g.op("ZipMap", [g.input("x", dtype, shape)], name="zip", domain=ML, version=1, classlabels_int64s=[0, 1])
    g.output(z, "z")
    with pytest.raises(ModelError, match=r"X: expected a float32 tensor of rank 1 or 2, got "):
        Interpreter(g.build()).run({"x": np.zeros(shape, dtype)})


def test_zipmap_of_one_row_gives_one_map():
    g = GraphBuilder("g", opset=17)
    z = g.op("ZipMap", [g.input("x", np.float32, (2,))], name="zip", domain=ML, version=1,
             classlabels_strings=["no", "yes"])
    z.kind, z.key_dtype = ValueKind.SEQUENCE_MAP, np.dtype(object)
    g.output(z, "z")
    assert Interpreter(g.build()).run({"x": np.array([0.25, 0.75], np.float32)})["z"] == [{"no": 0.25, "yes": 0.75}]


def test_a_map_output_declared_a_sequence_is_refused():
    g = GraphBuilder("g", opset=17)
    z = g.op("ZipMap", [g.op("Relu", [g.input("x", np.float32, (-1, 2))])], name="zip", domain=ML, version=1,
             classlabels_int64s=[0, 1])
    z.kind = ValueKind.SEQUENCE
    g.output(z, "z")
    with pytest.raises(ModelError, match=r"output 'z' is declared a sequence but computes a sequence_map"):
        Interpreter(g.build()).run({"x": np.zeros((2, 2), np.float32)})


# ---------------------------------------------------------------- .erm: writer, verifier, loader

def map_graph():
    """x -> Relu -> ZipMap (int64 keys) -> z, a sequence of maps; and the Relu as y."""
    g = GraphBuilder("maps", opset=17)
    relu = g.op("Relu", [g.input("x", np.float32, (-1, 2))], name="relu")
    z = g.op("ZipMap", [relu], name="zip", domain=ML, version=1, classlabels_int64s=[4, 5])
    z.kind, z.key_dtype, z.dtype = ValueKind.SEQUENCE_MAP, np.dtype(np.int64), np.dtype(np.float32)
    g.output(relu, "y")
    g.output(z, "z")
    return g.build()


def _patch_tensor_byte(data: bytes, tensor_name: str, vtable_offset: int, code: int) -> bytes:
    """`data` with the byte field at `vtable_offset` (16: kind, 18: key_dtype) of tensor `tensor_name` set."""
    out = bytearray(data)
    subgraph = Model.GetRootAs(out, 0).Subgraphs(0)
    for i in range(subgraph.TensorsLength()):
        tensor = subgraph.Tensors(i)
        if tensor.Name().decode() == tensor_name:
            offset = tensor._tab.Offset(vtable_offset)
            assert offset, "the writer always writes kind and key_dtype"
            out[tensor._tab.Pos + offset] = code
            return bytes(out)
    raise AssertionError(tensor_name)


def test_a_map_graph_round_trips_and_runs():
    it = Interpreter(map_graph())
    out = it.run({"x": np.array([[0.5, -1.0]], np.float32)})
    assert out["z"] == [{4: 0.5, 5: 0.0}]
    assert it.signatures["serving_default"].outputs["z"].kind == "sequence_map"


@pytest.mark.parametrize("code, message", [
    (1, r"tensor \d+ \('z'\): a sequence of maps needs key type INT64 or STRING, got FLOAT32"),
    (0, r"tensor \d+ \('z'\): a sequence of maps needs key type INT64 or STRING, got UNDEFINED"),
    (99, r"tensor \d+ \('z'\): a sequence of maps needs key type INT64 or STRING, got code 99"),
])
def test_verifier_names_a_bad_key_type(code, message):
    with pytest.raises(ModelError, match=message):
        load_model(_patch_tensor_byte(serialize(map_graph()), "z", 18, code))


def test_verifier_refuses_a_key_type_on_another_kind():
    with pytest.raises(ModelError, match=r"tensor \d+ \('y'\): a tensor value has no key type, got INT64"):
        load_model(_patch_tensor_byte(serialize(map_graph()), "y", 18, 8))


def test_verifier_refuses_a_map_kind_holding_data():
    g = GraphBuilder("bad", opset=17)
    x = g.input("x", np.float32, (2,))
    g.output(g.op("Add", [x, g.constant("w", np.ones(2, np.float32))], name="add"), "y")
    data = _patch_tensor_byte(_patch_tensor_byte(serialize(g.build()), "w", 16, 4), "w", 18, 8)
    with pytest.raises(ModelError, match=r"\('w'\): a sequence_map value cannot hold data, be a variable or be "
                                         r"quantized"):
        load_model(data)


def test_verifier_refuses_an_operator_reading_a_map():
    g = GraphBuilder("maps", opset=17)
    relu = g.op("Relu", [g.input("x", np.float32, (-1, 2))], name="relu")
    z = g.op("ZipMap", [relu], name="zip", domain=ML, version=1, classlabels_int64s=[4, 5])
    z.kind, z.key_dtype = ValueKind.SEQUENCE_MAP, np.dtype(np.int64)
    g.output(z, "z")
    g.output(g.op("Sigmoid", [relu], name="sig"), "s")
    data = repoint_input(serialize(g.build()), "sig", 0, "z")
    with pytest.raises(ModelError, match=r"operator \d+ \('sig', Sigmoid\): input 'z' is a sequence of maps, "
                                         r"which no operator reads \(maps are outputs only\)"):
        load_model(data)


def test_verifier_refuses_a_map_input():
    data = serialize(map_graph())
    tensors = raw_model(data)["subgraphs"][0]["tensors"]
    z = next(i for i, t in enumerate(tensors) if t["name"] == "z")
    data = patch_vector(data, lambda r: r["subgraphs"][0]["inputs"], 0, z)
    with pytest.raises(ModelError, match=r"input 'z' is a sequence of maps \(maps are outputs only\)"):
        load_model(data)


@pytest.mark.parametrize("kind, key, message", [
    (ValueKind.SEQUENCE_MAP, None, r"tensor 'zip:0': a sequence of maps needs an int64 or string key type, got None"),
    (ValueKind.SEQUENCE_MAP, np.float32, r"tensor 'zip:0': a sequence of maps needs an int64 or string key type, "
                                         r"got float32"),
    (ValueKind.SEQUENCE, np.int64, r"tensor 'zip:0': a sequence value has no key type, got int64"),
])
def test_writer_refuses_a_bad_key_type(kind, key, message):
    g = GraphBuilder("g", opset=17)
    z = g.op("ZipMap", [g.input("x", np.float32, (2, 2))], name="zip", domain=ML, version=1,
             classlabels_int64s=[0, 1])
    z.kind, z.key_dtype = kind, key
    g.output(z)
    with pytest.raises(ModelError, match=message):
        serialize(g.build())


def test_an_old_file_loads_without_key_types():
    graph = load_model(LEGACY)
    assert graph.values() and all(v.key_dtype is None and v.kind == ValueKind.TENSOR for v in graph.values())


# ---------------------------------------------------------------- converter

def test_a_map_graph_input_is_refused():
    model = zipmap_model(2, {"classlabels_int64s": [0, 1]})
    mapping = helper.make_sequence_type_proto(
        helper.make_map_type_proto(TensorProto.INT64, helper.make_tensor_type_proto(TensorProto.FLOAT, None)))
    model.graph.input[0].CopyFrom(helper.make_value_info("x", mapping))
    with pytest.raises(ConversionError, match=r"graph input 'x': a sequence of maps is supported as a graph output "
                                              r"only \(ZipMap's\), not as an input"):
        from_onnx(model, check=False)


def test_a_map_with_other_keys_is_refused():
    model = zipmap_model(2, {"classlabels_int64s": [0, 1]})
    mapping = helper.make_sequence_type_proto(
        helper.make_map_type_proto(TensorProto.INT32, helper.make_tensor_type_proto(TensorProto.FLOAT, None)))
    model.graph.output[0].CopyFrom(helper.make_value_info("z", mapping))
    with pytest.raises(ConversionError, match=r"graph output 'z': a sequence of maps with INT32 keys is not supported "
                                              r"\(INT64 or STRING\)"):
        from_onnx(model, check=False)


# ---------------------------------------------------------------- serving

def test_serving_refuses_a_zipmap_classifier_with_the_way_out(tmp_path):
    from edgerun.runtime.errors import EdgerunError
    from edgerun.serving.config import read_settings
    from edgerun.serving.model import ServedModel

    onx, _ = classifier_model("logistic", string_labels=False)
    folder = tmp_path / "clf"
    (folder / "1").mkdir(parents=True)
    path = save_model(from_onnx(onx), folder / "1" / "model.erm")
    with pytest.raises(EdgerunError, match=r"model output 'output_probability' is a sequence_map value: sequences and "
                                           r"optionals are not supported over KServe v2 \(serve tensors only: export "
                                           r"the classifier without ZipMap \(skl2onnx option \{'zipmap': False\}\)\)"):
        ServedModel.load(read_settings(folder), 1, path)
