"""make_trainable end to end, through the interpreter only. Oracles: finite
differences, closed-form regression, scikit-learn, textbook optimizer formulas."""

from __future__ import annotations

import numpy as np
import pytest

from edgerun.converters.training import make_trainable
from edgerun.runtime import GraphBuilder, Interpreter, serialize
from edgerun.runtime.errors import ConversionError, InputError
from edgerun.runtime.training import fit, predict
from tests.converters.training.models import cnn, digits, mlp
from tests.gradcheck import numerical_gradient


def trained_interpreter(graph, **kwargs) -> Interpreter:
    return Interpreter(serialize(make_trainable(graph, **kwargs)))


def analytic_and_numeric_gradients(it: Interpreter, feeds: dict, names: list[str]):
    """Gradient of the train loss per parameter: analytic from one SGD step with lr 1
    (new = old - grad), numeric by central differences through restore + train."""
    start = it.run({}, "save")

    def loss_at(name: str, value: np.ndarray) -> float:
        it.run({**start, name: value}, "restore")
        return float(it.run(feeds, "train")["loss"])

    it.run(start, "restore")
    lr_dtype = it.signatures["train"].inputs["learning_rate"].dtype
    it.run({**feeds, "learning_rate": np.asarray(1.0, lr_dtype)}, "train")
    after = it.run({}, "save")
    analytic = {n: start[n] - after[n] for n in names}
    numeric = {n: numerical_gradient(lambda v, n=n: loss_at(n, v), start[n], eps=1e-6) for n in names}
    it.run(start, "restore")
    return analytic, numeric


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_whole_mlp_gradient_matches_finite_differences(loss):
    graph = mlp((5, 4, 3), dtype=np.float64, seed=1)
    it = trained_interpreter(graph, loss=loss, optimizer=("sgd", {"lr": 1.0}), l2=0.01)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((6, 5))
    labels = rng.integers(0, 3, 6) if loss == "cross_entropy" else rng.standard_normal((6, 3))
    names = list(it.signatures["save"].outputs)
    analytic, numeric = analytic_and_numeric_gradients(it, {"x": x, "labels": labels}, names)
    for name in names:
        np.testing.assert_allclose(analytic[name], numeric[name], rtol=1e-6, atol=1e-8, err_msg=name)


def test_whole_cnn_gradient_matches_finite_differences():
    graph = cnn(dtype=np.float64, seed=3, batch_norm=True, classes=3)
    it = trained_interpreter(graph, optimizer=("sgd", {"lr": 1.0}))
    rng = np.random.default_rng(4)
    feeds = {"x": rng.standard_normal((4, 1, 8, 8)), "labels": rng.integers(0, 3, 4)}
    names = [n for n in it.signatures["save"].outputs if not n.endswith((".mean", ".var"))]
    analytic, numeric = analytic_and_numeric_gradients(it, feeds, names)
    for name in names:
        np.testing.assert_allclose(analytic[name], numeric[name], rtol=1e-5, atol=1e-7, err_msg=name)


def test_linear_regression_recovers_the_line():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (512, 1)).astype(np.float32)
    y = (0.1 * x + 0.3 + rng.normal(0, 0.01, x.shape)).astype(np.float32)
    g = GraphBuilder("line")
    inp = g.input("x", np.float32, (-1, 1))
    w, b = g.constant("w", np.zeros((1, 1), np.float32)), g.constant("b", np.zeros(1, np.float32))
    g.output(g.op("Gemm", [inp, w, b], transB=1), "y")
    it = trained_interpreter(g.build(), loss="mse", optimizer=("sgd", {"lr": 0.5}))
    fit(it, x, y, epochs=40, batch_size=32)
    weights = it.run({}, "save")
    assert weights["w"][0, 0] == pytest.approx(0.1, abs=0.01)
    assert weights["b"][0] == pytest.approx(0.3, abs=0.01)


def test_softmax_regression_on_digits_matches_scikit_learn():
    from sklearn.linear_model import LogisticRegression

    x_train, y_train, x_test, y_test = digits()
    reference = LogisticRegression(max_iter=2000).fit(x_train, y_train).score(x_test, y_test)
    it = trained_interpreter(mlp((64, 10), seed=0), optimizer=("adam", {"lr": 0.01}))
    fit(it, x_train, y_train, epochs=60, batch_size=64)
    ours = np.mean(predict(it, x_test)["y"].argmax(1) == y_test)
    assert ours >= reference - 0.01, (ours, reference)


@pytest.mark.parametrize("model,images,epochs", [(lambda: mlp((64, 64, 10), softmax=True), False, 20),
                                                 (lambda: cnn(seed=0), True, 30)])
