"""ai.onnx.ml kernels (runtime/kernels/ml/) against onnxruntime and scikit-learn.

Small scikit-learn models are trained here, exported with skl2onnx (no ZipMap, which
test_zipmap.py covers; int or string labels), converted with from_onnx, round-tripped through
.erm and run by the Interpreter; labels must match exactly, scores within float32 rounding.
Hand-built nodes cover what skl2onnx does not emit (other post_transforms and aggregates,
branch modes, NaN tracking, TreeEnsemble opset 5, *_as_tensor, LabelEncoder and
CategoryMapper over unicode strings and missing keys). Malformed trees and string tables
are refused with specific errors.
"""

from __future__ import annotations

import time
import tracemalloc
import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from edgerun.converters import from_onnx
from edgerun.runtime import Interpreter
from edgerun.runtime.errors import InputError, MemoryBudgetError, ModelError
from edgerun.runtime.writer import serialize

ort = pytest.importorskip("onnxruntime")
skl2onnx = pytest.importorskip("skl2onnx")
datasets = pytest.importorskip("sklearn.datasets")

from sklearn.ensemble import (  # noqa: E402
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer  # noqa: E402
from sklearn.linear_model import LinearRegression, LogisticRegression  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import (  # noqa: E402
    Binarizer,
    LabelEncoder,
    MinMaxScaler,
    Normalizer,
    OneHotEncoder,
    OrdinalEncoder,
    StandardScaler,
)
from sklearn.svm import SVC, SVR  # noqa: E402
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor  # noqa: E402

F32, F64, I64 = np.float32, np.float64, np.int64
pytestmark = pytest.mark.filterwarnings("ignore:The `probability` parameter was deprecated:FutureWarning")
ML = "ai.onnx.ml"


# --- helpers ----------------------------------------------------------------------------------


def ours(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    """The model's outputs, in graph order, from edgerun (converted, serialized, loaded)."""
    results = Interpreter(serialize(from_onnx(model)), device="cpu").run(feeds)
    return [results[o.name] for o in model.graph.output]


def theirs(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def export(model, x: np.ndarray) -> onnx.ModelProto:
    options = {id(model): {"zipmap": False}} if hasattr(model, "classes_") else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return skl2onnx.to_onnx(model, x[:1], options=options)


def classification(classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train X, train y, held-out X), float32, 6 features."""
    x, y = datasets.make_classification(n_samples=260, n_features=6, n_informative=4, n_redundant=0,
                                        n_classes=classes, n_clusters_per_class=1, random_state=classes)
    x = x.astype(F32)
    return x[:180], y[:180], x[180:]


def regression(targets: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, y = datasets.make_regression(n_samples=260, n_features=5, n_targets=targets, noise=1.0, random_state=0)
    x = x.astype(F32)
    return x[:180], y[:180], x[180:]


def node_model(op: str, inputs: dict[str, np.ndarray], outputs: list[tuple[str, int]], ml_opset: int = 3,
               **attrs) -> onnx.ModelProto:
    """A one-node ai.onnx.ml model whose inputs have the given arrays' dtypes and shapes."""
    node = helper.make_node(op, list(inputs), [name for name, _ in outputs], domain=ML, **attrs)
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
         for k, v in inputs.items()],
        [helper.make_tensor_value_info(name, elem, None) for name, elem in outputs])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ML, ml_opset)])


def matches_onnxruntime(model: onnx.ModelProto, feeds: dict, rtol: float = 1e-5, atol: float = 1e-6) -> list:
    """Asserts edgerun's outputs equal onnxruntime's (ints exactly); returns edgerun's."""
    got, want = ours(model, feeds), theirs(model, feeds)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype and g.shape == w.shape, (g.dtype, g.shape, w.dtype, w.shape)
        if w.dtype.kind == "f":
            np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)
        else:
            np.testing.assert_array_equal(g, w)
    return got


