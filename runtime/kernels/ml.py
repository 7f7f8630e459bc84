"""The ai.onnx.ml domain, as scikit-learn models exported with skl2onnx use it: the tree
ensembles (TreeEnsembleClassifier, TreeEnsembleRegressor, TreeEnsemble), linear and SVM
models, and the preprocessing ops (Scaler, Normalizer, Binarizer, Imputer, OneHotEncoder,
ArrayFeatureExtractor, LabelEncoder).

Numeric tensors only: edgerun has no string tensors, so string class labels, keys, values
and categories are refused at prepare with a ModelError saying so (ZipMap, whose output is
a sequence of maps, is refused at conversion by converters.onnx_import).

Scores are computed in float64 and rounded once to the output dtype. Where the spec is
silent the kernels follow onnxruntime: PROBIT uses the same erfinv approximation
(Winitzki's, relative error about 1e-3), SOFTMAX_ZERO leaves zero scores at zero, a binary
classifier that scores one class writes [1 - s, s] (all weights >= 0) or [-s, s], and int
features are compared as float32. They differ from onnxruntime where it contradicts the
spec or itself: a post_transform applies to single-score regressors too (onnxruntime
applies only PROBIT there); base_values are added to targets no leaf scored (onnxruntime
writes 0); a LabelEncoder key given twice maps to its last value (onnxruntime: the
first); a two-class classifier labels by its larger score, and a binary LOGISTIC one by
its probability (onnxruntime compares the raw score with 0.5 when all weights are >= 0).

Tree ensembles are validated at prepare (node and child ids, feature ids against X,
attribute lengths, cycles) and evaluated one depth level at a time over all rows and
trees at once; a tree's leaves loop to themselves, so extra levels change nothing.
"""

from __future__ import annotations

from collections.abc import Sized
from dataclasses import dataclass, replace

import numpy as np

from edgerun.runtime.kernels.attrs import (
    flag_attr,
    float_attr,
    int_attr,
    require_kind,
    require_rank,
    str_attr,
)
from edgerun.runtime.kernels.base import Kernel, TensorSpec
from edgerun.runtime.kernels.registry import register

ML = "ai.onnx.ml"
NO_STRINGS = "edgerun has no string tensors, so only numeric ones are supported"
TRANSFORMS = ("NONE", "SOFTMAX", "LOGISTIC", "SOFTMAX_ZERO", "PROBIT")
AGGREGATES = ("AVERAGE", "SUM", "MIN", "MAX")
FEATURE_KINDS = "fi"  # X of the models: float, double, int32, int64
F32, F64, I64 = np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.int64)


# --- attributes -------------------------------------------------------------------------------


def _refuse_strings(kernel: Kernel, *keys: str) -> None:
    """ModelError naming the first of `keys` that is set (string labels, keys or values)."""
    for key in keys:
        value = kernel.attr(key)
        if value is not None and not (isinstance(value, list | tuple) and len(value) == 0):
            raise kernel.fail(f"attribute {key!r} holds strings: {NO_STRINGS}")


def _ints(kernel: Kernel, key: str, required: bool = False) -> np.ndarray | None:
    """A list-of-ints attribute as int64, None when absent (ModelError when `required`)."""
    value = kernel.attr(key)
    if value is None:
        if required:
            raise kernel.fail(f"attribute {key!r} is required")
        return None
    array = np.asarray(value)
    if array.ndim != 1 or (array.size and array.dtype.kind not in "iu"):
        raise kernel.fail(f"attribute {key!r}: expected a list of ints")
    return array.astype(np.int64)


def _floats(kernel: Kernel, key: str, required: bool = False) -> np.ndarray | None:
    """A list-of-floats attribute (or a 1-D numeric tensor) as float64, None when absent."""
    value = kernel.attr(key)
    if value is None:
        if required:
            raise kernel.fail(f"attribute {key!r} is required")
        return None
    array = np.asarray(value)
    if array.ndim > 1 or (array.size and array.dtype.kind not in "fiu"):
        raise kernel.fail(f"attribute {key!r}: expected a list of floats")
    return array.reshape(-1).astype(np.float64)


def _floats_or_tensor(kernel: Kernel, key: str, required: bool = False) -> np.ndarray | None:
    """`key` (floats) or `key_as_tensor` (opset 3, double precision): at most one of them."""
    plain, tensor = _floats(kernel, key), _floats(kernel, f"{key}_as_tensor")
    if plain is not None and tensor is not None:
        raise kernel.fail(f"attributes {key!r} and '{key}_as_tensor' are both set")
    if tensor is not None and kernel.version < 3:
        raise kernel.fail(f"attribute '{key}_as_tensor' needs ai.onnx.ml opset 3, the model uses {kernel.version}")
    if plain is None and tensor is None and required:
        raise kernel.fail(f"attribute {key!r} is required")
    return plain if tensor is None else tensor


def _strings(kernel: Kernel, key: str) -> list[str] | None:
    value = kernel.attr(key)
    if value is None:
        return None
    if not isinstance(value, list | tuple) or not all(isinstance(s, str) for s in value):
        raise kernel.fail(f"attribute {key!r}: expected a list of strings")
    return list(value)


def _choice(kernel: Kernel, key: str, default: str, allowed: tuple[str, ...]) -> str:
    value = str_attr(kernel, key, default)
    if value not in allowed:
        raise kernel.fail(f"attribute {key!r} is {value!r}; expected one of {', '.join(allowed)}")
    return value


def _same_length(kernel: Kernel, arrays: dict[str, Sized | None]) -> int:
    """The common length of the attributes given (None: absent, not checked)."""
    lengths = {key: len(v) for key, v in arrays.items() if v is not None}
    if len(set(lengths.values())) > 1:
        raise kernel.fail("attribute lengths differ: " + ", ".join(f"{k} has {n}" for k, n in lengths.items()))
    return next(iter(lengths.values()), 0)


def _class_labels(kernel: Kernel, key: str, strings_key: str) -> np.ndarray:
    """The int64 class labels; ModelError for string labels or none."""
    _refuse_strings(kernel, strings_key)
    labels = _ints(kernel, key)
    if labels is None or labels.size == 0:
        raise kernel.fail(f"attribute {key!r} is required (string labels are not supported: {NO_STRINGS})")
    return labels


def _features(kernel: Kernel, x: TensorSpec, kinds: str = FEATURE_KINDS) -> tuple[int, int]:
    """(rows, features) of X, [N, F] or [F] (one row)."""
    require_kind(kernel, x, kinds, "X")
    require_rank(kernel, x, 1, 2, what="X")
    if x.shape[-1] == 0:
        raise kernel.fail(f"X has no features (shape {x.shape})")
    return (1, x.shape[0]) if len(x.shape) == 1 else (x.shape[0], x.shape[1])


# --- score transforms -------------------------------------------------------------------------


