"""Loss and metric kernels of on-device training (domain "edgerun"), each loss next to its gradient.

Every loss is a mean over the batch (or over all elements) and returns a scalar of
shape (); its gradient kernel takes that scalar's upstream gradient `dloss` first.
Shapes and dtypes are checked in `prepare` (the node's ModelError); class labels
out of range are bad data, found in `run`: an InputError naming the label.
"""

from __future__ import annotations

import numpy as np

from edgerun.runtime.errors import InputError
from edgerun.runtime.kernels.attrs import (
    FLOAT_KINDS,
    int_attr,
    prod,
    require_kind,
    require_rank,
    require_same_dtype,
    str_attr,
)
from edgerun.runtime.kernels.base import Kernel, TensorSpec
from edgerun.runtime.kernels.registry import register
from edgerun.runtime.kernels.softmax import softmax

TRAINING = "edgerun"


def require_scalar(kernel: Kernel, spec: TensorSpec, kinds: str, what: str) -> None:
    """ModelError unless `spec` holds one element of shape () or (1,) and of a kind in `kinds`."""
    require_kind(kernel, spec, kinds, what)
    if spec.shape not in ((), (1,)):
        raise kernel.fail(f"{what}: expected a scalar of shape (), got shape {spec.shape}")


def require_same_shape(kernel: Kernel, a: TensorSpec, b: TensorSpec, what: str) -> None:
    """ModelError unless both specs have the same shape."""
    if a.shape != b.shape:
        raise kernel.fail(f"{what}: shapes differ: {a.shape} and {b.shape}")


def require_not_empty(kernel: Kernel, spec: TensorSpec, what: str) -> None:
    """ModelError for an empty tensor: a mean over no elements is undefined."""
    if spec.size == 0:
        raise kernel.fail(f"{what}: the mean over an empty tensor of shape {spec.shape} is undefined")


# ------------------------------------------------------------------ class labels
def check_class_labels(kernel: Kernel, logits: TensorSpec, labels: TensorSpec) -> bool:
    """Validate (N, C) float logits against labels: integer class indices of shape (N,), or
    float targets (one-hot or probabilities) with the logits' shape and dtype. Returns True
    for indices. ModelError otherwise, and for N == 0 or C == 0."""
    require_kind(kernel, logits, FLOAT_KINDS, "logits")
    require_rank(kernel, logits, 2, 2, what="logits")
    require_not_empty(kernel, logits, "logits")
    n = logits.shape[0]
    if labels.dtype.kind in "iu":
        if labels.shape != (n,):
            raise kernel.fail(f"integer labels: expected shape ({n},) for logits {logits.shape}, "
                              f"got {labels.shape}")
        return True
    if labels.dtype.kind != "f":
        raise kernel.fail(f"labels: expected integer class indices or float targets, got {labels.dtype}")
    require_same_dtype(kernel, [logits, labels], "logits and float labels")
    if labels.shape != logits.shape:
        raise kernel.fail(f"float labels: expected the logits' shape {logits.shape}, got {labels.shape}")
    return False


def check_label_range(kernel: Kernel, labels: np.ndarray, classes: int) -> None:
    """InputError naming the first label outside [0, classes)."""
    as_unsigned = labels.view(np.dtype(f"u{labels.dtype.itemsize}"))  # negative labels become huge
    if labels.size == 0 or as_unsigned.max() < classes:
        return
    bad = np.flatnonzero((labels < 0) | (labels >= classes))
    if bad.size:
        row = int(bad[0])
        raise InputError(
            f"node {kernel.name!r} ({kernel.op_type}): label {int(labels[row])} at row {row} is out "
            f"of range for {classes} classes (expected 0..{classes - 1})"
        )


def log_softmax(x: np.ndarray) -> np.ndarray:
    """log(softmax(x)) along axis 1 via log-sum-exp: finite for any finite x."""
    shifted = x - np.max(x, axis=1, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))


@register("SoftmaxCrossEntropy", since=1, domain=TRAINING)
class SoftmaxCrossEntropy(Kernel):
    """(logits (N, C), labels) -> loss = mean over rows of -sum(target * log_softmax(logits));
    labels are class indices (N,) or float targets (N, C)."""

    min_inputs = max_inputs = 2

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        logits, labels = inputs
        self.indices = check_class_labels(self, logits, labels)
        self.rows = np.arange(logits.shape[0])
        return [TensorSpec(logits.dtype, ())]

    def run(self, inputs, outputs):
        logits, labels = inputs
        n, classes = logits.shape
        if not self.indices:
            outputs[0][...] = -np.sum(labels * log_softmax(logits)) / n
            return
        check_label_range(self, labels, classes)
        # -log_softmax at the label = log(sum(exp(shifted))) - shifted[label], shifted = x - max
        # (ufunc.reduce rather than np.max / np.sum: the same sums, less overhead per call)
        shifted = logits - np.maximum.reduce(logits, axis=1, keepdims=True)
        log_sums = np.log(np.add.reduce(np.exp(shifted), axis=1))
        outputs[0][...] = np.add.reduce(log_sums - shifted[self.rows, labels]) / n