def set_attr(model: onnx.ModelProto, op: str, name: str, value) -> onnx.ModelProto:
    """A copy of `model` with attribute `name` of its `op` node set to `value` (None: removed)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    node = next(n for n in copy.graph.node if n.op_type == op)
    kept = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend(kept)
    if value is not None:
        node.attribute.append(helper.make_attribute(name, value))
    return copy


def attr(model: onnx.ModelProto, op: str, name: str):
    node = next(n for n in model.graph.node if n.op_type == op)
    return helper.get_attribute_value(next(a for a in node.attribute if a.name == name))


def prepare(model: onnx.ModelProto, rows: int | None = None) -> Interpreter:
    """An Interpreter for `model`, its inputs' dynamic batch fixed to `rows` (a node reached by
    a dynamic dimension that fails to prepare is only reported at the first run)."""
    if rows is not None:
        model = set_attr(model, model.graph.node[0].op_type, "_", None)  # a copy
        for info in model.graph.input:
            info.type.tensor_type.shape.dim[0].dim_value = rows
    return Interpreter(serialize(from_onnx(model)), device="cpu")


# --- scikit-learn models ----------------------------------------------------------------------

CLASSIFIERS = {
    "decision_tree": lambda: DecisionTreeClassifier(max_depth=6, random_state=0),
    "random_forest": lambda: RandomForestClassifier(n_estimators=8, max_depth=6, random_state=0),
    "gradient_boosting": lambda: GradientBoostingClassifier(n_estimators=15, max_depth=3, random_state=0),
    "logistic_regression": lambda: LogisticRegression(max_iter=2000),
    "svc_probability": lambda: SVC(probability=True, random_state=0),
}


@pytest.mark.parametrize("classes", [2, 3])
@pytest.mark.parametrize("name", sorted(CLASSIFIERS))
def test_classifier_matches_onnxruntime_and_sklearn(name, classes):
    x_train, y_train, x = classification(classes)
    model = CLASSIFIERS[name]().fit(x_train, y_train)
    label, proba = matches_onnxruntime(export(model, x), {"X": x}, atol=1e-5)
    expected = model.predict_proba(x)
    np.testing.assert_allclose(proba, expected, atol=1e-5)
    top2 = np.sort(expected, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 1e-4  # where float32 rounding cannot decide the top class
    assert clear.mean() > 0.9
    np.testing.assert_array_equal(label[clear], model.predict(x)[clear])
    tied = expected[~clear] >= top2[~clear, :1] - 1e-4
    assert tied[np.arange(len(tied)), np.searchsorted(model.classes_, label[~clear])].all()


@pytest.mark.parametrize("classes", [2, 3])
def test_svc_without_probabilities_votes_like_sklearn(classes):
    x_train, y_train, x = classification(classes)
    model = SVC(random_state=0).fit(x_train, y_train)
    onx = export(model, x)
    label, scores = matches_onnxruntime(onx, {"X": x}, atol=1e-5)
    np.testing.assert_array_equal(label, model.predict(x))
    if classes == 2:
        np.testing.assert_allclose(scores[:, 0], model.decision_function(x), rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(scores[:, 0], -scores[:, 1])


@pytest.mark.parametrize("kernel", ["linear", "poly", "sigmoid"])
def test_svc_kernels_match_onnxruntime(kernel):
    x_train, y_train, x = classification(3)
    model = SVC(kernel=kernel, degree=2, probability=True, random_state=0).fit(x_train, y_train)
    label, _ = matches_onnxruntime(export(model, x), {"X": x}, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(label, model.predict(x))


REGRESSORS = {
    "decision_tree": lambda: DecisionTreeRegressor(max_depth=6, random_state=0),
    "random_forest": lambda: RandomForestRegressor(n_estimators=8, max_depth=6, random_state=0),
    "gradient_boosting": lambda: GradientBoostingRegressor(n_estimators=20, max_depth=3, random_state=0),
    "linear_regression": LinearRegression,
    "svr": lambda: SVR(C=50.0),
    "svr_linear": lambda: SVR(kernel="linear"),
}


@pytest.mark.parametrize("name", sorted(REGRESSORS))
def test_regressor_matches_onnxruntime_and_sklearn(name):
    x_train, y_train, x = regression()
    model = REGRESSORS[name]().fit(x_train, y_train)
    (y,) = matches_onnxruntime(export(model, x), {"X": x}, rtol=1e-5, atol=1e-3)
    assert y.shape == (len(x), 1)
    np.testing.assert_allclose(y[:, 0], model.predict(x), rtol=1e-5, atol=1e-3)


def test_multi_target_forest_matches_sklearn():
    x_train, y_train, x = regression(targets=2)
    model = RandomForestRegressor(n_estimators=5, max_depth=5, random_state=0).fit(x_train, y_train)
    (y,) = matches_onnxruntime(export(model, x), {"X": x}, atol=1e-3)
    np.testing.assert_allclose(y, model.predict(x), rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("norm", ["l1", "l2", "max"])
def test_preprocessing_pipeline_matches_sklearn(norm):
    x_train, _, x = classification(2)
    x_train[::7, 1] = np.nan
    x[::5, 2] = np.nan
    pipe = make_pipeline(SimpleImputer(), StandardScaler(), MinMaxScaler(), Normalizer(norm=norm)).fit(x_train)
    (y,) = matches_onnxruntime(export(pipe, x), {"X": x})
    np.testing.assert_allclose(y, pipe.transform(x), rtol=1e-5, atol=1e-6)


def test_binarizer_pipeline_matches_sklearn():
    x_train, _, x = classification(2)
    pipe = make_pipeline(StandardScaler(), Binarizer(threshold=0.1)).fit(x_train)
    (y,) = matches_onnxruntime(export(pipe, x), {"X": x})
    scaled = pipe[0].transform(x)
    clear = np.abs(scaled - 0.1) > 1e-5  # float32 rounding decides the values right at the threshold
    assert clear.mean() > 0.99
    np.testing.assert_array_equal(y[clear], pipe.transform(x)[clear])


def test_one_hot_encoder_on_ints_matches_sklearn():
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 5, (50, 3)).astype(I64)
    model = OneHotEncoder().fit(x_train)
    x = rng.integers(0, 5, (20, 3)).astype(I64)
    (y,) = matches_onnxruntime(export(model, x), {"X": x})
    np.testing.assert_array_equal(y, model.transform(x).toarray())


# --- hand-built trees -------------------------------------------------------------------------

# One tree over feature 0 and 1: node 0 (x0 <= 0.5) -> node 1 (x1 < 0.0) -> leaves 3 / 4; else leaf 2.
TREE = {
    "nodes_treeids": [0, 0, 0, 0, 0], "nodes_nodeids": [0, 1, 2, 3, 4], "nodes_featureids": [0, 1, 0, 0, 0],
    "nodes_values": [0.5, 0.0, 0.0, 0.0, 0.0], "nodes_modes": ["BRANCH_LEQ", "BRANCH_LT", "LEAF", "LEAF", "LEAF"],
    "nodes_truenodeids": [1, 3, 0, 0, 0], "nodes_falsenodeids": [2, 4, 0, 0, 0],
}
TREE_X = np.array([[0.1, -1.0], [0.1, 2.0], [0.9, 0.0], [0.5, 0.0], [np.nan, -3.0], [0.2, np.nan]], F32)


def _class_votes(weights: list[float]) -> dict:
    """Weights for 3 classes on the three leaves (2, 3, 4), three per leaf."""
    return {"class_treeids": [0] * 9, "class_nodeids": [2, 2, 2, 3, 3, 3, 4, 4, 4], "class_ids": [0, 1, 2] * 3,
            "class_weights": weights}


@pytest.mark.parametrize("transform", ["NONE", "SOFTMAX", "LOGISTIC", "SOFTMAX_ZERO", "PROBIT"])
def test_tree_classifier_post_transforms_match_onnxruntime(transform):
    weights = [0.2, 0.5, 0.3, 0.0, 0.9, 0.1, 0.7, 0.0, 0.3]  # zeros: SOFTMAX_ZERO skips them
    onx = node_model("TreeEnsembleClassifier", {"X": TREE_X}, [("Y", TensorProto.INT64), ("Z", TensorProto.FLOAT)],
                     classlabels_int64s=[10, 20, 30], post_transform=transform, **TREE, **_class_votes(weights))
    label, _ = matches_onnxruntime(onx, {"X": TREE_X})
    np.testing.assert_array_equal(label, [20, 10, 20, 10, 20, 10])


@pytest.mark.parametrize("transform", ["NONE", "LOGISTIC"])
@pytest.mark.parametrize("weights", [[0.2, 0.7, 0.9], [-0.4, 0.6, 1.5]])
def test_binary_tree_classifier_with_one_scored_class_matches_onnxruntime(weights, transform):
    onx = node_model("TreeEnsembleClassifier", {"X": TREE_X}, [("Y", TensorProto.INT64), ("Z", TensorProto.FLOAT)],
                     classlabels_int64s=[4, 9], post_transform=transform, base_values=[0.1], **TREE,
                     class_treeids=[0, 0, 0], class_nodeids=[2, 3, 4], class_ids=[0, 0, 0], class_weights=weights)
    if min(weights) >= 0 and transform == "LOGISTIC":
        # onnxruntime labels this case by the raw score (> 0.5), against its own probabilities;
        # edgerun labels by the probabilities, as scikit-learn does
        (label, z), (_, want) = ours(onx, {"X": TREE_X}), theirs(onx, {"X": TREE_X})
        np.testing.assert_allclose(z, want, rtol=1e-6)
        np.testing.assert_array_equal(label, np.array([4, 9])[np.argmax(want, axis=1)])
    else:
        matches_onnxruntime(onx, {"X": TREE_X})


@pytest.mark.parametrize("aggregate", ["SUM", "AVERAGE", "MIN", "MAX"])
@pytest.mark.parametrize("dtype", [F32, F64, I64, np.int32])
def test_tree_regressor_aggregates_and_modes_match_onnxruntime(aggregate, dtype):
    modes = ["BRANCH_GTE", "BRANCH_GT", "LEAF", "LEAF", "LEAF", "BRANCH_EQ", "BRANCH_NEQ", "LEAF", "LEAF", "LEAF"]
    x = np.array([[0, 0], [1, 2], [1, 3], [3, 1], [3, 5], [-2, 9], [7, 2]], dtype)
    if dtype in (F32, F64):
        x = np.concatenate([x, np.array([[np.nan, 1], [3, np.nan], [np.nan, np.nan]], dtype)])
    onx = node_model(
        "TreeEnsembleRegressor", {"X": x}, [("Y", TensorProto.FLOAT)],
        n_targets=2, aggregate_function=aggregate, base_values=[0.5, -1.0],
        nodes_treeids=[0] * 5 + [1] * 5, nodes_nodeids=[0, 1, 2, 3, 4] * 2, nodes_featureids=[0, 1, 0, 0, 0] * 2,
        nodes_values=[1.0, 2.0, 0, 0, 0, 3.0, 1.0, 0, 0, 0], nodes_modes=modes,
        nodes_truenodeids=[1, 3, 0, 0, 0] * 2, nodes_falsenodeids=[2, 4, 0, 0, 0] * 2,
        nodes_missing_value_tracks_true=[1, 0, 0, 0, 0, 0, 1, 0, 0, 0],
        # every leaf scores both targets (onnxruntime leaves a target no leaf scored at 0, without
        # its base value); leaf 3 of tree 0 scores target 1 twice
        target_treeids=[0] * 7 + [1] * 6, target_nodeids=[2, 2, 3, 3, 3, 4, 4, 2, 2, 3, 3, 4, 4],
        target_ids=[0, 1, 0, 1, 1, 0, 1] + [0, 1] * 3,
        target_weights=[1.5, -2.0, 4.0, 3.0, -6.0, 0.25, 7.0, -5.0, 0.5, 2.5, 1.0, -0.5, 8.0])
    if dtype in (F32, F64):
        matches_onnxruntime(onx, {"X": x})
    else:  # onnxruntime implements int X for none of the tree ensembles: compare with float X
        onx_float = node_model("TreeEnsembleRegressor", {"X": x.astype(F32)}, [("Y", TensorProto.FLOAT)])
        onx_float.graph.node[0].CopyFrom(onx.graph.node[0])
        np.testing.assert_allclose(ours(onx, {"X": x})[0], theirs(onx_float, {"X": x.astype(F32)})[0], rtol=1e-6)


def test_regressor_adds_base_values_to_targets_no_leaf_scored():
    onx = node_model("TreeEnsembleRegressor", {"X": TREE_X}, [("Y", TensorProto.FLOAT)], n_targets=2,
                     base_values=[0.5, -1.0], **TREE, target_treeids=[0, 0, 0], target_nodeids=[2, 3, 4],
                     target_ids=[1, 1, 1], target_weights=[1.0, 2.0, 4.0])
    (y,) = ours(onx, {"X": TREE_X})
    np.testing.assert_array_equal(y[:, 0], 0.5)  # the spec adds base_values (onnxruntime writes 0)
    np.testing.assert_array_equal(y[:, 1], np.array([2.0, 4.0, 1.0, 4.0, 1.0, 4.0]) - 1.0)


def test_one_feature_vector_gives_one_row_like_onnxruntime():
    x = np.array([0.1, -1.0], F32)
    outputs = [("Y", TensorProto.INT64), ("Z", TensorProto.FLOAT)]
    votes = _class_votes([0.2, 0.5, 0.3, 0.0] * 2 + [1.0])
    label, z = ours(node_model("TreeEnsembleClassifier", {"X": x}, outputs, classlabels_int64s=[1, 2, 3], **TREE,
                               **votes), {"X": x})
    rows = node_model("TreeEnsembleClassifier", {"X": x[None]}, outputs, classlabels_int64s=[1, 2, 3], **TREE, **votes)
    want_label, want_z = theirs(rows, {"X": x[None]})  # onnxruntime's shape inference wants [N, F]
    np.testing.assert_array_equal(label, want_label)
    np.testing.assert_allclose(z, want_z, rtol=1e-6)
    matches_onnxruntime(node_model("LinearRegressor", {"X": x}, [("Y", TensorProto.FLOAT)], ml_opset=1,
                                   coefficients=[1.0, 2.0], intercepts=[0.5]), {"X": x})


def test_regressor_post_transform_softmax_over_targets():
    onx = node_model("TreeEnsembleRegressor", {"X": TREE_X}, [("Y", TensorProto.FLOAT)], n_targets=2,
                     post_transform="SOFTMAX", **TREE, target_treeids=[0, 0, 0], target_nodeids=[2, 3, 4],
                     target_ids=[0, 1, 1], target_weights=[1.0, 2.0, -1.0])
    (y,) = matches_onnxruntime(onx, {"X": TREE_X})
    np.testing.assert_allclose(y.sum(axis=1), 1, rtol=1e-6)


def _as_tensors(onx: onnx.ModelProto, op: str, keys: list[str]) -> onnx.ModelProto:
    """`op`'s float attributes `keys` as double *_as_tensor attributes, X double, ml opset 3."""
    for key in keys:
        values = np.array(attr(onx, op, key), F64)
        onx = set_attr(set_attr(onx, op, key, None), op, f"{key}_as_tensor", numpy_helper.from_array(values, key))
    onx.graph.input[0].type.tensor_type.elem_type = TensorProto.DOUBLE
    for opset in onx.opset_import:
        if opset.domain == ML:
            opset.version = 3
    return onx


