"""The ONNX-ML post_transforms (NONE, SOFTMAX, LOGISTIC, SOFTMAX_ZERO, PROBIT) and the scores
of binary models with one score column, shared by the tree ensembles, linear models and SVMs.

Where the spec is silent they follow onnxruntime: PROBIT uses the same erfinv approximation
(Winitzki's, relative error about 1e-3), SOFTMAX_ZERO leaves zero scores at zero, and a
binary classifier that scores one class writes [1 - s, s] (all weights >= 0) or [-s, s].
Unlike onnxruntime, a post_transform applies to single-score regressors too (onnxruntime
applies only PROBIT there).
"""

from __future__ import annotations

import numpy as np

from edgerun.runtime.kernels.base import Kernel

TRANSFORMS = ("NONE", "SOFTMAX", "LOGISTIC", "SOFTMAX_ZERO", "PROBIT")


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


def require_binary_transform(kernel: Kernel, transform: str, what: str) -> None:
    """ModelError unless `transform` is NONE or LOGISTIC, the two a model with one score
    column (`what`) defines."""
    if transform not in ("NONE", "LOGISTIC"):
        raise kernel.fail(f"post_transform {transform} is not defined for {what} (NONE and LOGISTIC are)")
