"""The tree ensemble kernels: TreeEnsembleRegressor and TreeEnsembleClassifier (opsets 1 and
3) and TreeEnsemble (opset 5), each evaluating the `Forest` it builds at prepare.

Int features are compared as float32, as onnxruntime compares them. They differ from
onnxruntime where it contradicts the spec or itself: base_values are added to targets no
leaf scored (onnxruntime writes 0); a two-class classifier labels by its larger score, and a
binary LOGISTIC one by its probability (onnxruntime compares the raw score with 0.5 when all
weights are >= 0).
"""

from __future__ import annotations

import numpy as np

from edgerun.runtime.kernels.attrs import int_attr
from edgerun.runtime.kernels.base import Kernel, TensorSpec
from edgerun.runtime.kernels.ml.attrs import (
    F32,
    F64,
    ML,
    choice,
    class_labels,
    float64s_or_tensor,
    int64s,
    rows_and_features,
)
from edgerun.runtime.kernels.ml.forest import Forest, check_features, forest_from_arrays, forest_from_ids
from edgerun.runtime.kernels.ml.transforms import TRANSFORMS, binary_scores, post_transform, require_binary_transform
from edgerun.runtime.kernels.registry import register

AGGREGATES = ("AVERAGE", "SUM", "MIN", "MAX")


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
        check_features(self, self.forest, features)
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
        rows, features = rows_and_features(self, inputs[0])
        self.n_targets = int_attr(self, "n_targets", 0)
        if self.n_targets < 1:
            raise self.fail(f"attribute 'n_targets' must be at least 1, got {self.n_targets}")
        self.aggregate = choice(self, "aggregate_function", "SUM", AGGREGATES)
        self.transform = choice(self, "post_transform", "NONE", TRANSFORMS)
        self.base = float64s_or_tensor(self, "base_values")
        if self.base is not None and len(self.base) not in (0, self.n_targets):
            raise self.fail(f"base_values has {len(self.base)} values, expected {self.n_targets} (n_targets)")
        self.threshold_dtype = self.tensor_dtype("nodes_values")
        self.prepared = self.forest_for(inputs[0], features)
        return [TensorSpec(F32, (rows, self.n_targets))]

    def build(self) -> Forest:
        return forest_from_ids(self, "target", self.n_targets)

    def run(self, inputs, outputs):
        scores, _ = self.prepared.scores(self.rows(inputs[0]), self.aggregate)
        if self.base is not None and self.base.size:
            scores += self.base
        outputs[0][...] = post_transform(scores, self.transform)


@register("TreeEnsembleClassifier", since=1, domain=ML)
@register("TreeEnsembleClassifier", since=3, domain=ML)
class TreeEnsembleClassifier(_TreeKernel):
    """X [N, F] or [F] (float, double, int32, int64) -> (Y [N], Z float [N, C]): the summed
    leaf weights per class (class_ids, class_weights) plus base_values, labelled from
    classlabels_int64s (Y int64) or classlabels_strings (Y a string tensor), exactly one.

    With more than two classes (or two that both have weights) Y is the class with the
    highest score among those some leaf or base value scored and Z the scores after
    post_transform. With two classes and weights for one class id only (skl2onnx's binary
    trees), the summed weight s (plus base_values[0]) is the positive class's score: Z as
    `binary_scores` writes it (NONE or LOGISTIC) and Y positive when s > 0.5 (NONE with all
    weights >= 0) or s > 0. Opset 3 adds the *_as_tensor attributes.
    """

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        rows, features = rows_and_features(self, inputs[0])
        self.labels, key = class_labels(self, "classlabels_int64s", "classlabels_strings")
        if len(self.labels) < 2:
            raise self.fail(f"{key} has {len(self.labels)} label, at least 2 are needed")
        self.transform = choice(self, "post_transform", "NONE", TRANSFORMS)
        self.base = float64s_or_tensor(self, "base_values")
        self.base = np.zeros(0) if self.base is None else self.base
        class_ids = int64s(self, "class_ids", True)
        self.binary = len(self.labels) == 2 and len(np.unique(class_ids)) == 1
        if self.binary and len(self.base) not in (0, 1):
            raise self.fail(f"base_values has {len(self.base)} values; a binary ensemble that scores one class "
                            "takes 0 or 1")
        if not self.binary and len(self.base) not in (0, len(self.labels)):
            raise self.fail(f"base_values has {len(self.base)} values, expected {len(self.labels)} (one per class)")
        if self.binary:
            require_binary_transform(self, self.transform, "a binary ensemble that scores one class")
        weights = float64s_or_tensor(self, "class_weights", True)
        self.all_positive = bool((weights >= 0).all())
        self.threshold_dtype = self.tensor_dtype("nodes_values")
        self.prepared = self.forest_for(inputs[0], features)
        return [TensorSpec(self.labels.dtype, (rows,)), TensorSpec(F32, (rows, len(self.labels)))]

    def build(self) -> Forest:
        return forest_from_ids(self, "class", len(self.labels))

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
        rows, features = rows_and_features(self, x, "f")
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
        return forest_from_arrays(self, self.n_targets)

    def run(self, inputs, outputs):
        scores, _ = self.prepared.scores(self.rows(inputs[0]), self.aggregate)
        outputs[0][...] = post_transform(scores, self.transform)