def test_double_thresholds_as_tensor_match_onnxruntime_and_sklearn():
    x_train, y_train, x = regression()
    model = GradientBoostingRegressor(n_estimators=10, max_depth=3, random_state=0).fit(x_train, y_train)
    onx = _as_tensors(export(model, x), "TreeEnsembleRegressor", ["nodes_values", "target_weights", "base_values"])
    (y,) = matches_onnxruntime(onx, {"X": x.astype(F64)}, atol=1e-3)
    np.testing.assert_allclose(y[:, 0], model.predict(x), rtol=1e-5, atol=1e-3)


def _as_tree_ensemble(onx: onnx.ModelProto) -> onnx.ModelProto:
    """A TreeEnsembleRegressor model rewritten as TreeEnsemble (ai.onnx.ml opset 5)."""
    get = {a.name: helper.get_attribute_value(a) for a in onx.graph.node[0].attribute}
    trees, ids = np.array(get["nodes_treeids"]), np.array(get["nodes_nodeids"])
    leaf = np.array([m == b"LEAF" for m in get["nodes_modes"]])
    branch_of = {(t, i): k for k, (t, i) in enumerate(zip(trees[~leaf], ids[~leaf], strict=True))}
    leaf_of = {(t, i): k for k, (t, i) in enumerate(zip(trees[leaf], ids[leaf], strict=True))}
    weight = {(t, n): w for t, n, w in zip(get["target_treeids"], get["target_nodeids"], get["target_weights"],
                                           strict=True)}

    def child(t, c):
        return (leaf_of[t, c], 1) if (t, c) in leaf_of else (branch_of[t, c], 0)

    kids = [(child(t, tc), child(t, fc)) for t, tc, fc, lf in zip(
        trees, get["nodes_truenodeids"], get["nodes_falsenodeids"], leaf, strict=True) if not lf]
    node = helper.make_node(
        "TreeEnsemble", ["X"], ["Y"], domain=ML, n_targets=1, aggregate_function=1,
        nodes_featureids=np.array(get["nodes_featureids"])[~leaf].tolist(),
        nodes_splits=numpy_helper.from_array(np.array(get["nodes_values"], F32)[~leaf], "s"),
        nodes_modes=numpy_helper.from_array(np.zeros(int((~leaf).sum()), np.uint8), "m"),
        nodes_truenodeids=[k[0][0] for k in kids], nodes_trueleafs=[k[0][1] for k in kids],
        nodes_falsenodeids=[k[1][0] for k in kids], nodes_falseleafs=[k[1][1] for k in kids],
        tree_roots=sorted({branch_of[t, 0] for t in set(trees.tolist())}),
        leaf_targetids=[0] * int(leaf.sum()),
        leaf_weights=numpy_helper.from_array(np.array([weight[t, i] for t, i in zip(
            trees[leaf], ids[leaf], strict=True)], F32), "w"))
    node.output[0] = onx.graph.output[0].name
    graph = helper.make_graph([node], "g", list(onx.graph.input), list(onx.graph.output))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid(ML, 5)])