def logistic(s: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-s)), without overflow."""
    e = np.exp(-np.abs(s))
    return np.where(s >= 0, 1 / (1 + e), e / (1 + e))


def probit(p: np.ndarray) -> np.ndarray:
    """sqrt(2) * erfinv(2p - 1) with Winitzki's erfinv approximation (a = 0.147), as
    onnxruntime and the ONNX reference compute it: -inf at 0, +inf at 1, NaN outside [0, 1]."""
    x = 2 * p - 1
    with np.errstate(all="ignore"):
        ln = np.log((1 - x) * (1 + x))
        v = 2 / (np.pi * 0.147) + 0.5 * ln
        root = np.sqrt(-v + np.sqrt(v * v - ln / 0.147))
    return np.sqrt(2) * np.where(x < 0, -root, root)


def post_transform(scores: np.ndarray, name: str) -> np.ndarray:
    """`scores` [N, K] (float64) after an ONNX-ML post_transform: LOGISTIC and PROBIT per
    score, SOFTMAX and SOFTMAX_ZERO per row (SOFTMAX_ZERO keeps scores within 1e-7 of zero
    at zero; a row of zeros stays zeros)."""
    if name == "LOGISTIC":
        return logistic(scores)
    if name == "PROBIT":
        return probit(scores)
    if name in ("SOFTMAX", "SOFTMAX_ZERO") and scores.size:
        top = scores.max(axis=-1, keepdims=True)
        if name == "SOFTMAX":
            e = np.exp(scores - top)
            return e / e.sum(axis=-1, keepdims=True)
        live = np.abs(scores) > 1e-7
        with np.errstate(all="ignore"):
            e = np.where(live, np.exp(scores - top), scores * np.exp(-top))
        total = np.where(live, e, 0).sum(axis=-1, keepdims=True)
        return np.divide(e, total, out=e.copy(), where=total != 0)
    return scores


def binary_scores(s: np.ndarray, transform: str, all_positive: bool) -> np.ndarray:
    """Z [N, 2] of a binary model with one score s per row, as onnxruntime writes it:
    LOGISTIC gives [1 - p, p] with p = logistic(s); NONE gives [1 - s, s] when all the
    model's weights are >= 0 (s is a probability), else [-s, s]."""
    if transform == "LOGISTIC":
        return np.stack([logistic(-s), logistic(s)], axis=1)
    return np.stack([1 - s, s] if all_positive else [-s, s], axis=1)


def _require_binary_transform(kernel: Kernel, transform: str, what: str) -> None:
    if transform not in ("NONE", "LOGISTIC"):
        raise kernel.fail(f"post_transform {transform} is not defined for {what} (NONE and LOGISTIC are)")


# --- tree ensembles ---------------------------------------------------------------------------

LEAF = -1
MEMBER = 6
MODE_CODES = {"BRANCH_LEQ": 0, "BRANCH_LT": 1, "BRANCH_GTE": 2, "BRANCH_GT": 3, "BRANCH_EQ": 4, "BRANCH_NEQ": 5,
              "LEAF": LEAF}
COMPARE = {0: np.less_equal, 1: np.less, 2: np.greater_equal, 3: np.greater, 4: np.equal, 5: np.not_equal}
ROWS_TREES_PER_CHUNK = 1 << 22  # rows * trees * targets evaluated at once
MAX_LEAF_TABLE = 1 << 27  # nodes * targets: the per-node score table (8 bytes each)