@register("SoftmaxCrossEntropyGrad", since=1, domain=TRAINING)
class SoftmaxCrossEntropyGrad(Kernel):
    """(dloss, logits, labels) -> dlogits = dloss * (softmax(logits) - target) / N."""

    min_inputs = max_inputs = 3

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        dloss, logits, labels = inputs
        self.indices = check_class_labels(self, logits, labels)
        require_scalar(self, dloss, FLOAT_KINDS, "dloss")
        require_same_dtype(self, [dloss, logits], "dloss and logits")
        self.rows = np.arange(logits.shape[0])
        return [logits]

    def run(self, inputs, outputs):
        dloss, logits, labels = inputs
        n, classes = logits.shape
        out, share = outputs[0], dloss.reshape(()) / n
        if not self.indices:
            softmax(logits, out, axis=1)
            np.subtract(out, labels, out=out)
            np.multiply(out, share, out=out)
            return
        check_label_range(self, labels, classes)
        np.subtract(logits, np.maximum.reduce(logits, axis=1, keepdims=True), out=out)
        np.exp(out, out=out)
        np.multiply(out, share / np.add.reduce(out, axis=1, keepdims=True), out=out)  # softmax * dloss / N
        out[self.rows, labels] -= share


# ------------------------------------------------------------------ elementwise losses
class _ElementwiseLoss(Kernel):
    """(a, b) of one float dtype and one non-empty shape -> a scalar mean."""

    min_inputs = max_inputs = 2
    names = ("pred", "target")

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        a, b = inputs
        require_kind(self, a, FLOAT_KINDS, self.names[0])
        require_same_dtype(self, [a, b], " and ".join(self.names))
        require_same_shape(self, a, b, " and ".join(self.names))
        require_not_empty(self, a, self.names[0])
        return [TensorSpec(a.dtype, ())]


class _ElementwiseLossGrad(Kernel):
    """(dloss, a, b) -> the gradient with respect to a (a's shape and dtype)."""

    min_inputs = max_inputs = 3
    names = ("pred", "target")

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        dloss, a, b = inputs
        require_kind(self, a, FLOAT_KINDS, self.names[0])
        require_scalar(self, dloss, FLOAT_KINDS, "dloss")
        require_same_dtype(self, [dloss, a, b], "dloss, " + " and ".join(self.names))
        require_same_shape(self, a, b, " and ".join(self.names))
        require_not_empty(self, a, self.names[0])
        return [a]


@register("MSELoss", since=1, domain=TRAINING)
class MSELoss(_ElementwiseLoss):
    """(pred, target) -> mean((pred - target)^2) over all elements."""

    def run(self, inputs, outputs):
        pred, target = inputs
        diff = pred - target
        outputs[0][...] = np.sum(np.square(diff)) / diff.size


@register("MSELossGrad", since=1, domain=TRAINING)
class MSELossGrad(_ElementwiseLossGrad):
    """(dloss, pred, target) -> dpred = dloss * 2 * (pred - target) / n."""

    def run(self, inputs, outputs):
        dloss, pred, target = inputs
        out = outputs[0]
        np.subtract(pred, target, out=out)
        np.multiply(out, dloss.reshape(()) * 2 / out.size, out=out)


@register("BCEWithLogits", since=1, domain=TRAINING)
class BCEWithLogits(_ElementwiseLoss):
    """(logits z, target t) -> mean(max(z, 0) - z * t + log(1 + exp(-|z|))): binary cross-entropy
    of sigmoid(z), stable for any finite z."""

    names = ("logits", "target")

    def run(self, inputs, outputs):
        z, t = inputs
        terms = np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z)))
        outputs[0][...] = np.sum(terms) / z.size


@register("BCEWithLogitsGrad", since=1, domain=TRAINING)
class BCEWithLogitsGrad(_ElementwiseLossGrad):
    """(dloss, logits z, target t) -> dz = dloss * (sigmoid(z) - t) / n."""

    names = ("logits", "target")

    def run(self, inputs, outputs):
        dloss, z, t = inputs
        out = outputs[0]
        e = np.exp(-np.abs(z))  # in (0, 1]: sigmoid without overflow on either side
        np.divide(np.where(z >= 0, 1, e), 1 + e, out=out)
        np.subtract(out, t, out=out)
        np.multiply(out, dloss.reshape(()) / out.size, out=out)


# ------------------------------------------------------------------ regularizer and metric
@register("SumSquares", since=1, domain=TRAINING)
class SumSquares(Kernel):
    """(x1, ..., xn) -> sum of the squares of every element of every input (L2 weight decay);
    the inputs share one float dtype, which the scalar result has. Its gradient is a rule."""

    max_inputs = 1 << 31

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        if any(spec is None for spec in inputs):
            raise self.fail("SumSquares inputs may not be omitted")
        require_kind(self, inputs[0], FLOAT_KINDS, "input 0")
        require_same_dtype(self, list(inputs), "inputs")
        return [TensorSpec(inputs[0].dtype, ())]

    def run(self, inputs, outputs):
        total = outputs[0].dtype.type(0)
        for x in inputs:
            total += np.sum(np.square(x))
        outputs[0][...] = total