def test_tree_ensemble_opset5_matches_onnxruntime_and_sklearn():
    x_train, y_train, x = regression()
    model = RandomForestRegressor(n_estimators=6, max_depth=5, random_state=0).fit(x_train, y_train)
    v3 = export(model, x)
    onx = _as_tree_ensemble(set_attr(v3, "TreeEnsembleRegressor", "aggregate_function", None))
    (y,) = matches_onnxruntime(onx, {"X": x}, atol=1e-3)
    np.testing.assert_allclose(y[:, 0], model.predict(x), rtol=1e-5, atol=1e-3)  # skl2onnx divides the weights


# --- hand-built linear, SVM and preprocessing nodes -------------------------------------------

X4 = np.array([[1.0, -2.0, 0.5, 3.0], [0.0, 0.0, 0.0, 0.0], [-1.5, 2.5, -0.5, 1.0]], F32)


@pytest.mark.parametrize("transform", ["NONE", "LOGISTIC"])
def test_linear_classifier_with_one_score_column_matches_onnxruntime(transform):
    onx = node_model("LinearClassifier", {"X": X4}, [("Y", TensorProto.INT64), ("Z", TensorProto.FLOAT)],
                     ml_opset=1, coefficients=[0.5, 0.25, -1.0, 0.3], intercepts=[-0.2], classlabels_ints=[3, 8],
                     post_transform=transform)
    label, _ = matches_onnxruntime(onx, {"X": X4})
    np.testing.assert_array_equal(label, [8, 3, 8])


@pytest.mark.parametrize("transform", ["NONE", "SOFTMAX", "LOGISTIC", "SOFTMAX_ZERO", "PROBIT"])
def test_linear_regressor_targets_and_transforms_match_onnxruntime(transform):
    coef = [0.1, 0.2, 0.05, -0.1, 0.02, -0.03, 0.04, 0.01]  # small scores: PROBIT needs (0, 1)
    onx = node_model("LinearRegressor", {"X": X4}, [("Y", TensorProto.FLOAT)], ml_opset=1, coefficients=coef,
                     intercepts=[0.4, 0.6], targets=2, post_transform=transform)
    matches_onnxruntime(onx, {"X": X4}, rtol=1e-5)


@pytest.mark.parametrize("dtype", [F32, F64, I64, np.int32])
def test_scaler_normalizer_binarizer_on_numeric_dtypes_match_onnxruntime(dtype):
    x = (X4 * 2).astype(dtype)
    matches_onnxruntime(node_model("Scaler", {"X": x}, [("Y", TensorProto.FLOAT)], ml_opset=1,
                                   offset=[1.0, 0.0, -1.0, 0.5], scale=[2.0, 0.5, 1.0, -1.0]), {"X": x})
    for norm in ("MAX", "L1", "L2"):
        matches_onnxruntime(node_model("Normalizer", {"X": x}, [("Y", TensorProto.FLOAT)], ml_opset=1, norm=norm),
                            {"X": x})
    if dtype == F32:  # onnxruntime implements Binarizer for float only
        elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
        matches_onnxruntime(node_model("Binarizer", {"X": x}, [("Y", elem)], ml_opset=1, threshold=0.5), {"X": x})


def test_imputer_and_one_hot_encoder_match_onnxruntime():
    x = np.array([[1.0, np.nan, 3.0], [np.nan, 2.0, np.nan]], F32)
    matches_onnxruntime(node_model("Imputer", {"X": x}, [("Y", TensorProto.FLOAT)], ml_opset=1,
                                   imputed_value_floats=[7.0, 8.0, 9.0], replaced_value_float=float("nan")), {"X": x})
    ints = np.array([[1, 0, 3], [0, 5, 0]], I64)
    matches_onnxruntime(node_model("Imputer", {"X": ints}, [("Y", TensorProto.INT64)], ml_opset=1,
                                   imputed_value_int64s=[-4], replaced_value_int64=0), {"X": ints})
    floats = np.array([[1.7, 3.2, -1.0], [4.0, 9.0, 1.0]], F32)
    (y,) = matches_onnxruntime(node_model("OneHotEncoder", {"X": floats}, [("Y", TensorProto.FLOAT)], ml_opset=1,
                                          cats_int64s=[3, 1, 4]), {"X": floats})
    assert y.shape == (2, 3, 3) and y.sum() == 4


def test_array_feature_extractor_matches_onnxruntime():
    for x, y in [(np.arange(6, dtype=F32), np.array([4, 1], I64)),
                 (np.arange(24, dtype=I64).reshape(2, 3, 4), np.array([[3], [0], [3]], I64))]:
        elem = helper.np_dtype_to_tensor_dtype(x.dtype)
        onx = node_model("ArrayFeatureExtractor", {"X": x, "Y": y}, [("Z", elem)], ml_opset=1)
        matches_onnxruntime(onx, {"X": x, "Y": y})


@pytest.mark.parametrize("keys, values, default", [
    ({"keys_int64s": [3, 1, 7]}, {"values_int64s": [30, 10, 70]}, {"default_int64": -9}),
    ({"keys_int64s": [3, 1, 7]}, {"values_floats": [0.5, 1.5, -2.0]}, {"default_float": 4.0}),
    ({"keys_floats": [0.5, -1.0, 2.0]}, {"values_int64s": [1, 2, 3]}, {}),
    ({"keys_floats": [0.5, -1.0, 2.0]}, {"values_floats": [0.1, 0.2, 0.3]}, {}),
])
def test_label_encoder_numeric_maps_match_onnxruntime(keys, values, default):
    x = np.array([[3, 1, 5], [7, 7, 0]], I64) if "keys_int64s" in keys else np.array([0.5, 2.0, 3.0, -1.0], F32)
    out = TensorProto.INT64 if "values_int64s" in values else TensorProto.FLOAT
    onx = node_model("LabelEncoder", {"X": x}, [("Y", out)], ml_opset=2, **keys, **values, **default)
    matches_onnxruntime(onx, {"X": x})