@dataclass(frozen=True)
class Forest:
    """Trees as flat arrays over their nodes, leaves included (a leaf's children are itself).

    `values[i, k]` is what node i adds to target k when a row ends there (the sum, min or
    max of the leaf's weights for k, as the aggregate function combines them) and `hit[i, k]`
    whether it has a weight for k at all. `depth` is the most branch steps from any root.
    """

    feature: np.ndarray  # int64 [nodes]
    threshold: np.ndarray  # float [nodes], in the dtype rows are compared in
    mode: np.ndarray  # int8 [nodes]: a key of COMPARE, MEMBER or LEAF
    true_next: np.ndarray  # int64 [nodes]
    false_next: np.ndarray  # int64 [nodes]
    nan_true: np.ndarray  # bool [nodes]: a NaN feature takes the true branch
    members: dict[int, np.ndarray]  # BRANCH_MEMBER node -> its set
    roots: np.ndarray  # int64 [trees]
    values: np.ndarray  # float64 [nodes, targets]
    hit: np.ndarray  # bool [nodes, targets]
    depth: int
    max_feature: int  # the largest feature id a branch reads (-1: none)

    def with_dtype(self, dtype: np.dtype) -> Forest:
        """The forest comparing in `dtype` (thresholds and member sets cast to it)."""
        members = {node: values.astype(dtype) for node, values in self.members.items()}
        return replace(self, threshold=self.threshold.astype(dtype), members=members)

    def leaves(self, x: np.ndarray) -> np.ndarray:
        """The node each row of `x` [N, F] (compare dtype) ends at in each tree: [N, trees]."""
        node = np.repeat(self.roots[None, :], len(x), axis=0)
        rows = np.arange(len(x))[:, None]
        branch_modes = [m for m in np.unique(self.mode).tolist() if m in COMPARE]
        for _ in range(self.depth):
            value = x[rows, self.feature[node]]
            mode = self.mode[node]
            if len(branch_modes) == 1 and not self.members:
                go = COMPARE[branch_modes[0]](value, self.threshold[node])
            else:
                go = np.zeros(node.shape, bool)
                for m in branch_modes:
                    at = mode == m
                    go[at] = COMPARE[m](value[at], self.threshold[node[at]])
                for member, allowed in self.members.items():
                    at = node == member
                    go[at] = np.isin(value[at], allowed)
            if self.nan_true.any():
                go |= self.nan_true[node] & np.isnan(value)
            node = np.where(go, self.true_next[node], self.false_next[node])
        return node

    def scores(self, x: np.ndarray, aggregate: str) -> tuple[np.ndarray, np.ndarray]:
        """(scores [N, targets] float64, hit [N, targets]): the leaves' values combined over
        the trees by `aggregate` (AVERAGE divides the sum by the tree count); a target no
        leaf of the row has a weight for scores 0."""
        trees, targets = len(self.roots), self.values.shape[1]
        scores = np.zeros((len(x), targets))
        hit = np.zeros((len(x), targets), bool)
        step = max(1, ROWS_TREES_PER_CHUNK // max(1, trees * targets))
        combine = {"MIN": np.min, "MAX": np.max}.get(aggregate, np.sum)
        for start in range(0, len(x), step):
            leaves = self.leaves(x[start : start + step])
            part_hit = self.hit[leaves].any(axis=1)
            part = combine(self.values[leaves], axis=1)
            scores[start : start + step] = np.where(part_hit, part, 0)
            hit[start : start + step] = part_hit
        if aggregate == "AVERAGE":
            scores /= trees
        return scores, hit


def _leaf_values(kernel: Kernel, n: int, rows: np.ndarray, targets: np.ndarray, weights: np.ndarray,
                 n_targets: int, aggregate: str) -> tuple[np.ndarray, np.ndarray]:
    """(values, hit) [n, n_targets] from weights on (node row, target) pairs."""
    if n * n_targets > MAX_LEAF_TABLE:
        raise kernel.fail(f"{n} nodes x {n_targets} targets is more than the {MAX_LEAF_TABLE} scores edgerun "
                          "tabulates for an ensemble")
    fill = {"MIN": np.inf, "MAX": -np.inf}.get(aggregate, 0.0)
    values = np.full((n, n_targets), fill)
    {"MIN": np.minimum, "MAX": np.maximum}.get(aggregate, np.add).at(values, (rows, targets), weights)
    hit = np.zeros((n, n_targets), bool)
    hit[rows, targets] = True
    return values, hit


def _depth(kernel: Kernel, true_next: np.ndarray, false_next: np.ndarray, leaf: np.ndarray,
           roots: np.ndarray) -> int:
    """The most branch steps from a root to a leaf; ModelError when the nodes form a cycle."""
    frontier = np.unique(roots[~leaf[roots]])
    depth = 0
    while frontier.size:
        depth += 1
        if depth > len(leaf):
            raise kernel.fail(f"the tree nodes form a cycle (node {int(frontier[0])} is reached again)")
        children = np.concatenate([true_next[frontier], false_next[frontier]])
        frontier = np.unique(children[~leaf[children]])
    return depth


def _check_targets(kernel: Kernel, key: str, ids: np.ndarray, count: int) -> None:
    bad = ids[(ids < 0) | (ids >= count)]
    if bad.size:
        raise kernel.fail(f"{key}: {int(bad[0])} is out of range [0, {count})")


def _check_features(kernel: Kernel, forest: Forest, features: int) -> None:
    if forest.max_feature >= features:
        raise kernel.fail(f"nodes_featureids: feature {forest.max_feature} is out of range for X "
                          f"with {features} features")


def _find(sorted_keys: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(positions, found) of `keys` in `sorted_keys`."""
    at = np.clip(np.searchsorted(sorted_keys, keys), 0, max(len(sorted_keys) - 1, 0))
    found = sorted_keys[at] == keys if len(sorted_keys) else np.zeros(len(keys), bool)
    return at, found


class _NodeIndex:
    """Finds nodes by (tree id, node id), as TreeEnsembleClassifier/Regressor name them."""

    def __init__(self, kernel: Kernel, tree_ids: np.ndarray, node_ids: np.ndarray) -> None:
        self.kernel = kernel
        self.trees, self.tree_of = np.unique(tree_ids, return_inverse=True)
        self.ids = np.unique(node_ids)
        keys = self.tree_of * len(self.ids) + np.searchsorted(self.ids, node_ids)
        self.order = np.argsort(keys, kind="stable")
        self.sorted = keys[self.order]
        twice = np.nonzero(self.sorted[1:] == self.sorted[:-1])[0]
        if twice.size:
            i = self.order[twice[0] + 1]
            raise kernel.fail(f"tree {int(tree_ids[i])}: node id {int(node_ids[i])} appears twice")

    def locate(self, tree_ids: np.ndarray, node_ids: np.ndarray, what: str) -> np.ndarray:
        """The node positions of (tree, node) pairs; ModelError naming `what` for a missing one."""
        tree_at, tree_found = _find(self.trees, tree_ids)
        id_at, id_found = _find(self.ids, node_ids)
        at, found = _find(self.sorted, tree_at * len(self.ids) + id_at)
        found &= tree_found & id_found
        if not found.all():
            i = int(np.argmin(found))
            raise self.kernel.fail(f"{what}: tree {int(tree_ids[i])} has no node {int(node_ids[i])}")
        return self.order[at]


def forest_from_ids(kernel: Kernel, prefix: str, n_targets: int, aggregate: str) -> Forest:
    """The Forest of a TreeEnsembleClassifier (`prefix` "class") or Regressor ("target"):
    nodes named by (tree id, node id), weights on leaves named the same way."""
    tree_ids, node_ids = _ints(kernel, "nodes_treeids", True), _ints(kernel, "nodes_nodeids", True)
    feature = _ints(kernel, "nodes_featureids", True)
    modes = _strings(kernel, "nodes_modes")
    true_ids, false_ids = _ints(kernel, "nodes_truenodeids", True), _ints(kernel, "nodes_falsenodeids", True)
    threshold = _floats_or_tensor(kernel, "nodes_values", required=True)
    nan_true = _ints(kernel, "nodes_missing_value_tracks_true")
    nan_true = None if nan_true is not None and nan_true.size == 0 else nan_true
    if modes is None:
        raise kernel.fail("attribute 'nodes_modes' is required")
    n = _same_length(kernel, {"nodes_treeids": tree_ids, "nodes_nodeids": node_ids, "nodes_featureids": feature,
                              "nodes_modes": modes, "nodes_truenodeids": true_ids, "nodes_falsenodeids": false_ids,
                              "nodes_values": threshold, "nodes_missing_value_tracks_true": nan_true})
    if n == 0:
        raise kernel.fail("the ensemble has no nodes")
    unknown = [m for m in modes if m not in MODE_CODES]
    if unknown:
        raise kernel.fail(f"nodes_modes: unknown mode {unknown[0]!r} (expected LEAF or BRANCH_LEQ, BRANCH_LT, "
                          "BRANCH_GTE, BRANCH_GT, BRANCH_EQ, BRANCH_NEQ)")
    mode = np.array([MODE_CODES[m] for m in modes], np.int8)
    leaf = mode == LEAF
    index = _NodeIndex(kernel, tree_ids, node_ids)
    true_next, false_next = np.arange(n), np.arange(n)
    true_next[~leaf] = index.locate(tree_ids[~leaf], true_ids[~leaf], "nodes_truenodeids")
    false_next[~leaf] = index.locate(tree_ids[~leaf], false_ids[~leaf], "nodes_falsenodeids")
    if (feature[~leaf] < 0).any():
        raise kernel.fail(f"nodes_featureids: feature {int(feature[~leaf].min())} is negative")
    _, first = np.unique(index.tree_of, return_index=True)
    roots = np.sort(first)

    w_trees, w_nodes = _ints(kernel, f"{prefix}_treeids", True), _ints(kernel, f"{prefix}_nodeids", True)
    w_targets, weights = _ints(kernel, f"{prefix}_ids", True), _floats_or_tensor(kernel, f"{prefix}_weights", True)
    _same_length(kernel, {f"{prefix}_treeids": w_trees, f"{prefix}_nodeids": w_nodes, f"{prefix}_ids": w_targets,
                          f"{prefix}_weights": weights})
    _check_targets(kernel, f"{prefix}_ids", w_targets, n_targets)
    rows = index.locate(w_trees, w_nodes, f"{prefix}_nodeids")
    on_leaf = leaf[rows]  # weights on branch nodes are ignored, as onnxruntime ignores them
    values, hit = _leaf_values(kernel, n, rows[on_leaf], w_targets[on_leaf], weights[on_leaf], n_targets, aggregate)
    return Forest(
        feature=np.where(leaf, 0, feature), threshold=threshold, mode=mode, true_next=true_next,
        false_next=false_next, nan_true=np.zeros(n, bool) if nan_true is None else nan_true.astype(bool),
        members={}, roots=roots, values=values, hit=hit,
        depth=_depth(kernel, true_next, false_next, leaf, roots),
        max_feature=int(feature[~leaf].max(initial=-1)))


def _compare_dtype(x: np.dtype, threshold: np.dtype) -> np.dtype:
    """Rows and thresholds are compared in float32 unless either is double (int rows are
    converted, as onnxruntime converts them)."""
    return F64 if F64 in (x, threshold) else F32


class _TreeKernel(Kernel):
    """What the tree ensembles share: a Forest built at prepare, cast to the compare dtype."""

    forest: Forest | None = None
    threshold_dtype = F32

    def forest_for(self, x: TensorSpec, features: int) -> Forest:
        if self.forest is None:
            self.forest = self.build()
        _check_features(self, self.forest, features)
        self.compare_dtype = _compare_dtype(x.dtype, self.threshold_dtype)
        return self.forest.with_dtype(self.compare_dtype)

    def build(self) -> Forest:
        raise NotImplementedError

    def rows(self, x: np.ndarray) -> np.ndarray:
        return x.reshape(-1, x.shape[-1]).astype(self.compare_dtype, copy=False)

    def tensor_dtype(self, key: str) -> np.dtype:
        value = self.attr(f"{key}_as_tensor")
        return F64 if isinstance(value, np.ndarray) and value.dtype == F64 else F32


@register("TreeEnsembleRegressor", since=1, domain=ML)
@register("TreeEnsembleRegressor", since=3, domain=ML)
class TreeEnsembleRegressor(_TreeKernel):
    """X [N, F] or [F] (float, double, int32, int64) -> Y float [N, n_targets]: each tree's
    leaf weights (target_ids, target_weights) combined over the trees by aggregate_function
    (SUM default, AVERAGE, MIN, MAX), plus base_values, then post_transform. Opset 3 adds the
    double-precision *_as_tensor attributes. ModelError at prepare for malformed trees."""

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        rows, features = _features(self, inputs[0])
        self.n_targets = int_attr(self, "n_targets", 0)
        if self.n_targets < 1:
            raise self.fail(f"attribute 'n_targets' must be at least 1, got {self.n_targets}")
        self.aggregate = _choice(self, "aggregate_function", "SUM", AGGREGATES)
        self.transform = _choice(self, "post_transform", "NONE", TRANSFORMS)
        self.base = _floats_or_tensor(self, "base_values")
        if self.base is not None and len(self.base) not in (0, self.n_targets):
            raise self.fail(f"base_values has {len(self.base)} values, expected {self.n_targets} (n_targets)")
        self.threshold_dtype = self.tensor_dtype("nodes_values")
        self.prepared = self.forest_for(inputs[0], features)
        return [TensorSpec(F32, (rows, self.n_targets))]

    def build(self) -> Forest:
        return forest_from_ids(self, "target", self.n_targets, self.aggregate)

    def run(self, inputs, outputs):
        scores, _ = self.prepared.scores(self.rows(inputs[0]), self.aggregate)
        if self.base is not None and self.base.size:
            scores += self.base
        outputs[0][...] = post_transform(scores, self.transform)


@register("TreeEnsembleClassifier", since=1, domain=ML)
@register("TreeEnsembleClassifier", since=3, domain=ML)
class TreeEnsembleClassifier(_TreeKernel):
    """X [N, F] or [F] (float, double, int32, int64) -> (Y int64 [N], Z float [N, C]): the
    summed leaf weights per class (class_ids, class_weights) plus base_values, labelled from
    classlabels_int64s (string labels are refused).

    With more than two classes (or two that both have weights) Y is the class with the
    highest score among those some leaf or base value scored and Z the scores after
    post_transform. With two classes and weights for one class id only (skl2onnx's binary
    trees), the summed weight s (plus base_values[0]) is the positive class's score: Z as
    `binary_scores` writes it (NONE or LOGISTIC) and Y positive when s > 0.5 (NONE with all
    weights >= 0) or s > 0. Opset 3 adds the *_as_tensor attributes.
    """

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        rows, features = _features(self, inputs[0])
        self.labels = _class_labels(self, "classlabels_int64s", "classlabels_strings")
        if len(self.labels) < 2:
            raise self.fail(f"classlabels_int64s has {len(self.labels)} label, at least 2 are needed")
        self.transform = _choice(self, "post_transform", "NONE", TRANSFORMS)
        self.base = _floats_or_tensor(self, "base_values")
        self.base = np.zeros(0) if self.base is None else self.base
        class_ids = _ints(self, "class_ids", True)
        self.binary = len(self.labels) == 2 and len(np.unique(class_ids)) == 1
        if self.binary and len(self.base) not in (0, 1):
            raise self.fail(f"base_values has {len(self.base)} values; a binary ensemble that scores one class "
                            "takes 0 or 1")
        if not self.binary and len(self.base) not in (0, len(self.labels)):
            raise self.fail(f"base_values has {len(self.base)} values, expected {len(self.labels)} (one per class)")
        if self.binary:
            _require_binary_transform(self, self.transform, "a binary ensemble that scores one class")
        weights = _floats_or_tensor(self, "class_weights", True)
        self.all_positive = bool((weights >= 0).all())
        self.threshold_dtype = self.tensor_dtype("nodes_values")
        self.prepared = self.forest_for(inputs[0], features)
        return [TensorSpec(I64, (rows,)), TensorSpec(F32, (rows, len(self.labels)))]

    def build(self) -> Forest:
        return forest_from_ids(self, "class", len(self.labels), "SUM")

    def run(self, inputs, outputs):
        scores, hit = self.prepared.scores(self.rows(inputs[0]), "SUM")
        if self.binary:
            s = scores.sum(axis=1) + (self.base[0] if self.base.size else 0.0)  # one class has weights
            cut = 0.5 if self.all_positive and self.transform == "NONE" else 0.0
            label = self.labels[(s > cut).astype(np.int64)]
            z = binary_scores(s, self.transform, self.all_positive)
        else:
            if self.base.size:
                scores += self.base
                hit[...] = True
            label = self.labels[np.argmax(np.where(hit, scores, -np.inf), axis=1)]
            z = post_transform(scores, self.transform)
        outputs[0][...] = label
        if len(outputs) > 1:
            outputs[1][...] = z


def _flags(kernel: Kernel, key: str, array: np.ndarray) -> np.ndarray:
    if array.size and not np.isin(array, (0, 1)).all():
        raise kernel.fail(f"{key}: expected 0 or 1 per node, got {int(array[~np.isin(array, (0, 1))][0])}")
    return array.astype(bool)


def _child_ids(kernel: Kernel, key: str, ids: np.ndarray, is_leaf: np.ndarray, nodes: int, leaves: int) -> np.ndarray:
    """Children as positions in nodes + leaves (leaf l at nodes + l); ModelError out of range."""
    limit = np.where(is_leaf, leaves, nodes)
    bad = (ids < 0) | (ids >= limit)
    if bad.any():
        i = int(np.argmax(bad))
        kind = "leaf" if is_leaf[i] else "node"
        raise kernel.fail(f"{key}: node {i} points to {kind} {int(ids[i])}, out of range [0, {int(limit[i])})")
    return np.where(is_leaf, nodes + ids, ids)


def _member_sets(kernel: Kernel, mode: np.ndarray) -> dict[int, np.ndarray]:
    """BRANCH_MEMBER node -> its set: membership_values lists the sets in node order, each
    ended by a NaN."""
    nodes = np.nonzero(mode == MEMBER)[0]
    values = _floats(kernel, "membership_values")
    if not nodes.size:
        return {}
    if values is None:
        raise kernel.fail(f"{nodes.size} BRANCH_MEMBER nodes need attribute 'membership_values'")
    ends = np.nonzero(np.isnan(values))[0]
    if len(ends) != nodes.size or not np.isnan(values[-1]):
        raise kernel.fail(f"membership_values holds {len(ends)} NaN-terminated sets; the {nodes.size} "
                          "BRANCH_MEMBER nodes need one each")
    sets = np.split(values, ends + 1)[:-1]
    return {int(node): np.unique(members[:-1]) for node, members in zip(nodes, sets, strict=True)}


def forest_from_arrays(kernel: Kernel, n_targets: int, aggregate: str) -> Forest:
    """The Forest of a TreeEnsemble (opset 5): interior nodes by position, children flagged
    as nodes or leaves, one (target, weight) per leaf."""
    feature, splits = _ints(kernel, "nodes_featureids", True), _floats(kernel, "nodes_splits", True)
    mode = _ints(kernel, "nodes_modes", True)
    true_ids, false_ids = _ints(kernel, "nodes_truenodeids", True), _ints(kernel, "nodes_falsenodeids", True)
    true_leaf, false_leaf = _ints(kernel, "nodes_trueleafs", True), _ints(kernel, "nodes_falseleafs", True)
    nan_true = _ints(kernel, "nodes_missing_value_tracks_true")
    nan_true = None if nan_true is not None and nan_true.size == 0 else nan_true
    roots = _ints(kernel, "tree_roots", True)
    targets, weights = _ints(kernel, "leaf_targetids", True), _floats(kernel, "leaf_weights", True)
    n = _same_length(kernel, {"nodes_featureids": feature, "nodes_splits": splits, "nodes_modes": mode,
                              "nodes_truenodeids": true_ids, "nodes_falsenodeids": false_ids,
                              "nodes_trueleafs": true_leaf, "nodes_falseleafs": false_leaf,
                              "nodes_missing_value_tracks_true": nan_true})
    leaves = _same_length(kernel, {"leaf_targetids": targets, "leaf_weights": weights})
    if n == 0 or roots.size == 0:
        raise kernel.fail("the ensemble has no nodes (or no tree_roots)")
    if ((mode < 0) | (mode > MEMBER)).any():
        raise kernel.fail(f"nodes_modes: {int(mode[(mode < 0) | (mode > MEMBER)][0])} is not a mode (0..6)")
    if ((roots < 0) | (roots >= n)).any():
        raise kernel.fail(f"tree_roots: node {int(roots[(roots < 0) | (roots >= n)][0])} is out of range [0, {n})")
    if (feature < 0).any():
        raise kernel.fail(f"nodes_featureids: feature {int(feature.min())} is negative")
    _check_targets(kernel, "leaf_targetids", targets, n_targets)
    true_next = _child_ids(kernel, "nodes_truenodeids", true_ids, _flags(kernel, "nodes_trueleafs", true_leaf),
                           n, leaves)
    false_next = _child_ids(kernel, "nodes_falsenodeids", false_ids, _flags(kernel, "nodes_falseleafs", false_leaf),
                            n, leaves)
    own = np.arange(n, n + leaves)
    true_next, false_next = np.concatenate([true_next, own]), np.concatenate([false_next, own])
    all_modes = np.concatenate([mode, np.full(leaves, LEAF)]).astype(np.int8)
    values, hit = _leaf_values(kernel, n + leaves, own, targets, weights, n_targets, aggregate)
    nan = np.zeros(n + leaves, bool)
    nan[:n] = False if nan_true is None else _flags(kernel, "nodes_missing_value_tracks_true", nan_true)
    return Forest(
        feature=np.concatenate([feature, np.zeros(leaves, np.int64)]),
        threshold=np.concatenate([splits, np.zeros(leaves)]), mode=all_modes, true_next=true_next,
        false_next=false_next, nan_true=nan, members=_member_sets(kernel, mode), roots=roots, values=values, hit=hit,
        depth=_depth(kernel, true_next, false_next, all_modes == LEAF, roots), max_feature=int(feature.max()))


@register("TreeEnsemble", since=5, domain=ML)
class TreeEnsemble(_TreeKernel):
    """X [N, F] or [F] (float16, float, double) -> Y [N, n_targets] in X's dtype: each tree's
    leaf weight (leaf_targetids, leaf_weights) combined over the trees by aggregate_function
    (0 AVERAGE, 1 SUM default, 2 MIN, 3 MAX), then post_transform (0 NONE, 1 SOFTMAX,
    2 LOGISTIC, 3 SOFTMAX_ZERO, 4 PROBIT). Nodes compare with modes 0..5 (LEQ, LT, GTE, GT,
    EQ, NEQ) or 6 (BRANCH_MEMBER: in its membership_values set). ModelError at prepare for
    malformed trees."""

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = inputs[0]
        if x.dtype not in (np.dtype(np.float16), F32, F64):
            raise self.fail(f"X: expected a float16, float or double tensor, got {x.dtype}")
        rows, features = _features(self, x, "f")
        self.n_targets = int_attr(self, "n_targets", 0)
        if self.n_targets < 1:
            raise self.fail(f"attribute 'n_targets' must be at least 1, got {self.n_targets}")
        aggregate, transform = int_attr(self, "aggregate_function", 1), int_attr(self, "post_transform", 0)
        if not 0 <= aggregate < len(AGGREGATES) or not 0 <= transform < len(TRANSFORMS):
            raise self.fail(f"aggregate_function {aggregate} (0..3) or post_transform {transform} (0..4) is "
                            "out of range")
        self.aggregate, self.transform = AGGREGATES[aggregate], TRANSFORMS[transform]
        splits = self.attr("nodes_splits")
        self.threshold_dtype = F64 if isinstance(splits, np.ndarray) and splits.dtype == F64 else F32
        self.prepared = self.forest_for(x, features)
        return [TensorSpec(x.dtype, (rows, self.n_targets))]

    def build(self) -> Forest:
        return forest_from_arrays(self, self.n_targets, self.aggregate)

    def run(self, inputs, outputs):
        scores, _ = self.prepared.scores(self.rows(inputs[0]), self.aggregate)
        outputs[0][...] = post_transform(scores, self.transform)


# --- linear models and SVMs -------------------------------------------------------------------


def _as_rows(x: np.ndarray) -> np.ndarray:
    return x.reshape(-1, x.shape[-1]).astype(F64)


def _linear_weights(kernel: Kernel, features: int, targets: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(coefficients [targets, F], intercepts [targets]); `targets` None: len(intercepts)
    or len(coefficients) / F."""
    coef, intercepts = _floats(kernel, "coefficients", True), _floats(kernel, "intercepts")
    intercepts = None if intercepts is not None and intercepts.size == 0 else intercepts
    if targets is None:
        targets = len(intercepts) if intercepts is not None else coef.size // max(features, 1)
    if targets < 1 or coef.size != targets * features:
        raise kernel.fail(f"coefficients has {coef.size} values, expected {max(targets, 1)} x {features} "
                          "(targets x X's features)")
    if intercepts is not None and len(intercepts) != targets:
        raise kernel.fail(f"intercepts has {len(intercepts)} values, expected {targets}")
    return coef.reshape(targets, features), np.zeros(targets) if intercepts is None else intercepts


@register("LinearClassifier", since=1, domain=ML)
class LinearClassifier(Kernel):
    """X [N, F] or [F] (float, double, int32, int64) -> (Y int64 [N], Z float [N, C]): scores
    X @ coefficients^T + intercepts, one column per class (C = len(intercepts)); Y is the
    label (classlabels_ints) of the highest score and Z the scores after post_transform. One
    score column with two labels is binary: Y is the second label when s > 0 and Z is
    `binary_scores(s)` with [1 - s, s] for NONE. String labels are refused."""

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        rows, features = _features(self, inputs[0])
        self.labels = _class_labels(self, "classlabels_ints", "classlabels_strings")
        self.transform = _choice(self, "post_transform", "NONE", TRANSFORMS)
        self.coef, self.intercepts = _linear_weights(self, features, None)
        classes = len(self.intercepts)
        if classes == 1:
            if len(self.labels) != 2:
                raise self.fail(f"one score column needs 2 class labels, classlabels_ints has {len(self.labels)}")
            _require_binary_transform(self, self.transform, "a binary linear classifier with one score column")
        elif len(self.labels) != classes:
            raise self.fail(f"classlabels_ints has {len(self.labels)} labels for {classes} score columns")
        return [TensorSpec(I64, (rows,)), TensorSpec(F32, (rows, max(classes, 2)))]

    def run(self, inputs, outputs):
        scores = _as_rows(inputs[0]) @ self.coef.T + self.intercepts
        if scores.shape[1] == 1:
            s = scores[:, 0]
            label, z = self.labels[(s > 0).astype(np.int64)], binary_scores(s, self.transform, True)
        else:
            label, z = self.labels[np.argmax(scores, axis=1)], post_transform(scores, self.transform)
        outputs[0][...] = label
        if len(outputs) > 1:
            outputs[1][...] = z


@register("LinearRegressor", since=1, domain=ML)
class LinearRegressor(Kernel):
    """X [N, F] or [F] (float, double, int32, int64) -> Y float [N, targets] = post_transform(
    X @ coefficients^T + intercepts); coefficients hold `targets` (default 1) rows of F."""

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        rows, features = _features(self, inputs[0])
        targets = int_attr(self, "targets", 1)
        if targets < 1:
            raise self.fail(f"attribute 'targets' must be at least 1, got {targets}")
        self.transform = _choice(self, "post_transform", "NONE", TRANSFORMS)
        self.coef, self.intercepts = _linear_weights(self, features, targets)
        return [TensorSpec(F32, (rows, targets))]

    def run(self, inputs, outputs):
        outputs[0][...] = post_transform(_as_rows(inputs[0]) @ self.coef.T + self.intercepts, self.transform)


SVM_KERNELS = ("LINEAR", "POLY", "RBF", "SIGMOID")


def _svm_kernel_params(kernel: Kernel) -> tuple[str, tuple[float, float, float]]:
    kind = _choice(kernel, "kernel_type", "LINEAR", SVM_KERNELS)
    params = _floats(kernel, "kernel_params")
    if params is None or params.size == 0:
        return kind, (0.0, 0.0, 0.0)
    if params.size != 3:
        raise kernel.fail(f"kernel_params: expected [gamma, coef0, degree], got {params.size} values")
    return kind, (float(params[0]), float(params[1]), float(params[2]))


def svm_kernel(kind: str, params: tuple[float, float, float], x: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """k(x, v) for each row of x [N, F] and support vector [V, F]: LINEAR x.v, POLY
    (gamma x.v + coef0)^degree, RBF exp(-gamma |x - v|^2), SIGMOID tanh(gamma x.v + coef0)."""
    gamma, coef0, degree = params
    if kind == "RBF":
        dist = (x * x).sum(axis=1)[:, None] + (vectors * vectors).sum(axis=1)[None, :] - 2 * (x @ vectors.T)
        return np.exp(-gamma * np.maximum(dist, 0))
    dot = x @ vectors.T
    if kind == "POLY":
        with np.errstate(invalid="ignore"):
            return (gamma * dot + coef0) ** degree
    if kind == "SIGMOID":
        return np.tanh(gamma * dot + coef0)
    return dot


def couple_pairwise(r: np.ndarray) -> np.ndarray:
    """Class probabilities [N, k] from pairwise ones r [N, k, k] (r[:, i, j] = P(i | i or j)):
    the iterative method of Wu, Lin and Weng (2004) as libsvm runs it (at most max(100, k)
    sweeps, stopping at an error below 0.005 / k), over all rows at once."""
    n, k, _ = r.shape
    r = r * (1 - np.eye(k))
    rt = r.transpose(0, 2, 1)
    q = -rt * r
    q[:, np.arange(k), np.arange(k)] = (rt * rt).sum(axis=2)
    p = np.full((n, k), 1 / k)
    active = np.ones(n, bool)
    for _ in range(max(100, k)):
        qp = np.einsum("ntj,nj->nt", q, p)
        pqp = (p * qp).sum(axis=1)
        active &= np.abs(qp - pqp[:, None]).max(axis=1) >= 0.005 / k
        if not active.any():
            break
        for t in range(k):
            diff = np.where(active, (pqp - qp[:, t]) / q[:, t, t], 0.0)
            p[:, t] += diff
            pqp = (pqp + diff * (diff * q[:, t, t] + 2 * qp[:, t])) / (1 + diff) / (1 + diff)
            qp = (qp + diff[:, None] * q[:, t, :]) / (1 + diff)[:, None]
            p /= (1 + diff)[:, None]
    return p


@register("SVMClassifier", since=1, domain=ML)
class SVMClassifier(Kernel):
    """X [N, F] or [F] (float, double, int32, int64) -> (Y int64 [N], Z float).

    With support vectors (vectors_per_class, libsvm's one-vs-one SVC): each class pair
    (i, j) scores s = the kernel values of both classes' vectors times their coefficients
    plus rho; s > 0 votes for i, else for j, and Y is the label with the most votes. Z is,
    with prob_a/prob_b, the class probabilities (Platt-scaled pairs coupled as libsvm does)
    [N, C]; without, the pair scores [N, C(C-1)/2], or [-s, s] for two classes. Without
    support vectors (liblinear) the scores are X @ coefficients^T + rho[0], one per class,
    and Y is the highest. Z goes through post_transform. String labels are refused."""

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        rows, features = _features(self, inputs[0])
        self.labels = _class_labels(self, "classlabels_ints", "classlabels_strings")
        classes = len(self.labels)
        if classes < 2:
            raise self.fail(f"classlabels_ints has {classes} label, at least 2 are needed")
        self.transform = _choice(self, "post_transform", "NONE", TRANSFORMS)
        self.kind, self.params = _svm_kernel_params(self)
        coef, self.rho = _floats(self, "coefficients", True), _floats(self, "rho", True)
        per_class = _ints(self, "vectors_per_class")
        self.vectors = 0 if per_class is None else int(per_class.sum())
        if self.vectors == 0:
            if coef.size != classes * features or self.rho.size == 0:
                raise self.fail(f"coefficients has {coef.size} values, expected {classes} x {features} (classes x "
                                "X's features), and rho one value")
            self.coef = coef.reshape(classes, features)
            return [TensorSpec(I64, (rows,)), TensorSpec(F32, (rows, classes))]
        pairs = classes * (classes - 1) // 2
        self._check_svc(per_class, coef, features, pairs)
        self.starts = np.concatenate([[0], np.cumsum(per_class)])
        self.coef = coef.reshape(classes - 1, self.vectors)
        if self.prob_a is None and classes == 2:
            _require_binary_transform(self, self.transform, "a binary SVM without probabilities")
        columns = classes if self.prob_a is not None else pairs if classes > 2 else 2
        return [TensorSpec(I64, (rows,)), TensorSpec(F32, (rows, columns))]

    def _check_svc(self, per_class: np.ndarray, coef: np.ndarray, features: int, pairs: int) -> None:
        classes = len(self.labels)
        sv = _floats(self, "support_vectors", True)
        self.prob_a, prob_b = _floats(self, "prob_a"), _floats(self, "prob_b")
        self.prob_a = None if self.prob_a is not None and self.prob_a.size == 0 else self.prob_a
        prob_b = None if prob_b is not None and prob_b.size == 0 else prob_b
        problems = [
            (len(per_class) != classes or (per_class < 0).any(), f"vectors_per_class {per_class.tolist()} needs "
                                                                   f"one count >= 0 per class ({classes})"),
            (sv.size != self.vectors * features, f"support_vectors has {sv.size} values, expected {self.vectors} "
                                                  f"vectors x {features} features"),
            (coef.size != (classes - 1) * self.vectors, f"coefficients has {coef.size} values, expected "
                                                         f"{classes - 1} x {self.vectors} (classes - 1 x vectors)"),
            (self.rho.size != pairs, f"rho has {self.rho.size} values, expected {pairs} (one per class pair)"),
            ((self.prob_a is None) != (prob_b is None)
             or (self.prob_a is not None and not len(self.prob_a) == len(prob_b) == pairs),
             f"prob_a and prob_b need {pairs} values each (one per class pair) or none"),
        ]
        for bad, message in problems:
            if bad:
                raise self.fail(message)
        self.support, self.prob_b = sv.reshape(self.vectors, features), prob_b

    def run(self, inputs, outputs):
        x = _as_rows(inputs[0])
        if self.vectors == 0:
            scores = x @ self.coef.T + self.rho[0]
            label, z = self.labels[np.argmax(scores, axis=1)], post_transform(scores, self.transform)
        else:
            label, z = self._run_svc(x)
        outputs[0][...] = label
        if len(outputs) > 1:
            outputs[1][...] = z

    def _run_svc(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k = svm_kernel(self.kind, self.params, x, self.support)
        classes, s = len(self.labels), self.starts
        scores = np.zeros((len(x), classes * (classes - 1) // 2))
        votes = np.zeros((len(x), classes), np.int64)
        pair = 0
        for i in range(classes):
            for j in range(i + 1, classes):
                si, sj = slice(s[i], s[i + 1]), slice(s[j], s[j + 1])
                score = k[:, si] @ self.coef[j - 1, si] + k[:, sj] @ self.coef[i, sj] + self.rho[pair]
                scores[:, pair] = score
                votes[:, i] += score > 0
                votes[:, j] += score <= 0
                pair += 1
        label = self.labels[np.argmax(votes, axis=1)]
        if self.prob_a is not None:
            return label, post_transform(self._probabilities(scores), self.transform)
        if classes == 2:
            return label, np.concatenate([-scores, scores], axis=1)
        return label, post_transform(scores, self.transform)

    def _probabilities(self, scores: np.ndarray) -> np.ndarray:
        classes = len(self.labels)
        upper = np.clip(logistic(-(scores * self.prob_a + self.prob_b)), 1e-7, 1 - 1e-7)
        r = np.zeros((len(scores), classes, classes))
        i, j = np.triu_indices(classes, 1)
        r[:, i, j], r[:, j, i] = upper, 1 - upper
        return couple_pairwise(r)


@register("SVMRegressor", since=1, domain=ML)
class SVMRegressor(Kernel):
    """X [N, F] or [F] (float, double, int32, int64) -> Y float [N, 1]: the kernel values of
    the n_supports support vectors times the coefficients, plus rho[0] (without support
    vectors: X @ coefficients + rho[0]); one_class=1 maps it to 1 (> 0) or -1; then
    post_transform."""

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        rows, features = _features(self, inputs[0])
        self.transform = _choice(self, "post_transform", "NONE", TRANSFORMS)
        self.kind, self.params = _svm_kernel_params(self)
        self.one_class = flag_attr(self, "one_class", 0)
        self.coef, self.rho = _floats(self, "coefficients", True), _floats(self, "rho", True)
        self.vectors = int_attr(self, "n_supports", 0)
        if self.rho.size == 0 or self.vectors < 0:
            raise self.fail(f"rho needs a value and n_supports must be >= 0, got {self.vectors}")
        if self.vectors:
            sv = _floats(self, "support_vectors", True)
            if sv.size != self.vectors * features or self.coef.size != self.vectors:
                raise self.fail(f"support_vectors has {sv.size} values and coefficients {self.coef.size}; "
                                f"expected {self.vectors} x {features} and {self.vectors} (n_supports)")
            self.support = sv.reshape(self.vectors, features)
        elif self.coef.size != features:
            raise self.fail(f"coefficients has {self.coef.size} values, expected {features} (X's features)")
        return [TensorSpec(F32, (rows, 1))]

    def run(self, inputs, outputs):
        x = _as_rows(inputs[0])
        k = svm_kernel(self.kind, self.params, x, self.support) if self.vectors else x
        score = k @ self.coef + self.rho[0]
        if self.one_class:
            score = np.where(score > 0, 1.0, -1.0)
        outputs[0][...] = post_transform(score[:, None], self.transform)


# --- preprocessing ----------------------------------------------------------------------------


def _per_feature(kernel: Kernel, key: str, array: np.ndarray, features: int) -> np.ndarray:
    if len(array) not in (1, features):
        raise kernel.fail(f"{key} has {len(array)} values, expected 1 or {features} (X's last dimension)")
    return array


@register("Scaler", since=1, domain=ML)
class Scaler(Kernel):
    """Y float = (X - offset) * scale along X's last axis (offset and scale: 1 value or one
    per feature; absent: 0 and 1). X: float, double, int32, int64, rank >= 1."""

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = inputs[0]
        require_kind(self, x, FEATURE_KINDS, "X")
        require_rank(self, x, 1, what="X")
        offset, scale = _floats(self, "offset"), _floats(self, "scale")
        offset = np.zeros(1) if offset is None or offset.size == 0 else offset
        scale = np.ones(1) if scale is None or scale.size == 0 else scale
        self.offset = _per_feature(self, "offset", offset, x.shape[-1])
        self.scale = _per_feature(self, "scale", scale, x.shape[-1])
        return [TensorSpec(F32, x.shape)]

    def run(self, inputs, outputs):
        outputs[0][...] = (inputs[0].astype(F64) - self.offset) * self.scale


@register("Normalizer", since=1, domain=ML)
class Normalizer(Kernel):
    """Y float = X divided, along the last axis, by its max (norm MAX, default), its sum of
    absolute values (L1) or its Euclidean length (L2); a row whose divisor is 0 is copied."""

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        require_kind(self, inputs[0], FEATURE_KINDS, "X")
        require_rank(self, inputs[0], 1, what="X")
        self.norm = _choice(self, "norm", "MAX", ("MAX", "L1", "L2"))
        return [TensorSpec(F32, inputs[0].shape)]

    def run(self, inputs, outputs):
        x = inputs[0].astype(F64)
        if x.size == 0:
            return
        if self.norm == "MAX":
            d = x.max(axis=-1, keepdims=True)
        elif self.norm == "L1":
            d = np.abs(x).sum(axis=-1, keepdims=True)
        else:
            d = np.sqrt((x * x).sum(axis=-1, keepdims=True))
        outputs[0][...] = np.divide(x, d, out=x.copy(), where=d != 0)


@register("Binarizer", since=1, domain=ML)
class Binarizer(Kernel):
    """Y = 1 where X > threshold (default 0), else 0 (NaN too), in X's dtype (float, double,
    int32, int64)."""

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        require_kind(self, inputs[0], FEATURE_KINDS, "X")
        self.threshold = float_attr(self, "threshold", 0.0)
        return [inputs[0]]

    def run(self, inputs, outputs):
        outputs[0][...] = inputs[0] > self.threshold


@register("Imputer", since=1, domain=ML)
class Imputer(Kernel):
    """Y = X with each element equal to the replaced value (NaN matches NaN) set to the
    imputed value of its feature (last axis; 1 value or one per feature): float X uses
    replaced_value_float / imputed_value_floats, int X replaced_value_int64 /
    imputed_value_int64s. Y has X's dtype."""

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = inputs[0]
        require_kind(self, x, FEATURE_KINDS, "X")
        require_rank(self, x, 1, what="X")
        kind = "floats" if x.dtype.kind == "f" else "int64s"
        other = "int64s" if kind == "floats" else "floats"
        imputed = _floats(self, f"imputed_value_{kind}") if kind == "floats" else _ints(self, "imputed_value_int64s")
        if imputed is None or imputed.size == 0:
            raise self.fail(f"{x.dtype} X needs attribute 'imputed_value_{kind}'"
                            + (f" (the model sets 'imputed_value_{other}')" if self.attr(f"imputed_value_{other}")
                               else ""))
        if kind == "int64s":
            info = np.iinfo(x.dtype)
            if imputed.min() < info.min or imputed.max() > info.max:
                raise self.fail(f"imputed_value_int64s: a value does not fit X's {x.dtype}")
            self.replaced = int_attr(self, "replaced_value_int64", 0)
        else:
            self.replaced = float_attr(self, "replaced_value_float", 0.0)
        self.imputed = _per_feature(self, f"imputed_value_{kind}", imputed, x.shape[-1]).astype(x.dtype)
        return [x]

    def run(self, inputs, outputs):
        x = inputs[0]
        match = np.isnan(x) if isinstance(self.replaced, float) and np.isnan(self.replaced) else x == self.replaced
        outputs[0][...] = np.where(match, self.imputed, x)


@register("OneHotEncoder", since=1, domain=ML)
class OneHotEncoder(Kernel):
    """Y float [*X.shape, C]: 1 at the position of each element's category in cats_int64s
    (float X is truncated to an integer first), all zeros for an unknown value with zeros=1
    (default), a ModelError at run with zeros=0. String categories are refused."""

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        _refuse_strings(self, "cats_strings")
        require_kind(self, inputs[0], FEATURE_KINDS, "X")
        cats = _ints(self, "cats_int64s")
        if cats is None or cats.size == 0:
            raise self.fail(f"attribute 'cats_int64s' is required (string categories: {NO_STRINGS})")
        self.zeros = flag_attr(self, "zeros", 1)
        self.cats, self.first = np.unique(cats, return_index=True)
        return [TensorSpec(F32, (*inputs[0].shape, len(cats)))]

    def run(self, inputs, outputs):
        x = inputs[0].reshape(-1)
        if x.dtype.kind == "f":
            valid = np.isfinite(x) & (np.abs(x) < 2.0**63)
            x = np.where(valid, np.trunc(np.where(valid, x, 0)), 0).astype(np.int64)
        else:
            valid = np.ones(x.shape, bool)
        at, found = _find(self.cats, x)
        found &= valid
        if not self.zeros and not found.all():
            raise self.fail(f"value {inputs[0].reshape(-1)[np.argmin(found)]} is not in cats_int64s (zeros=0)")
        out = outputs[0].reshape(-1, outputs[0].shape[-1])
        out[...] = 0
        out[np.nonzero(found)[0], self.first[at[found]]] = 1


@register("ArrayFeatureExtractor", since=1, domain=ML)
class ArrayFeatureExtractor(Kernel):
    """(X, Y int) -> Z = X[..., Y] (Y flattened; each index in [0, X's last dimension)).
    Z has shape [*X.shape[:-1], Y.size], [1, Y.size] for 1-D X (as onnxruntime)."""

    min_inputs = max_inputs = 2

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x, y = inputs
        require_kind(self, x, FEATURE_KINDS + "u", "X")
        require_rank(self, x, 1, what="X")
        require_kind(self, y, "iu", "Y")
        if values[1] is not None:
            self._indices(values[1], x.shape[-1])
        lead = (1,) if len(x.shape) == 1 else x.shape[:-1]
        return [TensorSpec(x.dtype, (*lead, y.size))]

    def _indices(self, y: np.ndarray, size: int) -> np.ndarray:
        idx = y.reshape(-1).astype(np.int64)
        bad = idx[(idx < 0) | (idx >= size)]
        if bad.size:
            raise self.fail(f"Y: index {int(bad[0])} is out of range [0, {size})")
        return idx

    def run(self, inputs, outputs):
        x, y = inputs
        outputs[0][...] = np.take(x, self._indices(y, x.shape[-1]), axis=-1).reshape(outputs[0].shape)


@register("LabelEncoder", since=1, domain=ML)
class LabelEncoderStrings(Kernel):
    """LabelEncoder opset 1 maps strings to integers and back: refused (no string tensors)."""

    def prepare(self, inputs, values):
        raise self.fail(f"LabelEncoder opset 1 maps between strings and integers: {NO_STRINGS} "
                        "(opset 2 and later map numbers to numbers)")


def _table(kernel: Kernel, side: str) -> np.ndarray:
    """The keys or values (`side`) of a LabelEncoder: keys_int64s (int64), keys_floats
    (float32) or, from opset 4, keys_tensor (its dtype); exactly one."""
    _refuse_strings(kernel, f"{side}_strings")
    found = [(k, kernel.attr(k)) for k in (f"{side}_int64s", f"{side}_floats", f"{side}_tensor")
             if kernel.attr(k) is not None]
    if len(found) != 1:
        raise kernel.fail(f"expected exactly one of {side}_int64s, {side}_floats, {side}_tensor, got "
                          f"{[k for k, _ in found] or 'none'}")
    key, value = found[0]
    if key.endswith("_tensor"):
        if kernel.version < 4:
            raise kernel.fail(f"attribute {key!r} needs ai.onnx.ml opset 4, the model uses {kernel.version}")
        if not isinstance(value, np.ndarray) or value.dtype.kind not in "iuf":
            raise kernel.fail(f"{key}: expected a numeric tensor ({NO_STRINGS})")
        return value.reshape(-1)
    return _ints(kernel, key) if key.endswith("int64s") else _floats(kernel, key).astype(F32)


@register("LabelEncoder", since=2, domain=ML)
@register("LabelEncoder", since=4, domain=ML)
class LabelEncoder(Kernel):
    """Y[i] = the value paired with the key equal to X[i] (keys_* and values_* in the same
    order; a repeated key: its last pair), the default where no key matches (default_int64,
    -1 / default_float, -0.0 / from opset 4 default_tensor). Numeric keys and values only
    (int64s, floats, or opset 4's tensors of any numeric type); X's dtype must be the keys'.
    A NaN key matches every NaN; 0.0 and -0.0 are the same key."""

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        keys, table = _table(self, "keys"), _table(self, "values")
        if len(keys) != len(table):
            raise self.fail(f"keys has {len(keys)} entries and values {len(table)}: they pair up one to one")
        if inputs[0].dtype != keys.dtype:
            raise self.fail(f"X is {inputs[0].dtype} but the keys are {keys.dtype}")
        self.default = self._default(table.dtype)
        nan = np.isnan(keys) if keys.dtype.kind == "f" else np.zeros(len(keys), bool)
        self.nan_value = table[nan][-1] if nan.any() else None
        self.keys, first = np.unique(keys[~nan][::-1], return_index=True)
        self.values = table[~nan][::-1][first]
        return [TensorSpec(table.dtype, inputs[0].shape)]

    def _default(self, dtype: np.dtype) -> np.ndarray:
        tensor = self.attr("default_tensor")
        if isinstance(tensor, np.ndarray):
            if tensor.size != 1 or tensor.dtype != dtype:
                raise self.fail(f"default_tensor: expected one {dtype} value, got {tensor.dtype} {tensor.shape}")
            return tensor.reshape(())
        if dtype.kind == "f":
            return np.array(float_attr(self, "default_float", -0.0), dtype)
        value = int_attr(self, "default_int64", -1)
        if not np.iinfo(dtype).min <= value <= np.iinfo(dtype).max:
            raise self.fail(f"default {value} does not fit the values' {dtype}")
        return np.array(value, dtype)

    def run(self, inputs, outputs):
        x = inputs[0]
        at, found = _find(self.keys, x.reshape(-1))
        y = np.where(found, self.values[at] if self.values.size else self.default, self.default)
        if self.nan_value is not None:
            y = np.where(np.isnan(x.reshape(-1)), self.nan_value, y)
        outputs[0][...] = y.reshape(x.shape)