def test_mlp_and_cnn_learn_digits_and_survive_save_restore(model, images, epochs):
    x_train, y_train, x_test, y_test = digits(images=images)
    it = trained_interpreter(model(), optimizer=("adam", {"lr": 0.01}))
    history = fit(it, x_train, y_train, epochs=epochs, batch_size=32)
    history += fit(it, x_train, y_train, epochs=5, batch_size=32, learning_rate=0.001, seed=1)  # decay
    assert history[-1].loss < history[0].loss
    outputs = predict(it, x_test)["y"]
    assert np.mean(outputs.argmax(1) == y_test) >= 0.97
    fresh = trained_interpreter(model(), optimizer=("adam", {"lr": 0.01}))
    fresh.run(it.run({}, "save"), "restore")
    np.testing.assert_array_equal(predict(fresh, x_test)["y"], outputs)


def test_sgd_momentum_steps_follow_the_textbook():
    g = GraphBuilder()
    x = g.input("x", np.float64, (-1, 2))
    w = g.constant("w", np.array([[0.5, -0.25]]))
    g.output(g.op("Gemm", [x, w], transB=1), "y")
    it = trained_interpreter(g.build(), loss="mse", optimizer=("sgd", {"lr": 0.1, "momentum": 0.9}))
    xs, ys = np.array([[1.0, 2.0], [3.0, -1.0]]), np.array([[1.0], [0.5]])
    param, velocity = np.array([[0.5, -0.25]]), np.zeros((1, 2))
    for _ in range(4):
        grad = 2 * ((xs @ param.T - ys).T @ xs) / len(xs)  # d mean((xW^T - y)^2) / dW
        velocity = 0.9 * velocity + grad
        param = param - 0.1 * velocity
        it.run({"x": xs, "labels": ys}, "train")
        np.testing.assert_allclose(it.run({}, "save")["w"], param, rtol=1e-12)


def test_only_the_selected_parameters_train():
    x_train, y_train, _, _ = digits()
    graph = mlp((64, 32, 10))
    it = trained_interpreter(graph, trainable="fc1.*", optimizer=("sgd", {"lr": 0.1}))
    assert set(it.signatures["save"].outputs) == {"fc1.weight", "fc1.bias"}
    assert not next(v for v in it.graph.values() if v.name == "fc0.weight").is_variable
    before = it.run({}, "save")
    fit(it, x_train[:64], y_train[:64], epochs=1)
    assert not np.array_equal(it.run({}, "save")["fc1.weight"], before["fc1.weight"])
    last_layer = trained_interpreter(graph, trainable=1).signatures["save"].outputs
    assert set(last_layer) == {"fc1.weight", "fc1.bias"}


def test_restore_rejects_missing_extra_and_misshaped_tensors_and_changes_nothing():
    it = trained_interpreter(mlp((4, 3)))
    before = it.run({}, "save")
    bad = [{"fc0.weight": before["fc0.weight"]},
           {**before, "extra": before["fc0.bias"]},
           {**before, "fc0.bias": np.zeros(5, np.float32)}]
    for weights in bad:
        with pytest.raises(InputError):
            it.run(weights, "restore")
    after = it.run({}, "save")
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_an_op_without_gradient_is_a_conversion_error_naming_it():
    g = GraphBuilder()
    x = g.input("x", np.float32, (-1, 4))
    h = g.op("Gemm", [x, g.constant("w", np.ones((4, 4), np.float32))], transB=1, name="fc")
    h = g.op("Reshape", [h, g.constant("shape", np.array([-1, 4, 1, 1]))], name="to4d")
    g.output(g.op("Flatten", [g.op("GlobalLpPool", [h], name="gmp")], name="flat"), "y")
    with pytest.raises(ConversionError, match=r"'w' \(blocked by node 'gmp': op 'GlobalLpPool' has no gradient"):
        make_trainable(g.build())


def test_bad_arguments_are_conversion_errors():
    graph = mlp((4, 3))
    with pytest.raises(ConversionError, match="unknown loss"):
        make_trainable(graph, loss="hinge")
    with pytest.raises(ConversionError, match="unknown optimizer"):
        make_trainable(graph, optimizer="lion")
    with pytest.raises(ConversionError, match="unknown settings"):
        make_trainable(graph, optimizer=("sgd", {"learning_rate": 1}))
    with pytest.raises(ConversionError, match="not trainable weights"):
        make_trainable(graph, trainable=["nope"])
    with pytest.raises(ConversionError, match="no trainable parameters"):
        make_trainable(graph, trainable="zzz*")


def test_dropout_drops_only_while_training():
    g = GraphBuilder(opset=17)
    x = g.input("x", np.float32, (-1, 16))
    w = g.constant("w", np.random.default_rng(0).standard_normal((4, 16)).astype(np.float32))
    h = g.op("Dropout", [x, g.constant("ratio", np.asarray(0.5, np.float32))], name="drop")
    g.output(g.op("Gemm", [h, w], transB=1, name="fc"), "y")
    it = trained_interpreter(g.build(), optimizer=("sgd", {"lr": 0.0}))
    xs = np.ones((8, 16), np.float32)
    labels = np.zeros(8, np.int64)
    losses = {float(it.run({"x": xs, "labels": labels}, "train")["loss"]) for _ in range(5)}
    assert len(losses) > 1  # a fresh mask each step (lr 0: the weights do not move)
    infer = [it.run({"x": xs}, "infer")["y"] for _ in range(2)]
    np.testing.assert_array_equal(infer[0], infer[1])
    np.testing.assert_allclose(infer[0], xs @ w.data.T, rtol=1e-6)  # identity at inference


