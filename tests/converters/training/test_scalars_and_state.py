"""Scalar (rank-0) parameters, optimizer state checkpoints and Dropout seeds of make_trainable.
Oracles: finite differences and the closed-form gradient of mean squared error, closed-form
SGD-momentum and Adam steps in numpy, and masks compared between interpreter sessions."""

from __future__ import annotations

import numpy as np
import pytest

from edgerun.converters import from_onnx
from edgerun.converters.training import make_trainable
from edgerun.runtime import GraphBuilder, Interpreter, serialize
from edgerun.runtime.errors import InputError
from tests.converters.training.models import mlp
from tests.converters.training.scalar_models import scalar_linear_onnx
from tests.gradcheck import numerical_gradient

RNG = np.random.default_rng(3)
X = RNG.random(12)
Y = 0.1 * X + 0.3


def scalar_interpreter(optimizer=("sgd", {"lr": 1.0}), w=0.5, b=-0.2) -> Interpreter:
    graph = from_onnx(scalar_linear_onnx(w, b, np.float64), optimize=False)
    return Interpreter(serialize(make_trainable(graph, loss="mse", optimizer=optimizer)))


def step(it: Interpreter, x=X, y=Y, lr: float | None = None) -> dict[str, np.ndarray]:
    feeds = {"x": x, "labels": y} | ({} if lr is None else {"learning_rate": np.asarray(lr)})
    it.run(feeds, "train")
    return it.run({}, "save")


# --- scalar parameters ---------------------------------------------------------------------------

def test_scalar_weights_become_the_parameters():
    it = scalar_interpreter()
    assert {n: i.shape for n, i in it.signatures["save"].outputs.items()} == {"W": (), "b": ()}


def test_scalar_gradients_match_closed_form_and_finite_differences():
    it = scalar_interpreter()
    start = it.run({}, "save")
    w, b = float(start["W"]), float(start["b"])
    residual = w * X + b - Y
    closed = {"W": np.mean(2 * residual * X), "b": np.mean(2 * residual)}

    def loss_at(name: str, value: np.ndarray) -> float:
        it.run({**start, name: value}, "restore")
        return float(it.run({"x": X, "labels": Y, "learning_rate": np.asarray(0.0)}, "train")["loss"])

    numeric = {n: numerical_gradient(lambda v, n=n: loss_at(n, v), start[n]) for n in ("W", "b")}
    it.run(start, "restore")
    after = step(it, lr=1.0)  # new = old - 1 * grad
    for name in ("W", "b"):
        analytic = start[name] - after[name]
        assert after[name].shape == ()
        np.testing.assert_allclose(analytic, closed[name], rtol=1e-12, err_msg=name)
        np.testing.assert_allclose(analytic, numeric[name], rtol=1e-6, atol=1e-9, err_msg=name)


def test_scalar_regression_recovers_w_and_b():
    it = scalar_interpreter(("sgd", {"lr": 0.5}))
    for _ in range(300):
        params = step(it)
    assert float(params["W"]) == pytest.approx(0.1, abs=1e-4) and float(params["b"]) == pytest.approx(0.3, abs=1e-4)


def mlp_with_a_scale():
    """x * 0.5 (a scalar constant of a formula) -> Gemm(w, c)."""
    g = GraphBuilder(opset=17)
    x = g.input("x", np.float32, (-1, 3))
    h = g.op("Mul", [x, g.constant("half", np.asarray(0.5, np.float32))])
    w, c = g.constant("w", np.ones((2, 3), np.float32)), g.constant("c", np.zeros(2, np.float32))
    g.output(g.op("Gemm", [h, w, c], transB=1), "y")
    return g.build()


def test_scalars_beside_tensors_train_only_when_named():
    assert set(make_trainable(mlp_with_a_scale(), loss="mse").signatures["save"].outputs) == {"w", "c"}
    named = make_trainable(mlp_with_a_scale(), loss="mse", trainable=["half", "w"])
    assert set(named.signatures["save"].outputs) == {"half", "w"}


# --- optimizer state -----------------------------------------------------------------------------

def batches(n: int):
    rng = np.random.default_rng(9)
    return [(x, 0.1 * x + 0.3 + 0.01 * rng.standard_normal(5)) for x in rng.random((n, 5))]


def test_plain_sgd_has_no_optimizer_state():
    it = scalar_interpreter()
    assert it.run({}, "save_optimizer") == {} and set(it.signatures["restore_optimizer"].inputs) == set()


def test_restored_momentum_gives_the_closed_form_sgd_momentum_step():
    lr, momentum = 0.3, 0.9
    first = scalar_interpreter(("sgd", {"lr": lr, "momentum": momentum}))
    for x, y in batches(3):
        step(first, x, y)
    params, state = first.run({}, "save"), first.run({}, "save_optimizer")
    assert set(state) == {"W.velocity", "b.velocity"} and all(np.any(v != 0) for v in state.values())
    fresh = scalar_interpreter(("sgd", {"lr": lr, "momentum": momentum}), w=0.0, b=0.0)
    fresh.run(params, "restore")
    fresh.run(state, "restore_optimizer")
    x, y = batches(4)[-1]
    residual = params["W"] * x + params["b"] - y
    grad = {"W": np.mean(2 * residual * x), "b": np.mean(2 * residual)}
    velocity = {n: momentum * state[f"{n}.velocity"] + grad[n] for n in grad}
    want = {n: params[n] - lr * velocity[n] for n in grad}
    got, again = step(fresh, x, y), step(first, x, y)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-12, err_msg=name)
        np.testing.assert_allclose(again[name], want[name], rtol=1e-12, err_msg=name)
    np.testing.assert_allclose(fresh.run({}, "save_optimizer")["W.velocity"], velocity["W"], rtol=1e-12)


