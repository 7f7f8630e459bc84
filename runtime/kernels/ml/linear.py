"""LinearClassifier and LinearRegressor: X @ coefficients^T + intercepts, then the ONNX-ML
post_transform."""

from __future__ import annotations

import numpy as np

from edgerun.runtime.kernels.attrs import int_attr
from edgerun.runtime.kernels.base import Kernel, TensorSpec
from edgerun.runtime.kernels.ml.attrs import F32, ML, as_rows, choice, class_labels, float64s, rows_and_features
from edgerun.runtime.kernels.ml.transforms import TRANSFORMS, binary_scores, post_transform, require_binary_transform
from edgerun.runtime.kernels.registry import register


def _linear_weights(kernel: Kernel, features: int, targets: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(coefficients [targets, F], intercepts [targets]); `targets` None: len(intercepts)
    or len(coefficients) / F."""
    coef, intercepts = float64s(kernel, "coefficients", True), float64s(kernel, "intercepts")
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
    """X [N, F] or [F] (float, double, int32, int64) -> (Y [N], Z float [N, C]): scores
    X @ coefficients^T + intercepts, one column per class (C = len(intercepts)); Y is the
    label of the highest score and Z the scores after post_transform. The labels are
    classlabels_ints (Y int64) or classlabels_strings (Y a string tensor), exactly one. One
    score column with two labels is binary: Y is the second label when s > 0 and Z is
    `binary_scores(s)` with [1 - s, s] for NONE."""

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        rows, features = rows_and_features(self, inputs[0])
        self.labels, key = class_labels(self, "classlabels_ints", "classlabels_strings")
        self.transform = choice(self, "post_transform", "NONE", TRANSFORMS)
        self.coef, self.intercepts = _linear_weights(self, features, None)
        classes = len(self.intercepts)
        if classes == 1:
            if len(self.labels) != 2:
                raise self.fail(f"one score column needs 2 class labels, {key} has {len(self.labels)}")
            require_binary_transform(self, self.transform, "a binary linear classifier with one score column")
        elif len(self.labels) != classes:
            raise self.fail(f"{key} has {len(self.labels)} labels for {classes} score columns")
        return [TensorSpec(self.labels.dtype, (rows,)), TensorSpec(F32, (rows, max(classes, 2)))]

    def run(self, inputs, outputs):
        scores = as_rows(inputs[0]) @ self.coef.T + self.intercepts
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
        rows, features = rows_and_features(self, inputs[0])
        targets = int_attr(self, "targets", 1)
        if targets < 1:
            raise self.fail(f"attribute 'targets' must be at least 1, got {targets}")
        self.transform = choice(self, "post_transform", "NONE", TRANSFORMS)
        self.coef, self.intercepts = _linear_weights(self, features, targets)
        return [TensorSpec(F32, (rows, targets))]

    def run(self, inputs, outputs):
        outputs[0][...] = post_transform(as_rows(inputs[0]) @ self.coef.T + self.intercepts, self.transform)