@register("Accuracy", since=1, domain=TRAINING)
class Accuracy(Kernel):
    """(logits (N, C), labels) -> float32 fraction of rows whose argmax equals the label; labels
    are class indices (N,) or float targets (N, C), whose argmax is the label. Ties go to the
    first class, as numpy.argmax. Not differentiable."""

    min_inputs = max_inputs = 2

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        logits, labels = inputs
        self.indices = check_class_labels(self, logits, labels)
        return [TensorSpec(np.dtype(np.float32), ())]

    def run(self, inputs, outputs):
        logits, labels = inputs
        if self.indices:
            check_label_range(self, labels, logits.shape[1])
        else:
            labels = np.argmax(labels, axis=1)
        outputs[0][...] = np.count_nonzero(np.argmax(logits, axis=1) == labels) / len(labels)


# ------------------------------------------------------------------ ONNX-domain losses
class _ClassLoss(Kernel):
    """Base of the ONNX losses over scores (N, C, d1, ...) and integer targets (N, d1, ...),
    with an optional per-class weight (C,), ignore_index and reduction none | sum | mean.

    The per-element loss is -weight[t] * score[n, t, d...] (0 where t == ignore_index); "mean"
    divides the sum by the sum of the weights used (the count of non-ignored elements when
    unweighted). A target outside [0, C) other than ignore_index is an InputError."""

    min_inputs, max_inputs = 2, 3
    extra_outputs = 0

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        scores, target = inputs[0], inputs[1]
        weight = inputs[2] if len(inputs) > 2 else None
        require_kind(self, scores, FLOAT_KINDS, "scores")
        require_rank(self, scores, 2, what="scores (N, C, ...)")
        require_kind(self, target, "iu", "target")
        if target.shape != scores.shape[:1] + scores.shape[2:]:
            raise self.fail(f"target shape {target.shape} must be {scores.shape[:1] + scores.shape[2:]} "
                            f"for scores {scores.shape}")
        if weight is not None and (weight.shape != scores.shape[1:2] or weight.dtype != scores.dtype):
            raise self.fail(f"weight must be {scores.dtype} {scores.shape[1:2]}, got {weight.dtype} {weight.shape}")
        self.reduction = str_attr(self, "reduction", "mean")
        if self.reduction not in ("none", "sum", "mean"):
            raise self.fail(f"reduction {self.reduction!r} must be none, sum or mean")
        self.ignore = None if self.attr("ignore_index") is None else int_attr(self, "ignore_index")
        loss = TensorSpec(scores.dtype, target.shape if self.reduction == "none" else ())
        return [loss] + [scores] * self.extra_outputs

    def _loss(self, log_probs: np.ndarray, target: np.ndarray, weight: np.ndarray | None, out: np.ndarray) -> None:
        n, c = log_probs.shape[:2]
        t = target.reshape(n, prod(target.shape[1:])).astype(np.int64)
        kept = np.ones(t.shape, bool) if self.ignore is None else t != self.ignore
        safe = np.where(kept, t, 0)
        bad = (safe < 0) | (safe >= c)
        if bad.any():
            raise InputError(f"node {self.name!r} ({self.op_type}): target {int(t[bad][0])} is out of "
                             f"range for {c} classes")
        picked = np.take_along_axis(log_probs.reshape(n, c, t.shape[1]), safe[:, None, :], axis=1)[:, 0, :]
        w = (np.ones(t.shape, log_probs.dtype) if weight is None else weight[safe]) * kept
        loss = -picked * w
        if self.reduction == "none":
            np.copyto(out, loss.reshape(out.shape), casting="unsafe")
        elif self.reduction == "sum":
            out[...] = np.sum(loss)
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                out[...] = np.sum(loss) / np.sum(w)


@register("NegativeLogLikelihoodLoss", since=12)
class NegativeLogLikelihoodLoss(_ClassLoss):
    """loss = -input[n, target[n, d...], d...] (see _ClassLoss); input holds log-probabilities."""

    def run(self, inputs, outputs):
        weight = inputs[2] if len(inputs) > 2 else None
        self._loss(inputs[0], inputs[1], weight, outputs[0])


@register("SoftmaxCrossEntropyLoss", since=12)
class SoftmaxCrossEntropyLoss(_ClassLoss):
    """NegativeLogLikelihoodLoss of log_softmax(scores) along axis 1; the optional second output
    is that log_softmax (log_prob), shaped like scores."""

    extra_outputs = 1

    def run(self, inputs, outputs):
        scores = inputs[0].astype(np.float64)
        shifted = scores - np.max(scores, axis=1, keepdims=True)
        log_probs = shifted - np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))
        weight = inputs[2] if len(inputs) > 2 else None
        self._loss(log_probs, inputs[1], weight, outputs[0])
        if len(outputs) > 1:
            np.copyto(outputs[1], log_probs, casting="unsafe")