def two_head_graph():
    g = GraphBuilder(opset=17)
    x = g.input("x", np.float32, (-1, 4))
    h = g.op("Relu", [g.op("Gemm", [x, g.constant("w0", np.ones((3, 4), np.float32))], transB=1)])
    g.output(g.op("Gemm", [h, g.constant("w1", np.ones((2, 3), np.float32))], transB=1), "y")
    g.output(g.op("Gemm", [h, g.constant("w2", np.ones((5, 3), np.float32))], transB=1), "z")
    return g.build()


def test_the_default_trains_only_what_the_chosen_output_depends_on():
    it = trained_interpreter(two_head_graph(), output="y")
    assert set(it.signatures["save"].outputs) == {"w0", "w1"}


def test_a_frozen_batch_norm_layer_keeps_inference_mode_and_statistics():
    it = trained_interpreter(cnn(seed=0), trainable="fc.*")
    assert set(it.signatures["save"].outputs) == {"fc.weight", "fc.bias"}
    x, y, _, _ = digits(images=True)
    before = it.run({"x": x[:8]}, "infer")["y"]
    fit(it, x[:64], y[:64], epochs=1, batch_size=16)
    assert not np.array_equal(it.run({"x": x[:8]}, "infer")["y"], before)  # fc moved
    assert not any(v.is_variable for v in it.graph.values() if v.name.startswith("bn1."))


def test_softmax_over_another_axis_is_not_taken_for_the_loss_head():
    g = GraphBuilder(opset=17)
    x = g.input("x", np.float32, (-1, 3))
    h = g.op("Gemm", [x, g.constant("w", np.eye(3, dtype=np.float32))], transB=1)
    g.output(g.op("Softmax", [h], axis=0), "y")
    it = trained_interpreter(g.build(), optimizer=("sgd", {"lr": 0.0}))
    xs = np.array([[1.0, 2.0, 3.0], [0.0, 1.0, -1.0]], np.float32)
    labels = np.array([2, 0])
    probs = it.run({"x": xs}, "infer")["y"]
    want = -np.mean(np.log(np.exp(probs[[0, 1], labels]) / np.exp(probs).sum(1)))  # CE on the outputs as logits
    assert float(it.run({"x": xs, "labels": labels}, "train")["loss"]) == pytest.approx(want, rel=1e-5)


def test_more_argument_errors():
    graph = mlp((4, 3))
    with pytest.raises(ConversionError, match="nesterov needs momentum"):
        make_trainable(graph, optimizer=("sgd", {"nesterov": True}))
    with pytest.raises(ConversionError, match="unknown settings \\['momentum'\\]"):
        make_trainable(graph, optimizer=("adam", {"momentum": 0.9}))
    g = GraphBuilder(opset=17)
    x = g.input("x", np.float32, (-1, 4))
    h = g.op("Gemm", [x, g.constant("w", np.ones((2, 4), np.float32))], transB=1, output_names=["labels"])
    g.output(g.op("Relu", [h]), "out")
    with pytest.raises(ConversionError, match="already has a tensor named 'labels'"):
        make_trainable(g.build())
    g = GraphBuilder(opset=17)
    x = g.input("x", np.float32, (-1, 1, 2, 2))
    g.output(g.op("Conv", [x, g.constant("w", np.ones((3, 1, 1, 1), np.float32))]), "y")
    with pytest.raises(ConversionError, match="cross_entropy needs a \\(batch, classes\\) output"):
        make_trainable(g.build())


def test_python_numbers_and_other_label_dtypes_are_accepted():
    it = trained_interpreter(mlp((4, 3)), optimizer=("sgd", {"lr": 0.1}))
    x = np.ones((2, 4), np.float32)
    it.run({"x": x, "labels": [0, 2], "learning_rate": 0.05}, "train")
    fit(it, x, np.array([0, 2], np.int32), epochs=1, learning_rate=0.05)


def test_batch_norm_after_gemm_with_a_dynamic_batch_loads_and_trains():
    g = GraphBuilder(opset=17)
    x = g.input("x", np.float32, (-1, 4))
    h = g.op("Gemm", [x, g.constant("w", np.ones((3, 4), np.float32))], transB=1)
    ones, zeros = np.ones(3, np.float32), np.zeros(3, np.float32)
    h = g.op("BatchNormalization", [h, g.constant("s", ones), g.constant("b", zeros), g.constant("m", zeros),
                                    g.constant("v", ones)])
    g.output(h, "y")
    it = trained_interpreter(g.build())
    it.run({"x": np.random.default_rng(0).standard_normal((4, 4)).astype(np.float32), "labels": [0, 1, 2, 0]},
           "train")
    with pytest.raises(InputError, match="needs at least 2"):
        it.run({"x": np.ones((1, 4), np.float32), "labels": [0]}, "train")