def _encoder4(x: np.ndarray, keys: np.ndarray, values: np.ndarray, default: np.ndarray) -> onnx.ModelProto:
    tensors = {"keys_tensor": keys, "values_tensor": values, "default_tensor": default}
    return node_model("LabelEncoder", {"X": x}, [("Y", helper.np_dtype_to_tensor_dtype(values.dtype))], ml_opset=4,
                      **{k: numpy_helper.from_array(v, k) for k, v in tensors.items()})


@pytest.mark.parametrize("key_type, value_type", [(I64, F64), (I64, I64), (F64, I64), (F32, F32)])
def test_label_encoder_opset4_tensors_match_onnxruntime(key_type, value_type):
    x = np.array([2, 5, -1, 2, 9], key_type)
    onx = _encoder4(x, np.array([2, 9, -1], key_type), np.array([5, 9, -3], value_type), np.array([7], value_type))
    (y,) = matches_onnxruntime(onx, {"X": x})
    np.testing.assert_array_equal(y, [5, 7, -3, 5, 9])


def test_label_encoder_repeated_key_takes_the_last_value_and_nan_matches_nan():
    x = np.array([2.0, np.nan, -0.0, 3.0], F32)
    keys, values = np.array([2.0, np.nan, 0.0, 2.0], F32), np.array([1, 2, 3, 4], I64)
    (y,) = ours(_encoder4(x, keys, values, np.array([-1], I64)), {"X": x})
    np.testing.assert_array_equal(y, [4, 2, 3, -1])  # as the spec says (onnxruntime keeps the first value)


# --- malformed models and string tensors ------------------------------------------------------


@pytest.fixture(scope="module")
def tree_model() -> onnx.ModelProto:
    x_train, y_train, x = classification(3)
    return export(DecisionTreeClassifier(max_depth=4, random_state=0).fit(x_train, y_train), x)


def _edit(values: list, index: int, value) -> list:
    values = list(values)
    values[index] = value
    return values


TREE_CORRUPTIONS = {
    "child id": ("nodes_truenodeids", lambda v: _edit(v, 0, 999), r"nodes_truenodeids: tree 0 has no node 999"),
    "feature id": ("nodes_featureids", lambda v: _edit(v, 0, 6), r"feature 6 is out of range for X with 6 features"),
    "negative feature": ("nodes_featureids", lambda v: _edit(v, 0, -2), r"feature -2 is negative"),
    "lengths": ("nodes_values", lambda v: v[:-1], r"attribute lengths differ: .*nodes_values has"),
    "class id": ("class_ids", lambda v: _edit(v, 0, 3), r"class_ids: 3 is out of range \[0, 3\)"),
    "weight node": ("class_nodeids", lambda v: _edit(v, 0, 999), r"class_nodeids: tree 0 has no node 999"),
    "mode": ("nodes_modes", lambda v: _edit(v, 0, b"BRANCH_ALMOST"), r"unknown mode 'BRANCH_ALMOST'"),
    "duplicate": ("nodes_nodeids", lambda v: _edit(v, 1, 0), r"tree 0: node id 0 appears twice"),
    "cycle": ("nodes_falsenodeids", lambda v: _edit(v, 1, 0), r"tree 0: node 0 has more than one parent"),
    "both labels": ("classlabels_strings", lambda v: ["a", "b", "c"],
                    r"expected exactly one of 'classlabels_int64s' and 'classlabels_strings' .*got both"),
}


@pytest.mark.parametrize("corruption", sorted(TREE_CORRUPTIONS))
def test_corrupted_tree_attributes_are_refused_at_prepare(tree_model, corruption):
    key, change, message = TREE_CORRUPTIONS[corruption]
    try:
        old = attr(tree_model, "TreeEnsembleClassifier", key)
    except StopIteration:
        old = None
    onx = set_attr(tree_model, "TreeEnsembleClassifier", key, change(old))
    with pytest.raises(ModelError, match=message):
        prepare(onx, rows=4)


def test_corrupted_tree_with_a_dynamic_batch_fails_at_the_first_run(tree_model):
    onx = set_attr(tree_model, "TreeEnsembleClassifier", "nodes_featureids",
                   _edit(attr(tree_model, "TreeEnsembleClassifier", "nodes_featureids"), 0, 9))
    interpreter = prepare(onx)  # prepared at batch 1, the failure waits for a run's real shapes
    with pytest.raises((InputError, ModelError), match=r"cannot run .*feature 9 is out of range for X with 6 f"):
        interpreter.run({"X": np.zeros((3, 6), F32)})


V5_TREE = {  # root: x0 <= 0.5 ? leaf 0 : node 1; node 1: x0 in {1, 2} ? leaf 1 : leaf 2
    "n_targets": 1, "nodes_featureids": [0, 0], "nodes_truenodeids": [0, 1], "nodes_falsenodeids": [1, 2],
    "nodes_trueleafs": [1, 1], "nodes_falseleafs": [0, 1], "tree_roots": [0], "leaf_targetids": [0, 0, 0],
    "leaf_weights": numpy_helper.from_array(np.array([1.0, 2.0, 3.0], F32), "w"),
    "nodes_splits": numpy_helper.from_array(np.array([0.5, np.nan], F32), "s"),
    "nodes_modes": numpy_helper.from_array(np.array([0, 6], np.uint8), "m"),
    "membership_values": numpy_helper.from_array(np.array([1.0, 2.0, np.nan], F32), "mv"),
}


def _v5(x: np.ndarray | None = None, **changes) -> onnx.ModelProto:
    x = np.zeros((1, 1), F32) if x is None else x
    attrs = {**V5_TREE, **changes}
    return node_model("TreeEnsemble", {"X": x}, [("Y", TensorProto.FLOAT)], ml_opset=5,
                      **{k: v for k, v in attrs.items() if v is not None})


def test_tree_ensemble_opset5_membership_matches_onnxruntime():
    x = np.array([[0.0], [1.0], [2.0], [3.0], [np.nan]], F32)
    (y,) = matches_onnxruntime(_v5(x), {"X": x})
    np.testing.assert_array_equal(y[:, 0], [1, 2, 2, 3, 3])


@pytest.mark.parametrize("changes, message", [
    ({"nodes_truenodeids": [3, 1]}, r"nodes_truenodeids: node 0 points to leaf 3, out of range \[0, 3\)"),
    ({"nodes_falsenodeids": [5, 2]}, r"nodes_falsenodeids: node 0 points to node 5, out of range \[0, 2\)"),
    ({"tree_roots": [2]}, r"tree_roots: node 2 is out of range"),
    ({"leaf_targetids": [0, 1, 0]}, r"leaf_targetids: 1 is out of range \[0, 1\)"),
    ({"membership_values": None}, r"BRANCH_MEMBER nodes need attribute 'membership_values'"),
    ({"membership_values": numpy_helper.from_array(np.array([1.0, np.nan, 2.0, np.nan], F32), "mv")},
     r"membership_values holds 2 NaN-terminated sets; the 1 BRANCH_MEMBER nodes need one each"),
    ({"nodes_trueleafs": [1, 2]}, r"nodes_trueleafs: expected 0 or 1"),
    ({"nodes_featureids": [0, 1]}, r"feature 1 is out of range for X with 1 features"),
    ({"nodes_falsenodeids": [1, 0], "nodes_falseleafs": [0, 0]}, r"node 0 has more than one parent"),
    ({"nodes_falsenodeids": [1, 0]}, r"leaf 0 has more than one parent"),
    ({"nodes_truenodeids": [0, 2]}, r"leaf 1 is not reached from any tree root"),
    ({"tree_roots": [0, 0]}, r"node 0 has more than one parent"),
])
def test_malformed_tree_ensemble_opset5_is_refused_at_prepare(changes, message):
    with pytest.raises(ModelError, match=message):
        prepare(_v5(**changes))



