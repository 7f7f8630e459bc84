"""local_update with FedProx's proximal_mu. Oracles: hand-written full-batch SGD on a
linear model with the proximal term, and the plain (mu = 0) update."""

from __future__ import annotations

import numpy as np
import pytest

from edgerun.converters.training import make_trainable
from edgerun.federated.local import local_update
from edgerun.runtime import GraphBuilder, Interpreter, serialize
from edgerun.runtime.errors import InputError

RNG = np.random.default_rng(11)
X, Y = RNG.standard_normal((8, 3)), RNG.standard_normal((8, 2))
GLOBAL = {"w": RNG.standard_normal((2, 3)), "b": RNG.standard_normal(2)}  # not the initial weights
LR = 0.2


def linear_interpreter(proximal: bool) -> Interpreter:
    """y = x w^T + b in float64 (initial weights zero), mse, plain SGD with lr LR."""
    g = GraphBuilder("linear", opset=17)
    x = g.input("x", np.float64, (-1, 3))
    w, b = g.constant("w", np.zeros((2, 3))), g.constant("b", np.zeros(2))
    g.output(g.op("Gemm", [x, w, b], transB=1), "y")
    graph = make_trainable(g.build(), loss="mse", optimizer=("sgd", {"lr": LR}), proximal=proximal)
    return Interpreter(serialize(graph))


def numpy_fedprox(epochs: int, mu: float) -> dict[str, np.ndarray]:
    """Full-batch SGD on mean((x w^T + b - y)^2) + mu/2 ||(w, b) - GLOBAL||^2, from GLOBAL."""
    w, b = GLOBAL["w"].copy(), GLOBAL["b"].copy()
    for _ in range(epochs):
        d_pred = 2 * (X @ w.T + b - Y) / Y.size
        w, b = w - LR * (d_pred.T @ X + mu * (w - GLOBAL["w"])), b - LR * (d_pred.sum(0) + mu * (b - GLOBAL["b"]))
    return {"w": w - GLOBAL["w"], "b": b - GLOBAL["b"]}


@pytest.mark.parametrize("mu", [0.0, 0.5, 2.0])
def test_local_update_is_sgd_on_the_proximal_objective(mu):
    config = {"epochs": 4, "batch_size": len(Y), "proximal_mu": mu}
    result = local_update(linear_interpreter(proximal=True), GLOBAL, X, Y, config)
    want = numpy_fedprox(4, mu)
    for name in want:
        np.testing.assert_allclose(result.delta[name], want[name], rtol=1e-10, atol=1e-14, err_msg=name)


def test_proximal_mu_keeps_the_update_closer_to_the_global_weights():
    config = {"epochs": 3, "batch_size": 2, "seed": 5}
    it = linear_interpreter(proximal=True)
    plain = local_update(it, GLOBAL, X, Y, config)
    pulled = local_update(it, GLOBAL, X, Y, {**config, "proximal_mu": 1.0})
    assert 0 < pulled.metrics["delta_norm"] < 0.9 * plain.metrics["delta_norm"]


def test_proximal_mu_without_a_proximal_model_is_an_input_error_that_changes_nothing():
    it = linear_interpreter(proximal=False)
    before = it.variables()
    with pytest.raises(InputError, match=r"proximal=True"):
        local_update(it, GLOBAL, X, Y, {"proximal_mu": 0.1})
    after = it.variables()
    assert all(np.array_equal(after[k], before[k]) for k in before)


def test_zero_proximal_mu_works_without_a_proximal_model():
    result = local_update(linear_interpreter(proximal=False), GLOBAL, X, Y,
                          {"epochs": 2, "batch_size": len(Y), "proximal_mu": 0.0})
    for name, want in numpy_fedprox(2, 0.0).items():
        np.testing.assert_allclose(result.delta[name], want, rtol=1e-10, atol=1e-14)


def test_negative_proximal_mu_is_an_input_error():
    with pytest.raises(InputError, match="proximal_mu must be"):
        local_update(linear_interpreter(proximal=True), GLOBAL, X, Y, {"proximal_mu": -0.1})
