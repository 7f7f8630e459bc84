"""An embedding + LSTM + Gemm language model: labels sized from the logits' leading dims, and one
train step equal to SGD on a numpy finite-difference gradient of the mean cross-entropy over all
positions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgerun.converters.training import make_trainable
from edgerun.runtime import GraphBuilder
from edgerun.runtime.interpreter import Interpreter

V, E, H = 5, 4, 3


def language_model(tokens_shape, seed: int = 0, dtype=np.float64, layout: str = "time_major"):
    """tokens [N, S] int64 -> Gather(embedding) -> Transpose [S, N, E] -> LSTM -> Y [S, 1, N, H]
    -> Reshape [-1, H] -> Gemm -> logits [S*N, V] (layout "time_major"); "batch_first" transposes Y
    to [N, S, 1, H] first (logits [N*S, V]), "steps" also reshapes the logits to [N, S, V]."""
    rng = np.random.default_rng(seed)
    g = GraphBuilder("lm", opset=17)
    tokens = g.input("tokens", np.int64, tokens_shape)
    x = g.op("Gather", [g.constant("embedding", rng.standard_normal((V, E)).astype(dtype)), tokens], name="embed")
    x = g.op("Transpose", [x], name="time_major", perm=[1, 0, 2])
    w = g.constant("lstm.W", (rng.standard_normal((1, 4 * H, E)) * 0.5).astype(dtype))
    r = g.constant("lstm.R", (rng.standard_normal((1, 4 * H, H)) * 0.5).astype(dtype))
    b = g.constant("lstm.B", (rng.standard_normal((1, 8 * H)) * 0.1).astype(dtype))
    y = g.op("LSTM", [x, w, r, b], name="lstm", hidden_size=H)
    if layout in ("batch_first", "steps"):
        y = g.op("Transpose", [y], name="batch_first", perm=[2, 0, 1, 3])
    y = g.op("Reshape", [y, g.constant("rows", np.array([-1, H], np.int64))], name="rows")
    logits = g.op("Gemm", [y, g.constant("Wo", rng.standard_normal((V, H)).astype(dtype)),
                           g.constant("bo", (rng.standard_normal(V) * 0.1).astype(dtype))], name="out", transB=1)
    if layout == "steps":
        logits = g.op("Reshape", [logits, g.constant("steps", np.array([-1, tokens_shape[1], V]))], name="steps")
    g.output(logits, "logits")
    return g.build()


def _cross_entropy(graph, weights: dict[str, np.ndarray], tokens: np.ndarray, labels: np.ndarray) -> float:
    """Mean cross-entropy of the inference graph with `weights` swapped in (numpy softmax)."""
    for value in graph.values():
        if value.name in weights:
            value.data = weights[value.name]
    logits = Interpreter(graph, device="cpu").run({"tokens": tokens})["logits"].reshape(-1, V)
    shifted = logits - logits.max(1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    rows = labels.reshape(-1)
    return float(-log_p[np.arange(len(rows)), rows].mean())


@pytest.mark.parametrize("shape", [(-1, 3), (2, -1), (-1, -1), (1, -1), (2, 3)])
def test_labels_follow_the_logits_rows(shape):
    graph = make_trainable(language_model(shape))
    static_rows = 6 if shape == (2, 3) else -1
    assert graph.signatures["train"].inputs["labels"].shape == (static_rows,)
    n, s = 2 if shape[0] == -1 else shape[0], 3 if shape[1] == -1 else shape[1]
    out = Interpreter(graph, device="cpu").run(
        {"tokens": np.arange(n * s).reshape(n, s) % V, "labels": np.arange(n * s) % V}, signature="train")
    assert np.isfinite(out["loss"]) and out["loss"] > 0


@pytest.mark.parametrize("layout", ["time_major", "batch_first", "steps"])
def test_one_train_step_is_sgd_on_the_finite_difference_gradient(layout):
    n, s, lr = 2, 3, 0.1
    tokens = np.array([[0, 3, 1], [4, 2, 2]], np.int64)
    labels = np.array([1, 4, 0, 2, 2, 3], np.int64)  # row order of the logits: [S*N] or [N*S]
    shape = (-1, s) if layout == "steps" else (-1, -1)
    if layout == "steps":
        labels = labels.reshape(n, s)  # one per position of the [N, S, V] logits
    graph = language_model(shape, layout=layout)
    trainable = make_trainable(graph, optimizer=("sgd", {"lr": lr}))
    assert trainable.signatures["train"].inputs["labels"].shape == ((-1, s) if layout == "steps" else (-1,))
    names = json.loads(trainable.metadata["edgerun.training"])["parameters"]
    assert names == ["embedding", "lstm.W", "lstm.R", "lstm.B", "Wo", "bo"]
    it = Interpreter(trainable, device="cpu")
    before = it.run({}, signature="save")
    out = it.run({"tokens": tokens, "labels": labels}, signature="train")
    after = it.run({}, signature="save")
    reference = language_model(shape, layout=layout)
    weights = {k: v.copy() for k, v in before.items()}
    assert out["loss"] == pytest.approx(_cross_entropy(reference, weights, tokens, labels), rel=1e-12)
    step = 1e-6
    for name in names:
        grad = np.zeros_like(weights[name])
        for index in np.ndindex(grad.shape):
            plus, minus = ({**weights, name: weights[name].copy()} for _ in range(2))
            plus[name][index] += step
            minus[name][index] -= step
            grad[index] = (_cross_entropy(reference, plus, tokens, labels)
                           - _cross_entropy(reference, minus, tokens, labels)) / (2 * step)
        assert np.abs(grad).max() > 1e-4, name  # every weight is moved by the step
        np.testing.assert_allclose(after[name], before[name] - lr * grad, rtol=0, atol=1e-9, err_msg=name)


def test_one_hot_targets_of_a_steps_output_take_its_shape():
    tokens = np.array([[0, 3, 1], [4, 2, 2]], np.int64)
    labels = np.array([[1, 4, 0], [2, 2, 3]], np.int64)
    trainable = make_trainable(language_model((-1, 3), layout="steps"), one_hot_labels=True)
    assert trainable.signatures["train"].inputs["labels"].shape == (-1, 3, V)
    it = Interpreter(trainable, device="cpu")
    weights = it.run({}, signature="save")
    out = it.run({"tokens": tokens, "labels": np.eye(V)[labels]}, signature="train")
    expected = _cross_entropy(language_model((-1, 3), layout="steps"), weights, tokens, labels)
    assert out["loss"] == pytest.approx(expected, rel=1e-12)