def _tree_regressor(true_ids: list[int], false_ids: list[int], modes: list[str], n_targets: int = 1,
                    leaf: int | None = None) -> onnx.ModelProto:
    """One tree of len(modes) nodes (ids 0.., feature 0, threshold 0) and one weight on node `leaf`."""
    n = len(modes)
    leaf = n - 1 if leaf is None else leaf
    return node_model("TreeEnsembleRegressor", {"X": np.zeros((1, 1), F32)}, [("Y", TensorProto.FLOAT)],
                      n_targets=n_targets, nodes_treeids=[0] * n, nodes_nodeids=list(range(n)),
                      nodes_featureids=[0] * n, nodes_values=[0.0] * n, nodes_modes=modes,
                      nodes_truenodeids=true_ids, nodes_falsenodeids=false_ids, target_treeids=[0],
                      target_nodeids=[leaf], target_ids=[0], target_weights=[1.0])


B, L = "BRANCH_LEQ", "LEAF"


@pytest.mark.parametrize("true_ids, false_ids, modes, message", [
    ([1, 3, 0, 0, 0], [2, 2, 0, 0, 0], [B, B, L, L, L], r"tree 0: node 2 has more than one parent"),  # a DAG
    ([1, 3, 0, 0, 0], [2, 3, 0, 0, 0], [B, B, L, L, L], r"tree 0: node 4 is not reached from any tree root"),
    ([1, 0, 0, 4, 3], [2, 0, 0, 4, 3], [B, L, L, B, B], r"tree 0: node 3 is not reached from any tree root "
                                                        r"\(unreachable, or on a cycle\)"),
    ([1, 1, 0], [2, 2, 0], [B, B, L], r"tree 0: node 1 has more than one parent"),  # a self-loop
])
def test_nodes_that_do_not_form_a_tree_are_refused(true_ids, false_ids, modes, message):
    with pytest.raises(ModelError, match=message):
        prepare(_tree_regressor(true_ids, false_ids, modes))


@pytest.mark.parametrize("shape", ["cycle", "dag"])
def test_large_cyclic_or_shared_trees_are_refused_in_linear_time(shape):
    # a node per level that both branches of the level above reach: checking it level by level
    # took quadratic time (minutes at this size) before the refusal
    n = 40_000
    ids = np.arange(n)
    true_ids, false_ids = ((ids + 1) % n, (ids + 2) % n) if shape == "cycle" else (
        np.minimum(ids + 1, n - 1), np.minimum(ids + 2, n - 1))
    modes = [B] * n if shape == "cycle" else [B] * (n - 2) + [L, L]
    start = time.perf_counter()
    with pytest.raises(ModelError, match=r"tree 0: node \d+ has more than one parent"):
        prepare(_tree_regressor(true_ids.tolist(), false_ids.tolist(), modes))
    assert time.perf_counter() - start < 20


def test_deep_chain_tree_is_checked_and_evaluated_in_linear_time():
    n = 2_000  # branch i: x <= 0 goes on to branch i + 1, x > 0 to leaf n + i; the last branch ends at leaf 2n
    true_ids = list(range(1, n)) + [2 * n]
    false_ids = list(range(n, 2 * n))
    modes = [B] * n + [L] * (n + 1)
    onx = _tree_regressor(true_ids + [0] * (n + 1), false_ids + [0] * (n + 1), modes, leaf=2 * n)
    x = np.array([[0.0], [1.0]], F32)
    onx.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 2
    start = time.perf_counter()
    (y,) = matches_onnxruntime(onx, {"X": x})
    np.testing.assert_array_equal(y[:, 0], [1.0, 0.0])
    assert time.perf_counter() - start < 20


