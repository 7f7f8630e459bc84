"""make_trainable(..., proximal=True): FedProx's mu/2 * ||w - anchor||^2 in the train
signature. Oracles: the non-proximal model, hand-written SGD on a linear model,
closed-form losses and finite differences."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgerun.converters.training import make_trainable
from edgerun.runtime import GraphBuilder, Interpreter, serialize
from edgerun.runtime.errors import ConversionError
from tests.converters.training.models import mlp
from tests.gradcheck import numerical_gradient

RNG = np.random.default_rng(7)
X, TARGETS = RNG.standard_normal((5, 3)), RNG.standard_normal((5, 2))
ANCHOR = {"w": RNG.standard_normal((2, 3)), "b": RNG.standard_normal(2)}
START = {"w": RNG.standard_normal((2, 3)), "b": RNG.standard_normal(2)}


def linear():
    """y = x w^T + b in float64, x (N, 3), w (2, 3), b (2,)."""
    g = GraphBuilder("linear", opset=17)
    x = g.input("x", np.float64, (-1, 3))
    w, b = g.constant("w", np.zeros((2, 3))), g.constant("b", np.zeros(2))
    g.output(g.op("Gemm", [x, w, b], transB=1), "y")
    return g.build()


def anchored_linear(lr: float) -> Interpreter:
    """The linear model, anchored at ANCHOR (restore + set_anchor), then restored to START."""
    it = Interpreter(serialize(make_trainable(linear(), loss="mse", optimizer=("sgd", {"lr": lr}), proximal=True)))
    it.run(ANCHOR, "restore")
    it.run({}, "set_anchor")
    it.run(START, "restore")
    return it


def mse_and_gradients(w, b):
    """mean((x w^T + b - t)^2) over all elements and its gradients with respect to w and b."""
    residual = X @ w.T + b - TARGETS
    d_pred = 2 * residual / residual.size
    return np.mean(residual**2), d_pred.T @ X, d_pred.sum(axis=0)


@pytest.mark.parametrize("optimizer", [("sgd", {"lr": 0.1}), ("sgd", {"lr": 0.1, "momentum": 0.9}),
                                       ("adam", {"lr": 0.01})])
@pytest.mark.parametrize("mu_feed", [{}, {"proximal_mu": 0.0}])
def test_zero_mu_trains_exactly_like_the_plain_model(optimizer, mu_feed):
    graph = mlp((6, 5, 3), dtype=np.float32, seed=3)
    plain = Interpreter(serialize(make_trainable(graph, optimizer=optimizer)))
    proximal = Interpreter(serialize(make_trainable(graph, optimizer=optimizer, proximal=True)))
    rng = np.random.default_rng(4)
    for _ in range(3):  # after the first step the parameters differ from their anchors
        feeds = {"x": rng.standard_normal((4, 6)).astype(np.float32), "labels": rng.integers(0, 3, 4)}
        want, got = plain.run(feeds, "train"), proximal.run({**feeds, **mu_feed}, "train")
        assert want.keys() == got.keys()
        for name in want:
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    np.testing.assert_array_equal(proximal.run({}, "save")["fc0.weight"], plain.run({}, "save")["fc0.weight"])


@pytest.mark.parametrize("mu", [0.0, 0.5, 3.0])
def test_one_sgd_step_adds_mu_times_the_distance_to_the_anchor(mu):
    lr = 0.1
    it = anchored_linear(lr)
    it.run({"x": X, "labels": TARGETS, "proximal_mu": mu}, "train")
    _, grad_w, grad_b = mse_and_gradients(START["w"], START["b"])
    after = it.run({}, "save")
    np.testing.assert_allclose(after["w"], START["w"] - lr * (grad_w + mu * (START["w"] - ANCHOR["w"])), rtol=1e-12)
    np.testing.assert_allclose(after["b"], START["b"] - lr * (grad_b + mu * (START["b"] - ANCHOR["b"])), rtol=1e-12)


@pytest.mark.parametrize("mu", [0.0, 0.5, 3.0])
def test_reported_loss_includes_the_proximal_term(mu):
    it = anchored_linear(0.1)
    loss = it.run({"x": X, "labels": TARGETS, "proximal_mu": mu}, "train")["loss"]
    distance = np.sum((START["w"] - ANCHOR["w"]) ** 2) + np.sum((START["b"] - ANCHOR["b"]) ** 2)
    assert float(loss) == pytest.approx(mse_and_gradients(START["w"], START["b"])[0] + mu / 2 * distance, rel=1e-12)


def test_step_is_the_gradient_of_the_reported_loss():
    it = Interpreter(serialize(make_trainable(mlp((4, 3, 2), dtype=np.float64, seed=1), loss="mse",
                                              optimizer=("sgd", {"lr": 1.0}), proximal=True)))
    rng = np.random.default_rng(5)
    it.run({}, "set_anchor")
    start = {k: v + rng.standard_normal(v.shape) for k, v in it.run({}, "save").items()}
    feeds = {"x": rng.standard_normal((3, 4)), "labels": rng.standard_normal((3, 2)), "proximal_mu": 0.7}

    def loss_at(name, value):
        it.run({**start, name: value}, "restore")
        return float(it.run(feeds, "train")["loss"])

    for name in start:
        numeric = numerical_gradient(lambda v, name=name: loss_at(name, v), start[name], eps=1e-6)
        it.run(start, "restore")
        it.run(feeds, "train")  # lr 1: new = old - gradient
        np.testing.assert_allclose(start[name] - it.run({}, "save")[name], numeric, rtol=1e-6, atol=1e-8,
                                   err_msg=name)


def test_anchors_start_at_the_initial_weights_and_stay_out_of_save_and_restore():
    graph = make_trainable(linear(), loss="mse", proximal=True)
    it = Interpreter(serialize(graph))
    variables = it.variables()
    assert {k: v.tolist() for k, v in variables.items() if k.startswith("anchor/")} == {
        "anchor/w": np.zeros((2, 3)).tolist(), "anchor/b": [0.0, 0.0]}
    assert sorted(it.signatures["save"].outputs) == sorted(it.signatures["restore"].inputs) == ["b", "w"]
    assert json.loads(graph.metadata["edgerun.training"])["proximal"] is True
    plain = make_trainable(linear(), loss="mse")
    assert "set_anchor" not in plain.signatures and "proximal_mu" not in plain.signatures["train"].inputs
    assert json.loads(plain.metadata["edgerun.training"])["proximal"] is False


def test_set_anchor_copies_the_current_parameters():
    it = Interpreter(serialize(make_trainable(linear(), loss="mse", proximal=True)))
    it.run(START, "restore")
    it.run({}, "set_anchor")
    it.run(ANCHOR, "restore")
    variables = it.variables()
    np.testing.assert_array_equal(variables["anchor/w"], START["w"])
    np.testing.assert_array_equal(variables["anchor/b"], START["b"])


def test_a_tensor_named_proximal_mu_is_refused():
    g = GraphBuilder("clash", opset=17)
    x = g.input("proximal_mu", np.float64, (-1, 3))
    g.output(g.op("Gemm", [x, g.constant("w", np.zeros((2, 3))), g.constant("b", np.zeros(2))], transB=1), "y")
    with pytest.raises(ConversionError, match="'proximal_mu'"):
        make_trainable(g.build(), loss="mse", proximal=True)


def test_fit_takes_a_bare_array_and_fixed_inputs_on_a_proximal_model():
    from edgerun.runtime import Interpreter, serialize
    from edgerun.runtime.training import fit
    from tests.converters.training.models import mlp

    it = Interpreter(serialize(make_trainable(mlp((4, 3)), proximal=True)))
    x, y = np.ones((6, 4), np.float32), np.array([0, 1, 2, 0, 1, 2])
    history = fit(it, x, y, epochs=1, batch_size=3, inputs={"proximal_mu": np.float32(0.5)})
    assert len(history) == 1 and np.isfinite(history[0].loss)
