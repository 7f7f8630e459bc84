"""SVMClassifier and SVMRegressor: libsvm's kernels (LINEAR, POLY, RBF, SIGMOID), its
one-vs-one voting and its coupling of Platt-scaled pairwise probabilities; without support
vectors (liblinear), X @ coefficients^T + rho."""

from __future__ import annotations

import numpy as np

from edgerun.runtime.kernels.attrs import flag_attr, int_attr
from edgerun.runtime.kernels.base import Kernel, TensorSpec
from edgerun.runtime.kernels.ml.attrs import (
    F32,
    ML,
    as_rows,
    choice,
    class_labels,
    float64s,
    int64s,
    rows_and_features,
)
from edgerun.runtime.kernels.ml.transforms import TRANSFORMS, logistic, post_transform, require_binary_transform
from edgerun.runtime.kernels.registry import register

SVM_KERNELS = ("LINEAR", "POLY", "RBF", "SIGMOID")


def _svm_kernel_params(kernel: Kernel) -> tuple[str, tuple[float, float, float]]:
    kind = choice(kernel, "kernel_type", "LINEAR", SVM_KERNELS)
    params = float64s(kernel, "kernel_params")
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
    """X [N, F] or [F] (float, double, int32, int64) -> (Y [N], Z float); Y holds
    classlabels_ints (int64) or classlabels_strings (a string tensor), exactly one.

    With support vectors (vectors_per_class, libsvm's one-vs-one SVC): each class pair
    (i, j) scores s = the kernel values of both classes' vectors times their coefficients
    plus rho; s > 0 votes for i, else for j, and Y is the label with the most votes. Z is,
    with prob_a/prob_b, the class probabilities (Platt-scaled pairs coupled as libsvm does)
    [N, C]; without, the pair scores [N, C(C-1)/2], or [-s, s] for two classes. Without
    support vectors (liblinear) the scores are X @ coefficients^T + rho[0], one per class,
    and Y is the highest. Z goes through post_transform."""

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        rows, features = rows_and_features(self, inputs[0])
        self.labels, key = class_labels(self, "classlabels_ints", "classlabels_strings")
        classes = len(self.labels)
        if classes < 2:
            raise self.fail(f"{key} has {classes} label, at least 2 are needed")
        self.transform = choice(self, "post_transform", "NONE", TRANSFORMS)
        self.kind, self.params = _svm_kernel_params(self)
        coef, self.rho = float64s(self, "coefficients", True), float64s(self, "rho", True)
        per_class = int64s(self, "vectors_per_class")
        self.vectors = 0 if per_class is None else int(per_class.sum())
        if self.vectors == 0:
            if coef.size != classes * features or self.rho.size == 0:
                raise self.fail(f"coefficients has {coef.size} values, expected {classes} x {features} (classes x "
                                "X's features), and rho one value")
            self.coef = coef.reshape(classes, features)
            return [TensorSpec(self.labels.dtype, (rows,)), TensorSpec(F32, (rows, classes))]
        pairs = classes * (classes - 1) // 2
        self._check_svc(per_class, coef, features, pairs)
        self.starts = np.concatenate([[0], np.cumsum(per_class)])
        self.coef = coef.reshape(classes - 1, self.vectors)
        if self.prob_a is None and classes == 2:
            require_binary_transform(self, self.transform, "a binary SVM without probabilities")
        columns = classes if self.prob_a is not None else pairs if classes > 2 else 2
        return [TensorSpec(self.labels.dtype, (rows,)), TensorSpec(F32, (rows, columns))]

    def _check_svc(self, per_class: np.ndarray, coef: np.ndarray, features: int, pairs: int) -> None:
        classes = len(self.labels)
        sv = float64s(self, "support_vectors", True)
        self.prob_a, prob_b = float64s(self, "prob_a"), float64s(self, "prob_b")
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
        x = as_rows(inputs[0])
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
        rows, features = rows_and_features(self, inputs[0])
        self.transform = choice(self, "post_transform", "NONE", TRANSFORMS)
        self.kind, self.params = _svm_kernel_params(self)
        self.one_class = flag_attr(self, "one_class", 0)
        self.coef, self.rho = float64s(self, "coefficients", True), float64s(self, "rho", True)
        self.vectors = int_attr(self, "n_supports", 0)
        if self.rho.size == 0 or self.vectors < 0:
            raise self.fail(f"rho needs a value and n_supports must be >= 0, got {self.vectors}")
        if self.vectors:
            sv = float64s(self, "support_vectors", True)
            if sv.size != self.vectors * features or self.coef.size != self.vectors:
                raise self.fail(f"support_vectors has {sv.size} values and coefficients {self.coef.size}; "
                                f"expected {self.vectors} x {features} and {self.vectors} (n_supports)")
            self.support = sv.reshape(self.vectors, features)
        elif self.coef.size != features:
            raise self.fail(f"coefficients has {self.coef.size} values, expected {features} (X's features)")
        return [TensorSpec(F32, (rows, 1))]

    def run(self, inputs, outputs):
        x = as_rows(inputs[0])
        k = svm_kernel(self.kind, self.params, x, self.support) if self.vectors else x
        score = k @ self.coef + self.rho[0]
        if self.one_class:
            score = np.where(score > 0, 1.0, -1.0)
        outputs[0][...] = post_transform(score[:, None], self.transform)