def test_many_targets_cost_no_nodes_x_targets_table_at_prepare():
    # one leaf, 2**27 targets: a dense leaf table (1.1 GiB) was built before the plan's memory
    # budget saw the [1, 2**27] output; now the budget refuses the output, and little is allocated
    onx = _tree_regressor([0], [0], [L], n_targets=1 << 27, leaf=0)
    data = serialize(from_onnx(onx))
    tracemalloc.start()
    try:
        with pytest.raises(MemoryBudgetError, match=r"over the memory budget of 1048576"):
            Interpreter(data, device="cpu", memory_budget=1 << 20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, peak


@pytest.mark.parametrize("aggregate", ["SUM", "AVERAGE", "MIN", "MAX"])
def test_sparse_weights_over_many_targets_match_onnxruntime(aggregate):
    targets = 300  # two trees, a few weights each, on scattered targets (some twice on one leaf)
    nodes = {"nodes_treeids": [0, 0, 0, 1, 1, 1], "nodes_nodeids": [0, 1, 2] * 2,
             "nodes_featureids": [0, 0, 0, 1, 0, 0], "nodes_values": [0.5, 0, 0, -1.0, 0, 0],
             "nodes_modes": [B, L, L] * 2,
             "nodes_truenodeids": [1, 0, 0] * 2, "nodes_falsenodeids": [2, 0, 0] * 2}
    weights = {"target_treeids": [0, 0, 0, 0, 1, 1, 1], "target_nodeids": [1, 1, 1, 2, 1, 2, 2],
               "target_ids": [7, 299, 7, 150, 7, 0, 299], "target_weights": [1.5, -2.0, 4.0, 0.25, -3.0, 6.0, 0.5]}
    x = np.array([[0.0, -2.0], [1.0, 0.0], [0.5, -1.0], [2.0, -5.0]], F32)
    onx = node_model("TreeEnsembleRegressor", {"X": x}, [("Y", TensorProto.FLOAT)], n_targets=targets,
                     aggregate_function=aggregate, **nodes, **weights)
    (y,) = matches_onnxruntime(onx, {"X": x})
    assert y.shape == (4, targets) and not y[:, 8:150].any()  # targets no leaf scores are 0


def test_bad_values_at_run_are_model_errors():
    x = np.array([[1, 7]], I64)
    encoder = prepare(node_model("OneHotEncoder", {"X": x}, [("Y", TensorProto.FLOAT)], ml_opset=1,
                                 cats_int64s=[1, 2], zeros=0))
    with pytest.raises(ModelError, match=r"value 7 is not in cats_int64s \(zeros=0\)"):
        encoder.run({"X": x})
    extractor = prepare(node_model("ArrayFeatureExtractor", {"X": X4, "Y": np.array([0, 1], I64)},
                                   [("Z", TensorProto.FLOAT)], ml_opset=1))
    with pytest.raises(ModelError, match=r"Y: index 4 is out of range \[0, 4\)"):
        extractor.run({"X": X4, "Y": np.array([1, 4], I64)})


@pytest.mark.parametrize("op, attrs, message", [
    ("LinearClassifier", {"coefficients": [1.0, 2.0, 3.0], "intercepts": [0.0], "classlabels_ints": [0, 1]},
     r"coefficients has 3 values, expected 1 x 4"),
    ("LinearClassifier", {"coefficients": [1.0] * 8, "intercepts": [0.0, 1.0], "classlabels_ints": [0, 1, 2]},
     r"classlabels_ints has 3 labels for 2 score columns"),
    ("SVMClassifier", {"coefficients": [1.0] * 3, "support_vectors": [0.0] * 10, "vectors_per_class": [2, 1],
                       "rho": [0.0], "classlabels_ints": [0, 1]}, r"support_vectors has 10 values, expected 3 vectors"),
    ("SVMClassifier", {"coefficients": [1.0] * 3, "support_vectors": [0.0] * 12, "vectors_per_class": [2, 1],
                       "rho": [0.0], "classlabels_ints": [0, 1], "prob_a": [1.0]},
     r"prob_a and prob_b need 1 values each"),
    ("SVMRegressor", {"coefficients": [1.0, 2.0], "support_vectors": [0.0] * 8, "n_supports": 3, "rho": [0.0]},
     r"expected 3 x 4 and 3 \(n_supports\)"),
    ("Scaler", {"offset": [1.0, 2.0], "scale": [1.0]}, r"offset has 2 values, expected 1 or 4"),
    ("TreeEnsembleRegressor", {"n_targets": 1 << 40, **TREE, "target_treeids": [0], "target_nodeids": [2],
                               "target_ids": [0], "target_weights": [1.0]},
     r"output shape \(3, 1099511627776\) is invalid or too large"),
    ("LinearRegressor", {"coefficients": [1.0] * 4, "targets": 1 << 40}, r"coefficients has 4 values, expected"),
    ("TreeEnsembleRegressor", {"n_targets": 1, "base_values": [1.0, 2.0], **TREE, "target_treeids": [0],
                               "target_nodeids": [2], "target_ids": [0], "target_weights": [1.0]},
     r"base_values has 2 values, expected 1"),
])
def test_inconsistent_model_attributes_are_refused_at_prepare(op, attrs, message):
    outputs = [("Y", TensorProto.INT64), ("Z", TensorProto.FLOAT)] if "Classifier" in op else [("Y", TensorProto.FLOAT)]
    with pytest.raises(ModelError, match=message):
        prepare(node_model(op, {"X": X4}, outputs, ml_opset=1, **attrs))


# --- string labels, keys and categories -------------------------------------------------------

NAMES = np.array(["cat", "dög", "eel 😀"], dtype=object)  # non-ASCII and astral on purpose


def strings(*items, shape=None) -> np.ndarray:
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array if shape is None else array.reshape(shape)


def assert_same_strings(got: np.ndarray, want) -> None:
    """Equal string tensors: same shape, object dtype holding only str, equal elements."""
    want = np.asarray(want, dtype=object)
    assert got.dtype == np.dtype(object) and got.shape == want.shape, (got.dtype, got.shape, want.shape)
    assert all(type(s) is str for s in got.flat)
    assert got.tolist() == want.tolist()


STRING_CLASSIFIERS = {
    "logistic_regression": lambda: LogisticRegression(max_iter=2000),
    "random_forest": lambda: RandomForestClassifier(n_estimators=8, max_depth=6, random_state=0),
    "gradient_boosting": lambda: GradientBoostingClassifier(n_estimators=10, max_depth=3, random_state=0),
    "svc": lambda: SVC(random_state=0),
}


@pytest.mark.parametrize("classes", [2, 3])
@pytest.mark.parametrize("name", sorted(STRING_CLASSIFIERS))
def test_string_label_classifier_matches_onnxruntime_and_sklearn(name, classes):
    x_train, y_train, x = classification(classes)
    model = STRING_CLASSIFIERS[name]().fit(x_train, NAMES[y_train])
    onx = export(model, x)
    assert any(a.name == "classlabels_strings" for n in onx.graph.node for a in n.attribute)
    got, want = ours(onx, {"X": x}), theirs(onx, {"X": x})
    assert_same_strings(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], rtol=1e-4, atol=1e-5)
    if hasattr(model, "predict_proba"):
        top2 = np.sort(model.predict_proba(x), axis=1)[:, -2:]
        clear = top2[:, 1] - top2[:, 0] > 1e-4  # where float32 rounding cannot decide the top class
    else:
        clear = np.ones(len(x), bool)
    assert clear.mean() > 0.9
    assert_same_strings(got[0][clear], model.predict(x)[clear])


def test_string_pipeline_encoders_match_sklearn():
    from skl2onnx.common.data_types import StringTensorType

    rng = np.random.default_rng(0)
    x_train = rng.choice(NAMES, (40, 2)).astype(object)
    x = np.concatenate([rng.choice(NAMES, (8, 2)), strings("?", "cat", "cat", "ñ", shape=(2, 2))]).astype(object)
    types = [("X", StringTensorType([None, 2]))]
    ordinal = OrdinalEncoder().fit(x_train)
    (y,) = matches_onnxruntime(skl2onnx.convert_sklearn(ordinal, initial_types=types), {"X": x[:8]})
    np.testing.assert_array_equal(y, ordinal.transform(x[:8]))
    onehot = OneHotEncoder(handle_unknown="ignore").fit(x_train)
    (y,) = matches_onnxruntime(skl2onnx.convert_sklearn(onehot, initial_types=types), {"X": x})
    np.testing.assert_array_equal(y, onehot.transform(x).toarray())
    labels = LabelEncoder().fit(NAMES)
    onx = skl2onnx.convert_sklearn(labels, initial_types=[("X", StringTensorType([None]))])
    (y,) = matches_onnxruntime(onx, {"X": x[:8, 0]})
    np.testing.assert_array_equal(y, labels.transform(x[:8, 0]))


WORDS = strings("é", "b", "é", "zz", "", "😀", shape=(2, 3))  # "zz" and "" are not keys
INTS = np.array([[0, 3, 1], [-1, 7, 2]], I64)
FLOATS = np.array([1.5, 2.0, np.nan, 0.0], F32)