def test_restored_adam_state_continues_the_same_run():
    first = scalar_interpreter(("adam", {"lr": 0.05}))
    for x, y in batches(4):
        step(first, x, y)
    params, state = first.run({}, "save"), first.run({}, "save_optimizer")
    assert set(state) == {"W.adam_m", "W.adam_v", "b.adam_m", "b.adam_v", "optimizer.step"}
    assert float(state["optimizer.step"]) == 4
    fresh = scalar_interpreter(("adam", {"lr": 0.05}), w=0.0, b=0.0)
    fresh.run(params, "restore")
    fresh.run(state, "restore_optimizer")
    x, y = batches(5)[-1]
    residual = params["W"] * x + params["b"] - y
    grad = {"W": np.mean(2 * residual * x), "b": np.mean(2 * residual)}
    t = 5
    want = {}
    for n, g in grad.items():
        m = 0.9 * state[f"{n}.adam_m"] + 0.1 * g
        v = 0.999 * state[f"{n}.adam_v"] + 0.001 * g * g
        want[n] = params[n] - 0.05 * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
    got, again = step(fresh, x, y), step(first, x, y)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-10, err_msg=name)
        np.testing.assert_allclose(again[name], want[name], rtol=1e-10, err_msg=name)


def test_restore_optimizer_with_a_missing_entry_changes_nothing():
    it = scalar_interpreter(("sgd", {"lr": 0.3, "momentum": 0.9}))
    step(it)
    before = it.run({}, "save_optimizer")
    with pytest.raises(InputError):
        it.run({"W.velocity": np.asarray(5.0)}, "restore_optimizer")
    after = it.run({}, "save_optimizer")
    assert all(np.array_equal(after[k], before[k]) for k in before)


# --- Dropout seeds -------------------------------------------------------------------------------

def dropout_graph(seed_attribute: int | None = None):
    g = GraphBuilder(opset=17)
    x = g.input("x", np.float32, (-1, 64))
    attrs = {} if seed_attribute is None else {"seed": seed_attribute}
    h = g.op("Dropout", [x, g.constant("ratio", np.asarray(0.5, np.float32))], name="drop", **attrs)
    w = g.constant("w", np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32))
    g.output(g.op("Gemm", [h, w], transB=1), "y")
    return g.build()


def first_losses(model: bytes, sessions: int = 2) -> list[float]:
    """The first train loss (lr 0: a function of the mask alone) of fresh interpreter sessions."""
    x = np.random.default_rng(1).standard_normal((8, 64)).astype(np.float32)
    feeds = {"x": x, "labels": np.arange(8) % 4, "learning_rate": np.asarray(0.0, np.float32)}
    return [float(Interpreter(model).run(feeds, "train")["loss"]) for _ in range(sessions)]


def test_dropout_masks_differ_between_sessions_without_a_seed():
    model = serialize(make_trainable(dropout_graph()))
    first, second = first_losses(model)
    assert first != second


@pytest.mark.parametrize("kwargs, attribute", [({"seed": 5}, None), ({}, 11)], ids=["make_trainable", "node"])
def test_a_fixed_seed_repeats_the_masks_between_sessions(kwargs, attribute):
    model = serialize(make_trainable(dropout_graph(attribute), **kwargs))
    first, second = first_losses(model)
    assert first == second
    other = serialize(make_trainable(dropout_graph(attribute + 1 if attribute else None),
                                     **({"seed": 6} if kwargs else {})))
    assert first_losses(other, 1)[0] != first


def test_make_trainable_cli_seed_fixes_the_masks(tmp_path):
    from edgerun.cli import main
    from edgerun.runtime import save_model

    source = save_model(dropout_graph(), tmp_path / "d.erm")
    assert main(["make-trainable", str(source), "--seed", "4", "-o", str(tmp_path / "d.train.erm")]) == 0
    first, second = first_losses((tmp_path / "d.train.erm").read_bytes())
    assert first == second


def test_momentum_state_of_an_mlp_round_trips():
    it = Interpreter(serialize(make_trainable(mlp((4, 3)), optimizer=("sgd", {"lr": 0.1, "momentum": 0.5}))))
    x = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
    it.run({"x": x, "labels": np.arange(6) % 3}, "train")
    state = it.run({}, "save_optimizer")
    assert set(state) == {"fc0.weight.velocity", "fc0.bias.velocity"}
    it.run({k: np.zeros_like(v) for k, v in state.items()}, "restore_optimizer")
    assert all(not np.any(v) for v in it.run({}, "save_optimizer").values())