def _t(array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(array, "t")


ENCODERS = {  # (op, X, Y's type, ml opset, attributes)
    "v1 string to index": ("LabelEncoder", WORDS, TensorProto.INT64, 1, {"classes_strings": ["a", "é", "😀"]}),
    "v1 index to string": ("LabelEncoder", INTS, TensorProto.STRING, 1,
                           {"classes_strings": ["a", "é", "😀"], "default_string": "none"}),
    "v1 default names": ("LabelEncoder", INTS, TensorProto.STRING, 1, {"classes_strings": ["α"]}),
    "v2 strings": ("LabelEncoder", WORDS, TensorProto.STRING, 2,
                   {"keys_strings": ["é", "😀", "b"], "values_strings": ["E", "smile", "β"]}),
    "v2 string to float": ("LabelEncoder", WORDS, TensorProto.FLOAT, 2,
                           {"keys_strings": ["é", "b"], "values_floats": [1.5, 2.0], "default_float": 9.0}),
    "v2 int to string": ("LabelEncoder", INTS, TensorProto.STRING, 2,
                         {"keys_int64s": [3, 1, 7], "values_strings": ["x", "ÿ", "z"], "default_string": "?"}),
    "v2 float to string": ("LabelEncoder", FLOATS, TensorProto.STRING, 2,
                           {"keys_floats": [1.5, 2.0], "values_strings": ["x", "y"]}),
    "v4 string tensors": ("LabelEncoder", WORDS, TensorProto.STRING, 4,
                          {"keys_tensor": _t(strings("é", "b")), "values_tensor": _t(strings("1", "2")),
                           "default_tensor": _t(strings("d"))}),
    "v4 string to double": ("LabelEncoder", WORDS, TensorProto.DOUBLE, 4,
                            {"keys_tensor": _t(strings("é", "b")), "values_tensor": _t(np.array([1.5, 2.0]))}),
    "category to int": ("CategoryMapper", WORDS, TensorProto.INT64, 1,
                        {"cats_strings": ["é", "😀", "b", "é"], "cats_int64s": [1, 2, 3, 4], "default_int64": 99}),
    "category to string": ("CategoryMapper", INTS, TensorProto.STRING, 1,
                           {"cats_strings": ["p", "q", "ü", "s"], "cats_int64s": [1, 2, 3, 1]}),
}


@pytest.mark.parametrize("case", sorted(ENCODERS))
def test_string_lookups_match_onnxruntime(case):
    op, x, out, opset, attrs = ENCODERS[case]
    onx = node_model(op, {"X": x}, [("Y", out)], ml_opset=opset, **attrs)
    (got,), (want,) = ours(onx, {"X": x}), theirs(onx, {"X": x})
    if out == TensorProto.STRING:
        assert_same_strings(got, want)
    else:
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
    assert (got.reshape(-1)[3] == {"v2 strings": "_Unused", "v1 string to index": -1, "category to int": 99}
            .get(case, got.reshape(-1)[3]))  # X's "zz": the default


def test_string_label_encoder_repeated_key_takes_the_last_value_as_the_spec():
    onx = node_model("LabelEncoder", {"X": WORDS}, [("Y", TensorProto.STRING)], ml_opset=2,
                     keys_strings=["é", "😀", "é"], values_strings=["first", "smile", "last"], default_string="-")
    (got,) = ours(onx, {"X": WORDS})
    (want,) = ReferenceEvaluator(onx).run(None, {"X": WORDS})  # onnxruntime keeps the first value
    assert got.tolist() == np.asarray(want).tolist() == [["last", "-", "last"], ["-", "-", "smile"]]


def test_string_array_feature_extractor_matches_onnxruntime():
    y = np.array([2, 0], I64)
    onx = node_model("ArrayFeatureExtractor", {"X": WORDS, "Y": y}, [("Z", TensorProto.STRING)], ml_opset=1)
    (got,), (want,) = ours(onx, {"X": WORDS, "Y": y}), theirs(onx, {"X": WORDS, "Y": y})
    assert_same_strings(got, want)


TWO_WORDS = strings("a", "b")


@pytest.mark.parametrize("op, x, opset, attrs, message", [
    ("LabelEncoder", TWO_WORDS, 2, {"keys_strings": ["a", "b", "c"], "values_int64s": [1, 2]},
     r"keys_strings has 3 entries and values_int64s 2: they pair up one to one"),
    ("LabelEncoder", np.array([1, 2], I64), 2, {"keys_strings": ["a", "b"], "values_int64s": [1, 2]},
     r"X is int64 but the keys \(keys_strings\) are string"),
    ("LabelEncoder", TWO_WORDS, 2, {"keys_strings": ["a"], "keys_int64s": [1], "values_int64s": [1]},
     r"expected exactly one of keys_strings, keys_int64s, keys_floats, keys_tensor, got keys_strings, keys_int64s"),
    ("LabelEncoder", TWO_WORDS, 4, {"keys_strings": ["a"], "values_tensor": _t(strings("x")),
                                    "default_tensor": _t(np.array([1], I64))},
     r"default_tensor: expected one string value \(the values' type\), got int64 \[1\]"),
    ("LabelEncoder", np.array([1.0], F32), 1, {"classes_strings": ["a"]},
     r"X: expected a string or int64 tensor, got float32"),
    ("LabelEncoder", TWO_WORDS, 1, {"default_int64": 3}, r"attribute 'classes_strings' is required"),
    ("CategoryMapper", TWO_WORDS, 1, {"cats_strings": ["a", "b"], "cats_int64s": [1, 2, 3]},
     r"attribute lengths differ: cats_strings has 2, cats_int64s has 3"),
    ("CategoryMapper", TWO_WORDS, 1, {"cats_strings": ["a", "b"]},
     r"attributes 'cats_strings' and 'cats_int64s' are both required"),
    ("OneHotEncoder", TWO_WORDS, 1, {"cats_int64s": [1, 2]},
     r"string X needs attribute 'cats_strings' and not 'cats_int64s'"),
    ("OneHotEncoder", np.array([1, 2], I64), 1, {"cats_strings": ["a"]},
     r"int64 X needs attribute 'cats_int64s' and not 'cats_strings'"),
])
def test_malformed_string_tables_are_refused_at_prepare(op, x, opset, attrs, message):
    out = TensorProto.FLOAT if op == "OneHotEncoder" else TensorProto.INT64
    with pytest.raises(ModelError, match=message):
        prepare(node_model(op, {"X": x}, [("Y", out)], ml_opset=opset, **attrs))


BOTH = r"expected exactly one of 'classlabels_ints' and 'classlabels_strings' \(the class labels\), got both"


@pytest.mark.parametrize("op, labels, message", [
    ("LinearClassifier", {}, r"expected exactly one of 'classlabels_ints' and 'classlabels_strings' .*got neither"),
    ("LinearClassifier", {"classlabels_ints": [1, 2], "classlabels_strings": ["a", "b"]}, BOTH),
    ("LinearClassifier", {"classlabels_strings": ["a", "b", "c"]}, r"classlabels_strings has 3 labels for 2 score"),
    ("SVMClassifier", {"classlabels_strings": ["a"]}, r"classlabels_strings has 1 label, at least 2 are needed"),
])
def test_classifier_labels_must_come_from_one_list(op, labels, message):
    weights = {"coefficients": [1.0] * 8, "intercepts": [0.0, 1.0]} if op == "LinearClassifier" \
        else {"coefficients": [1.0] * 4, "rho": [0.0]}
    with pytest.raises(ModelError, match=message):
        prepare(node_model(op, {"X": X4}, [("Y", TensorProto.STRING), ("Z", TensorProto.FLOAT)], ml_opset=1,
                           **labels, **weights))


def test_unknown_string_category_with_zeros_0_fails_at_run():
    encoder = prepare(node_model("OneHotEncoder", {"X": WORDS}, [("Y", TensorProto.FLOAT)], ml_opset=1,
                                 cats_strings=["é", "b", "", "😀"], zeros=0))
    with pytest.raises(ModelError, match=r"value 'zz' is not in cats_strings \(zeros=0\)"):
        encoder.run({"X": WORDS})
